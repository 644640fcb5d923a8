"""Scored records as the profile fold reads them: which fields count, how lenient each one is, and why a
record is refused.

Kept apart from `state` (the decayed sums and their maths) because it changes for other reasons: a new
input layout (flat `emotions.<label>` columns from a spreadsheet, a CSV's "yes"/"no" `resolved`) touches
only this module, and a state change never has to re-read input rules. `extract` is the one gate: nothing
but the values it returns reaches a ProfileState, which is why raw text never can. `EmotionLabels` is the
label set a run folds over: the taxonomy's, or the one a custom-label model scored with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from emotag.labels import EMOTION_POLARITY, EMOTIONS, POLARITY
from emotag.profiles.timeutil import TimeParseError, format_time, parse_time, short_repr

_EARLIEST, _LATEST = 0.0, 7258118400.0  # 1970-01-01 .. 2200-01-01 UTC: record times outside are unit mix-ups
#: |polarity_score| below this counts as neutral when a record carries no `polarity` label.
NEUTRAL_BAND = 0.1

CHANNELS: tuple[str, ...] = ("review", "social", "support", "other")
_CHANNEL_INDEX = {c: i for i, c in enumerate(CHANNELS)}
_POLARITY_INDEX = {p: i for i, p in enumerate(POLARITY)}
_NEG_EMOTIONS = frozenset(e for e, p in EMOTION_POLARITY.items() if p == "negative")
SUPPORT = _CHANNEL_INDEX["support"]
_FALSE_STRINGS = frozenset({"false", "0", "no", "n", "f"})
_TRUE_STRINGS = frozenset({"true", "1", "yes", "y", "t"})


class RecordError(ValueError):
    """A record that is not skippable (no `error`) but cannot be folded; message names the problem."""


def _as_float(value: object, field: str) -> float:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RecordError(f"field {field!r} is not a number: {short_repr(value)}") from None
    except OverflowError:  # an int past float range (JSON allows any number of digits)
        raise RecordError(f"field {field!r} is out of range: {short_repr(value)}") from None
    if f != f or f in (math.inf, -math.inf):
        raise RecordError(f"field {field!r} is not finite: {short_repr(value)}")
    return f


def record_error(record: Mapping[str, Any]) -> str | None:
    """The record's `error` (why it could not be scored), or None when it has none.

    The one test every reader of scored records uses (profile folds, `ProfileState.fold`, conversation
    turns, the HTML report, aspect summaries), so that they agree on what "no error" looks like: a missing
    field, None, a blank string (an empty csv/xlsx cell) and a float NaN (pandas' missing cell:
    `pd.read_csv(...).to_dict("records")`). NaN is truthy, so a plain `if rec.get("error")` counted every
    record of such a table as an error row and folded nothing.
    Any other falsy value (False, 0) is no error either, as before; anything else is the error, as text.
    """
    err = record.get("error")
    if err is None or (isinstance(err, float) and err != err):
        return None
    if isinstance(err, str):
        return err if err.strip() else None
    return str(err) if err else None


def _label(record: Mapping[str, Any], field: str) -> str | None:
    """A label field (`emotion`, `polarity`, `end_emotion`): its string, or None when missing.

    An integer is the label it spells (csv/tsv cells come back typed: a model with labels 1..5 writes 5).
    Any other type (a list, an object, a float, a bool) is a damaged record, not an unknown label: refused here,
    where the value is read, because the lookups that follow hash it and a list cannot be hashed. An
    unknown *string* stays lenient (the probabilities or the score decide instead)."""
    value = record.get(field)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:  # NaN: a missing cell in a pandas-written table
        return None
    if isinstance(value, int) and not isinstance(value, bool):  # a digit label (1..5) read back from a CSV cell
        return str(value)
    raise RecordError(f"field {field!r} must be a label string, got {type(value).__name__} {short_repr(value)}")


def _as_bool(value: object) -> bool | None:
    """Parse `resolved` leniently (CSV gives strings); None when unknown."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if value != value:  # NaN from pandas
            return None
        return bool(value)
    if isinstance(value, str):
        s = value.strip().lower()
        if s in _TRUE_STRINGS:
            return True
        if s in _FALSE_STRINGS:
            return False
    return None


class LabelSetError(RecordError):
    """Records scored by models with different emotion label sets met in one run or store.

    Not a bad row but a bad mix: folding on would average 好评 with anger, so the run stops here even
    when bad rows are otherwise skipped."""


class EmotionLabels:
    """The emotion label set of one run or store: fixed by the first record that shows one, then enforced.

    Why it exists: a model trained with `emotag train --labels 好评,差评` scores `emotions` over its own
    labels, so the profile fold cannot assume the eight default emotions. A record whose `emotions` keys
    all belong to the default taxonomy keeps today's meaning (missing labels count 0); any other set of
    keys becomes the run's label set, in the record's key order. Once fixed (or given, by a store that
    already holds profiles), a record carrying a label outside the set raises `LabelSetError`.
    """

    __slots__ = ("names", "index", "_keys", "origin")

    def __init__(self, names: Sequence[str] | None = None, origin: str = "the records before it") -> None:
        self.names: tuple[str, ...] | None = None
        self.index: dict[str, int] = {}
        self._keys: frozenset[str] = frozenset()
        #: Where the set came from, for the mismatch message ("the store p.db").
        self.origin = origin
        if names is not None:
            self._fix(tuple(names))

    def _fix(self, names: tuple[str, ...]) -> None:
        if not names or len(set(names)) != len(names):
            raise RecordError(f"emotion labels must be distinct and non-empty, got {list(names)!r}")
        self.names = names
        self.index = {e: i for i, e in enumerate(names)}
        self._keys = frozenset(names)

    def resolve(self, keys: Iterable[str]) -> tuple[str, ...]:
        """The label set for a record with these `emotions` keys; fixes the set on first use."""
        if self.names is not None:
            return self.names
        keys = tuple(keys)
        self._fix(EMOTIONS if set(keys) <= _DEFAULT_KEYS else keys)
        return self.names  # type: ignore[return-value]

    def check(self, keys: Iterable[str]) -> None:
        """Refuse `emotions` keys outside the fixed set (a record from another model)."""
        extra = [k for k in keys if k not in self._keys]
        if extra:
            raise LabelSetError(
                f"field 'emotions' has labels {', '.join(map(str, extra))} that are not among the emotion labels "
                f"of {self.origin} ({', '.join(self.names or ())}): records scored by different models "
                "cannot share a profile; profile each model's output separately (its own --store)"
            )

    def vector(self, record: Mapping[str, Any]) -> list[float]:
        """The record's emotion probabilities over the label set, validated and summing to 1."""
        em = record.get("emotions")
        if isinstance(em, str):
            try:
                em = json.loads(em)
            except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                raise RecordError(f"field 'emotions' is not a JSON object: {em[:60]!r}") from None
        if isinstance(em, Mapping):
            if not (em.keys() <= self._keys):
                self.resolve(em)
                self.check(em)
            get = em.get
            try:
                vec = [float(get(lab, 0.0) or 0.0) for lab in self.names]  # type: ignore[union-attr]
            except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float range
                raise RecordError(f"field 'emotions' holds a non-number: {short_repr(dict(em))}") from None
        elif em is None:
            return self._flat_or_top(record)
        else:
            raise RecordError(f"field 'emotions' must be an object of probabilities, got {type(em).__name__}")
        return _normalised(vec)

    def _flat_or_top(self, record: Mapping[str, Any]) -> list[float]:
        """Flat columns (`emotions.anger`, as table exporters write them), else a one-hot of `emotion`."""
        flat = {k[9:]: v for k, v in record.items() if isinstance(k, str) and k.startswith("emotions.")}
        if flat:
            self.resolve(flat)
            self.check(flat)
            names = self.names or ()
            return _normalised([_as_float(flat.get(lab, 0.0) or 0.0, "emotions." + lab) for lab in names])
        top = _label(record, "emotion")
        if self.names is None and top in _DEFAULT_KEYS:
            self.resolve((top,))
        if top not in self.index:
            raise RecordError("record has neither 'emotions' probabilities nor a known 'emotion'")
        vec = [0.0] * len(self.index)
        vec[self.index[top]] = 1.0  # type: ignore[index]
        return vec


_DEFAULT_KEYS = frozenset(EMOTIONS)


def _normalised(vec: list[float]) -> list[float]:
    if min(vec) < -1e-6:  # inf and NaN are caught by the sum check below
        raise RecordError(f"'emotions' probabilities must be finite and >= 0, got {vec!r}")
    s = sum(vec)
    if not (s > 0.0) or s == math.inf:
        raise RecordError(f"'emotions' probabilities must be finite and sum to 1, got sum {s!r}")
    if abs(s - 1.0) > 1e-6:
        # Rounded exports (e.g. 4 decimals in CSV) drift from 1; renormalise rather than bias the mean.
        inv = 1.0 / s
        vec = [v * inv for v in vec]
    return vec


#: What `extract` returns and `ProfileState.add` takes:
#: (t, y, emotions, top_idx, pol_idx, intensity_or_None, channel_idx, unresolved_negative, product).
Extracted = tuple[float, float, list[float], int, int, float | None, int, bool, str | None]


def extract(record: Mapping[str, Any], time_col: str = "time", labels: EmotionLabels | None = None) -> Extracted:
    """Pull the values the fold needs out of one record, validating them.

    `labels` is the run's emotion label set (see `EmotionLabels`); a fold passes one object for all its
    records, so they must agree. Without it, the record's own labels are taken as they come.

    Returns ``(t, y, emotions, top_idx, pol_idx, intensity_or_None, channel_idx, unresolved_neg, product)``.
    Any raw ``text`` field is ignored by construction: nothing but these values reaches the state.
    """
    try:
        t = parse_time(record.get(time_col))
    except TimeParseError as exc:
        raise RecordError(f"field {time_col!r}: {exc}") from None
    if not (_EARLIEST <= t <= _LATEST):  # a unit mix-up; stored, it would break every later export
        raise RecordError(f"field {time_col!r}: {format_time(t) if -1e11 < t < 2.5e11 else t!r} is not a "
                          "plausible record time (1970-2199)")
    ys = record.get("polarity_score")
    if ys is None:
        raise RecordError("field 'polarity_score' is empty: profiles need a polarity, and a model trained "
                          "without a polarity head (custom labels on a plain encoder) gives none")
    y = ys if type(ys) is float else _as_float(ys, "polarity_score")
    if y != y or not (-1.000001 <= y <= 1.000001):
        raise RecordError(f"field 'polarity_score' must be in [-1, 1], got {short_repr(ys)}")
    if labels is None:
        labels = EmotionLabels()
    emotion, polarity = _label(record, "emotion"), _label(record, "polarity")
    vec = labels.vector(record)
    top = labels.index.get(emotion)  # type: ignore[arg-type]
    if top is None:
        top = max(range(len(vec)), key=vec.__getitem__)
    pol = _POLARITY_INDEX.get(polarity)  # type: ignore[arg-type]
    if pol is None:
        pol = 0 if y < -NEUTRAL_BAND else (2 if y > NEUTRAL_BAND else 1)
    inten = record.get("intensity")
    if inten is not None:
        if type(inten) is not float:
            inten = None if inten == "" else _as_float(inten, "intensity")
        elif inten != inten:  # NaN: a missing cell in a pandas-written table
            inten = None
        if inten is not None and not (-1e-6 <= inten <= 1.000001):  # also rejects inf
            raise RecordError(f"field 'intensity' must be in [0, 1], got {short_repr(record.get('intensity'))}")
    ch = record.get("channel")
    chi = _CHANNEL_INDEX.get(ch, 3) if isinstance(ch, str) else 3
    end = _label(record, "end_emotion")
    flag = False
    # not known to be resolved: false, or null (one customer turn cannot show a change, SPEC §3), so the
    # commonest complaint, one angry message, still counts as an unresolved negative contact
    if chi == SUPPORT and _as_bool(record.get("resolved")) is not True:
        # negative polarity as the record's polarity says it (the ±band around 0 is neutral): a satisfaction
        # of -0.005 is a neutral contact in polarity.*, so not an unresolved negative one either
        flag = pol == 0 or end in _NEG_EMOTIONS
    prod = record.get("product")
    if prod is not None:
        if isinstance(prod, float):
            prod = None if prod != prod else (str(int(prod)) if prod.is_integer() else str(prod))
        else:
            prod = str(prod).strip() or None
    return t, y, vec, top, pol, inten, chi, flag, prod
