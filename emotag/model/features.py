"""text -> features: normalisation, sentence windows, WordPiece ids and hashed character n-grams.

Torch-free and shared by training, the torch backend and the ONNX backend, so every path feeds the
network identical arrays. The hot loop is vectorised: tokenisation runs in the Rust `tokenizers`
library over whole batches, n-gram hashing is a handful of numpy operations per text.
"""

from __future__ import annotations

import os
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


@dataclass
class Prepared:
    """One input text after normalisation, cut into windows that each fit the encoder."""

    normalized: str
    windows: list[str]
    signals: dict[str, int] = field(default_factory=dict)

    @property
    def weights(self) -> list[float]:
        """Window weights for combining scores: proportional to window length."""
        total = sum(len(w) for w in self.windows) or 1
        return [len(w) / total for w in self.windows]


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


class Featurizer:
    """Turns raw texts into model inputs exactly as the model was trained."""

    def __init__(self, tokenizer: Tokenizer, config: EmotagConfig) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], config: EmotagConfig | None = None) -> Featurizer:
        config = config or EmotagConfig.load(directory)
        path = Path(directory) / TOKENIZER_NAME
        if not path.exists():
            raise FileNotFoundError(f"{directory}: no {TOKENIZER_NAME}")
        return cls(Tokenizer.from_file(str(path)), config)

    def prepare(self, text: str) -> Prepared:
        """Normalise and window one text. An empty result has no windows (the caller reports an error)."""
        from emotag.text.sentences import windows as sentence_windows

        norm = normalize(text, self.config.normalization)
        wins = sentence_windows(norm.text, self.config.window_chars) if norm.text else []
        return Prepared(normalized=norm.text, windows=[w for w in wins if w.strip()], signals=norm.signals)

    def encode(self, windows: list[str]) -> Batch:
        """Token ids and n-gram ids for already-normalised windows (<= window_chars characters each)."""
        max_len = self.config.max_length
        encs = self.tokenizer.encode_batch(windows)
        lengths = [min(len(e.ids), max_len) for e in encs]
        width = max(lengths) if lengths else 1
        ids = np.full((len(encs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, (e, n) in enumerate(zip(encs, lengths, strict=True)):
            tok = e.ids
            if len(tok) > max_len:  # only reachable for callers that bypass windows (training)
                tok = tok[: max_len - 1] + tok[-1:]
            ids[i, :n] = tok
            mask[i, :n] = 1
        grams = [hash_ngrams(w, self.config.ngram) for w in windows]
        gwidth = max((g.shape[0] for g in grams), default=0) or 1
        ngram_ids = np.zeros((len(windows), gwidth), dtype=np.int64)
        for i, g in enumerate(grams):
            ngram_ids[i, : g.shape[0]] = g
        return Batch(ids, mask, ngram_ids)
