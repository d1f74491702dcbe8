"""The rows of one original split kept as Arrow, turned into dicts a batch at a time.

A Python dict per row costs far more than the row's Arrow bytes (MNLI: about
1 KB of dicts and strings against 300 bytes), so the large stage-1 sources
stay one Arrow table from the Parquet files to the tokenizer: the split
rules, caps and k-shot draws select rows by position (`take` copies only
indices), and rows become dicts only when a batch of them is formatted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dtvg_dist.tasks.schema import Column, check_row

if TYPE_CHECKING:  # pyarrow is imported where a table is first used
    import pyarrow as pa

__all__ = ["PY_WHITESPACE", "RowTable", "clean_batch", "table_rows"]

# The characters Python's str.strip() removes (str.isspace(); checked in tests).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Text with one character outside that set is not empty after strip().
_NOT_BLANK = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in PY_WHITESPACE) + "]"


def table_rows(table: pa.Table, batch_size: int = 4096) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, row) of an Arrow table, a record batch at a time."""
    n = 0
    for batch in table.to_batches(max_chunksize=batch_size):
        for row in batch.to_pylist():
            n += 1
            yield n, row


def _strings_not_blank(array: Any) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return False
    return array.null_count == 0 and bool(pc.all(pc.match_substring_regex(array, _NOT_BLANK)).as_py() is not False)


def _column_clean(array: Any, col: Column, n_labels: int | None) -> bool:
    """True only when `check_row` accepts this column in every row and leaves it unchanged."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind, dtype = col.kind, array.type
    if array.null_count:
        return False
    if kind == "text":
        if col.allow_empty:
            return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
        return _strings_not_blank(array)
    if kind in ("label", "int"):
        if not pa.types.is_integer(dtype):
            return False
        if kind == "int" or n_labels is None or not len(array):
            return True
        low, high = pc.min_max(array).values()
        return low.as_py() >= 0 and high.as_py() < n_labels
    if kind == "choice":
        try:
            choices = pa.array(list(col.choices))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return False
        return choices.type == dtype and bool(pc.all(pc.is_in(array, value_set=choices)).as_py() is not False)
    if kind == "score":
        if not pa.types.is_floating(dtype) or not len(array) or pc.any(pc.is_nan(array)).as_py():
            return False
        low, high = (v.as_py() for v in pc.min_max(array).values())
        return (col.low is None or low >= col.low) and (col.high is None or high <= col.high)
    if kind == "list":
        if col.key is not None:
            if not pa.types.is_struct(dtype) or dtype.get_field_index(col.key) < 0:
                return False
            array = pc.struct_field(array, col.key)
            if array.null_count:
                return False
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            return False
        lengths = pc.list_value_length(array)
        return (not len(array) or pc.min(lengths).as_py() >= 1) and _strings_not_blank(pc.list_flatten(array))
    # json: a string would be JSON-decoded; any other Arrow type is passed as is
    return not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def clean_batch(batch: Any, columns: tuple[Column, ...], n_labels: int | None) -> bool:
    """True only when `check_row` accepts every row of the Arrow batch and returns
    it unchanged, decided column by column without making the rows; False means
    "check row by row" (some row may be bad, or a value would be coerced)."""
    names = batch.schema.names
    return all(c.name in names and _column_clean(batch.column(c.name), c, n_labels) for c in columns)


class RowTable(Sequence[dict[str, Any]]):
    """Validated rows of an Arrow table, selected by `index` (positions in `table`).

    Items are the dicts `check_row` makes of the table's rows (the same dicts
    the per-row readers give), built on access; `take` selects without
    copying the table. `clean`: every row passed `clean_batch`, so they are
    made without `check_row`.
    """

    def __init__(
        self,
        table: pa.Table,
        index: np.ndarray,
        columns: tuple[Column, ...],
        n_labels: int | None,
        where: str = "",
        clean: bool = False,
    ) -> None:
        self.table = table
        self.clean = clean
        self.index = np.asarray(index, dtype=np.int64)
        self.columns = columns
        self.n_labels = n_labels
        self.where = where

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: Any) -> Any:  # int -> row, slice -> RowTable
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows")
        return self.rows([i % n])[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.batches():
            yield from batch

    def take(self, positions: Sequence[int] | np.ndarray) -> RowTable:
        """The rows at `positions` (of this selection), in that order."""
        picked = self.index[np.asarray(positions, dtype=np.int64)] if len(positions) else self.index[:0]
        return RowTable(self.table, picked, self.columns, self.n_labels, self.where, self.clean)

    def rows(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """The rows at `positions` as checked (coerced) dicts."""
        if not len(positions):
            return []
        import pyarrow as pa

        raw = self.table.take(pa.array(self.index[np.asarray(positions, dtype=np.int64)])).to_pylist()
        if self.clean:
            return raw
        out = []
        for row in raw:
            checked, column, problem = check_row(row, self.columns, self.n_labels)
            if checked is None:  # rows are checked when read; only a changed table gets here
                raise ValueError(f"{self.where}: a row failed its check after loading (column {column}: {problem})")
            out.append(checked)
        return out

    def batches(self, size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """The rows, in order, `size` at a time."""
        for start in range(0, len(self), size):
            yield self.rows(range(start, min(start + size, len(self))))

    def to_list(self) -> list[dict[str, Any]]:
        return [row for batch in self.batches(4096) for row in batch]
