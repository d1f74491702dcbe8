"""Pure tensor math of DTVG: no I/O, no distributed calls, nothing of ours."""

from dtvg_dist.core.grouping import (
    GROUPING_RULES,
    MAX_EXHAUSTIVE_SOURCES,
    check_rule,
    select_from_similarities,
    select_group,
    subset_matrix,
)
from dtvg_dist.core.merge import dtvg_prompt, merge_prompts
from dtvg_dist.core.similarity import mean_rows, rescale, similarity_matrix, task_similarity

__all__ = [
    "GROUPING_RULES",
    "MAX_EXHAUSTIVE_SOURCES",
    "check_rule",
    "dtvg_prompt",
    "mean_rows",
    "merge_prompts",
    "rescale",
    "select_from_similarities",
    "select_group",
    "similarity_matrix",
    "subset_matrix",
    "task_similarity",
]
