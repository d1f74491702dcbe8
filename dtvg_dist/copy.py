"""Command line: python -m dtvg_dist.copy recipe|launch-config NAME DEST

Copies a packaged recipe or launch config out of the installed package to
edit it (as torchtune's ``tune cp`` does); ``--list`` lists both. A copied
recipe keeps its ``base:`` (a packaged name resolves from anywhere). A copied
DeepSpeed launch config gets its JSON copied beside it and its
``deepspeed_config_file`` rewritten to that copy's absolute path, because
accelerate reads that path relative to the working directory.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from dtvg_dist import cli
from dtvg_dist.errors import UsageError
from dtvg_dist.orchestration.config import (
    launch_config_path,
    list_launch_configs,
    list_recipes,
    recipe_path,
)
from dtvg_dist.utils import packaged_file

USAGE = """usage: python -m dtvg_dist.copy recipe NAME DEST [--force]
       python -m dtvg_dist.copy launch-config NAME DEST [--force]
       python -m dtvg_dist.copy --list

Copies a packaged recipe or launch config to DEST (a file, or a folder to
copy into) to edit it. Then: python -m dtvg_dist.train recipe=DEST.yaml, or
accelerate launch --config_file DEST.yaml -m dtvg_dist.train recipe=...
"""

DS_KEY = re.compile(r"^(\s*deepspeed_config_file:\s*)(\S+)\s*$", re.MULTILINE)


def _target(dest: str, name: str) -> Path:
    path = Path(dest).expanduser()
    if path.is_dir() or dest.endswith(("/", "\\")):
        return path / name
    return path


def _write(src: Path, dest: Path, text: str, force: bool) -> None:
    if dest.exists() and not force:
        raise UsageError(f"{dest} exists; give --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    print(f"copied {src} -> {dest.resolve()}")


def copy_recipe(name: str, dest: str, force: bool = False) -> Path:
    src = recipe_path(name)
    target = _target(dest, src.name)
    _write(src, target, src.read_text(), force)
    return target


def copy_launch_config(name: str, dest: str, force: bool = False) -> Path:
    src = launch_config_path(name)
    target = _target(dest, src.name)
    text = src.read_text()
    match = DS_KEY.search(text)
    if match:
        packaged = packaged_file(match.group(2))
        if packaged is not None:
            json_dest = target.parent / packaged.name
            if not json_dest.exists() or force:
                json_dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(packaged, json_dest)
                print(f"copied {packaged} -> {json_dest.resolve()}")
            text = DS_KEY.sub(lambda m: m.group(1) + str(json_dest.resolve()), text, count=1)
    _write(src, target, text, force)
    return target


@cli.command
def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "-h" in args or "--help" in args:
        print(USAGE)
        return 0
    if args == ["--list"]:
        print("recipes: " + ", ".join(list_recipes()))
        print("launch configs: " + ", ".join(list_launch_configs()))
        return 0
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    if len(args) != 3 or args[0] not in ("recipe", "launch-config"):
        raise UsageError("give recipe|launch-config NAME DEST (see --help)")
    kind, name, dest = args
    (copy_recipe if kind == "recipe" else copy_launch_config)(name, dest, force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
