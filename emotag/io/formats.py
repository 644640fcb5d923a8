"""The format table, and the entry points that consult it.

One row per format names the functions that read it (`rows`), count it, view it as records and, for the
formats the writer cannot append to, convert the writer's JSONL spool into it. `read_rows`, `count_rows`,
`read_records`, `read_text_records`, `read_conversation_records` and `RecordWriter` look formats up here:
adding a format is one entry, not an edit to six if/elif ladders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from emotag.io.detect import FORMATS, INPUT_FORMATS, _resolve_format, _sniff_stdin, _Source
from emotag.io.layout import _Layout
from emotag.io.readers import (
    _READY,
    InputRow,
    ReadStats,
    _count_delimited,
    _count_json,
    _count_parquet,
    _count_text,
    _count_xlsx,
    _rows_delimited,
    _rows_json,
    _rows_parquet,
    _rows_text,
    _rows_xlsx,
    _Spec,
)
from emotag.io.records import (
    UnreadableRecord,
    _lenient_records_json,
    _records_delimited,
    _records_json,
    _records_parquet,
    _records_xlsx,
)
from emotag.io.spool import _XLSX_MAX_ROWS, _spool_to_json, _spool_to_parquet, _spool_to_xlsx


@dataclass(frozen=True)
class Format:
    """How emotag reads, counts, views and writes one format."""

    name: str
    rows: Callable[[str, _Spec, int, ReadStats, _Source | None], Iterator[Any]]  # `_READY`, then InputRows
    count: Callable[[str], int | None]
    records: Callable[[str], Iterator[dict[str, Any]]] | None = None  # emotag's output; None: never written
    text_records: Callable[[str], Iterator[dict[str, Any]]] | None = None  # as people write it (default: records)
    lenient_records: Callable[[str], Iterator[Any]] | None = None  # broken records in place (default: text view)
    delimiter: str | None = None  # csv/tsv: the writer writes rows as they come
    bom: bool = False  # csv: a UTF-8 BOM, so that Excel shows Chinese correctly
    # JSONL spool -> OUT, returning a warning when OUT could not hold everything; None: the partial is OUT
    spool: Callable[[str, str, _Layout | None], str | None] | None = None
    layout: str | None = None  # spooled flat formats: "typed" (parquet's schema needs value types) or "plain"
    max_rows: int | None = None  # xlsx: Excel's sheet limit


def _delimited(name: str, delimiter: str, bom: bool) -> Format:
    return Format(
        name,
        rows=lambda path, spec, skip, stats, source: _rows_delimited(path, spec, skip, delimiter, stats),
        count=_count_delimited,
        records=lambda path: _records_delimited(path, delimiter),
        text_records=lambda path: _records_delimited(path, delimiter, typed=False),
        delimiter=delimiter,
        bom=bom,
    )


def _json(name: str, spool: Callable[[str, str, _Layout | None], str | None] | None = None) -> Format:
    return Format(
        name,
        rows=lambda path, spec, skip, stats, source: _rows_json(path, spec, skip, name, stats, source),
        count=lambda path: _count_json(path, name),
        records=lambda path: _records_json(path, name),
        lenient_records=lambda path: _lenient_records_json(path, name),
        spool=spool,
    )


FORMAT_TABLE: dict[str, Format] = {
    "csv": _delimited("csv", ",", bom=True),
    "tsv": _delimited("tsv", "\t", bom=False),
    "jsonl": _json("jsonl"),
    "json": _json("json", spool=lambda partial, target, layout: _spool_to_json(partial, target)),
    "parquet": Format(
        "parquet",
        rows=lambda path, spec, skip, stats, source: _rows_parquet(path, spec, skip),
        count=_count_parquet,
        records=_records_parquet,
        spool=_spool_to_parquet,
        layout="typed",
    ),
    "xlsx": Format(
        "xlsx",
        rows=lambda path, spec, skip, stats, source: _rows_xlsx(path, spec, skip),
        count=_count_xlsx,
        records=_records_xlsx,
        spool=_spool_to_xlsx,
        layout="plain",
        max_rows=_XLSX_MAX_ROWS,
    ),
    "txt": Format(
        "txt",
        rows=lambda path, spec, skip, stats, source: _rows_text(path, spec, skip, stats, source),
        count=_count_text,
    ),
}
if set(FORMAT_TABLE) != set(INPUT_FORMATS) or any(FORMAT_TABLE[f].records is None for f in FORMATS):
    raise AssertionError("emotag.io: the format table and FORMATS disagree")


def format_of(path: str, fmt: str | None = None, formats: tuple[str, ...] = FORMATS) -> Format:
    """The table row for `path` (by extension) or for `fmt`, which must be one of `formats`."""
    return FORMAT_TABLE[_resolve_format(path, fmt, formats)]


def read_rows(
    path: str,
    text_col: str = "text",
    id_col: str | None = None,
    keep: Sequence[str] = (),
    fmt: str | None = None,
    skip: int = 0,
    stats: ReadStats | None = None,
) -> Iterator[InputRow]:
    """Stream the data rows of an input file, in order, in bounded memory.

    The header (or first JSON record) is checked before this function returns, so a wrong column name fails
    before any output exists. Rows that cannot be scored come back with `error` set instead of raising,
    so a run over a million rows is not lost to one malformed line. `skip` drops the first rows (resume).
    `stats`, if given, is kept up to date with the physical lines read (text formats).
    """
    if skip < 0:
        raise ValueError("skip must be >= 0")
    source: _Source | None = None
    if path == "-" and fmt is None:
        name, source = _sniff_stdin()
    else:
        name = _resolve_format(path, fmt, INPUT_FORMATS)
    if isinstance(keep, str):
        keep = [keep]
    spec = _Spec(text_col, id_col, tuple(dict.fromkeys(keep)))
    gen = FORMAT_TABLE[name].rows(path, spec, skip, stats if stats is not None else ReadStats(), source)
    ready = next(gen)  # runs the opening checks now; raises InputError on a bad file
    assert ready is _READY
    return cast(Iterator[InputRow], gen)


def count_rows(path: str, fmt: str | None = None) -> int | None:
    """Number of data rows, cheaply, for a progress bar; None when it cannot be known (stdin).

    csv/tsv are counted by lines with quote tracking, exact for well-formed files; xlsx trusts the sheet's
    stored dimension (blank rows included); a `.json` array is parsed.
    """
    if path == "-":
        return None
    return format_of(path, fmt, INPUT_FORMATS).count(path)


def read_records(path: str, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Read output records back from any format RecordWriter writes (for `emotag profile` and tests).

    Flattened `a.b` columns of csv/tsv/xlsx/parquet become nested dicts again, and csv cells get their
    types back (see `_cell_value`). Unlike read_rows, a malformed record here raises InputError: scored
    files are machine-written, so damage means the file is unusable.
    """
    view = format_of(path, fmt).records
    assert view is not None  # every format in FORMATS has one (checked with the table)
    return view(path)


def read_text_records(path: str, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of a labelled file as people write it: csv/tsv cells stay text (blank -> None); JSON,
    parquet and xlsx values as stored. A malformed record raises InputError naming file and row."""
    f = format_of(path, fmt)
    view = f.text_records or f.records
    assert view is not None
    return view(path)


def read_conversation_records(path: str, fmt: str | None = None) -> Iterator[dict[str, Any] | UnreadableRecord]:
    """Read a conversations file (SPEC §3) as written by people, not by emotag.

    Unlike read_records: csv/tsv cells stay text (a turn reading 666 or True is words, not a number), and
    a malformed JSON line becomes an UnreadableRecord in its place instead of ending the run.
    """
    f = format_of(path, fmt)
    if f.lenient_records or f.text_records:
        return (f.lenient_records or f.text_records)(path)  # type: ignore[misc]
    assert f.records is not None
    return _turn_text_as_typed(f.records(path))


def _turn_text_as_typed(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A flat turn table from a typed format (xlsx, parquet): a number cell in `text` is the words the
    customer typed (Excel stores a turn reading 666 as a number), as csv cells and `emotag score` read it."""
    from emotag.io.readers import _number_text

    for rec in records:
        t = rec.get("text") if isinstance(rec, dict) else None
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            rec = {**rec, "text": _number_text(t)}
        yield rec
