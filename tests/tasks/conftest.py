"""Fixtures for the task/data tests: offline hub, a clean registry, the real tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtvg_dist.tasks import registry

# The workspace's shared/fixtures next to the checkout (or a worktree of it).
FIXTURES = next(
    (p / "shared" / "fixtures" for p in Path(__file__).resolve().parents[2:] if (p / "shared" / "fixtures").is_dir()),
    Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures",
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach the hub from these tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def clean_registry():
    """Undo any task a test registers."""
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def _load_tokenizer(name: str):
    folder = FIXTURES / name
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"real tokenizer fixture absent: {folder} (only in the dtvg workspace)")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="session")
def t5_tokenizer():
    return _load_tokenizer("t5-tokenizer")


@pytest.fixture(scope="session")
def llama_tokenizer():
    return _load_tokenizer("llama3-tokenizer")


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
