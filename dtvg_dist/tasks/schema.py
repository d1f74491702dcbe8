"""Column schemas: which hub columns a row needs and what a valid value is.

A bad row should fail where it is read, naming the file, the row and the
column, instead of surfacing later as a KeyError inside a formatter or a
silently wrong label. CSV cells arrive as strings, so checking also coerces
(ints, floats, JSON lists/dicts) to the types the hub would give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dtvg_dist.errors import DataError  # noqa: F401 - raised here; its public name

__all__ = ["KINDS", "Column", "DataError", "check_row"]

KINDS = ("text", "label", "choice", "score", "int", "list", "json")



@dataclass(frozen=True)
class Column:
    """One column of the hub schema.

    kind: "text" (non-empty string unless `allow_empty`), "label" (int in
    0..n_labels-1), "choice" (one of `choices`), "score" (float in
    [low, high]), "int", "list" (non-empty list of strings) or "json" (any
    value, JSON-decoded when it comes as a string).
    key: for a struct column whose field holds the list (SQuAD's `answers`
    is `{"text": [...], "answer_start": [...]}`), the field that is checked.
    """

    name: str
    kind: str = "text"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    allow_empty: bool = False
    key: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Column {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"Column {self.name!r}: kind 'choice' needs choices")
        if self.key is not None and self.kind != "list":
            raise ValueError(f"Column {self.name!r}: key is only for kind 'list'")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if hasattr(value, "tolist"):  # numpy arrays from parquet/pandas
        return value.tolist()
    return value


def _check_value(col: Column, value: Any, n_labels: int | None) -> tuple[Any, str | None]:
    """Return (coerced value, problem or None)."""
    if col.kind == "text":
        if not isinstance(value, str):
            return value, f"expected text, got {type(value).__name__}"
        if not value.strip() and not col.allow_empty:
            return value, "empty text"
        return value, None
    if col.kind == "label":
        label = _as_int(value)
        if label is None:
            return value, f"expected an integer label, got {value!r}"
        if n_labels is not None and not 0 <= label < n_labels:
            return value, f"label {label} out of range 0..{n_labels - 1}"
        return label, None
    if col.kind == "choice":
        if value in col.choices:
            return value, None
        for choice in col.choices:
            if str(choice) == str(value).strip():
                return choice, None
        return value, f"label {value!r} out of range: expected one of {list(col.choices)}"
    if col.kind == "score":
        number = _as_float(value)
        if number is None:
            return value, f"expected a number, got {value!r}"
        if (col.low is not None and number < col.low) or (col.high is not None and number > col.high):
            return value, f"label {number} out of range [{col.low}, {col.high}]"
        return number, None
    if col.kind == "int":
        number = _as_int(value)
        return (value, f"expected an integer, got {value!r}") if number is None else (number, None)
    value = _decode(value)
    if col.kind == "list":
        items = value
        if col.key is not None:
            if not isinstance(value, dict) or col.key not in value:
                return value, f"expected a struct with a {col.key!r} list, got {type(value).__name__}"
            items = _decode(value[col.key])
            value = {**value, col.key: items}
        if not isinstance(items, list) or not items:
            return value, "expected a non-empty list" + (f" in {col.key!r}" if col.key else "")
        if any(not isinstance(v, str) or not v.strip() for v in items):
            return value, "list holds an empty or non-text item"
        return value, None
    return value, None  # json: anything present


def check_row(
    row: dict[str, Any], columns: tuple[Column, ...], n_labels: int | None
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """Validate and coerce one row.

    Returns (row, None, None) when good, else (None, column, problem).
    """
    if not isinstance(row, dict):
        return None, "-", f"expected an object per row, got {type(row).__name__}"
    out = dict(row)
    for col in columns:
        if col.name not in out:
            return None, col.name, "missing column"
        if out[col.name] is None:
            return None, col.name, "missing value (null)"
        out[col.name], problem = _check_value(col, out[col.name], n_labels)
        if problem is not None:
            return None, col.name, problem
    return out, None, None
