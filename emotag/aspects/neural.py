"""The neural span tagger (tagger v3): character embeddings, dilated 1-D convolutions, CRF emissions.

Why: the perceptron (tagger.py) sees fixed n-gram windows, and its main error is where an opinion span
begins and ends (this data annotates long, clause-spanning opinions). Stacked dilated convolutions see
+-15 characters at a cost that is a few small matrix products per sentence batch, in numpy, so scoring
needs neither torch nor onnxruntime.

Inputs per character: its id (the embedding table starts from the bundled network's token embeddings,
projected to the tagger's width and folded into one table at export), the five lexicon marks of
features.py (aspect, positive, negative, negation, degree: none / begin / inside / end / single), and the
distances from / to the clause boundaries (capped at 6); optionally, when a model has the tables, the
character bigram and the longest dictionary word (`word_codes`) starting there. Each input is a table row
of the same width; their sum goes through `len(dilations)` residual blocks
`h += relu(conv_k3_dilation_d(h))` (zeros past a sentence's ends, as one sentence alone), then a linear
layer gives the nine tag scores that tagger.viterbi decodes with the learned transitions. Training (emotag/aspects/neural_train.py, torch, CRF loss) is only
needed to rebuild `resources/neural.npz`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from emotag.aspects.features import CLAUSE_CHARS, LEXICONS, lexicon_marks, lexicon_pattern
from emotag.aspects.tagger import N_TAGS, viterbi, with_aspect_terms

MAX_DIST = 6  # clause distances 0..6
N_MARKS = 5  # lexicon_marks codes 0..4
_CLAUSE_CODES = np.array([ord(c) for c in CLAUSE_CHARS], dtype=np.uint32)
UNK = 1  # id of an unknown character (0 is padding)


def clause_distances(joined: str) -> tuple[np.ndarray, np.ndarray]:
    """Per character of `joined`, the distance (1..MAX_DIST) from the last clause boundary before it and
    to the next one after it; the ends of the text count as boundaries, and texts joined by a newline see
    only their own (a newline is a boundary)."""
    n = len(joined)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) if n else np.zeros(0, np.uint32)
    idx = np.arange(n, dtype=np.int64)
    bnd = np.isin(codes, _CLAUSE_CODES)
    last = np.maximum.accumulate(np.where(bnd, idx, -1)) if n else idx
    nxt = np.minimum.accumulate(np.where(bnd, idx, n)[::-1])[::-1] if n else idx
    last_before = np.concatenate([[-1], last[:-1]]) if n else idx
    next_after = np.concatenate([nxt[1:], [n]]) if n else idx
    return np.minimum(idx - last_before, MAX_DIST), np.minimum(next_after - idx, MAX_DIST)


def bigram_keys(cps: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per position, a key for (this character, the next one); the last character of a text pairs with a
    newline (code 10)."""
    nxt = np.empty_like(cps, dtype=np.uint64)
    if len(cps):
        nxt[:-1] = cps[1:]
        nxt[-1] = 10
        nxt[ends] = 10
    return cps.astype(np.uint64) * np.uint64(0x110000) + nxt


WORD_MAX = 4  # dictionary words are looked up up to this many characters
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


def word_hashes(words: Iterable[str]) -> np.ndarray:
    """The 64-bit key of each word (1..WORD_MAX characters) as `word_codes` computes it in running text."""
    mul, out = int(_HASH_MUL), []
    for w in words:
        h = 0
        for c in w:
            h = (h * mul + ord(c) + 1) & 0xFFFFFFFFFFFFFFFF
        out.append(h)
    return np.array(out, dtype=np.uint64)


def word_codes(cps: np.ndarray, keys: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per position of `cps` (code points of texts joined by newlines): the code of the longest dictionary
    word (sorted `keys`, from word_hashes, with their `codes`) that starts there, 0 when none does. Why: a
    dictionary of a lexical analyser's words with each word's part of speech, read in one vectorised pass,
    tells the tagger where words begin and what they are at the cost of a few searchsorted calls."""
    n = len(cps)
    out = np.zeros(n, np.int64)
    if not n or not len(keys):
        return out
    with np.errstate(over="ignore"):
        v = cps.astype(np.uint64) + np.uint64(1)
        h = np.zeros(n, np.uint64)
        ok = np.ones(n, bool)
        for k in range(1, WORD_MAX + 1):
            nxt = np.zeros(n, np.uint64)
            if k <= n:
                nxt[:n - k + 1] = v[k - 1:]
            h = h * _HASH_MUL + nxt
            ok &= np.concatenate([cps[k - 1:] != 10, np.zeros(k - 1, bool)]) if k > 1 else cps != 10
            if k > 1:
                ok[n - k + 1:] = False
            at = np.minimum(np.searchsorted(keys, h), len(keys) - 1)
            hit = ok & (keys[at] == h)
            out[hit] = codes[at[hit]]  # longer words overwrite shorter ones
    return out


def encode(texts: Sequence[str], char_ids: dict[str, int] | np.ndarray, patterns: Sequence[object],
           bigrams: np.ndarray | None = None, words: tuple[np.ndarray, np.ndarray] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [N], codes [N, 1 + len(LEXICONS) + 2 (+ 1)], offsets [len(texts) + 1]) for normalised texts,
    all positions of all texts in one flat array: column 0 the character id, then the lexicon marks, then
    the clause distances from / to the boundaries, then (with `bigrams`, sorted bigram keys) the row of the
    character bigram starting here (0 = not listed), then (with `words`, word_codes' keys and codes) the code
    of the longest dictionary word starting here. `char_ids` is a dict or a code-point lookup array."""
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    offsets = np.concatenate([[0], np.cumsum(lens)])
    joined = "\n".join(texts)
    keep = np.ones(len(joined), dtype=bool)
    if len(texts) > 1:
        keep[np.cumsum(lens[:-1]) + np.arange(len(lens) - 1)] = False
    all_cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) if joined else np.zeros(0, np.uint32)
    cps = all_cps[keep]
    if isinstance(char_ids, np.ndarray):
        ids = char_ids[np.minimum(cps, len(char_ids) - 1)].astype(np.int64)
    else:
        ids = np.array([char_ids.get(chr(c), UNK) for c in cps.tolist()], dtype=np.int64)
    marks = lexicon_marks(joined, list(patterns))
    ds, de = clause_distances(joined)
    cols = [ids] + [m[keep] for m in marks] + [ds[keep], de[keep]]
    if bigrams is not None:
        keys = bigram_keys(cps, offsets[1:][lens > 0] - 1)
        at = np.minimum(np.searchsorted(bigrams, keys), max(len(bigrams) - 1, 0))
        cols.append(np.where(bigrams[at] == keys, at + 1, 0) if len(bigrams) else np.zeros(len(keys), np.int64))
    if words is not None:
        cols.append(word_codes(all_cps, *words)[keep])
    return ids, np.stack(cols, 1).astype(np.int64), offsets


class NeuralTagger:
    """Numpy forward of the trained network; the same interface as tagger.SpanTagger (tag, lexicons,
    with_aspect_terms), so the extractor, pairing, categories and polarity logic are shared."""

    def __init__(self, vocab: list[str], arrays: dict[str, np.ndarray], lexicons: dict[str, list[str]]) -> None:
        self.vocab = vocab
        self.lexicons = lexicons
        self.dilations = [int(d) for d in arrays["dilations"]]
        self.tables = [arrays["char_table"].astype(np.float32)] + [
            arrays[f"input_table_{j}"].astype(np.float32) for j in range(len(LEXICONS) + 2)]
        self.bigrams = arrays.get("bigram_keys")
        if self.bigrams is not None:
            self.tables.append(arrays["bigram_table"].astype(np.float32))
        self.words = (arrays["word_keys"], arrays["word_codes"].astype(np.int64)) if "word_keys" in arrays else None
        if self.words is not None:
            self.tables.append(arrays["word_table"].astype(np.float32))
        self.in_bias = arrays["in_bias"].astype(np.float32)
        # conv weights stored [layer, tap, in, out]
        self.conv_w = arrays["conv_w"].astype(np.float32)
        self.conv_b = arrays["conv_b"].astype(np.float32)
        self.out_w = arrays["out_w"].astype(np.float32)  # [C, T]
        self.out_b = arrays["out_b"].astype(np.float32)
        self.trans = arrays["trans"].astype(np.float32)
        self.start = arrays["start"].astype(np.float32)
        # added to the outside tag's score before decoding (chosen on the tuning half): below zero, more
        # and longer spans (recall), above zero fewer
        self.o_bias = float(arrays["o_bias"][0]) if "o_bias" in arrays else 0.0
        size = max(0x3000, max((ord(c) for c in vocab if len(c) == 1), default=0) + 2)
        lut = np.full(size, UNK, dtype=np.int32)
        for i, c in enumerate(vocab):
            if i > UNK and len(c) == 1:
                lut[ord(c)] = i
        lut[-1] = UNK  # code points past the table clip to its last slot
        self._lut = lut
        self._lex = [lexicon_pattern(self.lexicons.get(name, ())) for name in LEXICONS]

    @classmethod
    def load(cls, path: str | Path) -> NeuralTagger:
        path = Path(path)
        with np.load(path / "neural.npz") as z:
            arrays = {k: z[k] for k in z.files}
        vocab = json.loads((path / "neural_vocab.json").read_text(encoding="utf-8"))
        lexicons = json.loads((path / "lexicons.json").read_text(encoding="utf-8"))
        return cls(vocab, arrays, lexicons)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"char_table": self.tables[0].astype(np.float16), "in_bias": self.in_bias, "conv_w": self.conv_w.astype(np.float16),
               "conv_b": self.conv_b, "out_w": self.out_w, "out_b": self.out_b, "trans": self.trans, "start": self.start,
               "dilations": np.array(self.dilations, np.int64),
               "o_bias": np.array([self.o_bias], np.float32)}
        for j, t in enumerate(self.tables[1:len(LEXICONS) + 3]):
            out[f"input_table_{j}"] = t
        if self.bigrams is not None:
            out["bigram_keys"] = self.bigrams
            out["bigram_table"] = self.tables[len(LEXICONS) + 3].astype(np.float16)
        if self.words is not None:
            out["word_keys"], out["word_codes"] = self.words[0], self.words[1].astype(np.int16)
            out["word_table"] = self.tables[-1].astype(np.float16)
        return out

    def save(self, path: str | Path) -> None:
        """neural.npz (float16 tables and convolutions), neural_vocab.json and lexicons.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / "neural.npz", **self.arrays())
        (path / "neural_vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        (path / "lexicons.json").write_text(json.dumps(self.lexicons, ensure_ascii=False, sort_keys=True),
                                            encoding="utf-8")

    def with_aspect_terms(self, terms: Iterable[str]) -> NeuralTagger:
        """A copy (sharing the weights) whose aspect lexicon also holds `terms` (a user's category terms);
        the rule is SpanTagger's (`tagger.with_aspect_terms`)."""
        return with_aspect_terms(self, terms)

    def emissions(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tag scores [B, L, T] (padded with zeros) and lengths, for normalised texts."""
        _, codes, offsets = encode(texts, self._lut, self._lex, self.bigrams, self.words)
        lengths = np.diff(offsets)
        B, L = len(texts), max(int(lengths.max()) if len(lengths) else 0, 1)
        h_flat = self.tables[0][codes[:, 0]] + self.in_bias
        for j, t in enumerate(self.tables[1:]):
            h_flat += t[codes[:, j + 1]]
        C = h_flat.shape[1]
        mask = np.arange(L)[None, :] < lengths[:, None]
        pad = max(self.dilations, default=0)
        h = np.zeros((B, L + 2 * pad, C), np.float32)  # zeros either side of every sentence
        inner = h[:, pad:pad + L]
        inner[mask] = h_flat
        for layer, d in enumerate(self.dilations):
            w = self.conv_w[layer]
            y = h[:, pad - d:pad - d + L] @ w[0]
            y += inner @ w[1]
            y += h[:, pad + d:pad + d + L] @ w[2]
            y += self.conv_b[layer]
            np.maximum(y, 0, out=y)
            y[~mask] = 0
            inner += y
        em = inner @ self.out_w + self.out_b
        em[..., 0] += self.o_bias
        em[~mask] = 0
        return em, lengths

    def tag(self, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text: its tag ids and emission rows (for opinion strength)."""
        if not texts:
            return [], []
        em, lengths = self.emissions(texts)
        tags = viterbi(em, lengths, self.trans, self.start)
        return [tags[k, :n] for k, n in enumerate(lengths)], [em[k, :n] for k, n in enumerate(lengths)]


__all__ = ["N_TAGS", "NeuralTagger", "clause_distances", "encode", "word_codes", "word_hashes"]
