"""Per-user profile state: exponentially time-decayed, mergeable sufficient statistics.

Why this shape
--------------
Profiles are built from streams that arrive in pieces (daily files, shards on several machines, re-runs
after a crash). If the per-user state is a *commutative monoid* -- an empty state, a fold of one record,
and an associative, commutative ``merge`` -- then any split of the data, processed in any order, gives
the same profile as one pass over all of it. Every quantity here is therefore a weighted sum.

Decay: a record at time ``t`` carries weight ``2 ** ((t - ref) / half_life)`` relative to the state's
reference time ``ref``. Means (emotion distribution, polarity mean, volatility) are ratios of sums, so they
do not depend on ``ref`` at all; only absolute decayed weights ("effective evidence") do, and those are
rescaled to any ``now`` on demand. Merging two states rescales both to a common reference
(``2 ** (-dt / half_life)``) and adds. The moments used for the trend (sums of w*x, w*x^2, w*x*y with
``x`` = days relative to ``ref``) are shifted along with the rescale, so they stay well-conditioned.

``ref`` moves lazily while folding (only when a record is more than ``REBASE_HALF_LIVES`` half-lives newer
than ``ref``), so a time-sorted stream does not pay a rescale on every record. ``to_dict``/``canonical``
rebase to the newest record time, so two states built from the same records serialise to the same numbers
(up to float rounding) whatever order or split produced them.

Counts (evidence, per-channel counts) are exact integers and are never decayed: minimum-evidence rules
need "how many records did we actually see".

Emotion labels: a state sums probabilities over one label set, the default taxonomy or the labels of a
custom-label model (`emotag train --labels 好评,差评`), and carries it (`labels`, serialised too). States
over different sets never merge: an average of 好评 and anger means nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from emotag.labels import EMOTIONS, POLARITY
from emotag.profiles.records import (
    CHANNELS,
    NEUTRAL_BAND,
    SUPPORT,
    EmotionLabels,
    RecordError,
    extract,
    record_error,
)
from emotag.profiles.timeutil import format_time

__all__ = ["CHANNELS", "METRIC_NAMES", "NEUTRAL_BAND", "ProfileState", "RecordError", "extract", "merge_profiles",
           "metric_names"]

DAY = 86400.0
LN2 = math.log(2.0)
STATE_VERSION = 1
DEFAULT_HALF_LIFE_DAYS = 30.0
DEFAULT_RECENT_HALF_LIFE_DAYS = 7.0
#: Re-anchor ``ref`` when a record is this many half-lives newer than it (weights stay <= 2**8).
REBASE_HALF_LIVES = 8.0
#: Trend shrinkage: slope = cov(t, y) / (var(t) + TREND_RIDGE_DAYS2). A slope per 30 days read off a
#: burst of records within a day is noise (three messages going 0.6, 0, -0.6 in an afternoon read -2.0
#: with a 1-day ridge, a full churn-risk score); 25 days² (records ~5 days apart) shrinks that to ~0.1,
#: and a real two-month decline by about 14%.
TREND_RIDGE_DAYS2 = 25.0
#: Trend is reported as polarity change per this many days.
TREND_UNIT_DAYS = 30.0


# Names of the scalar sums, in serialisation order.
_SUMS = ("w", "x", "xx", "y", "xy", "yy", "wi", "i", "wr", "yr")


class ProfileState:
    """Mergeable decayed statistics for one user. See the module docstring for the design."""

    __slots__ = (
        "half_life_days",
        "recent_half_life_days",
        "labels",
        "_k",
        "_kr",
        "_rebase",
        "ref",
        "n",
        "first",
        "last",
        "last_polarity",
        "s",
        "emo",
        "top",
        "pol",
        "ch",
        "unres",
        "products",
    )

    def __init__(
        self,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
        recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
        labels: Sequence[str] = EMOTIONS,
    ) -> None:
        if not (half_life_days > 0 and recent_half_life_days > 0):
            raise ValueError("half-lives must be positive")
        #: The emotion labels `emo` and `top` are indexed by (the default taxonomy or a custom model's).
        self.labels: tuple[str, ...] = tuple(labels)
        self.half_life_days = float(half_life_days)
        self.recent_half_life_days = float(recent_half_life_days)
        self._k = LN2 / (self.half_life_days * DAY)
        self._kr = LN2 / (self.recent_half_life_days * DAY)
        # both weights (main and recent half-life) stay <= 2**REBASE_HALF_LIVES, whichever half-life is shorter
        self._rebase = REBASE_HALF_LIVES * min(self.half_life_days, self.recent_half_life_days) * DAY
        self.ref = 0.0
        self.n = 0
        self.first = math.inf
        self.last = -math.inf
        self.last_polarity = 0.0
        # w, w*x, w*x^2, w*y, w*x*y, w*y^2, w (records with intensity), w*intensity, wr, wr*y
        self.s = [0.0] * len(_SUMS)
        self.emo = [0.0] * len(self.labels)  # decayed sum of emotion probabilities
        self.top = [0.0] * len(self.labels)  # decayed weight of records whose top emotion is each label
        self.pol = [0.0] * 3  # decayed weight per polarity label
        self.ch = [0.0] * (3 * len(CHANNELS))  # per channel: count, w, w*y
        self.unres = [0.0, 0.0]  # unresolved negative support contacts: count, w
        self.products: dict[str, list[float]] = {}  # product -> [count, w, w*y]

    # -- folding -------------------------------------------------------------------------------------

    def fold(self, record: Mapping[str, Any], time_col: str = "time") -> bool:
        """Fold one scored record; False (state untouched) when the record carries an `error`."""
        if record_error(record) is not None:
            return False
        self.add(*extract(record, time_col, EmotionLabels(self.labels, "this profile")))
        return True

    def add(
        self,
        t: float,
        y: float,
        emotions: list[float],
        top: int,
        pol: int,
        intensity: float | None = None,
        channel: int = 3,
        unresolved_negative: bool = False,
        product: str | None = None,
    ) -> None:
        """Fold pre-extracted values (the hot path; see `extract`)."""
        if self.n == 0:
            self.ref = t
        d = t - self.ref
        if d > self._rebase:
            self._rebase_to(t)
            d = 0.0
        w = math.exp(d * self._k)
        wr = math.exp(d * self._kr)
        x = d / DAY
        wx = w * x
        wy = w * y
        s = self.s
        s[0] += w
        s[1] += wx
        s[2] += wx * x
        s[3] += wy
        s[4] += wx * y
        s[5] += wy * y
        if intensity is not None:
            s[6] += w
            s[7] += w * intensity
        s[8] += wr
        s[9] += wr * y
        e = self.emo
        if len(e) == 8:  # the default taxonomy, unrolled: this is the fold's hot path
            e0, e1, e2, e3, e4, e5, e6, e7 = emotions
            e[0] += w * e0
            e[1] += w * e1
            e[2] += w * e2
            e[3] += w * e3
            e[4] += w * e4
            e[5] += w * e5
            e[6] += w * e6
            e[7] += w * e7
        else:
            for i, v in enumerate(emotions):
                e[i] += w * v
        self.top[top] += w
        self.pol[pol] += w
        c = self.ch
        j = 3 * channel
        c[j] += 1.0
        c[j + 1] += w
        c[j + 2] += wy
        if unresolved_negative:
            self.unres[0] += 1.0
            self.unres[1] += w
        if product is not None:
            p = self.products.get(product)
            if p is None:
                self.products[product] = [1.0, w, wy]
            else:
                p[0] += 1.0
                p[1] += w
                p[2] += wy
        self.n += 1
        if t < self.first:
            self.first = t
        if t > self.last or (t == self.last and y > self.last_polarity):
            self.last = t
            self.last_polarity = y

    # -- rescaling and merging -----------------------------------------------------------------------

    def _rebase_to(self, new_ref: float) -> None:
        """Re-express every decayed sum relative to `new_ref` (multiply by 2^(-dt/H), shift moments)."""
        dt = new_ref - self.ref
        if dt == 0.0 or self.n == 0:
            self.ref = new_ref
            return
        f = math.exp(-dt * self._k)
        fr = math.exp(-dt * self._kr)
        D = dt / DAY
        s = self.s
        w, sx, sxx, sy, sxy = s[0], s[1], s[2], s[3], s[4]
        # x' = x - D for every record, then scale by f.
        s[0] = f * w
        s[1] = f * (sx - D * w)
        s[2] = f * (sxx - 2.0 * D * sx + D * D * w)
        s[3] = f * sy
        s[4] = f * (sxy - D * sy)
        s[5] *= f
        s[6] *= f
        s[7] *= f
        s[8] *= fr
        s[9] *= fr
        self.emo = [v * f for v in self.emo]
        self.top = [v * f for v in self.top]
        self.pol = [v * f for v in self.pol]
        c = self.ch
        for j in range(0, len(c), 3):
            c[j + 1] *= f
            c[j + 2] *= f
        self.unres[1] *= f
        for p in self.products.values():
            p[1] *= f
            p[2] *= f
        self.ref = new_ref

    def _check_compatible(self, other: ProfileState) -> None:
        if (self.half_life_days, self.recent_half_life_days) != (
            other.half_life_days,
            other.recent_half_life_days,
        ):
            raise ValueError(
                "cannot merge profile states with different half-lives "
                f"({self.half_life_days}/{self.recent_half_life_days} vs "
                f"{other.half_life_days}/{other.recent_half_life_days} days)"
            )
        if self.labels != other.labels:
            raise ValueError(
                f"cannot merge profile states over different emotion labels ({', '.join(self.labels)} vs "
                f"{', '.join(other.labels)}): records scored by different models"
            )

    def copy(self) -> ProfileState:
        """An independent copy (merge mutates its receiver)."""
        new = ProfileState(self.half_life_days, self.recent_half_life_days, self.labels)
        new.ref, new.n, new.first, new.last, new.last_polarity = (
            self.ref,
            self.n,
            self.first,
            self.last,
            self.last_polarity,
        )
        new.s = list(self.s)
        new.emo = list(self.emo)
        new.top = list(self.top)
        new.pol = list(self.pol)
        new.ch = list(self.ch)
        new.unres = list(self.unres)
        new.products = {k: list(v) for k, v in self.products.items()}
        return new

    def merge(self, other: ProfileState) -> ProfileState:
        """Add `other` into this state in place and return self.

        Associative and commutative up to float rounding: both sides are rebased to the newer of the two
        last-seen times before adding, so the result does not depend on either side's lazy ``ref``.
        """
        self._check_compatible(other)
        if other.n == 0:
            return self
        if self.n == 0:
            o = other.copy()
            for name in ProfileState.__slots__:
                setattr(self, name, getattr(o, name))
            self._rebase_to(self.last)
            return self
        target = max(self.last, other.last)
        self._rebase_to(target)
        o = other.copy() if other.ref != target else other
        if o is not other:
            o._rebase_to(target)
        self.s = [a + b for a, b in zip(self.s, o.s, strict=True)]
        self.emo = [a + b for a, b in zip(self.emo, o.emo, strict=True)]
        self.top = [a + b for a, b in zip(self.top, o.top, strict=True)]
        self.pol = [a + b for a, b in zip(self.pol, o.pol, strict=True)]
        self.ch = [a + b for a, b in zip(self.ch, o.ch, strict=True)]
        self.unres = [a + b for a, b in zip(self.unres, o.unres, strict=True)]
        for k, v in o.products.items():
            p = self.products.get(k)
            if p is None:
                self.products[k] = list(v)
            else:
                p[0] += v[0]
                p[1] += v[1]
                p[2] += v[2]
        self.n += o.n
        self.first = min(self.first, o.first)
        if o.last > self.last or (o.last == self.last and o.last_polarity > self.last_polarity):
            self.last = o.last
            self.last_polarity = o.last_polarity
        return self

    def canonical(self) -> ProfileState:
        """Rebase in place to the newest record time, the order-independent reference; returns self."""
        if self.n:
            self._rebase_to(self.last)
        return self

    # -- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (no pickle anywhere), canonicalised so equal data serialises equally."""
        st = self.copy().canonical()
        return {
            "v": STATE_VERSION,
            "half_life_days": st.half_life_days,
            "recent_half_life_days": st.recent_half_life_days,
            "labels": list(st.labels),
            "n": st.n,
            "ref": st.ref if st.n else None,
            "first": st.first if st.n else None,
            "last": st.last if st.n else None,
            "last_polarity": st.last_polarity,
            "sums": dict(zip(_SUMS, st.s, strict=True)),
            "emotions": dict(zip(st.labels, st.emo, strict=True)),
            "top": dict(zip(st.labels, st.top, strict=True)),
            "polarity": dict(zip(POLARITY, st.pol, strict=True)),
            "channels": {c: st.ch[3 * i : 3 * i + 3] for i, c in enumerate(CHANNELS)},
            "unresolved_negative": list(st.unres),
            "products": {k: list(v) for k, v in sorted(st.products.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileState:
        """Inverse of `to_dict`; tolerates labels added to or removed from the taxonomy (missing = 0).

        A state without `labels` (written before custom label sets) is over the default taxonomy.
        """
        if data.get("v") != STATE_VERSION:
            raise ValueError(
                f"unsupported profile state version {data.get('v')!r} (expected {STATE_VERSION})"
            )
        st = cls(data["half_life_days"], data["recent_half_life_days"], data.get("labels") or EMOTIONS)
        st.n = int(data["n"])
        if st.n:
            st.ref = float(data["ref"])
            st.first = float(data["first"])
            st.last = float(data["last"])
        st.last_polarity = float(data["last_polarity"])
        sums = data["sums"]
        st.s = [float(sums.get(k, 0.0)) for k in _SUMS]
        st.emo = [float(data["emotions"].get(e, 0.0)) for e in st.labels]
        st.top = [float(data["top"].get(e, 0.0)) for e in st.labels]
        st.pol = [float(data["polarity"].get(p, 0.0)) for p in POLARITY]
        ch = data["channels"]
        st.ch = [float(v) for c in CHANNELS for v in ch.get(c, (0.0, 0.0, 0.0))]
        st.unres = [float(v) for v in data["unresolved_negative"]]
        st.products = {k: [float(x) for x in v] for k, v in data["products"].items()}
        return st

    def to_json(self) -> str:
        """Compact JSON of `to_dict` (floats round-trip exactly through repr)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ProfileState:
        return cls.from_dict(json.loads(text))

    # -- derived metrics -----------------------------------------------------------------------------

    def metrics(self, now: float | None = None) -> dict[str, float | None]:
        """Flat metric namespace used by tag rules (see `METRIC_NAMES`); None where undefined.

        `now` (epoch seconds) only affects `evidence.decayed` and `days_since_last`; it defaults to the
        last-seen time so that results are reproducible. A `now` before the last record counts as the
        last record's time: evidence cannot be younger than zero days.
        """
        m: dict[str, float | None] = dict.fromkeys(metric_names(self.labels))
        m["evidence"] = float(self.n)
        if self.n == 0:
            m["evidence.decayed"] = 0.0
            return m
        if now is None or now < self.last:
            now = self.last
        s = self.s
        w = s[0]
        m["evidence.decayed"] = w * math.exp((self.ref - now) * self._k)
        m["days_since_last"] = (now - self.last) / DAY
        m["days_active"] = (self.last - self.first) / DAY
        if not (w > 0.0):
            # Everything decayed below float range: only counts remain meaningful.
            return m
        inv = 1.0 / w
        for i, e in enumerate(self.labels):
            m["emotion." + e] = self.emo[i] * inv
            m["top." + e] = self.top[i] * inv
        for i, p in enumerate(POLARITY):
            m["polarity." + p] = self.pol[i] * inv
        my = s[3] * inv
        m["polarity.mean"] = my
        m["polarity.last"] = self.last_polarity
        m["polarity.recent"] = s[9] / s[8] if s[8] > 0.0 else my
        ey2 = s[5] * inv
        var_y = ey2 - my * my
        if var_y <= 1e-12 * max(ey2, 1e-300):
            var_y = 0.0
        m["volatility"] = math.sqrt(var_y)
        mx = s[1] * inv
        ex2 = s[2] * inv
        var_x = ex2 - mx * mx
        if var_x <= 1e-12 * max(ex2, 1e-300):
            var_x = 0.0
        cov = s[4] * inv - mx * my
        slope = cov / (var_x + TREND_RIDGE_DAYS2) * TREND_UNIT_DAYS
        m["polarity.trend"] = max(-2.0, min(2.0, slope))
        m["intensity"] = s[7] / s[6] if s[6] > 0.0 else None
        c = self.ch
        for i, name in enumerate(CHANNELS):
            n_c, w_c = c[3 * i], c[3 * i + 1]
            m[f"channel.{name}.count"] = n_c
            m[f"channel.{name}.share"] = w_c * inv
            m[f"channel.{name}.polarity"] = c[3 * i + 2] / w_c if w_c > 0.0 else None
        m["support.unresolved_negative"] = self.unres[0]
        w_sup = c[3 * SUPPORT + 1]
        m["support.unresolved_negative_rate"] = self.unres[1] / w_sup if w_sup > 0.0 else None
        return m

    def summary(
        self,
        now: float | None = None,
        rules: Any = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """The SPEC §4 per-user output: distribution, polarity mean/trend, volatility, evidence, tags.

        `rules` is a `RuleSet` (or None for the shipped defaults, or False for no tags).
        """
        from emotag.profiles.rules import apply_rules, load_rules

        m = self.metrics(now)
        if rules is None:
            rules = load_rules()
        tags = apply_rules(self, rules, now, metrics=m) if rules is not False else []
        labels = self.labels
        emotions = {e: m["emotion." + e] for e in labels}
        top_emotion = None
        if m["emotion." + labels[0]] is not None:
            top_emotion = max(labels, key=lambda e: emotions[e])  # type: ignore[arg-type, return-value]
        out: dict[str, Any] = {}
        if user_id is not None:
            out["user_id"] = user_id
        out.update(
            {
                "evidence": self.n,
                "evidence_decayed": m["evidence.decayed"],
                "first_seen": format_time(self.first if self.n else None),
                "last_seen": format_time(self.last if self.n else None),
                "days_since_last": m["days_since_last"],
                "top_emotion": top_emotion,
                "emotions": emotions,
                "top_emotion_share": {e: m["top." + e] for e in labels},
                "polarity": {
                    "mean": m["polarity.mean"],
                    "recent": m["polarity.recent"],
                    "last": m["polarity.last"],
                    "trend": m["polarity.trend"],
                    **{p: m["polarity." + p] for p in POLARITY},
                },
                "volatility": m["volatility"],
                "intensity": m["intensity"],
                "channels": {
                    c: {"count": int(m[f"channel.{c}.count"] or 0), "polarity": m[f"channel.{c}.polarity"]}
                    for c in CHANNELS
                },
                "support": {
                    "unresolved_negative": int(m["support.unresolved_negative"] or 0),
                    "unresolved_negative_rate": m["support.unresolved_negative_rate"],
                },
                "products": {
                    k: {"count": int(v[0]), "polarity": v[2] / v[1] if v[1] > 0.0 else None}
                    for k, v in sorted(self.products.items())
                },
                "tags": tags,
            }
        )
        return out

    def __repr__(self) -> str:
        return f"ProfileState(n={self.n}, half_life_days={self.half_life_days}, labels={len(self.labels)})"


@lru_cache(maxsize=64)
def metric_names(labels: tuple[str, ...] = EMOTIONS) -> tuple[str, ...]:
    """Every metric of a state over these emotion labels (`emotion.<label>`, `top.<label>`, the rest fixed)."""
    names = ["evidence", "evidence.decayed", "days_since_last", "days_active"]
    names += ["emotion." + e for e in labels]
    names += ["top." + e for e in labels]
    names += ["polarity." + p for p in POLARITY]
    names += [
        "polarity.mean",
        "polarity.recent",
        "polarity.last",
        "polarity.trend",
        "volatility",
        "intensity",
    ]
    for c in CHANNELS:
        names += [f"channel.{c}.count", f"channel.{c}.share", f"channel.{c}.polarity"]
    names += ["support.unresolved_negative", "support.unresolved_negative_rate"]
    return tuple(names)


#: Every metric a rule may reference over the default taxonomy, with its meaning documented in docs/profiles.md.
METRIC_NAMES: tuple[str, ...] = metric_names()


def merge_profiles(*parts: Mapping[str, ProfileState]) -> dict[str, ProfileState]:
    """Merge several {user: state} maps (copies; inputs are not modified)."""
    out: dict[str, ProfileState] = {}
    for part in parts:
        for uid, st in part.items():
            cur = out.get(uid)
            if cur is None:
                out[uid] = st.copy()
            else:
                cur.merge(st)
    return out
