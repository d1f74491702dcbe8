"""The task registry: one name -> Task map shared by the built-in and user tasks."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

from dtvg_dist.tasks.base import Task

__all__ = ["TASKS", "get_task", "register_task", "restore", "snapshot", "unregister_task"]

_REGISTRY: dict[str, Task] = {}


class _TaskNames(Sequence[str]):
    """Read-only live view of the registered names, in registration order."""

    def __getitem__(self, index):  # type: ignore[override]
        return list(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __repr__(self) -> str:
        return repr(list(_REGISTRY))


TASKS: Sequence[str] = _TaskNames()


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Add a task; an existing name is an error unless `overwrite`."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task wants a dtvg_dist.tasks.Task, got {type(task).__name__}")
    if task.name in _REGISTRY and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task (mainly for tests and notebooks that re-register)."""
    _REGISTRY.pop(name, None)


def snapshot() -> dict[str, Task]:
    """A copy of the registry, for `restore`: tests and notebooks that register
    tasks put it back as it was."""
    return dict(_REGISTRY)


def restore(saved: dict[str, Task]) -> None:
    """Make the registry exactly `saved` (a `snapshot()`), in its order."""
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def get_task(name: str) -> Task:
    """The registered task called `name` (case-insensitive)."""
    key = str(name).strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown task {name!r}{hint} Registered tasks: {', '.join(_REGISTRY)}")
