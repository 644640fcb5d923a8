#!/usr/bin/env python
"""Learning curve of `emotag train` on tasks the bundled model never trained on (docs/finetune.md).

    python scripts/finetune_curve.py [--data ../shared/data] [--out runs/finetune_curve] \
        [--sizes 16,64,300,1000] [--tasks car_sentiment,car_subject] [--threads 1] [--max-minutes 5]
        [--levers '[{}, {"STACKED": false}]'] [--set '{"STACKED": false}']

Both tasks come from the BDCI 2018 car-forum set (`bdci2018_car_aspect/train.csv`), which is not in the
bundled model's training data (models/emotag-zh-small/MODEL_CARD.md): car_sentiment is the post's
sentiment (-1/0/1, posts whose aspects all agree; the labels map onto the polarity head, so there is a
zero-shot score), car_subject the aspect a single-aspect post talks about (10 classes; no head for it).
A fixed stratified test set is drawn first (150 per class); training sets of N per class (nested, so
each size adds rows) come from the rest. Each run is `emotag.train.finetune.finetune` with its own dev
split, then `emotag eval`'s evaluate_file on the test set with the written int8 model. Baselines on the
same examples: the majority class, the base model zero-shot (car_sentiment), and a char 1-3-gram
TF-IDF + logistic regression (scikit-learn; C=10, and C chosen by 3-fold cross-validation on the training
rows only). One JSON line per run goes to OUT/results.jsonl.
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


def tfidf_lr(train: list[tuple[str, str]], test: list[tuple[str, str]], c: float | None = 10.0) -> dict[str, float]:
    """The char TF-IDF + logistic-regression baseline on the same training rows: C=10, or (`c` None) C
    chosen among 0.1, 1, 10, 100 by 3-fold cross-validated macro-F1 on the training rows only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from emotag.metrics import accuracy, macro_f1

    def model(C: float) -> object:
        return make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True),
                             LogisticRegression(C=C, max_iter=2000, class_weight="balanced"))

    texts, labels = [t for t, _ in train], [y for _, y in train]
    if c is None:
        search = GridSearchCV(model(1.0), {"logisticregression__C": [0.1, 1.0, 10.0, 100.0]}, cv=3,
                              scoring="f1_macro").fit(texts, labels)
        clf, c = search.best_estimator_, search.best_params_["logisticregression__C"]
    else:
        clf = model(c).fit(texts, labels)
    pred = clf.predict([t for t, _ in test]).tolist()
    gold = [y for _, y in test]
    return {"accuracy": accuracy(gold, pred), "macroF1": macro_f1(gold, pred, sorted(set(gold))), "C": c}


def levers(train_file: Path, test_file: Path, variants: list[dict]) -> list[dict]:
    """The linear head on frozen features (step 1 of `emotag train`, the bundled base) under each variant of
    the knobs in `emotag.train.finetune.heads` ({"LBFGS_ITERS": 300}, {"STANDARDIZE": true, "L2_GRID": [...]},
    ...; {} = as shipped). Per variant: the cross-validated macro-F1 over the training file's rows (what
    `emotag train` chooses by), the macro-F1 on its own 12% dev split (what a lever must improve to be kept),
    and, for the record only, on the test set. Features are computed once and shared by the variants."""
    import copy

    import numpy as np
    import torch

    from emotag.model.config import EmotagConfig
    from emotag.model.features import Featurizer
    from emotag.train.finetune import _read_data, _setup
    from emotag.train.finetune import heads as H
    from emotag.train.finetune.base import resolve_base
    from emotag.train.finetune.data import examples, read_table
    from emotag.train.trainer import EncodedSet, predict

    kind, src = resolve_base(None)
    base_cfg = EmotagConfig.load(src)
    torch.manual_seed(13)
    data = _read_data(train_file, None, "text", ("label",), None, "emotion", base_cfg, 13)
    run = _setup(data, kind, src, base_cfg, train_file.with_suffix(".levers"), None, None, 13)
    plan = data.plan
    test_ex, _ = examples(read_table(test_file, ["text", "label"]), "text", ["label"], plan, test_file)
    test = EncodedSet(Featurizer(run.tok, run.cfg), test_ex)
    cache: dict[int, tuple] = {}
    frozen = H._frozen

    def cached(model: object, d: object, p: object) -> tuple:
        if id(d) not in cache:
            cache[id(d)] = frozen(model, d, p)
        return cache[id(d)]

    H._frozen = cached
    state = copy.deepcopy(run.model.state_dict())
    row_w = np.array([data.weights.get(s[2:], 1.0) for s in run.train.sources], dtype=np.float32)
    knobs = {k: getattr(H, k) for k in ("L2_GRID", "LEXICAL_L2_RATIO", "STANDARDIZE", "LBFGS_ITERS", "FRESH_AT_ZERO",
                                        "STACKED", "EXPERT_C_GRID", "MIX_GRID", "EXPERT_ITERS")}
    out = []
    try:
        for v in variants:
            for k, val in {**knobs, **v}.items():
                setattr(H, k, tuple(val) if k.endswith("_GRID") else val)
            run.model.load_state_dict(state)
            t0 = time.time()
            lin = H.fit_linear_head(run.model, run.train, run.dev, plan, row_w, run.fresh, run.dev_before is not None)
            seconds = time.time() - t0

            def f1(d: object, key: str = "macro_f1") -> float:
                return H.head_metrics(H.head_probs(predict(run.model, d), d, plan), H.gold_mask(d, plan), plan)[key]

            def acc(d: object) -> float:
                return f1(d, "accuracy")

            out.append({"variant": v, "l2": lin["l2"], "form": lin["form"], "stacked": lin["stacked"],
                        "cv_macro_f1": lin["cv_kept"], "dev_macro_f1": f1(run.dev), "test_macro_f1": f1(test),
                        "test_accuracy": acc(test), "seconds": round(seconds, 1)})
            print(json.dumps(out[-1]), flush=True)
    finally:
        for k, val in knobs.items():
            setattr(H, k, val)
        H._frozen = frozen
    return out


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
    ap.add_argument("--levers", help="JSON list of linear-head knob settings to compare instead of training "
                                     "(see `levers`), e.g. '[{}, {\"LBFGS_ITERS\": 300}]'")
    ap.add_argument("--set", default="{}", help="linear-head knobs of emotag.train.finetune.heads for the full runs, "
                                                "e.g. '{\"STACKED\": false}' (the previous head)")
    a = ap.parse_args(argv)
    import torch

    from emotag.evaluate import evaluate_file
    from emotag.metrics import majority_rate
    from emotag.tagger import Tagger
    from emotag.train.finetune import finetune

    torch.set_num_threads(a.threads)
    from emotag.train.finetune import heads as H

    for k, v in json.loads(a.set).items():
        setattr(H, k, tuple(v) if k.endswith("_GRID") else v)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    for task in a.tasks.split(","):
        test, pool = split(load_task(Path(a.data), task), a.seed)
        test_file = write(out / f"{task}_test.csv", test)
        zs = zero_shot(test_file, a.threads) if task == "car_sentiment" and not a.levers else None
        for n in (int(s) for s in a.sizes.split(",")):
            train = [p for lab in sorted(pool) for p in pool[lab][:n]]
            train_file = write(out / f"{task}_{n}.csv", train)
            if a.levers:
                for row in levers(train_file, test_file, json.loads(a.levers)):
                    with open(out / "levers.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps({"task": task, "per_class": n, **row}) + "\n")
                continue
            t0 = time.time()
            r = finetune(train_file, out / f"{task}_{n}", progress=False, threads=a.threads,
                         max_minutes=a.max_minutes, force=True)
            seconds = time.time() - t0
            got = evaluate_file(Tagger.load(out / f"{task}_{n}", threads=a.threads), test_file)
            report = json.loads((out / f"{task}_{n}" / "eval_report.json").read_text(encoding="utf-8"))
            _, majority = majority_rate([y for _, y in train], [y for _, y in test])
            row = {"task": task, "per_class": n, "train_rows": len(train), "test_rows": len(test),
                   "fine_tuned": {"accuracy": got["accuracy"], "macroF1": got["macroF1"]}, "kept": r.chosen,
                   "steps": r.steps, "seconds": round(seconds, 1), "zero_shot": zs, "majority": majority,
                   "linear_head": {k: report["linear_head"].get(k) for k in ("form", "l2", "cv_kept", "stacked")},
                   "linear_head_seconds": round(report["training"]["linear_head_seconds"], 1),
                   "tfidf_lr": tfidf_lr(train, test),
                   "tfidf_lr_cv": tfidf_lr(train, test, None), "dev_before": r.dev_before, "dev_after": r.dev_after}
            with open(results, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(json.dumps(row, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
