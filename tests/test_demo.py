"""The demo end to end with a reduced budget (random-weight backbone, a few
steps): its files and figures exist, and the table it writes is what the
runs' own results.json and grouping.jsonl say."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from background import BACKGROUND

from dtvg_dist import demo
from dtvg_dist.grid.build import demo_jobs
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.reporting.demo_report import DEMO, SCENARIOS
from dtvg_dist.store.run_files import read_jsonl
from dtvg_dist.tasks.synthetic import MIX_SOURCES, MIX_TARGET, SOURCES, TARGET

REPO = Path(__file__).resolve().parents[1]
SEEDS = (1, 2)
REDUCED = ["backbone.name_or_path=null", "backbone.tokenizer=synthetic", "optim.max_steps=4",
           "stage1.max_steps=4", "stage1.source_max_steps=6", "eval.every_steps=2",
           "logging.progress_bar=false"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _demo_run(out: Path) -> tuple[Path, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dtvg_dist.demo", "--seeds", ",".join(map(str, SEEDS)), "--out", str(out),
         *REDUCED], cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


BACKGROUND.offer("demo_run", lambda: _demo_run(BACKGROUND.folder("demo") / "out"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo's output folder and printout (one process; started in the
    background at the end of collection, tests/background.py)."""
    return BACKGROUND.result("demo_run", lambda: _demo_run(tmp_path_factory.mktemp("demo") / "out"))


@pytest.mark.slow
def test_files_and_figures_exist(demo_run) -> None:
    out, _ = demo_run
    for name in ("demo.json", "demo.txt", "demo-grouping.json", "demo-banks.json"):
        assert (out / name).is_file(), name
    for name in ("demo-grouping.png", "demo-banks.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    for seed in SEEDS:
        for method in demo.METHODS:
            assert (demo.run_dir(out, method, seed) / "results.json").is_file()
        bank = demo.bank_dir(out, seed)
        assert sorted(p.stem for p in bank.glob("*.safetensors")) == sorted([MIX_TARGET, *MIX_SOURCES])


@pytest.mark.slow
def test_table_is_what_the_runs_wrote(demo_run) -> None:
    out, stdout = demo_run
    table = json.loads((out / "demo.json").read_text())
    assert table["seeds"] == list(SEEDS) and table["target"] == MIX_TARGET
    assert table["scenario"] == "two-sources" and f"scenario two-sources: {DEMO.question}" in stdout.splitlines()
    assert [row["method"] for row in table["rows"]] == ["pt", "spot", "all", "dtvg", "attempt", "mpt", "dept",
                                                        "stage1_target"]
    stage1 = table["rows"][-1]  # the target's stage-1 run: the extra cost of SPoT, all and DTVG
    for seed in SEEDS:
        results = json.loads((out / "stage1" / str(seed) / "stage1" / MIX_TARGET / "results.json").read_text())
        assert stage1["seeds"][str(seed)]["test"] == results["test"]["accuracy"] and results["steps"] == 4
    assert stage1["title"] == "PT, stage 1 (4 steps)"
    assert [c["text"] for c in table["claims"]] == [c["text"] for c in demo.claims(table)]
    for row in table["rows"][:-1]:
        tests = []
        for seed in SEEDS:
            run = demo.run_dir(out, row["method"], seed)
            results = json.loads((run / "results.json").read_text())
            cell = row["seeds"][str(seed)]
            assert results["method"] == {"pt": "pt", "spot": "spot", "all": "dtvg", "dtvg": "dtvg", "attempt": "attempt",
                                         "mpt": "mpt", "dept": "dept"}[row["method"]]
            if row["method"] in ("all", "dtvg"):
                assert results["grouping_rule"] == ("all" if row["method"] == "all" else "greedy")
            assert cell["test"] == results["test"]["accuracy"]
            assert cell["validation"] == results["best_validation"]["accuracy"]
            assert cell["steps"] == results["steps"] == 4
            assert cell.get("spot_source") == results.get("spot_source")
            tests.append(results["test"]["accuracy"])
        assert row["test_mean"] == pytest.approx(statistics.mean(tests), abs=1e-9)
        assert row["test_std"] == pytest.approx(statistics.stdev(tests), abs=1e-9)
    # the printout is the table: every line of demo.txt is in stdout
    for line in (out / "demo.txt").read_text().splitlines():
        assert line in stdout


@pytest.mark.slow
def test_groups_are_the_grouping_logs(demo_run) -> None:
    out, _ = demo_run
    table = json.loads((out / "demo.json").read_text())
    rows = {row["method"]: row for row in table["rows"]}
    figure = json.loads((out / "demo-grouping.json").read_text())
    for seed in SEEDS:
        logged = read_jsonl(demo.run_dir(out, "dtvg", seed) / "grouping.jsonl")
        assert [r["step"] for r in logged] == [1, 2, 3, 4]
        cell = rows["dtvg"]["seeds"][str(seed)]
        per_step = {step: g["group"] for g in cell["groups"]
                    for step in range(g["first_step"], g["last_step"] + 1)}
        assert per_step == {r["step"]: r["group"] for r in logged}
        assert cell["steps_in_group"] == {s: sum(s in r["group"] for r in logged) for s in logged[0]["sims"]}
        # rule=all merges every source at every step
        merged = read_jsonl(demo.run_dir(out, "all", seed) / "grouping.jsonl")
        assert all(sorted(r["group"]) == sorted(r["sims"]) for r in merged)
        data = figure[f"DTVG seed {seed}"]
        sources = list(logged[0]["sims"])
        assert data["membership"] == [[int(s in r["group"]) for r in logged] for s in sources]
        assert data["sims"] == [[r["sims"][s] for r in logged] for s in sources]
        assert data["compare"]["run"] == str(demo.run_dir(out, "pt", seed))
    banks = json.loads((out / "demo-banks.json").read_text())
    assert list(banks) == [f"seed {s}" for s in SEEDS]


def test_plan_runs_stage1_then_every_method_per_seed(tmp_path) -> None:
    planned = demo_jobs(DEMO, out=tmp_path, seeds=(22, 32), methods=tuple(demo.METHODS),
                        overrides=["optim.max_steps=3"])
    assert [job.recipe for job in planned] == ["demo-stage1", *["demo"] * 7] * 2

    def cfg(job):
        return load_recipe(job.recipe, [a for a in job.args if not a.startswith("recipe=")])

    stage1 = cfg(planned[0])
    assert stage1.stage == "1" and stage1.eval.every_steps == 10 and stage1.optim.max_steps == 3
    assert stage1.prompt.init_seed == 22 and stage1.bank_dir == str(tmp_path / "bank" / "seed22")
    assert planned[0].stage1 and planned[0].needs == ()
    by_method = {job.title.split(": ")[1]: cfg(job) for job in planned[9:]}
    assert all(job.needs == (planned[8].name,) for job in planned[9:])  # seed 32's stage 1
    assert planned[8].name == "stage1/32"
    assert by_method["PT"].method == "pt" and by_method["SPoT"].method == "spot"
    assert by_method["all sources, no grouping"].grouping.rule == "all"
    dtvg = by_method["DTVG"]
    assert dtvg.method == "dtvg" and dtvg.grouping.rule == "greedy" and dtvg.seed == 32
    assert dtvg.output_dir == str(tmp_path / "dtvg" / "32")
    assert len({(c.optim.max_steps, c.optim.lr, c.target_task) for c in by_method.values()}) == 1
    assert dtvg.target_task == MIX_TARGET and list(dtvg.source_tasks) == list(MIX_SOURCES)


def test_the_one_source_scenario_plans_its_own_recipes(tmp_path) -> None:
    """--scenario one-source: the earlier design (the target's rule is one
    source's), through its own recipes, with the same methods, seeds and budget."""
    spec = SCENARIOS["one-source"]
    planned = demo_jobs(spec, out=tmp_path, seeds=(22,), methods=tuple(demo.METHODS), overrides=[])
    assert [job.recipe for job in planned] == ["demo-one-source-stage1", *["demo-one-source"] * 7]
    one = load_recipe(planned[1].recipe, [a for a in planned[1].args if not a.startswith("recipe=")])
    two = load_recipe("demo")
    assert one.target_task == TARGET and list(one.source_tasks) == list(SOURCES)
    assert (one.optim.max_steps, one.optim.lr, one.stage1.max_steps) == (
        two.optim.max_steps, two.optim.lr, two.stage1.max_steps)
    assert spec.methods == DEMO.methods and spec.seeds == DEMO.seeds
    assert set(spec.conflicting) <= set(SOURCES) and set(DEMO.conflicting) | set(DEMO.together) <= set(MIX_SOURCES)


def test_bad_arguments_are_refused(capsys, monkeypatch, tmp_path) -> None:
    with pytest.raises(SystemExit):
        demo.main(["seed=3"])
    assert "the demo sets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--methods", "pt,best"])
    assert "'best' is not one of" in capsys.readouterr().err
    assert demo.main(["optim.lrr=0.1"]) == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # in-process: leave torch's threads alone
    assert demo.main(["--seeds", "1", "--methods", "pt", "--out", str(tmp_path), *REDUCED,
                      "target_task=syn_nosuch"]) == 2
    assert "target_task='syn_nosuch' is not a registered task" in capsys.readouterr().err
