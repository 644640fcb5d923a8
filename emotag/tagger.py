"""The one object users hold: `Tagger.load()`, then `tag(text)` or `tag_many(texts)`.

Data flows one way: text -> features (normalise, window, tokenise, hash n-grams) -> backend scores ->
`Result`s. Long texts are cut into sentence windows that each fit the encoder and their scores are
combined (length-weighted), so nothing is silently truncated. Windows from many texts are sorted by
length and batched together to cut padding; results still come back in input order.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from emotag.labels import EMOTION_ZH, POLARITY_ZH
from emotag.model.config import EmotagConfig, resolve_model_dir
from emotag.model.features import Featurizer, Prepared
from emotag.runtime.backends import Backend, load_backend


@dataclass
class Result:
    """One scored text (SPEC §2). When `error` is set every score field is None."""

    id: str | int | None
    emotion: str | None
    emotions: dict[str, float] | None
    polarity: str | None
    polarity_score: float | None
    intensity: float | None
    error: str | None = None

    @classmethod
    def failed(cls, id: str | int | None, error: str) -> Result:
        return cls(id, None, None, None, None, None, error)

    @property
    def emotion_zh(self) -> str | None:
        """Chinese display name of the emotion, for reports."""
        return EMOTION_ZH.get(self.emotion, self.emotion) if self.emotion else None

    @property
    def polarity_zh(self) -> str | None:
        return POLARITY_ZH.get(self.polarity, self.polarity) if self.polarity else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _softmax(z: np.ndarray, t: float) -> np.ndarray:
    z = z.astype(np.float64) / t
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class Tagger:
    """Emotion, polarity and intensity for Chinese texts, from a model directory."""

    def __init__(self, featurizer: Featurizer, backend: Backend, model_dir: Path | None = None) -> None:
        self.featurizer = featurizer
        self.config: EmotagConfig = featurizer.config
        self.backend = backend
        self.model_dir = model_dir

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | None = None,
        backend: str = "onnx",
        threads: int | None = None,
        quantized: bool | None = None,
    ) -> Tagger:
        """Load a model directory (None = the bundled default).

        backend: "onnx" (int8 file when present, else fp32), "onnx-fp32", "onnx-int8" or "torch".
        """
        model_dir = resolve_model_dir(model)
        config = EmotagConfig.load(model_dir)
        featurizer = Featurizer.from_dir(model_dir, config)
        return cls(featurizer, load_backend(model_dir, backend, threads, quantized), model_dir)

    @property
    def emotion_labels(self) -> tuple[str, ...]:
        return self.config.emotion_labels

    def tag(self, text: str) -> Result:
        """Score one text."""
        return next(self.tag_many([text], batch_size=1))

    def tag_many(
        self,
        texts: Iterable[Any],
        batch_size: int = 64,
        ids: Iterable[str | int] | None = None,
        show_progress_bar: bool = False,
        chunk_size: int | None = None,
    ) -> Iterator[Result]:
        """Stream results in input order; memory is bounded by `chunk_size` texts at a time.

        A text that is not a string or is empty after normalisation yields a Result with `error` set,
        never an exception: every input gets exactly one result.
        """
        chunk_size = chunk_size or max(batch_size * 16, 256)
        it = iter(texts)
        id_it = iter(ids) if ids is not None else None
        index = 0
        bar = _progress(show_progress_bar)
        try:
            while True:
                chunk = list(islice(it, chunk_size))
                if not chunk:
                    return
                chunk_ids = (
                    list(islice(id_it, len(chunk))) if id_it is not None else list(range(index, index + len(chunk)))
                )
                if len(chunk_ids) != len(chunk):
                    raise ValueError("ids and texts have different lengths")
                index += len(chunk)
                yield from self._score_chunk(chunk, chunk_ids, batch_size)
                if bar:
                    bar(len(chunk))
        finally:
            if bar:
                bar(None)

    def _score_chunk(self, texts: Sequence[Any], ids: Sequence[str | int], batch_size: int) -> list[Result]:
        prepared: list[Prepared | str] = []
        for t in texts:
            if not isinstance(t, str):
                prepared.append("text is missing" if t is None else f"text is not a string ({type(t).__name__})")
                continue
            try:
                p = self.featurizer.prepare(t)
            except Exception as e:  # noqa: BLE001 - one bad text must not sink the batch
                prepared.append(f"normalisation failed: {e}")
                continue
            prepared.append(p if p.windows else "text is empty after normalisation")
        # all windows of the chunk, sorted by length so each batch pads little
        owners: list[tuple[int, int]] = []
        windows: list[str] = []
        for i, p in enumerate(prepared):
            if isinstance(p, Prepared):
                for j, w in enumerate(p.windows):
                    owners.append((i, j))
                    windows.append(w)
        order = sorted(range(len(windows)), key=lambda k: len(windows[k]))
        E = len(self.config.emotion_labels)
        P = len(self.config.polarity_labels)
        emo = np.zeros((len(windows), E))
        pol = np.zeros((len(windows), max(P, 1)))
        inten = np.zeros(len(windows))
        val = np.zeros(len(windows))
        T = self.config.temperature
        for s in range(0, len(order), batch_size):
            sel = order[s : s + batch_size]
            out = self.backend.run(self.featurizer.encode([windows[k] for k in sel]))
            if self.config.multi_label:
                emo[sel] = 1.0 / (1.0 + np.exp(-out["emotion_logits"].astype(np.float64)))
            else:
                emo[sel] = _softmax(out["emotion_logits"], T.get("emotion", 1.0))
            if P:
                pol[sel] = _softmax(out["polarity_logits"], T.get("polarity", 1.0))
            inten[sel] = out["intensity"]
            val[sel] = out["valence"]
        results: list[Result] = []
        k = 0
        for i, p in enumerate(prepared):
            if not isinstance(p, Prepared):
                results.append(Result.failed(ids[i], p))
                continue
            n = len(p.windows)
            w = np.asarray(p.weights)[:, None]
            rows = slice(k, k + n)
            k += n
            results.append(self._result(ids[i], (emo[rows] * w).sum(0), (pol[rows] * w).sum(0),
                                        float((inten[rows] * w[:, 0]).sum()), p))
        return results

    def _result(self, id_: str | int, emo: np.ndarray, pol: np.ndarray, intensity: float, p: Prepared) -> Result:
        labels = self.config.emotion_labels
        emotions = {lab: round(float(v), 6) for lab, v in zip(labels, emo, strict=True)}
        emotion = labels[int(np.argmax(emo))]
        if self.config.polarity_labels:
            plabels = self.config.polarity_labels
            polarity = plabels[int(np.argmax(pol))]
            idx = {lab: i for i, lab in enumerate(plabels)}
            score = float(pol[idx["positive"]] - pol[idx["negative"]]) if {"positive", "negative"} <= idx.keys() else 0.0
        else:
            polarity, score = None, None
        intensity = min(1.0, max(0.0, intensity))
        if math.isnan(intensity):
            intensity = 0.0
        return Result(id_, emotion, emotions, polarity, None if score is None else round(score, 6),
                      round(intensity, 6))


def _progress(enabled: bool):
    """A rich progress callback (count of texts done; None to stop), or None when disabled."""
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed} texts"),
                    TextColumn("{task.speed} texts/s"), TimeElapsedColumn(), transient=True)
    task = prog.add_task("scoring", total=None)
    prog.start()

    def update(n: int | None) -> None:
        if n is None:
            prog.stop()
        else:
            prog.advance(task, n)

    return update
