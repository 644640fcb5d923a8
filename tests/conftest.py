"""Shared fixtures. Nothing here touches a network hub: tiny models are built and trained locally."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
BUNDLED = ROOT / "models" / "emotag-zh-small"

POS = ["很好", "喜欢", "满意", "超赞", "开心", "推荐", "好用", "漂亮"]
NEG = ["很差", "失望", "生气", "垃圾", "难用", "退货", "讨厌", "后悔"]
FILL = ["这个", "面膜", "手机", "物流", "客服", "质量", "东西", "真的", "感觉", "今天"]


def sentiment_rows(n: int, seed: int, pos_words=POS, neg_words=NEG, max_fill: int = 4) -> list[tuple[str, bool]]:
    """(text, is_positive) pairs: filler words around one sentiment word that decides the label."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pos = rng.random() < 0.5
        words = [rng.choice(FILL) for _ in range(rng.randint(1, max_fill))]
        words.insert(rng.randint(0, len(words)), rng.choice(pos_words if pos else neg_words))
        out.append(("".join(words), pos))
    return out


def synthetic_corpus(n: int = 400, seed: int = 0):
    """Short texts whose label is decided by a sentiment word: enough signal for a tiny model to learn."""
    from emotag.train.corpora import Example

    return [
        Example(text, "synthetic", ("like", "happiness") if pos else ("anger", "disgust"),
                "positive" if pos else "negative", intensity=0.4 if pos else 0.8, valence=0.7 if pos else -0.7)
        for text, pos in sentiment_rows(n, seed)
    ]


def build_tiny_model(directory: Path, steps_epochs: float = 6.0, labels=None, multi_label: bool = False,
                     lexical: bool = True) -> Path:
    """A 1-layer, 32-wide model trained for a few seconds on the synthetic corpus, exported to ONNX.

    With `lexical`, a TF-IDF expert is fit and fused in as the default recipe does, so every path the
    bundled model takes (torch, ONNX, int8, fine-tuning) is exercised on the tiny one too.
    """
    import numpy as np
    import torch

    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.export import export_onnx
    from emotag.model.features import Featurizer
    from emotag.model.modeling import EmotagModel
    from emotag.text.normalize import normalize
    from emotag.train.trainer import EncodedSet, TrainSettings, fit
    from emotag.train.vocab import build_tokenizer

    torch.manual_seed(0)
    data = synthetic_corpus()
    cfg = EmotagConfig(
        encoder={"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "intermediate_size": 64, "max_position_embeddings": 66, "type_vocab_size": 1},
        max_length=64, ngram=NgramConfig(buckets=2048, dim=8), name="tiny-test",
    )
    if labels:
        cfg.emotion_labels = tuple(labels)
        cfg.multi_label = multi_label
    tok = build_tokenizer([normalize(e.text).text for e in data] + ["[哈哈] <url> <phone>"], vocab_size=300,
                          min_frequency=1)
    cfg.encoder["vocab_size"] = tok.get_vocab_size()
    model = EmotagModel(cfg)
    feat = Featurizer(tok, cfg)
    train = EncodedSet(feat, data)
    fit(model, train, None, TrainSettings(epochs=steps_epochs, batch_size=32, lr=3e-3, ngram_lr=5e-2,
                                          warmup=0.0))
    if lexical:
        from emotag.train.lexical import LexicalTargets, attach_lexical, design_matrix, fit_idf, fit_lexical

        idf = fit_idf(train.grams, 1024)
        y = LexicalTargets(train.emo_mask, train.pol_mask, train.intensity, train.valence,
                           np.ones(len(train), dtype=np.float32))
        W, b = fit_lexical(design_matrix(train.grams, idf), y, l2=1e-3, iterations=60)
        model = attach_lexical(model, W, b, idf, {"emotion": 0.5, "polarity": 0.5, "intensity": 0.5,
                                                  "valence": 0.5})
    model.save(directory, tokenizer=tok)
    export_onnx(directory, quantize="int8")
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    if not (BUNDLED / "config.json").exists():
        pytest.fail(f"bundled model missing at {BUNDLED}")
    return BUNDLED
