"""Domain experts: one TF-IDF linear model per training corpus, over the n-gram ids the network already gets.

Why: a char TF-IDF + logistic-regression model trained on one corpus alone is a strong reader of that
corpus (it beat the shipped model on five of seven held-out rows). The network and its lexical expert are
trained on every corpus at once, and a shared head pays for the mix: hotel reviews, chat lines and
restaurant sentences each lose a point or two against their own baseline. The experts keep each corpus's
own reading, and the composer (emotag.model.compose) learns on the tuning halves how much to trust each one
beside the network, so no expert needs to know which corpus a new text resembles.

Scoring cost is a gather and a sum per window in numpy (no ONNX change): the same bucket map and
normalisation as the lexical expert (emotag.train.lexical), so one idf serves both. Stored as
`experts.npz` in the model directory: `names` (K), `idf` (B, fp16), `bias` (K) and each expert's largest
weights as `index` / `value` (K x KEEP bucket ids, fp16 weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXPERTS_NAME = "experts.npz"
KEEP = 20_000  # weights kept per expert (Experts.save)


@dataclass
class Experts:
    # one logit each: "polarity:hotel" (log-odds of positive in that domain's eyes), "domain:hotel" (the gate's
    # score that a text comes from that domain; softmax over the domain:* columns)
    names: tuple[str, ...]
    idf: np.ndarray  # (B,) float32; bucket 0 (padding) is 0
    weight: np.ndarray  # (B, K) float32
    bias: np.ndarray  # (K,) float32

    @classmethod
    def load(cls, model_dir: str | Path) -> Experts | None:
        """The model's experts, or None when it has none."""
        path = Path(model_dir) / EXPERTS_NAME
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(n) for n in z["names"])
            idf, bias = z["idf"].astype(np.float32), z["bias"].astype(np.float32)
            index, value = z["index"], z["value"].astype(np.float32)
        if index.shape != value.shape or index.shape[0] != len(names) or bias.shape != (len(names),):
            raise ValueError(f"{path}: index {index.shape}, value {value.shape} and bias {bias.shape} do not "
                             f"fit {len(names)} experts")
        if index.size and (index.min() < 0 or index.max() >= idf.shape[0]):
            raise ValueError(f"{path}: bucket indices outside the {idf.shape[0]} buckets")
        weight = np.zeros((idf.shape[0], len(names)), dtype=np.float32)
        for k in range(len(names)):
            weight[index[k], k] = value[k]
        return cls(names, idf, weight, bias)

    def save(self, model_dir: str | Path, keep: int = KEEP) -> None:
        """Write the `keep` largest weights of each expert (sparse: bucket index + fp16 value).

        Why sparse: dense, twelve experts over 262,144 buckets are 6 MB in fp16 and would push the model
        directory past its 40 MB budget; most buckets' weights are near zero, and the largest 20,000 per
        expert carry the decisions (scripts/fit_experts.py prints the tune accuracy before and after)."""
        keep = min(keep, self.weight.shape[0])
        index = np.argpartition(-np.abs(self.weight), keep - 1, axis=0)[:keep].T  # (K, keep)
        index = np.sort(index, axis=1)
        value = np.take_along_axis(self.weight.T, index, axis=1)
        np.savez_compressed(Path(model_dir) / EXPERTS_NAME, names=np.array(self.names),
                            idf=self.idf.astype(np.float16), bias=self.bias.astype(np.float32),
                            index=index.astype(np.int32), value=value.astype(np.float16))

    @property
    def columns(self) -> tuple[str, ...]:
        """What `text_columns` returns: every expert's logit, then `polarity:gated` when there is a gate."""
        return self.names + (("polarity:gated",) if self._gate() else ())

    def _gate(self) -> list[tuple[int, int]]:
        """(domain column, polarity column) pairs: domain:X gates polarity:X."""
        idx = {n: i for i, n in enumerate(self.names)}
        return [(i, idx["polarity:" + n[len("domain:"):]]) for n, i in idx.items()
                if n.startswith("domain:") and "polarity:" + n[len("domain:"):] in idx]

    def text_columns(self, z: np.ndarray) -> np.ndarray:
        """Per-text expert logits (texts x K) plus the gated polarity logit: each domain's polarity expert
        weighted by the gate's probability that the text is from that domain (a mixture of experts).

        Why the gate: a global weighting of six domain experts can only average them, and each is good at
        its own domain only; the gate routes a hotel review to the hotel expert and a food review to the
        restaurant expert without the caller saying where the text comes from."""
        pairs = self._gate()
        if not pairs:
            return z
        d = z[:, [i for i, _ in pairs]]
        d = np.exp(d - d.max(1, keepdims=True))
        d /= d.sum(1, keepdims=True)
        gated = (d * z[:, [j for _, j in pairs]]).sum(1, keepdims=True)
        return np.concatenate([z, gated], axis=1)

    def logits(self, ngram_ids: np.ndarray) -> np.ndarray:
        """(windows, K) expert logits for a batch's (windows, L) n-gram ids (0 = padding)."""
        B = self.idf.shape[0]
        g = np.asarray(ngram_ids)
        b = np.where(g > 0, (g - 1) % (B - 1) + 1, 0)
        w = self.idf[b]
        w = w / np.sqrt(np.maximum((w * w).sum(1, keepdims=True), 1e-12))
        return np.einsum("nl,nlk->nk", w, self.weight[b]) + self.bias
