"""Figure 1's runs on tiny-t5: the target's training set mixed with source
tasks (examples-proportional, data.mix_tasks), and SPoT's similarity of the
target prompt to each source logged over training (logging.source_similarity)."""

from __future__ import annotations

from cli_runs import jsonl, results
from test_pipeline import SOURCES, TARGET, _plant

from dtvg_dist.data import MixedSplit
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.orchestration.pipeline import Pipeline


def test_mixed_split_indexes_its_parts_in_order():
    mixed = MixedSplit([[{"i": 0}, {"i": 1}], [], [{"i": 2}]])
    assert len(mixed) == 3 and [mixed[k]["i"] for k in range(3)] == [0, 1, 2]
    assert mixed[-1]["i"] == 2 and [r["i"] for r in mixed[1:]] == [1, 2]


def test_mixing_and_similarity_tracking(tmp_path):
    cfg = load_recipe("tiny-t5", [
        f"output_dir={tmp_path / 'run'}", f"bank_dir={tmp_path / 'bank'}", "stage=2",
        "method=spot", "data.mix_tasks=[syn_same,syn_flip]", "logging.source_similarity=true",
        "logging.progress_bar=false", "optim.max_steps=8", "eval.every_steps=8", "logging.every_steps=4",
    ])
    pipe = Pipeline(cfg)
    _plant(tmp_path / "bank", pipe.backbone.name)
    pipe.run()
    out = results(tmp_path / "run")
    sizes = {t: len(pipe.splits(t)["train"]) for t in (TARGET, "syn_same", "syn_flip")}
    assert out["train_examples"] == sum(sizes.values())
    assert out["validation_examples"] == len(pipe.splits(TARGET)["validation"])
    rows = [r for r in jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "source_similarity"]
    assert [r["step"] for r in rows] == [4, 8]
    for row in rows:
        sims = {s: row[s] for s in SOURCES}
        assert row["most_similar"] == max(sims, key=sims.get)
