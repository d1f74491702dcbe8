"""Paper numbers, the reproduce grid (dry run and a fake end-to-end run) and
the report's aggregation, all without training."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from background import Background

from dtvg_dist import reproduce
from dtvg_dist.reporting.paper_results import (
    EXPERIMENTS,
    PAPER,
    PAPER_AVERAGES,
    PRIMARY,
    PaperValue,
    paper_value,
)
from dtvg_dist.reporting.report import collect, run_dir, to_markdown, write_report
from dtvg_dist.tasks import get_task

TRAIN = "-m dtvg_dist.train"


# ------------------------------------------------------------------ paper numbers
@pytest.mark.parametrize(
    ("table", "method", "row", "metric", "value"),
    [
        ("table2", "dtvg", "cb", "accuracy", PaperValue(97.6, 3.4)),
        ("table2", "dtvg", "cola", "matthews", PaperValue(69.1, 1.0)),
        ("table2", "dtvg", "mnli", "accuracy", PaperValue(86.0, 0.2)),
        ("table2", "pt", "cola", "matthews", PaperValue(10.6)),
        ("table2", "spot", "cb", "accuracy", PaperValue(46.4)),
        ("table7", "dtvg", "scitail", "accuracy", PaperValue(97.0, 0.1)),
        ("table7", "pt", "paws", "accuracy", PaperValue(55.8)),
        ("table3", "dtvg", "k4/cb", "accuracy", PaperValue(86.9, 1.7)),
        ("table3", "pt", "k32/scitail", "accuracy", PaperValue(60.2)),
        ("table8", "dtvg", "k32/stsb", "pearson", PaperValue(83.2, 4.7)),
        ("table8", "pt", "k16/qnli", "accuracy", PaperValue(87.4)),
        ("table4", "dtvg", "web_nlg", "bleu_dtvg", PaperValue(36.3)),  # printed as 0.363
        ("table4", "pt", "common_gen", "rougeL", PaperValue(27.6)),
        ("table5", "dtvg", "llama3-8b/cb", "accuracy", PaperValue(86.3)),
        ("table5", "spot", "llama3.2-1b/rte", "accuracy", PaperValue(57.6)),
        ("table5", "pt", "llama3.2-3b/wsc", "accuracy", PaperValue(67.3)),
    ],
)
def test_paper_numbers_spot_checks(table, method, row, metric, value) -> None:
    assert paper_value(table, method, row, metric) == value


def test_paper_row_counts() -> None:
    assert all(len(PAPER["table2"][m]) == 13 for m in ("dtvg", "pt", "spot"))
    assert all(len(PAPER["table7"][m]) == 8 for m in ("dtvg", "pt", "spot"))
    assert all(len(PAPER["table8"][m]) == 39 for m in ("dtvg", "pt"))
    assert all(len(PAPER["table3"][m]) == 9 for m in ("dtvg", "pt"))
    assert all(len(PAPER["table5"][m]) == 12 for m in ("dtvg", "pt", "spot"))
    assert all(len(PAPER["table4"][m]) == 3 for m in ("dtvg", "pt"))


def test_tables_3_and_8_agree_where_they_overlap() -> None:
    for method in ("dtvg", "pt"):
        for k in (4, 16, 32):
            for task in ("boolq", "cb"):
                key = f"k{k}/{task}"
                assert PAPER["table3"][method][key] == PAPER["table8"][method][key]


def test_printed_averages_match_the_transcribed_rows() -> None:
    """A transcription check: the paper's Avg. columns from our per-task numbers."""
    misprints = {
        ("table8", "pt", "GLUE k=16"),  # printed 56.7; its eight numbers give 60.2
        ("table8", "dept", "SuperGLUE k=32"),  # printed 66.4; its five numbers give 66.1
    }
    for table, methods in PAPER_AVERAGES.items():
        exp = next(e for e in EXPERIMENTS.values() if e.rows[0].paper and e.rows[0].paper[0] == table)
        for method, groups in methods.items():
            for group, printed in groups.items():
                keys = [r.paper[1] for r in exp.rows if r.group == group]
                values = [PAPER[table][method][k][PRIMARY[k.split("/")[-1]]].mean for k in keys]
                assert keys, (table, group)
                close = abs(statistics.mean(values) - printed) <= 0.051
                assert close != ((table, method, group) in misprints), (table, method, group)


def test_primary_metrics_agree_with_the_task_registry() -> None:
    for task, metric in PRIMARY.items():
        assert get_task(task).primary_metric == metric


def test_every_paper_row_is_in_an_experiment() -> None:
    used = {row.paper for exp in EXPERIMENTS.values() for row in exp.rows if row.paper}
    for table, methods in PAPER.items():
        for rows in methods.values():
            assert {(table, key) for key in rows} <= used, table
    for exp in EXPERIMENTS.values():
        for row in exp.rows:
            if row.paper:
                assert any(row.paper[1] in rows for rows in PAPER[row.paper[0]].values()), row


# --------------------------------------------------------------------- reproduce
@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory: no bank, no runs; nothing may be executed
    (by this test: the session's background work goes on meanwhile)."""
    monkeypatch.chdir(tmp_path)
    real = subprocess.run

    def refuse(*args, **kwargs):
        if Background.in_background():
            return real(*args, **kwargs)
        raise AssertionError(f"subprocess started in a dry run: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    return tmp_path


def _dry(capsys, *argv: str) -> list[str]:
    assert reproduce.main([*argv, "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def test_dry_run_prints_one_command_per_seed_with_its_own_bank(workdir, capsys) -> None:
    lines = _dry(capsys, "table2", "--seeds", "22,32", "--recipes", "t5-base-dtvg-rte",
                 "--no-stage1", "data.local_dir=/data")
    commands = [line for line in lines if TRAIN in line]
    assert len(commands) == 2
    for seed, line in zip((22, 32), commands, strict=True):
        assert line.startswith(sys.executable)
        assert line.endswith(f"{TRAIN} recipe=t5-base-dtvg-rte seed={seed} "
                             f"output_dir=runs/t5-base-dtvg-rte/{seed} prompt.init_seed={seed} "
                             f"bank_dir=runs/bank/t5-base/seed{seed} data.local_dir=/data")
    assert "a stage-1 bank per seed" in lines[0]


def test_dry_run_trains_stage1_per_seed_before_that_seeds_runs(workdir, capsys) -> None:
    lines = _dry(capsys, "table5", "--recipes", "llama3-8b-cb")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert len(commands) == 4 * 4  # per seed: three stage-1 recipes, then the row
    for i, seed in enumerate((22, 32, 42, 52)):
        block = commands[4 * i: 4 * i + 4]
        for backbone, line in zip(("llama3.2-1b", "llama3.2-3b", "llama3-8b"), block, strict=False):
            assert line == (f"recipe={backbone}-stage1 seed={seed} "
                            f"output_dir=runs/{backbone}-stage1/{seed} prompt.init_seed={seed} "
                            f"bank_dir=runs/bank/{backbone}/seed{seed}")
        assert block[3].startswith(f"recipe=llama3-8b-cb seed={seed} ")
        assert f"bank_dir=runs/bank/llama3-8b/seed{seed}" in block[3]


def test_shared_bank_trains_stage1_once_at_the_recipe_seed(workdir, capsys) -> None:
    lines = _dry(capsys, "table5", "--recipes", "llama3-8b-cb", "--shared-bank")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert commands[:3] == [f"recipe={b}-stage1 output_dir=runs/{b}-stage1/42"
                            for b in ("llama3.2-1b", "llama3.2-3b", "llama3-8b")]
    assert commands[3:] == [f"recipe=llama3-8b-cb seed={s} output_dir=runs/llama3-8b-cb/{s}"
                            for s in (22, 32, 42, 52)]
    assert "one shared stage-1 bank" in lines[0]


def test_per_seed_banks_own_the_init_seed(workdir, capsys) -> None:
    assert reproduce.main(["table2", "--dry-run", "--no-stage1", "prompt.init_seed=3"]) == 2
    assert "--shared-bank" in capsys.readouterr().err
    lines = _dry(capsys, "table2", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank", "prompt.init_seed=3")
    assert [line for line in lines if TRAIN in line][0].endswith("prompt.init_seed=3")


def test_dry_run_variants_write_apart(workdir, capsys) -> None:
    lines = _dry(capsys, "table5", "--recipes", "llama3-8b-cb", "--no-stage1", "--seeds", "42",
                 "--variants", "all")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    bank = "prompt.init_seed=42 bank_dir=runs/bank/llama3-8b/seed42"
    assert commands == [
        f"recipe=llama3-8b-cb seed=42 output_dir=runs/llama3-8b-cb/42 {bank}",
        f"recipe=llama3-8b-cb seed=42 output_dir=runs/llama3-8b-cb@pt/42 {bank} method=pt",
        f"recipe=llama3-8b-cb seed=42 output_dir=runs/llama3-8b-cb@spot/42 {bank} method=spot",
    ]


def test_the_three_grouping_readings_as_variants(workdir, capsys) -> None:
    """prefix-argmax is the paper recipes' own rule: it shares their runs (a link)."""
    lines = _dry(capsys, "table2", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank", "--variants", "greedy,first-drop,prefix-argmax")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert commands == [
        "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb@greedy/42 "
        "grouping.rule=greedy",
        "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb@first-drop/42 "
        "grouping.rule=first-drop",
        "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb/42 "
        "grouping.rule=prefix-argmax",
    ]
    assert "# link runs/t5-base-dtvg-cb@prefix-argmax -> t5-base-dtvg-cb (the same configuration)" \
        in lines
    report = [line for line in lines if "--variants" in line]
    assert report and report[-1].endswith("--variants dtvg,pt,spot,greedy,first-drop,prefix-argmax --std sample")
    # Overrides win over a variant's: with grouping.rule=greedy for every run,
    # greedy is the recipe's own rule and shares its runs, prefix-argmax too.
    lines = _dry(capsys, "table2", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--variants", "dtvg,greedy", "grouping.rule=greedy")
    assert len([line for line in lines if TRAIN in line]) == 1
    assert "# link runs/t5-base-dtvg-cb@greedy -> t5-base-dtvg-cb (the same configuration)" in lines


def test_figure4_runs_the_all_sources_baseline_and_figure5_keeps_the_recipe_rule(workdir, capsys):
    lines = _dry(capsys, "figure4", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert [c.split()[2] for c in commands] == [
        f"output_dir=runs/t5-base-dtvg-cb{v}/42" for v in ("", "@all", "@ts", "@kc")]
    assert commands[1].endswith("grouping.rule=all")
    lines = _dry(capsys, "figure5", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank")
    fixed = [line for line in lines if "@fixed" in line and TRAIN in line]
    assert fixed[0].endswith("grouping.fixed=true")  # the recipe's rule (prefix-argmax), kept


def test_table1_runs_single_source_transfer_by_tpv_and_spot(workdir, capsys) -> None:
    lines = _dry(capsys, "table1", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert [c.split()[-1] for c in commands] == ["method=tpv", "method=spot", "method=pt"]


def test_lr_search_runs_the_c7_grid_on_the_dtvg_column(workdir, capsys) -> None:
    lines = _dry(capsys, "table2", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank", "--lr-search", "--variants", "dtvg")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert len(commands) == 12  # 3 x 4 pairs; 0.3 / 0.4 is the recipe's own: its dtvg run
    assert commands[0] == "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb/42"
    pairs = {(c.split("optim.lr=")[1].split()[0], c.split("optim.source_lr=")[1])
             for c in commands[1:]}
    assert pairs == {(a, b) for a in ("0.3", "0.4", "0.5") for b in ("0.4", "0.6", "0.8", "1.0")} \
        - {("0.3", "0.4")}
    assert "# link runs/t5-base-dtvg-cb@lr0.3-0.4 -> t5-base-dtvg-cb (the same configuration)" in lines
    assert "runs/t5-base-dtvg-cb@lr0.5-1/42" in " ".join(commands)
    assert reproduce.main(["table1", "--dry-run", "--lr-search"]) == 2


def test_dry_run_skips_finished_runs_and_banked_stage1(workdir, capsys) -> None:
    done = run_dir(Path("runs"), "llama3-8b-cb", "dtvg", 22)
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    for backbone in ("llama3.2-1b", "llama3.2-3b", "llama3-8b"):
        bank = workdir / f"runs/bank/{backbone}/seed22"
        bank.mkdir(parents=True)
        for task in ("mnli", "qnli", "qqp", "sst2", "record", "squad", "rte", "cola", "cb", "wsc"):
            (bank / f"{task}.safetensors").write_bytes(b"")
    lines = _dry(capsys, "table5", "--recipes", "llama3-8b-cb", "--seeds", "22,32")
    commands = [line.split(TRAIN)[1].split()[:2] for line in lines if TRAIN in line]
    assert any(line.startswith("# skip llama3-8b-stage1 seed 22: bank runs/bank/llama3-8b/seed22")
               for line in lines)
    assert any(line.startswith("# skip llama3-8b-cb seed 22") for line in lines)
    assert commands == [[f"recipe={b}-stage1", "seed=32"] for b in
                        ("llama3.2-1b", "llama3.2-3b", "llama3-8b")] + [["recipe=llama3-8b-cb", "seed=32"]]


def test_dry_run_fewshot_copies_the_seeds_sources_but_not_the_target(workdir, capsys) -> None:
    lines = _dry(capsys, "table8", "--recipes", "t5-base-fewshot-k16-mnli", "--seeds", "32",
                 "--no-stage1")
    copies = [line for line in lines if line.startswith("# copy ")]
    bank = "runs/bank/t5-base-fewshot/k16/mnli/seed32"
    assert copies == [
        f"# copy runs/bank/t5-base/seed32/{t}.safetensors -> {bank}/{t}.safetensors"
        for t in ("qnli", "qqp", "sst2", "record", "squad")
    ]
    command = next(line for line in lines if TRAIN in line)
    assert command.endswith(f"prompt.init_seed=32 bank_dir={bank}")
    lines = _dry(capsys, "table8", "--recipes", "t5-base-fewshot-k16-mnli", "--seeds", "32",
                 "--no-stage1", "--shared-bank")
    assert [line for line in lines if line.startswith("# copy ")][0] == (
        f"# copy runs/bank/t5-base/qnli.safetensors -> {bank}/qnli.safetensors")


def test_another_runs_dir_moves_the_banks_too(workdir, capsys) -> None:
    """A smoke test under --runs-dir never writes the real banks under runs/."""
    lines = _dry(capsys, "table3", "--recipes", "t5-base-fewshot-k4-cb", "--seeds", "22",
                 "--runs-dir", "smoke", "stage1.source_max_steps=10")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert commands[0] == ("recipe=t5-base-stage1-mnli seed=22 output_dir=smoke/t5-base-stage1-mnli/22 "
                           "prompt.init_seed=22 bank_dir=smoke/bank/t5-base/seed22 "
                           "stage1.source_max_steps=10")
    assert commands[-1] == ("recipe=t5-base-fewshot-k4-cb seed=22 output_dir=smoke/t5-base-fewshot-k4-cb/22 "
                            "prompt.init_seed=22 bank_dir=smoke/bank/t5-base-fewshot/k4/cb/seed22 "
                            "stage1.source_max_steps=10")
    assert "# copy smoke/bank/t5-base/seed22/squad.safetensors -> " \
        "smoke/bank/t5-base-fewshot/k4/cb/seed22/squad.safetensors" in lines
    assert not any("runs/" in line for line in lines if not line.startswith("# then"))
    shared = _dry(capsys, "table3", "--recipes", "t5-base-fewshot-k4-cb", "--seeds", "22",
                  "--runs-dir", "smoke", "--shared-bank")
    commands = [line.split(TRAIN)[1].strip() for line in shared if TRAIN in line]
    assert commands[0] == ("recipe=t5-base-stage1-mnli output_dir=smoke/t5-base-stage1-mnli/42 "
                           "bank_dir=smoke/bank/t5-base")
    assert commands[-1].startswith("recipe=t5-base-fewshot-k4-cb seed=22 "
                                   "output_dir=smoke/t5-base-fewshot-k4-cb/22 "
                                   "'bank_dir=smoke/bank/t5-base-fewshot/k${data.k_shot}/")


def test_dry_run_with_a_launcher(workdir, capsys) -> None:
    lines = _dry(capsys, "table2", "--recipes", "t5-base-dtvg-cb", "--seeds", "42", "--no-stage1",
                 "--launcher", "accelerate launch --config_file launch_configs/x.yaml")
    commands = [line for line in lines if TRAIN in line]
    assert commands == [
        "accelerate launch --config_file launch_configs/x.yaml -m dtvg_dist.train "
        "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb/42 "
        "prompt.init_seed=42 bank_dir=runs/bank/t5-base/seed42"
    ]


def test_reserved_and_bad_overrides_are_refused(workdir, capsys) -> None:
    assert reproduce.main(["table2", "--dry-run", "--no-stage1", "seed=1"]) == 2
    assert reproduce.main(["table2", "--dry-run", "--no-stage1", "--recipes", "t5-base-dtvg-cb",
                           "optim.lr_typo=1"]) == 2
    assert "optim.lr" in capsys.readouterr().err


FAKE_TRAINER = """
import json, pathlib, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
out = pathlib.Path(args["output_dir"])
out.mkdir(parents=True, exist_ok=True)
score = {"22": 80.0, "32": 90.0}[args["seed"]]
(out / "results.json").write_text(json.dumps(
    {"task": "cb", "primary_metric": "accuracy", "test": {"accuracy": score},
     "best_validation": {"accuracy": 99.0}, "p_init_seed": int(args["prompt.init_seed"])}))
"""


@pytest.mark.slow
def test_run_then_report_end_to_end(tmp_path, monkeypatch, capsys) -> None:
    """A fake trainer stands in for training: the grid runs, resumes, and reports."""
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAINER)
    argv = ["table2", "--recipes", "t5-base-dtvg-cb", "--seeds", "22,32", "--no-stage1",
            "--launcher", f"{sys.executable} {fake}"]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    assert "| cb | accuracy | 85.0 ± 7.1 (2/2) | 97.6 ± 3.4 | -12.6 |" in out
    assert "Stage-1 TPV banks: one stage-1 bank per seed" in out
    report = json.loads((tmp_path / "runs/reports/table2.json").read_text())
    cb = next(r for r in report["rows"] if r["task"] == "cb")
    assert cb["cells"]["dtvg"]["ours"]["values"] == {"22": 80.0, "32": 90.0}
    assert (tmp_path / "runs/reports/table2.png").stat().st_size > 0
    assert reproduce.main([*argv, "--no-plot"]) == 0  # everything exists: nothing runs again
    assert f"{TRAIN} recipe" not in capsys.readouterr().out


# ------------------------------------------------------------------------- report
def _write_results(runs: Path, recipe: str, seed: int, variant: str = "dtvg", **blocks) -> None:
    out = run_dir(runs, recipe, variant, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(blocks))


def test_report_aggregates_over_seeds_and_marks_missing_runs(tmp_path) -> None:
    runs = tmp_path / "runs"
    rte = {22: 85.0, 32: 86.5, 42: 88.25}  # seed 52 missing
    cb = {22: 96.4, 32: 100.0, 42: 92.9, 52: 98.2}
    for seed, value in rte.items():
        _write_results(runs, "t5-base-dtvg-rte", seed, test={"accuracy": value})
    for seed, value in cb.items():
        _write_results(runs, "t5-base-dtvg-cb", seed, test={"accuracy": value})
    _write_results(runs, "t5-base-dtvg-cb", 22, "pt", test={"accuracy": 70.0})
    data = collect("table2", runs)
    rows = {r["task"]: r["cells"] for r in data["rows"]}

    ours = rows["cb"]["dtvg"]["ours"]
    assert ours["n"] == 4 and ours["missing_seeds"] == []
    assert ours["mean"] == pytest.approx(statistics.mean(cb.values()))
    assert ours["std"] == pytest.approx(statistics.stdev(cb.values()))
    assert rows["cb"]["dtvg"]["paper"] == {"mean": 97.6, "std": 3.4}
    rte_ours = rows["rte"]["dtvg"]["ours"]
    assert rte_ours["n"] == 3 and rte_ours["missing_seeds"] == [52]
    assert rte_ours["mean"] == pytest.approx(statistics.mean(rte.values()))
    assert rte_ours["std"] == pytest.approx(statistics.stdev(rte.values()))
    assert rows["cb"]["pt"]["ours"]["n"] == 1 and rows["cb"]["pt"]["ours"]["std"] is None
    assert rows["wsc"]["dtvg"]["ours"]["n"] == 0

    md = to_markdown(data)
    cb_line = next(line for line in md.splitlines() if line.startswith("| cb |"))
    mean, std = statistics.mean(cb.values()), statistics.stdev(cb.values())
    assert cb_line.startswith(f"| cb | accuracy | {mean:.1f} ± {std:.1f} (4/4) | 97.6 ± 3.4 | "
                              f"{mean - 97.6:+.1f} |")
    assert "70.0 (1/4; **missing seed 32, 42, 52**) | 67.9 |" in cb_line  # PT, ours vs paper
    rte_line = next(line for line in md.splitlines() if line.startswith("| rte |"))
    assert "(3/4; **missing seed 52**) | 86.3 ± 0.6 |" in rte_line
    wsc_line = next(line for line in md.splitlines() if line.startswith("| wsc |"))
    assert "| **MISSING** (0/4) | 69.9 ± 3.6 |" in wsc_line
    glue = next(line for line in md.splitlines() if line.startswith("| *GLUE avg.*"))
    assert "incomplete (1/8 rows) | 87.4 |" in glue


def test_report_group_average_and_validation_split(tmp_path) -> None:
    runs = tmp_path / "runs"
    values = {}
    for i, task in enumerate(("multirc", "boolq", "wic", "wsc", "cb")):
        values[task] = 70.0 + i
        metric = "f1a" if task == "multirc" else "accuracy"
        _write_results(runs, f"t5-base-dtvg-{task}", 42, test={metric: values[task]})
    data = collect("table2", runs, seeds=(42,))
    superglue = next(a for a in data["averages"] if a["group"] == "SuperGLUE")["cells"]["dtvg"]
    assert superglue["ours"] == pytest.approx(statistics.mean(values.values()))
    assert superglue["paper"] == 78.9

    _write_results(runs, "t5-base-nlg-e2e_nlg", 22, test={"bleu_dtvg": 1.0},
                   best_validation={"bleu_dtvg": 30.0, "rouge1": 60.0})
    nlg = collect("table4", runs, seeds=(22,))
    e2e = {r["metric"]: r["cells"]["dtvg"] for r in nlg["rows"] if r["task"] == "e2e_nlg"}
    assert e2e["bleu_dtvg"]["ours"]["mean"] == 30.0 and e2e["bleu_dtvg"]["paper"]["mean"] == 33.1
    assert e2e["rouge2"]["ours"]["n"] == 0  # not in the file: missing, not zero


def test_report_cli_writes_markdown_json_png(tmp_path, capsys) -> None:
    from dtvg_dist.report import main

    runs = tmp_path / "runs"
    _write_results(runs, "llama3-8b-cb", 42, test={"accuracy": 85.7})
    assert main(["table5", "--runs-dir", str(runs), "--seeds", "42", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "| Llama-3-8B cb | accuracy | 85.7 (1/1) | 86.3 | -0.6 |" in out
    assert (runs / "reports/table5.md").is_file() and (runs / "reports/table5.json").is_file()
    paths = write_report("figure6", runs, tmp_path / "out", seeds=(42,), with_plot=False)
    assert "n/a" not in paths["markdown"].read_text()  # no paper value is shown as "–"


@pytest.mark.slow
def test_variant_links_are_made_and_read_through(tmp_path, monkeypatch, capsys) -> None:
    """prefix-argmax on a paper recipe runs once (as dtvg); the report finds it
    under both columns through the link."""
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAINER)
    argv = ["table2", "--recipes", "t5-base-dtvg-cb", "--seeds", "22", "--no-stage1", "--no-plot",
            "--variants", "dtvg,prefix-argmax", "--launcher", f"{sys.executable} {fake}"]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(f"{TRAIN} recipe") == 1
    link = tmp_path / "runs/t5-base-dtvg-cb@prefix-argmax"
    assert link.is_symlink() and (link / "22/results.json").is_file()
    report = json.loads((tmp_path / "runs/reports/table2.json").read_text())
    cb = next(r for r in report["rows"] if r["task"] == "cb")["cells"]
    assert cb["prefix-argmax"]["ours"]["values"] == {"22": 80.0} == cb["dtvg"]["ours"]["values"]
    assert cb["prefix-argmax"]["paper"] == {"mean": 97.6, "std": 3.4}  # the released rule's numbers


def test_report_std_conventions(tmp_path) -> None:
    runs = tmp_path / "runs"
    values = {22: 100.0, 32: 100.0, 42: 92.857142857}  # the paper's CB 97.6 ± 3.4, three runs
    for seed, value in values.items():
        _write_results(runs, "t5-base-dtvg-cb", seed, test={"accuracy": value})
    seeds = tuple(values)
    cells = {std: next(r for r in collect("table2", runs, seeds, std=std)["rows"]
                       if r["task"] == "cb")["cells"]["dtvg"]["ours"] for std in ("sample", "population")}
    mean = statistics.mean(values.values())
    assert cells["population"]["std"] == pytest.approx(statistics.pstdev(values.values()))
    assert cells["sample"]["std"] == pytest.approx(statistics.stdev(values.values()))
    assert (round(mean, 1), round(cells["population"]["std"], 1)) == (97.6, 3.4)
    assert round(cells["sample"]["std"], 1) == 4.1
    md = to_markdown(collect("table2", runs, seeds, std="population"))
    assert "mean ± population std (n)" in md and "| 97.6 ± 3.4 (3/3) | 97.6 ± 3.4 | +0.0 |" in md
    with pytest.raises(ValueError, match="std must be one of"):
        collect("table2", runs, seeds, std="robust")


def test_report_marks_quoted_and_own_paper_numbers(tmp_path) -> None:
    md2 = to_markdown(collect("table2", tmp_path, (42,)))
    assert "Paper numbers: DTVG: run by the authors; PT: quoted from Asai et al. (2022)" in md2
    assert "SPoT: quoted from Asai et al. (2022)" in md2
    md8 = to_markdown(collect("table8", tmp_path, (42,)))
    assert "PT: quoted from Wang et al. (2023), MPT" in md8
    md5 = to_markdown(collect("table5", tmp_path, (42,)))
    assert "PT: run by the authors; SPoT: run by the authors" in md5


def test_report_says_which_banks_the_runs_used(tmp_path) -> None:
    runs = tmp_path / "runs"
    for seed in (22, 32):
        _write_results(runs, "t5-base-dtvg-cb", seed, test={"accuracy": 90.0}, p_init_seed=seed)
    assert collect("table2", runs, (22, 32))["banks"]["mode"] == "per-seed"
    for seed in (22, 32):
        _write_results(runs, "t5-base-dtvg-cb", seed, test={"accuracy": 90.0}, p_init_seed=0)
    banks = collect("table2", runs, (22, 32))["banks"]
    assert banks["mode"] == "shared" and "P_init seed 0" in banks["text"]
    _write_results(runs, "t5-base-dtvg-cb", 22, test={"accuracy": 90.0})
    assert collect("table2", runs, (22, 32))["banks"]["unrecorded_runs"] == 1


def test_report_lr_search_picks_the_best_validation_pair_per_row(tmp_path) -> None:
    from dtvg_dist.reporting.report import lr_variant

    runs = tmp_path / "runs"
    for lr in (0.3, 0.4, 0.5):
        for slr in (0.4, 0.6, 0.8, 1.0):
            for seed in (22, 32):
                val = 80.0 + 10 * lr + slr  # at most 86.0 (0.5 / 1.0)
                val += {(0.4, 0.8): 5.0, (0.5, 0.4): 4.3}.get((lr, slr), 0.0)  # 89.8 vs 89.7
                _write_results(runs, "t5-base-dtvg-cb", seed, lr_variant(lr, slr),
                               best_validation={"accuracy": val},
                               test={"accuracy": 60.0 + seed / 2 + lr})
    data = collect("table2", runs, (22, 32), lr_search=True)
    cell = next(r for r in data["rows"] if r["task"] == "cb")["cells"]["dtvg"]["ours"]
    assert cell["lr"] == [0.4, 0.8]
    assert cell["values"] == {"22": 71.4, "32": 76.4}  # the winner's test scores
    assert cell["lr_search"][lr_variant(0.4, 0.8)]["validation"] == pytest.approx(89.8)
    assert len(cell["lr_search"]) == 12
    line = next(x for x in to_markdown(data).splitlines() if x.startswith("| cb |"))
    assert "73.9 ± 3.5 (2/2) [lr 0.4 / 0.8]" in line
    rte = next(r for r in data["rows"] if r["task"] == "rte")["cells"]["dtvg"]["ours"]
    assert rte["n"] == 0 and rte["lr"] is None


def test_paper_averages_stated_in_the_text_for_figures_4_and_5(tmp_path) -> None:
    fig4 = collect("figure4", tmp_path, (42,))
    assert fig4["variants"] == ["dtvg", "all", "ts", "kc"]
    avg = fig4["averages"][0]["cells"]
    assert (avg["all"]["paper"], avg["ts"]["paper"], avg["kc"]["paper"]) == (74.8, 75.9, 75.1)
    fig5 = collect("figure5", tmp_path, (42,))["averages"][0]["cells"]
    assert (fig5["dtvg"]["paper"], fig5["fixed"]["paper"]) == (77.4, 75.2)
    t1 = collect("table1", tmp_path, (42,))
    cb = next(r for r in t1["rows"] if r["task"] == "cb")["cells"]
    assert (cb["tpv"]["paper"]["mean"], cb["spot"]["paper"]["mean"], cb["pt"]["paper"]["mean"]) == (
        92.9, 78.6, 82.1)
    assert t1["averages"][0]["cells"]["tpv"]["paper"] == 76.4


def test_table9_measures_pt_and_dtvg_throughput_on_tiny_t5(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["table9", "--recipes", "tiny-t5", "--runs-dir", "out", "--steps", "1", "--rounds", "2",
            "logging.progress_bar=false"]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "out/reports/table9.json").read_text())
    ours = result["samples_per_s"]
    assert all(len(result["per_round"][m]) == 2 and ours[m] > 0 for m in ("pt", "dtvg"))
    assert result["dtvg_over_pt"] == pytest.approx(ours["dtvg"] / ours["pt"])
    assert result["paper_dtvg_over_pt"] == pytest.approx(58.6 / 64.2)
    assert f"| DTVG / PT | {result['dtvg_over_pt']:.3f} | 0.913 |" in out
    assert result["batch_size"] == 8 and result["n_sources"] == 4
    assert result["tpvs"].startswith("random TPVs")  # no bank in this folder


# ------------------------------------------------------- the other prompt methods
def test_method_variants_run_with_their_releases_optimizer(workdir, capsys) -> None:
    lines = _dry(capsys, "table2", "--recipes", "t5-base-dtvg-cb", "--no-stage1", "--seeds", "42",
                 "--shared-bank", "--variants", "attempt,dept")
    commands = [line.split(TRAIN)[1].strip() for line in lines if TRAIN in line]
    assert commands == [
        "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb@attempt/42 "
        "method=attempt optim.weight_decay=0.0 optim.stage2_eps=1.0e-8",
        "recipe=t5-base-dtvg-cb seed=42 output_dir=runs/t5-base-dtvg-cb@dept/42 "
        "method=dept optim.weight_decay=0.0",
    ]
    # the method's own settings above each job: CB's DePT values from ZhengxiangShi/DePT
    # checkpoints/superglue-cb (0.4 / 1e-4), not MRPC's 0.3 / 5e-3
    assert "# DePT on cb: prompt lr 0.4, A/B lr 0.0001, m 60, k 30, max_length 256" in lines
    assert any(line.startswith("# ATTEMPT:") and "norm frozen" in line and "eps 1e-08" in line
               for line in lines)


def test_report_marks_mpt_unverified_and_states_attempt_departures(tmp_path) -> None:
    md = to_markdown(collect("table2", tmp_path, (42,), variants=("dtvg", "attempt", "mpt", "dept")))
    header = next(line for line in md.splitlines() if line.startswith("| row |"))
    assert "MPT ours (λ, T unverified)" in header and "ATTEMPT ours |" in header
    assert "Note on MPT: λ (Eq. 5) and T (Eq. 4) are 1.0 placeholders" in md
    assert "Note on ATTEMPT: 230,400 trained parameters" in md and "20 epochs" in md
    plain = to_markdown(collect("table2", tmp_path, (42,), variants=("dtvg", "pt")))
    assert "unverified" not in plain and "Note on" not in plain


def test_quoted_method_rows() -> None:
    assert paper_value("table2", "attempt", "cb", "accuracy") == PaperValue(78.6)
    assert paper_value("table2", "dept", "rte", "accuracy") == PaperValue(79.1)
    assert paper_value("table2", "mpt", "cola", "matthews") == PaperValue(62.4)
    assert paper_value("table7", "dept", "nq", "f1") == PaperValue(73.2, 0.1)
    assert paper_value("table3", "attempt", "k4/cb", "accuracy") == PaperValue(82.1)
    assert paper_value("table8", "dept", "k4/mnli", "accuracy") == PaperValue(44.0, 1.1)
    for m in ("attempt", "mpt", "dept"):
        assert len(PAPER["table2"][m]) == 13 and len(PAPER["table7"][m]) == 8
        assert len(PAPER["table3"][m]) == 9
    assert all(len(PAPER["table8"][m]) == 39 for m in ("mpt", "dept"))


def test_report_marks_quoted_method_numbers(tmp_path) -> None:
    runs = tmp_path / "runs"
    _write_results(runs, "t5-base-dtvg-cb", 42, "attempt", test={"accuracy": 75.0})
    data = collect("table2", runs, seeds=(42,), variants=("dtvg", "attempt", "dept"))
    cb = next(r for r in data["rows"] if r["task"] == "cb")["cells"]
    assert cb["attempt"]["ours"]["mean"] == 75.0
    assert cb["attempt"]["paper"] == {"mean": 78.6, "std": None}
    assert cb["dept"]["paper"] == {"mean": 92.9, "std": None}
    assert "Asai et al. (2022)" in data["paper_sources"]["attempt"]
    assert "Shi and Lipani (2024)" in data["paper_sources"]["dept"]
    md = to_markdown(data)
    assert "| ATTEMPT ours | ATTEMPT paper (quoted) |" in md
    assert "| DePT ours | DePT paper (quoted) |" in md
    assert "| DTVG ours | DTVG paper | Δ |" in md  # the authors' own numbers are not marked
    cb_line = next(line for line in md.splitlines() if line.startswith("| cb |"))
    assert "| 75.0 (1/1) | 78.6 |" in cb_line


# ------------------------------------------------------------ dry-run cost
def _grid_numbers(lines: list[str]) -> tuple[int, int, float, float]:
    import re

    grid = next(line for line in lines if line.startswith("# grid: "))
    hours = next(line for line in lines if line.startswith("# estimated "))
    runs, steps = re.match(r"# grid: (\d+) runs, ([\d,]+) optimizer steps, ([\d.e+]+) backbone", grid).groups()[:2]
    tokens = float(re.search(r"steps, ([\d.e+]+) backbone", grid).group(1))
    return int(runs), int(steps.replace(",", "")), tokens, float(re.search(r"estimated ([\d,.]+) GPU", hours)
                                                                 .group(1).replace(",", ""))


def test_dry_run_ends_with_the_grids_size_and_gpu_hours(workdir, capsys) -> None:
    from dtvg_dist.costs import ModelShape, find_model_config, forward_flops
    from dtvg_dist.orchestration.config import load_recipe

    lines = _dry(capsys, "table2", "--seeds", "22,32", "--recipes", "t5-base-dtvg-rte", "--no-stage1",
                 "--gpu", "h100-80gb", "--mfu", "0.5")
    runs, steps, tokens, hours = _grid_numbers(lines)
    cfg = load_recipe("t5-base-dtvg-rte")
    task = get_task("rte")
    examples = cfg.optim.batch_size * cfg.optim.grad_accum
    source, target = cfg.prompt.length + task.max_source_length, task.max_target_length
    assert (runs, steps) == (2, 2 * cfg.optim.max_steps)
    assert tokens == pytest.approx(steps * examples * (source + target), rel=1e-3)
    shape = ModelShape.from_config(find_model_config(cfg.backbone)[0])
    # forward + the backward to the prompt (about one forward), H100 SXM dense bf16 at 50%
    expected = steps * examples * 2 * forward_flops(shape, source, target) / (989.5e12 * 0.5) / 3600
    assert hours == pytest.approx(expected, rel=1e-3, abs=0.05)
    assert "h100-80gb" in lines[-1] and "MFU 50%" in lines[-1] and "datasheet" in lines[-1]


def test_dry_run_uses_the_measured_speed_of_finished_runs(workdir, capsys) -> None:
    from dtvg_dist.orchestration.config import load_recipe

    done = run_dir(Path("runs"), "t5-base-dtvg-rte", "dtvg", 22)
    done.mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"task": "rte", "samples_per_s": 40.0}))
    lines = _dry(capsys, "table2", "--seeds", "22,32", "--recipes", "t5-base-dtvg-rte", "--no-stage1")
    runs, steps, _, hours = _grid_numbers(lines)
    cfg = load_recipe("t5-base-dtvg-rte")
    examples = cfg.optim.batch_size * cfg.optim.grad_accum
    assert hours == pytest.approx(steps * examples / 40.0 / 3600, rel=1e-3, abs=0.05)
    assert any("2 of them timed by the measured samples_per_s of 1 finished runs" in line for line in lines)


def test_measured_speed_is_the_median_over_finished_seeds(tmp_path) -> None:
    from dtvg_dist.reporting.report import measured_speed

    for seed, rate, peak in ((22, 10.0, 500.0), (32, 30.0, 700.0), (42, 20.0, 600.0)):
        folder = run_dir(tmp_path, "t5-base-dtvg-rte", "pt", seed)
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"samples_per_s": rate, "peak_memory_mb": peak}))
    got = measured_speed(tmp_path, "t5-base-dtvg-rte", "pt", (22, 32, 42, 52))
    assert got == {"samples_per_s": 20.0, "tokens_per_s": None, "peak_memory_mb": 600.0, "runs": 3}
