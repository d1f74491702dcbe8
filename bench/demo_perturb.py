"""How far the demo's outcome moves under perturbations that stand in for
another machine's rounding, and which stage of the pipeline amplifies them.

    python bench/demo_perturb.py [--scenario two-sources|one-source] [--seeds 22,32,42,52,62] [--recipe demo-immature]
        [--variants base,threads2,noise,float32] [--work runs/perturb] [--jobs 1] [--rerun] [key=value ...]

Every variant runs the whole demo (`python -m dtvg_dist.demo`, its default
recipes, plus the key=value overrides) in a folder of its own, so that no
variant reuses another's cached backbone:
- base: as shipped (one torch thread);
- threads2: OMP_NUM_THREADS=2 (teaching, stage 1 and stage 2 on two threads);
- noise: the taught backbone's weights times (1 + 1e-6 N(0, 1))
  (DTVG_DEMO_WEIGHT_NOISE=1e-6, dtvg_dist/model/synthetic.py);
- float32 / float64: the teaching in that dtype (DTVG_DEMO_TEACH_DTYPE;
  the default is float64, before it was float32);
- teachseed1: another teaching altogether (backbone.init_seed=1), the far
  end of what a chaotic 600-step teaching can turn a rounding difference into;
- avx2: ATEN_CPU_CAPABILITY=avx2 and MKL_ENABLE_INSTRUCTIONS=AVX2, the kernels
  an AVX2-only CPU runs (only a change on a CPU with AVX-512).
Other seeds are the seeds themselves: every number is given per seed.

Then, per variant and seed, against base: the relative change of the taught
weights, of each stage-1 source TPV's mean row (the row Eq. 2 compares) and
of the target's, the source-to-target similarities, the steps at which
DTVG's group differs, and each method's test score. Prints a table and
writes <work>/perturb.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dtvg_dist.orchestration.config import load_recipe  # noqa: E402
from dtvg_dist.reporting.demo_report import DEFAULT_SCENARIO, SCENARIOS  # noqa: E402

VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {  # name: (environment, overrides)
    "base": ({}, []),
    "threads2": ({"OMP_NUM_THREADS": "2"}, []),
    "noise": ({"DTVG_DEMO_WEIGHT_NOISE": "1e-6"}, []),
    "float32": ({"DTVG_DEMO_TEACH_DTYPE": "float32"}, []),
    "float64": ({"DTVG_DEMO_TEACH_DTYPE": "float64"}, []),
    "teachseed1": ({}, ["backbone.init_seed=1"]),
    # torch's and MKL's AVX2 kernels on an AVX-512 CPU: an AVX2-only machine's rounding
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, []),
}
# the scenario's target, sources and conflicting sources (set by main from --scenario / --recipe)
SCENARIO, TARGET, SOURCES, CONFLICTING = DEFAULT_SCENARIO, "", (), ()


def run_variant(name: str, work: Path, seeds: str, recipe: str, overrides: list[str], rerun: bool) -> float:
    """The demo of one variant in <work>/<name>; returns its wall time (0 when reused)."""
    folder = work / name
    if (folder / "demo" / "demo.json").is_file() and not rerun:
        return 0.0
    folder.mkdir(parents=True, exist_ok=True)
    env_extra, variant_overrides = VARIANTS[name]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DTVG_DEMO_") and k not in ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY",
                                                           "MKL_ENABLE_INSTRUCTIONS")}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env_extra})
    start = time.time()
    with open(folder / "demo.log", "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "dtvg_dist.demo", "--seeds", seeds, "--out", "demo", "--recipe", recipe,
             "--scenario", SCENARIO,
             "logging.progress_bar=false", *overrides, *variant_overrides],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"variant {name}: the demo exited {proc.returncode}; see {folder / 'demo.log'}")
    return time.time() - start


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """The backbone the variant trained on: the perturbed one, where the plain
    one it was made from is cached next to it."""
    found = sorted((folder / "runs" / ".cache").glob("synthetic-*/model.safetensors"),
                   key=lambda p: len(p.parent.name))
    if not found:
        raise SystemExit(f"{folder}: no taught backbone under runs/.cache")
    return load_file(str(found[-1]))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _mean_row(bank: Path, task: str) -> torch.Tensor:
    return load_file(str(bank / f"{task}.safetensors"))["tpv"].double().mean(0)


def _groups_per_step(run: Path) -> list[list[str]]:
    rows = [json.loads(line) for line in (run / "grouping.jsonl").read_text().splitlines() if line.strip()]
    return [sorted(r["group"]) for r in rows]


def measure(work: Path, name: str, seeds: list[int]) -> dict:
    """One variant's stages against base's (base against itself gives zeros)."""
    base, this = work / "base", work / name
    out: dict = {"weights_rel": _rel(torch.cat([t.flatten() for t in _weights(this).values()]),
                                     torch.cat([t.flatten() for t in _weights(base).values()])),
                 "seeds": {}}
    tables = {f: json.loads((f / "demo" / "demo.json").read_text()) for f in (base, this)}
    for seed in seeds:
        bank_b, bank_v = (f / "demo" / "bank" / f"seed{seed}" for f in (base, this))
        src = {s: _rel(_mean_row(bank_v, s), _mean_row(bank_b, s)) for s in SOURCES}
        t_b, t_v = _mean_row(bank_b, TARGET), _mean_row(bank_v, TARGET)
        sims_b = {s: float(_mean_row(bank_b, s) @ t_b) for s in SOURCES}
        sims_v = {s: float(_mean_row(bank_v, s) @ t_v) for s in SOURCES}
        entry: dict = {
            "source_tpv_rel": src, "target_tpv_rel": _rel(t_v, t_b),
            "target_tpv_cos": float(t_v @ t_b / (t_v.norm() * t_b.norm()).clamp_min(1e-30)),
            "sims_base": sims_b, "sims": sims_v, "tests": {}, "tests_base": {},
        }
        rows_b = {row["method"]: row for row in tables[base]["rows"]}
        for row in tables[this]["rows"]:
            if row["method"] in rows_b:
                entry["tests_base"][row["method"]] = rows_b[row["method"]]["seeds"][str(seed)]["test"]
                entry["tests"][row["method"]] = row["seeds"][str(seed)]["test"]
        runs = {m: this / "demo" / m / str(seed) for m in ("dtvg",)}
        if (runs["dtvg"] / "grouping.jsonl").is_file():
            g_v = _groups_per_step(runs["dtvg"])
            g_b = _groups_per_step(base / "demo" / "dtvg" / str(seed))
            entry["group_steps_differ"] = sum(a != b for a, b in zip(g_v, g_b, strict=True))
            entry["conflict_steps"] = sum(any(s in g for s in CONFLICTING) for g in g_v)
            entry["last_group"] = g_v[-1] if g_v else []
        out["seeds"][str(seed)] = entry
    out["means"] = {row["method"]: row["test_mean"] for row in tables[this]["rows"]}
    return out


def to_text(results: dict, seeds: list[int]) -> str:
    lines = ["relative change against base (||x_variant - x_base|| / ||x_base||; TPVs by their mean row)",
             f"{'variant':<11} {'weights':>8} {'src TPV':>8} {'tgt TPV':>8} {'tgt cos':>8} "
             f"{'grp diff':>8} {'conflict':>8}  test per seed, per method (variant / base)"]
    for name, r in results.items():
        per = r["seeds"].values()
        src = max(max(e["source_tpv_rel"].values()) for e in per)
        tgt = max(e["target_tpv_rel"] for e in per)
        cos = min(e["target_tpv_cos"] for e in per)
        diff = sum(e.get("group_steps_differ", 0) for e in per)
        conflict = sum(e.get("conflict_steps", 0) for e in per)
        methods = list(next(iter(per))["tests"])
        scores = "; ".join(
            f"{m} " + " ".join(f"{r['seeds'][str(s)]['tests'][m]:.0f}/{r['seeds'][str(s)]['tests_base'][m]:.0f}"
                              for s in seeds) for m in methods)
        lines.append(f"{name:<11} {r['weights_rel']:8.1e} {src:8.1e} {tgt:8.1e} {cos:8.3f} "
                     f"{diff:8d} {conflict:8d}  {scores}")
    lines.append("src/tgt TPV: the largest over seeds (and sources); tgt cos: the smallest; grp diff: DTVG "
                 "steps whose group differs from base's, summed over seeds; conflict: DTVG steps whose "
                 f"group holds {' or '.join(CONFLICTING)}, summed over seeds")
    lines.append("means: " + " | ".join(
        f"{name}: " + ", ".join(f"{m} {v:.1f}" for m, v in r["means"].items()) for name, r in results.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every variant's demo")
    parser.add_argument("--seeds", default="22,32,42,52,62")
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, choices=list(SCENARIOS))
    parser.add_argument("--recipe", default=None, help="the demo's recipe (default: the scenario's; "
                        "demo-immature with --scenario one-source: the target TPV after 12 steps, as the demo had it before)")
    parser.add_argument("--variants", default="base,threads2,noise,float32")
    parser.add_argument("--work", default="runs/perturb", help="one folder per variant below it")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at once (each on its own threads)")
    parser.add_argument("--rerun", action="store_true", help="rerun variants whose demo.json exists")
    args = parser.parse_intermixed_args(argv)
    global SCENARIO, TARGET, SOURCES, CONFLICTING
    SCENARIO = args.scenario
    args.recipe = args.recipe or SCENARIOS[args.scenario].recipe
    cfg = load_recipe(args.recipe)
    TARGET, SOURCES = str(cfg.target_task), tuple(cfg.source_tasks)
    CONFLICTING = SCENARIOS[args.scenario].conflicting
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        if name not in VARIANTS:
            parser.error(f"--variants: {name!r} is not one of {', '.join(VARIANTS)}")
    if "base" not in names:
        names.insert(0, "base")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    work = Path(args.work).resolve()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        walls = dict(zip(names, pool.map(
            lambda n: run_variant(n, work, args.seeds, args.recipe, list(args.overrides), args.rerun), names), strict=True))
    results = {name: measure(work, name, seeds) for name in names}
    for name in names:
        results[name]["wall_s"] = round(walls[name], 1)
    (work / "perturb.json").write_text(json.dumps({"seeds": seeds, "recipe": args.recipe,
                                                   "overrides": args.overrides,
                                                   "variants": results}, indent=2) + "\n")
    print(to_text(results, seeds))
    print(f"(wrote {work / 'perturb.json'}; demo wall s: "
          + ", ".join(f"{n} {w:.0f}" for n, w in walls.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
