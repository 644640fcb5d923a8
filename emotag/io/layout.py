"""How records become flat rows and JSON: the column layout of csv/tsv/parquet/xlsx and the cell encoding.

One level of dict values is spread over `key.sub` columns, in first-seen order; floats are written with
repr so they read back exactly; values JSON cannot hold (numpy scalars, dates, Decimals) are converted
rather than crashing a run at row 900,000.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast


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


def _number(v: Any) -> bool:
    """A template placeholder that says its column's type: a number or bool (not "", which says nothing)."""
    import numbers

    return isinstance(v, numbers.Number) and not isinstance(v, (complex, Decimal))


class _Layout:
    """Column layout of flat outputs, learnt from records: one level of dict values becomes `key.sub`.

    Keys come in first-seen order (the first record's order). A key that only ever holds None cannot be
    told apart from a dict that has not shown up yet, hence `settled()`; a key holding both dicts and
    scalars is not flattened (its dicts are written as JSON): so a template that shows a key as "" keeps
    it one column for good, and so do `whole` keys (open-ended maps such as a profile's `products`, whose
    keys would make a column each). A dict or list kept in one column is written as JSON, and parquet
    marks that column as JSON, so it reads back as the value and a text that merely looks like JSON stays
    text. With `track_types`, the value types of every column are recorded too, so parquet gets a schema
    without another pass over the data.
    """

    def __init__(self, track_types: bool = False, whole: Iterable[Any] = ()) -> None:
        self.keys: dict[Any, None] = {}
        self.subkeys: dict[Any, dict[Any, None]] = {}
        self.whole = frozenset(whole)
        self.scalar: set[Any] = set(self.whole)
        self.only_none: set[Any] = set()
        self.types: dict[Any, set[type]] | None = {} if track_types else None
        # Records of a run share a handful of shapes (scored, failed); one seen before teaches nothing new.
        self._shapes: set[Any] = set()

    def observe(self, record: Mapping[Any, Any], value_types: bool = True) -> None:
        """Learn the columns of `record` (and, when tracking types, its value types).

        `value_types=False` is for a template: its "" placeholders (an id, a kept input column) say nothing
        about the types the data will have, and counting them would turn an int column into text; but a
        number placeholder (the 0.0 of every `emotions` label) does say the column's type, and is counted,
        so that an output with no scored row (every row an error, or none at all) still types those
        columns as the scored outputs it is merged with do, not as text. The template's shape is not
        remembered, so a real record of the same shape still has its types counted.
        """
        values = record.values()
        shape = (
            tuple(record),
            tuple(map(type, values)),
            tuple((tuple(v), tuple(map(type, v.values()))) for v in values if isinstance(v, dict)),
        )
        if shape in self._shapes:
            return
        types = self.types
        if len(self._shapes) < 10_000 and (value_types or self.types is None):
            self._shapes.add(shape)
        for k, v in record.items():
            if k not in self.keys:
                self.keys[k] = None
                if k not in self.whole:  # one column whatever it will hold: nothing to wait for
                    self.only_none.add(k)
            if v is None:
                continue
            self.only_none.discard(k)
            if isinstance(v, dict):
                subs = self.subkeys.setdefault(k, {})
                for s, sv in v.items():
                    if s not in subs:
                        subs[s] = None
                    if types is not None and sv is not None and (value_types or _number(sv)):
                        types.setdefault((k, s), set()).add(type(sv))
            else:
                self.scalar.add(k)
            if types is not None and (value_types or _number(v)):
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

