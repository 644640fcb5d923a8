"""Write profile rows to JSONL / CSV / TSV / Parquet / XLSX, chosen by file extension.

Self-contained on purpose: emotag.io is developed separately and profiles must not break when it changes.
Tabular formats get flat columns (``emotions.anger``, ``polarity.trend``, ...) because analysts open these
in spreadsheets and BI tools; values that are lists or open-ended maps (``tags``, ``products``) become JSON
text in CSV/XLSX, while Parquet keeps ``tags`` as a native list of structs.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
FORMATS.update({".parquet": "parquet", ".xlsx": "xlsx"})
# Keys whose values are open-ended maps: kept as one JSON column instead of one column per key.
_OPAQUE = frozenset({"products"})


class ExportError(ValueError):
    """Unsupported output path/format or a missing optional dependency."""


def format_for(path: str | Path) -> str:
    """The output format implied by `path` ('-' means JSONL on stdout)."""
    if str(path) == "-":
        return "jsonl"
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ExportError(
            f"{path}: unsupported output extension {suffix or '(none)'!r}; use one of {sorted(FORMATS)}"
        )
    return fmt


def flatten(row: Mapping[str, Any], *, keep_lists: bool = False, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted columns; lists and opaque maps -> JSON text (or kept when `keep_lists`)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in _OPAQUE:
            out.update(flatten(v, keep_lists=keep_lists, prefix=key + "."))
        elif isinstance(v, (list, tuple)) and keep_lists:
            out[key] = list(v)
        elif isinstance(v, (list, tuple, Mapping)):
            out[key] = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        else:
            out[key] = v
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    return list(cols)


def write_rows(rows: Iterable[Mapping[str, Any]], path: str | Path, fmt: str | None = None) -> int:
    """Write rows to `path` in the format of its extension; returns the number of rows written.

    Files are written to a temporary sibling and renamed into place, so an interrupted export never
    leaves a truncated file where a complete one was expected.
    """
    fmt = fmt or format_for(path)
    if str(path) == "-":
        n = 0
        for r in rows:
            sys.stdout.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
        sys.stdout.flush()
        return n
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        if fmt == "jsonl":
            n = 0
            with tmp.open("w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
                    n += 1
        elif fmt in ("csv", "tsv"):
            flat = [flatten(r) for r in rows]
            n = len(flat)
            # utf-8-sig so Excel on Chinese Windows shows 易怒 rather than mojibake.
            with tmp.open("w", encoding="utf-8-sig", newline="") as f:
                w = csv.DictWriter(f, fieldnames=_columns(flat), delimiter="\t" if fmt == "tsv" else ",")
                w.writeheader()
                w.writerows(flat)
        elif fmt == "parquet":
            n = _write_parquet([flatten(r, keep_lists=True) for r in rows], tmp)
        elif fmt == "xlsx":
            n = _write_xlsx([flatten(r) for r in rows], tmp)
        else:
            raise ExportError(f"{path}: unknown format {fmt!r}")
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def _write_parquet(flat: list[dict[str, Any]], path: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError(f"{path}: writing Parquet needs pyarrow (pip install 'emotag[formats]')") from None
    cols = _columns(flat)
    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in flat]) if flat else pa.table({})
    pq.write_table(table, str(path))
    return len(flat)


def _write_xlsx(flat: list[dict[str, Any]], path: Path) -> int:
    try:
        import openpyxl
    except ImportError:
        raise ExportError(f"{path}: writing .xlsx needs openpyxl (pip install 'emotag[formats]')") from None
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("profiles")
    cols = _columns(flat)
    ws.append(cols)
    for r in flat:
        ws.append([r.get(c) for c in cols])
    buf = io.BytesIO()
    wb.save(buf)
    path.write_bytes(buf.getvalue())
    return len(flat)
