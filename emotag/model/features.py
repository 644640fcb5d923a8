"""text -> features: normalisation, sentence windows, WordPiece ids and hashed character n-grams.

Torch-free and shared by training, the torch backend and the ONNX backend, so every path feeds the
network identical arrays. The hot loop is vectorised: tokenisation runs in the Rust `tokenizers`
library over whole batches, n-gram hashing is a handful of numpy operations per text.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from emotag.model.config import TOKENIZER_NAME, EmotagConfig, NgramConfig
from emotag.text.normalize import normalize

_PRIME = np.uint64(1099511628211)  # FNV-1a 64-bit prime
_SEEDS = {n: np.uint64((0xCBF29CE484222325 + 0x9E3779B97F4A7C15 * n) % (1 << 64)) for n in range(1, 8)}


def hash_ngrams(text: str, cfg: NgramConfig) -> np.ndarray:
    """Bucket ids (1..buckets-1; 0 is padding) of the character n-grams of `text`.

    FNV-style hashing of code points: deterministic across processes and platforms, unlike hash().
    """
    if cfg.buckets <= 1 or not text:
        return np.zeros(0, dtype=np.int64)
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts = []
    n_cp = cps.shape[0]
    with np.errstate(over="ignore"):
        for n in cfg.orders:
            if n_cp < n:
                continue
            m = n_cp - n + 1
            h = np.full(m, _SEEDS[n], dtype=np.uint64)
            for k in range(n):
                h = (h ^ cps[k : k + m]) * _PRIME
            parts.append(h)
    if not parts:
        return np.zeros(0, dtype=np.int64)
    h = np.concatenate(parts)
    return (h % np.uint64(cfg.buckets - 1)).astype(np.int64) + 1


def hash_ngrams_batch(texts: list[str], cfg: NgramConfig) -> np.ndarray:
    """`hash_ngrams` of many texts at once, as a (texts x width) matrix padded with 0.

    Row i holds exactly `hash_ngrams(texts[i], cfg)`, in the same order. Why: per-text numpy calls cost
    more than the hashing itself for review-length texts; here every order is one pass over all the
    texts' code points, and n-grams that would cross from one text into the next are dropped.
    """
    rows = len(texts)
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=rows)
    total = int(lens.sum())
    if cfg.buckets <= 1 or total == 0:
        return np.zeros((rows, 1), dtype=np.int64)
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    ends = np.cumsum(lens)
    row_of = np.repeat(np.arange(rows), lens)
    per_order = []
    with np.errstate(over="ignore"):
        for n in cfg.orders:
            m = total - n + 1
            if m <= 0:
                continue
            h = np.full(m, _SEEDS[n], dtype=np.uint64)
            for k in range(n):
                h = (h ^ cps[k : k + m]) * _PRIME
            r = row_of[:m]
            keep = np.arange(n - 1, total)[:m] < ends[r]  # the n-gram's last character is in its own text
            per_order.append((r[keep], (h[keep] % np.uint64(cfg.buckets - 1)).astype(np.int64) + 1))
    if not per_order:  # every text shorter than the smallest order
        return np.zeros((rows, 1), dtype=np.int64)
    counts = np.stack([np.bincount(r, minlength=rows) for r, _ in per_order], 1)
    out = np.zeros((rows, max(int(counts.sum(1).max()), 1)), dtype=np.int64)
    offset = np.zeros(rows, dtype=np.int64)  # where each row's ids of this order start
    for j, (r, ids) in enumerate(per_order):
        first = np.cumsum(counts[:, j]) - counts[:, j]  # index in `r` of each row's first n-gram
        out[r, offset[r] + np.arange(r.shape[0]) - first[r]] = ids
        offset += counts[:, j]
    return out


def lexical_buckets(grams: np.ndarray, buckets: int) -> np.ndarray:
    """Map n-gram ids (1..; 0 = padding) into a smaller table of `buckets` rows, keeping 0 for padding.

    The lexical experts (the network's TF-IDF expert, the dialogue read-out's) use this exact map.
    """
    grams = np.asarray(grams, dtype=np.int64)
    return np.where(grams > 0, (grams - 1) % (buckets - 1) + 1, 0)


def tfidf_terms(grams: np.ndarray, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One text's TF-IDF row as (bucket, value) per n-gram occurrence; repeated buckets add up to
    x[b] = count(b) * idf[b] / sqrt(sum_j idf[b_j]^2), the map every lexical expert uses."""
    b = lexical_buckets(grams, idf.shape[0])
    b = b[b > 0]
    w = idf[b].astype(np.float64)
    if b.size:
        w /= np.sqrt((w * w).sum()) or 1.0
    return b, w


def tfidf_dot(grams: np.ndarray, idf: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x . weight for the TF-IDF row x of one text (see `tfidf_terms`).

    `weight` is (buckets,) or (buckets, K); numpy only, so the scorer can use it without torch.
    """
    b, w = tfidf_terms(grams, idf)
    if b.size == 0:
        return np.zeros(weight.shape[1:], dtype=np.float64)
    return (weight[b].astype(np.float64) * (w if weight.ndim == 1 else w[:, None])).sum(0)


def _is_cjk(cp: int) -> bool:
    """The ideograph ranges BERT-style tokenizers isolate as single-character words."""
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def standalone_char_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Characters the tokenizer always emits as their own single token: CJK ideographs and punctuation.

    For a window made only of these (and whitespace), the token ids are a per-character lookup, which is
    ~10x faster than the general tokenizer. Characters that can start an added token (`[哈哈]`, `<url>`)
    are left out so such windows take the general path.
    """
    starts = {t.content[0] for t in tokenizer.get_added_tokens_decoder().values() if t.content}
    out = {}
    for tok, i in tokenizer.get_vocab(with_added_tokens=False).items():
        if len(tok) == 1 and tok not in starts and (_is_cjk(ord(tok)) or _is_punct(tok)):
            out[tok] = i
    return out


@dataclass
class Prepared:
    """One input text after normalisation, cut into windows that each fit the encoder."""

    normalized: str
    windows: list[str]
    signals: dict[str, int] = field(default_factory=dict)
    contrast_weight: float = 1.0

    @property
    def weights(self) -> list[float]:
        """Window weights for combining scores (`window_weights`)."""
        return window_weights(self.windows, self.contrast_weight)


def window_weights(windows: list[str], contrast_weight: float = 1.0) -> list[float]:
    """Each window's share of its text's scores: its length, times `contrast_weight` for every contrast
    turn at or before it (但是/可是/不过…, `text.sentences.turns_opinion`), normalised to sum 1.

    Why: in 物流很快但是包装破损了 the clause after the turn decides the review; a length-weighted mean
    gives the praise as much say as the complaint. The one weighting that scoring, eval and training use.
    """
    from emotag.text.sentences import turns_opinion

    level, raw = 0, []
    for w in windows:
        if contrast_weight != 1.0 and turns_opinion(w):
            level += 1
        raw.append(len(w) * contrast_weight**level)
    total = sum(raw) or 1.0
    return [r / total for r in raw]


@dataclass
class Batch:
    """The network's inputs for a batch of windows (int64 arrays, padded to the batch maximum)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    ngram_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "ngram_ids": self.ngram_ids}


def _tokenizer_model(tokenizer: Tokenizer) -> dict:
    """The tokenizer model's serialised settings ("type": "WordPiece", "BPE", "Unigram", ...; "byte_fallback")."""
    import json

    try:
        model = json.loads(tokenizer.to_str()).get("model", {})
    except (ValueError, AttributeError):
        return {}
    return model if isinstance(model, dict) else {}


class Featurizer:
    """Turns raw texts into model inputs exactly as the model was trained."""

    def __init__(self, tokenizer: Tokenizer, config: EmotagConfig) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0
        self._cls = tokenizer.token_to_id("[CLS]")
        self._sep = tokenizer.token_to_id("[SEP]")
        # WordPiece never makes more tokens than characters, so a window of window_chars characters
        # always fits; byte-level BPE or byte-fallback vocabularies can make three per character, and
        # their windows are measured in tokens (see prepare)
        model = _tokenizer_model(tokenizer)
        self._tokens_bounded_by_chars = model.get("type") == "WordPiece"
        # the longest window that surely fits max_length tokens without being tokenised to measure it:
        # WordPiece adds only [CLS]/[SEP] to one token per character at most; a Unigram vocabulary without
        # byte fallback (the pretrained USE encoder's) gives every piece at least one character, plus the
        # metaspace's leading "▁"; other vocabularies are always measured
        unigram = model.get("type") == "Unigram" and not model.get("byte_fallback")
        slack = 2 if self._tokens_bounded_by_chars else 3 if unigram else None
        self._fits_unmeasured = self.config.max_length - slack if slack is not None else 0
        # the per-character fast path is exact only where every CJK character is its own token
        # (WordPiece); a Unigram vocabulary merges characters into words (很快, 但是)
        self._fast = standalone_char_ids(tokenizer) if self._tokens_bounded_by_chars else {}

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], config: EmotagConfig | None = None) -> Featurizer:
        config = config or EmotagConfig.load(directory)
        path = Path(directory) / TOKENIZER_NAME
        if not path.exists():
            raise FileNotFoundError(f"{directory}: no {TOKENIZER_NAME}")
        return cls(Tokenizer.from_file(str(path)), config)

    def prepare(self, text: str, normalized: bool = False) -> Prepared:
        """Normalise (unless `normalized`) and window one text. An empty result has no windows (the caller
        reports an error)."""
        norm = None if normalized else normalize(text, self.config.normalization)
        clean = text if norm is None else norm.text
        return Prepared(normalized=clean, windows=self.windows(clean), signals={} if norm is None else norm.signals,
                        contrast_weight=self.config.contrast_weight)

    def windows(self, normalized: str) -> list[str]:
        """The windows of an already-normalised text: the one windowing that scoring, `emotag eval` and
        training (`train.trainer.EncodedSet`) all use, so they see the same windows of a long text."""
        from emotag.text.sentences import contrast_clauses

        wins = self.sentence_windows(normalized)
        if self.config.contrast_weight != 1.0:
            wins = [c for w in wins for c in contrast_clauses(w)]
        wins = [w for w in wins if w.strip()]
        return [part for w in wins for part in self._fit_tokens(w)]

    def sentence_windows(self, normalized: str) -> list[str]:
        """The first step of `windows`: sentence windows of at most `window_chars`, before any cut at contrast
        turns (what `Tagger` finds composer units in)."""
        from emotag.text.sentences import windows as sentence_windows

        return sentence_windows(normalized, self.config.window_chars) if normalized else []

    def _fit_tokens(self, window: str) -> list[str]:
        """`window`, halved until every part fits max_length tokens: nothing is cut off by the encoder."""
        if len(window) <= self._fits_unmeasured or len(window) < 2 \
                or len(self.token_ids([window])[0]) <= self.config.max_length:
            return [window]
        mid = len(window) // 2
        return [p for half in (window[:mid], window[mid:]) if half.strip() for p in self._fit_tokens(half)]

    def encode(self, windows: list[str], token_ids: list[list[int]] | None = None) -> Batch:
        """Token ids and n-gram ids for already-normalised windows (<= window_chars characters each);
        `token_ids`, when the caller already has them (`token_ids(windows)`), are used as they are."""
        max_len = self.config.max_length
        toks = self.token_ids(windows) if token_ids is None else token_ids
        lengths = [min(len(t), max_len) for t in toks]
        width = max(lengths) if lengths else 1
        ids = np.full((len(toks), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(toks), width), dtype=np.int64)
        for i, (tok, n) in enumerate(zip(toks, lengths, strict=True)):
            if len(tok) > max_len:  # only reachable for callers that bypass windows (training)
                tok = tok[: max_len - 1] + tok[-1:]
            ids[i, :n] = tok
            mask[i, :n] = 1
        return Batch(ids, mask, hash_ngrams_batch(windows, self.config.ngram))

    def token_ids(self, windows: list[str]) -> list[list[int]]:
        """Token ids with [CLS]/[SEP]; all-CJK/punctuation windows skip the general tokenizer."""
        out: list[list[int] | None] = []
        slow: list[int] = []
        fast, cls_id, sep_id = self._fast, self._cls, self._sep
        for i, w in enumerate(windows):
            ids = [cls_id]
            for ch in w:
                t = fast.get(ch)
                if t is None:
                    if ch.isspace():
                        continue
                    ids = None
                    break
                ids.append(t)
            if ids is None or cls_id is None or sep_id is None:
                out.append(None)
                slow.append(i)
            else:
                ids.append(sep_id)
                out.append(ids)
        if slow:
            for i, e in zip(slow, self.tokenizer.encode_batch([windows[i] for i in slow]), strict=True):
                out[i] = e.ids
        return out  # type: ignore[return-value]
