"""Task registry: every dataset of the paper, plus any the user registers.

`TASKS` lists the registered names; `get_task(name)` returns a `Task` that
formats hub-schema rows and scores generated text (see docs/data.md, "Adding a task").
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task, pad_punctuation, remove_markup
from dtvg_dist.tasks.gem import GEM_TASKS
from dtvg_dist.tasks.glue import GLUE_TASKS
from dtvg_dist.tasks.mrqa import MRQA_TASKS
from dtvg_dist.tasks.other import OTHER_TASKS
from dtvg_dist.tasks.registry import TASKS, get_task, register_task, unregister_task
from dtvg_dist.tasks.schema import Column, DataError
from dtvg_dist.tasks.superglue import SUPERGLUE_TASKS

__all__ = [
    "TASKS",
    "SOURCE_TASKS",
    "Column",
    "DataError",
    "Task",
    "get_task",
    "register_task",
    "unregister_task",
    "pad_punctuation",
    "remove_markup",
]

for _task in GLUE_TASKS + SUPERGLUE_TASKS + MRQA_TASKS + OTHER_TASKS + GEM_TASKS:
    register_task(_task)

# The six high-resource source tasks of the paper, in its order (section 4.1).
SOURCE_TASKS: tuple[str, ...] = ("mnli", "qnli", "qqp", "sst2", "record", "squad")
