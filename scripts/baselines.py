#!/usr/bin/env python
"""The simple baseline every shipped model must beat: char TF-IDF + logistic regression (or ridge for the
continuous rows) trained per task on that task's own training split, scored on the same dev halves
(`scripts/make_dev_sets.py`) with the same metrics as `../shared/tools/cli_eval.py`.

    python scripts/baselines.py [--data ../shared/data] [--sets runs/devsets] [--json runs/baselines.json]

Settings are the issue's: char 1-3-grams, sublinear tf, C=4, balanced classes (ridge alpha 1 for CVAT and
STC-3). The stars row has no in-domain training data: its baseline is trained on the shopping, hotel and
ASTE polarity rows, as the model is.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.train import corpora  # noqa: E402

HALVES = ("tune", "report")


def _tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)


def _clf(texts: list[str], labels: list[str]):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(_tfidf(), LogisticRegression(C=4, class_weight="balanced", max_iter=2000)).fit(texts, labels)


def _reg(texts: list[str], y: list[float]):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    return make_pipeline(_tfidf(), Ridge(alpha=1.0)).fit(texts, y)


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _macro_f1(gold: list[str], pred: list[str], labels: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--sets", default="runs/devsets")
    ap.add_argument("--json", default="runs/baselines.json")
    a = ap.parse_args()
    data, sets = Path(a.data), Path(a.sets)
    train = [e for e in corpora.load_all(data) if e.split == "train"]
    res: dict[str, dict[str, float]] = {h: {} for h in HALVES}

    smp6 = ["happy", "angry", "sad", "fear", "surprise", "neutral"]
    for domain in ("usual", "virus"):
        rows = [r for r in _tsv(data / "smp2020_ewect" / f"{domain}_train.tsv") if r.get("text") and r.get("label")]
        m = _clf([r["text"] for r in rows], [r["label"] for r in rows])
        for h in HALVES:
            dev = _tsv(sets / f"smp_{domain}_{h}.tsv")
            res[h][f"smp_{domain}_macroF1"] = _macro_f1([r["label"] for r in dev], list(m.predict([r["text"] for r in dev])), smp6)

    clue = [e for e in train if e.source == "clue"]
    m = _clf([e.text for e in clue], [e.emotions[0] for e in clue])
    for h in HALVES:
        with open(sets / f"clue_{h}.jsonl", encoding="utf-8") as f:
            dev = [json.loads(line) for line in f]
        pred = m.predict([d["content"] for d in dev])
        res[h]["clue_acc"] = float(np.mean([p == d["label"] for p, d in zip(pred, dev, strict=True)]))

    def polarity_model(sources: tuple[str, ...]):
        rows = [e for e in train if e.source in sources and e.polarity in ("positive", "negative")]
        return _clf([e.text for e in rows], [e.polarity for e in rows])

    for source in ("shopping", "hotel", "chat", "sentic", "aste"):
        m = polarity_model((source,))
        for h in HALVES:
            dev = _csv(sets / f"{source}_{h}.csv")
            pred = m.predict([r["review"] for r in dev])
            res[h][f"{source}_polarity_acc"] = float(np.mean([(p == "positive") == (r["label"] == "1")
                                                              for p, r in zip(pred, dev, strict=True)]))
    m = polarity_model(("shopping", "hotel", "aste"))
    stars = [r for r in _tsv(sets / "asap_stars.tsv") if r["stars"] != "3"]
    pred = m.predict([r["text"] for r in stars])
    acc = float(np.mean([(p == "positive") == (int(r["stars"]) > 3) for p, r in zip(pred, stars, strict=True)]))
    for h in HALVES:
        res[h]["stars_acc"] = acc

    cv = [e for e in train if e.source == "cvat"]
    mv = _reg([e.text for e in cv], [e.valence for e in cv])
    ma = _reg([e.text for e in cv], [e.intensity for e in cv])
    for h in HALVES:
        dev = _tsv(sets / f"cvat_{h}.tsv")
        texts = [r["Text"] for r in dev]
        res[h]["cvat_valence_r"] = float(np.corrcoef(mv.predict(texts), [float(r["Valence_Mean"]) for r in dev])[0, 1])
        res[h]["cvat_arousal_r"] = float(np.corrcoef(ma.predict(texts), [float(r["Arousal_Mean"]) for r in dev])[0, 1])

    from make_dev_sets import STC3_SPLIT

    dialogs = corpora.stc3_dialogues(data)

    def customer(d: dict) -> str:
        return " ".join(t["text"] for t in d["turns"] if t["speaker"] == "customer")

    fit = dialogs[: corpora.STC3_DEV_START]
    ms = _reg([customer(d) for d in fit], [d["satisfaction"] for d in fit])
    for h, part in (("tune", dialogs[corpora.STC3_DEV_START : STC3_SPLIT]), ("report", dialogs[STC3_SPLIT:])):
        res[h]["stc3_satisfaction_r"] = float(np.corrcoef(ms.predict([customer(d) for d in part]),
                                                          [d["satisfaction"] for d in part])[0, 1])

    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    for k in res["report"]:
        print(f"{k:28s} tune {res['tune'][k]:.4f}  report {res['report'][k]:.4f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
