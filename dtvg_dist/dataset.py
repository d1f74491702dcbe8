"""Command line of `python -m dtvg_dist.dataset`: the data preflight and the offline mirror.

    python -m dtvg_dist.dataset check [recipe=NAME | tasks=a,b|all] [key=value ...]
    python -m dtvg_dist.dataset download --to DIR [tasks=a,b|all | recipe=NAME] [key=value ...]

Same key=value style and error style as `python -m dtvg_dist.train`: with
recipe=NAME every recipe key can be overridden (data.local_dir=..., data.k_shot=16,
backbone.name_or_path=...); without one, `data.*` keys set the data settings.
Exit status: 0 all good, 1 a task failed (the table and the message name it),
2 a usage, recipe or backbone error.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtvg_dist import cli
from dtvg_dist.errors import UsageError  # noqa: F401 - raised here; its public name
from dtvg_dist.tasks.registry import TASKS, get_task
from dtvg_dist.tasks.schema import DataError

USAGE = """usage: python -m dtvg_dist.dataset check [recipe=NAME | tasks=a,b|all] [key=value ...]
       python -m dtvg_dist.dataset download --to DIR [tasks=a,b|all | recipe=NAME] [key=value ...]

check     load every split a run will use (the recipe's tasks, or tasks=...), validate
          every row and print one table: source, split sizes after the protocol, label
          distribution, token lengths and truncation for the recipe's tokenizer. With
          recipe=NAME it also resolves the backbone's config and tokenizer (no weights).
          tokenizer=NAME_OR_PATH   measure token lengths with this tokenizer (no recipe)
          family=seq2seq|causal    how the tokenizer's model encodes (default seq2seq)
          sample=N                 measure lengths on at most N rows per split
download  copy each task's hub Parquet files to DIR/<task>/ and write DIR/manifest.json
          (hub id, revision, commit, row counts, sha256); then train anywhere with
          data.local_dir=DIR.
Keys: with recipe=NAME any recipe key (data.local_dir=..., data.k_shot=16, ...);
otherwise data.* keys (data.local_dir, data.paths.TASK, data.revisions.TASK, ...).
"""

_OWN_KEYS = ("recipe", "tasks", "tokenizer", "family", "sample")



@dataclass
class Request:
    command: str
    to: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


def parse_args(args: list[str]) -> Request:
    if not args or args[0] not in ("check", "download"):
        raise UsageError("give a command: check or download (see --help)")
    req = Request(args[0])
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--to":
            req.to = next(rest, None)
            if req.to is None:
                raise UsageError("--to needs a folder (--to DIR)")
        elif arg.startswith("--to="):
            req.to = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}; see --help")
        elif "=" not in arg or arg.startswith("="):
            raise UsageError(f"argument {arg!r} is not of the form key=value")
        elif arg.split("=", 1)[0] in _OWN_KEYS:
            key, value = arg.split("=", 1)
            req.options[key] = value
        else:
            req.overrides.append(arg)
    if req.command == "download" and not req.to:
        raise UsageError("download needs --to DIR")
    if req.command == "check" and req.to:
        raise UsageError("--to is only for download")
    if "recipe" in req.options and "tasks" in req.options:
        raise UsageError("give recipe=NAME or tasks=a,b, not both")
    return req


@dataclass
class Plan:
    """What a command runs on: tasks, data settings and (check) a tokenizer."""

    tasks: list[str]
    settings: Any
    tokenizer: Any = None
    family: str = "seq2seq"
    seed: int | None = None
    notes: list[str] = field(default_factory=list)


def _task_list(spec: str) -> list[str]:
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if names == ["all"]:
        return [name for name in TASKS if get_task(name).hub_id]
    for name in names:
        get_task(name)  # unknown names: ValueError with the closest one
    if not names:
        raise UsageError("tasks= is empty; give task names (tasks=rte,boolq) or tasks=all")
    return list(dict.fromkeys(names))


def _data_settings(overrides: list[str]) -> Any:
    from omegaconf import OmegaConf

    from dtvg_dist.data import DataSettings
    from dtvg_dist.orchestration.config import RecipeError, parse_overrides

    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise UsageError(f"{bad[0]!r}: without recipe=NAME only data.* keys can be set")
    try:
        node = parse_overrides(overrides)
    except RecipeError as err:
        raise UsageError(str(err)) from None
    data = node.get("data")
    return DataSettings.coerce(OmegaConf.to_container(data, resolve=True) if data is not None else {})


def _recipe_plan(name: str, overrides: list[str], want_tokenizer: bool) -> Plan:
    from omegaconf import OmegaConf

    from dtvg_dist.data import DataSettings
    from dtvg_dist.orchestration.config import load_recipe, recipe_tasks
    from dtvg_dist.orchestration.pipeline import check_tasks, recipe_tokenizer

    cfg = load_recipe(name, overrides)
    check_tasks(cfg)  # registers the synthetic suite when the recipe uses it
    plan = Plan(
        tasks=recipe_tasks(cfg),
        settings=DataSettings.coerce(OmegaConf.to_container(cfg.data, resolve=True)),
        seed=int(cfg.seed),
    )
    if want_tokenizer:
        plan.tokenizer, plan.family, note = recipe_tokenizer(cfg)
        plan.notes.append(note)
    return plan


def _plan(req: Request) -> Plan:
    opts = req.options
    if "recipe" in opts:
        return _recipe_plan(opts["recipe"], req.overrides, want_tokenizer=req.command == "check")
    if "tasks" not in opts and req.command == "check":
        raise UsageError("give recipe=NAME or tasks=a,b (tasks=all for every paper task)")
    plan = Plan(tasks=_task_list(opts.get("tasks", "all")), settings=_data_settings(req.overrides))
    if req.command == "check" and "tokenizer" in opts:
        from transformers import AutoTokenizer

        plan.tokenizer = AutoTokenizer.from_pretrained(str(Path(opts["tokenizer"]).expanduser()))
        plan.family = opts.get("family", "seq2seq")
        if plan.family not in ("seq2seq", "causal"):
            raise UsageError(f"family={plan.family!r} is not one of seq2seq, causal")
        plan.notes.append(f"tokenizer: {opts['tokenizer']} ({plan.family})")
    return plan


def _sample(opts: dict[str, str]) -> int | None:
    if "sample" not in opts:
        return None
    try:
        value = int(opts["sample"])
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"sample={opts['sample']!r} must be a positive integer")
    return value


def run_check(plan: Plan, sample: int | None) -> int:
    from tqdm.auto import tqdm

    from dtvg_dist.data.module import TaskData
    from dtvg_dist.data.preflight import check_task, format_table

    data = {name: TaskData(name, plan.settings, plan.tokenizer, plan.family, plan.seed) for name in plan.tasks}
    tasks = {name: d.task for name, d in data.items()}
    reports = [
        check_task(data[name], sample)
        for name in tqdm(plan.tasks, desc="check", unit="task", disable=len(plan.tasks) < 2)
    ]
    for note in plan.notes:
        print(note)
    print(format_table(reports, tasks))
    failed = [r for r in reports if not r.ok]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def run_download(plan: Plan, dest: str) -> int:
    from tqdm.auto import tqdm

    from dtvg_dist.data.manifest import write_manifest
    from dtvg_dist.data.mirror import download_task

    Path(dest).expanduser().mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    failed: list[str] = []
    for name in tqdm(plan.tasks, desc="download", unit="task"):
        try:
            entries[name] = download_task(get_task(name), dest, plan.settings.revisions.get(name))
        except DataError as err:
            failed.append(str(err))
    if entries:
        path = write_manifest(dest, entries)
        rows = sum(f["rows"] for e in entries.values() for f in e["files"].values())
        print(f"wrote {len(entries)} task(s), {rows} rows, to {Path(dest).expanduser()} (manifest {path})")
        print(f"train offline with: data.local_dir={Path(dest).expanduser()}")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "-h" in args or "--help" in args:
        print(USAGE)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Beyond the package's user errors: the data settings' own ValueError and
    # an unreadable local file (OSError) are the user's to fix here too.
    code, got = cli.run_job(lambda: (req := parse_args(args), _plan(req), _sample(req.options)),
                        also=(ValueError, OSError))
    if got is None:
        return code
    req, plan, sample = got
    if req.command == "check":
        return run_check(plan, sample)
    return run_download(plan, req.to or "")


if __name__ == "__main__":
    raise SystemExit(main())
