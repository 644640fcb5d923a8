"""Text -> opinion units (SPEC §7): aspect, opinion, polarity, score, category, spans into the input text.

Steps per chunk of texts: character-aligned normalisation (spans stay valid in the original), the span
tagger (aspect spans, opinion spans with their polarity), pairing each opinion with its aspect, and the
category of each unit. Pairing is a rule over the sentence structure: the nearest aspect before the
opinion in the same sentence (a review says 包装破损了 far more often than 破损了的包装), else the
nearest after it in the same clause, else none (an implicit aspect: 很好用, 超值). Aspects joined by
和/、/跟 share the opinion (服务和环境都很好 gives two units).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotag.aspects.features import normalize_aligned
from emotag.aspects.tagger import OPINION_POLARITY, SpanTagger, spans

RESOURCES = Path(__file__).resolve().parent / "resources"
SENTENCE_END = re.compile(r"[。！？!?；;\n]|\.(?!\d)|~{2,}|…+")
CLAUSE_END = re.compile(r"[，,、：:]")
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


def _boundaries(text: str, pattern: re.Pattern[str]) -> np.ndarray:
    """Segment index per character (a new segment after each boundary character)."""
    seg = np.zeros(len(text) + 1, dtype=np.int32)
    for m in pattern.finditer(text):
        seg[m.end():] += 1
    return seg


def pair(text: str, aspects: Sequence[tuple[int, int]], opinions: Sequence[tuple[int, int]]
         ) -> list[list[tuple[int, int] | None]]:
    """For each opinion span, the aspect spans it is about (an empty list = implicit)."""
    sent = _boundaries(text, SENTENCE_END)
    clause = _boundaries(text, re.compile(SENTENCE_END.pattern + "|" + CLAUSE_END.pattern))
    out: list[list[tuple[int, int] | None]] = []
    for o0, o1 in opinions:
        before = [a for a in aspects if a[1] <= o0 and sent[a[0]] == sent[o0]]
        after = [a for a in aspects if a[0] >= o1 and clause[a[0]] == clause[o1 - 1]]
        inside = [a for a in aspects if a[0] >= o0 and a[1] <= o1]
        if before:
            chosen = [before[-1]]
            # coordination: 服务和环境都很好 -> both
            k = len(before) - 1
            while k > 0:
                gap = text[before[k - 1][1]:before[k][0]]
                if gap in COORD:
                    chosen.insert(0, before[k - 1])
                    k -= 1
                else:
                    break
        elif after:
            chosen = [after[0]]
        elif inside:
            chosen = [inside[0]]
        else:
            chosen = []
        out.append(chosen)
    return out


class AspectExtractor:
    """Opinion units for texts. Load once (`AspectExtractor.load()`), call `extract_many` per chunk."""

    def __init__(self, tagger: SpanTagger, categories: Any = None, temperature: float = 1.0) -> None:
        self.tagger = tagger
        self.categories = categories
        self.temperature = temperature

    @classmethod
    def load(cls, categories: Any = None, path: str | Path | None = None) -> AspectExtractor:
        """The bundled tagger (or one from `path`) with a category set (None = the built-in one)."""
        from emotag.aspects.categories import CategorySet

        path = Path(path) if path else RESOURCES
        tagger = SpanTagger.load(path)
        if categories is None:
            categories = CategorySet.builtin(path)
        return cls(tagger, categories, float(tagger.lexicons.get("temperature", [1.0])[0]))

    def extract(self, text: str) -> list[Aspect]:
        return self.extract_many([text])[0]

    def extract_many(self, texts: Sequence[str], batch: int = 256) -> list[list[Aspect]]:
        """Units per text, in text order. Texts are tagged in length-sorted batches (little padding)."""
        out: list[list[Aspect]] = [[] for _ in texts]
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        for s in range(0, len(order), batch):
            sel = order[s:s + batch]
            norm = [normalize_aligned(texts[k]) for k in sel]
            tags, ems = self.tagger.tag(norm)
            for k, t, tg, em in zip(sel, norm, tags, ems, strict=True):
                out[k] = self._units(texts[k], t, tg, em)
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

    def _units(self, original: str, text: str, tags: np.ndarray, em: np.ndarray) -> list[Aspect]:
        found = spans(tags)
        aspects = [(a, b) for a, b, kind in found if kind == 1]
        opinions = [(a, b, kind) for a, b, kind in found if kind != 1]
        if not opinions:
            return []
        pairs = pair(text, aspects, [(a, b) for a, b, _ in opinions])
        units: list[Aspect] = []
        for (o0, o1, kind), targets in zip(opinions, pairs, strict=True):
            polarity = OPINION_POLARITY[kind]
            score = self._strength(em[o0:o1], polarity)
            opinion = original[o0:o1]
            for a in targets or [None]:
                term = original[a[0]:a[1]] if a else None
                norm_term = text[a[0]:a[1]] if a else None
                category = self.categories.assign(norm_term, text[o0:o1]) if self.categories else None
                units.append(Aspect(term, opinion, polarity, score, category, a, (o0, o1)))
        units.sort(key=lambda u: (u.aspect_span or u.opinion_span)[0] if u.aspect_span and u.aspect_span[0] < u.opinion_span[0]
                   else u.opinion_span[0])
        return units

    def _strength(self, em: np.ndarray, polarity: str) -> float:
        """P(positive) - P(negative) over the span's opinion tags, its sign kept equal to the polarity."""
        z = np.array([em[:, 3:5].max(1).mean(), em[:, 5:7].max(1).mean(), em[:, 7:9].max(1).mean()]) / self.temperature
        z = np.exp(z - z.max())
        p = z / z.sum()
        s = float(p[0] - p[2])
        if polarity == "positive":
            s = max(s, 0.05)
        elif polarity == "negative":
            s = min(s, -0.05)
        else:
            s = float(np.clip(s, -0.3, 0.3))
        return round(s, 4)
