"""The aspect/opinion sequence tagger: per-character tags decoded with batched Viterbi.

Tags (BIO): O, B/I-aspect, and B/I-opinion for each polarity (positive, neutral, negative). Emission
scores are sums of learned weights of the features in `features.py`; transitions are learned too, and
an I- tag can only follow its own B- or I- tag. Weights are trained by an averaged structured perceptron
(`scripts/train_aspects.py`) and stored as npz: sorted feature keys, a weight matrix, transitions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotag.aspects.features import LEXICONS, feature_keys, lexicon_pattern

TAGS = ("O", "B-A", "I-A", "B-positive", "I-positive", "B-neutral", "I-neutral", "B-negative", "I-negative")
N_TAGS = len(TAGS)
OPINION_POLARITY = {3: "positive", 4: "positive", 5: "neutral", 6: "neutral", 7: "negative", 8: "negative"}
NEG_INF = -1e9


def allowed_transitions() -> np.ndarray:
    """[from, to] mask: an I- tag only after the B- or I- tag of the same kind."""
    ok = np.ones((N_TAGS, N_TAGS), dtype=bool)
    for to in range(N_TAGS):
        if TAGS[to].startswith("I-"):
            ok[:, to] = False
            ok[to - 1, to] = ok[to, to] = True
    return ok


def allowed_starts() -> np.ndarray:
    return np.array([not t.startswith("I-") for t in TAGS])


def viterbi(em: np.ndarray, lengths: np.ndarray, trans: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Best tag paths for a batch: em [B, L, T] (padded), lengths [B] -> tags [B, L] (padding tags 0).

    Positions past a text's length keep its scores and point back to the same tag, so one backtrace from
    the last column serves every length.
    """
    B, L, T = em.shape
    ok = allowed_transitions()
    tr = np.where(ok, trans, NEG_INF)
    score = em[:, 0] + np.where(allowed_starts(), start, NEG_INF)
    back = np.zeros((B, L, T), dtype=np.int16)
    same = np.broadcast_to(np.arange(T, dtype=np.int16), (B, T))
    for i in range(1, L):
        cand = score[:, :, None] + tr[None]
        best = cand.argmax(1)
        new = np.take_along_axis(cand, best[:, None, :], 1)[:, 0] + em[:, i]
        active = (lengths > i)[:, None]
        score = np.where(active, new, score)
        back[:, i] = np.where(active, best, same)
    tags = np.zeros((B, L), dtype=np.int16)
    cur = score.argmax(1).astype(np.int16)
    rows = np.arange(B)
    for i in range(L - 1, -1, -1):
        tags[:, i] = cur
        cur = back[rows, i, cur]
    for b, n in enumerate(lengths):
        tags[b, n:] = 0
    return tags


@dataclass
class SpanTagger:
    """Learned weights plus the lexicons whose matches are features."""

    keys: np.ndarray  # sorted uint64 feature keys
    weights: np.ndarray  # [len(keys) + 1, N_TAGS]; the last row (unknown feature) is zero
    trans: np.ndarray  # [N_TAGS, N_TAGS]
    start: np.ndarray  # [N_TAGS]
    lexicons: dict[str, list[str]]

    def __post_init__(self) -> None:
        self._lex = [lexicon_pattern(self.lexicons.get(name, ())) for name in LEXICONS]
        self._build_table()

    def _build_table(self, probes: int = 8) -> None:
        """An open-addressing hash table over the feature keys (load <= 1/4): a lookup is a multiply, a
        shift and one gather, several times faster than a binary search over 10^5 keys; only the few keys
        whose home slot holds another key probe on (up to `probes` slots, so that every key finds one)."""
        n = len(self.keys)
        self._bits = max(8, int(np.ceil(np.log2(max(n, 1) * 4))))
        size = 1 << self._bits
        self._slot_key = np.zeros(size + probes, dtype=np.uint64)
        self._slot_row = np.full(size + probes, n, dtype=np.int64)  # n = the zero row
        home = self._hash(self.keys)
        todo = np.arange(n)
        for p in range(probes):
            if not len(todo):
                break
            slots = home[todo] + p
            free = self._slot_row[slots] == n
            slots, todo_free = slots[free], todo[free]
            _, first = np.unique(slots, return_index=True)
            self._slot_key[slots[first]] = self.keys[todo_free[first]]
            self._slot_row[slots[first]] = todo_free[first]
            placed = np.zeros(n, dtype=bool)
            placed[todo_free[first]] = True
            todo = todo[~placed[todo]]
        self._probes = probes
        # keys that found no slot (about one in 10^5 with 8 probes) keep weight zero, as if unseen

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - self._bits)).astype(np.int64)

    @classmethod
    def load(cls, path: str | Path) -> SpanTagger:
        path = Path(path)
        with np.load(path / "tagger.npz") as z:
            keys, weights, trans, start = z["keys"], z["weights"].astype(np.float32), z["trans"], z["start"]
        lexicons = json.loads((path / "lexicons.json").read_text(encoding="utf-8"))
        return cls(keys, np.vstack([weights, np.zeros((1, N_TAGS), np.float32)]), trans, start, lexicons)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / "tagger.npz", keys=self.keys, weights=self.weights[:-1].astype(np.float16),
                            trans=self.trans.astype(np.float32), start=self.start.astype(np.float32))
        (path / "lexicons.json").write_text(json.dumps(self.lexicons, ensure_ascii=False, sort_keys=True),
                                            encoding="utf-8")

    def with_aspect_terms(self, terms: Iterable[str]) -> SpanTagger:
        """A copy (sharing the weights) whose aspect lexicon also holds `terms`, e.g. a user's category
        terms; opinion words and single characters are left out."""
        return with_aspect_terms(self, terms)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row index per key; unknown keys point at the zero row. A key is not in the table once a probe
        meets an empty slot (insertion filled slots in probe order), so most keys need one gather."""
        n = len(self.keys)
        flat = keys.reshape(-1)
        home = self._hash(flat)
        rows = self._slot_row[home]
        # most keys settle at their home slot (a hit, or an empty slot: unknown); only the rest probe on
        todo = np.nonzero((rows != n) & (self._slot_key[home] != flat))[0]
        rows[todo] = n
        for p in range(1, self._probes):
            if not len(todo):
                break
            slot = home[todo] + p
            r = self._slot_row[slot]
            hit = self._slot_key[slot] == flat[todo]
            rows[todo[hit]] = r[hit]
            todo = todo[~hit & (r != n)]
        return rows.reshape(keys.shape)

    def emissions(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Emission scores [B, L, T] (padded) and lengths, for normalised texts."""
        keys, offsets = feature_keys(texts, self._lex, self.lexicons.get("features", ()))
        rows = self.lookup(keys)
        # one feature column at a time: no [positions, features, tags] temporary, 2-3x faster than a sum
        em_flat = self.weights[rows[:, 0]].copy() if rows.shape[1] else np.zeros((len(rows), N_TAGS), np.float32)
        for j in range(1, rows.shape[1]):
            em_flat += self.weights[rows[:, j]]
        lengths = np.diff(offsets)
        L = int(lengths.max()) if len(lengths) else 0
        em = np.zeros((len(texts), max(L, 1), N_TAGS), dtype=np.float32)
        mask = np.arange(max(L, 1))[None, :] < lengths[:, None]
        em[mask] = em_flat
        return em, lengths

    def tag(self, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text: its tag ids and emission rows (for opinion strength)."""
        em, lengths = self.emissions(texts)
        tags = viterbi(em, lengths, self.trans, self.start) if len(texts) else np.zeros((0, 0), np.int16)
        return [tags[k, :n] for k, n in enumerate(lengths)], [em[k, :n] for k, n in enumerate(lengths)]


def spans(tags: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, kind) spans from a tag path; kind is the B- tag id (1 aspect, 3/5/7 opinion)."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(tags)
    tl = tags.tolist()
    while i < n:
        t = tl[i]
        if t in (1, 3, 5, 7):
            j = i + 1
            while j < n and tl[j] == t + 1:
                j += 1
            out.append((i, j, t))
            i = j
        else:
            i += 1
    return out


def with_aspect_terms(tagger: Any, terms: Iterable[str]) -> Any:
    """A shallow copy of `tagger` (a SpanTagger or NeuralTagger: both read `lexicons` through `_lex`) whose
    aspect lexicon also holds `terms`; opinion words, known aspects and single characters are left out, and
    `tagger` itself comes back when nothing is new. Why one function: both taggers mark the same lexicons
    as features, so a user's category terms must reach them by the same rule."""
    opinion = set(tagger.lexicons.get("positive", ())) | set(tagger.lexicons.get("negative", ()))
    known = set(tagger.lexicons.get("aspect", ()))
    extra = {t for t in terms if len(t) >= 2 and t not in opinion and t not in known}
    if not extra:
        return tagger
    twin = copy.copy(tagger)
    twin.lexicons = dict(tagger.lexicons, aspect=sorted(known | extra))
    twin._lex = [lexicon_pattern(twin.lexicons.get(name, ())) for name in LEXICONS]
    return twin


def length_batches(rng: np.random.Generator, lengths: Sequence[int], batch: int) -> list[np.ndarray]:
    """One epoch's batches of row indices: shuffled, sorted by length within windows of 50 batches (little
    padding), then the batches shuffled. Why shared: the perceptron and the neural tagger train on the same
    sentences, and the same order for the same seed keeps their epochs comparable."""
    order = rng.permutation(len(lengths))
    win = batch * 50
    order = np.concatenate([sorted(order[s:s + win], key=lambda i: lengths[i]) for s in range(0, len(order), win)])
    batches = [order[s:s + batch] for s in range(0, len(order), batch)]
    rng.shuffle(batches)
    return batches
