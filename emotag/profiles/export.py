"""Profile rows out through emotag's one writer (`emotag.io.RecordWriter`), format by extension.

Profiles use the writer `emotag score` uses, so an extension means the same thing everywhere: `.jsonl`
(`.ndjson`, `-`) is JSON Lines, `.json` one JSON array, `.csv`/`.tsv`/`.parquet`/`.xlsx` flat tables,
all written through OUT.partial and renamed into place, never over an input file.

What profiles add is only the shape of their rows in the flat formats: analysts open these in
spreadsheets and BI tools, so nested summaries become dotted columns at every depth
(``emotions.anger``, ``polarity.trend``, ``channels.support.count``), while the open-ended `products`
map stays one JSON column (a column per product would change with the data). `tags` is a list and
`products` a map: JSON in a csv/xlsx cell, a column marked as JSON in Parquet (emotag.io reads both back as
the value, and leaves a Parquet text that merely looks like JSON alone).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emotag.io import FORMATS, InputError, RecordWriter, detect_format, same_file

# Keys whose values are open-ended maps: kept as one JSON column instead of one column per key.
_OPAQUE = frozenset({"products"})
# Formats whose rows are flat columns; the JSON formats keep the nested rows as they are.
_FLAT = frozenset({"csv", "tsv", "parquet", "xlsx"})
_NEEDS = {"parquet": "pyarrow", "xlsx": "openpyxl"}  # optional packages, checked before the fold


class ExportError(ValueError):
    """Unsupported output path/format, an output that is an input, or a missing optional dependency."""


def format_for(path: str | Path, inputs: Sequence[str] = ()) -> str:
    """The output format `path` names (as emotag.io reads extensions; '-' is JSONL on stdout).

    Checked before any record is folded: a wrong extension, or an output that is one of `inputs`, fails
    while nothing has been read.
    """
    out = str(path)
    try:
        fmt = detect_format(out)
    except InputError as e:
        raise ExportError(str(e)) from None
    if fmt not in FORMATS:
        raise ExportError(f"{out}: profiles cannot be written as {fmt}; use one of {', '.join(FORMATS)}")
    need = _NEEDS.get(fmt)
    if need is not None and importlib.util.find_spec(need) is None:
        raise ExportError(f"{out}: writing {fmt} needs {need} (pip install 'emotag[formats]')")
    for src in inputs:
        if src != "-" and same_file(src, out):
            raise ExportError(f"{out}: is the input file {src}; writing the profiles there would replace it: "
                              "choose another output file")
    return fmt


def flatten(row: Mapping[str, Any], *, keep_lists: bool = False, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted columns; opaque maps and lists -> JSON text, unless `keep_lists`: then they
    stay values, for the writer to encode (and mark as JSON in Parquet, which text would not be)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in _OPAQUE:
            out.update(flatten(v, keep_lists=keep_lists, prefix=key + "."))
        elif isinstance(v, (list, tuple)) and keep_lists:
            out[key] = list(v)
        elif isinstance(v, Mapping) and keep_lists:
            out[key] = dict(v)
        elif isinstance(v, (list, tuple, Mapping)):
            out[key] = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        else:
            out[key] = v
    return out


def write_rows(
    rows: Iterable[Mapping[str, Any]], path: str | Path, fmt: str | None = None, inputs: Sequence[str] = ()
) -> int:
    """Write rows to `path` in the format of its extension (or `fmt`); returns the number written.

    `inputs` are the files the rows came from: the writer refuses to write over any of them.
    """
    out = str(path)
    fmt = fmt or format_for(out, inputs)
    flat = fmt in _FLAT
    n = 0
    try:
        with RecordWriter(out, fmt=fmt, inputs=[p for p in inputs if p != "-"], whole_keys=_OPAQUE) as writer:
            for row in rows:
                # lists and opaque maps stay values: the writer encodes them (JSON text plus a marker in
                # Parquet), keeping each opaque map one column
                writer.write(flatten(row, keep_lists=True) if flat else row)
                n += 1
    except InputError as e:
        raise ExportError(str(e)) from None
    return n
