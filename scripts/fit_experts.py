#!/usr/bin/env python
"""Fit the domain experts (emotag.model.experts) of a finished model and write MODEL/experts.npz.

    python scripts/fit_experts.py --model models/emotag-zh-small [--data ../shared/data]

One logistic regression per polarity corpus (positive vs negative), each on its own training split only,
over the model's hashed n-gram TF-IDF features (the lexical expert's map and idf). The L2 strength is chosen
per corpus on that corpus's tuning half; the report halves are never read. Run `scripts/fit_composer.py`
afterwards: the composer reads the experts' logits and learns how far to trust each.

A gate is fit beside them: a multinomial regression that says which corpus's training texts a text
resembles (up to GATE_TEXTS per corpus); `Experts.text_columns` mixes the polarity experts by it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.metrics import combine_windows  # noqa: E402
from emotag.model.experts import KEEP, Experts  # noqa: E402
from emotag.model.features import Featurizer  # noqa: E402
from emotag.model.modeling import EmotagModel  # noqa: E402
from emotag.train import corpora  # noqa: E402
from emotag.train.compositional import compositional_forms  # noqa: E402
from emotag.train.lexical import design_matrix  # noqa: E402
from emotag.train.trainer import EncodedSet  # noqa: E402

# expert name -> the corpora (Example.source) it learns from
DOMAINS = {
    "shopping": ("shopping",),
    "hotel": ("hotel",),
    "chat": ("chat",),
    "sentic": ("sentic",),
    "restaurant": ("aste", "aste_negated"),
    "weibo": ("smp_usual", "smp_virus", "nlpcc2014", "clue", "codeswitch", "cped"),
}
CS = (1.0, 4.0, 16.0)
GATE_TEXTS = 6000


def gate(feat: Featurizer, examples: list, idf: np.ndarray, names: list, weights: list, biases: list,
         log: dict) -> None:
    """The gate: which domain's training texts a text resembles (multinomial, up to GATE_TEXTS per domain);
    appends its domain:* columns."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.process_time()
    rng = np.random.default_rng(0)
    gate_train, gate_tune = [], []
    for name, sources in DOMAINS.items():
        pool = [e for e in examples if e.source in sources and e.split == "train"]
        pick = rng.choice(len(pool), size=min(GATE_TEXTS, len(pool)), replace=False)
        gate_train += [(pool[i], name) for i in pick]
        gate_tune += [(e, name) for e in examples if e.source in sources and e.split == "dev"]
    tr = EncodedSet(feat, [e for e, _ in gate_train])
    tu = EncodedSet(feat, [e for e, _ in gate_tune])
    domain_of = {id(e): n for e, n in gate_train + gate_tune}
    ytr = np.array([domain_of[id(tr.examples[t])] for t in tr.text_of])
    ytu = np.array([domain_of[id(e)] for e in tu.examples])
    gate = LogisticRegression(C=4.0, max_iter=3000).fit(design_matrix(tr.grams, idf), ytr)
    zt = combine_windows(gate.decision_function(design_matrix(tu.grams, idf)), tu.weights, tu.first)
    acc = float(np.mean(gate.classes_[zt.argmax(1)] == ytu))
    print(f"gate: tune accuracy {acc:.4f} over {len(gate.classes_)} domains", flush=True)
    for k, name in enumerate(gate.classes_):
        names.append(f"domain:{name}")
        weights.append(gate.coef_[k].astype(np.float32))
        biases.append(float(gate.intercept_[k]))
    log["gate"] = {"C": 4.0, "tune_acc": round(acc, 4), "train_texts": len(tr.examples),
                   "cpu_s": round(time.process_time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--negation-pairs", action="store_true",
                    help="add the ASTE training triples' minimal pairs (味道很香 / 味道一点也不香, "
                         "corpora.aste_opinion_pairs) to every polarity expert's training rows")
    ap.add_argument("--compositional", type=int, default=0,
                    help="add N negation/contrast template sentences (emotag.train.compositional, seed 2, no neutral ones; "
                         "the kind scripts/train_compositional.py teaches the network) to every polarity expert's training "
                         "rows, so the n-gram experts stop reading 不差 as 差")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    model = EmotagModel.load(args.model)
    if not model.has_lexical:
        raise SystemExit(f"{args.model}: no lexical expert, so no idf to share; run train_lexical.py first")
    idf = model.lex_idf.detach().numpy().astype(np.float32)
    feat = Featurizer.from_dir(args.model, model.config)
    examples = [e for e in corpora.load_all(args.data, dev_half="tune") if e.polarity in ("positive", "negative")]
    pairs = list(corpora.aste_opinion_pairs(Path(args.data), split="train")) if args.negation_pairs else []
    pairs += list(compositional_forms(args.compositional, seed=2))  # none at 0
    names, weights, biases, log = [], [], [], {}
    log_path = Path(args.model) / "experts_log.json"
    for name, sources in DOMAINS.items():
        t0 = time.process_time()
        train = EncodedSet(feat, [e for e in examples if e.source in sources and e.split == "train"] + pairs)
        tune = EncodedSet(feat, [e for e in examples if e.source in sources and e.split == "dev"])
        Xtr, Xtu = design_matrix(train.grams, idf), design_matrix(tune.grams, idf)
        ytr = train.pol_mask[:, model.config.polarity_labels.index("positive")] > 0
        ytu = tune.text_rows(tune.pol_mask)[:, model.config.polarity_labels.index("positive")] > 0
        best = None
        for C in CS:
            m = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(Xtr, ytr)
            z = combine_windows(m.decision_function(Xtu)[:, None], tune.weights, tune.first)[:, 0]
            acc = float(np.mean((z > 0) == ytu))
            print(f"{name} C={C}: tune accuracy {acc:.4f} ({len(tune.examples)} texts)", flush=True)
            if best is None or acc > best[1]:
                best = (C, acc, m)
        C, acc, m = best
        names.append(f"polarity:{name}")
        weights.append(m.coef_[0].astype(np.float32))
        biases.append(float(m.intercept_[0]))
        log[name] = {"C": C, "tune_acc": round(acc, 4), "train_texts": len(train.examples),
                     "tune_texts": len(tune.examples), "cpu_s": round(time.process_time() - t0, 1)}
        print(f"{name}: chose C={C} ({log[name]['cpu_s']} s CPU)", flush=True)
    gate(feat, examples, idf, names, weights, biases, log)
    experts = Experts(tuple(names), idf, np.stack(weights, 1), np.array(biases, dtype=np.float32))
    experts.save(args.model)
    kept = Experts.load(args.model)
    for k, name in enumerate(kept.names):  # what keeping the largest weights costs, per polarity expert
        if name.startswith("polarity:"):
            dom = name.split(":", 1)[1]
            tune = EncodedSet(feat, [e for e in examples if e.source in DOMAINS[dom] and e.split == "dev"])
            ytu = tune.text_rows(tune.pol_mask)[:, model.config.polarity_labels.index("positive")] > 0
            X = design_matrix(tune.grams, idf)
            accs = []
            for w, b in ((experts.weight[:, k], experts.bias[k]), (kept.weight[:, k], kept.bias[k])):
                z = combine_windows((X @ w + b)[:, None], tune.weights, tune.first)[:, 0]
                accs.append(float(np.mean((z > 0) == ytu)))
            log[dom]["tune_acc_kept"] = round(accs[1], 4)
            print(f"{name}: tune accuracy {accs[0]:.4f} dense, {accs[1]:.4f} with the largest {KEEP} weights")
    log_path.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(names)} experts into {args.model}")


if __name__ == "__main__":
    main()
