#!/usr/bin/env python
"""Probe (issue #17, measured and not shipped): would a per-corpus emotion expert lift SMP2020 usual?

    python scripts/probe_emotion_expert.py [--model DIR] [--data ../shared/data] [--weights 0,0.25,0.5,1]

Fits a char 1-3-gram TF-IDF + logistic regression (C = 4) on the SMP2020 usual training split (and, as a
second expert, usual + virus), then adds its class log-probabilities, times a weight w, to the model's
emotion log-probabilities (an SMP class spread over the emotions it covers: happy -> like, happiness) and
scores the tune halves of usual, virus, CLUE and NLPCC 2014 as the yardstick does (SMP: macro-F1 over the six
classes with the probabilities summed; CLUE: accuracy over the seven emotions). w = 0 is the model as shipped.
Why a probe and not an option: the issue measured fine-tuned USE + TF-IDF averaged at +1.4 points over
TF-IDF on usual, and the bundled model already carries a lexical expert trained on the same rows; this says
whether a second, corpus-specific one adds anything (session 12: it does not, MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag import Tagger  # noqa: E402
from emotag.labels import EMOTIONS  # noqa: E402
from emotag.metrics import macro_f1  # noqa: E402
from emotag.train import corpora  # noqa: E402

SOURCES = ("smp_usual", "smp_virus", "clue", "nlpcc2014")


def score(source: str, gold: list[tuple[str, ...]], logp: np.ndarray) -> float:
    """The yardstick's metric for one source from final per-emotion scores (n x len(EMOTIONS))."""
    if source == "clue":  # seven emotions, no neutral: accuracy
        pred = [EMOTIONS[1 + int(np.argmax(row[1:]))] for row in logp]
        return float(np.mean([p in g for p, g in zip(pred, gold, strict=True)]))
    classes = sorted(set(gold), key=str)
    p = np.exp(logp - logp.max(1, keepdims=True))
    cols = [[EMOTIONS.index(e) for e in c] for c in classes]
    pred = [classes[int(np.argmax([row[i].sum() for i in cols]))] for row in p]
    return macro_f1(gold, pred, classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1,1.5")
    a = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    weights = [float(w) for w in a.weights.split(",")]
    examples = corpora.load_all(a.data, dev_half="tune")
    train = {s: [e for e in examples if e.source == s and e.split == "train" and e.emotions] for s in SOURCES}
    tune = {s: [e for e in examples if e.source == s and e.split == "dev" and e.emotions] for s in SOURCES}
    tagger = Tagger.load(a.model) if a.model else Tagger.load()
    model_logp = {}
    for s in SOURCES:
        results = tagger.tag_many([e.text for e in tune[s]])
        model_logp[s] = np.log(np.clip([[r.emotions[k] for k in EMOTIONS] for r in results], 1e-9, 1.0))
    for name, sources in (("usual", ["smp_usual"]), ("usual+virus", ["smp_usual", "smp_virus"])):
        rows = [e for s in sources for e in train[s]]
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        lr = LogisticRegression(C=4.0, max_iter=2000).fit(vec.fit_transform([e.text for e in rows]),
                                                          ["|".join(e.emotions) for e in rows])
        for s in SOURCES:
            le = lr.predict_log_proba(vec.transform([e.text for e in tune[s]]))
            expert = np.full((le.shape[0], len(EMOTIONS)), np.log(1e-3))
            for j, cls in enumerate(lr.classes_):
                for emo in cls.split("|"):
                    expert[:, EMOTIONS.index(emo)] = le[:, j]
            gold = [e.emotions for e in tune[s]]
            line = "  ".join(f"w={w:g} {score(s, gold, model_logp[s] + w * expert):.4f}" for w in weights)
            print(f"expert {name:12s} {s:10s} {line}", flush=True)


if __name__ == "__main__":
    main()
