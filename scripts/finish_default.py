#!/usr/bin/env python
"""Second half of the default-model recipe: ONNX export (fp32 + int8), dialogue read-out, checks.

    python scripts/finish_default.py [--model models/emotag-zh-small] [--data ../shared/data]

1. exports model.onnx and model.int8.onnx (parity with torch is checked during export);
2. fits the conversation-satisfaction read-out (least squares on customer-turn statistics) on STC-3
   dialogues [0, 2960) and reports Pearson r on the held-out dialogues [2960, end);
3. measures int8-vs-fp32 agreement (same emotion) and accuracy on the dev split.
Timings are appended to MODEL_DIR/training_log.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.dialogues import Conversation, satisfaction_features  # noqa: E402
from emotag.evaluate import pearson  # noqa: E402
from emotag.model.config import EmotagConfig  # noqa: E402
from emotag.model.export import export_onnx  # noqa: E402
from emotag.tagger import Tagger  # noqa: E402
from emotag.train import corpora  # noqa: E402

STC3_DEV_START = 2960


def fit_dialogue(model: Path, data: Path, log: dict) -> None:
    cfg = EmotagConfig.load(model)
    tagger = Tagger.load(model, backend="onnx")
    dialogs = corpora.stc3_dialogues(data)
    feats, gold = [], []
    for d in dialogs:
        conv = Conversation(d["id"], d["turns"])
        cust = [t["text"] for t in conv.turns if t["speaker"] == "customer"]
        f = satisfaction_features(list(tagger.tag_many(cust))) if cust else {}
        feats.append([f.get(k, 0.0) for k in cfg.dialogue.features])
        gold.append(d["satisfaction"])
    X, y = np.asarray(feats), np.asarray(gold)
    Xb = np.hstack([X, np.ones((len(X), 1))])
    tr = slice(0, STC3_DEV_START)
    dv = slice(STC3_DEV_START, None)
    lam = 1.0  # ridge, bias unpenalised
    reg = lam * np.eye(Xb.shape[1])
    reg[-1, -1] = 0
    w = np.linalg.solve(Xb[tr].T @ Xb[tr] + reg, Xb[tr].T @ y[tr])
    pred = np.clip(Xb @ w, -2, 2)
    cfg.dialogue.weights = tuple(round(float(v), 6) for v in w[:-1])
    cfg.dialogue.bias = round(float(w[-1]), 6)
    cfg.save(model)
    log["dialogue"] = {"weights": dict(zip(cfg.dialogue.features, cfg.dialogue.weights, strict=True)),
                       "bias": cfg.dialogue.bias, "train_r": pearson(pred[tr], y[tr]),
                       "dev_r": pearson(pred[dv], y[dv]), "dev_n": int(len(y) - STC3_DEV_START)}
    print("dialogue read-out", log["dialogue"])


def int8_agreement(model: Path, data: Path, log: dict) -> None:
    dev = [e for e in corpora.load_all(data) if e.split == "dev" and (e.emotions or e.polarity)]
    texts = [e.text for e in dev]
    fp32 = list(Tagger.load(model, backend="onnx-fp32").tag_many(texts))
    int8 = list(Tagger.load(model, backend="onnx-int8").tag_many(texts))
    same = np.mean([a.emotion == b.emotion for a, b in zip(fp32, int8, strict=True)])

    def acc(results):
        emo = [r.emotion in e.emotions for r, e in zip(results, dev, strict=True) if e.emotions]
        pol = [(r.polarity_score > 0) == (e.polarity == "positive") for r, e in zip(results, dev, strict=True)
               if e.polarity in ("positive", "negative") and not e.emotions]
        return float(np.mean(emo)), float(np.mean(pol))

    (e32, p32), (e8, p8) = acc(fp32), acc(int8)
    log["int8"] = {"same_emotion": float(same), "n": len(dev), "fp32_emotion_acc": e32, "int8_emotion_acc": e8,
                   "fp32_review_polarity_acc": p32, "int8_review_polarity_acc": p8}
    print("int8 vs fp32", log["int8"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/emotag-zh-small")
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    a = ap.parse_args()
    model, data = Path(a.model), Path(a.data)
    log_path = model / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    t = time.process_time()
    export_onnx(model, quantize="int8")
    log.setdefault("timings", {})["export_cpu_s"] = time.process_time() - t
    t = time.process_time()
    fit_dialogue(model, data, log)
    log["timings"]["dialogue_fit_cpu_s"] = time.process_time() - t
    int8_agreement(model, data, log)
    log_path.write_text(json.dumps(log, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
