"""Command line: python -m dtvg_dist.doctor recipe=NAME [key=value ...] [--watchdog-s S]

A pre-flight check, launched exactly as training is (plain python,
``accelerate launch --config_file ... -m dtvg_dist.doctor``, ``srun`` inside a
SLURM job), on every rank. Exit 0 when every check passes; else exit 2 with
one ``error:`` line per failing check on stderr, naming the rank, the host and
what to do. The checks live in :mod:`dtvg_dist.orchestration.doctor`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dtvg_dist import cli
from dtvg_dist.errors import UsageError, UserError
from dtvg_dist.orchestration.config import list_recipes, load_recipe
from dtvg_dist.orchestration.doctor import (
    Check,
    DoctorError,
    DoctorReport,
    RankEnv,
    fmt_rate,
    rank_env,
    render,
    run_doctor,
)

USAGE = """usage: python -m dtvg_dist.doctor recipe=NAME [key=value ...] [--watchdog-s S] [--bandwidth-mb MB]
       accelerate launch --config_file CONFIG -m dtvg_dist.doctor recipe=NAME ...
       srun python -m dtvg_dist.doctor recipe=NAME ...   (inside a SLURM job)

On every rank: host, ranks, device and free memory, backend, versions,
attention implementation; an all-reduce and a broadcast checked against their
known results, the bus bandwidth next to the planner's per-step traffic;
output_dir and bank_dir writable by every rank and the same folder on every
node; backbone config and tokenizer resolvable (no weights); the recipe's data
(the data preflight); for stage=2 the bank entries it reads. Exit 0 when all
pass, else exit 2 with one line per failing check.
  --watchdog-s S     seconds to wait for a rank at the rendezvous and at each
                     collective before naming it as missing (default 120)
  --bandwidth-mb MB  size of the all-reduce that measures bandwidth (default 64)
"""

DEFAULT_WATCHDOG_S = 120.0


def _parse(args: list[str]) -> tuple[str, list[str], float, int]:
    recipe, given, _, rest = cli.split_recipe_args(args, ("--watchdog-s", "--bandwidth-mb"))
    opts = {"--watchdog-s": str(DEFAULT_WATCHDOG_S), "--bandwidth-mb": "64", **given}
    try:
        watchdog, mb = float(opts["--watchdog-s"]), int(opts["--bandwidth-mb"])
    except ValueError:
        raise UsageError(f"--watchdog-s and --bandwidth-mb take numbers (got {opts})") from None
    if watchdog <= 0 or mb <= 0:
        raise UsageError("--watchdog-s and --bandwidth-mb must be positive")
    return recipe, rest, watchdog, mb


def _folders(cfg: Any) -> dict[str, Path]:
    """output_dir and bank_dir as the trainer resolves them (no weights loaded)."""
    from dtvg_dist.model.backbone import config_name
    from dtvg_dist.orchestration.pipeline import output_dir
    from dtvg_dist.store import run_files

    if cfg.bank_dir:
        bank = Path(cfg.bank_dir)
    elif cfg.backbone.config is not None:
        bank = run_files.default_bank_dir(config_name(cfg.backbone.config, cfg.backbone.init_seed))
    else:
        bank = run_files.default_bank_dir(os.path.basename(os.path.normpath(str(cfg.backbone.name_or_path))))
    return {"output_dir": output_dir(cfg), "bank_dir": bank}


class NodeChecks:
    """The checks whose answer depends on the node's disks and caches."""

    def __init__(self, cfg: Any, env: RankEnv) -> None:
        self.cfg, self.env = cfg, env
        self.tokenizer: Any = None
        self.family = "seq2seq"
        self.attention = "-"
        self.backbone_error = ""
        self.note = ""

    def _fail(self, name: str, detail: str, fix: str) -> Check:
        return Check(name, self.env.rank, self.env.host, False, detail, fix)

    def resolve_backbone(self) -> dict[str, Any]:
        """Config and tokenizer (no weights); the attention implementation that would run."""
        from dtvg_dist.orchestration.pipeline import recipe_tokenizer

        try:
            self.tokenizer, self.family, self.note = recipe_tokenizer(self.cfg)
            self.attention = _attention(self.cfg, self.family)
        except (UserError, OSError, ValueError) as err:
            self.backbone_error = str(err).splitlines()[0]
        return {"attention": self.attention}

    def backbone(self) -> Check | None:
        if self.backbone_error:
            return self._fail("backbone", self.backbone_error,
                              "put the backbone in the hub cache or backbone.name_or_path on this node "
                              "(python -m dtvg_dist.dataset download / huggingface-cli download)")
        return None

    def data(self) -> Check | None:
        from omegaconf import OmegaConf

        from dtvg_dist.data import DataSettings
        from dtvg_dist.data.module import TaskData
        from dtvg_dist.data.preflight import check_task
        from dtvg_dist.orchestration.config import recipe_tasks
        from dtvg_dist.orchestration.pipeline import check_tasks

        cfg = self.cfg
        check_tasks(cfg)
        settings = DataSettings.coerce(OmegaConf.to_container(cfg.data, resolve=True))
        for name in recipe_tasks(cfg):
            report = check_task(TaskData(name, settings, None, self.family, int(cfg.seed)), 64)
            if not report.ok:
                return self._fail("data", report.error,
                                  "python -m dtvg_dist.dataset check recipe=... on this node says more")
        return None

    def bank(self) -> Check | None:
        """stage=2 reads bank entries that stage 1 wrote: they must be there."""
        from dtvg_dist.model.methods import get_method
        from dtvg_dist.store.bank import entry_path

        cfg = self.cfg
        if str(cfg.stage) != "2":
            return None
        bank = _folders(cfg)["bank_dir"]
        missing = [t for t in get_method(cfg.method).bank_tasks(cfg) if not entry_path(bank, t).is_file()]
        if missing:
            return self._fail("bank", f"stage 2 needs bank entries missing from {bank}: {', '.join(missing)}",
                              "run stage=1 first (or set bank_dir= to the bank that holds them)")
        return None


def _attention(cfg: Any, family: str) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from dtvg_dist.model.backbone import choose_attn_implementation, resolve_dtype

    b = cfg.backbone
    if b.config is not None:
        d = dict(b.config)
        hf = AutoConfig.for_model(d.pop("model_type"), **d)
    else:
        hf = AutoConfig.from_pretrained(os.path.expanduser(str(b.name_or_path)))
    auto = AutoModelForCausalLM if family == "causal" else AutoModelForSeq2SeqLM
    model_cls = auto._model_mapping[type(hf)]
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return choose_attn_implementation(str(b.attn_implementation), model_cls, resolve_dtype(str(b.dtype)), device)


def _planner_traffic(recipe: str, overrides: list[str], report: DoctorReport) -> str:
    """What the planner says one GPU sends per optimizer step on this launch."""
    from dtvg_dist.plan import make_plan

    hosts = {f.get("host") for f in report.facts.values()}
    nodes, world = max(1, len(hosts)), len(report.facts)
    mode = "zero3" if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else "ddp"
    try:
        plan = make_plan(recipe, max(1, world // nodes), 80.0, nodes, overrides)
    except (UserError, OSError, ValueError) as err:
        return f"planner: n/a ({str(err).splitlines()[0]})"
    return f"planner: {mode} sends {_fmt_bytes(plan.mode(mode).sends)} per GPU per step"


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


@cli.command
def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "-h" in args or "--help" in args:
        print(USAGE + "\nrecipes: " + ", ".join(list_recipes()))
        return 0
    recipe, overrides, watchdog_s, mb = _parse(args)
    cfg = load_recipe(recipe, overrides)
    env = rank_env()
    folders = _folders(cfg)
    node = NodeChecks(cfg, env)
    checks: list[Callable[[], Check | None]] = []
    if env.local_rank == 0:  # one per node: they read the node's disks
        checks = [node.backbone, node.data, node.bank]
    try:
        report = run_doctor(env, folders, checks, watchdog_s=watchdog_s, bandwidth_bytes=mb * 2**20,
                            extra_facts=node.resolve_backbone)
    except DoctorError as err:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise
        # A hung collective leaves a process group that may never shut down
        # cleanly: say why and leave at once, exit 2.
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    if env.rank != 0:  # rank 0 prints; every rank exits with its verdict
        return 2 if report.failed_anywhere else 0
    bandwidth = "one process: no collective" if report.busbw is None else (
        f"all-reduce and broadcast checked; bus bandwidth {fmt_rate(report.busbw)} "
        f"({mb} MiB); " + _planner_traffic(recipe, overrides, report))
    rows = [
        ("collective", bandwidth),
        ("output_dir", str(folders["output_dir"])),
        ("bank_dir", str(folders["bank_dir"])),
        ("backbone", node.note or "-"),
        ("data", "tasks " + ", ".join(dict.fromkeys([*cfg.stage1.tasks, *cfg.source_tasks, cfg.target_task]))),
        ("bank", "stage 2 entries present" if str(cfg.stage) == "2" else f"not needed (stage={cfg.stage})"),
    ]
    print(render(report, rows))
    for c in report.failures:
        print(f"error: {c.line()}", file=sys.stderr)
    return 2 if report.failed_anywhere else 0


if __name__ == "__main__":
    sys.exit(main())
