#!/usr/bin/env python
"""Probe (issue #17, measured and not shipped): can the composer's sign part close the review rows' gap to
TF-IDF?

    python scripts/probe_composer.py [--model DIR] [--data ../shared/data] [--cache FILE.npz] [--by-length]

Reads exactly the rows and features `fit_composer.py` fits on (`composer_rows`, the recipe's 1,500 template
sentences included) and, with its grouped 5-fold split, prints the cross-validated sign accuracy per source
for variants of the one shared composer (source weights, interaction features, per-domain gated experts,
composers routed by the gate's top domain or mixed by its probabilities) and for an oracle that fits one composer per source on that
source's rows alone. Why a probe and not an option: the shared composer trades the review corpora against the
template, minimal-pair and emotion-corpus rows it is also fit on; the oracle says how much a per-domain
composer could give a caller who names the domain (session 13: about a point on shopping, hotel and chat),
the variants whether anything short of that recovers it (none did, MODEL_CARD.md). `--by-length` first
compares the shipped model with the TF-IDF baseline (`baselines.py`'s classifier on the source's training
split) on the hotel and shopping tune halves, split at one window (126 characters).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_composer import CS, SIGN_FEATURES, composer_rows, load_uncomposed, skeleton_group, source_weights  # noqa: E402

from emotag.train import corpora  # noqa: E402

EMOTION_SOURCES = ("smp_usual", "smp_virus", "nlpcc2014", "clue", "codeswitch", "cped")
REVIEWS = ("shopping", "hotel", "chat", "sentic", "aste")
SHOW = REVIEWS + ("smp_usual", "compositional", "aste_pairs", "aste_negated", "car", "cped")


def by_length(model: str, data: Path, sets: Path) -> None:
    """Polarity accuracy of the model (sign of polarity_score, as the yardstick reads it) and of the TF-IDF
    baseline on one-window and longer texts of the hotel and shopping tune halves."""
    from baselines import _clf, _csv

    from emotag import Tagger

    tagger = Tagger.load(model)
    train = [e for e in corpora.load_all(data) if e.split == "train"]
    for source in ("hotel", "shopping"):
        rows = [e for e in train if e.source == source and e.polarity in ("positive", "negative")]
        clf = _clf([e.text for e in rows], [e.polarity for e in rows])
        dev = _csv(sets / f"{source}_tune.csv")
        texts = [r["review"] for r in dev]
        gold = np.array([r["label"] == "1" for r in dev])
        tfidf = clf.predict(texts) == "positive"
        ours = np.array([r.polarity_score > 0 for r in tagger.tag_many(texts)])
        length = np.array([len(t) for t in texts])
        for label, sel in (("<= 126 chars", length <= 126), ("> 126 chars", length > 126)):
            print(f"{source:9s} {label:13s} n={sel.sum():5d}  model {np.mean(ours[sel] == gold[sel]):.4f}"
                  f"  tfidf {np.mean(tfidf[sel] == gold[sel]):.4f}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/emotag-zh-small")
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--cache", help="fit_composer.py's feature cache (same model, same code)")
    ap.add_argument("--by-length", action="store_true", help="model vs TF-IDF by text length first")
    ap.add_argument("--sets", default="runs/devsets")
    a = ap.parse_args(argv)
    if a.by_length:
        by_length(a.model, Path(a.data), Path(a.sets))
    tagger = load_uncomposed(a.model)
    rows, X = composer_rows(tagger, Path(a.data), n_compositional=1500, cache=Path(a.cache) if a.cache else None)
    names = list(tagger.composition_names)
    col = {k: X[:, i] for i, k in enumerate(names)}
    src = np.array([e.source for e in rows])
    pol = np.array([e.polarity for e in rows])
    polar, y = pol != "neutral", pol == "positive"
    groups = np.array([skeleton_group(e.text) for e in rows])
    folds = list(GroupKFold(5).split(X, y, groups))
    base = [k for k in SIGN_FEATURES + tuple(n for n in names if n.startswith("polarity:"))]
    domains = [k for k in names if k.startswith("domain:")]
    gate = np.stack([col[k] for k in domains], 1)
    gate = np.exp(gate - gate.max(1, keepdims=True))
    gate /= gate.sum(1, keepdims=True)
    gated = col["polarity:gated"]
    review_share = sum(gate[:, domains.index("domain:" + d)] for d in ("shopping", "hotel", "restaurant", "sentic"))
    no_operator = (1 - col["has_negation"]) * (1 - col["has_turn"])
    extras = {
        "gated x gate confidence": [gated * gate.max(1)],
        "gated x no negator, no turn": [gated * no_operator],
        "per-domain gated experts": [gate[:, i] * col["polarity:" + d[len("domain:"):]] for i, d in enumerate(domains)],
        "whole, gated x review share": [col["whole_logit"] * review_share, gated * review_share],
    }

    def line(label: str, p: np.ndarray) -> None:
        acc = [np.mean((p[(src == s) & polar] > 0.5) == y[(src == s) & polar]) for s in SHOW]
        print(f"{label:32s} " + " ".join(f"{s[:9]}={v:.4f}" for s, v in zip(SHOW, acc, strict=True)), flush=True)

    def shared(label: str, extra: Sequence[np.ndarray] = (), power: float = 0.5, keep: np.ndarray | None = None,
               scale: dict[str, float] | None = None) -> None:
        """One composer for every source, its L2 chosen as fit_composer chooses it (CV log-loss)."""
        Xs = np.stack([col[k] for k in base] + list(extra), 1)
        fit = polar if keep is None else polar & keep
        w = source_weights(src, fit, power) * np.array([(scale or {}).get(s, 1.0) for s in src])
        best = None
        for C in CS:
            p = np.zeros(len(y))
            for tr, te in folds:
                tr = tr[fit[tr]]
                p[te] = LogisticRegression(C=C, max_iter=3000).fit(Xs[tr], y[tr], sample_weight=w[tr]).predict_proba(Xs[te])[:, 1]
            py = np.where(y, p, 1 - p)[fit]
            loss = -float((w[fit] * np.log(np.clip(py, 1e-12, 1))).sum() / w[fit].sum())
            if best is None or loss < best[0]:
                best = (loss, p)
        line(label, best[1])

    shared("as fit_composer.py fits it")
    shared("sign power 0", power=0.0)
    shared("sign power 1", power=1.0)
    shared("no emotion corpora in sign", keep=~np.isin(src, EMOTION_SOURCES))
    shared("review sources x2", scale=dict.fromkeys(REVIEWS, 2.0))
    shared("template rows x0.5", scale=dict.fromkeys(("compositional", "aste_pairs", "aste_negated"), 0.5))
    for label, extra in extras.items():
        shared(label, extra)

    Xb = np.stack([col[k] for k in base], 1)
    route = gate.argmax(1)
    p = np.zeros(len(y))
    for tr, te in folds:
        tr = tr[polar[tr]]
        for d in range(len(domains)):
            trd, ted = tr[route[tr] == d], te[route[te] == d]
            if len(ted) and len(set(y[trd])) == 2:
                p[ted] = LogisticRegression(C=1.0, max_iter=3000).fit(Xb[trd], y[trd]).predict_proba(Xb[ted])[:, 1]
    line("routed by the gate's top domain", p)
    w = source_weights(src, polar, 0.5)
    p = np.zeros(len(y))
    for tr, te in folds:  # a mixture of composers: each domain's fit on rows weighted by the gate's belief
        tr = tr[polar[tr]]
        logit = np.zeros(len(te))
        for d in range(len(domains)):
            wd = w[tr] * gate[tr, d]
            m = LogisticRegression(C=1.0, max_iter=3000).fit(Xb[tr], y[tr], sample_weight=wd * len(tr) / wd.sum())
            logit += gate[te, d] * m.decision_function(Xb[te])
        p[te] = 1 / (1 + np.exp(-logit))
    line("soft-routed by the gate", p)

    print("\noracle: one composer per source, fit on that source's rows only (5-fold, grouped)")
    for s in REVIEWS:
        idx = np.where((src == s) & polar)[0]
        for C in (0.1, 1.0):
            p = np.zeros(len(idx))
            for tr, te in GroupKFold(5).split(idx, y[idx], groups[idx]):
                p[te] = LogisticRegression(C=C, max_iter=3000).fit(Xb[idx[tr]], y[idx[tr]]).predict_proba(Xb[idx[te]])[:, 1]
            print(f"  {s:9s} C={C:<4} {np.mean((p > 0.5) == y[idx]):.4f}  (n={len(idx)})")


if __name__ == "__main__":
    main()
