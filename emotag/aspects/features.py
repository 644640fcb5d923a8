"""Characters -> feature keys for the aspect tagger (no torch, no model directory).

The tagger reads a *character-aligned* normalisation of the text: every input character maps to exactly
one character (traditional -> simplified per character, full -> half width, lower case), so a span found
in the normalised text is the same span in the text as the user gave it. emotag's scoring normalisation
(emoji -> words, repeat collapsing, masking) changes lengths and is not used here; an emoji simply stays
one character the tagger can learn from.

Features are 64-bit integer keys computed with numpy for a whole batch of texts at once: character
uni/bi/trigrams at fixed offsets around each position, plus lexicon-match features (a position inside a
known aspect term, opinion word, negation or degree word). Keys are looked up in the model's sorted key
array with `np.searchsorted`, so scoring a chunk is a handful of array operations.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from emotag.text.normalize import _t2s

# (template id, offsets): character n-grams relative to the position
NGRAM_TEMPLATES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (0, (-3,)), (1, (-2,)), (2, (-1,)), (3, (0,)), (4, (1,)), (5, (2,)), (6, (3,)),
    (7, (-3, -2)), (8, (-2, -1)), (9, (-1, 0)), (10, (0, 1)), (11, (1, 2)), (12, (2, 3)),
    (13, (-2, -1, 0)), (14, (-1, 0, 1)), (15, (0, 1, 2)), (16, (-3, -2, -1)), (17, (1, 2, 3)),
)
PAD = 3  # boundary characters on each side of a text
LEX_TEMPLATE = 40  # lexicon-match features: template 40 + lexicon index
M = np.uint64(0x110003)  # > largest code point, so (template, c1, c2, c3) keys rarely collide
LEXICONS = ("aspect", "positive", "negative", "negation", "degree")
_BOS, _EOS = 1, 2

_char_cache: dict[str, str] = {}


def norm_char(c: str) -> str:
    """One character in, one character out: simplified, half width, lower case."""
    out = _char_cache.get(c)
    if out is None:
        converter, trad = _t2s()
        out = c
        if c in trad:
            s = converter.convert(c)
            out = s if len(s) == 1 else c
        if not ("\u4e00" <= out <= "\u9fff"):
            s = unicodedata.normalize("NFKC", out)
            out = s if len(s) == 1 else out
        out = out.lower() if len(out.lower()) == 1 else out
        _char_cache[c] = out
    return out


def normalize_aligned(text: str) -> str:
    """The text the tagger reads: same length as `text`, position for position."""
    return "".join(map(norm_char, text))


def _trie_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for a word list, as a character trie with longer continuations first, so that
    `finditer` does forward maximum matching at C speed (a flat alternation of thousands of words would
    try each word at each position)."""
    trie: dict = {}
    for t in terms:
        if not t:
            continue
        node = trie
        for ch in t:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items(), key=lambda kv: -_depth(kv[1])) if ch]
        if "" in node:
            alts.append("")
        if not alts:
            return ""
        if len(alts) == 1:
            return alts[0] if "" not in node else f"(?:{alts[0]})?"
        return "(?:" + "|".join(alts) + ")"

    body = build(trie)
    return re.compile(body) if body else None


def _depth(node: dict) -> int:
    return 1 + max((_depth(v) for k, v in node.items() if k), default=0)


def lexicon_marks(text: str, patterns: Sequence[re.Pattern[str] | None]) -> list[np.ndarray]:
    """Per lexicon, a code per position: 0 none, 1 begins a match, 2 inside, 3 ends, 4 a one-character match.

    Forward maximum matching (a term's longest match at the leftmost position, then on after it).
    """
    n = len(text)
    out = []
    for pat in patterns:
        marks = np.zeros(n, dtype=np.int64)
        spans = [m.span() for m in pat.finditer(text)] if pat is not None else []
        if spans:
            se = np.array(spans, dtype=np.int64).reshape(-1, 2)
            se = se[se[:, 1] > se[:, 0]]
            a, b = se[:, 0], se[:, 1]
            one = b - a == 1
            # inside positions (a, b-1) of the longer matches, by a running sum over +1/-1 boundaries
            inner = np.zeros(n + 1, dtype=np.int64)
            np.add.at(inner, a[~one] + 1, 1)
            np.add.at(inner, b[~one] - 1, -1)
            marks[np.cumsum(inner[:n]) > 0] = 2
            marks[b[~one] - 1] = 3
            marks[a[~one]] = 1
            marks[a[one]] = 4
        out.append(marks)
    return out


def feature_keys(texts: Sequence[str], lexicons: Sequence[re.Pattern[str] | None] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Keys for every position of every (normalised) text: (keys [n_positions, n_features], text offsets).

    offsets[k]:offsets[k+1] are text k's rows.
    """
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    # codes with PAD boundary characters around each text
    padded = np.zeros(int(lens.sum()) + 2 * PAD * len(texts), dtype=np.uint64)
    pos = np.empty(int(lens.sum()), dtype=np.int64)
    cursor = 0
    for k, t in enumerate(texts):
        padded[cursor:cursor + PAD] = _BOS
        body = np.frombuffer(t.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64) if t else np.zeros(0, np.uint64)
        padded[cursor + PAD:cursor + PAD + len(t)] = body
        pos[offsets[k]:offsets[k + 1]] = np.arange(cursor + PAD, cursor + PAD + len(t))
        cursor += PAD + len(t)
        padded[cursor:cursor + PAD] = _EOS
        cursor += PAD
    n_lex = len(lexicons)
    keys = np.empty((len(pos), len(NGRAM_TEMPLATES) + n_lex + (1 if n_lex else 0)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j, (tid, offs) in enumerate(NGRAM_TEMPLATES):
            k = np.full(len(pos), tid + 1, dtype=np.uint64)
            for o in offs:
                k = k * M + padded[pos + o]
            keys[:, j] = k
        if n_lex:
            # one pass over the whole batch: texts joined by a newline (in no term), separators dropped after
            joined = "\n".join(texts)
            keep = np.ones(len(joined), dtype=bool)
            keep[np.cumsum(lens[:-1]) + np.arange(len(lens) - 1)] = False
            marks = [m[keep] for m in lexicon_marks(joined, lexicons)]
            combo = np.zeros(len(pos), dtype=np.uint64)
            for li, m in enumerate(marks):
                m = m.astype(np.uint64)
                keys[:, len(NGRAM_TEMPLATES) + li] = (np.uint64(LEX_TEMPLATE + li + 1) * M + m) * M
                combo = combo * np.uint64(5) + m
            keys[:, len(NGRAM_TEMPLATES) + n_lex] = (np.uint64(LEX_TEMPLATE + 20) * M + combo) * M
    return keys, offsets


def lexicon_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """The compiled matcher of a word list (None for an empty list)."""
    return _trie_pattern(terms)
