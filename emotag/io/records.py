"""Record views over the readers: whole records as dicts, for files emotag wrote and files people wrote.

`read_records` (emotag's own output: csv cells get their types back, dotted columns nest again at every
depth, so a profile export reads back as the rows it was written from) raises on
damage, since machine-written files should not have any; the text view (`emotag eval`, `train`,
conversations) keeps csv cells as the words they are, and the lenient JSON view turns a broken line into an
`UnreadableRecord` in its place so that every input record still gets its output record.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from emotag.io.detect import InputError, _json_type, _open_binary, _open_lines
from emotag.io.readers import _BATCH, _json_items, _open_parquet, _xlsx_sheet

_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)")


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


def _column_path(name: str, present: set[str]) -> tuple[str, ...]:
    """Where a flat column goes in its record: `channels.review.count` -> ('channels', 'review', 'count').

    Writers flatten at every depth (`emotag profile` exports) or one level (`emotag score`), so every dot
    is a level, except below the first level where it sits between two digits: a decimal point in a label
    such as `emotions.4.5`, not two levels. An empty segment never splits (`a..b` -> ('a', '.b')). A name
    with a level that is itself a column (`a` beside `a.b.c`, or `a.b` beside `a.b.c`) is not split at
    all: no writer flattened a value and its parts side by side, so the dots are part of the name, and the
    record keeps it as the one flat key it was rather than half-nested ({'a.b': {'c': ...}}).
    """
    parts: list[str] = []
    start = 0
    pos = name.find(".")
    while pos != -1:
        segment, rest = name[start:pos], name[pos + 1 :]
        decimal = bool(parts) and name[pos - 1].isdigit() and rest[:1].isdigit()
        if segment and rest and not decimal:
            if name[:pos] in present:
                return (name,)
            parts.append(segment)
            start = pos + 1
        pos = name.find(".", pos + 1)
    parts.append(name[start:])
    return tuple(parts)


def _unflattener(names: Sequence[str]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """Builds records from flat rows, turning dotted columns back into nested dicts at every depth
    (`a.b` -> {'a': {'b': ...}}, `a.b.c` -> {'a': {'b': {'c': ...}}}; see `_column_path`), so that what a
    writer flattened, at one level or at all of them, reads back as the record it was.

    A top-level group whose cells are all empty becomes None: that is how a null nested value (an error
    record's `emotions`) was flattened.
    """
    present = set(names)
    paths = [_column_path(n, present) for n in names]
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        if len(path) > 1:
            groups.setdefault(path[0], []).append(i)
    group_cells = list(groups.items())

    def build(values: Sequence[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, v in zip(paths, values, strict=True):
            if len(path) == 1:
                out[path[0]] = v
            elif len(path) == 2:
                out.setdefault(path[0], {})[path[1]] = v
            else:
                node = out
                for seg in path[:-1]:
                    node = node.setdefault(seg, {})
                node[path[-1]] = v
        for g, cells in group_cells:
            if all(values[i] is None for i in cells):
                out[g] = None
        return out

    return build


@dataclass
class UnreadableRecord:
    """An input record that could not be parsed; it still gets its output record (with `error`)."""

    index: int
    error: str


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
    """Records of a parquet file. Parquet has types, so nothing is guessed: a text column comes back as
    text even when a cell looks like JSON ('{"味道":"好"}' typed by a person is words, not a map), and only
    the columns the writer marked as JSON (`emotag.encoding: json`, set for dicts and lists) are decoded."""
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
    with _xlsx_sheet(path) as rows:
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
