"""Masked-language-model pre-training of the from-scratch encoder, with jieba whole-word masking.

No pretrained Chinese checkpoint can be downloaded here, so the encoder starts from random weights.
Before it sees a label it reads every training text (and the unlabelled text registry packages carry)
and learns to fill in masked words. Masking whole jieba words rather than single characters matters
for Chinese: a WordPiece vocabulary makes every hanzi its own token, and a lone masked character of
一个词 is usually guessable from its neighbour, which teaches spelling rather than meaning.

The result is a plain directory (`tokenizer.json` + `encoder/` in Hugging Face format) that
`scripts/train_default.py --init DIR` starts the multi-task model from.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotag.text.segment import segment

log = logging.getLogger("emotag.train")


def word_ids(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """For each token (given by its character offsets in `text`), the index of the jieba word it falls in.

    Special tokens (offsets (0, 0)) get -1, so they are never masked.
    """
    char_word = np.full(len(text) + 1, -1, dtype=np.int64)
    pos = 0
    for w_i, w in enumerate(segment(text)):
        start = text.find(w, pos)
        if start < 0:  # cannot happen for segment's output; keep the characters unmasked if it does
            continue
        char_word[start : start + len(w)] = w_i
        pos = start + len(w)
    return [int(char_word[s]) if e > s else -1 for s, e in offsets]


@dataclass
class MaskedText:
    ids: np.ndarray  # token ids with [CLS]/[SEP]
    words: np.ndarray  # word index per token, -1 for special tokens


def encode_corpus(tokenizer, texts: Sequence[str], max_tokens: int = 128) -> list[MaskedText]:
    """Tokenise and word-segment every text once; masks are drawn afresh each time a batch is built."""
    out: list[MaskedText] = []
    for s in range(0, len(texts), 4096):
        part = list(texts[s : s + 4096])
        for t, enc in zip(part, tokenizer.encode_batch(part), strict=True):
            ids, offs = enc.ids, enc.offsets
            if len(ids) > max_tokens:  # keep [CLS] ... [SEP]
                ids, offs = ids[: max_tokens - 1] + ids[-1:], offs[: max_tokens - 1] + offs[-1:]
            if len(ids) < 4:
                continue
            out.append(MaskedText(np.asarray(ids, dtype=np.int64), np.asarray(word_ids(t, offs), dtype=np.int64)))
    return out


def mask_batch(items: Sequence[MaskedText], pad_id: int, mask_id: int, vocab_size: int, n_special: int,
               rng: np.random.Generator, rate: float = 0.15) -> dict[str, torch.Tensor]:
    """BERT's 80/10/10 corruption applied to whole words: ~`rate` of the words of each text are chosen."""
    width = max(len(x.ids) for x in items)
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    att = np.zeros((len(items), width), dtype=np.int64)
    labels = np.full((len(items), width), -100, dtype=np.int64)
    for r, x in enumerate(items):
        n = len(x.ids)
        ids[r, :n], att[r, :n] = x.ids, 1
        n_words = int(x.words.max()) + 1
        if n_words <= 0:
            continue
        chosen = rng.random(n_words) < rate
        if not chosen.any():
            chosen[rng.integers(n_words)] = True
        sel = (x.words >= 0) & chosen[np.maximum(x.words, 0)]
        labels[r, :n][sel] = x.ids[sel]
        roll = rng.random(n)
        row = ids[r, :n]
        row[sel & (roll < 0.8)] = mask_id
        rand = sel & (roll >= 0.8) & (roll < 0.9)
        row[rand] = rng.integers(n_special, vocab_size, size=int(rand.sum()))
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att),
            "labels": torch.from_numpy(labels)}


def pretrain_mlm(
    model: torch.nn.Module,
    data: Sequence[MaskedText],
    *,
    pad_id: int,
    mask_id: int,
    n_special: int,
    minutes: float,
    epochs: float = 10.0,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: float = 0.05,
    seed: int = 13,
    progress: Callable[[int, float, float], None] | None = None,
) -> dict[str, float]:
    """Train a `BertForMaskedLM` model for `minutes` of wall time (or `epochs`, whichever ends first).

    The learning rate follows whichever budget is further spent, the clock or the step count: linear warm-up
    over the first `warmup` of it, then linear decay to zero, so a slower machine trains less but still
    anneals, and a run bounded by `epochs` is the same on any machine.
    """
    if not data:
        raise ValueError("no pre-training text")
    vocab_size = model.config.vocab_size
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    torch.manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    budget = minutes * 60.0
    order = list(range(len(data)))
    max_steps = int(math.ceil(len(data) / batch_size * epochs))
    t0, step, ema = time.time(), 0, None
    model.train()
    done = False
    while not done:
        pyrng.shuffle(order)
        chunk = batch_size * 50  # length-bucketed: sort within chunks, shuffle the batches
        batches = []
        for s in range(0, len(order), chunk):
            part = sorted(order[s : s + chunk], key=lambda i: len(data[i].ids))
            batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
        pyrng.shuffle(batches)
        for b in batches:
            frac = max((time.time() - t0) / budget, step / max_steps)
            if frac >= 1.0:
                done = True
                break
            scale = frac / warmup if frac < warmup else max(0.0, (1.0 - frac) / (1.0 - warmup))
            for g in opt.param_groups:
                g["lr"] = lr * max(scale, 1e-3)
            batch = mask_batch([data[i] for i in b], pad_id, mask_id, vocab_size, n_special, rng)
            labels = batch.pop("labels")
            hidden = model.bert(**batch).last_hidden_state
            sel = labels >= 0  # the prediction head runs on masked positions only: ~7x cheaper than all
            logits = model.cls(hidden[sel])
            loss = torch.nn.functional.cross_entropy(logits, labels[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            cur = float(loss.detach())
            ema = cur if ema is None else 0.98 * ema + 0.02 * cur
            if progress:
                progress(step, ema, (time.time() - t0) / 60)
    model.eval()
    return {"steps": step, "minutes": (time.time() - t0) / 60, "final_loss_ema": ema or float("nan"),
            "epochs": step * batch_size / max(1, len(data))}


def load_pretrained_encoder(model: torch.nn.Module, directory: str | os.PathLike[str]) -> None:
    """Copy a `pretrain_mlm.py` encoder (`DIR/encoder/model.safetensors`) into `model.encoder`.

    The emotag model must have been built with the same architecture and the vocabulary of
    `DIR/tokenizer.json`; anything else fails loudly rather than half-loading.
    """
    from safetensors.torch import load_file

    from emotag.model.modeling import load_state_strict

    path = Path(directory) / "encoder" / "model.safetensors"
    load_state_strict(model.encoder, load_file(str(path)), f"{path}: encoder weights do not fit")


ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size", "pad_token_id", "vocab_size")


def pretrained_architecture(directory: str | os.PathLike[str]) -> dict[str, int]:
    """The encoder settings an emotag config must take to load `directory`'s weights."""
    import json

    cfg = json.loads((Path(directory) / "encoder" / "config.json").read_text(encoding="utf-8"))
    return {k: cfg[k] for k in ARCH_KEYS if k in cfg}
