"""The numbers emotag reports, in one place: macro-F1, per-class recall, confusion, ECE, temperature.

`emotag eval`, the multi-task trainer and `emotag train` (fine-tuning) all call these, so a macro-F1 in a
training report and one printed by `emotag eval` are the same computation. numpy only (no sklearn): the
scorer's light install can evaluate too.

Scores of a long text come from several windows; `combine_windows` is the one place that turns window
probabilities into text probabilities the way `Tagger` does (a length-weighted sum), so a dev metric
computed during training is the metric of what scoring returns.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np


def softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    """Row-wise softmax of z / t in float64 (the scorer's precision)."""
    z = np.asarray(z, dtype=np.float64) / t
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def combine_windows(values: np.ndarray, weights: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Text-level values from window-level ones: sum of weight x value over each text's windows.

    `first[k]` is the row of text k's first window (texts' windows are contiguous), `weights` the windows'
    shares of their text's length (they sum to 1 per text: `Prepared.weights`).
    """
    values = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(first) == 0:
        return values[:0]
    return np.add.reduceat(values * (w[:, None] if values.ndim == 2 else w), np.asarray(first))


def confusion(gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]) -> np.ndarray:
    """Counts[i, j] of gold labels[i] predicted as labels[j]; pairs outside `labels` are not counted."""
    idx = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred, strict=True):
        if g in idx and p in idx:
            m[idx[g], idx[p]] += 1
    return m


def per_class(gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]
              ) -> dict[Hashable, dict[str, float]]:
    """Precision, recall, F1 and support per label (0 where undefined, as sklearn's zero_division=0)."""
    out: dict[Hashable, dict[str, float]] = {}
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred, strict=True))
        fp = sum(g != lab and p == lab for g, p in zip(gold, pred, strict=True))
        fn = sum(g == lab and p != lab for g, p in zip(gold, pred, strict=True))
        out[lab] = {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                    "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0, "support": tp + fn}
    return out


def macro_f1(gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Mean F1 over `labels` (callers pass the labels present in gold, as the judged metrics do)."""
    if not labels:
        return 0.0
    return float(np.mean([c["f1"] for c in per_class(gold, pred, labels).values()]))


def accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    return float(np.mean([g == p for g, p in zip(gold, pred, strict=True)])) if len(gold) else float("nan")


def majority_rate(train_keys: Sequence[Hashable], dev_keys: Sequence[Hashable]) -> tuple[Hashable, float]:
    """The most frequent training class and the dev accuracy of always predicting it: the floor a
    trained classifier has to clear."""
    values, counts = np.unique(np.asarray(list(train_keys), dtype=object).astype(str), return_counts=True)
    top = str(values[counts.argmax()])
    return top, accuracy([str(k) for k in dev_keys], [top] * len(dev_keys))


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson r; 0 for fewer than two points or a constant side."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def expected_calibration_error(probs: np.ndarray, mask: np.ndarray, bins: int = 15) -> float:
    """ECE of the top prediction, counting a prediction correct when it lies in the allowed set
    (`mask` rows: 1 on every allowed label, all 0 for an unlabelled row, which is skipped)."""
    has = mask.sum(-1) > 0
    p, m = probs[has], mask[has]
    if len(p) == 0:
        return float("nan")
    conf = p.max(-1)
    correct = m[np.arange(len(p)), p.argmax(-1)]
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, mask: np.ndarray, weights: np.ndarray | None = None,
                    first: np.ndarray | None = None) -> float:
    """Temperature minimising the partial-label NLL (golden-section search over log T in [1/4, 4]).

    With `weights`/`first` (see `combine_windows`), `logits` are window rows and `mask` text rows: the NLL
    is that of the combined text probabilities, the ones scoring returns.
    """
    if first is None:
        has = mask.sum(-1) > 0
        z, m = logits[has], mask[has]
    else:
        z, m = logits, mask
    if len(z) == 0 or not (m.sum(-1) > 0).any():
        return 1.0

    def nll(log_t: float) -> float:
        p = softmax(z, math.exp(log_t))
        if first is not None:
            p = combine_windows(p, weights, first)
        mass = (p * m).sum(-1)[m.sum(-1) > 0]
        return float(-np.log(np.clip(mass, 1e-12, None)).mean())

    lo, hi = math.log(0.25), math.log(4.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))
