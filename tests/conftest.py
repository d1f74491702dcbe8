"""Shared fixtures: tiny offline T5 / Llama checkpoints and a toy tokenizer.

Nothing here touches the hub: models are built from configs with random
weights, saved with ``save_pretrained`` and reloaded from the local folder.
"""

from __future__ import annotations

import os

# Set before transformers / datasets are imported anywhere: fail fast offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Every cache this test run writes (synthetic backbones, tokenized splits) goes
# to one temporary folder, inherited by the subprocesses the tests start, so
# nothing lands in the checkout's runs/ and no run reuses another run's cache.
import atexit  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

_CACHE = tempfile.mkdtemp(prefix="dtvg-test-cache-")
os.environ["DTVG_CACHE"] = _CACHE
os.environ["DTVG_DATA_CACHE"] = os.path.join(_CACHE, "tokenized")
atexit.register(shutil.rmtree, _CACHE, True)

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import warm_python  # noqa: E402
from background import BACKGROUND, Background  # noqa: E402
from real_model import gguf_folder  # noqa: E402
from tokenizer_fixtures import LLAMA3_SKIP, T5_DIR, llama3_dir  # noqa: E402

from dtvg_dist.tasks import registry  # noqa: E402

TOY_WORDS: list[str] = (  # noqa: SIM905 - one readable block, not 42 lines
    "the a an is was not and or of to in on it this that good bad great terrible "
    "movie film story actor plot yes no true false entailment neutral contradiction "
    "positive negative question answer premise hypothesis sentence what who where why"
).split()

TINY_T5_CONFIG: dict[str, Any] = {
    "model_type": "t5",
    "vocab_size": 64,
    "d_model": 32,
    "d_ff": 64,
    "d_kv": 16,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 2,
    "decoder_start_token_id": 0,
}

TINY_LLAMA_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class TinyCheckpoints:
    """Local folders of the session's tiny models (tokenizer saved in each too)."""

    root: Path
    tokenizer: Path
    t5: Path
    llama: Path

    def path(self, family: str) -> Path:
        return {"seq2seq": self.t5, "causal": self.llama, "t5": self.t5, "llama": self.llama}[
            family
        ]


@pytest.fixture(scope="session")
def toy_words() -> list[str]:
    return list(TOY_WORDS)


@pytest.fixture(scope="session")
def tiny_t5_config() -> dict[str, Any]:
    return dict(TINY_T5_CONFIG)


@pytest.fixture(scope="session")
def tiny_llama_config() -> dict[str, Any]:
    return dict(TINY_LLAMA_CONFIG)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    """Build, once per session, a toy tokenizer and tiny T5 / Llama checkpoints on disk."""
    from dtvg_dist.model.backbone import BackboneSettings, load_backbone
    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    root = tmp_path_factory.mktemp("tiny_models")
    tok_dir = root / "toy-tokenizer"
    build_toy_tokenizer(TOY_WORDS, str(tok_dir))
    out: dict[str, Path] = {}
    for key, cfg in (("t5", TINY_T5_CONFIG), ("llama", TINY_LLAMA_CONFIG)):
        bb = load_backbone(
            BackboneSettings(config=dict(cfg), tokenizer=str(tok_dir), init_seed=0), device="cpu"
        )
        folder = root / f"tiny-{key}"
        bb.model.save_pretrained(str(folder))
        bb.tokenizer.save_pretrained(str(folder))
        out[key] = folder
    return TinyCheckpoints(root=root, tokenizer=tok_dir, t5=out["t5"], llama=out["llama"])


# Budget of the finished runs that the export, predict and tracking tests read:
# two sources (one shares the target's rule, one flips it), stage 1 barely
# trains (the bank only has to exist), stage 2 runs 4 steps with evaluations
# at steps 2 and 4, and TensorBoard records everything.
TINY_RUN_ARGS = (
    "source_tasks=[syn_same,syn_flip]",
    "stage1.max_steps=2",
    "optim.max_steps=4",
    "eval.every_steps=2",
    "logging.every_steps=2",
    "logging.trackers=[tensorboard]",
)


def _tiny_runs(root: Path, at_once: bool) -> dict[str, Path]:
    """recipe -> output_dir of a finished `stage=all` DTVG run of tiny-t5 and
    tiny-llama (one thread each; side by side when `at_once`)."""
    from cli_runs import REPO

    def finish(recipe: str, proc: subprocess.Popen) -> None:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{recipe}: exit {proc.returncode}\n{output[-6000:]}"

    outs, procs = {}, {}
    for recipe in ("tiny-t5", "tiny-llama"):
        out = outs[recipe] = root / f"run-{recipe}"
        cmd = [
            sys.executable, "-m", "dtvg_dist.train", f"recipe={recipe}", f"output_dir={out}",
            f"bank_dir={out / 'bank'}", "logging.progress_bar=false", *TINY_RUN_ARGS,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs[recipe] = warm_python.popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
        if not at_once:
            finish(recipe, procs.pop(recipe))
    for recipe, proc in procs.items():
        finish(recipe, proc)
    return outs


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """recipe -> output_dir of a finished `stage=all` DTVG run of tiny-t5 and tiny-llama,
    trained once per session (in the background from the start, tests/background.py)."""
    return BACKGROUND.result("tiny_runs", lambda: _tiny_runs(tmp_path_factory.mktemp("tiny-runs"), True))


def _smollm2_checkpoint(dest: Path) -> Path:
    """SmolLM2-135M dequantized into `dest`, in a one-thread subprocess."""
    code = ("import sys; from pathlib import Path; from real_model import gguf_folder, write_checkpoint; "
            "write_checkpoint(gguf_folder(), Path(sys.argv[1]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])}
    proc = subprocess.run([sys.executable, "-c", code, str(dest)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return dest


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M as a local float32 checkpoint folder (tests/real_model.py)."""
    from real_model import INSTALL

    if gguf_folder() is None:
        pytest.skip(f"SmolLM2-135M is not installed: {INSTALL}")
    return BACKGROUND.result("smollm2", lambda: _smollm2_checkpoint(tmp_path_factory.mktemp("smollm2")))


def _smollm2_run(checkpoint: Path, out: Path, threads: int) -> Path:
    """output_dir of a finished `stage=all` DTVG run on SmolLM2 (two sources,
    8 steps per stage, every step logged)."""
    from cli_runs import REPO
    from real_model import RECIPE_ARGS

    cmd = [sys.executable, "-m", "dtvg_dist.train", *RECIPE_ARGS, f"backbone.name_or_path={checkpoint}",
           f"output_dir={out}", f"bank_dir={out / 'bank'}", "stage=all", "method=dtvg",
           "stage1.max_steps=8", "optim.max_steps=8", "optim.warmup_steps=0",
           "eval.every_steps=8", f"distributed.threads={threads}", "logging.every_steps=1",
           "logging.progress_bar=false"]
    proc = warm_python.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-6000:]}"
    return out


@pytest.fixture(scope="session")
def smollm2_run(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 run (in the background from the start, one thread; else
    here, two threads: nothing else runs beside it)."""
    return BACKGROUND.result("smollm2_run", lambda: _smollm2_run(
        smollm2, tmp_path_factory.mktemp("run-smollm2"), threads=2))


# This file's session work for the background (tests/background.py), in the
# order tests are most likely to wait for it; test modules offer their own.
BACKGROUND.offer("tiny_runs", lambda: _tiny_runs(BACKGROUND.folder("tiny-runs"), at_once=False))
if gguf_folder() is not None:
    _SMOLLM2 = BACKGROUND.folder("smollm2")
    BACKGROUND.offer("smollm2", lambda: _smollm2_checkpoint(_SMOLLM2))
    BACKGROUND.offer("smollm2_run", lambda: _smollm2_run(BACKGROUND.done("smollm2"), BACKGROUND.folder("run-smollm2"),
                                                         threads=1), after=("smollm2",))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the offered work whose fixtures the selected tests use."""
    first_use: dict[str, int] = {}
    for position, item in enumerate(session.items):
        for name in getattr(item, "fixturenames", ()):
            first_use.setdefault(name, position)
    BACKGROUND.start_offers(first_use)


def pytest_sessionfinish(session: pytest.Session) -> None:
    BACKGROUND.stop()
    warm_python.close_all()


# ---- tiers: `-m "not slow"` is the inner loop ----------------------------------
# The rule (docs/development.md): a test that starts a subprocess or trains more
# than a few steps carries `slow`. Tests marked `distributed` launch processes,
# and tests using these fixtures (directly or through another fixture) start
# them: both are marked here. Any other unmarked test that starts a process
# fails the fast tier (a run that deselects `slow`), naming the command, and
# warns in a full run: the fast tier cannot grow slow unnoticed.
SUBPROCESS_FIXTURES = frozenset({
    "tiny_runs", "full_runs", "t5_bank", "method_runs",  # trainings in subprocesses
    "references",  # tests/distributed: launches
    "demo_run", "tables",  # tests/test_demo*.py: the demo command
    "fake",  # tests/grid/test_executors.py: the script the executors start
    "smollm2", "smollm2_run",  # a real 135M model: converted once, trained in a subprocess
    "page_runs",  # tests/test_docs.py: the runnable commands of the docs
    "matrix", "killed_and_resumed",  # tests/distributed/test_matrix.py
    "wheel_in_a_venv",  # tests/test_install.py: pip, a venv and the wheel's runs
    "serial_and_local", "overlapping",  # tests/grid/test_demo_grid.py: reproduce demo
    "teacher_bank", "source_runs",  # tests/orchestration/test_mpt_pipeline.py
})

_unmarked_popens: list[str] | None = None  # set while an unmarked test runs
_real_popen_init = subprocess.Popen.__init__


# One-time probes of libraries at their first import, whichever test that is
# (`platform.processor()` runs `uname -p` when DeepSpeed's CPU accelerator loads).
_LIBRARY_PROBES = ("uname ",)


class _ProcessWatch(warm_python.Watch):
    """Every process a test starts (subprocess.Popen or tests/warm_python.py):
    counted against an unmarked test; from the background thread, given the
    session's environment and killed if the session ends first."""

    def before(self, cmd, env):
        command = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
        background = Background.in_background()
        if _unmarked_popens is not None and not background and not command.startswith(_LIBRARY_PROBES):
            _unmarked_popens.append(command)
        return BACKGROUND.environment(env) if background else env

    def after(self, proc) -> None:
        if Background.in_background():
            BACKGROUND.started(proc)


warm_python.WATCH = _WATCH = _ProcessWatch()


def _watched_popen_init(self, args, *rest, **kwargs) -> None:
    env = _WATCH.before(args, kwargs.get("env"))
    if Background.in_background():
        kwargs["env"] = env
    _real_popen_init(self, args, *rest, **kwargs)
    _WATCH.after(self)


subprocess.Popen.__init__ = _watched_popen_init  # type: ignore[method-assign]


def _fills_both_cores(item: pytest.Item) -> bool:
    """A test whose own work runs several processes at once: the SLURM
    cluster's grids and the multi-process launches."""
    return item.get_closest_marker("distributed") is not None or "slurm_cluster" in getattr(
        item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is None and (
            item.get_closest_marker("distributed") is not None
            or SUBPROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.slow)
    # Last, in the order pytest-randomly gave them (a stable sort on top of its
    # shuffle, which it provides for): the tests that fill both cores
    # themselves. The background's work (tests/background.py) runs out before
    # the tests do; what runs after it then keeps both cores busy, where a
    # one-thread test would leave one idle.
    items.sort(key=_fills_both_cores)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _unmarked_popens
    _unmarked_popens = [] if item.get_closest_marker("slow") is None else None
    try:
        yield
    finally:
        _unmarked_popens = None


def _fast_tier(config: pytest.Config) -> bool:
    return "not slow" in " ".join((config.getoption("markexpr") or "").split())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and _unmarked_popens:
        message = (f"{item.nodeid} started a subprocess ({_unmarked_popens[0][:200]}) but is not "
                   "marked @pytest.mark.slow (docs/development.md: tests that start a process are slow)")
        if _fast_tier(item.config):
            report.outcome, report.longrepr = "failed", message
        else:
            item.warn(pytest.PytestWarning(message))


# ---- task/data fixtures: offline hub, a clean registry, the real tokenizers ----



@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach the hub from these tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def clean_registry():
    """Every test starts from the registry as it was and leaves it so: a
    pipeline's synthetic tasks, or a task a test registers, never leak into
    the next test, whatever the order."""
    saved = registry.snapshot()
    yield
    registry.restore(saved)


@pytest.fixture(autouse=True, scope="module")
def clean_registry_per_module():
    """The same for a module's fixtures (an in-process pipeline built once per
    module registers the synthetic tasks): restored when the module ends.
    Autouse, so it is set up before the module's own fixtures."""
    saved = registry.snapshot()
    yield
    registry.restore(saved)


def _load_tokenizer(folder: Path):
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(LLAMA3_SKIP)
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def t5_tokenizer():
    return _load_tokenizer(T5_DIR)


@pytest.fixture(scope="session")
def llama_tokenizer():
    return _load_tokenizer(llama3_dir())


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 26 tasks' fixture repositories, written once per session."""
    from hub_fixtures import write_hub

    return write_hub(tmp_path_factory.mktemp("hub"))


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, hub_root: Path, tmp_path: Path) -> list:
    """Replace huggingface_hub.snapshot_download by the fixture hub; returns its call log."""
    import huggingface_hub
    from hub_fixtures import fake_snapshot

    calls: list = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot(hub_root, tmp_path / "hf-cache", calls))
    return calls
