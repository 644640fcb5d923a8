"""Scored records with `aspects` -> what a brand team asks: per group (product) and category, how often it
is mentioned, how it splits into positive/neutral/negative, the negative share with a Wilson interval,
the opinion phrases people use on each side, and record ids to read.

`emotag aspects SCORED --by product` prints this and writes it (-o, any output format); the HTML report
uses the same tables.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emotag.aspects.features import normalize_aligned
from emotag.labels import POLARITY
from emotag.profiles.records import record_error

NO_GROUP = "(all)"
NO_CATEGORY = "(none)"
_TRAILING = "了的啊呀哦呢吧嘛啦哈！!~。，,…"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n: honest for small n, unlike k/n ± 2 s.e."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def phrase(opinion: str) -> str:
    """An opinion folded for counting: simplified, trailing particles and punctuation dropped."""
    return normalize_aligned(opinion).strip().rstrip(_TRAILING) or opinion


@dataclass
class Cell:
    """One (group, category): counts, phrases and example ids."""

    polarity: Counter = field(default_factory=Counter)
    phrases: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    aspects: Counter = field(default_factory=Counter)
    examples: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    def add(self, unit: Mapping[str, Any], rid: Any, max_examples: int) -> None:
        pol = unit.get("polarity") or "neutral"
        self.polarity[pol] += 1
        if unit.get("opinion"):
            self.phrases[pol][phrase(str(unit["opinion"]))] += 1
        if unit.get("aspect"):
            self.aspects[normalize_aligned(str(unit["aspect"]))] += 1
        ex = self.examples[pol]
        if rid is not None and len(ex) < max_examples and rid not in ex:
            ex.append(rid)


class AspectTable:
    """Streaming accumulator: `add` each scored record, then `rows()`; `trend()` gives the negative share
    per group, category and month (records with a parseable `time`)."""

    def __init__(self, by: str | None = None, top: int = 5, examples: int = 3, id_col: str = "id",
                 time_col: str = "time") -> None:
        self.by, self.top, self.examples, self.id_col, self.time_col = by, top, examples, id_col, time_col
        self.cells: dict[str, dict[str, Cell]] = {}
        self.texts: Counter = Counter()
        self.months: dict[tuple[str, str, str], list[int]] = {}  # (group, category, yyyy-mm) -> [negative, n]
        # what was not counted, so a caller can say so: error rows, records whose `aspects` is not a list (a
        # file scored without --aspects, a damaged cell) and units whose fields are not SPEC §7's types
        self.skipped: Counter = Counter()

    def add(self, rec: Mapping[str, Any]) -> bool:
        """Fold one record; False when it carries no aspects list (an error row, or scored without them)."""
        units = rec.get("aspects")
        if not isinstance(units, list):
            self.skipped["no_aspects" if record_error(rec) is None else "error"] += 1
            return False
        value = rec.get(self.by) if self.by else None
        group = str(value) if value not in (None, "") else NO_GROUP
        self.texts[group] += 1
        per = self.cells.setdefault(group, {})
        month = _month(rec.get(self.time_col))
        for u in units:
            if not _valid_unit(u):
                self.skipped["bad_units"] += 1
                continue
            cat = u.get("category") or NO_CATEGORY
            per.setdefault(cat, Cell()).add(u, rec.get(self.id_col), self.examples)
            if month:
                m = self.months.setdefault((group, cat, month), [0, 0])
                m[0] += u.get("polarity") == "negative"
                m[1] += 1
        return True

    def rows(self) -> list[dict[str, Any]]:
        """One row per (group, category), groups in first-seen order, categories by negative mentions."""
        rows: list[dict[str, Any]] = []
        for group, per in self.cells.items():
            ordered = sorted(per.items(), key=lambda kv: (-kv[1].polarity["negative"], -sum(kv[1].polarity.values())))
            for cat, c in ordered:
                n = sum(c.polarity.values())
                neg = c.polarity["negative"]
                lo, hi = wilson(neg, n)
                rows.append({
                    "group": group, "category": cat, "texts": self.texts[group], "mentions": n,
                    "positive": c.polarity["positive"], "neutral": c.polarity["neutral"], "negative": neg,
                    "negative_share": round(neg / n, 4) if n else 0.0,
                    "negative_share_low": round(lo, 4), "negative_share_high": round(hi, 4),
                    "top_negative": [p for p, _ in c.phrases["negative"].most_common(self.top)],
                    "top_positive": [p for p, _ in c.phrases["positive"].most_common(self.top)],
                    "aspects": [a for a, _ in c.aspects.most_common(self.top)],
                    "negative_examples": c.examples["negative"], "positive_examples": c.examples["positive"],
                })
        return rows

    def trend(self, group: str, category: str) -> list[tuple[str, int, int]]:
        """(month, negative mentions, mentions) in time order for one group and category."""
        return sorted((m, v[0], v[1]) for (g, c, m), v in self.months.items() if g == group and c == category)


def _valid_unit(u: Any) -> bool:
    """A unit as SPEC §7 types it: a polarity label, and text (or null) for aspect, opinion and category."""
    return (isinstance(u, Mapping) and u.get("polarity") in POLARITY
            and all(u.get(k) is None or isinstance(u.get(k), str) for k in ("aspect", "opinion", "category")))


def _month(value: Any) -> str | None:
    if value in (None, ""):
        return None
    from emotag.profiles.timeutil import CST, parse_time

    try:
        from datetime import datetime

        return datetime.fromtimestamp(parse_time(value), CST).strftime("%Y-%m")
    except (ValueError, TypeError, OverflowError):
        return None


def aggregate(records: Iterable[Mapping[str, Any]], by: str | None = None, top: int = 5, examples: int = 3,
              id_col: str = "id") -> list[dict[str, Any]]:
    """`AspectTable` over `records` in one call. Records without `aspects` are skipped; units without a
    category count under "(none)"."""
    table = AspectTable(by, top, examples, id_col)
    for rec in records:
        table.add(rec)
    return table.rows()


def skipped_note(table: AspectTable) -> str | None:
    """One line on what `table` did not count beyond error rows, or None: a count that shrank is visible."""
    parts = []
    if table.skipped["no_aspects"]:
        parts.append(f"{table.skipped['no_aspects']} records without an aspects list (not an error row: scored "
                     "without --aspects, or a damaged cell)")
    if table.skipped["bad_units"]:
        parts.append(f"{table.skipped['bad_units']} units whose polarity, aspect, opinion or category is not as "
                     "SPEC §7 types it")
    return "skipped " + "; ".join(parts) if parts else None


def top_complaints(rows: list[dict[str, Any]], min_negative: int = 2) -> list[dict[str, Any]]:
    """Per group, the category that draws the most negative mentions (at least `min_negative`)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["negative"] >= min_negative and (r["group"] not in best or r["negative"] > best[r["group"]]["negative"]):
            best[r["group"]] = r
    return list(best.values())


def format_table(rows: list[dict[str, Any]], limit_per_group: int = 8) -> str:
    """A plain-text table for the terminal (Chinese names as given)."""
    lines: list[str] = []
    shown: Counter = Counter()
    last = None
    for r in rows:
        if shown[r["group"]] >= limit_per_group:
            continue
        shown[r["group"]] += 1
        if r["group"] != last:
            lines.append(f"== {r['group']} ({r['texts']} texts)")
            lines.append("  category      mentions   +    =    -   negative share (95% CI)   complaints / praise")
            last = r["group"]
        share = f"{r['negative_share']:.0%} ({r['negative_share_low']:.0%}-{r['negative_share_high']:.0%})"
        said = "、".join(r["top_negative"]) or "-"
        praised = "、".join(r["top_positive"]) or "-"
        lines.append(f"  {_pad(r['category'], 12)} {r['mentions']:>8} {r['positive']:>4} {r['neutral']:>4} "
                     f"{r['negative']:>4}   {share:<24}  {said} / {praised}")
    complaints = top_complaints(rows)
    if complaints:
        lines.append("")
        for r in complaints:
            ids = ", ".join(str(i) for i in r["negative_examples"])
            lines.append(f"{r['group']}: most complaints are about {r['category']} — {r['negative']} of "
                         f"{r['mentions']} mentions negative ({r['negative_share']:.0%}, 95% CI "
                         f"{r['negative_share_low']:.0%}-{r['negative_share_high']:.0%}): "
                         f"{'、'.join(r['top_negative'])}; e.g. records {ids}")
    return "\n".join(lines)


def _pad(s: str, width: int) -> str:
    """Pad to a display width, counting CJK characters as two columns."""
    w = sum(2 if ord(ch) > 0x2E80 else 1 for ch in s)
    return s + " " * max(0, width - w)
