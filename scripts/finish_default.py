#!/usr/bin/env python
"""Second half of the default-model recipe: ONNX export (fp32 + int8), dialogue read-out, checks.

    python scripts/finish_default.py [--model models/emotag-zh-small] [--data ../shared/data]

1. exports model.onnx and model.int8.onnx (parity with torch is checked during export; int8 activation
   ranges calibrated on 4,096 training texts: with 1,024, v0.6.0 agreed with fp32 on 98.9% of the dev texts,
   under SPEC §2's 99%; with 4,096 on 99.2%);
2. chooses the polarity_score valence blend on CVAT training folds (dev fold reported);
3. fits the conversation-satisfaction read-out on STC-3 dialogues [0, 2960) and reports Pearson r on the
   held-out dialogues [2960, end): a TF-IDF ridge over the customer turns (dialogue_lexical.npy; its
   out-of-fold predictions) stacked with customer-turn statistics by a second ridge;
4. measures int8-vs-fp32 agreement (same emotion) and accuracy on the dev split;
5. stores the torch weights' big lookup tables as int8 with per-row scales (EmotagModel.save
   int8_tables): the model directory stays under the ~40 MB size guide, and the scoring file is untouched.
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
from emotag.train.corpora import STC3_DEV_START, Example  # noqa: E402


def _dual_ridge(K: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Dual coefficients of ridge regression on a (centred-y) kernel matrix K = X X^T."""
    return np.linalg.solve(K + lam * np.eye(len(K)), y)


def fit_lexicon(grams: list[np.ndarray], y: np.ndarray, n_train: int, buckets: int, log: dict) -> tuple:
    """TF-IDF ridge on the customer turns: idf, weights, out-of-fold predictions for the training dialogues
    (so the read-out that stacks on it never sees a fitted-on-itself value) and predictions for the rest."""
    from emotag.train.lexical import design_matrix, fit_idf

    idf = fit_idf(grams[:n_train], buckets)
    X = design_matrix(grams, idf).astype(np.float64)
    Xtr, ytr = X[:n_train], y[:n_train]
    folds = np.arange(n_train) % 5
    best = None
    for lam in (0.3, 1.0, 3.0):
        oof = np.zeros(n_train)
        for k in range(5):
            a, b = folds != k, folds == k
            mu = ytr[a].mean()
            alpha = _dual_ridge((Xtr[a] @ Xtr[a].T).toarray(), ytr[a] - mu, lam)
            oof[b] = Xtr[b] @ (Xtr[a].T @ alpha) + mu
        r = pearson(oof, ytr)
        if best is None or r > best[0]:
            best = (r, lam, oof)
    r, lam, oof = best
    mu = ytr.mean()
    w = Xtr.T @ _dual_ridge((Xtr @ Xtr.T).toarray(), ytr - mu, lam)
    # the intercept folds into the read-out's bias: a TF-IDF row has no constant feature
    rest = X[n_train:] @ w
    log["dialogue_lexicon"] = {"buckets": buckets, "ridge_lambda": lam, "cv_r": r,
                               "dev_r_alone": pearson(rest, y[n_train:])}
    print("dialogue lexicon", log["dialogue_lexicon"])
    return idf, np.asarray(w, dtype=np.float32).ravel(), oof - mu, rest


def fit_dialogue(model: Path, data: Path, log: dict, lexicon_buckets: int = 65536) -> None:
    """Ridge regression of mean annotator satisfaction on customer-turn statistics (standardised), one of
    which is the TF-IDF lexicon's prediction."""
    from emotag.dialogues import dialogue_grams
    from emotag.model.config import DIALOGUE_LEXICAL_NAME

    cfg = EmotagConfig.load(model)
    tagger = Tagger.load(model, backend="onnx")
    dialogs = corpora.stc3_dialogues(data)
    rows, gold, grams = [], [], []
    for d in dialogs:
        conv = Conversation(d["id"], d["turns"])
        cust = [t["text"] for t in conv.turns if t["speaker"] == "customer"]
        rows.append(satisfaction_features(list(tagger.tag_many(cust))) if cust else {})
        grams.append(dialogue_grams(tagger.featurizer, cust))
        gold.append(d["satisfaction"])
    y = np.asarray(gold)
    if lexicon_buckets:
        idf, w, oof, rest = fit_lexicon(grams, y, STC3_DEV_START, lexicon_buckets, log)
        for r, v in zip(rows, np.concatenate([oof, rest]), strict=True):
            if r:
                r["lexical_satisfaction"] = float(v)
        np.save(model / DIALOGUE_LEXICAL_NAME, np.stack([idf, w]).astype(np.float32), allow_pickle=False)
        cfg.dialogue.lexical_buckets = lexicon_buckets
    else:
        (model / DIALOGUE_LEXICAL_NAME).unlink(missing_ok=True)
        cfg.dialogue.lexical_buckets = 0
    names = sorted({k for r in rows for k in r})
    X = np.asarray([[r.get(k, 0.0) for k in names] for r in rows])
    tr, dv = slice(0, STC3_DEV_START), slice(STC3_DEV_START, None)
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-9
    Z = (X - mu) / sd
    best = None
    # ridge strength chosen by 5-fold CV inside the training dialogues only
    for lam in (0.1, 1.0, 10.0, 100.0):
        folds = np.arange(STC3_DEV_START) % 5
        preds = np.zeros(STC3_DEV_START)
        for k in range(5):
            a, b = folds != k, folds == k
            Zb = np.hstack([Z[tr][a], np.ones((a.sum(), 1))])
            reg = lam * np.eye(Zb.shape[1])
            reg[-1, -1] = 0
            w = np.linalg.solve(Zb.T @ Zb + reg, Zb.T @ y[tr][a])
            preds[b] = np.hstack([Z[tr][b], np.ones((b.sum(), 1))]) @ w
        r = pearson(preds, y[tr])
        if best is None or r > best[0]:
            best = (r, lam)
    lam = best[1]
    Zb = np.hstack([Z[tr], np.ones((STC3_DEV_START, 1))])
    reg = lam * np.eye(Zb.shape[1])
    reg[-1, -1] = 0
    w = np.linalg.solve(Zb.T @ Zb + reg, Zb.T @ y[tr])
    raw_w = w[:-1] / sd
    bias = w[-1] - float((w[:-1] * mu / sd).sum())
    pred = np.clip(X @ raw_w + bias, -2, 2)
    cfg.dialogue.features = tuple(names)
    cfg.dialogue.weights = tuple(round(float(v), 6) for v in raw_w)
    cfg.dialogue.bias = round(float(bias), 6)
    cfg.save(model)
    log["dialogue"] = {"features": names, "ridge_lambda": lam, "cv_r": best[0],
                       "train_r": pearson(pred[tr], y[tr]), "dev_r": pearson(pred[dv], y[dv]),
                       "dev_n": int(len(y) - STC3_DEV_START)}
    print("dialogue read-out", {k: v for k, v in log["dialogue"].items() if k != "features"})


def fit_valence_blend(model: Path, examples: list[Example], log: dict) -> None:
    """How polarity_score uses the valence head (tagger.polarity_score), chosen on training data only.

    1. valence_scale = std(margin) / std(valence) over 4,000 training texts, so the stretched valence has
       the spread of P(pos) - P(neg) and the score keeps its range (profile rules threshold it);
    2. the blend weight maximising Pearson r with CVAT valence on the *training* folds 1-3, capped at 0.5:
       at least half of the score stays with the polarity heads, which 90k labelled reviews trained,
       while the valence head learnt from 1.8k CVAT sentences. The dev fold 4 r is reported, not tuned on.
    The sign never changes, so polarity accuracy is untouched by construction."""
    from emotag.tagger import _softmax

    cfg = EmotagConfig.load(model)
    tagger = Tagger.load(model, backend="onnx")
    train_texts = [e.text for e in examples if e.split == "train"]
    pick = np.random.default_rng(1).choice(len(train_texts), 4000, replace=False)
    windows = [w for i in sorted(pick) for w in tagger.featurizer.prepare(train_texts[i]).windows[:1]]
    margins, valences = [], []
    for s in range(0, len(windows), 64):
        out = tagger.backend.run(tagger.featurizer.encode(windows[s : s + 64]))
        p = _softmax(out["polarity_logits"], cfg.temperature.get("polarity", 1.0))
        margins.append(p[:, 2] - p[:, 0])
        valences.append(out["valence"])
    scale = float(np.std(np.concatenate(margins)) / max(np.std(np.concatenate(valences)), 1e-6))
    tagger.config.valence_scale = scale
    rows = [e for e in examples if e.source == "cvat"]
    train = [e for e in rows if e.split == "train"]
    dev = [e for e in rows if e.split == "dev"]
    grid = {}
    for blend in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        tagger.config.polarity_valence_blend = blend
        scores = [r.polarity_score for r in tagger.tag_many([e.text for e in train])]
        grid[blend] = pearson(scores, [e.valence for e in train])
    best = max(grid, key=grid.get)
    res = {"valence_scale": scale, "train_r": grid, "chosen": best}
    for blend in (0.0, best):
        tagger.config.polarity_valence_blend = blend
        res[f"dev_r_at_{blend}"] = pearson([r.polarity_score for r in tagger.tag_many([e.text for e in dev])],
                                           [e.valence for e in dev])
    cfg.polarity_valence_blend = best
    cfg.valence_scale = round(scale, 6)
    cfg.save(model)
    log["valence_blend"] = res
    print("polarity_score valence blend", res)


def int8_agreement(model: Path, examples: list[Example], log: dict) -> None:
    dev = [e for e in examples if e.split == "dev" and (e.emotions or e.polarity)]
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


def shipped_calibration(model: Path, examples: list[Example], log: dict) -> None:
    """ECE of the emotion probabilities users get (int8 file) on dev rows with one gold emotion, at
    temperature 1 and at the fitted temperature."""
    from emotag.metrics import expected_calibration_error

    dev = [e for e in examples if e.split == "dev" and e.emotions and len(e.emotions) == 1]
    tagger = Tagger.load(model, backend="onnx-int8")
    labels = tagger.config.emotion_labels
    mask = np.zeros((len(dev), len(labels)))
    for i, e in enumerate(dev):
        mask[i, labels.index(e.emotions[0])] = 1
    fitted = dict(tagger.config.temperature)
    res = {"n": len(dev)}
    for name, temp in (("before", {**fitted, "emotion": 1.0}), ("after", fitted)):
        tagger.config.temperature = temp
        probs = np.array([[r.emotions[k] for k in labels] for r in tagger.tag_many([e.text for e in dev])])
        res[name] = expected_calibration_error(probs, mask)
    tagger.config.temperature = fitted
    log["ece_single_label_emotion_int8"] = res
    print("emotion ECE, single-label dev rows", res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/emotag-zh-small")
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--skip-export", action="store_true", help="only refit the dialogue read-out")
    ap.add_argument("--dialogue-lexicon-buckets", type=int, default=65536, help="0 = no TF-IDF dialogue feature")
    ap.add_argument("--calibration-texts", type=int, default=4096,
                    help="training texts that set the int8 activation ranges")
    ap.add_argument("--model-version", help="the version config.json names (emotag info, /readyz, the model card)")
    a = ap.parse_args()
    model, data = Path(a.model), Path(a.data)
    log_path = model / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    examples = corpora.load_all(data)  # read once; every step below takes its slice
    t = time.process_time()
    if not a.skip_export:
        # int8 activation ranges from --calibration-texts training texts (a fixed, seeded sample: reproducible)
        train = [e.text for e in examples if e.split == "train"]
        pick = np.random.default_rng(0).choice(len(train), a.calibration_texts, replace=False)
        export_onnx(model, quantize="int8", calibration_texts=[train[i] for i in sorted(pick)])
        log.setdefault("timings", {})["export_cpu_s"] = time.process_time() - t
    fit_valence_blend(model, examples, log)  # before the dialogue fit: its features include polarity_score
    t = time.process_time()
    fit_dialogue(model, data, log, a.dialogue_lexicon_buckets)
    log["timings"]["dialogue_fit_cpu_s"] = time.process_time() - t
    if not a.skip_export:
        int8_agreement(model, examples, log)
        shipped_calibration(model, examples, log)
        (model / "model.onnx").unlink()  # 4x the int8 file: rebuilt on demand by `emotag export-onnx`
        from emotag.model.modeling import EmotagModel

        EmotagModel.load(model).save(model, int8_tables=True, tables_in_onnx=True)  # after every step that reads the weights
    log_path.write_text(json.dumps(log, indent=1, ensure_ascii=False))
    if a.model_version:
        cfg_path = model / "config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["version"] = a.model_version
        cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
