"""The TPV bank: one safetensors file per task holding its task prompt vector
and the P_init it was trained from, with metadata.

Stage 2 mixes TPVs only if they share one P_init, one backbone and one shape,
so loading a set of entries checks exactly that and names the entry and the
field that disagree. Each tensor's sha256 is stored, so a flipped byte is
caught; files are written to a temporary name and renamed, so a crash never
leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dtvg_dist import __version__
from dtvg_dist.errors import BankError  # noqa: F401 - raised here; its public name
from dtvg_dist.store.run_files import entry_path

FORMAT = "dtvg-bank/1"
REQUIRED_META = (
    "format",
    "task",
    "backbone",
    "d",
    "r",
    "init_seed",
    "p_init_sha256",
    "tpv_sha256",
    "steps",
    "best_score",
    "version",
)
SHARED_FIELDS = ("p_init_sha256", "backbone", "d", "r")



def tensor_sha256(tensor: torch.Tensor) -> str:
    """Checksum of a tensor's float32 bytes (what the bank stores)."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BankEntry:
    task: str
    tpv: torch.Tensor
    p_init: torch.Tensor
    backbone: str
    init_seed: int
    steps: int
    best_score: float | None
    version: str
    path: Path

    @property
    def r(self) -> int:
        return self.tpv.shape[0]

    @property
    def d(self) -> int:
        return self.tpv.shape[1]

    @property
    def p_init_sha256(self) -> str:
        return tensor_sha256(self.p_init)

    @property
    def prompt(self) -> torch.Tensor:
        """The stage-1 soft prompt P* = P_init + T."""
        return self.p_init + self.tpv


def save_entry(
    bank_dir: str | os.PathLike,
    task: str,
    tpv: torch.Tensor,
    p_init: torch.Tensor,
    *,
    backbone: str,
    init_seed: int,
    steps: int,
    best_score: float | None,
) -> Path:
    """Write `<bank_dir>/<task>.safetensors` atomically and return its path."""
    if tpv.shape != p_init.shape or tpv.dim() != 2:
        raise BankError(
            f"bank entry {task!r}: TPV {tuple(tpv.shape)} and P_init {tuple(p_init.shape)} "
            "must both be [r, d]"
        )
    tpv32 = tpv.detach().to("cpu", torch.float32).contiguous()
    p_init32 = p_init.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "format": FORMAT,
        "task": task,
        "backbone": backbone,
        "d": str(tpv32.shape[1]),
        "r": str(tpv32.shape[0]),
        "init_seed": str(int(init_seed)),
        "p_init_sha256": tensor_sha256(p_init32),
        "tpv_sha256": tensor_sha256(tpv32),
        "steps": str(int(steps)),
        "best_score": json.dumps(best_score),
        "version": __version__,
    }
    path = entry_path(bank_dir, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"tpv": tpv32, "p_init": p_init32}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def entry_digest(path: str | os.PathLike) -> str:
    """sha256 of what an entry holds (task, backbone, TPV and P_init
    checksums), not of its file: the file's metadata order varies between
    writes of the same entry."""
    entry = load_entry(path)
    key = json.dumps([entry.task, entry.backbone, tensor_sha256(entry.tpv), entry.p_init_sha256])
    return hashlib.sha256(key.encode()).hexdigest()


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _verified(
    path: Path, what: str, missing_hint: str, fmt: str, required: Sequence[str], names: Sequence[str]
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A safetensors file's metadata and tensors, verified: it exists, reads
    whole, has the format and every `required` key, holds exactly `names`,
    and each tensor matches its stored sha256. `what` names the file in errors."""
    if not path.is_file():
        raise BankError(f"{what} {path} does not exist ({missing_hint})")
    try:
        meta = _read_metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BankError(f"{what} {path} is truncated or corrupt: {err}") from err
    missing = [key for key in required if key not in meta]
    if missing or meta.get("format") != fmt:
        raise BankError(f"{what} {path} lacks metadata {missing or ['format=' + fmt]}")
    if set(tensors) != set(names):
        raise BankError(f"{what} {path} holds tensors {sorted(tensors)}, expected {', '.join(names)}")
    for name in names:
        if tensor_sha256(tensors[name]) != meta[f"{name}_sha256"]:
            raise BankError(f"{what} {path}: {name} does not match its stored sha256 (corrupt)")
    return meta, tensors


def load_entry(path: str | os.PathLike) -> BankEntry:
    """Read and verify one entry; a truncated or corrupt file is refused whole."""
    path = Path(path)
    meta, tensors = _verified(path, "bank entry", "run stage=1 for that task first", FORMAT, REQUIRED_META,
                              ("tpv", "p_init"))
    tpv, p_init = tensors["tpv"], tensors["p_init"]
    if list(tpv.shape) != [int(meta["r"]), int(meta["d"])] or tpv.shape != p_init.shape:
        raise BankError(
            f"bank entry {path}: tensor shape {tuple(tpv.shape)} disagrees with metadata "
            f"r={meta['r']}, d={meta['d']}"
        )
    return BankEntry(
        task=meta["task"],
        tpv=tpv,
        p_init=p_init,
        backbone=meta["backbone"],
        init_seed=int(meta["init_seed"]),
        steps=int(meta["steps"]),
        best_score=json.loads(meta["best_score"]),
        version=meta["version"],
        path=path,
    )


def load_bank(
    bank_dir: str | os.PathLike,
    tasks: list[str],
    *,
    backbone: str | None = None,
    d: int | None = None,
    r: int | None = None,
) -> dict[str, BankEntry]:
    """Load the entries of `tasks` and check they can be mixed: one P_init
    (by checksum), one backbone, one d and r, and, where given, the running
    backbone's name and sizes."""
    entries = {task: load_entry(entry_path(bank_dir, task)) for task in tasks}
    for task, entry in entries.items():
        if entry.task != task:
            raise BankError(f"bank entry {entry.path} was written for task {entry.task!r}, not {task!r}")
    expected = {"backbone": backbone, "d": d, "r": r}
    for field, want in expected.items():
        if want is None:
            continue
        for entry in entries.values():
            have = getattr(entry, field)
            if have != want:
                raise BankError(
                    f"bank entry {entry.path}: {field} is {have!r} but this run uses {want!r}"
                )
    if entries:
        first = next(iter(entries.values()))
        for entry in entries.values():
            for field in SHARED_FIELDS:
                if getattr(entry, field) != getattr(first, field):
                    raise BankError(
                        f"bank entry {entry.path}: {field} is {getattr(entry, field)!r} but "
                        f"{first.path.name} has {getattr(first, field)!r}; all entries must share "
                        "one P_init, backbone, d and r"
                    )
    return entries


# ---------------------------------------------------------------- MPT shared prompt

MPT_FORMAT = "dtvg-mpt-shared/1"
MPT_TENSORS = ("shared", "u", "v")
MPT_META = (
    "format", "sources", "backbone", "d", "r", "p_init_sha256", "teacher_sha256", "settings",
    "steps", "version", *(f"{name}_sha256" for name in MPT_TENSORS),
)


@dataclass(frozen=True)
class MPTSharedEntry:
    """MPT source training's result: the shared prompt P* [r, d] and the
    per-source task vectors u [K, r], v [K, d] (row k: ``sources[k]``)."""

    shared: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    sources: list[str]
    backbone: str
    p_init_sha256: str
    teacher_sha256: dict[str, str]
    settings: dict
    steps: int
    version: str
    path: Path


def mpt_shared_key(sources: list[str], settings: dict) -> str:
    """The entry's name: the ordered sources and the source-training settings
    that change its result, hashed, so every target of a grid with the same
    sources and settings reuses one source-training run."""
    blob = json.dumps({"sources": list(sources), "settings": settings}, sort_keys=True)
    return "mpt-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def mpt_shared_path(bank_dir: str | os.PathLike, key: str) -> Path:
    """Beside the bank's task entries, in their own folder (the bank's
    ``*.safetensors`` are task entries only)."""
    return Path(bank_dir) / "mpt" / f"{key}.safetensors"


def save_mpt_shared(
    path: str | os.PathLike, shared: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *,
    sources: list[str], backbone: str, p_init_sha256: str, teacher_sha256: dict[str, str],
    settings: dict, steps: int,
) -> Path:
    """Write the entry atomically (temporary name, then rename)."""
    tensors = {k: t.detach().to("cpu", torch.float32).contiguous() for k, t in
               (("shared", shared), ("u", u), ("v", v))}
    r, d = tensors["shared"].shape
    k = len(sources)
    if tuple(tensors["u"].shape) != (k, r) or tuple(tensors["v"].shape) != (k, d):
        raise BankError(
            f"MPT shared entry: u {tuple(u.shape)} / v {tuple(v.shape)} do not fit {k} sources "
            f"and shared [{r}, {d}]"
        )
    meta = {
        "format": MPT_FORMAT, "sources": json.dumps(list(sources)), "backbone": backbone,
        "d": str(d), "r": str(r), "p_init_sha256": p_init_sha256,
        "teacher_sha256": json.dumps(teacher_sha256, sort_keys=True),
        "settings": json.dumps(settings, sort_keys=True), "steps": str(int(steps)),
        "version": __version__,
        **{f"{name}_sha256": tensor_sha256(t) for name, t in tensors.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_mpt_shared(path: str | os.PathLike) -> MPTSharedEntry:
    """Read and verify an MPT shared entry (metadata, shapes, sha256)."""
    path = Path(path)
    # stage=pre runs a method's pre-stage alone (config.STAGES); stage=2/all run it first too.
    hint = "run stage=pre method=mpt with the same source_tasks and mpt settings first"
    meta, tensors = _verified(path, "MPT shared prompt", hint, MPT_FORMAT, MPT_META, MPT_TENSORS)
    sources = json.loads(meta["sources"])
    shared = tensors["shared"]
    if list(shared.shape) != [int(meta["r"]), int(meta["d"])] or tensors["u"].shape[0] != len(sources):
        raise BankError(f"MPT shared prompt {path}: tensor shapes disagree with its metadata")
    return MPTSharedEntry(
        shared=shared, u=tensors["u"], v=tensors["v"], sources=sources, backbone=meta["backbone"],
        p_init_sha256=meta["p_init_sha256"], teacher_sha256=json.loads(meta["teacher_sha256"]),
        settings=json.loads(meta["settings"]), steps=int(meta["steps"]), version=meta["version"],
        path=path,
    )
