"""The demo's conclusion does not move with another machine's rounding: the
teaching in float64 instead of float32 (another backbone, with other TPVs)
and the taught backbone's weights moved by a relative 1e-6
(bench/demo_perturb.py measures how far each stage moves). Each runs the
demo's main scenario (its recipes, settings and checks) on one of its seeds
(the suite's budget; bench/demo_perturb.py takes more) with the four methods
its checks compare, and every printed check must come
out as it does unperturbed (holds or DOES NOT HOLD alike): measured, they
do not (an expected failure, docs/demo.md); what holds on every variant is
that no group holds a conflicting source. The unperturbed
and the weight-noise runs share one taught backbone (the noise perturbs a
copy of it), so the three runs teach twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from background import BACKGROUND

from dtvg_dist import demo
from dtvg_dist.reporting.demo_report import DEMO, SCENARIOS
from dtvg_dist.tasks.synthetic import MIX_SOURCES, SOURCES

REPO = Path(__file__).resolve().parents[1]
SEEDS = (22,)
METHODS = ("pt", "spot", "all", "dtvg")  # the methods the checks compare
QUIET = ["logging.progress_bar=false"]
PERTURBATIONS = {
    "float64": {"DTVG_DEMO_TEACH_DTYPE": "float64"},
    "noise": {"DTVG_DEMO_WEIGHT_NOISE": "1e-6"},
}


def _run(folder: Path, cache: Path, extra_env: dict[str, str]) -> dict:
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTVG_DEMO_") and k != "OMP_NUM_THREADS"}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "DTVG_CACHE": str(cache), **extra_env})
    proc = subprocess.run(
        [sys.executable, "-m", "dtvg_dist.demo", "--seeds", ",".join(map(str, SEEDS)), "--methods",
         ",".join(METHODS), "--out", "demo", *QUIET], cwd=folder, env=env, capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((folder / "demo" / "demo.json").read_text())


def _variant(root: Path, name: str, cache: Path | None = None) -> tuple[dict, Path]:
    """The demo's table for `name` ("base" or a perturbation) and the cache
    it taught its backbone in: its own, or `cache` (noise perturbs a copy of
    the backbone that base taught there)."""
    cache = cache or root / f"cache-{name}"
    return _run(root / name, cache, PERTURBATIONS.get(name, {})), cache


# Three pieces of background work (tests/background.py): base, float64, and
# noise once base has taught its backbone.
BACKGROUND.offer("tables:base", lambda: _variant(BACKGROUND.folder("perturbed"), "base"))
BACKGROUND.offer("tables:float64", lambda: _variant(BACKGROUND.folder("perturbed"), "float64"))
BACKGROUND.offer("tables:noise", lambda: _variant(BACKGROUND.folder("perturbed"), "noise",
                                                  BACKGROUND.done("tables:base")[1]), after=("tables:base",))


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, dict]:
    """base, float64 and noise: each as the background left it (done, or
    waited for), else run here, float64 beside base and then noise."""
    root = tmp_path_factory.mktemp("perturbed")
    with ThreadPoolExecutor(max_workers=1) as pool:
        wide = pool.submit(BACKGROUND.result, "tables:float64", lambda: _variant(root, "float64"))
        base, cache = BACKGROUND.result("tables:base", lambda: _variant(root, "base"))
        noise, _ = BACKGROUND.result("tables:noise", lambda: _variant(root, "noise", cache))
        return {"base": base, "float64": wide.result()[0], "noise": noise}


@pytest.mark.slow
@pytest.mark.parametrize("perturbation", list(PERTURBATIONS))
def test_the_demo_checks_are_computed_and_printed(tables, perturbation) -> None:
    table = tables[perturbation]
    assert table["seeds"] == list(SEEDS) and table["scenario"] == "two-sources"
    checked = demo.claims(table)
    assert len(checked) == len(demo.CLAIMS) + 2  # every claim and both group checks could be checked
    assert table["claims"] == checked  # and the printed table says so


@pytest.mark.slow
@pytest.mark.parametrize("perturbation", [
    pytest.param("float64", marks=pytest.mark.xfail(strict=False, reason=(
        "another backbone (weights 17% apart): the two-sources verdicts move, measured here: DTVG above all "
        "and both sources grouped (docs/demo.md); non-strict, as another CPU teaches another base"))),
    pytest.param("noise", marks=pytest.mark.xfail(strict=False, reason=(
        "1e-6 moves the TPVs by 1e-4 (bench/RESULTS.md, demo_perturb): the verdicts stayed in every CI "
        "run of 2026-12-07 on this machine, one run of 2026-12-06 saw DTVG fall below SPoT (a verdict near "
        "a tie); not claimed"))),
])
def test_the_demo_verdicts_are_the_unperturbed_ones(tables, perturbation) -> None:
    verdicts = {c["text"]: c["holds"] for c in tables[perturbation]["claims"]}
    assert verdicts == {c["text"]: c["holds"] for c in tables["base"]["claims"]}, perturbation


@pytest.mark.slow
def test_the_group_never_holds_a_conflicting_source(tables) -> None:
    """Whatever else moves: at no step on any seed of any variant does DTVG
    group a source whose rule swaps one half of the target's answers."""
    for name, table in tables.items():
        dtvg = next(row for row in table["rows"] if row["method"] == "dtvg")
        for seed in SEEDS:
            groups = [g["group"] for g in dtvg["seeds"][str(seed)]["groups"]]
            assert groups and not any(set(DEMO.conflicting) & set(g) for g in groups), (name, seed, groups)


def _table(pt: list[float], dtvg: list[float], groups: list[list[dict]], spot: list[float] | None = None,
           sources: tuple[str, ...] = SOURCES) -> dict:
    seeds = [1, 2]

    def row(method: str, title: str, tests: list[float], extra: list[dict] | None = None) -> dict:
        return {"method": method, "title": title, "seeds": {
            str(s): {"test": t, **({"groups": extra[i], "steps_in_group": dict.fromkeys(sources, 0)}
                                   if extra else {})} for i, (s, t) in enumerate(zip(seeds, tests, strict=True))}}

    return {"seeds": seeds, "rows": [row("pt", "PT", pt), row("spot", "SPoT", spot or [50.0, 50.0]),
                                     row("all", "all", [50.0, 50.0]), row("dtvg", "DTVG", dtvg, groups)]}


def test_claims_are_checked_per_seed() -> None:
    one = SCENARIOS["one-source"]
    good = [[{"first_step": 1, "last_step": 12, "group": ["syn_same", "syn_same_b"]}]] * 2
    checked = demo.claims(_table([60.0, 70.0], [100.0, 100.0], good), one)
    assert [c["holds"] for c in checked] == [True, True, True]
    assert checked[0]["worst"] == 30.0 and checked[2]["worst"] == 0
    assert checked[1]["worst"] == 50.0 and "in the mean over seeds" in checked[1]["text"]
    # one seed below the margin fails the claim, though the mean gap is large
    checked = demo.claims(_table([60.0, 95.0], [100.0, 100.0], good), one)
    assert checked[0]["holds"] is False and checked[0]["worst"] == 5.0
    assert "on every seed" in checked[0]["text"]
    # a conflicting source in the group, for steps 3-4 of one seed
    bad = [good[0], [{"first_step": 1, "last_step": 2, "group": ["syn_same"]},
                     {"first_step": 3, "last_step": 4, "group": ["syn_same", "syn_flip"]},
                     {"first_step": 5, "last_step": 12, "group": ["syn_same"]}]]
    checked = demo.claims(_table([60.0, 70.0], [100.0, 100.0], bad), one)
    assert checked[2]["holds"] is False and checked[2]["worst"] == 2
    assert "syn_flip, syn_flip_b" in checked[2]["text"]


def test_the_two_sources_checks() -> None:
    """The main scenario's checks: DTVG strictly above SPoT and above all
    sources in the mean (a tie fails), 10 above PT on every seed, no
    conflicting source, and both sources the target needs at every step."""
    both = [[{"first_step": 1, "last_step": 12, "group": ["syn_same", "syn_topic"]}]] * 2
    checked = demo.claims(_table([60.0, 70.0], [90.0, 90.0], both, spot=[80.0, 90.0], sources=MIX_SOURCES), DEMO)
    assert [c["text"] for c in checked] == [
        "DTVG is above SPoT in the mean over seeds", "DTVG is above all in the mean over seeds",
        "DTVG is at least 10 points above PT on every seed",
        "DTVG's group holds no conflicting source (syn_flip, syn_topic_flip) at any step on any seed",
        "DTVG's group holds both sources the target needs (syn_same, syn_topic) at every step on every seed"]
    assert [c["holds"] for c in checked] == [True, True, True, True, True] and checked[0]["worst"] == 5.0
    tie = demo.claims(_table([60.0, 70.0], [90.0, 90.0], both, spot=[90.0, 90.0], sources=MIX_SOURCES), DEMO)
    assert tie[0]["holds"] is False and tie[0]["worst"] == 0.0
    # one source only at steps 1-3 of seed 2: 3 steps fail the last check
    part = [both[0], [{"first_step": 1, "last_step": 3, "group": ["syn_topic", "syn_colour"]},
                      {"first_step": 4, "last_step": 12, "group": ["syn_same", "syn_topic"]}]]
    checked = demo.claims(_table([60.0, 70.0], [90.0, 90.0], part, sources=MIX_SOURCES), DEMO)
    assert checked[4]["holds"] is False and checked[4]["worst"] == 3 and checked[3]["holds"] is True
