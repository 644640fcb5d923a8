"""The base model of a fine-tuning run: where it comes from, its heads for the plan, and anchors.

An emotag model directory keeps its network; a custom label set gets a new emotion head whose rows start
from the base outputs the labels correspond to (`labelplan.head_sources`, `EmotagModel.remap_emotion_head`).
A Hugging Face encoder checkpoint gets a fresh emotag network around it.

Heads the user's data does not supervise are *anchored*, not left to drift: before training, the base
model's own predictions on the training texts become targets for those heads (a label drawn from the
base's distribution per row -- distillation by sampling -- and the base's intensity/valence values).
Without this, fine-tuning polarity on 1,000 hotel reviews would quietly scramble the emotion head that
shares the encoder with it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from emotag import labels as L
from emotag.metrics import sigmoid, softmax
from emotag.model.config import (
    CONFIG_NAME,
    HUB_PATTERNS,
    TOKENIZER_NAME,
    EmotagConfig,
    NgramConfig,
    default_model_dir,
)
from emotag.train.finetune.labelplan import LabelPlan, Source, head_sources

log = logging.getLogger("emotag.finetune")


def _is_emotag_dir(d: Path) -> bool:
    try:
        return "emotion_labels" in json.loads((d / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def resolve_base(base_model: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(kind, location): kind "emotag" (a model directory) or "hf" (an encoder checkpoint path or hub id).

    A hub id that holds an emotag model (config.json with emotion_labels) is downloaded as one.
    """
    if base_model is None:
        d = default_model_dir()
        if not (d / CONFIG_NAME).exists():
            raise FileNotFoundError(f"bundled model not found at {d}; set EMOTAG_MODEL or pass --base-model")
        return "emotag", str(d)
    p = Path(base_model)
    if p.is_dir():
        if _is_emotag_dir(p):
            return "emotag", str(p)
        if not (p / CONFIG_NAME).exists():
            raise ValueError(f"base model {p}: a directory without {CONFIG_NAME} (neither an emotag model nor a "
                             "Hugging Face checkpoint)")
        return "hf", str(p)
    if p.exists():
        raise ValueError(f"base model {p}: a file; pass a model directory or a Hugging Face checkpoint id")
    try:  # a hub id: real network code for users online; offline it fails with a one-line message
        from huggingface_hub import hf_hub_download, snapshot_download

        cfg_path = Path(hf_hub_download(str(base_model), CONFIG_NAME))
        if _is_emotag_dir(cfg_path.parent):
            # the files an emotag model directory holds: the same list Tagger.load downloads
            local = snapshot_download(str(base_model), allow_patterns=list(HUB_PATTERNS))
            return "emotag", local
    except Exception as e:  # noqa: BLE001 - any failure here means "not found or not reachable"
        raise ValueError(f"base model {base_model!r} is not a local directory and could not be fetched from the "
                         f"Hugging Face hub ({type(e).__name__})") from e
    return "hf", str(base_model)


def load_emotag_base(src: str, plan: LabelPlan) -> tuple[Any, Any, dict[str, str]]:
    """The base model, its tokenizer, and where each label of a rebuilt emotion head started from
    (label -> "polarity:positive" or "emotion:anger"; labels starting fresh are left out).

    The emotion head is rebuilt when the label set changes; its rows start from the base outputs the
    labels correspond to, and its temperature is the source head's when every label has a source.
    """
    from tokenizers import Tokenizer

    from emotag.model.modeling import EmotagModel

    model = EmotagModel.load(src)
    cfg = model.config
    tok = Tokenizer.from_file(str(Path(src) / TOKENIZER_NAME))
    start: dict[str, str] = {}
    if plan.head == "emotion" and (tuple(plan.labels) != tuple(cfg.emotion_labels) or
                                   plan.multi_label != cfg.multi_label):
        names = {"emotion": cfg.emotion_labels, "polarity": cfg.polarity_labels}
        sources: list[Source] = head_sources(plan, cfg.emotion_labels, cfg.polarity_labels)
        start = {lab: f"{s[0]}:{names[s[0]][s[1]]}" for lab, s in zip(plan.labels, sources, strict=True) if s}
        old = len(cfg.emotion_labels)
        model.remap_emotion_head(tuple(plan.labels), sources, plan.multi_label)
        heads = {s[0] for s in sources if s}
        t = cfg.temperature.get(heads.pop(), 1.0) if all(sources) and len(heads) == 1 else 1.0
        cfg.temperature = {**cfg.temperature, "emotion": t}
        log.info("emotion head rebuilt for %d labels (base had %d)%s", len(plan.labels), old,
                 "; starting from the base's " + ", ".join(f"{k} = {v}" for k, v in start.items()) if start else "")
    return model, tok, start


def load_hf_base(src: str, plan: LabelPlan, seed: int) -> tuple[Any, Any]:
    """A fresh emotag network on a Hugging Face encoder checkpoint, with its (fast) tokenizer.

    A smaller n-gram bag than the default model's sits beside the encoder. Heads nobody supervises are removed
    (polarity for custom labels) or zeroed (intensity, valence: a constant 0.5 / 0, not noise).
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from emotag.model.modeling import EmotagModel

    if plan.task == "polarity":
        raise ValueError("task 'polarity' keeps an emotag model's emotion head; start it from an emotag model "
                         "(--base-model DIR), or train emotions on a Hugging Face checkpoint")
    hf_tok = AutoTokenizer.from_pretrained(src)
    if not getattr(hf_tok, "is_fast", False):
        raise ValueError(f"base model {src!r}: its tokenizer is not a fast (tokenizers) tokenizer; emotag needs "
                         "tokenizer.json")
    hf_cfg = AutoConfig.from_pretrained(src)
    max_pos = int(getattr(hf_cfg, "max_position_embeddings", 130) or 130)
    cfg = EmotagConfig(
        encoder={},
        emotion_labels=tuple(plan.labels),
        polarity_labels=L.POLARITY if plan.default_taxonomy else (),
        multi_label=plan.multi_label,
        max_length=min(128, max_pos - 2),
        # a modest n-gram bag: cheap, helps on short texts, and keeps the ONNX graph's ngram_ids input
        # (with buckets=0 the exporter prunes that unused input and the runtime, which always feeds it, fails)
        ngram=NgramConfig(buckets=65536, dim=16),
        base_model=src,
    )
    torch.manual_seed(seed)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the load report lists the unused pooler: expected, not news
    try:
        model = EmotagModel(cfg, pretrained=src)
    finally:
        transformers.logging.set_verbosity(verbosity)
    with torch.no_grad():
        for head in (model.intensity, model.valence):
            head.weight.zero_()
            head.bias.zero_()
    return model, hf_tok


def _sampled_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One-hot rows, each label drawn from the row's distribution.

    Cross-entropy on a label drawn from p is an unbiased estimate of cross-entropy on p itself, so this is
    distillation to the base's soft outputs through the trainer's ordinary hard-label loss. (Letting the
    whole top-probability set count as correct was tried first: on a flat base distribution the head then
    drifts freely inside the set, e.g. every text becoming `anger`.)
    """
    cum = np.cumsum(probs, -1)
    u = rng.random((len(probs), 1)) * cum[:, -1:]
    idx = np.minimum((cum < u).sum(-1), probs.shape[-1] - 1)
    out = np.zeros_like(probs, dtype=np.float32)
    out[np.arange(len(probs)), idx] = 1.0
    return out


def add_anchors(train: Any, base_pred: dict[str, np.ndarray], cfg: EmotagConfig, plan: LabelPlan,
                seed: int = 13) -> list[str]:
    """Fill the unsupervised targets of `train` (an EncodedSet, per window) with the base model's own
    predictions; returns the anchored heads."""
    rng = np.random.default_rng(seed)
    anchored = []
    pol_free = train.pol_mask.sum(-1) == 0
    if cfg.polarity_labels and pol_free.any():
        train.pol_mask[pol_free] = _sampled_labels(softmax(base_pred["polarity"][pol_free]), rng)
        anchored.append("polarity")
    if plan.task == "polarity":
        if cfg.multi_label:
            p = sigmoid(base_pred["emotion"])
            train.emo_mask[:] = (rng.random(p.shape) < p).astype(np.float32)
            train.emo_has[:] = True
        else:
            train.emo_mask[:] = _sampled_labels(softmax(base_pred["emotion"]), rng)
        anchored.append("emotion")
    for name in ("intensity", "valence"):
        free = np.isnan(getattr(train, name))
        getattr(train, name)[free] = base_pred[name][free]
        anchored.append(name)
    return anchored


def start_from_polarity(model: Any, train: Any, base_pred: dict[str, np.ndarray], plan: LabelPlan) -> dict[str, str]:
    """Start a regression read-out (one sigmoid, `LabelPlan.regression`) from the base's polarity head:
    sigmoid(a + b * (positive logit - negative logit)), with a and b fitted by least squares on the training
    texts' 0..1 targets, each text's windows combined as scoring combines them. Returns {label: "polarity:positive-negative"}, or {} when the base
    reads no positive/negative polarity.

    Why: a star rating or a satisfaction score is mostly how positive a text is, which the base already
    reads; starting there, the linear read-out adjusts that reading (its L2 pulls toward it, and its
    cross-validation keeps it when a fit cannot beat it) instead of learning polarity from a few rows.
    The expert's polarity columns come along, so the start reproduces the fitted map exactly.
    """
    import torch

    labels = list(model.config.polarity_labels)
    if not {"positive", "negative"} <= set(labels):
        return {}
    ip, ineg = labels.index("positive"), labels.index("negative")
    d = (base_pred["polarity"][:, ip] - base_pred["polarity"][:, ineg]).astype(np.float64)
    a, b = _logistic_1d(d, train.text_rows(train.emo_mask)[:, 0].astype(np.float64), train.weights, train.first)
    with torch.no_grad():
        pol = model.polarity
        model.emotion.weight[0] = b * (pol.weight[ip] - pol.weight[ineg])
        model.emotion.bias[0] = a + b * (pol.bias[ip] - pol.bias[ineg])
        if model.has_lexical:
            E = model.emotion.out_features
            scales = model.config.lexical.scales
            ratio = b * scales.get("polarity", 1.0) / (scales.get("emotion", 1.0) or 1.0)
            model.lex_weight[:, 0] = ratio * (model.lex_weight[:, E + ip] - model.lex_weight[:, E + ineg])
            model.lex_bias[0] = ratio * (model.lex_bias[E + ip] - model.lex_bias[E + ineg])
    log.info("regression read-out starts from the polarity head: sigmoid(%.3f + %.3f * (positive - negative))", a, b)
    return {plan.labels[0]: "polarity:positive-negative"}


def _logistic_1d(x: np.ndarray, y: np.ndarray, weights: np.ndarray, first: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the squared error of texts' sigmoid(a + b x) against y in [0, 1], where `x` holds
    one value per window and a text's prediction is its windows' `weights`-weighted sum (texts start at
    `first`), as `Tagger` combines windows. Why squared error on texts: the read-out is judged by its MAE
    on texts, and a fit on windows by cross-entropy mapped skewed star ratings worse than a straight line."""
    from scipy.optimize import least_squares

    from emotag.metrics import combine_windows

    def residual(w: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-np.clip(w[0] + w[1] * x, -30, 30)))
        return combine_windows(p[:, None], weights, first)[:, 0] - y

    m = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    w = least_squares(residual, np.array([np.log(m / (1 - m)), 0.0])).x
    return float(w[0]), float(w[1])
