"""TPV bank: round trip, refusal of mismatched sets, refusal of corrupt files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dtvg_dist import __version__
from dtvg_dist.store.bank import (
    BankError,
    entry_path,
    load_bank,
    load_entry,
    save_entry,
    tensor_sha256,
)


def _write(bank, task, p_init, *, backbone="config:llama-abc", seed=7, tpv=None):
    tpv = torch.randn_like(p_init) if tpv is None else tpv
    save_entry(bank, task, tpv, p_init, backbone=backbone, init_seed=seed, steps=12, best_score=81.5)
    return tpv


@pytest.fixture
def p_init():
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(0))


def test_round_trip(tmp_path, p_init):
    tpv = _write(tmp_path, "rte", p_init)
    entry = load_entry(entry_path(tmp_path, "rte"))
    assert torch.equal(entry.tpv, tpv) and torch.equal(entry.p_init, p_init)
    assert (entry.task, entry.backbone, entry.init_seed, entry.steps) == (
        "rte",
        "config:llama-abc",
        7,
        12,
    )
    assert entry.best_score == 81.5 and entry.version == __version__
    assert (entry.r, entry.d) == (4, 8)
    assert entry.p_init_sha256 == tensor_sha256(p_init)
    torch.testing.assert_close(entry.prompt, p_init + tpv)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_bank_accepts_a_consistent_set(tmp_path, p_init):
    for task in ("mnli", "sst2", "rte"):
        _write(tmp_path, task, p_init)
    bank = load_bank(tmp_path, ["mnli", "sst2", "rte"], backbone="config:llama-abc", d=8, r=4)
    assert list(bank) == ["mnli", "sst2", "rte"]


def test_different_p_init_is_refused_naming_entry_and_field(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    _write(tmp_path, "sst2", p_init + 1)
    with pytest.raises(BankError, match=r"sst2\.safetensors: p_init_sha256"):
        load_bank(tmp_path, ["mnli", "sst2"])


def test_different_backbone_is_refused(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    _write(tmp_path, "sst2", p_init, backbone="t5-base")
    with pytest.raises(BankError, match=r"sst2\.safetensors: backbone"):
        load_bank(tmp_path, ["mnli", "sst2"])


def test_different_shape_is_refused(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    save_entry(
        tmp_path, "sst2", torch.zeros(4, 6), torch.zeros(4, 6),
        backbone="config:llama-abc", init_seed=7, steps=1, best_score=None,
    )
    with pytest.raises(BankError, match=r"sst2\.safetensors: p_init_sha256|sst2\.safetensors: d"):
        load_bank(tmp_path, ["mnli", "sst2"])
    with pytest.raises(BankError, match=r"sst2\.safetensors: d is 6 but this run uses 8"):
        load_bank(tmp_path, ["sst2"], d=8)


def test_running_backbone_mismatch_is_refused(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    with pytest.raises(BankError, match=r"mnli\.safetensors: backbone is 'config:llama-abc' but this run uses 't5-base'"):
        load_bank(tmp_path, ["mnli"], backbone="t5-base")
    with pytest.raises(BankError, match=r"r is 4 but this run uses 100"):
        load_bank(tmp_path, ["mnli"], r=100)


def test_missing_entry_names_the_file(tmp_path):
    with pytest.raises(BankError, match=r"qqp\.safetensors does not exist"):
        load_bank(tmp_path, ["qqp"])


def test_truncated_file_is_refused(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    path = entry_path(tmp_path, "mnli")
    data = path.read_bytes()
    path.write_bytes(data[:-16])
    with pytest.raises(BankError, match="truncated or corrupt"):
        load_entry(path)


def test_flipped_byte_is_refused(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    path = entry_path(tmp_path, "mnli")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(BankError, match="does not match its stored sha256"):
        load_entry(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "mnli.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(BankError, match="lacks metadata"):
        load_entry(path)


def test_entry_saved_under_another_task_name_is_refused(tmp_path, p_init):
    _write(tmp_path, "mnli", p_init)
    entry_path(tmp_path, "mnli").rename(entry_path(tmp_path, "qnli"))
    with pytest.raises(BankError, match="written for task 'mnli', not 'qnli'"):
        load_bank(tmp_path, ["qnli"])
