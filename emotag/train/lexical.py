"""The lexical expert: a TF-IDF linear model over the model's hashed character n-grams, fit by convex-style
full-batch optimisation and added to the network's logits.

Why: on every emotion set here a TF-IDF + logistic-regression baseline matches or beats a small transformer
trained from scratch, and the two make different mistakes. Learning the n-gram weights jointly with the
encoder (the deep n-gram bag) overfits within an epoch; fitting them on their own, with an L2 penalty chosen
on dev, keeps the strength of the linear baseline. The expert reads the same `ngram_ids` the network
already gets, so the ONNX graph keeps its inputs and the scorer its speed (a gather and a sum).

Features (mirrored exactly by `EmotagModel.lexical_logits`): n-gram id g -> lexical bucket
b = (g - 1) mod (B - 1) + 1; row i has x[i, b] = count_i(b) * idf[b] / sqrt(sum_j idf[b_j]^2), the sum over
the row's n-gram occurrences j.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emotag.model.features import lexical_buckets, tfidf_terms

log = logging.getLogger("emotag.train")

HEADS = ("emotion", "polarity", "intensity", "valence")


def fit_idf(grams: Sequence[np.ndarray], buckets: int) -> np.ndarray:
    """Smoothed idf (sklearn's formula) per bucket; bucket 0 (padding) gets 0 so it never counts."""
    df = np.zeros(buckets, dtype=np.float64)
    for g in grams:
        df[np.unique(lexical_buckets(g, buckets))] += 1
    n = len(grams)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    idf[0] = 0.0
    return idf.astype(np.float32)


def design_matrix(grams: Sequence[np.ndarray], idf: np.ndarray):
    """The sparse (rows x buckets) TF-IDF matrix, L2-normalised per row as the network computes it."""
    from scipy import sparse

    buckets = idf.shape[0]
    rows, cols, vals = [], [], []
    for i, g in enumerate(grams):
        b, w = tfidf_terms(g, idf)
        if b.size == 0:
            continue
        rows.append(np.full(b.size, i))
        cols.append(b)
        vals.append(w)
    if not rows:
        return sparse.csr_matrix((len(grams), buckets), dtype=np.float32)
    m = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(len(grams), buckets), dtype=np.float64)
    return m.tocsr().astype(np.float32)  # duplicates summed: count * idf / norm


@dataclass
class LexicalTargets:
    """Supervision per row (the same partial labels and masks as the network's training)."""

    emo_mask: np.ndarray  # (n, E) allowed emotions; all-zero = unlabelled
    pol_mask: np.ndarray  # (n, P)
    intensity: np.ndarray  # (n,) 0..1 or nan
    valence: np.ndarray  # (n,) -1..1 or nan
    row_weight: np.ndarray  # (n,) per-row loss multiplier (upsampled small sources)
    emotion_weight: np.ndarray | None = None  # (n,) extra multiplier on the emotion loss (class balancing)


def balanced_emotion_weights(emo_mask: np.ndarray, sources: Sequence[str], power: float = 1.0) -> np.ndarray:
    """Per-row emotion weights that balance each source's label sets: (n_src / (k_src * count)) ** power.

    Macro-F1, the judged emotion metric, rewards rare classes (fear, surprise) as much as common ones;
    sklearn's class_weight="balanced" is power 1, power 0.5 is the usual softer compromise.
    """
    keys = [(s, m.tobytes()) for s, m in zip(sources, emo_mask > 0, strict=True)]
    labelled = emo_mask.sum(-1) > 0
    from collections import Counter

    count = Counter(k for k, ok in zip(keys, labelled, strict=True) if ok)
    per_src = Counter(k[0] for k in count.elements())
    kinds = Counter(k[0] for k in count)
    w = np.ones(len(keys), dtype=np.float32)
    for i, (k, ok) in enumerate(zip(keys, labelled, strict=True)):
        if ok:
            w[i] = (per_src[k[0]] / (kinds[k[0]] * count[k])) ** power
    return w


def fit_lexical(X, y: LexicalTargets, l2: float, iterations: int = 200, threads: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch L-BFGS on the four heads' losses (+ l2 * ||W||^2 / 2); returns W (buckets x K) and bias (K).

    The losses (partial-label NLL, squared error through sigmoid/tanh) and their gradient with respect to the
    logits come from torch autograd on the dense (rows x K) logits; the sparse products X @ W and X.T @ G run
    in scipy, which is far faster than torch's sparse backward. The heads' columns are disjoint, so one run
    with one `l2` is four independent problems; callers that want a different strength per head fit several
    and pick columns.
    """
    from scipy.optimize import minimize

    from emotag.train.trainer import partial_nll

    if threads:
        torch.set_num_threads(threads)
    n, B = X.shape
    E, P = y.emo_mask.shape[1], y.pol_mask.shape[1]
    K = E + P + 2
    XT = X.T.tocsr()
    emo_m, pol_m = torch.from_numpy(y.emo_mask), torch.from_numpy(y.pol_mask)
    rw = torch.from_numpy(y.row_weight.astype(np.float32))
    rwe = rw * torch.from_numpy(y.emotion_weight.astype(np.float32)) if y.emotion_weight is not None else rw
    targets = {}
    for name, arr in (("intensity", y.intensity), ("valence", y.valence)):
        ok = ~np.isnan(arr)
        targets[name] = (torch.from_numpy(ok), torch.from_numpy(np.nan_to_num(arr).astype(np.float32)))
    ne = float((rwe * (emo_m.sum(-1) > 0)).sum())
    npol = float((rw * (pol_m.sum(-1) > 0)).sum())
    ni = {k: float((rw * v[0]).sum()) for k, v in targets.items()}
    calls = [0]

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: B * K].reshape(B, K)
        b = theta[B * K :]
        z = torch.from_numpy((X @ W + b).astype(np.float32)).requires_grad_(True)
        loss = torch.zeros((), dtype=torch.float64)
        if ne:
            loss = loss + (partial_nll(z[:, :E], emo_m) * rwe).sum() / ne
        if npol:
            loss = loss + (partial_nll(z[:, E : E + P], pol_m) * rw).sum() / npol
        for j, (name, act) in enumerate((("intensity", torch.sigmoid), ("valence", torch.tanh))):
            ok, t = targets[name]
            if ni[name]:
                err = torch.where(ok, (act(z[:, E + P + j]) - t) ** 2, torch.zeros_like(t))
                loss = loss + 4.0 * (err * rw).sum() / ni[name]
        loss.backward()
        value = float(loss.detach())
        g = z.grad.numpy().astype(np.float64)
        gW = XT @ g + l2 * W
        calls[0] += 1
        if calls[0] % 50 == 0:
            log.info("lexical l2=%g: %d evaluations, loss %.5f", l2, calls[0], value)
        return value + 0.5 * l2 * float((W * W).sum()), np.concatenate([gW.ravel(), g.sum(0)])

    theta0 = np.zeros(B * K + K)
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", options={"maxiter": iterations, "maxcor": 20})
    log.info("lexical l2=%g: %s after %d iterations", l2, res.message, res.nit)
    return res.x[: B * K].reshape(B, K).astype(np.float32), res.x[B * K :].astype(np.float32)


def head_columns(E: int, P: int) -> dict[str, slice]:
    return {"emotion": slice(0, E), "polarity": slice(E, E + P), "intensity": slice(E + P, E + P + 1),
            "valence": slice(E + P + 1, E + P + 2)}


def attach_lexical(model, weight: np.ndarray, bias: np.ndarray, idf: np.ndarray, scales: dict[str, float]):
    """A copy of `model` (an EmotagModel without an expert) with the expert installed and its config set."""
    import copy

    from emotag.model.config import LexicalConfig
    from emotag.model.modeling import EmotagModel

    cfg = copy.deepcopy(model.config)
    cfg.lexical = LexicalConfig(buckets=int(idf.shape[0]), scales=dict(scales))
    fused = EmotagModel(cfg)
    missing, unexpected = fused.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("lex_") and not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"cannot attach the expert: state mismatch ({missing[:3]}, {unexpected[:3]})")
    with torch.no_grad():
        fused.lex_weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
        fused.lex_bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        fused.lex_idf.copy_(torch.from_numpy(np.asarray(idf, dtype=np.float32)))
    fused.eval()
    return fused
