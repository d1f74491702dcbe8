"""GEM data-to-text generation: E2E, CommonGen, WebNLG (paper section 4.4, C.6).

128 tokens in and out. The single `target` is the reference, as the paper
scores it ("we use the target as a simple reference", C.6).

Hub files: GEM/e2e_nlg, GEM/common_gen and GEM/web_nlg are loading-script
repositories; their Parquet copies are on the revision `refs/convert/parquet`
(`<config>/<split>/NNNN.parquet`, older `<config>/<name>-<split>.parquet`).
Configs: web_nlg `en` (https://huggingface.co/datasets/GEM/web_nlg/commits/refs%2Fconvert%2Fparquet/en/challenge_train_sample);
e2e_nlg and common_gen have one unnamed config, which the converter names
`default`, as for the other single-config GEM loaders (e.g. GEM/dart
`default/dart-train.parquet`, https://huggingface.co/datasets/GEM/dart/commit/4e5f3cc6c8ad9fdbfdc0aaf52872ca9b8f8bfd73).

Splits: the paper reports "the best result on the validation set" (C.6), so
checkpoints are chosen on the GEM validation split and it is also the test
set reported (`split_rule="hub"` with test = validation). The GEM training
sets (E2E 33.5k, CommonGen 67k, WebNLG 35k rows) are used whole.

Metrics: `bleu_dtvg` is the BLEU of the released DTVG code (TensorFlow NMT
corpus BLEU on GEM tokens; metrics/metrics.py compute_nlg_metrics), which
Table 4 prints as a fraction; `bleu` is sacrebleu's. The released code picks
checkpoints by the mean of its rouge1/2/L, bleu and meteor (metrics/metrics.py
TASK_TO_METRICS, compute_nlg_metrics): with data.select_by=mean the mean here
is over the same five, `rouge1_dtvg`, `rouge2_dtvg`, `rougeL_dtvg`
(metrics/rouge.py: lower case, words split on spaces, n-gram sets, no
stemming), `bleu_dtvg` and `meteor_dtvg` (NLTK's METEOR on WordNet 3.0; left
out, with a logged line, where no WordNet database is installed). `rouge1/2/L`
are rouge-score's (Porter stemming), reported beside them.
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import Column

GEN_METRICS = ("bleu_dtvg", "bleu", "rouge1", "rouge2", "rougeL",
               "rouge1_dtvg", "rouge2_dtvg", "rougeL_dtvg", "meteor_dtvg")
RELEASE_SELECTION = ("rouge1_dtvg", "rouge2_dtvg", "rougeL_dtvg", "bleu_dtvg", "meteor_dtvg")
CONVERTED = "refs/convert/parquet"


def _gem(name: str, hub_id: str, **kw) -> Task:
    return Task(
        name=name, hub_id=hub_id, hub_revision=CONVERTED, benchmark="gem", kind="generation",
        label_column=None, metrics=GEN_METRICS, primary_metric="bleu_dtvg",
        selection_metrics=RELEASE_SELECTION,
        max_source_length=128, max_target_length=128,
        split_rule="hub", validation_split="validation", test_split="validation", **kw,
    )


GEM_TASKS: tuple[Task, ...] = (
    _gem(
        "e2e_nlg", "GEM/e2e_nlg", hub_dir="default",
        fields=(("meaning_representation", "meaning_representation"),),
    ),
    _gem(
        "common_gen", "GEM/common_gen", hub_dir="default",
        source_fn=lambda ex: [("concepts", ", ".join(ex["concepts"]))],
        columns=(Column("concepts", "list"), Column("target")),
    ),
    _gem(
        "web_nlg", "GEM/web_nlg", hub_config="en",
        source_fn=lambda ex: [("triples", " && ".join(ex["input"]))],
        columns=(Column("input", "list"), Column("target")),
    ),
)
