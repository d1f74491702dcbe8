"""The "other" benchmark: WinoGrande, Yelp Polarity, SciTail, PAWS-Wiki.

Hub files are Parquet on `main`, `<config>/<split>-0000N-of-0000M.parquet`:
allenai/winogrande (winogrande_xl,
https://huggingface.co/datasets/allenai/winogrande/tree/df8eb8fe2e3ab788ec6eada56b9203a86a34c93d/winogrande_xl),
fancyzhx/yelp_polarity (plain_text, train and test only,
https://huggingface.co/datasets/fancyzhx/yelp_polarity/tree/main/plain_text),
allenai/scitail (snli_format, "Convert dataset to Parquet",
https://huggingface.co/datasets/allenai/scitail/commit/611791ece3eae804b94d65af61c09574c98fbca3),
google-research-datasets/paws (labeled_final,
https://huggingface.co/datasets/google-research-datasets/paws/tree/main).

Splits follow ATTEMPT's attempt/data/tasks.py: WinoGrande and Yelp Polarity
are in `large_data_without_all_splits` (1,000 training rows held out; test =
`split_to_data_split["test"]`: WinoGrande's hub validation, Yelp's hub test);
SciTail is in `small_datasets_without_all_splits` (the 1,304-row hub
validation halved; its hub test split is not used); PAWS is in neither list
and keeps the hub's train / validation / test.
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task

BINARY = ("0", "1")
HOLD_OUT = {"split_rule": "hold_out", "validation_split": None}


def _winogrande_attempt_bug(ex: dict) -> dict:
    """ATTEMPT's WinoGrande input shows option1 twice (attempt/data/tasks.py:
    `"option0:", example["option1"], "option1:", example["option1"]`), so the
    second option never reaches the model. Only with data.attempt_quirks=true."""
    return {**ex, "option2": ex["option1"]}


OTHER_TASKS: tuple[Task, ...] = (
    # answer is "1" or "2" (the option that fills the blank); ATTEMPT's target is
    # str(int(answer) - 1), i.e. "0"/"1". We show option1 and option2 (see above).
    Task(
        name="winogrande", hub_id="allenai/winogrande", hub_config="winogrande_xl", benchmark="other",
        fields=(("sentence", "sentence"), ("option0", "option1"), ("option1", "option2")),
        label_column="answer", label_values=("1", "2"), label_words=BINARY,
        attempt_quirk_fn=_winogrande_attempt_bug, test_split="validation", **HOLD_OUT,
    ),
    # Training capped at 100k (paper, appendix C); DePT's train.py takes the
    # first 100,000 rows of the (permuted) training split, as the cap here does.
    Task(
        name="yelp_polarity", hub_id="fancyzhx/yelp_polarity", hub_config="plain_text", benchmark="other",
        fields=(("sentence", "text"),), label_words=BINARY, max_train_examples=100_000,
        test_split="test", **HOLD_OUT,
    ),
    # ATTEMPT's SciTail: label2id = {"entailment": "0", "neutral": "1"}.
    Task(
        name="scitail", hub_id="allenai/scitail", hub_config="snli_format", benchmark="other",
        fields=(("premise", "sentence1"), ("hypothesis", "sentence2")),
        label_column="gold_label", label_values=("entailment", "neutral"), label_words=BINARY,
        split_rule="halve",
    ),
    Task(
        name="paws", hub_id="google-research-datasets/paws", hub_config="labeled_final", benchmark="other",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")), label_words=BINARY,
        split_rule="hub", test_split="test",
    ),
)
