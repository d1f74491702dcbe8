"""The analysis figures from tiny runs and banks: each PNG is written, and the
data file beside it holds exactly what the logs and the bank hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import leaves_list, linkage

from dtvg_dist.report import main as report_main
from dtvg_dist.reporting import charts, figures
from dtvg_dist.reporting.report import collect
from dtvg_dist.store.bank import BankError, save_entry
from dtvg_dist.store.run_files import RunFiles, read_jsonl

SOURCES = ["mnli", "sst2", "qnli"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 2000


def fake_dtvg_run(run: Path, seed: int, steps: int = 9) -> None:
    """A run folder as a stage-2 DTVG run leaves it: grouping per step,
    validations every 3 steps, results.json (values drawn from `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    files = RunFiles(run)
    rows = []
    for step in range(1, steps + 1):
        sims = (torch.randn(len(SOURCES), generator=gen, dtype=torch.float64) * 2).tolist()
        group = [s for s, v in zip(SOURCES, sims, strict=True) if v >= 0]
        rows.append({"step": step, "group": group, "sims": dict(zip(SOURCES, sims, strict=True))})
        files.log_metrics({"step": step, "loss": 1.0 / step})
        if step % 3 == 0:
            files.log_metrics({"step": step, "split": "validation", "accuracy": 50.0 + step + seed % 7})
    files.log_grouping(rows)
    files.write_results({"task": "rte", "method": "dtvg", "primary_metric": "accuracy",
                         "best_validation": {"accuracy": 60.0}, "test": {"accuracy": 58.0}, "steps": steps})


def fake_pt_run(run: Path, steps: int = 9) -> None:
    files = RunFiles(run)
    for step in range(3, steps + 1, 3):
        files.log_metrics({"step": step, "split": "validation", "accuracy": 40.0 + step})
    files.write_results({"task": "rte", "method": "pt", "primary_metric": "accuracy"})


def fake_bank(bank: Path, tasks: list[str], seed: int, r: int = 4, d: int = 8,
              planted: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Random TPVs (or the planted ones) from one shared P_init."""
    gen = torch.Generator().manual_seed(seed)
    p_init = torch.randn(r, d, generator=gen)
    tpvs = {}
    for task in tasks:
        tpv = (planted or {}).get(task)
        tpvs[task] = tpv if tpv is not None else torch.randn(r, d, generator=gen)
        save_entry(bank, task, tpvs[task], p_init, backbone="config:t5-test", init_seed=seed,
                   steps=10, best_score=50.0)
    return tpvs


# -------------------------------------------------------------- Figures 7 / 9
def test_grouping_figure_data_is_the_logs(tmp_path) -> None:
    runs = {"rte seed 1": tmp_path / "a", "rte seed 2": tmp_path / "b"}
    fake_dtvg_run(runs["rte seed 1"], 1)
    fake_dtvg_run(runs["rte seed 2"], 2, steps=7)
    fake_pt_run(tmp_path / "pt")
    paths = figures.grouping_figure(runs, tmp_path / "out" / "g.png", compare={"rte seed 1": tmp_path / "pt"})
    assert is_png(paths["png"]) and paths["data"] == tmp_path / "out" / "g.json"
    data = json.loads(paths["data"].read_text())
    assert list(data) == list(runs)
    for label, run in runs.items():
        logged = read_jsonl(run / "grouping.jsonl")
        d = data[label]
        assert d["sources"] == SOURCES and d["steps"] == [r["step"] for r in logged]
        # membership[i][k] = 1 iff source i is in the group logged at step k; sims exactly as logged
        assert d["membership"] == [[int(s in r["group"]) for r in logged] for s in SOURCES]
        assert d["sims"] == [[r["sims"][s] for r in logged] for s in SOURCES]
        validations = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "validation"]
        assert d["validation"]["metric"] == "accuracy"
        assert d["validation"]["steps"] == [r["step"] for r in validations]
        assert d["validation"]["scores"] == [r["accuracy"] for r in validations]
    assert data["rte seed 1"]["compare"]["scores"] == [43.0, 46.0, 49.0]
    assert "compare" not in data["rte seed 2"]
    # the membership is not trivially constant: the fake logs vary their groups
    assert len({tuple(m) for m in data["rte seed 1"]["membership"]}) > 1


def test_grouping_figure_names_the_bad_log(tmp_path) -> None:
    fake_dtvg_run(tmp_path / "run", 3)
    rows = read_jsonl(tmp_path / "run" / "grouping.jsonl")
    rows[4]["sims"] = {"mnli": 1.0, "rte": 0.5}
    (tmp_path / "run" / "grouping.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="step 5 names the sources"):
        figures.grouping_data(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no grouping history"):
        figures.grouping_data(tmp_path / "nowhere")


# ------------------------------------------------------------ Figures 10 / 11
def test_bank_similarity_against_a_float64_reference(tmp_path) -> None:
    tasks = ["a", "b", "c", "d", "e"]
    tpvs = fake_bank(tmp_path / "bank", tasks, seed=5)
    data = figures.bank_similarity(tmp_path / "bank")
    assert data["tasks"] == tasks
    means = np.stack([tpvs[t].numpy().astype(np.float64).mean(axis=0) for t in tasks])
    reference = means @ means.T  # Eq. 2: dot product of the mean rows
    np.testing.assert_allclose(np.array(data["similarity"]), reference, rtol=0, atol=1e-12)
    low, high = reference.min(), reference.max()
    np.testing.assert_allclose(np.array(data["normalized"]), (reference - low) / (high - low), atol=1e-12)
    assert sorted(data["order"]) == list(range(len(tasks)))
    assert data["ordered_tasks"] == [tasks[i] for i in data["order"]]
    expected_link = linkage((reference - low) / (high - low), method="average", metric="euclidean")
    np.testing.assert_allclose(np.array(data["linkage"]), expected_link, atol=1e-9)
    assert data["order"] == leaves_list(expected_link).tolist()


def test_bank_clustering_keeps_planted_clusters_together(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    v = v - (v @ u) / (u @ u) * u  # two orthogonal directions: two clusters of tasks
    planted = {}
    for i, task in enumerate(["p", "q", "r", "s", "t", "w"]):
        base = u if task in ("p", "r", "t") else v
        planted[task] = base.expand(4, 8) * (2.0 + 0.1 * i) + 0.01 * torch.randn(4, 8, generator=gen)
    fake_bank(tmp_path / "bank", list(planted), seed=1, planted=planted)
    order = figures.bank_similarity(tmp_path / "bank")["ordered_tasks"]
    assert {frozenset(order[:3]), frozenset(order[3:])} == {frozenset("prt"), frozenset("qsw")}


def test_bank_figure_side_by_side_per_seed(tmp_path) -> None:
    banks = {f"seed {s}": tmp_path / f"seed{s}" for s in (22, 32)}
    for s, path in zip((22, 32), banks.values(), strict=True):
        fake_bank(path, ["x", "y", "z"], seed=s)
    paths = figures.bank_figure(banks, tmp_path / "banks.png", tasks=["z", "x", "y"])
    assert is_png(paths["png"])
    data = json.loads(paths["data"].read_text())
    assert list(data) == list(banks)
    for label, path in banks.items():
        assert data[label]["bank"] == str(path) and data[label]["tasks"] == ["z", "x", "y"]
        assert data[label] == json.loads(json.dumps(figures.bank_similarity(path, ["z", "x", "y"])))


def test_bank_figure_refuses_a_mixed_bank(tmp_path) -> None:
    fake_bank(tmp_path / "bank", ["x", "y"], seed=1)
    fake_bank(tmp_path / "other", ["z"], seed=2)
    (tmp_path / "other" / "z.safetensors").rename(tmp_path / "bank" / "z.safetensors")
    with pytest.raises(BankError, match="z.safetensors: p_init_sha256"):
        figures.bank_similarity(tmp_path / "bank")


# ----------------------------------------------------------- table reports
def test_table_report_bars_from_the_report_data(tmp_path) -> None:
    runs = tmp_path / "runs"
    for seed, value in {22: 90.0, 32: 92.0}.items():
        out = runs / "t5-base-dtvg-cb" / str(seed)
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"test": {"accuracy": value}}))
    data = collect("table2", runs, seeds=(22, 32))
    path = charts.table_bars(data, tmp_path / "table2.png")
    assert is_png(path)
    cb = next(r for r in data["rows"] if r["task"] == "cb")["cells"]["dtvg"]
    assert cb["ours"]["mean"] == pytest.approx(91.0) and cb["ours"]["std"] == pytest.approx(2**0.5)


# -------------------------------------------------------------- command line
def test_report_grouping_and_bank_commands(tmp_path, capsys) -> None:
    fake_dtvg_run(tmp_path / "run", 4)
    fake_pt_run(tmp_path / "pt")
    out = tmp_path / "fig" / "rte.png"
    assert report_main(["grouping", str(tmp_path / "run"), "--compare", str(tmp_path / "pt"),
                        "--labels", "RTE", "--out", str(out)]) == 0
    assert is_png(out) and list(json.loads(out.with_suffix(".json").read_text())) == ["RTE"]
    fake_bank(tmp_path / "bank", ["x", "y", "z"], seed=3)
    assert report_main(["bank", str(tmp_path / "bank"), "--out", str(tmp_path / "b.png")]) == 0
    assert is_png(tmp_path / "b.png")
    assert "wrote" in capsys.readouterr().out
    assert report_main(["grouping", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing/grouping.jsonl: no grouping history" in capsys.readouterr().err


def test_paper_figures_from_reproduce_layout(tmp_path) -> None:
    runs = tmp_path / "runs"
    fake_dtvg_run(runs / "t5-base-dtvg-rte" / "42", 42)
    fake_pt_run(runs / "t5-base-dtvg-rte@pt" / "42")
    assert report_main(["figure7", "--runs-dir", str(runs)]) == 0
    data = json.loads((runs / "reports" / "figure7.json").read_text())
    assert list(data) == ["rte seed 42"] and data["rte seed 42"]["compare"]["label"] == "PT"
    for seed in (22, 32):  # per-seed banks, as reproduce writes them
        fake_bank(runs / "bank" / "t5-base" / f"seed{seed}", list(figures.FIGURE_TASKS) + ["sst2"], seed)
    assert report_main(["figure11", "--runs-dir", str(runs), "--seeds", "22,32",
                        "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "figure11.json").read_text())
    assert list(data) == ["seed 22", "seed 32"]
    assert all(d["tasks"] == list(figures.FIGURE_TASKS) for d in data.values())  # sst2 left out
    assert is_png(tmp_path / "out" / "figure11.png")
