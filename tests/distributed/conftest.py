"""Shared runs for the multi-process tests (CPU, gloo).

The single-process references (stage 1 into a bank, then stage 2) for tiny
Llama and tiny T5 run once per session, side by side; every multi-process
test trains stage 2 against the same bank and compares with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from background import BACKGROUND
from dist_runs import check, single_cmd, start, wait


@dataclass
class Reference:
    """A finished single-process stage=all run: its bank and its stage-2 outputs."""

    recipe: str
    bank: Path
    out: Path


def _references(root: Path, at_once: bool) -> dict[str, Reference]:
    """The two stage=all runs (side by side when `at_once`)."""
    refs, procs = {}, []
    for recipe in ("tiny-llama", "tiny-t5"):
        ref = Reference(recipe, root / recipe / "bank", root / recipe / "run")
        log = root / f"{recipe}.log"
        cmd = single_cmd(
            f"recipe={recipe}", "stage=all", f"output_dir={ref.out}", f"bank_dir={ref.bank}"
        )
        procs.append((start(cmd, log), log))
        if not at_once:
            check(wait(*procs.pop()), log)
        refs[recipe] = ref
    for proc, log in procs:
        check(wait(proc, log, timeout=600), log)
    return refs


# in the background from the session's start (tests/background.py)
BACKGROUND.offer("references", lambda: _references(BACKGROUND.folder("references"), at_once=False))


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Reference]:
    return BACKGROUND.result("references", lambda: _references(tmp_path_factory.mktemp("references"), True))
