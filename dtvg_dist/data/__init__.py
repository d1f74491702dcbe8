"""The data layer: settings, the split protocol, k-shot sampling, encoding, the
tokenized Arrow cache, reading hub snapshots and local files, preflight and mirror.

`python -m dtvg_dist.dataset check|download ...` is the data command (dtvg_dist/dataset.py).
"""

from __future__ import annotations

from dtvg_dist.data.encoding import (
    Layout,
    added_prefix,
    collate_generate,
    collate_train,
    encode,
    example_layout,
    generation_padding_side,
    label_reference,
    padding_id,
)
from dtvg_dist.data.settings import (
    FAMILIES,
    HELD_OUT_VALIDATION,
    K_SHOT_SAMPLING,
    RELEASE_SEPARATOR,
    SMALL_DATASET,
    TEMPLATES,
    DataSettings,
    Rows,
)
from dtvg_dist.data.splits import (
    MixedSplit,
    Prepared,
    apply_split_rule,
    expansion_rule,
    k_shot_sample,
    load_splits,
    permutation,
    prepare_splits,
    row_transform,
    split_rows,
)
from dtvg_dist.tasks import DataError

__all__ = [
    "MixedSplit",
    "DataError",
    "SMALL_DATASET",
    "HELD_OUT_VALIDATION",
    "FAMILIES",
    "TEMPLATES",
    "RELEASE_SEPARATOR",
    "K_SHOT_SAMPLING",
    "Rows",
    "DataSettings",
    "permutation",
    "split_rows",
    "apply_split_rule",
    "k_shot_sample",
    "Prepared",
    "row_transform",
    "expansion_rule",
    "prepare_splits",
    "load_splits",
    "added_prefix",
    "generation_padding_side",
    "Layout",
    "example_layout",
    "encode",
    "padding_id",
    "collate_train",
    "collate_generate",
    "label_reference",
]
