"""`report figure1` and `report figure8` from fabricated run folders: the data
drawn (JSON beside the PNG) is what the runs say, and Figure 8's parameter
counts come from the methods' own modules."""

from __future__ import annotations

import json

import pytest

from dtvg_dist import report
from dtvg_dist.model.methods import REGISTRY
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.orchestration.parameter_counts import method_parameter_counts
from dtvg_dist.reporting.paper_results import FIGURE1_MIXES, FIGURE1_ORDER, GLUE


def _results(folder, **blocks):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(blocks))


def test_figure1_draws_the_mixtures_and_the_similarity_track(tmp_path, capsys):
    runs = tmp_path / "runs"
    accuracies = [60.0 + 2 * k - (k == 3) * 5 for k in range(len(FIGURE1_MIXES))]
    for variant, acc in zip(FIGURE1_MIXES, accuracies, strict=True):
        _results(runs / f"t5-base-dtvg-rte@{variant}" / "42", best_validation={"accuracy": acc})
    track = runs / "t5-base-dtvg-rte@spot-track" / "42"
    track.mkdir(parents=True)
    rows = [{"step": 10, "split": "source_similarity", "most_similar": "qnli", "qnli": 0.5, "mnli": 0.4},
            {"step": 20, "split": "source_similarity", "most_similar": "mnli", "qnli": 0.5, "mnli": 0.6},
            {"step": 20, "split": "validation", "accuracy": 70.0}]
    (track / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert report.main(["figure1", "--runs-dir", str(runs)]) == 0
    data = json.loads((runs / "reports" / "figure1.json").read_text())
    assert (runs / "reports" / "figure1.png").stat().st_size > 0
    assert [m["accuracy"] for m in data["mixtures"]] == accuracies
    assert data["mixtures"][2]["sources"] == list(FIGURE1_ORDER[:2])
    assert data["similarity"]["most_similar"] == ["qnli", "mnli"]
    assert data["similarity"]["cosine"] == {"qnli": [0.5, 0.5], "mnli": [0.4, 0.6]}


def test_figure1_without_runs_says_what_to_run(tmp_path, capsys):
    assert report.main(["figure1", "--runs-dir", str(tmp_path)]) == 2
    assert "reproduce figure1" in capsys.readouterr().err


def test_parameter_counts_are_the_modules_own():
    cfg = load_recipe("t5-base-dtvg-rte")
    counts = method_parameter_counts(cfg)
    assert set(counts) == set(REGISTRY)  # every registered method, none listed by hand
    r, d, n = 100, 768, 6
    assert counts["pt"] == counts["spot"] == r * d
    assert counts["dtvg"] == r * d + r + n * r  # target TPV, alpha_t [r], alpha_s [n, r]
    small = method_parameter_counts(cfg, d=8, methods=["pt", "dtvg"])
    assert small == {"pt": r * 8, "dtvg": r * 8 + r + n * r}


def test_figure8_puts_each_method_at_its_count(tmp_path):
    runs = tmp_path / "runs"
    for task in GLUE:
        for seed in (22, 32, 42, 52):
            _results(runs / f"t5-base-dtvg-{task}" / str(seed), test={"accuracy": 80.0, "pearson": 80.0,
                                                                   "matthews": 80.0})
            _results(runs / f"t5-base-dtvg-{task}@pt" / str(seed), test={"accuracy": 70.0, "pearson": 70.0,
                                                                      "matthews": 70.0})
    assert report.main(["figure8", "--runs-dir", str(runs)]) == 0
    data = json.loads((runs / "reports" / "figure8.json").read_text())
    points = {p["method"]: p for p in data["points"]}
    counts = method_parameter_counts(load_recipe("t5-base-dtvg-rte"))
    assert {m: p["trainable_parameters"] for m, p in points.items()} == {
        m: c for m, c in counts.items() if c is not None}
    assert points["dtvg"]["ours"] == pytest.approx(80.0) and points["pt"]["ours"] == pytest.approx(70.0)
    assert points["spot"]["ours"] is None and points["dtvg"]["paper"] == pytest.approx(87.4)


def test_reproduce_lists_and_plans_figure1(tmp_path, capsys):
    from dtvg_dist import reproduce
    from dtvg_dist.reporting.paper_results import EXPERIMENTS

    assert reproduce.main(["--list"]) == 0
    assert "figure1" in capsys.readouterr().out
    exp = EXPERIMENTS["figure1"]
    from dtvg_dist.grid.build import experiment_jobs

    jobs = experiment_jobs(exp, seeds=(42,), variants=exp.run_variants, overrides=[], runs_dir=tmp_path)
    stage2 = [" ".join(j.args) for j in jobs if "t5-base-dtvg-rte" in " ".join(j.args)]
    assert len(stage2) == len(FIGURE1_MIXES) + 1
    assert any(f"data.mix_tasks=[{','.join(FIGURE1_ORDER)}]" in a and "method=pt" in a for a in stage2)
    assert any("logging.source_similarity=true" in a and "method=spot" in a for a in stage2)
