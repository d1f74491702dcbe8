"""The "other" benchmark: WinoGrande, Yelp Polarity, SciTail, PAWS-Wiki."""

from __future__ import annotations

from dtvg_dist.tasks.base import Task

BINARY = ("0", "1")

OTHER_TASKS: tuple[Task, ...] = (
    # answer is "1" or "2" (the option that fills the blank); ATTEMPT shows
    # option1 twice, a bug not copied here.
    Task(
        name="winogrande", hub_id="allenai/winogrande", hub_config="winogrande_xl", benchmark="other",
        fields=(("sentence", "sentence"), ("option0", "option1"), ("option1", "option2")),
        label_column="answer", label_values=("1", "2"), label_words=BINARY,
    ),
    # No validation split on the hub: the split rule holds out 1,000 training
    # rows; the labelled test split is the test set. Training capped at 100k.
    Task(
        name="yelp_polarity", hub_id="fancyzhx/yelp_polarity", hub_config="plain_text", benchmark="other",
        fields=(("sentence", "text"),), label_words=BINARY,
        validation_split=None, test_split="test", max_train_examples=100_000,
    ),
    Task(
        name="scitail", hub_id="allenai/scitail", hub_config="snli_format", benchmark="other",
        fields=(("premise", "sentence1"), ("hypothesis", "sentence2")),
        label_column="gold_label", label_values=("entailment", "neutral"), label_words=BINARY,
        test_split="test",
    ),
    Task(
        name="paws", hub_id="google-research-datasets/paws", hub_config="labeled_final", benchmark="other",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")), label_words=BINARY,
        test_split="test",
    ),
)
