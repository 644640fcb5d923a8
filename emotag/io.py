"""Reading inputs and writing results in every format `emotag` speaks (SPEC §2, §5).

Why the module looks the way it does:

* Review dumps run to millions of rows, so every reader streams (csv/tsv/jsonl line by line, parquet by
  batch, xlsx through openpyxl's read-only mode) and every writer writes as it goes. Only a `.json` array is
  loaded whole: the format cannot be streamed without another dependency.
* One bad row must not cost a whole run. Row-level problems travel on the row (`InputRow.error`, which the
  scorer copies into the output record's `error` field); only mistakes that make the whole file unusable
  (wrong column name, unknown format, missing file) raise `InputError`, whose one-line message the CLI
  prints as is.
* Long runs get interrupted, so output goes to `OUT.partial` and is renamed onto OUT only once complete;
  `RecordWriter(resume=True)` picks the partial up again and `read_rows(skip=writer.rows_done)` skips the
  rows it already holds.
* Chinese CSVs come in UTF-8, UTF-8 with BOM (Excel) and GBK/GB18030 (Excel on Chinese Windows); the
  encoding is sniffed, not assumed.
"""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from types import TracebackType
from typing import IO, Any, NamedTuple, cast

__all__ = [
    "FORMATS",
    "INPUT_FORMATS",
    "InputError",
    "InputRow",
    "ReadStats",
    "RecordWriter",
    "count_rows",
    "detect_format",
    "read_records",
    "read_rows",
    "same_file",
]

FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "json", "parquet", "xlsx")
# Read, never written: one text per line, as people pipe text (`emotag score notes.txt`, `... | emotag score -`).
INPUT_FORMATS: tuple[str, ...] = (*FORMATS, "txt")
_EXTENSIONS = {
    ".txt": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".xlsx": "xlsx",
}
_SNIFF_BYTES = 64 * 1024
# Far above any real text, yet low enough that a runaway quote in a huge CSV fails with a message instead of
# swallowing the rest of the file into one field.
_FIELD_LIMIT = 64 * 1024 * 1024
_BATCH = 10_000  # rows per parquet batch, read and write
_HEADER_SCAN = 1000  # json/jsonl: leading objects whose keys stand in for a header
_MAX_LEADING_BAD = 1000  # JSON lines inspected for a first valid object before giving up on the file
_HEADER_BUFFER = 1000  # csv/tsv output: records held back while the column layout is still unknown
_XLSX_MAX_ROWS = 1_048_575  # Excel's sheet limit (1,048,576) minus the header row
_XLSX_MAX_EXACT_INT = 10**15  # Excel keeps 15 significant digits; longer ints (ids) are written as text
_JSON_FIELD_META = {b"emotag.encoding": b"json"}

_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)")
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_NEWLINES = re.compile(r"\s*[\r\n]+\s*")

if csv.field_size_limit() < _FIELD_LIMIT:
    csv.field_size_limit(_FIELD_LIMIT)


class InputError(Exception):
    """A user mistake in an input (or output) file.

    The CLI turns it into exit code 1 and prints `str(e)`, which is always ONE line naming the file, the row
    when known and the problem, e.g. ``reviews.csv, row 17: column 'text' is missing``. `row` is the 1-based
    data row as a user counts it (the header is not a row), so it is `InputRow.index + 1`.
    """

    def __init__(self, path: str, problem: str, row: int | None = None) -> None:
        self.path = path
        self.problem = _NEWLINES.sub(" ", str(problem)).strip()
        self.row = row
        super().__init__(path, self.problem, row)

    def __str__(self) -> str:
        name = "<stdin>" if self.path == "-" else self.path
        where = name if self.row is None else f"{name}, row {self.row}"
        return f"{where}: {self.problem}"


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
    rows from 1,001 lines" makes a reader that merged rows visible instead of silent."""

    lines: int | None = None


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


# --------------------------------------------------------------------------------------------------- formats


def detect_format(path: str) -> str:
    """Format of `path` from its extension ('-' means JSONL on stdin/stdout).

    The extension decides, not the content, so that a mistake (``data.xlsy``) is reported at once instead of
    being half-parsed as something else.
    """
    if path == "-":
        return "jsonl"
    name = os.path.basename(path.rstrip("/\\"))
    ext = os.path.splitext(name)[1]
    if ext.lower() in _EXTENSIONS:
        return _EXTENSIONS[ext.lower()]
    expected = ", ".join(FORMATS)
    if not ext:
        raise InputError(path, f"no file extension, cannot tell the format (expected {expected})")
    raise InputError(path, f"unknown format '{ext}' (expected {expected})")


def _resolve_format(path: str, fmt: str | None, formats: tuple[str, ...] = FORMATS) -> str:
    """`fmt` if given (validated) else the format the extension says, one of `formats`."""
    if fmt is None:
        name = detect_format(path)
    else:
        name = fmt.lower().lstrip(".")
        name = _EXTENSIONS.get("." + name, name)
    if name not in formats:
        if name == "txt":
            raise InputError(path, f"txt (one text per line) is read, not written; write one of {', '.join(FORMATS)}")
        raise InputError(path, f"unknown format '{fmt}' (expected {', '.join(formats)})")
    if path == "-" and name not in ("jsonl", "txt"):
        raise InputError(path, f"standard input/output is always JSONL, not {name}")
    return name


# -------------------------------------------------------------------------------------- text files, encoding


def _open_binary(path: str) -> IO[bytes]:
    """Open for reading, turning OS errors into one-line InputErrors."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller owns and closes the handle
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a file") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as e:
        raise InputError(path, f"cannot open file: {e.strerror or e}") from None


def _first_non_ascii(fb: IO[bytes]) -> tuple[bytes, bool]:
    """Sample starting at the first non-ASCII byte after an all-ASCII head.

    A dump can open with thousands of ASCII-only rows (ids, English, emoticons) before its first Chinese
    character; sniffing only the head would call a GBK file UTF-8 and garble every later row.
    """
    while True:
        chunk = fb.read(1 << 20)
        if not chunk:
            return b"", True
        if chunk.isascii():
            continue
        m = _NON_ASCII.search(chunk)
        assert m is not None
        sample = chunk[m.start() : m.start() + _SNIFF_BYTES]
        if len(sample) < _SNIFF_BYTES:
            sample += fb.read(_SNIFF_BYTES - len(sample))
        return sample, len(sample) < _SNIFF_BYTES


def _guess_encoding(path: str, fb: IO[bytes], head: bytes) -> str:
    """BOM, else (nearly all) valid UTF-8, else GB18030 (a superset of GBK), else charset-normalizer.

    UTF-8 goes first: Chinese UTF-8 often happens to be valid GB18030 too, but GBK is rarely valid UTF-8.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode text" export
    if head.startswith(b"PK\x03\x04"):
        raise InputError(
            path, "this is a zip archive (an .xlsx workbook?), not text; give it the right extension"
        )
    if head.startswith(b"PAR1"):
        raise InputError(path, "this is a parquet file, not text; give it the .parquet extension")
    sample, at_eof = head, len(head) < _SNIFF_BYTES
    if b"\x00" not in sample:
        if sample.isascii() and not at_eof:
            sample, at_eof = _first_non_ascii(fb)
        if sample.isascii():
            return "utf-8"
        # A few damaged bytes (texts cut mid-character by a database export) must not flip a UTF-8 file to
        # GB18030 mojibake: an encoding whose damage is rare is kept, and read_rows flags the damaged rows.
        for enc in ("utf-8", "gb18030"):
            text = codecs.getincrementaldecoder(enc)(errors="replace").decode(sample, final=at_eof)
            damaged = text.count("\ufffd")
            non_ascii = len(text) - len(text.encode("ascii", errors="ignore"))
            if damaged <= 0.1 * non_ascii:
                return enc
    import charset_normalizer

    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        where = ""
        if sample is head:  # the sample starts at line 1, so its lines can be named
            bad = next((i for i, line in enumerate(head.split(b"\n")[:-1], start=1)
                        if not _decodes(line, "utf-8") and not _decodes(line, "gb18030")), None)
            first = next((i for i, line in enumerate(head.split(b"\n")[:-1], start=1)
                          if not _decodes(line, "utf-8")), None)
            if bad:
                where = f" (line {bad} is neither UTF-8 nor GBK)"
            elif first:
                where = f" (line {first} is the first that is not UTF-8: mixed UTF-8 and GBK?)"
        raise InputError(path, f"cannot tell the text encoding{where}; save the file as UTF-8")
    return str(best.encoding)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _splits_on_newline_bytes(encoding: str) -> bool:
    """True if a b'\\n' byte always ends a line in this encoding (not so for UTF-16/32)."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return False
    try:
        return "\n".encode(encoding) == b"\n"
    except (UnicodeError, LookupError):
        return False


def _decoded_lines(fb: IO[bytes], encoding: str, problems: list[str]) -> Iterator[str]:
    """Lines decoded one by one, so an undecodable byte spoils one row, not the run.

    Bad bytes become U+FFFD and are reported through `problems`; the caller attributes them to the row
    being parsed (csv.reader pulls exactly the lines of one record at a time).
    """
    other = _OTHER_CHINESE_ENCODING.get(codecs.lookup(encoding).name)
    for raw in fb:
        try:
            yield raw.decode(encoding)
        except UnicodeDecodeError:
            text = _in_other_encoding(raw, other) if other is not None else None
            if text is not None:  # files appended to by two tools: a UTF-8 row in a GBK file, or the reverse
                yield text
                continue
            problems.append(encoding)
            yield raw.decode(encoding, errors="replace")


# The two encodings Chinese files come in; a line that is not valid in the file's one is tried in the other.
_OTHER_CHINESE_ENCODING = {"utf-8": "gb18030", "utf-8-sig": "gb18030", "gb18030": "utf-8", "gbk": "gb18030",
                           "gb2312": "gb18030"}
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _in_other_encoding(raw: bytes, other: str) -> str | None:
    """The line in the other Chinese encoding when it plainly is that, else None (the row is then flagged).

    Valid multi-byte UTF-8 almost never happens by chance, so a line that decodes as UTF-8 is UTF-8. Almost
    any bytes decode as GB18030, so a line of a UTF-8 file is taken as GBK only when it is mostly not UTF-8
    (a UTF-8 text cut mid-character is damaged UTF-8, not GBK) and reads as at least two Chinese characters.
    """
    try:
        text = raw.decode(other)
    except UnicodeDecodeError:
        return None
    if other == "utf-8":
        return text
    as_utf8 = raw.decode("utf-8", errors="replace")
    damaged = as_utf8.count("\ufffd")
    valid = sum(1 for c in as_utf8 if c > "\x7f" and c != "\ufffd")
    return text if valid < damaged and len(_CJK.findall(text)) >= 2 else None


def _open_lines(path: str) -> tuple[IO[bytes], Iterator[str], str, list[str]]:
    """(handle to close, decoded line iterator, encoding, decode-problem list) for a text file."""
    fb = _open_binary(path)
    try:
        head = fb.read(_SNIFF_BYTES)
        encoding = _guess_encoding(path, fb, head)
        fb.seek(0)
        problems: list[str] = []
        cr_only = b"\r" in head and b"\n" not in head  # classic Mac line ends: one giant b"\n"-line
        if _splits_on_newline_bytes(encoding) and not cr_only:
            return fb, _decoded_lines(fb, encoding, problems), encoding, problems
        text = io.TextIOWrapper(fb, encoding=encoding, newline="")
        return fb, iter(text), encoding, problems
    except BaseException:
        fb.close()
        raise


# ------------------------------------------------------------------------------------------------ row helpers


def _json_type(v: Any) -> str:
    """JSON's name for a value's type, which is what JSON users will recognise in messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


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


# ----------------------------------------------------------------------------------------------- read_rows


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
        resolved, source = _sniff_stdin()
    else:
        resolved = _resolve_format(path, fmt, INPUT_FORMATS)
    if isinstance(keep, str):
        keep = [keep]
    spec = _Spec(text_col, id_col, tuple(dict.fromkeys(keep)))
    stats = stats if stats is not None else ReadStats()
    if resolved in ("csv", "tsv"):
        gen = _rows_delimited(path, spec, skip, "," if resolved == "csv" else "\t", stats)
    elif resolved in ("jsonl", "json"):
        gen = _rows_json(path, spec, skip, resolved, stats, source)
    elif resolved == "txt":
        gen = _rows_text(path, spec, skip, stats, source)
    elif resolved == "parquet":
        gen = _rows_parquet(path, spec, skip)
    else:
        gen = _rows_xlsx(path, spec, skip)
    ready = next(gen)  # runs the opening checks now; raises InputError on a bad file
    assert ready is _READY
    return cast(Iterator[InputRow], gen)


class _LineTap:
    """The physical lines a csv reader consumed for its last record (to undo a runaway quote), and how
    many lines were read in all (into `stats.lines`)."""

    def __init__(self, lines: Iterator[str], stats: ReadStats | None = None) -> None:
        self._lines = lines
        self.taken: list[str] = []
        self.stats = stats if stats is not None else ReadStats()
        self.stats.lines = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.taken.append(line)
        self.stats.lines += 1  # type: ignore[operator]  # set to 0 above
        return line


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
    hold a comma, so a CSV record also needs one of its later lines to read, on its own, as a whole row
    (the header's number of fields). Such a record is split back into its lines, one row each.
    """
    if len(lines) < 2 or not any(delimiter in f and ("\n" in f or "\r" in f) for f in record):
        return False
    if delimiter == "\t":
        return True
    return any(len(next(csv.reader([line.rstrip("\r\n")]), [])) == width for line in lines[1:] if line.strip())


def _rows_delimited(path: str, spec: _Spec, skip: int, delimiter: str, stats: ReadStats) -> Iterator[Any]:
    fb, lines, encoding, problems = _open_lines(path)
    kind = "CSV" if delimiter == "," else "TSV"
    tap = _LineTap(lines, stats)
    width = 0  # fields in the header, once read
    pending: deque[list[str]] = deque()  # records recovered from a runaway quote, not yet returned
    with fb:
        reader = csv.reader(tap, delimiter=delimiter)
        index = 0

        def next_record(row: int | None) -> list[str] | None:
            if pending:
                return pending.popleft()
            tap.taken.clear()
            try:
                rec = next(reader, None)
            except csv.Error as e:
                raise InputError(path, f"malformed {kind}: {e}", row) from None
            except UnicodeDecodeError as e:
                raise InputError(path, f"not valid {encoding} text ({e.reason})", row) from None
            if rec is not None and (width or delimiter == "\t") and _runaway_quote(rec, tap.taken, delimiter, width):
                split = _split_tsv_line if delimiter == "\t" else lambda line: _split_csv_line(line, width)
                pending.extend(split(line) for line in tap.taken if line.strip("\r\n"))
                return pending.popleft() if pending else rec
            return rec

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
        n = width = len(names)
        problems.clear()
        yield _READY

        while True:
            rec = next_record(index + 1)
            if rec is None:
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
        yield _READY
        for index, line in enumerate(_counted(lines, stats)):
            bad = bool(problems)
            problems.clear()
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


def _json_error(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON: {e.msg} (column {e.colno})"
    return f"invalid JSON: {e}"


def _counted(lines: Iterable[str], stats: ReadStats) -> Iterator[str]:
    stats.lines = 0
    for line in lines:
        stats.lines += 1
        yield line


_Source = tuple[Iterator[str], str, list[str]]  # lines already opened (stdin, sniffed), encoding, problems


def _stdin_lines() -> _Source:
    """Standard input as decoded lines (UTF-8, a row at a time, so bad bytes spoil one row)."""
    encoding, problems = "utf-8-sig", []
    stdin_bytes = getattr(sys.stdin, "buffer", None)
    lines = _decoded_lines(stdin_bytes, encoding, problems) if stdin_bytes is not None else iter(sys.stdin)
    return lines, encoding, problems


def _sniff_stdin() -> tuple[str, _Source]:
    """JSON Lines when the first non-blank line is a JSON object, else one text per line."""
    lines, encoding, problems = _stdin_lines()
    head: list[str] = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    first = head[-1].strip().lstrip("\ufeff") if head else ""
    is_json = first.startswith("{") and _parses(first)
    return ("jsonl" if is_json else "txt"), (chain(head, lines), encoding, problems)


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


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


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
        if objects == 0 and pending:
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


def _rows_xlsx(path: str, spec: _Spec, skip: int) -> Iterator[Any]:
    fb = _open_binary(path)
    with fb:
        wb = _open_xlsx(path, fb)
        try:
            rows = _xlsx_rows(wb)
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
        finally:
            wb.close()


# ---------------------------------------------------------------------------------------------- count_rows


def count_rows(path: str, fmt: str | None = None) -> int | None:
    """Number of data rows, cheaply, for a progress bar; None when it cannot be known (stdin).

    csv/tsv are counted by lines with quote tracking, exact for well-formed files; xlsx trusts the sheet's
    stored dimension (blank rows included); a `.json` array is parsed.
    """
    if path == "-":
        return None
    resolved = _resolve_format(path, fmt, INPUT_FORMATS)
    if resolved == "txt":
        fb, lines, _, _ = _open_lines(path)
        with fb:
            return sum(1 for _ in lines)
    if resolved in ("csv", "tsv"):
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
    if resolved in ("jsonl", "json"):
        return sum(1 for _ in _json_items(path, resolved))
    fb = _open_binary(path)
    with fb:
        if resolved == "parquet":
            return int(_open_parquet(path, fb).metadata.num_rows)
        wb = _open_xlsx(path, fb)
        try:
            max_row = wb.worksheets[0].max_row
            return max(int(max_row) - 1, 0) if max_row else None
        finally:
            wb.close()


# -------------------------------------------------------------------------------------------- read_records


def _cell_value(cell: str) -> Any:
    """Type a csv/tsv cell back: what RecordWriter wrote as repr/str/JSON comes back as the value.

    Only canonical spellings are converted ('007' stays text, so do '1.5x' and '[图片]'); an empty cell is
    None. A text column holding e.g. '666' comes back as a number: csv has no types to say otherwise.
    """
    if cell == "":
        return None
    c0 = cell[0]
    if c0 == "-" or c0.isdigit():
        try:
            if _INT_RE.fullmatch(cell):
                return int(cell)
            if _FLOAT_RE.fullmatch(cell) or cell == "-inf":
                return float(cell)
        except ValueError:  # e.g. an int too long to convert
            return cell
        return cell
    if cell == "True" or cell == "False":
        return cell == "True"
    if cell == "nan" or cell == "inf":
        return float(cell)
    if c0 == "[" or c0 == "{":
        return _json_or_text(cell)
    return cell


def _json_or_text(cell: str) -> Any:
    try:
        return json.loads(cell)
    except ValueError:
        return cell


def _unflattener(names: Sequence[str]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Builds records from flat rows, turning `a.b` columns back into {'a': {'b': ...}}.

    A group whose cells are all empty becomes None: that is how a null nested value (an error record's
    `emotions`) was flattened.
    """
    present = set(names)
    plan: list[tuple[str, str | None]] = []
    for n in names:
        group, dot, sub = n.partition(".")
        if dot and group and sub and group not in present:
            plan.append((group, sub))
        else:
            plan.append((n, None))
    groups = list(dict.fromkeys(g for g, s in plan if s is not None))

    def build(values: Sequence[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (key, sub), v in zip(plan, values, strict=True):
            if sub is None:
                out[key] = v
            else:
                out.setdefault(key, {})[sub] = v
        for g in groups:
            if all(v is None for v in out[g].values()):
                out[g] = None
        return out

    return build


def read_records(path: str, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Read output records back from any format RecordWriter writes (for `emotag profile` and tests).

    Flattened `a.b` columns of csv/tsv/xlsx/parquet become nested dicts again, and csv cells get their
    types back (see `_cell_value`). Unlike read_rows, a malformed record here raises InputError: scored
    files are machine-written, so damage means the file is unusable.
    """
    resolved = _resolve_format(path, fmt)
    if resolved in ("csv", "tsv"):
        return _records_delimited(path, "," if resolved == "csv" else "\t")
    if resolved in ("jsonl", "json"):
        return _records_json(path, resolved)
    if resolved == "parquet":
        return _records_parquet(path)
    return _records_xlsx(path)


@dataclass
class UnreadableRecord:
    """An input record that could not be parsed; it still gets its output record (with `error`)."""

    index: int
    error: str


def read_conversation_records(path: str, fmt: str | None = None) -> Iterator[dict[str, Any] | UnreadableRecord]:
    """Read a conversations file (SPEC §3) as written by people, not by emotag.

    Unlike read_records: csv/tsv cells stay text (a turn reading 666 or True is words, not a number), and
    a malformed JSON line becomes an UnreadableRecord in its place instead of ending the run.
    """
    resolved = _resolve_format(path, fmt)
    if resolved in ("jsonl", "json"):
        return _lenient_records_json(path, resolved)
    return read_text_records(path, resolved)


def read_text_records(path: str, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of a labelled file as people write it: csv/tsv cells stay text (blank -> None); JSON,
    parquet and xlsx values as stored. A malformed record raises InputError naming file and row."""
    resolved = _resolve_format(path, fmt)
    if resolved in ("csv", "tsv"):
        return _records_delimited(path, "," if resolved == "csv" else "\t", typed=False)
    return read_records(path, resolved)


def _lenient_records_json(path: str, fmt: str) -> Iterator[dict[str, Any] | UnreadableRecord]:
    for index, (value, err, _) in enumerate(_json_items(path, fmt)):
        if err is not None:
            yield UnreadableRecord(index, err)
        elif not isinstance(value, dict):
            yield UnreadableRecord(index, f"expected a JSON object, got {_json_type(value)}")
        else:
            yield value


def _records_delimited(path: str, delimiter: str, typed: bool = True) -> Iterator[dict[str, Any]]:
    """Records of a csv/tsv file. `typed`: cells get their types back and `a.b` columns nest (emotag's own
    output); otherwise every cell stays text, blank -> None (files people wrote)."""
    fb, lines, encoding, _ = _open_lines(path)
    with fb:
        try:
            reader = csv.reader(lines, delimiter=delimiter)
            header = next((r for r in reader if r), None)
            if header is None:
                return
            header[0] = header[0].lstrip("\ufeff")
            if not typed:
                header = [h.strip() for h in header]
            build = _unflattener(header) if typed else (lambda values: dict(zip(header, values, strict=True)))
            n = len(header)
            for rec in reader:
                if not rec:
                    continue
                values = [_cell_value(c) for c in rec[:n]] if typed else [c if c != "" else None for c in rec[:n]]
                values += [None] * (n - len(values))
                yield build(values)
        except csv.Error as e:
            raise InputError(path, f"malformed file: {e}") from None
        except UnicodeDecodeError as e:
            raise InputError(path, f"not valid {encoding} text ({e.reason})") from None


def _records_json(path: str, fmt: str) -> Iterator[dict[str, Any]]:
    for row, (value, err, _) in enumerate(_json_items(path, fmt), start=1):
        if err is not None:
            raise InputError(path, err, row)
        if not isinstance(value, dict):
            raise InputError(path, f"expected a JSON object, got {_json_type(value)}", row)
        yield value


def _records_parquet(path: str) -> Iterator[dict[str, Any]]:
    fb = _open_binary(path)
    with fb:
        pf = _open_parquet(path, fb)
        schema = pf.schema_arrow
        json_cols = {
            i for i, f in enumerate(schema) if f.metadata and f.metadata.get(b"emotag.encoding") == b"json"
        }
        build = _unflattener(schema.names)
        for batch in pf.iter_batches(batch_size=_BATCH):
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            for i in json_cols:
                cols[i] = [None if v is None else json.loads(v) for v in cols[i]]
            for values in zip(*cols, strict=True):
                yield build(values)


def _records_xlsx(path: str) -> Iterator[dict[str, Any]]:
    fb = _open_binary(path)
    with fb:
        wb = _open_xlsx(path, fb)
        try:
            rows = _xlsx_rows(wb)
            header = next(rows, None)
            if header is None:
                return
            used = [i for i, v in enumerate(header) if v is not None and str(v) != ""]
            build = _unflattener([str(header[i]) for i in used])
            for row in rows:
                values = []
                for i in used:
                    v = row[i] if i < len(row) else None
                    if isinstance(v, str) and v[:1] in ("[", "{"):
                        v = _json_or_text(v)
                    values.append(v)
                yield build(values)
        finally:
            wb.close()


# ------------------------------------------------------------------------------------------------- writing


def _json_default(o: Any) -> Any:
    """JSON for what scorers and spreadsheets hand over: numpy scalars/arrays, dates, Decimals, sets.

    Anything else becomes its str(): a result file with one odd cell beats a crash at row 900,000.
    """
    if hasattr(o, "item") and getattr(o, "shape", None) == ():
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (_dt.date, _dt.time)):
        return o.isoformat()
    if isinstance(o, Decimal):
        return float(o) if o.is_finite() else str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    if isinstance(o, (bytes, bytearray)):
        return bytes(o).decode("utf-8", errors="replace")
    if isinstance(o, Mapping):
        return dict(o)
    return str(o)


# One shared encoder: json.dumps() with options builds a new one per call, which dominates small records.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)
_dumps = _ENCODER.encode


def _text_cell(v: Any) -> str:
    """A csv/tsv cell: repr for floats so they read back exactly, JSON for nested values, '' for None."""
    t = type(v)
    if t is str:
        return cast(str, v)
    if t is float:
        return repr(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):  # subclasses too (numpy.float64), whose own repr is "np.float64(...)"
        return float.__repr__(v)
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, (dict, list, tuple)):
        return _dumps(v)
    converted = _json_default(v)
    return converted if isinstance(converted, str) else _text_cell(converted)


def _kinds(types: set[type]) -> set[str]:
    """Collapse the Python types a column held into what its JSON-spooled values will be."""
    import numbers

    out = set()
    for t in types:
        if issubclass(t, bool) or t.__name__ in ("bool_", "bool"):
            out.add("bool")
        elif issubclass(t, numbers.Integral):
            out.add("int")
        elif issubclass(t, float) or (issubclass(t, numbers.Real) and not issubclass(t, Decimal)):
            out.add("float")
        elif issubclass(t, str):
            out.add("str")
        elif issubclass(t, (dict, list, tuple)):
            out.add("json")
        else:
            out.add("other")
    return out


class _Layout:
    """Column layout of flat outputs, learnt from records: one level of dict values becomes `key.sub`.

    Keys come in first-seen order (the first record's order). A key that only ever holds None cannot be
    told apart from a dict that has not shown up yet, hence `settled()`; a key holding both dicts and
    scalars is not flattened (its dicts are written as JSON). With `track_types`, the value types of every
    column are recorded too, so parquet gets a schema without another pass over the data.
    """

    def __init__(self, track_types: bool = False) -> None:
        self.keys: dict[Any, None] = {}
        self.subkeys: dict[Any, dict[Any, None]] = {}
        self.scalar: set[Any] = set()
        self.only_none: set[Any] = set()
        self.types: dict[Any, set[type]] | None = {} if track_types else None
        # Records of a run share a handful of shapes (scored, failed); one seen before teaches nothing new.
        self._shapes: set[Any] = set()

    def observe(self, record: Mapping[Any, Any]) -> None:
        values = record.values()
        shape = (
            tuple(record),
            tuple(map(type, values)),
            tuple((tuple(v), tuple(map(type, v.values()))) for v in values if isinstance(v, dict)),
        )
        if shape in self._shapes:
            return
        if len(self._shapes) < 10_000:
            self._shapes.add(shape)
        types = self.types
        for k, v in record.items():
            if k not in self.keys:
                self.keys[k] = None
                self.only_none.add(k)
            if v is None:
                continue
            self.only_none.discard(k)
            if isinstance(v, dict):
                subs = self.subkeys.setdefault(k, {})
                for s, sv in v.items():
                    if s not in subs:
                        subs[s] = None
                    if types is not None and sv is not None:
                        types.setdefault((k, s), set()).add(type(sv))
            else:
                self.scalar.add(k)
            if types is not None:
                types.setdefault(k, set()).add(type(v))

    def settled(self) -> bool:
        return not self.only_none

    def _plan(self) -> list[tuple[str, Any]]:
        plan: list[tuple[str, Any]] = []
        for k in self.keys:
            subs = self.subkeys.get(k)
            if subs and k not in self.scalar:
                plan.extend((f"{k}.{s}", (k, s)) for s in subs)
            else:
                plan.append((str(k), k))
        return plan

    def columns(self) -> list[str]:
        return [name for name, _ in self._plan()]

    def column_kinds(self) -> list[set[str]]:
        """Kinds of values per column (see _kinds), aligned with columns()."""
        assert self.types is not None
        return [_kinds(self.types.get(key, set())) for _, key in self._plan()]


class _Flattener:
    """Maps records onto a fixed column list (see _Layout); `a.b` columns take record['a']['b']."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.top = set(self.columns)
        self.groups: dict[str, set[str]] = {}
        # Runs of columns: ("", [], [col]) for a plain column, (group, [subs], [cols]) for a flattened dict.
        self.segments: list[tuple[str, list[str], list[str]]] = []
        for c in self.columns:
            group, dot, sub = c.partition(".")
            if not (dot and group and sub):
                self.segments.append(("", [], [c]))
                continue
            self.groups.setdefault(group, set()).add(sub)
            last = self.segments[-1] if self.segments else None
            if last is not None and last[0] == group:
                last[1].append(sub)
                last[2].append(c)
            else:
                self.segments.append((group, [sub], [c]))

    def values(self, record: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        get = record.get
        for group, subs, cols in self.segments:
            if not group:
                out.append(get(cols[0]))
                continue
            gv = get(group)
            if isinstance(gv, dict):
                out.extend([gv.get(s) for s in subs])
            else:  # null dict, or columns whose names merely contain a dot
                out.extend([get(c) for c in cols])
        return out

    def check(self, record: Mapping[str, Any]) -> None:
        """Refuse records that do not fit the columns instead of silently dropping their values."""
        for k, v in record.items():
            if k in self.top:
                continue
            subs = self.groups.get(k)
            if subs is not None:
                if v is None:
                    continue
                if isinstance(v, dict):
                    extra = [s for s in v if s not in subs]
                    if not extra:
                        continue
                    raise ValueError(
                        f"record field {k!r} has keys {extra} that are not among the output columns"
                    )
            raise ValueError(f"record field {k!r} does not fit the output columns {self.columns}")


def _fsync_dir(path: str) -> None:
    """Make a rename durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _recover_jsonl(partial: str) -> int:
    """Count complete records in a JSONL partial and cut off a torn tail (unterminated or unparseable)."""
    with open(partial, "r+b") as f:
        count, end = 0, 0
        tail: deque[tuple[int, bytes]] = deque(maxlen=16)
        for line in f:
            if not line.endswith(b"\n"):
                break
            if line.strip():
                count += 1
                tail.append((end, line))
            end += len(line)
        while tail:
            start, line = tail[-1]
            if _parses(line.decode("utf-8", errors="replace")):
                break
            tail.pop()
            count -= 1
            end = start
        f.truncate(end)
        return count


def _recover_delimited(partial: str, delimiter: str) -> tuple[int, list[str] | None]:
    """(complete data records, header) of a csv/tsv partial, cutting off a torn last record.

    csv.writer quotes every field holding a quote and doubles inner quotes, so quote parity tells whether a
    newline ends a record or sits inside a quoted field.
    """
    with open(partial, "r+b") as f:
        records, end, pos, header_end = 0, 0, 0, 0
        in_quotes = False
        for line in f:
            pos += len(line)
            if line.count(b'"') % 2:
                in_quotes = not in_quotes
            if not line.endswith(b"\n"):
                break
            if not in_quotes:
                records += 1
                end = pos
                if records == 1:
                    header_end = pos
        f.truncate(end)
        if records == 0:
            return 0, None
        f.seek(0)
        head = f.read(header_end).decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(head, newline=""), delimiter=delimiter))
    return records - 1, header


def _spooled(partial: str) -> Iterator[dict[str, Any]]:
    with open(partial, "rb") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class RecordWriter:
    """Writes output records to OUT atomically and resumably.

    Everything goes to OUT + '.partial' in the same directory and is renamed onto OUT only by close(), so
    a crashed or interrupted run never leaves a truncated OUT that looks complete. On an exception the
    partial stays; `RecordWriter(OUT, resume=True)` continues it, with `rows_done` telling how many input
    rows to skip. csv/tsv/jsonl partials are already in the final format; parquet/xlsx/json are spooled as
    JSONL and converted at close, in bounded memory. '-' writes JSONL to stdout (no partial, no resume).

    csv/tsv/xlsx/parquet are flat: dict values are spread over `key.sub` columns. Columns follow the first
    record's key order; csv is UTF-8 with a BOM so that Excel shows Chinese correctly. A `template` record
    (never written) fixes the csv/tsv columns it shows up front, so a run that starts with a thousand
    error rows (whose `emotions` is null) still gets its `emotions.<label>` columns.
    """

    def __init__(self, path: str, fmt: str | None = None, resume: bool = False,
                 template: Mapping[str, Any] | None = None, inputs: Sequence[str] = (),
                 settings: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self.fmt = _resolve_format(path, fmt)
        self.rows_done = 0
        self.partial_path: str | None = None
        self._closed = False
        self._written = 0
        self._since_flush = 0
        self._pending: list[dict[str, Any]] = []  # csv/tsv records held back until the columns are known
        self._layout: _Layout | None = (
            None  # csv/tsv: decides the columns; parquet/xlsx: learnt while spooling
        )
        self._flat: _Flattener | None = None  # csv/tsv once the columns are fixed
        self._csv: Any = None
        self._text: IO[str] | None = None  # csv/tsv partial
        self._bin: IO[bytes] | None = None  # jsonl partial, spool, or stdout
        self._stdout = path == "-"
        if self._stdout:
            sys.stdout.flush()
            self._bin = getattr(sys.stdout, "buffer", None)
            return

        if os.path.isdir(path):
            raise InputError(path, "is a directory, not a file")
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            raise InputError(path, f"cannot write: directory '{parent}' does not exist")
        self.partial_path = partial = path + ".partial"
        _refuse_overwriting_inputs(path, partial, inputs)
        delimited = self.fmt in ("csv", "tsv")
        delimiter = "," if self.fmt == "csv" else "\t"
        header: list[str] | None = None
        resuming = resume and os.path.exists(partial)
        origin = _origin(inputs, settings)
        if resuming:
            _check_resume_origin(partial, origin, strict=bool(inputs))
        if self.fmt in ("parquet", "xlsx"):
            self._layout = _Layout(track_types=self.fmt == "parquet")
        try:
            if resuming and delimited:
                self.rows_done, header = _recover_delimited(partial, delimiter)
            elif resuming:
                self.rows_done = _recover_jsonl(partial)
                if self._layout is not None:
                    for rec in _spooled(partial):
                        self._layout.observe(rec)
            if delimited:
                mode = "a" if header is not None else "w"
                self._text = open(partial, mode, encoding="utf-8", errors="backslashreplace", newline="")  # noqa: SIM115
                if header is None and self.fmt == "csv":
                    self._text.write("\ufeff")
                self._csv = csv.writer(self._text, delimiter=delimiter, lineterminator="\n")
            else:
                self._bin = open(partial, "ab" if resuming else "wb")  # noqa: SIM115
            if not resuming:
                _write_origin(partial, origin)
        except OSError as e:
            raise InputError(path, f"cannot write {partial}: {e.strerror or e}") from None
        if delimited:
            if header is not None:
                self._flat = _Flattener(header)
            else:
                self._layout = _Layout()
                if template is not None:
                    self._layout.observe(template)

    # -- writing

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (flushed to the OS every 1000 records, so a crash loses little)."""
        self._write_one(record)
        self._since_flush += 1
        if self._stdout or self._since_flush >= 1000:
            self._flush()

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append a batch of records, then flush (stdout consumers see each batch as it is done)."""
        for record in records:
            self._write_one(record)
        self._flush()

    def _write_one(self, record: Mapping[str, Any]) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if not isinstance(record, Mapping):
            raise TypeError(f"records must be dicts, got {type(record).__name__}")
        if self.fmt == "xlsx" and self.rows_done + self._written >= _XLSX_MAX_ROWS:
            raise InputError(
                self.path, f"an xlsx sheet holds at most {_XLSX_MAX_ROWS:,} rows; write csv or parquet"
            )
        if self._text is not None:
            if self._flat is None:
                rec = dict(record)
                self._pending.append(rec)
                assert self._layout is not None
                self._layout.observe(rec)
                if self._layout.settled() or len(self._pending) >= _HEADER_BUFFER:
                    self._start_table()
            else:
                self._flat.check(record)
                self._csv.writerow([_text_cell(v) for v in self._flat.values(record)])
        else:
            data = (_dumps(record) + "\n").encode("utf-8", errors="backslashreplace")
            if self._layout is not None:
                self._layout.observe(record)
            if self._bin is not None:
                self._bin.write(data)
            else:  # a replaced sys.stdout without a binary buffer
                sys.stdout.write(data.decode("utf-8"))
        self._written += 1

    def _start_table(self) -> None:
        """Fix the csv/tsv columns from the records held back so far, write the header and those records."""
        assert self._layout is not None
        self._flat = _Flattener(self._layout.columns())
        self._csv.writerow(self._flat.columns)
        pending, self._pending = self._pending, []
        for rec in pending:
            self._flat.check(rec)
            self._csv.writerow([_text_cell(v) for v in self._flat.values(rec)])

    def _flush(self, sync: bool = False) -> None:
        self._since_flush = 0
        fh: IO[Any] | None = self._text if self._text is not None else self._bin
        if fh is None:
            sys.stdout.flush()
            return
        fh.flush()
        if sync and not self._stdout:
            os.fsync(fh.fileno())

    # -- finishing

    def close(self) -> None:
        """Finish: fsync, convert spooled formats, rename onto OUT, remove the partial. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stdout:
            self._flush()
            return
        assert self.partial_path is not None
        try:
            if self._text is not None and self._flat is None and self._pending:
                self._start_table()
            self._flush(sync=True)
        finally:
            self._close_handles()
        if self.fmt in ("csv", "tsv", "jsonl"):
            os.replace(self.partial_path, self.path)
        else:
            tmp = self.path + ".converting"
            try:
                if self.fmt == "json":
                    _spool_to_json(self.partial_path, tmp)
                elif self.fmt == "parquet":
                    assert self._layout is not None
                    _spool_to_parquet(self.partial_path, tmp, self._layout)
                else:
                    assert self._layout is not None
                    _spool_to_xlsx(self.partial_path, tmp, self._layout)
                os.replace(tmp, self.path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            os.remove(self.partial_path)
        if os.path.exists(self.partial_path + _ORIGIN_SUFFIX):
            os.remove(self.partial_path + _ORIGIN_SUFFIX)
        _fsync_dir(self.path)

    def abort(self) -> None:
        """Stop without finishing: the partial stays on disk (complete records only) for a resumed run."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._text is not None and self._flat is None and self._pending:
                self._start_table()
            self._flush(sync=True)
        except Exception:
            pass  # already failing: never mask the original error
        finally:
            self._close_handles()

    def _close_handles(self) -> None:
        for fh in (self._text, self._bin):
            if fh is not None and not self._stdout:
                fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ------------------------------------------------------------------------------------- output safety

_ORIGIN_SUFFIX = ".meta"  # OUT.partial.meta: what a partial output belongs to
_HEAD_HASH_BYTES = 1 << 20


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through a symlink, a hard link or `./`); False if either is absent."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_overwriting_inputs(path: str, partial: str, inputs: Sequence[str]) -> None:
    """An output (or the partial a resume appends to) that is one of the inputs would destroy it."""
    for src in inputs:
        if src == "-":
            continue
        for target in (path, partial):
            if same_file(src, target):
                raise InputError(target, f"is the input file {src}; writing there would replace the input "
                                         "with the scores: choose another output file")


def _input_identity(path: str) -> dict[str, Any]:
    """Path, size and a hash of the first MiB: enough to tell a resumed run's input from another file."""
    if path == "-":
        return {"path": "-"}
    with _open_binary(path) as f:
        head = hashlib.sha256(f.read(_HEAD_HASH_BYTES)).hexdigest()
        size = os.fstat(f.fileno()).st_size
    return {"path": os.path.abspath(path), "size": size, "head_sha256": head}


def _origin(inputs: Sequence[str], settings: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"inputs": [_input_identity(p) for p in inputs],
            "settings": json.loads(_dumps(dict(settings or {})))}


def _write_origin(partial: str, origin: Mapping[str, Any]) -> None:
    with open(partial + _ORIGIN_SUFFIX, "w", encoding="utf-8") as f:
        f.write(_dumps(origin) + "\n")


def _check_resume_origin(partial: str, origin: Mapping[str, Any], strict: bool) -> None:
    """Refuse to splice a partial written for another input or other options into this run's output.

    `strict`: a partial without a record of its origin (older emotag, copied by hand) is refused too.
    """
    fix = "delete it to start over, or resume with the input and options it was started with"
    try:
        with open(partial + _ORIGIN_SUFFIX, encoding="utf-8") as f:
            old = json.loads(f.read())
    except FileNotFoundError:
        if strict:
            raise InputError(partial, f"cannot resume: no record of the input it was written from; {fix}") from None
        return
    except (OSError, ValueError) as e:
        raise InputError(partial, f"cannot resume: its record {partial}{_ORIGIN_SUFFIX} is unreadable ({e}); "
                                  f"{fix}") from None
    why = _origin_mismatch(old, origin)
    if why:
        raise InputError(partial, f"cannot resume: {why}; {fix}")


def _origin_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Why a partial's recorded origin is not this run's, in words, or None when they match."""
    olds, news = old.get("inputs", []), new.get("inputs", [])
    if len(olds) != len(news):
        return f"it was written from {len(olds)} input files, not {len(news)}"
    for o, n in zip(olds, news, strict=True):
        if o.get("path") != n.get("path"):
            return f"it was written from {o.get('path')}, not {n.get('path')}"
        if o.get("size") != n.get("size"):
            return f"its input had {o.get('size')} bytes, {n.get('path')} has {n.get('size')} now"
        if o.get("head_sha256") != n.get("head_sha256"):
            return f"{n.get('path')} has changed since the partial was written"
    old_set, new_set = old.get("settings", {}), new.get("settings", {})
    for key in dict.fromkeys([*old_set, *new_set]):
        if old_set.get(key) != new_set.get(key):
            return f"it was written with {key} {old_set.get(key)!r}, not {new_set.get(key)!r}"
    return None


# --------------------------------------------------------------------------------------- spool conversion


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
