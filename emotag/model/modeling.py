"""features -> scores: the multi-task network (torch + transformers; training and export only).

A wide-and-deep design: a BERT-style encoder (any `transformers` encoder: a small one built from a
config for the from-scratch default, or a pretrained checkpoint) reads WordPiece ids, while a hashed
character n-gram bag (fastText-style) reads the same text. Their pooled vectors are concatenated and feed
one head per task:

- emotion: logits over the model's emotion labels (softmax, or sigmoid when multi-label);
- polarity: logits over negative/neutral/positive;
- intensity: arousal-like strength in 0..1 (sigmoid);
- valence: signed valence in -1..1 (tanh), an auxiliary target from CVAT that sharpens polarity_score.

Optionally a lexical expert (config.lexical): a TF-IDF linear model over the same n-gram ids, fit apart
from the encoder (emotag.train.lexical) and added, scaled per head, to the heads' pre-activations. It is
held in buffers, so no optimiser of the network ever moves it.

Weights are saved as safetensors only (no pickle anywhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from emotag.model.config import CONFIG_NAME, ONNX_INT8_NAME, TOKENIZER_NAME, WEIGHTS_NAME, EmotagConfig

OUTPUT_NAMES = ("emotion_logits", "polarity_logits", "intensity", "valence")


def _build_encoder(config: EmotagConfig, pretrained: str | None = None) -> nn.Module:
    if config.encoder.get("model_type") == "use":  # the pretrained DAN+CNN sentence encoder (model/use.py)
        from emotag.model.use import UseEncoder

        return UseEncoder(int(config.encoder["vocab_size"]), float(config.encoder.get("eps", 1e-6)))
    from transformers import AutoConfig, AutoModel

    if pretrained:
        return AutoModel.from_pretrained(pretrained, add_pooling_layer=False)
    enc = dict(config.encoder)
    model_type = enc.pop("model_type", "bert")
    hf_config = AutoConfig.for_model(model_type, **enc)
    try:
        return AutoModel.from_config(hf_config, add_pooling_layer=False)
    except TypeError:  # encoders without a pooling layer argument
        return AutoModel.from_config(hf_config)


class EmotagModel(nn.Module):
    """Encoder + n-gram bag + task heads. Inputs and outputs match the ONNX graph one to one."""

    def __init__(self, config: EmotagConfig, pretrained: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = _build_encoder(config, pretrained)
        if pretrained:  # keep the checkpoint's architecture in our config so the directory is self-contained
            config.encoder = self.encoder.config.to_diff_dict()
            config.encoder["model_type"] = self.encoder.config.model_type
        hidden = self.encoder.config.hidden_size
        ng = config.ngram
        # sparse gradients: each step touches a few thousand of the buckets, not all of them
        self.ngram = nn.Embedding(ng.buckets, ng.dim, padding_idx=0, sparse=True) if ng.buckets > 1 else None
        width = hidden + (ng.dim if self.ngram is not None else 0)
        self.dropout = nn.Dropout(0.1)
        self.mix = nn.Sequential(nn.Linear(width, hidden), nn.GELU())
        self.emotion = nn.Linear(hidden + width, len(config.emotion_labels))
        self.polarity = nn.Linear(hidden + width, max(len(config.polarity_labels), 1))
        self.intensity = nn.Linear(hidden + width, 1)
        self.valence = nn.Linear(hidden + width, 1)
        if self.ngram is not None:
            nn.init.normal_(self.ngram.weight, std=0.02)
            with torch.no_grad():
                self.ngram.weight[0].zero_()
        lx = config.lexical.buckets
        if lx > 1:
            k = len(config.emotion_labels) + max(len(config.polarity_labels), 1) + 2
            self.register_buffer("lex_weight", torch.zeros(lx, k))
            self.register_buffer("lex_bias", torch.zeros(k))
            self.register_buffer("lex_idf", torch.zeros(lx))
        self.has_lexical = lx > 1

    def drop_lexical(self) -> None:
        """Remove the lexical expert (e.g. when the emotion label set changes under it)."""
        from emotag.model.config import LexicalConfig

        for name in ("lex_weight", "lex_bias", "lex_idf"):
            if hasattr(self, name):
                delattr(self, name)
        self.has_lexical = False
        self.config.lexical = LexicalConfig()

    def remap_emotion_head(self, labels: tuple[str, ...], sources: list[tuple[str, int] | None],
                           multi_label: bool) -> None:
        """Replace the emotion head by one over `labels`; label j starts as the base output `sources[j]`
        (("emotion", i) or ("polarity", i): that head's row i, its lexical-expert column included), or
        as a fresh row (None).

        Why: a custom label the base already reads (好评 = positive) then starts at the base's zero-shot
        scores instead of at chance. The lexical expert is kept: its columns for the new labels are copied
        (rescaled to the emotion head's expert scale) or zero, so the kept heads keep their expert too.
        """
        old_e, old_p = self.emotion, self.polarity
        n_old = old_e.out_features
        new = nn.Linear(old_e.in_features, len(labels))
        heads = {"emotion": (old_e, 0), "polarity": (old_p, n_old)}
        with torch.no_grad():
            for j, src in enumerate(sources):
                if src is not None:
                    lin, _ = heads[src[0]]
                    new.weight[j] = lin.weight[src[1]]
                    new.bias[j] = lin.bias[src[1]]
            if self.has_lexical:
                scales = self.config.lexical.scales
                s_e = scales.get("emotion", 1.0) or 1.0
                scales["emotion"] = s_e
                cols = torch.zeros(self.lex_weight.shape[0], len(labels))
                bias = torch.zeros(len(labels))
                for j, src in enumerate(sources):
                    if src is not None:
                        col = heads[src[0]][1] + src[1]
                        ratio = scales.get(src[0], 1.0) / s_e
                        cols[:, j] = self.lex_weight[:, col] * ratio
                        bias[j] = self.lex_bias[col] * ratio
                self.lex_weight = torch.cat([cols, self.lex_weight[:, n_old:]], 1)
                self.lex_bias = torch.cat([bias, self.lex_bias[n_old:]])
        self.emotion = new
        self.config.emotion_labels = tuple(labels)
        self.config.multi_label = multi_label

    def lexical_logits(self, ngram_ids: torch.Tensor) -> torch.Tensor:
        """TF-IDF linear scores (batch x K); see emotag.train.lexical for the exact feature map."""
        nb = self.lex_idf.shape[0]
        b = torch.where(ngram_ids > 0, torch.remainder(ngram_ids - 1, nb - 1) + 1, torch.zeros_like(ngram_ids))
        idf = self.lex_idf[b]
        w = idf / idf.pow(2).sum(1, keepdim=True).clamp(min=1e-12).sqrt()
        return (self.lex_weight[b] * w.unsqueeze(-1)).sum(1) + self.lex_bias

    def features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ngram_ids: torch.Tensor
    ) -> torch.Tensor:
        """The shared representation: the encoder's sentence vector ([CLS]+mean-pooled states for a
        transformer, USE's own pooled output), the n-gram bag mean, and their mix."""
        if self.config.encoder.get("model_type") == "use":
            sentence = self.encoder(input_ids, attention_mask)
        else:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(out.dtype)
            sentence = 0.5 * ((out * m).sum(1) / m.sum(1).clamp(min=1.0) + out[:, 0])
        parts = [sentence]
        if self.ngram is not None:
            gm = (ngram_ids > 0).unsqueeze(-1).to(sentence.dtype)
            bag = (self.ngram(ngram_ids) * gm).sum(1) / gm.sum(1).clamp(min=1.0)
            parts.append(bag)
        wide = torch.cat(parts, dim=-1)
        return torch.cat([wide, self.mix(self.dropout(wide))], dim=-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ngram_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.dropout(self.features(input_ids, attention_mask, ngram_ids))
        emo, pol = self.emotion(h), self.polarity(h)
        inten, val = self.intensity(h).squeeze(-1), self.valence(h).squeeze(-1)
        if self.has_lexical:
            z = self.lexical_logits(ngram_ids)
            s, E, P = self.config.lexical.scales, emo.shape[-1], pol.shape[-1]
            emo = emo + s.get("emotion", 1.0) * z[:, :E]
            pol = pol + s.get("polarity", 1.0) * z[:, E : E + P]
            inten = inten + s.get("intensity", 1.0) * z[:, E + P]
            val = val + s.get("valence", 1.0) * z[:, E + P + 1]
        return emo, pol, torch.sigmoid(inten), torch.tanh(val)

    # -- persistence -------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], tokenizer=None, half: bool = True,
             int8_tables: bool = False, tables_in_onnx: bool = False) -> None:
        """Write config.json, model.safetensors (fp16 by default: half the bytes in git) and the tokenizer.

        `int8_tables` also stores the big lookup tables (the n-gram bag, the expert, the token embeddings)
        as int8 with one scale per row: a quarter of their fp32 bytes. Why: those tables are most of a
        model directory, and the shipped int8 ONNX graph quantises them anyway, so the torch weights lose
        nothing the scorer keeps. Use it for a finished model, not between training stages.

        `tables_in_onnx` leaves out every table that model.int8.onnx in the same directory already holds
        (its weight-only int8 Gather tables, exported from these weights) and names them in the file's
        metadata; `load` reads them back from the ONNX file. Why: otherwise the directory carries each
        table twice, ~18 MB of a 54 MB model, and torch then loads exactly the values the scorer uses.
        """
        d = Path(directory)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "emotag": self.config.version}
        if tables_in_onnx:  # checked before anything is written
            shared = sorted(onnx_tables(d / ONNX_INT8_NAME, {k: tuple(v.shape) for k, v in state.items()}))
            if not shared:
                raise ValueError(f"{d / ONNX_INT8_NAME}: holds none of this model's tables")
            for k in shared:
                del state[k]
            metadata[TABLES_IN_ONNX] = ",".join(shared)
        d.mkdir(parents=True, exist_ok=True)
        self.config.save(d)
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        if int8_tables:
            folded = {"encoder." + k for k in getattr(self.encoder, "folded_at_export", ())}
            for k in [k for k, v in state.items() if _is_table(v) and k not in folded]:
                state[k], state[k + ROW_SCALE] = quantize_rows(state[k])
        save_file(state, str(d / WEIGHTS_NAME), metadata=metadata)
        # safetensors creates the file 0600; a model directory is meant to be read by other accounts too
        # (a scoring service), like every other file written here
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(d / WEIGHTS_NAME, 0o666 & ~mask)
        if tokenizer is not None:
            save_tokenizer(tokenizer, d)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> EmotagModel:
        d = Path(directory)
        if not (d / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{d}: not an emotag model directory (no {CONFIG_NAME})")
        config = EmotagConfig.load(d)
        model = cls(config)
        with safe_open(str(d / WEIGHTS_NAME), framework="pt") as f:  # one read: the tensors and the metadata
            shared = (f.metadata() or {}).get(TABLES_IN_ONNX, "")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        if shared:
            names = shared.split(",")
            if not (d / ONNX_INT8_NAME).exists():
                raise FileNotFoundError(f"{d}: {WEIGHTS_NAME} keeps its tables {names} in {ONNX_INT8_NAME}, "
                                        "which is missing")
            tables = onnx_tables(d / ONNX_INT8_NAME, dict.fromkeys(names), values=True)
            if set(tables) != set(names):
                raise ValueError(f"{d / ONNX_INT8_NAME}: lacks the tables {sorted(set(names) - set(tables))} "
                                 f"that {WEIGHTS_NAME} left to it")
            state.update({k: torch.from_numpy(v) for k, v in tables.items()})
        for k in [k for k in state if k.endswith(ROW_SCALE)]:
            name = k[: -len(ROW_SCALE)]
            state[name] = state[name].float() * state.pop(k).float()[:, None]
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        load_state_strict(model, state, f"{d}: weights do not match config")
        model.eval()
        return model


ROW_SCALE = ".row_scale"  # safetensors key suffix: the per-row scales of an int8-stored table
TABLE_MIN_VALUES = 65_536  # smaller tensors (biases, norms, heads) stay fp16: int8 would save little


TABLES_IN_ONNX = "emotag_tables_in_onnx"  # safetensors metadata: the tables left to model.int8.onnx


def onnx_tables(path: Path, wanted: dict[str, tuple[int, ...] | None], values: bool = False) -> dict:
    """The int8 lookup tables of an ONNX graph that `wanted` names (a state-dict key and its shape, or None
    for any shape): {key: shape}, or {key: dequantised fp32 array} with `values`.

    `emotag.model.export.quantize_tables` stores a table `k` as `k_quantized` (int8) with `k_scale` (one per
    row, or a scalar); onnxruntime's quantize_dynamic, in files exported before it, as `k_quantized` (uint8)
    with a scalar `k_scale` and `k_zero_point`. Either is read back as the graph computes it. MatMul weights
    are never tables here: their initialisers are not named after state-dict keys.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if not path.exists():
        raise FileNotFoundError(f"{path}: no int8 ONNX graph to share tables with")
    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    out: dict = {}
    for k, shape in wanted.items():
        q, scale, zero = (inits.get(k + suffix) for suffix in ("_quantized", "_scale", "_zero_point"))
        if q is None or scale is None or (shape is not None and tuple(q.dims) != shape):
            continue
        per_row = len(scale.dims) == 1 and len(q.dims) > 1 and scale.dims[0] == q.dims[0]
        if not per_row and len(scale.dims):
            continue
        if not values:
            out[k] = tuple(q.dims)
            continue
        v = numpy_helper.to_array(q).astype(np.float32)
        shape = (-1,) + (1,) * (v.ndim - 1) if per_row else ()
        s = numpy_helper.to_array(scale).astype(np.float32).reshape(shape)
        z = numpy_helper.to_array(zero).astype(np.float32).reshape(shape) if zero is not None else np.float32(0.0)
        out[k] = ((v - z) * s).astype(np.float32)
    return out


def _is_table(t: torch.Tensor) -> bool:
    """A lookup table worth storing as int8: a floating 2-D tensor of at least TABLE_MIN_VALUES values."""
    return t.is_floating_point() and t.dim() == 2 and t.numel() >= TABLE_MIN_VALUES


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (q, scale) with t ~= q * scale[:, None]; all-zero rows get scale 0."""
    t = t.float()
    scale = t.abs().amax(dim=1) / 127.0
    q = torch.round(t / scale.clamp_min(1e-30)[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """`module.load_state_dict(state)`, raising ValueError(what ...) on any mismatch.

    position_ids buffers differ across transformers versions; anything else is a real mismatch.
    """
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{what} (missing {missing[:5]}, unexpected {unexpected[:5]})")


def save_tokenizer(tokenizer, directory: Path) -> None:
    """Save a `tokenizers.Tokenizer` or a transformers fast tokenizer as tokenizer.json (+ HF files)."""
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(directory))
    else:
        tokenizer.save(str(directory / TOKENIZER_NAME))
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(
            tokenizer_file=str(directory / TOKENIZER_NAME),
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        ).save_pretrained(str(directory))
