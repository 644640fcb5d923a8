"""Pseudonymous user ids and privacy-preserving cohort counts.

Profiles are personal data about identifiable people. Two rules keep what we persist defensible:

* User ids are replaced by keyed HMAC-SHA256 digests before anything is written. A plain hash of a phone
  number or account id can be reversed by hashing every candidate; a keyed hash cannot without the key,
  yet stays stable across runs (same key -> same pseudonym), so profiles still accumulate. The key comes
  from ``EMOTAG_PSEUDONYM_KEY`` or a key file; without one we refuse to persist rather than silently
  storing raw ids, unless the caller explicitly passes ``allow_raw_ids=True``.
* Aggregates handed to other teams (counts per tag or segment) can get Laplace noise (differential
  privacy, epsilon) and small cells (< k users) are suppressed, so a count cannot single out a person.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotag.labels import EMOTION_ZH, EMOTIONS, POLARITY, POLARITY_ZH

KEY_ENV = "EMOTAG_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
_FINGERPRINT_MSG = b"emotag/profiles/key-fingerprint/v1"


class PseudonymKeyError(RuntimeError):
    """No usable pseudonymisation key, and raw ids were not explicitly allowed."""


class Pseudonymizer:
    """Maps raw user ids to stable keyed digests (hex HMAC-SHA256)."""

    __slots__ = ("_key", "fingerprint")

    def __init__(self, key: bytes | str) -> None:
        kb = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if len(kb) < MIN_KEY_BYTES:
            raise PseudonymKeyError(
                f"pseudonymisation key is too short ({len(kb)} bytes); use at least {MIN_KEY_BYTES} random bytes, "
                "e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        self._key = kb
        #: Identifies the key (not reversible to it) so a store can refuse ids made with another key.
        self.fingerprint = hmac.new(kb, _FINGERPRINT_MSG, hashlib.sha256).hexdigest()[:16]

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never print the key
        return f"Pseudonymizer(fingerprint={self.fingerprint})"

    @classmethod
    def from_key_file(cls, path: str | Path) -> Pseudonymizer:
        """Key = the file's bytes as `key_material` reads them (trailing whitespace/newlines stripped)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise PseudonymKeyError(
                f"{path}: cannot read pseudonymisation key file: {exc.strerror or exc}"
            ) from None
        return cls(key_material(data, f"{path}: pseudonymisation key file"))

    @classmethod
    def from_env(cls, value: str) -> Pseudonymizer:
        """Key = the value of ``$EMOTAG_PSEUDONYM_KEY`` as `key_material` reads it."""
        return cls(key_material(value, f"{KEY_ENV}"))


def key_material(raw: bytes | str, source: str) -> bytes:
    """The key bytes of a key file or of ``$EMOTAG_PSEUDONYM_KEY``: UTF-8, trailing whitespace stripped.

    One rule for both sources, because the same secret reaches emotag either way: a key file written by
    ``print(secrets.token_hex(32))`` or an orchestrator's secret mount ends in a newline, and the same secret
    exposed as an environment variable may keep it. Read differently, one secret would give two sets of
    pseudonyms, and a store built one way would refuse runs made the other way (another key fingerprint).
    `source` names where the key came from in the error for an empty key. (`Pseudonymizer(key)` itself
    takes its bytes as given: a random binary key may end in a whitespace byte.)
    """
    data = (raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)).rstrip()
    if not data:
        raise PseudonymKeyError(f"{source} is empty (or only whitespace)")
    return data


def resolve_pseudonymizer(
    key_file: str | Path | None = None, allow_raw_ids: bool = False
) -> Pseudonymizer | None:
    """The pseudonymiser to use: key file if given, else ``$EMOTAG_PSEUDONYM_KEY``.

    Both are read by `key_material` (trailing whitespace stripped), so one secret gives one pseudonym
    whichever way it is mounted. An unset or empty variable means no key.
    Returns None (keep raw ids) only when no key is available and `allow_raw_ids` is True; a key, when
    present, is always used. Raises PseudonymKeyError otherwise, saying how to provide a key.
    """
    if key_file is not None:
        return Pseudonymizer.from_key_file(key_file)
    env = os.environ.get(KEY_ENV)
    if env:
        return Pseudonymizer.from_env(env)
    if allow_raw_ids:
        return None
    raise PseudonymKeyError(
        f"no pseudonymisation key: set {KEY_ENV} or pass a key file (--key-file); profiles never persist "
        "raw user ids unless explicitly allowed (--allow-raw-ids; allow_raw_ids=True in Python)"
    )


def normalize_user_id(value: object) -> str | None:
    """Canonical string form of a user id (so 123, 123.0 and '123' are one user); None if missing."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
        return s or None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    s = str(value).strip()
    return s or None


# -- cohort exports ------------------------------------------------------------------------------------

SEGMENTS = ("tag", "top_emotion", "polarity", "channel")


def _polarity_band(summary: Mapping[str, Any]) -> str | None:
    mean = (summary.get("polarity") or {}).get("mean")
    if mean is None:
        return None
    return "negative" if mean < -0.1 else ("positive" if mean > 0.1 else "neutral")


def _dominant_channel(summary: Mapping[str, Any]) -> str | None:
    chans = summary.get("channels") or {}
    best = max(chans.items(), key=lambda kv: (kv[1].get("count", 0), kv[0]), default=None)
    return best[0] if best and best[1].get("count", 0) > 0 else None


@dataclass
class _Segment:
    """How users fall into cells for one `by`: the cell function, the cell domain, display names."""

    name: str
    cell_of: Callable[[Mapping[str, Any]], str | Iterable[str] | None]
    domain: list[str] | None
    displays: dict[str, str]
    multi: bool = False  # a user may fall in several cells (tags)
    tags: bool = False  # cells are tags: their display names are learnt from the summaries


def _segment(by: str | Callable[[Mapping[str, Any]], Any], rules: Any) -> _Segment:
    """The built-in segments (tag, top emotion, polarity band, dominant channel) or a custom function."""
    if callable(by):
        return _Segment(getattr(by, "__name__", "custom"), by, None, {})
    if by == "tag":
        domain, disp = None, {}
        if rules is not None:
            domain = list(rules.tags)
            disp = {r.tag: r.display for r in rules.rules}
        return _Segment(by, lambda s: [t["tag"] for t in s.get("tags") or ()], domain, disp, multi=True, tags=True)
    if by == "top_emotion":
        # the domain is the profiles' own labels (a custom-label model's too), read off the first summary
        return _Segment(by, lambda s: s.get("top_emotion"), None, dict(EMOTION_ZH))
    if by == "polarity":
        return _Segment(by, _polarity_band, list(POLARITY), dict(POLARITY_ZH))
    if by == "channel":
        from emotag.profiles.records import CHANNELS

        return _Segment(by, _dominant_channel, list(CHANNELS), {})
    raise ValueError(f"unknown segment {by!r}; use one of {SEGMENTS} or a function")


def _count(summaries: Iterable[Mapping[str, Any]], seg: _Segment) -> tuple[Counter[str], list[str]]:
    """Users per cell, and the emotion labels of the profiles (empty when there were none)."""
    counts: Counter[str] = Counter()
    labels: list[str] = []
    for s in summaries:
        if not labels and isinstance(s.get("emotions"), Mapping):
            labels = list(s["emotions"])
        if seg.tags:
            for t in s.get("tags") or ():
                seg.displays.setdefault(t["tag"], t.get("display", t["tag"]))
        cell = seg.cell_of(s)
        if cell is None:
            continue
        if isinstance(cell, str):
            counts[cell] += 1
        else:
            uniq = set(cell)
            seg.multi = seg.multi or len(uniq) > 1
            counts.update(uniq)
    return counts, labels


def cohort_counts(
    summaries: Iterable[Mapping[str, Any]],
    by: str | Callable[[Mapping[str, Any]], str | Iterable[str] | None] = "tag",
    *,
    epsilon: float | None = None,
    k: int = 10,
    seed: int | None = None,
    cells: Iterable[str] | None = None,
    sensitivity: float | None = None,
    displays: Mapping[str, str] | None = None,
    rules: Any = None,
) -> list[dict[str, Any]]:
    """Users per cell (tag, top emotion, polarity band, dominant channel, or a custom segment function).

    * `epsilon`: add Laplace(sensitivity / epsilon) noise to each count (numpy Generator, `seed` for
      reproducibility), then round and clip at 0. `sensitivity` defaults to the number of cells a single
      user can fall in: 1 for partitions, the number of known tags for ``by="tag"``.
    * `k`: cells whose (noised, if noise is on) count is below k are suppressed (count None), so small
      groups cannot be singled out. Suppression is decided on the noised count so that it does not leak
      the true count.
    * `cells`: the full list of cells to report. Reporting a fixed domain (e.g. all rule tags) instead of
      only the observed ones avoids leaking which cells are non-empty; defaults to the known domain for
      the built-in segments (all tags of `rules` for ``by="tag"``, when given; the profiles' emotion labels
      for ``by="top_emotion"``) and to the observed cells.
    * `rules`: a RuleSet, for ``by="tag"``: supplies the cell domain and the Chinese display names.
    """
    seg = _segment(by, rules)
    seg.displays.update(displays or {})
    counts, labels = _count(summaries, seg)
    if seg.name == "top_emotion" and not callable(by):
        seg.domain = labels or list(EMOTIONS)
    if cells is not None:
        domain = sorted(set(cells))
    elif seg.domain is None:
        domain = sorted(counts)
    else:
        domain = sorted(set(seg.domain) | set(counts))
    noise = None
    if epsilon is not None:
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        if sensitivity is None:
            sensitivity = float(max(1, len(domain))) if seg.multi else 1.0
        import numpy as np

        noise = np.random.default_rng(seed).laplace(0.0, sensitivity / epsilon, size=len(domain))
    out = []
    for i, cell in enumerate(domain):
        c = counts.get(cell, 0)
        if noise is not None:
            c = max(0, int(round(c + float(noise[i]))))
        suppressed = c < k
        out.append({"segment": seg.name, "cell": cell, "display": seg.displays.get(cell, cell),
                    "count": None if suppressed else c, "suppressed": suppressed, "noised": noise is not None})
    return out
