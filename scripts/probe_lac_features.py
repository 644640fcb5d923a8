#!/usr/bin/env python
"""Probe (issue #17, measured and not shipped): does Baidu LAC's pretrained network know anything about
emotion that a char TF-IDF does not?

    python scripts/probe_lac_features.py --lac ../LAC-2.1.2 [--data ../shared/data] [--sets runs/devsets]

LAC (the `lac` 2.1.2 sdist, Apache-2.0; fetch as `emotag.aspects.lac.PIP_HINT` says) carries 58k x 128
character embeddings and a two-layer BiGRU trained for segmentation, POS and NER on a large corpus. Frozen,
each text (first 128 characters) becomes the mean and max of its top-layer states and the mean of its
character rows (640 numbers); a standardised logistic regression on SMP2020 usual's training split is
scored on the usual tune half alone and with its log-probabilities mixed into the TF-IDF baseline's
(`baselines.py`'s classifier) at weights 0.1-0.5. The issue names LAC's vectors as a knowledge source
"with syntactic rather than affective neighbours"; this measures that (session 13: alone 0.566 macro-F1
against TF-IDF's 0.704, and no mixture above TF-IDF, MODEL_CARD.md). About 5 minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import _clf, _tsv  # noqa: E402

from emotag.aspects.lac import Lac  # noqa: E402
from emotag.train import corpora  # noqa: E402

SMP6 = ["happy", "angry", "sad", "fear", "surprise", "neutral"]


def lac_features(lac: Lac, texts: list[str], batch: int = 64) -> np.ndarray:
    """(texts, 640): mean and max of LAC's top BiGRU states, mean of its character rows."""
    texts = [t[:128] or "。" for t in texts]
    out = np.zeros((len(texts), 640), np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    for s in range(0, len(order), batch):
        sel = order[s:s + batch]
        sub = [texts[i] for i in sel]
        states, _, lengths = lac.forward(sub)
        width = states.shape[1]
        rows = lac.p["word_emb"][[[lac.char_id(c) for c in t] + [lac.oov] * (width - len(t)) for t in sub]]
        mask = (np.arange(width)[None, :] < lengths[:, None])[..., None]
        mean = (states * mask).sum(1) / lengths[:, None]
        top = np.where(mask, states, -1e9).max(1)
        out[sel] = np.concatenate([mean, top, (rows * mask).sum(1) / lengths[:, None]], 1)
    return out


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lac", required=True, help="the unpacked lac 2.1.2 sdist")
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--sets", default="runs/devsets")
    a = ap.parse_args()

    def tsv(path: Path) -> list[dict[str, str]]:
        return [r for r in _tsv(path) if r.get("text") and r.get("label")]  # as baselines.py reads them

    train = tsv(Path(a.data) / "smp2020_ewect" / "usual_train.tsv")
    tune = tsv(Path(a.sets) / "smp_usual_tune.tsv")
    lac = Lac.load(a.lac)
    x_train, x_tune = (lac_features(lac, [r["text"] for r in rows]) for rows in (train, tune))
    y_train, y_tune = [r["label"] for r in train], [r["label"] for r in tune]
    tfidf = _clf([r["text"] for r in train], y_train)
    p_tfidf = tfidf.predict_proba([r["text"] for r in tune])
    classes = tfidf.classes_

    def f1(p: np.ndarray) -> float:
        return float(f1_score(y_tune, classes[p.argmax(1)], labels=SMP6, average="macro", zero_division=0))

    print(f"TF-IDF + LR: usual tune macro-F1 {f1(p_tfidf):.4f}")
    scale = StandardScaler().fit(x_train)
    for C in (0.01, 0.1, 1.0):
        m = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(scale.transform(x_train), y_train)
        assert list(m.classes_) == list(classes)
        p = m.predict_proba(scale.transform(x_tune))
        mixed = "  ".join(f"w={w}: {f1(w * np.log(p) + (1 - w) * np.log(p_tfidf)):.4f}" for w in (0.1, 0.2, 0.3, 0.5))
        print(f"frozen LAC + LR (C={C}): {f1(p):.4f}; mixed with TF-IDF  {mixed}", flush=True)


if __name__ == "__main__":
    main()
