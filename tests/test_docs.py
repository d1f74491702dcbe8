"""The docs cannot drift from the code: every command in a ```bash runnable
fence of README.md or docs/*.md runs here, in a fresh folder per page, top to
bottom (a page may train a run and then predict from it; the commands that
only print run last, in-process), the pages side by side, and every
`python -m dtvg_dist.X` anywhere in the docs names a command that exists."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from background import BACKGROUND

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = "```bash runnable"
COMMAND = re.compile(r"python3? -m (dtvg_dist(?:\.\w+)*)")


def fences(text: str) -> list[tuple[str, list[str]]]:
    """(opening line, body lines) of every fenced block."""
    blocks, current, opener = [], None, ""
    for line in text.splitlines():
        if current is None and line.startswith("```"):
            current, opener = [], line.strip()
        elif current is not None and line.strip() == "```":
            blocks.append((opener, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def runnable_commands(page: Path) -> list[str]:
    """The shell commands of a page's runnable fences (continuations joined)."""
    commands: list[str] = []
    for opener, body in fences(page.read_text()):
        if opener != RUNNABLE:
            continue
        joined = "\n".join(body).replace("\\\n", " ")
        commands += [c.strip() for c in joined.splitlines() if c.strip() and not c.lstrip().startswith("#")]
    return commands


def test_readme_is_short_and_keeps_the_ci_blocks() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 250
    for marker in ("<!-- demo-command -->", "<!-- /demo-command -->", "<!-- test-command -->", "<!-- /test-command -->"):
        assert marker in text, marker


def test_every_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_in_the_docs_exist(page: Path) -> None:
    """A renamed or removed command fails here, in every fence, runnable or not."""
    for _, body in fences(page.read_text()):
        for module in COMMAND.findall("\n".join(body)):
            assert importlib.util.find_spec(module) is not None, f"{page.name}: python -m {module}"


RUNNABLE_PAGES = [p for p in PAGES if runnable_commands(p)]
PRINT_ONLY_FLAGS = {"--help", "-h", "--print-config", "--list", "--dry-run"}
PRINT_ONLY_COMMANDS = {"dtvg_dist.plan"}


def print_only(command: str) -> list[str] | None:
    """(module, argv) of a `python -m dtvg_dist.X` command that only prints, else None."""
    if any(op in command for op in (">", "|", ";", "&", "$")):
        return None
    words = shlex.split(command)
    if words[:2] not in (["python", "-m"], ["python3", "-m"]) or not words[2].startswith("dtvg_dist."):
        return None
    if words[2] in PRINT_ONLY_COMMANDS or PRINT_ONLY_FLAGS.intersection(words[3:]):
        return words[2:]
    return None


def run_in_process(module: str, argv: list[str]) -> int:
    try:
        return importlib.import_module(module).main(argv)
    except SystemExit as stop:  # argparse's --help
        return int(stop.code or 0)


def test_print_only_commands_are_told_apart() -> None:
    assert print_only("python -m dtvg_dist.train recipe=tiny-t5 --print-config") == [
        "dtvg_dist.train", "recipe=tiny-t5", "--print-config"]
    assert print_only("python3 -m dtvg_dist.plan recipe=x --gpus 8") == ["dtvg_dist.plan", "recipe=x", "--gpus", "8"]
    assert print_only("python -m dtvg_dist.train recipe=tiny-t5 output_dir=runs/tiny") is None
    assert print_only("python -m dtvg_dist.reproduce --list > out.txt") is None
    assert print_only("printf 'x' > rows.jsonl") is None


def test_the_runnable_pages_are_found() -> None:
    assert {p.name for p in RUNNABLE_PAGES} >= {"README.md", "outputs.md", "reproducing.md"}


def _python_wrappers(bin_dir: Path) -> None:
    """`python` and `python3` in the docs are this interpreter: a wrapper, not
    a symlink (a venv's interpreter started through a link outside the venv
    misses its pyvenv.cfg and so the venv's packages)."""
    bin_dir.mkdir()
    for name in ("python", "python3"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        wrapper.chmod(0o755)


def _run_page(page: Path, root: Path) -> tuple[Path, list[tuple[str, subprocess.CompletedProcess]]]:
    """The page's commands that do more than print, in order, in a fresh
    folder; stops at the first that fails. Returns (folder, [(command, result)])."""
    _python_wrappers(root / "bin")
    env = {
        **os.environ,
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    work = root / "work"
    work.mkdir()
    done = []
    for command in runnable_commands(page):
        if print_only(command) is not None:
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        done.append((command, proc))
        if proc.returncode != 0:
            break
    return work, done


# one piece of background work per page (tests/background.py): a page not
# started when the fixture needs it runs here, beside the others
for _page in RUNNABLE_PAGES:
    BACKGROUND.offer(f"page_runs:{_page.name}", lambda page=_page: _run_page(page, BACKGROUND.folder(page.stem)))


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list]]:
    """Every runnable page's run (`_run_page`); the pages are independent,
    so those still to run go side by side, one thread each (their commands
    are one-thread processes in their own folders)."""
    def one(page: Path) -> tuple[Path, list]:
        return BACKGROUND.result(f"page_runs:{page.name}",
                                 lambda: _run_page(page, tmp_path_factory.mktemp(page.stem)))

    with ThreadPoolExecutor(max_workers=len(RUNNABLE_PAGES)) as pool:
        futures = {page.name: pool.submit(one, page) for page in RUNNABLE_PAGES}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: p.name)
def test_runnable_commands_run(page: Path, page_runs, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    """The commands that run something, in page order (page_runs), then the
    ones that only print, in this process, in the same folder."""
    work, done = page_runs[page.name]
    commands = runnable_commands(page)
    for command in commands:
        assert COMMAND.search(command) or shlex.split(command)[0] in {"printf", "cat", "ls"}, command
    for command, proc in done:
        assert proc.returncode == 0, f"{page.name}: {command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert [c for c, _ in done] == [c for c in commands if print_only(c) is None]  # none left out
    monkeypatch.chdir(work)
    for command in commands:
        words = print_only(command)
        if words is None:
            continue
        code = run_in_process(words[0], words[1:])
        out, err = capsys.readouterr()
        assert code == 0, f"{page.name}: {command}\nexit {code}\n{out[-2000:]}\n{err[-4000:]}"
