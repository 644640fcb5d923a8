"""Converting a finished JSONL spool into the formats that cannot be appended to: json, parquet, xlsx.

The writer spools those formats as JSON Lines (which a resumed run can append to) and converts at close,
in bounded memory: parquet batch by batch with a schema learnt while spooling, xlsx through openpyxl's
write-only mode.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from emotag.io.layout import _dumps, _Flattener, _Layout, _text_cell
from emotag.io.readers import _BATCH

_XLSX_MAX_ROWS = 1_048_575  # Excel's sheet limit (1,048,576) minus the header row
_XLSX_MAX_EXACT_INT = 10**15  # Excel keeps 15 significant digits; longer ints (ids) are written as text
_JSON_FIELD_META = {b"emotag.encoding": b"json"}


def _spooled(partial: str) -> Iterator[dict[str, Any]]:
    with open(partial, "rb") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _spool_to_json(partial: str, target: str) -> None:
    """A JSON array, streamed line by line: the spooled lines are already valid JSON values."""
    with open(partial, "rb") as src, open(target, "wb") as dst:
        dst.write(b"[")
        first = True
        for line in src:
            line = line.strip()
            if not line:
                continue
            dst.write(b"\n" if first else b",\n")
            dst.write(line)
            first = False
        dst.write(b"\n]\n")
        dst.flush()
        os.fsync(dst.fileno())


def _arrow_column(kinds: set[str]) -> tuple[Any, Callable[[Any], Any] | None, bool]:
    """(arrow type, value converter or None, holds JSON text) for a column holding values of `kinds`."""
    import pyarrow as pa

    def as_json(v: Any) -> Any:
        return None if v is None else _dumps(v)

    def as_text(v: Any) -> Any:
        return None if v is None else _text_cell(v)

    if kinds == {"bool"}:
        return pa.bool_(), None, False
    if kinds == {"int"}:
        return pa.int64(), None, False
    if kinds and kinds <= {"int", "float"}:
        return pa.float64(), None, False
    if kinds == {"json"}:
        return pa.string(), as_json, True
    if not kinds or kinds == {"str"}:
        return pa.string(), None, False
    return pa.string(), as_text, False  # mixed types: readable text beats a failed conversion


def _no_surrogates(v: Any) -> Any:
    """Lone surrogates written as \\udXXXX text, as the csv/jsonl writers do; other values unchanged."""
    if not isinstance(v, str):
        return v
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return v.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return v


class _ColumnFailed(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def _spool_to_parquet(partial: str, target: str, layout: _Layout) -> None:
    """Flat parquet with the csv columns, typed from what the writer saw, written batch by batch.

    A column whose values still do not fit its type (an int beyond int64, say) is redone as text.
    """
    kinds = layout.column_kinds()
    while True:
        try:
            _write_parquet(partial, target, layout.columns(), [_arrow_column(k) for k in kinds])
            return
        except _ColumnFailed as e:
            if kinds[e.index] == {"other"}:
                raise
            kinds[e.index] = {"other"}


def _write_parquet(
    partial: str, target: str, columns: list[str], specs: list[tuple[Any, Callable[[Any], Any] | None, bool]]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = _Flattener(columns)
    schema = pa.schema(
        [
            pa.field(c, t, metadata=_JSON_FIELD_META if is_json else None)
            for c, (t, _, is_json) in zip(columns, specs, strict=True)
        ]
    )

    def table(batch: list[dict[str, Any]]) -> Any:
        cols = list(zip(*(flat.values(r) for r in batch), strict=True)) if batch else [()] * len(specs)
        arrays = []
        for i, (col, (t, conv, _)) in enumerate(zip(cols, specs, strict=True)):
            values = col if conv is None else [conv(v) for v in col]
            try:
                try:
                    arrays.append(pa.array(values, type=t))
                except UnicodeEncodeError:  # lone surrogates (from JSON escapes) cannot be UTF-8
                    arrays.append(pa.array([_no_surrogates(v) for v in values], type=t))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as e:
                raise _ColumnFailed(i) from e
        return pa.Table.from_arrays(arrays, schema=schema)

    with pq.ParquetWriter(target, schema) as writer:
        batch: list[dict[str, Any]] = []
        for rec in _spooled(partial):
            batch.append(rec)
            if len(batch) >= _BATCH:
                writer.write_table(table(batch))
                batch = []
        if batch or not schema:
            writer.write_table(table(batch))
    _fsync_file(target)


def _spool_to_xlsx(partial: str, target: str, layout: _Layout) -> None:
    """An xlsx sheet written with openpyxl's write-only mode (rows go straight to disk)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    flat = _Flattener(layout.columns())
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("emotag")

    def cell(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v if abs(v) < _XLSX_MAX_EXACT_INT else str(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        text = ILLEGAL_CHARACTERS_RE.sub("", _no_surrogates(v if isinstance(v, str) else _dumps(v)))
        if not text:
            return None
        if text.startswith("="):  # text, not a formula
            c = WriteOnlyCell(ws, value=text)
            c.data_type = "s"
            return c
        return text

    ws.append([cell(c) for c in flat.columns])
    for rec in _spooled(partial):
        ws.append([cell(v) for v in flat.values(rec)])
    wb.save(target)
    _fsync_file(target)

