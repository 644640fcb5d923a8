"""One reader generator per input format: rows reduced to what the scorer needs (`InputRow`).

Every reader streams (csv/tsv/txt/jsonl line by line, parquet by batch, xlsx through openpyxl's read-only
mode); only a `.json` array is loaded whole, since the format cannot be streamed without another
dependency. Each generator first yields `_READY` once its header checks have passed, so a wrong column
name fails before any output exists; after that a row that cannot be scored comes back with `error` set
instead of raising. Each format also has its cheap row count here, for the progress bar.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import IO, Any, NamedTuple

from emotag.io.detect import (
    InputError,
    _json_type,
    _open_binary,
    _open_lines,
    _parses,
    _Source,
    _stdin_lines,
    warn_user,
)
from emotag.io.layout import _json_default

# Far above any real text, yet low enough that a runaway quote in a huge CSV fails with a message instead of
# swallowing the rest of the file into one field.
_FIELD_LIMIT = 64 * 1024 * 1024
_BATCH = 10_000  # rows per parquet batch, read and write
_HEADER_SCAN = 1000  # json/jsonl: leading objects whose keys stand in for a header
_MAX_LEADING_BAD = 1000  # JSON lines inspected for a first valid object before giving up on the file
_NAMED_WARNINGS = 5  # warnings of one kind printed one by one per file; the rest are counted in one more line


if csv.field_size_limit() < _FIELD_LIMIT:
    csv.field_size_limit(_FIELD_LIMIT)


@dataclass(slots=True)
class InputRow:
    """One data row of an input file, already reduced to what the scorer needs.

    Rows that cannot be scored are still produced (with `text=None` and `error` saying why) so that output
    stays one record per input row, in input order (SPEC §2).
    """

    index: int  # 0-based data row number in the input
    id: str | int  # value of the id column if present (else index)
    text: str | None  # None when the row has no usable text (error says why)
    extra: dict[str, Any]  # the requested extra (--keep) columns
    error: str | None = None  # per-row problem, e.g. "text is empty"


@dataclass(slots=True)
class ReadStats:
    """What a reader consumed, for the end-of-run summary: `lines` counts the physical lines of a text
    input (header and blank lines included) and stays None for parquet/xlsx. A summary that says "1,000
    rows from 1,001 lines" makes a reader that merged rows visible instead of silent.

    `warnings` holds the one-line warnings the reader printed to stderr (as the writer prints its own):
    an input read the standard way that may still not be what its author meant, so the user hears of it
    while the run goes on."""

    lines: int | None = None
    warnings: list[str] = field(default_factory=list)


def _warn(stats: ReadStats, path: str, problem: str, row: int | None = None) -> None:
    """Print one warning line on stderr, in the writer's form (`emotag: warning: FILE, row N: ...`), and
    keep it in `stats.warnings` for callers that are not a terminal."""
    warn_user(stats.warnings, path, problem, row)


class _Spec(NamedTuple):
    text_col: str
    id_col: str | None
    keep: tuple[str, ...]


class _Missing:
    """Marks a column absent from a row (as opposed to present and null)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
_READY: Any = object()  # first item of every row generator: the header checks have passed


def _number_text(v: int | float) -> str:
    """Spreadsheet number cell as the text the user typed (Excel turns a review '666' into a number)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _row_id(value: Any, index: int) -> str | int:
    """Normalise an id cell to str or int (SPEC §2); an empty or absent id falls back to the row index."""
    if value is None or value is _MISSING or (isinstance(value, str) and value == ""):
        return index
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    converted = _json_default(value)
    return (
        converted if isinstance(converted, (str, int)) and not isinstance(converted, bool) else str(converted)
    )


def _make_row(
    index: int,
    text: Any,
    id_value: Any,
    extra: dict[str, Any],
    error: str | None = None,
    *,
    numbers_are_text: bool = False,
    null_is_empty: bool = False,
) -> InputRow:
    """Build the row and decide whether its text is usable."""
    rid = _row_id(id_value, index)
    if error is None:
        if isinstance(text, str):
            if text.strip():
                return InputRow(index, rid, text, extra)
            error = "text is empty"
        elif text is _MISSING:
            error = "text is missing"
        elif text is None:
            error = "text is empty" if null_is_empty else "text is null"
        elif numbers_are_text and isinstance(text, (int, float)) and not isinstance(text, bool):
            return InputRow(index, rid, _number_text(text), extra)
        else:
            error = f"text is not a string (got {_json_type(text)})"
    return InputRow(index, rid, None, extra, error)


def _names_hint(names: Iterable[str], what: str = "columns") -> str:
    shown = [n for n in names if n != ""]
    more = ", ..." if len(shown) > 12 else ""
    return f"{what}: {', '.join(shown[:12])}{more}" if shown else f"no {what}"


def _column_index(path: str, names: list[str], col: str) -> int:
    """Index of a required header column; missing or ambiguous columns are user errors."""
    hits = [i for i, n in enumerate(names) if n == col]
    if not hits:
        raise InputError(path, f"column '{col}' is missing ({_names_hint(names)})")
    if len(hits) > 1:
        raise InputError(path, f"column '{col}' appears {len(hits)} times in the header")
    return hits[0]


def _header_indices(
    path: str, names: list[str], spec: _Spec
) -> tuple[int, int | None, list[tuple[str, int]]]:
    """(text index, id index or None, [(keep name, index)]) for a tabular header."""
    text_i = _column_index(path, names, spec.text_col)
    if spec.id_col is not None:
        id_i: int | None = _column_index(path, names, spec.id_col)
    else:
        id_i = _column_index(path, names, "id") if "id" in names else None
    keep = [(k, _column_index(path, names, k)) for k in spec.keep]
    return text_i, id_i, keep


# Stands in for a carriage return inside a line while the csv module parses it. A noncharacter: Unicode
# reserves it for a program's own use, so real text does not hold it.
_CR_STAND_IN = "\ufdd0"


class _LineTap:
    """The physical lines a csv reader consumed for its record (to undo a runaway quote), and how many
    lines were read in all (into `stats.lines`). The reader calls `start` before each record.

    A lone \\r inside a line makes the csv module refuse the whole file ("new-line character seen in
    unquoted field"). It is one of two things, and the tap tells them apart by the header's `width`
    (set by the reader once the header is read; 0 while the header itself is read, when the first part's
    field count stands in for it):

    - a row separator (old-Mac line ends mixed with others: `1,好评\\r2,差评\\r3,一般`): when each
      \\r-separated part parses, strictly, as exactly `width` fields, the line is split at the \\r into
      that many lines (each counted in `stats.lines`), so no row hides inside another's text. In a file of
      one column every part is a row, as it would be after any other line break: keeping them as one text
      would hide rows, splitting keeps every text. Empty parts are blank lines, which csv skips.
    - a line break inside a text (`2,好\\r开心`: parts of 2 and 1 fields; `3,"引\\r号"`: a quote left
      open): the tap hands the line on with each \\r as `_CR_STAND_IN`, and `restore` puts them back
      into the parsed fields, so the text keeps its \\r, quoted or not.

    A line that continues a record (the csv reader asks for it only while inside a quoted cell) is never
    split: its \\r is inside the quotes. `swapped` says, per line of the record, whether a stand-in went
    in, so `restore` touches only records that had one and a U+FDD0 of the user's own elsewhere is kept.
    The corner left: a record that holds both a lone \\r and a U+FDD0 gets the latter back as \\r too.
    """

    def __init__(self, lines: Iterator[str], stats: ReadStats | None = None, delimiter: str = ",") -> None:
        self._lines = lines
        self._parts: deque[str] = deque()  # the later parts of a line split at its \r, not yet handed on
        self.delimiter = delimiter
        self.width = 0  # the header's field count, once the reader knows it
        self.taken: list[str] = []
        self.swapped: list[bool] = []  # per line in `taken`: whether its \r became `_CR_STAND_IN`
        self.stats = stats if stats is not None else ReadStats()
        self.stats.lines = 0

    def __iter__(self) -> _LineTap:
        return self

    def start(self) -> None:
        """Forget the last record's lines: the next line read begins a record."""
        self.taken.clear()
        self.swapped.clear()

    def __next__(self) -> str:
        line = self._parts.popleft() if self._parts else next(self._lines)
        swapped = False
        if "\r" in line:
            body = line.rstrip("\r\n")
            if "\r" in body:
                parts = None if self.taken else self._rows_in(body)
                if parts is None:
                    line = body.replace("\r", _CR_STAND_IN) + line[len(body):]
                    swapped = True
                else:
                    self._parts.extend(p + "\r" for p in parts[1:-1])
                    self._parts.append(parts[-1] + line[len(body):])
                    line = parts[0] + "\r"
        self.taken.append(line)
        self.swapped.append(swapped)
        self.stats.lines += 1  # type: ignore[operator]  # set to 0 above
        return line

    def _rows_in(self, body: str) -> list[str] | None:
        """`body`'s \\r-separated parts when each reads as a whole row by itself (see the class), else None."""
        parts = body.split("\r")
        counts = []
        for part in parts:
            if not part:
                continue  # a blank line
            try:
                fields = next(csv.reader([part], delimiter=self.delimiter, strict=True), [])
            except csv.Error:  # a quote left open: the \r is inside a quoted cell
                return None
            counts.append(len(fields))
        width = self.width or (counts[0] if counts else 0)
        return parts if width == 1 or set(counts) == {width} else None

    def restore(self, record: list[str], swapped: bool | None = None) -> list[str]:
        """`record` with the carriage returns the tap stood in for put back: those of the record just read,
        or, with `swapped`, of the one line a runaway record's row was split from."""
        if not (any(self.swapped) if swapped is None else swapped):
            return record
        return [f.replace(_CR_STAND_IN, "\r") if _CR_STAND_IN in f else f for f in record]


_QUOTED_FIELD = re.compile(r'"((?:[^"]|"")*)"')


def _split_tsv_line(line: str) -> list[str]:
    """One physical TSV line split on tabs; a field wholly in quotes loses them (and its "" become ")."""
    fields = line.rstrip("\r\n").split("\t")
    out = []
    for f in fields:
        m = _QUOTED_FIELD.fullmatch(f)
        out.append(m.group(1).replace('""', '"') if m else f)
    return out


def _split_csv_line(line: str, width: int) -> list[str]:
    """One physical CSV line of a runaway record as its own row: read with quoting unless that does not
    give the header's `width` fields (the line holding the stray quote), then with the quote as a letter."""
    quoted = next(csv.reader([line.rstrip("\r\n")]), [])
    if len(quoted) == width:
        return quoted
    literal = next(csv.reader([line.rstrip("\r\n")], quoting=csv.QUOTE_NONE), [])
    return literal if len(literal) == width else quoted


def _runaway_quote(record: list[str], lines: list[str], delimiter: str, width: int) -> bool:
    """A record whose quoted field swallowed later rows: a delimiter and a line break inside one field.

    Chinese text often holds a stray " ("好评 at the start of a cell); csv quoting then reads on through
    the following rows until the next quote (or the end of the file), silently merging them into one text.
    A real multi-line TSV cell with a tab in it is rarer by far than that. A real multi-line CSV cell may
    hold a comma (Excel writes such cells), so a CSV record needs two more signs: one of its later lines
    reads, on its own, as a whole row (the header's number of fields), and its lines break csv's rules,
    the quote never closed or closed mid-cell (`"好评,b ... 差"评`), which a strict parse refuses. The
    first sign alone proves nothing in a file of one or two columns, where almost any line reads as a
    whole row; the second keeps every cell that Python's csv module and Excel read whole in one row. Such
    a record is split back into its lines, one row each.
    """
    if len(lines) < 2 or not any(delimiter in f and ("\n" in f or "\r" in f) for f in record):
        return False
    if delimiter == "\t":
        return True
    if not any(len(next(csv.reader([line.rstrip("\r\n")]), [])) == width for line in lines[1:] if line.strip()):
        return False
    try:
        for _ in csv.reader(lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error:  # "unexpected end of data" or "',' expected after '\"'"
        return True
    return False


def _shape(value: str) -> str:
    """What kind of value a cell holds, for comparing cells: digits, Latin letters, other letters, spaces
    and each other character, runs collapsed ("1" and "2031" are alike, "A-12" and "B-7", not "1" and "第二行")."""
    out: list[str] = []
    for ch in value.strip():
        c = ("9" if ch.isdigit() else "a" if ch.isascii() and ch.isalpha() else "字" if ch.isalpha()
             else " " if ch.isspace() else ch)
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def _rows_in_cell(record: list[str], lines: list[str], delimiter: str, width: int, first: int) -> str | None:
    """A warning when a quoted multi-line cell may hold whole rows (a stray quote that closes cleanly at
    the end of a later cell, `1,"好评\\n2,还行\\n3,不错"`), or None.

    Such a record is valid csv, read as one cell by Python's csv, Excel and pandas, and a real multi-line
    review reads the same way, so it is kept as one cell, but said aloud. The rule, to warn for merged
    rows and not for an ordinary multi-line review: a later line of the record reads, on its own, as
    exactly the header's number of fields (two or more), and each of its cells outside the multi-line
    column (at least one not empty) has the shape (`_shape`) of the record's own cell in that column: an
    id `2` beside the record's `1`, a shop `店B` beside `店A`. A review line `第二行,还不错"` fails the
    id's shape. Left out: a record with several multi-line cells, and lines whose other cells happen to
    look like the record's (two columns of Chinese text can): the warning says how to tell.
    """
    multi = [i for i, f in enumerate(record) if "\n" in f or "\r" in f]
    if width < 2 or len(record) != width or len(multi) != 1:
        return None
    others = [j for j in range(width) if j != multi[0]]
    own = {j: _shape(record[j]) for j in others}
    hits = []
    for k, line in enumerate(lines[1:], start=1):
        fields = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter), [])
        if (len(fields) == width and any(fields[j].strip() for j in others)
                and all(_shape(fields[j]) == own[j] for j in others)):
            hits.append(first + k)
    if not hits:
        return None
    last = first + len(lines) - 1
    return (f"a quoted cell spans lines {first}-{last}, and {_line_list(hits)} also read as rows by "
            f"themselves; kept as one cell, as csv reads it (if its opening quote is a stray, fix the file)")


def _line_list(numbers: list[int]) -> str:
    """'line 3', 'lines 3-4' or 'lines 3, 5-6' for ascending line numbers."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"line{'s' if len(numbers) > 1 else ''} {text}"


def _rows_delimited(path: str, spec: _Spec, skip: int, delimiter: str, stats: ReadStats) -> Iterator[Any]:
    fb, lines, encoding, problems = _open_lines(path)
    kind = "CSV" if delimiter == "," else "TSV"
    tap = _LineTap(lines, stats, delimiter)
    width = 0  # fields in the header, once read
    pending: deque[list[str]] = deque()  # records recovered from a runaway quote, not yet returned
    merged: list[int] = []  # rows whose quoted cell spans lines that read as rows by themselves
    with fb:
        reader = csv.reader(tap, delimiter=delimiter)
        index = 0

        def next_record(row: int | None) -> list[str] | None:
            if pending:
                return pending.popleft()
            tap.start()
            try:
                rec = next(reader, None)
            except csv.Error as e:
                raise InputError(path, f"malformed {kind}: {e}", row) from None
            except UnicodeDecodeError as e:
                raise InputError(path, f"not valid {encoding} text ({e.reason})", row) from None
            if rec is None or len(tap.taken) < 2:
                return rec if rec is None else tap.restore(rec)
            if (width or delimiter == "\t") and _runaway_quote(rec, tap.taken, delimiter, width):
                split = _split_tsv_line if delimiter == "\t" else lambda line: _split_csv_line(line, width)
                pending.extend(tap.restore(split(line), swapped)
                               for line, swapped in zip(tap.taken, tap.swapped, strict=True)
                               if line.strip("\r\n"))
                return pending.popleft() if pending else tap.restore(rec)
            if row is not None and row > skip:
                first = tap.stats.lines - len(tap.taken) + 1  # type: ignore[operator]  # counted by the tap
                hidden = _rows_in_cell(rec, tap.taken, delimiter, width, first)
                if hidden is not None:
                    merged.append(row)
                    if len(merged) <= _NAMED_WARNINGS:
                        _warn(stats, path, hidden, row)
            return tap.restore(rec)

        header: list[str] | None = None
        while header is None:
            rec = next_record(None)
            if rec is None:
                raise InputError(path, "file is empty (no header row)")
            if rec:
                header = rec
        names = [h.strip() for h in header]
        if names:
            names[0] = names[0].lstrip("\ufeff")
        text_i, id_i, keep_i = _header_indices(path, names, spec)
        n = width = tap.width = len(names)
        problems.clear()
        yield _READY

        while True:
            rec = next_record(index + 1)
            if rec is None:
                if len(merged) > _NAMED_WARNINGS:
                    more = merged[_NAMED_WARNINGS:]
                    rows = ", ".join(map(str, more[:_NAMED_WARNINGS])) + (", ..." if more[_NAMED_WARNINGS:] else "")
                    _warn(stats, path, f"{len(more)} more quoted cells span lines that also read as rows by "
                                       f"themselves (rows {rows}); each kept as one cell, as csv reads it")
                return
            if not rec:  # blank line
                problems.clear()
                continue
            if index < skip:
                index += 1
                problems.clear()
                continue
            length = len(rec)
            error = None
            if length > n and any(f.strip() for f in rec[n:]):
                sep = "comma" if delimiter == "," else "tab"
                error = f"row has {length} fields but the header has {n} (an unquoted {sep} in the text?)"
            text: Any = rec[text_i] if text_i < length else _MISSING
            if problems:
                problems.clear()
                if error is None and isinstance(text, str) and "\ufffd" in text:
                    error = f"text has bytes that are not valid {encoding}"
            id_value = rec[id_i] if id_i is not None and id_i < length else None
            extra = {k: (rec[j] if j < length else None) for k, j in keep_i}
            yield _make_row(index, text, id_value, extra, error)
            index += 1


def _rows_text(path: str, spec: _Spec, skip: int, stats: ReadStats, source: _Source | None) -> Iterator[Any]:
    """One text per line; the row id is the 0-based line number. A blank line is a row too (with "text is
    empty"), so line N of the input is row N of the output and results can be pasted beside the text."""
    name = "standard input" if path == "-" else "a .txt file"
    if spec.text_col != "text" or spec.id_col is not None or spec.keep:
        raise InputError(path, f"{name} read as one text per line has no columns: --text-col, --id-col and "
                               "--keep do not apply (give a csv or JSON Lines file for those)")
    closer: IO[bytes] | None = None
    if source is None:
        closer, lines, encoding, problems = _open_lines(path)
    else:
        lines, encoding, problems = source
    try:
        flagged = _with_problems(_counted(lines, stats), problems)
        head: list[tuple[str, bool]] = []
        for item in flagged:  # blank lines are rows, but a file of nothing else has no text to score
            head.append(item)
            if item[0].strip():
                break
        else:
            raise _empty(path, "no text, only blank lines" if head else "")
        yield _READY
        for index, (line, bad) in enumerate(chain(head, flagged)):
            if index < skip:
                continue
            text = line.rstrip("\r\n")
            error = f"text has bytes that are not valid {encoding}" if bad and "\ufffd" in text else None
            yield _make_row(index, text, None, {}, error)
    except UnicodeDecodeError as e:  # only in text-mode decoding (UTF-16/32, CR line ends)
        raise InputError(path, f"not valid {encoding} text ({e.reason})", stats.lines) from None
    finally:
        if closer is not None:
            closer.close()


def _with_problems(lines: Iterable[str], problems: list[str]) -> Iterator[tuple[str, bool]]:
    """(line, whether decoding it hit bytes its encoding cannot read) for each line, clearing `problems`."""
    for line in lines:
        bad = bool(problems)
        problems.clear()
        yield line, bad


def _empty(path: str, why: str = "") -> InputError:
    """The one error for an input with nothing in it, whatever its format (as for an empty CSV)."""
    what = "standard input is empty" if path == "-" else "file is empty"
    return InputError(path, f"{what} ({why})" if why else what)


def _json_error(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON: {e.msg} (column {e.colno})"
    return f"invalid JSON: {e}"


def _json_items(
    path: str, fmt: str, stats: ReadStats | None = None, source: _Source | None = None
) -> Iterator[tuple[Any, str | None, str | None]]:
    """(value, parse error, encoding with undecodable bytes) per JSONL line or JSON array element.

    A `.json` file may hold a JSON array, a single (pretty-printed) object, or JSON Lines; the first
    non-blank line tells which. Arrays are loaded whole: the format cannot be streamed without a dependency.
    """
    closer: IO[bytes] | None = None
    if source is not None:
        lines, encoding, problems = source
    elif path == "-":
        lines, encoding, problems = _stdin_lines()
    else:
        fb, lines, encoding, problems = _open_lines(path)
        closer = fb
    if stats is not None:
        lines = _counted(lines, stats)
    try:
        if fmt == "json":
            first = next((line for line in lines if line.strip()), None)
            if first is None:
                return
            opening = first.lstrip().lstrip("\ufeff")
            if opening.startswith("[") or not _parses(first):
                text = first + "".join(lines)
                try:
                    doc = json.loads(text)
                except ValueError as e:
                    if opening.startswith("["):
                        where = (
                            f" (line {e.lineno}, column {e.colno})"
                            if isinstance(e, json.JSONDecodeError)
                            else ""
                        )
                        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
                        raise InputError(path, f"invalid JSON: {msg}{where}") from None
                    lines = iter(io.StringIO(text))  # not one document: treat it as JSON Lines after all
                    problems.clear()
                else:
                    bad = encoding if problems else None
                    for value in doc if isinstance(doc, list) else [doc]:
                        yield value, None, bad
                    return
            else:
                lines = chain([first], lines)
        for line in lines:
            if not line.strip():
                problems.clear()
                continue
            bad = encoding if problems else None
            problems.clear()
            try:
                value = json.loads(line.rstrip("\r\n"))  # so an error's column is on this line, not past it
            except ValueError as e:
                yield None, _json_error(e), bad
            else:
                yield value, None, bad
    except UnicodeDecodeError as e:  # only in text-mode decoding (UTF-16/32, CR line ends)
        raise InputError(path, f"not valid {encoding} text ({e.reason})") from None
    finally:
        if closer is not None:
            closer.close()


def _rows_json(
    path: str, spec: _Spec, skip: int, fmt: str, stats: ReadStats, source: _Source | None = None
) -> Iterator[Any]:
    items = _json_items(path, fmt, stats, source)
    try:
        # The leading objects stand in for a header: a column none of them has is a wrong name, refused before
        # anything is yielded. Exporters that drop null fields (Spark's default) leave a key out of some
        # objects, so one object is not enough: those rows get a per-row error instead.
        pending: list[tuple[Any, str | None, str | None]] = []
        wanted = [c for c in (spec.text_col, spec.id_col, *spec.keep) if c is not None]
        seen: dict[str, None] = {}
        objects = 0
        for item in items:
            pending.append(item)
            if item[1] is None and isinstance(item[0], dict):
                objects += 1
                seen.update(dict.fromkeys(item[0]))
                if all(c in seen for c in wanted) or objects >= _HEADER_SCAN:
                    break
            elif objects == 0 and len(pending) >= _MAX_LEADING_BAD:
                break
        if not pending:
            raise _empty(path, "no JSON records")
        if objects == 0:
            value, err, _ = pending[0]
            why = err or f"expected a JSON object, got {_json_type(value)}"
            raise InputError(path, f"no JSON object in the first {len(pending)} records (row 1: {why})")
        if objects:
            hint = _names_hint(seen, "keys")
            for col in wanted:
                if col not in seen:
                    raise InputError(path, f"column '{col}' is missing from the first {objects} objects ({hint})")
        id_key = spec.id_col or "id"
        yield _READY

        for index, (value, err, bad) in enumerate(chain(pending, items)):
            if index >= skip:
                yield _object_row(index, value, err, bad, spec, id_key)
    finally:
        items.close()


def _object_row(
    index: int, value: Any, err: str | None, bad: str | None, spec: _Spec, id_key: str
) -> InputRow:
    if not isinstance(value, dict):
        extra = dict.fromkeys(spec.keep)
        return InputRow(index, index, None, extra, err or f"expected a JSON object, got {_json_type(value)}")
    text = value.get(spec.text_col, _MISSING)
    if err is None and bad is not None and isinstance(text, str) and "\ufffd" in text:
        err = f"text has bytes that are not valid {bad}"
    extra = {k: value.get(k) for k in spec.keep}
    return _make_row(index, text, value.get(id_key), extra, err)


def _arrow_is_text(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
    )


def _open_parquet(path: str, fb: IO[bytes]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(fb)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(path, f"not a readable parquet file ({e})") from None


def _rows_parquet(path: str, spec: _Spec, skip: int) -> Iterator[Any]:
    fb = _open_binary(path)
    with fb:
        pf = _open_parquet(path, fb)
        schema = pf.schema_arrow
        names = list(schema.names)
        text_i, id_i, keep_i = _header_indices(path, names, spec)
        text_type = schema.field(text_i).type
        if not _arrow_is_text(text_type):
            raise InputError(path, f"column '{spec.text_col}' holds {text_type}, not text")
        wanted = list(
            dict.fromkeys([names[text_i]] + ([names[id_i]] if id_i is not None else []) + list(spec.keep))
        )
        yield _READY

        # Whole row groups before `skip` are never read.
        meta = pf.metadata
        index, first_group = 0, 0
        while first_group < meta.num_row_groups and index + meta.row_group(first_group).num_rows <= skip:
            index += meta.row_group(first_group).num_rows
            first_group += 1
        groups = list(range(first_group, meta.num_row_groups))
        if not groups:
            return
        try:
            for batch in pf.iter_batches(batch_size=_BATCH, row_groups=groups, columns=wanted):
                cols = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
                texts = cols[spec.text_col]
                ids = cols[names[id_i]] if id_i is not None else None
                keeps = [(k, cols[k]) for k, _ in keep_i]
                start = max(0, skip - index)
                for j in range(start, batch.num_rows):
                    extra = {k: v[j] for k, v in keeps}
                    yield _make_row(index + j, texts[j], ids[j] if ids is not None else None, extra)
                index += batch.num_rows
        except OSError as e:
            raise InputError(path, f"cannot read parquet data ({e})", index + 1) from None


def _open_xlsx(path: str, fb: IO[bytes]) -> Any:
    import zipfile

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return openpyxl.load_workbook(fb, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise InputError(path, f"not a readable xlsx workbook ({e})") from None


def _xlsx_rows(wb: Any) -> Iterator[tuple[Any, ...]]:
    """Non-blank rows of the first sheet (the one pandas reads too)."""
    ws = wb.worksheets[0]
    ws.reset_dimensions()  # the stored dimension is often wrong in files from other tools; read every row
    for row in ws.iter_rows(values_only=True):
        if any(v is not None and not (isinstance(v, str) and not v.strip()) for v in row):
            yield row


@contextlib.contextmanager
def _xlsx_sheet(path: str) -> Iterator[Iterator[tuple[Any, ...]]]:
    """The first sheet's non-blank rows, header first; the workbook and file are closed afterwards."""
    with _open_binary(path) as fb:
        wb = _open_xlsx(path, fb)
        try:
            yield _xlsx_rows(wb)
        finally:
            wb.close()


def _rows_xlsx(path: str, spec: _Spec, skip: int) -> Iterator[Any]:
    with _xlsx_sheet(path) as rows:
        header = next(rows, None)
        if header is None:
            raise InputError(path, "the first sheet is empty (no header row)")
        names = ["" if v is None else str(v).strip() for v in header]
        text_i, id_i, keep_i = _header_indices(path, names, spec)
        yield _READY

        for index, row in enumerate(rows):
            if index < skip:
                continue
            length = len(row)
            text = row[text_i] if text_i < length else None
            id_value = row[id_i] if id_i is not None and id_i < length else None
            extra = {k: (row[j] if j < length else None) for k, j in keep_i}
            yield _make_row(index, text, id_value, extra, numbers_are_text=True, null_is_empty=True)


def _count_text(path: str) -> int:
    fb, lines, _, _ = _open_lines(path)
    with fb:
        return sum(1 for _ in lines)


def _count_delimited(path: str) -> int:
    """Records counted by lines with quote tracking: exact for well-formed files."""
    fb, lines, _, _ = _open_lines(path)
    with fb:
        records, in_quotes = 0, False
        for line in lines:
            if not in_quotes and not line.strip():
                continue
            if line.count('"') % 2:
                in_quotes = not in_quotes
            if not in_quotes:
                records += 1
        return max(records - 1, 0)


def _count_json(path: str, fmt: str) -> int:
    """Every line or array element (a `.json` array is parsed)."""
    return sum(1 for _ in _json_items(path, fmt))


def _count_parquet(path: str) -> int:
    with _open_binary(path) as fb:
        return int(_open_parquet(path, fb).metadata.num_rows)


def _count_xlsx(path: str) -> int | None:
    """The sheet's stored dimension (blank rows included): reading a workbook to count it costs too much."""
    with _open_binary(path) as fb:
        wb = _open_xlsx(path, fb)
        try:
            max_row = wb.worksheets[0].max_row
            return max(int(max_row) - 1, 0) if max_row else None
        finally:
            wb.close()


def _counted(lines: Iterable[str], stats: ReadStats) -> Iterator[str]:
    stats.lines = 0
    for line in lines:
        stats.lines += 1
        yield line
