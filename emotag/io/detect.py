"""Format and encoding detection: which format a path is, which encoding a text file is, one line at a time.

* The extension decides the format, not the content, so a mistake (``data.xlsy``) is reported at once
  instead of being half-parsed as something else. Standard input is sniffed: JSON Lines when its first line
  is a JSON object, else one text per line.
* Chinese files come in UTF-8, UTF-8 with BOM (Excel) and GBK/GB18030 (Excel on Chinese Windows); the
  encoding is sniffed, not assumed, and lines are decoded one at a time, so an undecodable byte spoils one
  row, not the run (and a UTF-8 row appended to a GBK file is read as UTF-8).
* `InputError` is the one-line user error every reader and the writer raise.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from itertools import chain
from typing import IO, Any

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
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_NEWLINES = re.compile(r"\s*[\r\n]+\s*")


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


def warn_user(warnings: list[str], path: str, problem: str, row: int | None = None) -> None:
    """One `emotag: warning: FILE[, row N]: problem` line on stderr, also kept in `warnings` for callers that
    are not a terminal: what the reader and the writer say when a run succeeds but something needs a look."""
    line = f"emotag: warning: {InputError(path, problem, row)}"
    warnings.append(line)
    print(line, file=sys.stderr, flush=True)


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
    if os.path.isdir(path):
        raise InputError(path, "is a directory; name a file")
    expected = ", ".join(FORMATS) + "; txt as input"
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
        # Nor must a few GBK rows appended to a UTF-8 file: each of them damages every character it holds,
        # so a handful of rows crosses 10% of characters while the lines still say UTF-8 by a majority.
        if _mostly_utf8_lines(sample, at_eof):
            return "utf-8"
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


def _mostly_utf8_lines(sample: bytes, at_eof: bool) -> bool:
    """Whether more of the sample's non-ASCII lines are valid UTF-8 than not (the last, possibly cut line
    left out unless the sample reaches the end of the file)."""
    lines = sample.split(b"\n")
    if not at_eof:
        lines = lines[:-1]
    valid = invalid = 0
    for line in lines:
        if line.isascii():
            continue
        if _decodes(line, "utf-8"):
            valid += 1
        else:
            invalid += 1
    return valid > invalid


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
    name = codecs.lookup(encoding).name
    other = _OTHER_CHINESE_ENCODING.get(name)
    utf8_first = name in _GB_ENCODINGS
    for raw in fb:
        if utf8_first and not raw.isascii():
            text = _plainly_utf8(raw)
            if text is not None:  # a UTF-8 row in a GBK file: almost any bytes are GB18030, so test UTF-8 first
                yield text
                continue
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


_GB_ENCODINGS = frozenset({"gb18030", "gbk", "gb2312"})  # codecs.lookup() names
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _plainly_utf8(raw: bytes) -> str | None:
    """The line as UTF-8 when it plainly is UTF-8, else None (then it is read in the GB encoding).

    Valid UTF-8 with a character from U+0800 up (every Chinese character, CJK punctuation, emoji) almost
    never happens by chance in GBK. A GBK line that happens to be valid UTF-8 is nearly always a short one
    whose byte pairs read as two-byte UTF-8 (U+0080-U+07FF: Latin, Greek, Cyrillic, Arabic), e.g. one in
    seven single-character texts; those stay GBK.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if any(c >= "\u0800" for c in text) else None


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


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True

