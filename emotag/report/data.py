"""Aggregate scored records into the numbers a report shows.

One streaming pass over every input file feeds all sections at once (emotion distribution, polarity over
time, products, support dialogues, and, when no profile store is given, the in-memory profile fold), so
a report over millions of records never holds them all in memory. Only the word analysis needs the raw
texts; it works on a bounded random sample (reservoir sampling, fixed seed: the same input gives the same
report) because jieba segmentation is by far the slowest step.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from emotag.labels import EMOTIONS, POLARITY
from emotag.profiles.records import record_error

#: How many texts at most go through jieba for the "reasons in their words" section.
MAX_WORD_TEXTS = 50_000
#: Words / phrases listed per emotion or per product.
TOP_WORDS = 12
#: Products shown as "most negative" (worst mean polarity, with enough records to mean something).
WORST_PRODUCTS = 3
#: Timelines spanning more days than this are bucketed by week instead of by day.
DAILY_MAX_DAYS = 45


class ReportError(ValueError):
    """A problem with the report's inputs the user can fix (one-line message, exit code 1 in the CLI)."""


@dataclass
class Bucket:
    """One point of the polarity timeline: a day or an ISO week (Monday start), in UTC+8."""

    label: str
    count: int
    mean: float
    negative_share: float


@dataclass
class ProductStat:
    name: str
    count: int
    mean: float
    negative: int

    @property
    def negative_share(self) -> float:
        return self.negative / self.count if self.count else 0.0


@dataclass
class WordTable:
    """Top words and two-word phrases of a group of texts; counts are numbers of texts (not tokens)."""

    title: str
    texts: int
    words: list[tuple[str, int]]
    phrases: list[tuple[str, int]]


@dataclass
class Dialogue:
    """One scored conversation; no user id is kept: the report is meant to be passed around."""

    id: str
    satisfaction: float
    start_emotion: str | None
    end_emotion: str | None
    resolved: bool | None
    turns: int


@dataclass
class TagStat:
    tag: str
    display: str
    users: int
    mean_score: float


@dataclass
class ReportData:
    """Everything the HTML needs, computed once; the renderer does no arithmetic beyond formatting."""

    inputs: list[str]
    labels: list[str]
    records: int = 0  # non-dialogue records read
    unrecognized: int = 0  # records with none of the SPEC §2 fields (not emotag output at all)
    errors: int = 0
    no_polarity: int = 0  # emotion but no polarity_score: a model without a polarity head
    scored: int = 0
    emotion_counts: Counter[str] = field(default_factory=Counter)
    emotion_prob_sum: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    polarity_counts: Counter[str] = field(default_factory=Counter)
    polarity_sum: float = 0.0
    intensity_sum: float = 0.0
    intensity_n: int = 0
    timeline: list[Bucket] = field(default_factory=list)
    timeline_unit: str = "day"
    undated: int = 0
    products: list[ProductStat] = field(default_factory=list)
    worst_products: list[ProductStat] = field(default_factory=list)
    worst_min_count: int = 1
    has_text: bool = False
    word_texts: int = 0  # texts segmented (after sampling)
    text_total: int = 0  # scored texts with a non-empty text field
    emotion_words: list[WordTable] = field(default_factory=list)
    product_words: list[WordTable] = field(default_factory=list)
    dialogues: list[Dialogue] = field(default_factory=list)
    dialogue_records: int = 0
    dialogue_errors: int = 0
    profiles_source: str | None = None  # "store" | "memory" | None
    profiles_note: str = ""
    users: int = 0
    users_tagged: int = 0
    tags: list[TagStat] = field(default_factory=list)
    user_top_emotions: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    first_time: float | None = None
    last_time: float | None = None
    aspects: Any = None  # emotag.aspects.aggregate.AspectTable by product, when records carry `aspects`

    @property
    def polarity_mean(self) -> float | None:
        return self.polarity_sum / self.scored if self.scored else None

    @property
    def intensity_mean(self) -> float | None:
        return self.intensity_sum / self.intensity_n if self.intensity_n else None

    def emotion_mean_probs(self) -> dict[str, float]:
        return {e: self.emotion_prob_sum.get(e, 0.0) / self.scored if self.scored else 0.0 for e in self.labels}


def _float(v: Any) -> float | None:
    """A finite float from a JSON number or a CSV cell, else None (reports skip what they cannot read)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _probs(rec: Mapping[str, Any]) -> dict[str, float]:
    em = rec.get("emotions")
    if isinstance(em, str):
        import json

        try:
            em = json.loads(em)
        except ValueError:
            em = None
    if isinstance(em, Mapping):
        out = {str(k): f for k, v in em.items() if (f := _float(v)) is not None}
        if out:
            return out
    flat = {k[len("emotions."):]: f for k, v in rec.items()
            if k.startswith("emotions.") and (f := _float(v)) is not None}
    if flat:
        return flat
    top = rec.get("emotion")
    return {str(top): 1.0} if top else {}


def _is_dialogue(rec: Mapping[str, Any]) -> bool:
    """score-dialogues output carries `satisfaction` (SPEC §3); plain scored records never do."""
    return "satisfaction" in rec


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "1", "yes"):
            return True
        if s in ("false", "0", "no"):
            return False
    if isinstance(v, (int, float)):
        return bool(v)
    return None


class _Reservoir:
    """Uniform sample of at most `cap` items from a stream of unknown length (Algorithm R, fixed seed)."""

    def __init__(self, cap: int, seed: int = 0) -> None:
        self.cap = cap
        self.seen = 0
        self.items: list[tuple[str, str, str | None, str]] = []
        self._rng = random.Random(seed)

    def add(self, item: tuple[str, str, str | None, str]) -> None:
        self.seen += 1
        if len(self.items) < self.cap:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.cap:
                self.items[j] = item


class Aggregator:
    """Streaming accumulator; `observe` is applied to every record (dialogues included), in input order."""

    def __init__(self, inputs: list[str], max_word_texts: int = MAX_WORD_TEXTS, text_col: str = "text") -> None:
        self.data = ReportData(inputs=inputs, labels=list(EMOTIONS))
        self.text_col = text_col  # the kept text column: `score --keep review` keeps it as `review`
        self._times: list[tuple[float, float, bool]] = []  # (epoch, polarity_score, negative)
        self._products: dict[str, list[float]] = {}  # name -> [count, sum, negatives]
        self._sample = _Reservoir(max_word_texts)
        from emotag.aspects.aggregate import AspectTable

        self._aspects = AspectTable(by="product")

    def observe(self, rec: Mapping[str, Any]) -> None:
        d = self.data
        model = rec.get("model") or rec.get("model_name")
        if isinstance(model, str) and model:
            d.models[model] += 1
        if _is_dialogue(rec):
            self._dialogue(rec)
            return
        d.records += 1
        if "emotion" not in rec and "polarity_score" not in rec and "error" not in rec:
            d.unrecognized += 1
        if record_error(rec) is not None:
            d.errors += 1
            return
        score = _float(rec.get("polarity_score"))
        emotion = rec.get("emotion")
        if not isinstance(emotion, str):
            d.errors += 1
            return
        if score is None:  # the report is built on polarity; say why these records are left out
            d.no_polarity += 1
            return
        d.scored += 1
        if emotion not in d.labels:
            d.labels.append(emotion)  # a fine-tuned model may carry its own label set
        d.emotion_counts[emotion] += 1
        for k, v in _probs(rec).items():
            if k not in d.labels:
                d.labels.append(k)
            d.emotion_prob_sum[k] += v
        polarity = rec.get("polarity")
        if polarity not in POLARITY:
            polarity = "negative" if score < -0.1 else "positive" if score > 0.1 else "neutral"
        d.polarity_counts[polarity] += 1
        d.polarity_sum += score
        intensity = _float(rec.get("intensity"))
        if intensity is not None:
            d.intensity_sum += intensity
            d.intensity_n += 1
        negative = polarity == "negative"
        t = self._time(rec.get("time"))
        if t is None:
            d.undated += 1
        else:
            self._times.append((t, score, negative))
        product = rec.get("product")
        if product is not None and str(product).strip():
            name = str(product).strip()
            p = self._products.setdefault(name, [0.0, 0.0, 0.0])
            p[0] += 1
            p[1] += score
            p[2] += negative
        else:
            name = None
        if "aspects" in rec:
            self._aspects.add(rec)
        text = rec.get(self.text_col)
        if isinstance(text, str) and text.strip():
            d.has_text = True
            self._sample.add((text, emotion, name, polarity))

    def _time(self, value: Any) -> float | None:
        if value is None or value == "":
            return None
        from emotag.profiles.timeutil import TimeParseError, parse_time

        try:
            t = parse_time(value)
        except (TimeParseError, ValueError, TypeError, OverflowError):
            return None
        d = self.data
        d.first_time = t if d.first_time is None else min(d.first_time, t)
        d.last_time = t if d.last_time is None else max(d.last_time, t)
        return t

    def _dialogue(self, rec: Mapping[str, Any]) -> None:
        d = self.data
        d.dialogue_records += 1
        sat = _float(rec.get("satisfaction"))
        if record_error(rec) is not None or sat is None:
            d.dialogue_errors += 1
            return
        turns = rec.get("turns")
        d.dialogues.append(Dialogue(
            id=str(rec.get("id", d.dialogue_records - 1)),
            satisfaction=sat,
            start_emotion=rec.get("start_emotion") if isinstance(rec.get("start_emotion"), str) else None,
            end_emotion=rec.get("end_emotion") if isinstance(rec.get("end_emotion"), str) else None,
            resolved=_bool(rec.get("resolved")),
            turns=len(turns) if isinstance(turns, list) else 0,
        ))

    # -- finishing ---------------------------------------------------------------------------------

    def finish(self) -> ReportData:
        self._finish_timeline()
        self._finish_products()
        self._finish_words()
        if self._aspects.texts:
            self.data.aspects = self._aspects
        return self.data

    def _finish_timeline(self) -> None:
        from emotag.profiles.timeutil import CST

        d = self.data
        if not self._times:
            return
        span_days = (d.last_time - d.first_time) / 86400.0 if d.first_time is not None and d.last_time else 0.0
        weekly = span_days > DAILY_MAX_DAYS
        d.timeline_unit = "week" if weekly else "day"
        acc: dict[str, list[float]] = {}
        for t, y, neg in self._times:
            day = datetime.fromtimestamp(t, CST).date()
            if weekly:
                day = day - timedelta(days=day.weekday())
            a = acc.setdefault(day.isoformat(), [0.0, 0.0, 0.0])
            a[0] += 1
            a[1] += y
            a[2] += neg
        d.timeline = [Bucket(k, int(a[0]), a[1] / a[0], a[2] / a[0]) for k, a in sorted(acc.items())]
        self._times = []

    def _finish_products(self) -> None:
        d = self.data
        stats = [ProductStat(name, int(c), s / c, int(n)) for name, (c, s, n) in self._products.items()]
        stats.sort(key=lambda p: (p.mean, -p.count, p.name))
        d.products = stats
        # A product with one or two reviews says little; require 3 when the data allows it.
        d.worst_min_count = 3 if any(p.count >= 3 for p in stats) else 1
        d.worst_products = [p for p in stats if p.count >= d.worst_min_count][:WORST_PRODUCTS]

    def _finish_words(self) -> None:
        from emotag.labels import EMOTION_ZH
        from emotag.text import content_words, normalize_text

        d = self.data
        d.text_total = self._sample.seen
        items = self._sample.items
        d.word_texts = len(items)
        if not items:
            return
        by_emotion: dict[str, list[list[str]]] = defaultdict(list)
        worst = {p.name for p in d.worst_products}
        by_product: dict[str, list[list[str]]] = defaultdict(list)
        for text, emotion, product, polarity in items:
            # Normalising first masks phone numbers, e-mails and URLs (they must not surface as "words")
            # and folds traditional characters and full-width forms onto the forms jieba knows.
            words = content_words(normalize_text(text))
            by_emotion[emotion].append(words)
            if product in worst and polarity == "negative":
                by_product[product].append(words)
        for e in d.labels:
            docs = by_emotion.get(e)
            if docs:
                d.emotion_words.append(_word_table(f"{EMOTION_ZH.get(e, e)} {e}", docs))
        for p in d.worst_products:
            docs = by_product.get(p.name)
            if docs:
                d.product_words.append(_word_table(p.name, docs))


def _word_table(title: str, docs: list[list[str]]) -> WordTable:
    """Most frequent words and adjacent-word phrases, counted once per text so one rant cannot dominate."""
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    for ws in docs:
        # single characters (不, 很, 买, 好) top every list and explain nothing; they still show up inside
        # phrases (不太满意), and emoticons such as [怒] are kept
        words.update({w for w in ws if len(w) > 1})
        phrases.update({a + b for a, b in zip(ws, ws[1:], strict=False) if not (a.startswith("[") or b.startswith("["))})
    return WordTable(title, len(docs), _top(words), _top(phrases, min_count=2))


def _top(counter: Counter[str], min_count: int = 1) -> list[tuple[str, int]]:
    """The TOP_WORDS most frequent entries with at least `min_count`, ties in code-point order.

    Not `most_common`: it breaks ties by insertion order, and the counters are fed from sets, whose order
    Python salts per process (PYTHONHASHSEED), so one input gave a different report from run to run.
    """
    kept = [kv for kv in counter.items() if kv[1] >= min_count]
    return sorted(kept, key=lambda kv: (-kv[1], kv[0]))[:TOP_WORDS]


def read_inputs(paths: Iterable[str]) -> Iterator[dict[str, Any]]:
    """All records of all files, in order; a missing file is a ReportError naming it."""
    from emotag.io import read_records

    for p in paths:
        if p != "-" and not Path(p).is_file():
            raise ReportError(f"{p}: no such file")
        yield from read_records(p)


def observed(records: Iterable[dict[str, Any]], agg: Aggregator) -> Iterator[dict[str, Any]]:
    """Pass records through while aggregating them, so the profile fold can share the same single pass."""
    for rec in records:
        agg.observe(rec)
        yield rec


def profiles_from_store(path: str, data: ReportData) -> None:
    """Tag counts from a ProfileStore file (pseudonymous ids; only counts leave the store)."""
    from emotag.profiles import USER_ERRORS, ProfileStore, load_rules, profile_rows

    p = Path(path)
    if not p.is_file():
        raise ReportError(f"{path}: no such profile store")
    if p.stat().st_size == 0:
        # ProfileStore would initialise an empty file as a new store; a report must not write anything
        raise ReportError(f"{path}: empty file, not a profile store")
    rules = load_rules()
    try:
        with ProfileStore(p) as store:
            _tag_counts(profile_rows(store.iter_states(), rules, store.max_time), rules, data)
    except USER_ERRORS as e:
        raise ReportError(str(e)) from None
    data.profiles_source = "store"


def profiles_in_memory(states: Mapping[str, Any], data: ReportData) -> None:
    """Tag counts from profiles folded from the report's own records (nothing is persisted)."""
    from emotag.profiles import load_rules, profile_rows

    if not states and data.records and not data.scored:
        data.profiles_note = "没有成功打分的记录，无法计算用户画像标签 (no scored records: every one has an error)."
        return
    if not states:
        data.profiles_note = "记录中没有 user_id 与 time 字段，无法计算用户画像标签 (no user_id/time in the records)."
        return
    rules = load_rules()
    now = max(st.last for st in states.values())
    _tag_counts(profile_rows(states, rules, now), rules, data)
    data.profiles_source = "memory"


def _tag_counts(summaries: Iterable[Mapping[str, Any]], rules: Any, data: ReportData) -> None:
    counts: Counter[str] = Counter()
    scores: dict[str, float] = defaultdict(float)
    display = {r.tag: r.display for r in rules}
    users = tagged = 0
    for s in summaries:
        users += 1
        tags = s.get("tags") or []
        tagged += bool(tags)
        for t in tags:
            counts[t["tag"]] += 1
            scores[t["tag"]] += float(t.get("score") or 0.0)
            display.setdefault(t["tag"], t.get("display") or t["tag"])
        if s.get("top_emotion"):
            data.user_top_emotions[s["top_emotion"]] += 1
    data.users, data.users_tagged = users, tagged
    # every rule is listed (zero counts included), so a reader sees which tags were possible
    data.tags = sorted(
        (TagStat(tag, display[tag], counts[tag], scores[tag] / counts[tag] if counts[tag] else 0.0)
         for tag in display),
        key=lambda t: (-t.users, t.tag),
    )
