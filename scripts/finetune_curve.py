#!/usr/bin/env python
"""Learning curve of `emotag train` on tasks the bundled model never trained on (docs/finetune.md).

    python scripts/finetune_curve.py [--data ../shared/data] [--out runs/finetune_curve] \
        [--sizes 16,64,300,1000] [--tasks car_sentiment,car_subject] [--threads 1] [--max-minutes 5]

Both tasks come from the BDCI 2018 car-forum set (`bdci2018_car_aspect/train.csv`), which is not in the
bundled model's training data (models/emotag-zh-small/MODEL_CARD.md): car_sentiment is the post's
sentiment (-1/0/1, posts whose aspects all agree; the labels map onto the polarity head, so there is a
zero-shot score), car_subject the aspect a single-aspect post talks about (10 classes; no head for it).
A fixed stratified test set is drawn first (150 per class); training sets of N per class (nested, so
each size adds rows) come from the rest. Each run is `emotag.train.finetune.finetune` with its own dev
split, then `emotag eval`'s evaluate_file on the test set with the written int8 model. Baselines on the
same examples: the majority class, the base model zero-shot (car_sentiment), and a char 1-3-gram
TF-IDF + logistic regression (scikit-learn). One JSON line per run goes to OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEST_PER_CLASS = 150


def load_task(data: Path, task: str) -> list[tuple[str, str]]:
    """(text, label) pairs of one task, one per post."""
    by_post: dict[str, list[dict[str, str]]] = defaultdict(list)
    with open(data / "bdci2018_car_aspect" / "train.csv", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            by_post[r["content_id"]].append(r)
    out = []
    for rows in by_post.values():
        if task == "car_sentiment" and len({r["sentiment_value"] for r in rows}) == 1:
            out.append((rows[0]["content"], rows[0]["sentiment_value"]))
        elif task == "car_subject" and len(rows) == 1:
            out.append((rows[0]["content"], rows[0]["subject"]))
    return out


def split(pairs: list[tuple[str, str]], seed: int) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """A stratified test set and, per class, the shuffled rest (training sets are its prefixes)."""
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in pairs:
        by_label[p[1]].append(p)
    rng = random.Random(seed)
    test, pool = [], {}
    for lab in sorted(by_label):
        rows = by_label[lab]
        rng.shuffle(rows)
        test += rows[:TEST_PER_CLASS]
        pool[lab] = rows[TEST_PER_CLASS:]
    return test, pool


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def tfidf_lr(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> dict[str, float]:
    """The char TF-IDF + logistic-regression baseline on the same training rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from emotag.metrics import accuracy, macro_f1

    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    x = vec.fit_transform([t for t, _ in train])
    clf = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced").fit(x, [y for _, y in train])
    pred = clf.predict(vec.transform([t for t, _ in test])).tolist()
    gold = [y for _, y in test]
    return {"accuracy": accuracy(gold, pred), "macroF1": macro_f1(gold, pred, sorted(set(gold)))}


def zero_shot(test_file: Path, threads: int) -> dict[str, float]:
    """The bundled model as it is, read through `emotag eval` (-1/0/1 as negative/neutral/positive)."""
    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger

    res = evaluate_file(Tagger.load(None, threads=threads), test_file)
    return {"accuracy": res["accuracy3"], "macroF1": res["macroF1"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="runs/finetune_curve")
    ap.add_argument("--sizes", default="16,64,300,1000")
    ap.add_argument("--tasks", default="car_sentiment,car_subject")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=5.0, help="cap on each run's fine-tuning loop")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import torch

    from emotag.evaluate import evaluate_file
    from emotag.metrics import majority_rate
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    for task in a.tasks.split(","):
        test, pool = split(load_task(Path(a.data), task), a.seed)
        test_file = write(out / f"{task}_test.csv", test)
        zs = zero_shot(test_file, a.threads) if task == "car_sentiment" else None
        for n in (int(s) for s in a.sizes.split(",")):
            train = [p for lab in sorted(pool) for p in pool[lab][:n]]
            train_file = write(out / f"{task}_{n}.csv", train)
            t0 = time.time()
            r = finetune(train_file, out / f"{task}_{n}", progress=False, threads=a.threads,
                         max_minutes=a.max_minutes, force=True)
            seconds = time.time() - t0
            got = evaluate_file(Tagger.load(out / f"{task}_{n}", threads=a.threads), test_file)
            _, majority = majority_rate([y for _, y in train], [y for _, y in test])
            row = {"task": task, "per_class": n, "train_rows": len(train), "test_rows": len(test),
                   "fine_tuned": {"accuracy": got["accuracy"], "macroF1": got["macroF1"]}, "kept": r.chosen,
                   "steps": r.steps, "seconds": round(seconds, 1), "zero_shot": zs, "majority": majority,
                   "tfidf_lr": tfidf_lr(train, test), "dev_before": r.dev_before, "dev_after": r.dev_after}
            with open(results, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(json.dumps(row, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
