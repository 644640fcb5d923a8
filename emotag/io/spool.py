"""Converting a finished JSONL spool into the formats that cannot be appended to: json, parquet, xlsx.

The writer spools those formats as JSON Lines (which a resumed run can append to) and converts at close,
in bounded memory: parquet batch by batch with a schema learnt while spooling, xlsx through openpyxl's
write-only mode. A converter returns a one-line warning when the format could not hold everything (xlsx
cells have a length limit and no control characters), which the writer prints: nothing is lost silently.
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
_XLSX_MAX_CELL = 32_767  # Excel's limit on the characters of one cell, counted in UTF-16 units
_XLSX_NAMED_ROWS = 5  # rows a warning names before it only counts
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


def _cut_for_excel(text: str) -> str | None:
    """`text` cut to the longest prefix an Excel cell holds, or None when it fits whole."""
    if len(text) <= _XLSX_MAX_CELL // 2:  # fits even if every character takes two UTF-16 units
        return None
    units = text.encode("utf-16-le")
    if len(units) <= 2 * _XLSX_MAX_CELL:
        return None
    return units[: 2 * _XLSX_MAX_CELL].decode("utf-16-le", errors="ignore")  # never half a surrogate pair


class _CellChanges:
    """Which data cells an xlsx could not hold as they were: "cut" at the length limit, or "altered" (with
    characters replaced). Counted per kind, with the first rows and the columns named, for one warning."""

    WHAT = {"cut": f"cut to Excel's {_XLSX_MAX_CELL:,}-character limit",
            "altered": "with characters an xlsx cannot store (control characters, unpaired surrogates) replaced"}

    def __init__(self) -> None:
        self.count: dict[str, int] = dict.fromkeys(self.WHAT, 0)
        self.named: dict[str, list[tuple[int, str]]] = {k: [] for k in self.WHAT}  # (1-based row, column)
        self.columns: dict[str, dict[str, None]] = {k: {} for k in self.WHAT}

    def note(self, kind: str, row: int, column: str) -> None:
        self.count[kind] += 1
        self.columns[kind][column] = None
        if len(self.named[kind]) < _XLSX_NAMED_ROWS:
            self.named[kind].append((row, column))

    def warning(self) -> str | None:
        parts = [f"{_cells(n)} {self.WHAT[k]} ({_where(self.named[k], n, self.columns[k])})"
                 for k, n in self.count.items() if n]
        if not parts:
            return None
        return "; ".join(parts) + "; write jsonl, csv or parquet to keep every text whole and unchanged"


def _cells(n: int) -> str:
    return f"{n:,} cell{'s' if n != 1 else ''}"


def _where(named: list[tuple[int, str]], count: int, columns: dict[str, None]) -> str:
    rows = list(dict.fromkeys(r for r, _ in named))
    more = ", ..." if count > len(named) else ""
    row_list = f"row{'s' if len(rows) > 1 or more else ''} {', '.join(map(str, rows))}{more}"
    return f"{row_list}; column{'s' if len(columns) > 1 else ''} {', '.join(columns)}"


def _spool_to_xlsx(partial: str, target: str, layout: _Layout) -> str | None:
    """An xlsx sheet written with openpyxl's write-only mode (rows go straight to disk).

    Returns a warning when a cell could not be stored as it was. Excel's cell limit would otherwise cut a
    text silently (openpyxl does), and openpyxl refuses control characters: each is replaced by U+FFFD
    instead of dropped, so the stored text keeps its length and `aspects` spans still index it. A carriage
    return is kept, not replaced: see `_keep_carriage_returns`.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    flat = _Flattener(layout.columns())
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("emotag")
    changes = _CellChanges()
    has_cr = False

    def cell(v: Any, row: int = 0, column: str = "") -> Any:
        nonlocal has_cr
        if v is None:
            return None
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v if abs(v) < _XLSX_MAX_EXACT_INT else str(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        given = v if isinstance(v, str) else _dumps(v)
        text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", _no_surrogates(given))
        if text != given:
            changes.note("altered", row, column)
        if "\r" in text:
            has_cr = True
        cut = _cut_for_excel(text)
        if cut is not None:
            changes.note("cut", row, column)
            text = cut
        if not text:
            return None
        if text.startswith("="):  # text, not a formula
            c = WriteOnlyCell(ws, value=text)
            c.data_type = "s"
            return c
        return text

    ws.append([cell(c) for c in flat.columns])
    for row, rec in enumerate(_spooled(partial), start=1):
        ws.append([cell(v, row, c) for v, c in zip(flat.values(rec), flat.columns, strict=True)])
    wb.save(target)
    if has_cr:
        _keep_carriage_returns(target)
    _fsync_file(target)
    return changes.warning()


def _keep_carriage_returns(path: str) -> None:
    """Rewrite the raw carriage returns in an xlsx's sheets as the character reference `&#13;`.

    openpyxl (without lxml) writes a text's "\r" into the sheet XML as it is, and every XML reader turns
    "\r\n" into "\n" and a lone "\r" into "\n": "包装破损了\r\n物流很快" came back one character shorter, so
    the `aspects` spans no longer indexed it. A character reference survives XML parsing, and openpyxl,
    Excel and LibreOffice read it back as "\r". (Excel's own `_x000D_` escape would not do: openpyxl
    neither writes nor reads it, so emotag's own reader would see seven characters.) The byte 0x0D stands
    for nothing but "\r" in UTF-8 and openpyxl's markup never holds one, so every such byte is a text's.
    The sheets are streamed into a new archive beside `path`, which then replaces it.
    """
    import shutil
    import zipfile

    tmp = f"{path}.cr.tmp"
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
            for info in src.infolist():
                out = zipfile.ZipInfo(info.filename, info.date_time)
                out.compress_type, out.external_attr = info.compress_type, info.external_attr
                sheet = info.filename.startswith("xl/worksheets/")
                # each "\r" grows to five bytes: a sheet that might pass 4 GiB needs a zip64 entry up front
                big = 5 * info.file_size >= zipfile.ZIP64_LIMIT
                with src.open(info) as r, dst.open(out, "w", force_zip64=big) as w:
                    if not sheet:
                        shutil.copyfileobj(r, w)
                        continue
                    while chunk := r.read(1 << 20):
                        w.write(chunk.replace(b"\r", b"&#13;"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

