"""Characters -> feature keys for the aspect tagger (no torch, no model directory).

The tagger reads a *character-aligned* normalisation of the text: every input character maps to exactly
one character (traditional -> simplified per character, full -> half width, lower case), so a span found
in the normalised text is the same span in the text as the user gave it. emotag's scoring normalisation
(emoji -> words, repeat collapsing, masking) changes lengths and is not used here; an emoji reads as a
comma (norm_char), a clause break, which is how reviews use one.

Features are 64-bit integer keys computed with numpy for a whole batch of texts at once: character
uni/bi/trigrams at fixed offsets around each position, plus lexicon-match features (a position inside a
known aspect term, opinion word, negation or degree word), and the optional groups a model names
(EXTRA_GROUPS: a wider window, clause distances, earlier aspect terms, the next opinion word ahead). Keys
are looked up in the tagger's hash table, so scoring a chunk is a handful of array operations.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import emoji
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


# emoji and other pictographs, their skin-tone modifiers, joiners, presentation selectors and tabs: the tagger
# reads them as a clause break (a comma), which is how reviews use them (物流很快😂包装破损了). Read as unknown
# characters, a leading 🙂 became the first character of an aspect (🙂包 | 装破损了).
_SYMBOL_CATEGORIES = ("So", "Sk")
_JOINERS = "\u200d\ufe0e\ufe0f\t"  # and a tab: between clauses it is a comma too


def norm_char(c: str) -> str:
    """One character in, one character out: simplified, half width, lower case; a pictograph reads as a comma."""
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
        # after NFKC: a Kangxi radical (⼤, category So) is 大 by then, an emoji still a pictograph
        if c in _JOINERS or unicodedata.category(out) in _SYMBOL_CATEGORIES:
            out = ","  # the half-width comma that ， normalises to
        _char_cache[c] = out
    return out


def normalize_aligned(text: str) -> str:
    """The text the tagger reads: same length as `text`, position for position."""
    return "".join(map(norm_char, text))


def break_positions(text: str, norm: str) -> list[int]:
    """Positions of `text` that `normalize_aligned` (given as `norm`) made a comma although they hold none: an
    emoji, its modifiers and joiners, a tab (`_is_break`). Why: the normalised text no longer tells them from a
    real comma, and the two differ for spans: an opinion may run across a comma (包装很严实，一点没压坏 is one
    in the training data), never across an emoji (价格很便宜👍瓶子漏液了 is two)."""
    if "," not in norm:
        return []
    return [i for i, (c, n) in enumerate(zip(text, norm, strict=True)) if n == "," and _is_break(c)]


def _is_break(c: str) -> bool:
    """An emoji (not ©, ® or ™), a joiner or selector of one, or a tab. Not every symbol `norm_char` reads as
    a comma: 40℃, 20㎡, 5° and ★ sit inside a clause (水温只有40℃不够热 is one opinion)."""
    return c in _JOINERS or (c not in "©®™" and emoji.is_emoji(c))


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


# optional feature groups a model names in its lexicons.json ("features"); a model without the entry reads
# exactly the base templates, so older resources load and score unchanged
EXTRA_GROUPS = ("clause", "lexshift", "wide", "wider", "prior", "ahead")
# characters that end a clause (and the text's padding): opinions run to one far more often than not
CLAUSE_CHARS = "，,。！!？?；;、：:~…\n "
WIDE_TEMPLATES: tuple[tuple[int, tuple[int, ...]], ...] = ((20, (-4,)), (21, (4,)), (22, (-4, -3)), (23, (3, 4)))
WIDER_TEMPLATES: tuple[tuple[int, tuple[int, ...]], ...] = ((24, (-5,)), (25, (5,)), (26, (-6,)), (27, (6,)))
CLAUSE_TEMPLATE = 70
MAX_DIST = 6
SENTENCE_CHARS = "。！!？?；;~…\n"


def _opinion_ahead(joined: str, opinion_marks: np.ndarray) -> np.ndarray:
    """Per position of `joined`, how far ahead (0..4, 5 = none) the next known opinion word begins within
    the same clause. Why: an opinion here often starts at the clause start or right after its aspect,
    several characters before the word that carries it (也是非常软绵可口)."""
    n = len(joined)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) if n else np.zeros(0, np.uint32)
    idx = np.arange(n, dtype=np.int64)
    bnd = np.isin(codes, np.array([ord(c) for c in SENTENCE_CHARS + CLAUSE_CHARS], dtype=np.uint32))
    nxt_b = np.minimum.accumulate(np.where(bnd, idx, n)[::-1])[::-1]
    starts = (opinion_marks == 1) | (opinion_marks == 4)
    nxt_o = np.minimum.accumulate(np.where(starts, idx, n)[::-1])[::-1]
    dist = np.minimum(nxt_o - idx, 5)
    return np.where(nxt_o < nxt_b, dist, 5).astype(np.uint64)


def _prior_aspects(joined: str, aspect_marks: np.ndarray) -> np.ndarray:
    """Per position of `joined`, a code for the known aspect terms that begin before it: in its sentence
    (0, 1, 2+) and in its clause (0, 1+). Why: this data labels 味道 as the aspect in 味道不错 but as part
    of the opinion in 华夫味道一般, where an earlier term is the aspect; a linear tagger needs to see it."""
    n = len(joined)
    starts = ((aspect_marks == 1) | (aspect_marks == 4)).astype(np.int64)
    before = np.concatenate([[0], np.cumsum(starts)[:-1]])  # starts strictly before each position
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) if n else np.zeros(0, np.uint32)
    idx = np.arange(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.uint64)
    for mult, chars, cap in ((3, SENTENCE_CHARS, 2), (1, SENTENCE_CHARS + CLAUSE_CHARS, 1)):
        bnd = np.isin(codes, np.array([ord(c) for c in chars], dtype=np.uint32))
        last = np.maximum.accumulate(np.where(bnd, idx, -1))  # the last boundary at or before i
        base = np.where(last >= 0, before[np.maximum(last, 0)] + starts[np.maximum(last, 0)], 0)
        out += np.uint64(mult) * np.minimum(before - base, cap).astype(np.uint64)
    return out


def _clause_distances(padded: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the distance (capped at MAX_DIST) from the last clause boundary before it and to the
    next one after it; 1 = the position is right after / right before a boundary. Why: 89% of the
    training opinions end right before punctuation and most start right after it or after their aspect,
    which character n-grams within +-3 cannot see in a longer clause."""
    codes = np.array([ord(c) for c in CLAUSE_CHARS] + [_BOS, _EOS], dtype=np.uint64)
    bnd = np.isin(padded, codes)
    idx = np.arange(len(padded), dtype=np.int64)
    last = np.maximum.accumulate(np.where(bnd, idx, -1))
    nxt = np.minimum.accumulate(np.where(bnd, idx, len(padded))[::-1])[::-1]
    d_start = np.minimum(pos - last[pos - 1], MAX_DIST)
    d_end = np.minimum(nxt[pos + 1] - pos, MAX_DIST)
    return d_start.astype(np.uint64), d_end.astype(np.uint64)


def feature_keys(texts: Sequence[str], lexicons: Sequence[re.Pattern[str] | None] = (),
                 extra: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Keys for every position of every (normalised) text: (keys [n_positions, n_features], text offsets).

    offsets[k]:offsets[k+1] are text k's rows. `extra` names optional groups (EXTRA_GROUPS): "clause"
    (distance from / to the clause boundaries, alone and with the character), "lexshift" (the aspect
    lexicon mark and the all-lexicon combination one position left and right), "wide" (characters at +-4).
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
    templates = NGRAM_TEMPLATES + (WIDE_TEMPLATES if "wide" in extra else ()) + (WIDER_TEMPLATES if "wider" in extra else ())
    if "wide" in extra or "wider" in extra:
        # three more boundary characters at each end of the batch; inside it, offsets up to +-6 see the
        # neighbours' padding (EOS before, BOS after), so the first and last texts see the same
        padded = np.concatenate([np.full(PAD, _EOS, np.uint64), padded, np.full(PAD, _BOS, np.uint64)])
        pos = pos + PAD
    n_clause = 3 if "clause" in extra else 0
    n_shift = 4 if ("lexshift" in extra and n_lex) else 0
    n_prior = 2 if ("prior" in extra and n_lex) else 0
    n_ahead = 2 if ("ahead" in extra and n_lex) else 0
    base = len(templates) + n_lex + (1 if n_lex else 0)
    keys = np.empty((len(pos), base + n_clause + n_shift + n_prior + n_ahead), dtype=np.uint64)
    with np.errstate(over="ignore"):
        if n_clause:
            ds, de = _clause_distances(padded, pos)
            t = np.uint64(CLAUSE_TEMPLATE)
            keys[:, base] = ((t + np.uint64(1)) * M + ds * np.uint64(8) + de) * M
            keys[:, base + 1] = ((t + np.uint64(2)) * M + ds) * M + padded[pos]
            keys[:, base + 2] = ((t + np.uint64(3)) * M + de) * M + padded[pos]
        for j, (tid, offs) in enumerate(templates):
            k = np.full(len(pos), tid + 1, dtype=np.uint64)
            for o in offs:
                k = k * M + padded[pos + o]
            keys[:, j] = k
        if n_lex:
            # one pass over the whole batch: texts joined by a newline (in no term), separators dropped after
            joined = "\n".join(texts)
            keep = np.ones(len(joined), dtype=bool)
            keep[np.cumsum(lens[:-1]) + np.arange(len(lens) - 1)] = False
            full = lexicon_marks(joined, lexicons)
            marks = [m[keep] for m in full]
            combo = np.zeros(len(pos), dtype=np.uint64)
            for li, m in enumerate(marks):
                m = m.astype(np.uint64)
                keys[:, len(templates) + li] = (np.uint64(LEX_TEMPLATE + li + 1) * M + m) * M
                combo = combo * np.uint64(5) + m
            keys[:, len(templates) + n_lex] = (np.uint64(LEX_TEMPLATE + 20) * M + combo) * M
            if n_shift:
                # neighbours in the joined text (the newline between texts marks nothing: code 0)
                combo_full = np.zeros(len(joined) + 2, dtype=np.uint64)
                for m in full:
                    combo_full[1:-1] = combo_full[1:-1] * np.uint64(5) + m.astype(np.uint64)
                asp_full = np.zeros(len(joined) + 2, dtype=np.uint64)
                asp_full[1:-1] = full[0]
                at = np.nonzero(keep)[0] + 1
                for j, (arr, shift) in enumerate(((asp_full, -1), (asp_full, 1), (combo_full, -1), (combo_full, 1))):
                    keys[:, base + n_clause + j] = (np.uint64(LEX_TEMPLATE + 30 + j) * M + arr[at + shift]) * M
            if n_prior:
                prior = _prior_aspects(joined, full[0])[keep]
                keys[:, base + n_clause + n_shift] = (np.uint64(LEX_TEMPLATE + 40) * M + prior) * M + marks[0].astype(np.uint64)
                keys[:, base + n_clause + n_shift + 1] = ((np.uint64(LEX_TEMPLATE + 41) * M + prior) * M
                                                          + marks[0].astype(np.uint64)) * M + padded[pos]
            if n_ahead:
                op_marks = np.where(full[1] > 0, full[1], full[2])
                ahead = _opinion_ahead(joined, op_marks)[keep]
                j = base + n_clause + n_shift + n_prior
                keys[:, j] = (np.uint64(LEX_TEMPLATE + 42) * M + ahead) * M + padded[pos]
                keys[:, j + 1] = ((np.uint64(LEX_TEMPLATE + 43) * M + ahead) * M + padded[pos - 1]) * M + padded[pos]
    return keys, offsets


def lexicon_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """The compiled matcher of a word list (None for an empty list)."""
    return _trie_pattern(terms)
