"""Text -> opinion units (SPEC §7): aspect, opinion, polarity, score, category, spans into the input text.

Steps per chunk of texts: character-aligned normalisation (spans stay valid in the original), the span
tagger (aspect spans, opinion spans with their polarity), pairing each opinion with its aspect, and the
category of each unit. Pairing is a rule over the sentence structure: the nearest aspect before the
opinion in the same sentence (a review says 包装破损了 far more often than 破损了的包装), else the
nearest after it in the same clause, else none (an implicit aspect: 很好用, 超值). Aspects joined by
和/、/跟 share the opinion (服务和环境都很好 gives two units).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from emotag.aspects.features import break_positions, lexicon_pattern, normalize_aligned
from emotag.aspects.lexicon import DEGREE, MODIFIED_NEGATIVE_WORDS, NEGATION, NEGATIVE_WORDS, POSITIVE_WORDS
from emotag.aspects.neural import NeuralTagger
from emotag.aspects.tagger import OPINION_POLARITY, SpanTagger, spans

RESOURCES = Path(__file__).resolve().parent / "resources"
SENTENCE_END = re.compile(r"[。！？!?；;\n\r]|\.(?!\d)|~{2,}|…+")
CLAUSE_END = re.compile(r"[，,、：:\t]")
FINAL = set("。！？!?.…~")
SENTENCE_CUT = re.compile(r"[。！？!?；;\n\r]+|…+|\.{2,}|~{2,}")
CLAUSE_OR_SENTENCE = re.compile(SENTENCE_END.pattern + "|" + CLAUSE_END.pattern)
COORD = set("和、跟与及,，") | {"还有", "以及"}


@dataclass
class Aspect:
    """One opinion unit (SPEC §7). Spans are [start, end) offsets into the text as given."""

    aspect: str | None
    opinion: str
    polarity: str
    score: float
    category: str | None
    aspect_span: tuple[int, int] | None
    opinion_span: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aspect_span"] = list(self.aspect_span) if self.aspect_span else None
        d["opinion_span"] = list(self.opinion_span)
        return d


@lru_cache(maxsize=64)
def _boundaries(text: str, pattern: re.Pattern[str]) -> list[int]:
    """Segment index per character (a new segment after each boundary character); cached, since pairing
    and its helpers ask for the same text's segments several times."""
    seg = [0] * (len(text) + 1)
    k = start = 0
    for m in pattern.finditer(text):
        end = m.end()
        seg[start:end] = [k] * (end - start)
        k += 1
        start = end
    seg[start:] = [k] * (len(text) + 1 - start)
    return seg


@lru_cache(maxsize=1)
def _seed_matcher() -> tuple[re.Pattern[str], dict[str, int], re.Pattern[str]]:
    """One trie regex over the hand-written opinion words (B- tag id by polarity), and the negation /
    degree words that may precede one (很, 太, 不太, 有点 ...)."""
    words = {normalize_aligned(w): 3 for w in POSITIVE_WORDS}
    words.update({normalize_aligned(w): 7 for w in NEGATIVE_WORDS})
    words = {w: k for w, k in words.items() if len(w) >= 2}  # one character alone (好, 贵) is too loose
    modifiers = sorted({*NEGATION, *DEGREE, "也", "都", "还", "就", "又", "太", "很"}, key=len, reverse=True)
    before = re.compile("(?:" + "|".join(map(re.escape, modifiers)) + ")+$")
    return lexicon_pattern(words), words, before


@lru_cache(maxsize=1)
def _judged_words() -> dict[str, int]:
    """The listed words that decide a tagged span's polarity (_listed_polarity): the seed words, and words
    that are complaints only when a degree word or a negation says so (很随便, 一点也不随便; 随便看看 is none),
    which therefore never become opinions by themselves (_add_seed_opinions)."""
    return _seed_matcher()[1] | {normalize_aligned(w): 7 for w in MODIFIED_NEGATIVE_WORDS}


def _add_seed_opinions(text: str, aspects: list[tuple[int, int]], opinions: list[tuple[int, int, int]],
                       aspect_terms: re.Pattern[str] | None = None,
                       ) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Opinions the tagger missed but the word lists know (包装破损了 in a restaurant-trained model): each
    seed word outside every predicted opinion becomes one, widened over the negation/degree words before
    it and 了/的 after it; a negation before it flips its polarity. An aspect span that swallowed the
    word's first character is cut back."""
    pattern, words, before = _seed_matcher()
    if pattern is None:
        return aspects, opinions
    taken = np.zeros(len(text) + 1, dtype=bool)
    for a, b, _ in opinions:
        taken[a:b] = True
    clause = _boundaries(text, CLAUSE_OR_SENTENCE)
    has_opinion = {int(clause[a]) for a, _, _ in opinions}
    added = []
    for m in pattern.finditer(text):
        a, b = m.span()
        if taken[a:b].any() or int(clause[a]) in has_opinion:  # the tagger spoke for this clause
            continue
        kind = words[m.group()]
        pre = before.search(text, max(0, a - 4), a)
        if pre:
            if any(n in pre.group() for n in NEGATION) and not m.group().startswith(tuple(NEGATION)):
                kind = 10 - kind  # 3 <-> 7
            a = pre.start()
        while b < len(text) and text[b] in "了的啦":
            b += 1
        if taken[a:b].any():
            continue
        taken[a:b] = True
        added.append((a, b, kind + 100))
    if not added:
        return aspects, opinions
    if aspect_terms is not None:  # a known aspect term right before the new opinion: 包装破损了
        for o0, _, _ in added:
            if any(a1 <= o0 and clause[a0] == clause[o0] for a0, a1 in aspects):
                continue
            start = o0
            while start > 0 and clause[start - 1] == clause[o0]:
                start -= 1
            # a term inside an opinion is part of what was said, not what it is said about: 干净 in 不干净
            near = [m.span() for m in aspect_terms.finditer(text, start, o0)
                    if m.end() >= o0 - 1 and not taken[m.start():m.end()].any()]
            if near and near[-1][1] - near[-1][0] >= 2:
                aspects = sorted([*aspects, near[-1]])
    trimmed = []
    added_starts = [o0 for o0, _, _ in added]
    for a0, a1 in aspects:
        i = bisect_left(added_starts, a0)
        while i < len(added) and added[i][0] < a1:  # a new opinion starting inside the aspect cuts it
            a1 = added[i][0]
            i += 1
        while a0 < a1 and taken[a0]:  # one starting inside a new opinion keeps only what lies past it
            a0 += 1
        if a1 > a0:
            trimmed.append((a0, a1))
    return trimmed, sorted(opinions + added)


_DEGREE_START = re.compile("|".join(sorted(map(re.escape, {*DEGREE, *NEGATION, "也", "都"}), key=len, reverse=True)))
_CONTRAST = re.compile(r"(?:但是|但|不过|可是|只是|就是|然而|而且|另外|还有)$")


def _split_own_subject(text: str, opinions: list[tuple[int, int, int]], pairs: list[list[tuple[int, int] | None]],
                       known: re.Pattern[str] | None) -> tuple[list[tuple[int, int, int]], list[list[tuple[int, int] | None]]]:
    """物流很快，但是包装破损了: the tagger reads 包装破损了 as one opinion and pairing gives it 物流. When an
    opinion paired with another clause's aspect opens with a known aspect term (the lexicon, a user's
    category terms), and that term follows a contrast word (但是, 不过, 就是 ...) or is followed by a degree
    or negation word (包装挺好的，泡沫很丰富), the term becomes its own aspect: (包装, 破损了), (泡沫, 很丰富).
    The training data pairs such clauses with the earlier aspect (五福拼盘不喜欢，都是肉有点油腻), so this costs
    about 1.3 points of soft triple F1 there (tuning half); a brand analyst needs 泡沫 filed under its own
    category, not under 包装. An implicit opinion that opens with a known term followed by a listed opinion
    word (包装破损了。 on its own) is split the same way."""
    if known is None:
        return opinions, pairs
    clause = _boundaries(text, CLAUSE_OR_SENTENCE)
    seeds = _seed_matcher()[0]
    out_o, out_p = [], []
    for (o0, o1, kind), targets in zip(opinions, pairs, strict=True):
        m = known.match(text, o0, o1 - 1)
        cross = bool(targets) and all(t is not None and clause[t[0]] != clause[o0] for t in targets)
        if m and m.end() - o0 >= 2 and (
                (cross and (_CONTRAST.search(text, max(0, o0 - 2), o0) or _DEGREE_START.match(text, m.end())))
                or (not targets and seeds.match(text, m.end()))):
            out_o.append((m.end(), o1, kind))
            out_p.append([(o0, m.end())])
        else:
            out_o.append((o0, o1, kind))
            out_p.append(targets)
    return out_o, out_p


_LATIN = re.compile(r"[a-z0-9]")


@lru_cache(maxsize=1)
def _negated_seed_pattern() -> re.Pattern[str]:
    """A negation (optionally with 一点/都/也/很 ...) right before a listed opinion word that ends the span."""
    words = _judged_words()
    neg = sorted((n for n in NEGATION if n not in ("别", "非")), key=len, reverse=True)  # 特别, 非常
    mods = sorted({"一点", "一点也", "一点都", "也", "都", "还", "很", "太", *DEGREE}, key=len, reverse=True)
    kept = sorted((w for w in words if not w.startswith(tuple(NEGATION))), key=len, reverse=True)
    return re.compile("(?:" + "|".join(map(re.escape, neg)) + ")(?:" + "|".join(map(re.escape, mods)) + ")?("
                      + "|".join(map(re.escape, kept)) + ")[了的啦]*$")


def _listed_polarity(text: str, o0: int, o1: int, polar: bool = True) -> str | None:
    """The polarity the word lists give a tagger opinion that ends in a listed e-commerce word: negated
    (一点没压坏 is praise, 不划算 a complaint) or plain after degree words (包装很随便, 袋子都皱了 are complaints).
    The restaurant-trained tagger keeps the polarity its training sentences taught, and they rarely hold
    these words; the hand-written lists know them. A span tagged neutral (`polar` False) takes the lists'
    polarity only from the plain shape (也太随便了吧). None when the span is not of either shape."""
    m = _negated_seed_pattern().search(text, o0, o1) if polar else None  # a neutral span's negation: its own
    if m is not None:
        return "negative" if _judged_words()[m.group(1)] == 3 else "positive"
    m = _plain_seed_pattern().fullmatch(text, o0, o1)
    if m is None:
        return None
    return "positive" if _judged_words()[m.group(1)] == 3 else "negative"


@lru_cache(maxsize=1)
def _plain_seed_pattern() -> re.Pattern[str]:
    """A whole opinion span that is a listed opinion word of two or more characters after nothing but
    degree words and particles (很随便, 都皱了, 有点简陋), for `fullmatch` over the span."""
    words = _judged_words()
    mods = sorted({"也", "都", "还", "就", "又", "很", "太", "有点", "有些", *DEGREE}, key=len, reverse=True)
    kept = sorted(words, key=len, reverse=True)
    return re.compile("(?:" + "|".join(map(re.escape, mods)) + ")*(" + "|".join(map(re.escape, kept)) + ")[了的啦啊吧呀呢]*")


_EDGE_CHARS = "，,。！!？?；;、：:~…\n\r \t\u3000"
_EDGE = set(_EDGE_CHARS)


def _trim_punctuation(text: str, found: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """No span begins or ends with punctuation or white space (超值！ -> 超值): 45 of the 38,050 training
    opinions end with one and none begins with one, but a tagger that reads `！` where its training
    sentences had `。` can carry a span onto it. Inner punctuation stays (an opinion may span a comma)."""
    out = []
    for a, b, kind in found:
        while a < b and text[a] in _EDGE:
            a += 1
        while b > a and text[b - 1] in _EDGE:
            b -= 1
        if b > a:
            out.append((a, b, kind))
    return out


def _with_stops(norm: str, breaks: Sequence[int]) -> str:
    """`norm` with a 。 at each break position (break_positions): the tagger's second reading of a text whose
    first one ran a span across an emoji or a tab (extract_many). Pairing still reads them as commas."""
    if not breaks:
        return norm
    chars = list(norm)
    for i in breaks:
        chars[i] = "。"
    return "".join(chars)


def _crossed(found: list[tuple[int, int, int]], breaks: Sequence[int]) -> list[int]:
    """The break positions some span runs across, with span characters on both sides (one at its edge is
    trimmed)."""
    out = set()
    for a, b, _ in found:
        i = bisect_right(breaks, a)
        while i < len(breaks) and breaks[i] < b - 1:
            out.add(breaks[i])
            i += 1
    return sorted(out)


def _cut_at(found: list[tuple[int, int, int]], breaks: Sequence[int]) -> list[tuple[int, int, int]]:
    """Spans cut at the break positions, the pieces keeping the span's kind. The second tagging reads each
    break as a sentence end, so a span should hold none by then; this keeps docs/aspects.md's promise (no
    span holds an emoji or a tab) should the tagger still carry one over."""
    if not breaks:
        return found
    out = []
    for a, b, kind in found:
        i = bisect_left(breaks, a)
        while i < len(breaks) and breaks[i] < b:
            if breaks[i] > a:
                out.append((a, breaks[i], kind))
            a = breaks[i] + 1
            i += 1
        if b > a:
            out.append((a, b, kind))
    return out


def _whole_words(text: str, found: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Spans never cut a Latin word or number in two (这个mask很好用: the tagger reads characters, so it can
    end an aspect at mas|k): an aspect grows to whole words, an opinion then starts after it."""
    def word(i: int) -> bool:
        return 0 <= i < len(text) and text[i].isascii() and text[i].isalnum()

    out: list[tuple[int, int, int]] = []
    for a, b, kind in found:
        if kind == 1:
            while word(a - 1) and word(a):
                a -= 1
            while word(b) and word(b - 1):
                b += 1
        else:
            while word(a - 1) and word(a) and a < b:
                a += 1
            while word(b) and word(b - 1):
                b += 1
        if out and a < out[-1][1]:  # grown into the previous span: start after it
            a = out[-1][1]
        if b > a:
            out.append((a, b, kind))
    return out


def _whole_terms(text: str, found: list[tuple[int, int, int]], terms: re.Pattern[str] | None
                 ) -> list[tuple[int, int, int]]:
    """An aspect span the tagger ended inside a longer category term grows to the whole term, and the
    opinion right after it starts after the term: 泡沫|箱破了 -> 泡沫箱|破了 (the tagger knew 泡沫, a cleanser's
    lather, and cut the foam box there, filing a packaging complaint under 体验)."""
    if terms is None:
        return found
    out = list(found)
    for k, (a, b, kind) in enumerate(out):
        if kind != 1 or k + 1 >= len(out):
            continue
        o0, o1, okind = out[k + 1]
        m = terms.match(text, a)
        if okind != 1 and o0 == b and m is not None and b < m.end() < o1:
            out[k] = (a, m.end(), kind)
            out[k + 1] = (m.end(), o1, okind)
    return out


def pair(text: str, aspects: Sequence[tuple[int, int]], opinions: Sequence[tuple[int, int]]
         ) -> list[list[tuple[int, int] | None]]:
    """For each opinion span, the aspect spans it is about (an empty list = implicit). `aspects` are
    sorted and do not overlap; candidates are found by bisection, so a long text stays linear."""
    sent = _boundaries(text, SENTENCE_END)
    clause = _boundaries(text, CLAUSE_OR_SENTENCE)
    starts = [a[0] for a in aspects]
    ends = [a[1] for a in aspects]
    out: list[list[tuple[int, int] | None]] = []
    for o0, o1 in opinions:
        chosen: list[tuple[int, int] | None] = []
        k = bisect_right(ends, o0) - 1  # the nearest aspect ending before the opinion
        if k >= 0 and sent[starts[k]] == sent[o0]:
            chosen = [aspects[k]]
            # coordination: 服务和环境都很好 -> both
            while k > 0 and text[ends[k - 1]:starts[k]] in COORD:
                chosen.insert(0, aspects[k - 1])
                k -= 1
        else:
            i = bisect_left(starts, o1)  # the nearest after it, in its clause
            if i < len(aspects) and clause[starts[i]] == clause[o1 - 1]:
                chosen = [aspects[i]]
            else:
                i = bisect_left(starts, o0)  # one inside it
                if i < len(aspects) and ends[i] <= o1:
                    chosen = [aspects[i]]
        out.append(chosen)
    return out


def _length_batches(pieces: list[tuple[int, int, int]], batch: int, cells: int = 1 << 15
                    ) -> Iterator[list[tuple[int, int, int]]]:
    """Length-sorted (text, start, end) pieces in batches of at most `batch` pieces and `cells` padded
    characters. Why the second cap: a batch is padded to its longest sentence, so one 20,000-character
    text in a batch of 512 short ones made every one of them cost 20,000 (a review dump with one pasted
    log took minutes); past `cells` a long sentence goes alone."""
    out: list[tuple[int, int, int]] = []
    for p in pieces:  # ascending length: the newest piece is the batch's longest
        if out and (len(out) >= batch or (len(out) + 1) * (p[2] - p[1] + 1) > cells):
            yield out
            out = []
        out.append(p)
    if out:
        yield out


_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class AspectExtractor:
    """Opinion units for texts. Load once (`AspectExtractor.load()`), call `extract_many` per chunk."""

    def __init__(self, tagger: SpanTagger, categories: Any = None, temperature: float = 1.0) -> None:
        # a user's category terms are aspect candidates too (their 泵头 is an aspect even if no review taught it)
        self.tagger = tagger.with_aspect_terms(categories.terms) if categories is not None else tagger
        self.categories = categories
        # category terms (built-in and the user's), not the restaurant-learned aspect lexicon: growing spans
        # to those cost 0.35 points of exact triple F1 in domain, where the annotation cuts aspects shorter
        self._category_terms = lexicon_pattern(categories.terms) if categories is not None else None
        self.temperature = temperature
        self.seed_opinions = True  # add opinions from the hand-written word lists that the tagger missed

    @classmethod
    def load(cls, categories: Any = None, path: str | Path | None = None) -> AspectExtractor:
        """The bundled tagger (or one from `path`) with a category set (None = the built-in one)."""
        from emotag.aspects.categories import CategorySet

        path = Path(path) if path else RESOURCES
        tagger: Any = NeuralTagger.load(path) if (path / "neural.npz").exists() else SpanTagger.load(path)
        if categories is None:
            categories = CategorySet.builtin(path)
        return cls(tagger, categories, float(tagger.lexicons.get("temperature", [1.0])[0]))

    def extract(self, text: str) -> list[Aspect]:
        return self.extract_many([text])[0]

    def extract_many(self, texts: Sequence[str], batch: int = 512) -> list[list[Aspect]]:
        """Units per text, in text order.

        The tagger learned from single sentences that each end in 。, so every text is cut into sentences
        (after 。！？；… or a line break) that are tagged on their own, a sentence without final
        punctuation getting a 。 (tagged, then dropped; no span reaches it). Sentences of a chunk are
        tagged in length-sorted batches; their tags are joined back into one row per text.
        """
        norm = [normalize_aligned(t) for t in texts]
        breaks = [break_positions(t, n) for t, n in zip(texts, norm, strict=True)]
        rows = self._tag_rows(norm, batch)
        # an emoji or a tab reads as a comma, and the neural tagger runs an opinion across a comma as its
        # training data does (包装很严实，一点没压坏); across an emoji that was one opinion of two clauses
        # (价格很便宜👍瓶子漏液了, all praise of 价格). Such a text is tagged again with a 。 at each emoji a span
        # ran across, so those clauses are read on their own; every other emoji keeps the comma reading
        # (这个面膜😍很好用 pairs 很好用 with 面膜, which 这个面膜。 alone does not tag as an aspect).
        crossed = [_crossed(spans(row[0]), breaks[k]) if row is not None else [] for k, row in enumerate(rows)]
        again = [k for k, c in enumerate(crossed) if c]
        for k, row in zip(again, self._tag_rows([_with_stops(norm[k], crossed[k]) for k in again], batch), strict=True):
            rows[k] = row
        return [[] if row is None else self._units(texts[k], norm[k], row[0], row[1], breaks[k])
                for k, row in enumerate(rows)]

    def _tag_rows(self, norm: Sequence[str], batch: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Tags and emissions per normalised text (None for an empty one), each text tagged sentence by
        sentence (extract_many)."""
        pieces: list[tuple[int, int, int]] = []  # (text index, start, end)
        for k, t in enumerate(norm):
            start = 0
            for m in SENTENCE_CUT.finditer(t):
                if m.end() > start:
                    pieces.append((k, start, m.end()))
                    start = m.end()
            if start < len(t):
                pieces.append((k, start, len(t)))
        tags_of: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        # a sentence without a Chinese character (an order number, keyboard noise, "asdf lorem ipsum") is
        # not tagged: the tagger learned Chinese reviews and read such noise as a positive opinion
        plain = [i for i, (k, a, b) in enumerate(pieces) if not _HAN.search(norm[k], a, b)]
        skipped = set(plain)
        order = sorted((i for i in range(len(pieces)) if i not in skipped), key=lambda i: pieces[i][2] - pieces[i][1])
        for sel in _length_batches([pieces[i] for i in order], batch):
            # the tagger never saw a sentence open with punctuation (，包装破损了 from 🙂包装破损了 read 包 as
            # the aspect's end): it tags each sentence from its first other character, the rest outside
            sents = [norm[k][a:b] for k, a, b in sel]
            leads = [len(t) - len(t.lstrip(_EDGE_CHARS)) for t in sents]
            tags, ems = self.tagger.tag([t[n:] if t[-1:] in FINAL else t[n:] + "。" for t, n in zip(sents, leads, strict=True)])
            for (k, a, b), n, tg, em in zip(sel, leads, tags, ems, strict=True):
                if n:
                    tg = np.concatenate([np.zeros(n, tg.dtype), tg])
                    em = np.concatenate([np.zeros((n, em.shape[1]), em.dtype), em])
                tags_of[(k, a)] = (tg[:b - a], em[:b - a])
        if tags_of:  # a skipped sentence's characters are all outside any span
            some_tags, some_em = next(iter(tags_of.values()))
            for i in plain:
                k, a, b = pieces[i]
                tags_of[(k, a)] = (np.zeros(b - a, some_tags.dtype), np.zeros((b - a, some_em.shape[1]), some_em.dtype))
        tagged = {pieces[i][0] for i in order}
        by_text: dict[int, list[tuple[int, int, int]]] = {}
        for p in pieces:
            by_text.setdefault(p[0], []).append(p)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for k in range(len(norm)):
            parts = [tags_of[(k, a)] for _, a, _ in by_text.get(k, []) if (k, a) in tags_of]
            if not parts or k not in tagged:  # nothing Chinese in the text: no units
                out.append(None)
                continue
            tg = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            em = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            out.append((tg, em))
        return out

    def iter_extract(self, texts: Iterable[str], chunk: int = 1024) -> Iterator[list[Aspect]]:
        buf: list[str] = []
        for t in texts:
            buf.append(t)
            if len(buf) >= chunk:
                yield from self.extract_many(buf)
                buf = []
        if buf:
            yield from self.extract_many(buf)

    def _units(self, original: str, text: str, tags: np.ndarray, em: np.ndarray,
               breaks: Sequence[int] = ()) -> list[Aspect]:
        found = _cut_at(spans(tags), breaks)
        found = _trim_punctuation(text, found)
        if _LATIN.search(text):  # trimmed again: an opinion that starts after a grown word starts at its space
            found = _trim_punctuation(text, _whole_words(text, found))
        found = _whole_terms(text, found, self._category_terms)
        aspects = [(a, b) for a, b, kind in found if kind == 1]
        opinions = [(a, b, kind) for a, b, kind in found if kind != 1]
        if self.seed_opinions:
            aspects, opinions = _add_seed_opinions(text, aspects, opinions, self.tagger._lex[0])
        if not opinions:
            return []
        pairs = pair(text, aspects, [(a, b) for a, b, _ in opinions])
        opinions, pairs = _split_own_subject(text, opinions, pairs, self.tagger._lex[0])
        relabel = isinstance(self.tagger, NeuralTagger)  # the neural tagger's strength: relabelled path scores
        if not relabel:  # the perceptron's: per position, the best B-/I- score of each polarity; cumulative, so
            # a span's mean is two lookups
            cum = np.vstack([np.zeros((1, 3), np.float32),
                             np.cumsum(np.maximum(em[:, [3, 5, 7]], em[:, [4, 6, 8]]), 0)]).tolist()
        units: list[Aspect] = []
        for (o0, o1, kind), targets in zip(opinions, pairs, strict=True):
            polarity = OPINION_POLARITY[kind % 100]
            if relabel:
                mean = self._relabelled(em, tags, o0, o1)
            else:
                mean = [(hi - lo) / (o1 - o0) for lo, hi in zip(cum[o0], cum[o1], strict=True)]
            if kind >= 100:  # a seed-word opinion the tagger missed: its strength from the word list
                polarity = OPINION_POLARITY[kind - 100]
                mean = [2.0, 0.0, -2.0] if polarity == "positive" else [-2.0, 0.0, 2.0]
            elif (flipped := _listed_polarity(text, o0, o1, polarity != "neutral")) and flipped != polarity:
                polarity = flipped
                mean = [2.0, 0.0, -2.0] if polarity == "positive" else [-2.0, 0.0, 2.0]
            score = self._strength(mean, polarity)
            opinion = original[o0:o1]
            for a in targets or [None]:
                term = original[a[0]:a[1]] if a else None
                norm_term = text[a[0]:a[1]] if a else None
                category = self.categories.assign(norm_term, text[o0:o1]) if self.categories else None
                units.append(Aspect(term, opinion, polarity, score, category, a, (o0, o1)))
        units.sort(key=lambda u: (u.aspect_span or u.opinion_span)[0] if u.aspect_span and u.aspect_span[0] < u.opinion_span[0]
                   else u.opinion_span[0])
        return units

    def _relabelled(self, em: np.ndarray, tags: np.ndarray, o0: int, o1: int) -> list[float]:
        """The neural tagger's scores of the decoded path with the span (o0, o1) relabelled as a positive,
        neutral and negative opinion (its emissions and the transitions into, inside and out of it). Why:
        a CRF's per-character emissions leave much to the transitions, so their span means (the
        perceptron's strength) disagree with the decoded polarity for 7% of the tuning half's units;
        the relabelled path scores never rank another polarity above the decoded one."""
        tr, st = self.tagger.trans, self.tagger.start
        n = o1 - o0
        prev = int(tags[o0 - 1]) if o0 > 0 else None
        nxt = int(tags[o1]) if o1 < len(tags) else None
        out = []
        for b in (3, 5, 7):
            i = b + 1
            s = float(em[o0, b] + em[o0 + 1:o1, i].sum())
            s += float(st[b]) if prev is None else float(tr[prev, b])
            if n > 1:
                s += float(tr[b, i]) + float(tr[i, i]) * (n - 2)
            if nxt is not None:
                s += float(tr[i if n > 1 else b, nxt])
            out.append(s)
        return out

    def _strength(self, mean: list[float], polarity: str) -> float:
        """P(positive) - P(negative) from the span's mean opinion-tag scores (positive, neutral, negative),
        its sign kept equal to the polarity."""
        top = max(mean)
        z = [math.exp((m - top) / self.temperature) for m in mean]
        s = (z[0] - z[2]) / sum(z)
        if polarity == "positive":
            s = max(s, 0.05)
        elif polarity == "negative":
            s = min(s, -0.05)
        else:
            s = float(np.clip(s, -0.3, 0.3))
        return round(s, 4)
