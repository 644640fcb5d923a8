#!/usr/bin/env python
"""Teach a trained network negation scope, double negation and contrast: one more epoch on its own
training rows mixed with template sentences whose polarity composition decides.

    python scripts/train_compositional.py --model NETWORK --out NETWORK2 [--data ../shared/data]

Stage 2 of the default recipe (after train_default.py, before train_lexical.py). The template sentences
(`emotag.train.compositional`: 不难吃 / 很难吃, 没有异味 / 有异味, A，但是B both ways round) are minimal
pairs across food, product, electronics, clothing, hotel, service and delivery vocabulary, with opinion-free
questions and statements (请问这批货什么时候能到) labelled neutral; the real rows
(a seeded sample of the training split) keep the network where it was on the corpora. The piece table
stays frozen, as in train_default. Dev metrics (tuning halves) before and after go to the log and to
OUT/training_log.json under "compositional"; no choice is made on them here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default import apply_caps, dev_metrics, parse_repeat, selection_score  # noqa: E402

from emotag.model.features import Featurizer  # noqa: E402
from emotag.model.modeling import EmotagModel  # noqa: E402
from emotag.text.normalize import normalize  # noqa: E402
from emotag.train import corpora  # noqa: E402
from emotag.train.compositional import compositional_forms, real_contrasts  # noqa: E402
from emotag.train.trainer import EncodedSet, TrainSettings, fit, predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--model", required=True, help="a train_default.py output")
    ap.add_argument("--out", required=True)
    ap.add_argument("--real", type=int, default=20000, help="training rows of the corpora mixed in (seeded sample)")
    ap.add_argument("--cap", default="shopping=30000",
                    help="as train_default.py: at most N rows of a source before sampling, SOURCE=N comma-separated")
    ap.add_argument("--repeat", default="cvat=4,clue=2",
                    help="as train_default.py: small sources counted N times before sampling")
    ap.add_argument("--synthetic", type=int, default=14000, help="template sentences")
    ap.add_argument("--contrast", type=float, default=0.3, help="share of the templates that are A，但是B turns")
    ap.add_argument("--neutral", type=float, default=0.3,
                    help="share of template draws that are opinion-free questions, requests and statements")
    ap.add_argument("--real-contrast", type=int, default=0,
                    help="contrast sentences joined from real opinion clauses of the training splits "
                         "(emotag.train.compositional.real_contrasts)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    src, out = Path(a.model), Path(a.out)
    t0 = time.process_time()

    model = EmotagModel.load(src)
    cfg = model.config
    if cfg.encoder.get("model_type") == "use":
        model.encoder.embeddings.weight.requires_grad_(False)  # as train_default: the piece table stays pretrained
    feat = Featurizer.from_dir(src)
    examples = corpora.load_all(a.data)
    train = [e for e in examples if e.split == "train"]
    dev_ex = [e for e in examples if e.split == "dev"]
    rng = np.random.default_rng(a.seed)
    # the real rows in the proportions the network was trained on (its caps and repeats), so one more epoch
    # does not pull it towards the big review sets and away from the small emotion corpora
    train = apply_caps(train, parse_repeat(a.cap))
    repeat = parse_repeat(a.repeat)
    pool = [i for i, e in enumerate(train) for _ in range(repeat.get(e.source, 1))]
    pick = rng.choice(len(pool), min(a.real, len(pool)), replace=False)
    rows = [train[pool[i]] for i in pick] + list(compositional_forms(a.synthetic, seed=a.seed, contrast=a.contrast,
                                                                 neutral=a.neutral))
    rows += list(real_contrasts(a.data, a.real_contrast, seed=a.seed))  # none at 0
    logging.info("rows %s", Counter(e.source for e in rows))
    for e in rows:
        e.text = normalize(e.text, cfg.normalization).text
    tr, dev = EncodedSet(feat, rows, normalized=True), EncodedSet(feat, dev_ex)

    before = dev_metrics(predict(model, dev), dev, cfg)
    logging.info("before %.4f %s", selection_score(before), before)
    result = fit(model, tr, None, TrainSettings(epochs=a.epochs, lr=a.lr, threads=a.threads, seed=a.seed))
    after = dev_metrics(predict(model, dev), dev, cfg)
    logging.info("after %.4f %s", selection_score(after), after)

    model.save(out, tokenizer=Tokenizer.from_file(str(src / "tokenizer.json")))
    log_path = src / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    log["compositional"] = {"dev_before": before, "dev_after": after, "rows": Counter(e.source for e in rows),
                            "wall_min": result["minutes"], "args": vars(a)}
    log.setdefault("timings", {})["compositional_cpu_s"] = time.process_time() - t0
    (out / "training_log.json").write_text(json.dumps(log, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
