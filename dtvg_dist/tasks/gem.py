"""GEM data-to-text generation: E2E, CommonGen, WebNLG (paper section 4.4, C.6).

128 tokens in and out. The single `target` is the reference, as the paper
scores it ("we use the target as a simple reference").
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import Column

GEN_METRICS = ("bleu", "rouge1", "rouge2", "rougeL")


def _gem(name: str, hub_id: str, **kw) -> Task:
    return Task(
        name=name, hub_id=hub_id, benchmark="gem", kind="generation", label_column=None,
        metrics=GEN_METRICS, primary_metric="bleu", max_source_length=128, max_target_length=128, **kw,
    )


GEM_TASKS: tuple[Task, ...] = (
    _gem(
        "e2e_nlg", "GEM/e2e_nlg",
        fields=(("meaning_representation", "meaning_representation"),),
    ),
    _gem(
        "common_gen", "GEM/common_gen",
        source_fn=lambda ex: [("concepts", ", ".join(ex["concepts"]))],
        columns=(Column("concepts", "list"), Column("target")),
    ),
    _gem(
        "web_nlg", "GEM/web_nlg", hub_config="en",
        source_fn=lambda ex: [("triples", " && ".join(ex["input"]))],
        columns=(Column("input", "list"), Column("target")),
    ),
)
