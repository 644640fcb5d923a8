"""Scoring backends: the same network behind onnxruntime (default, light) or torch (training extra).

A backend maps a `Batch` of model inputs to raw outputs (logits, intensity, valence); everything
before (features) and after (probabilities, window merging) is shared, so both backends agree to
float precision (SPEC §2: 1e-3 for fp32 ONNX vs torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from emotag.model.config import ONNX_INT8_NAME, ONNX_NAME, WEIGHTS_NAME
from emotag.model.features import Batch

OUTPUTS = ("emotion_logits", "polarity_logits", "intensity", "valence")


class Backend(Protocol):
    name: str

    def run(self, batch: Batch) -> dict[str, np.ndarray]: ...


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class OnnxBackend:
    """onnxruntime session tuned for throughput on a few CPU cores."""

    def __init__(self, model_dir: Path, quantized: bool | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        fp32, int8 = model_dir / ONNX_NAME, model_dir / ONNX_INT8_NAME
        if quantized is None:  # prefer the int8 file: faster, same emotion on ~99% of dev
            path = int8 if int8.exists() else fp32
        else:
            path = int8 if quantized else fp32
        if not path.exists():
            raise FileNotFoundError(
                f"{model_dir}: no {path.name}; run `emotag export-onnx {model_dir}"
                f"{' --quantize int8' if path == int8 else ''}` or use --backend torch"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.path = path
        self.name = "onnx-int8" if path == int8 else "onnx"

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        out = self.session.run(list(OUTPUTS), batch.as_dict())
        return dict(zip(OUTPUTS, out, strict=True))


class TorchBackend:
    """The training-time network in eval mode (needs the [train] extra)."""

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        try:
            import torch

            from emotag.model.modeling import EmotagModel
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the torch backend needs `pip install emotag[train]`") from e
        if not (model_dir / WEIGHTS_NAME).exists():
            raise FileNotFoundError(f"{model_dir}: no {WEIGHTS_NAME}")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = EmotagModel.load(model_dir)
        self.name = "torch"

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        t = self.torch
        with t.inference_mode():
            out = self.model(
                t.from_numpy(batch.input_ids), t.from_numpy(batch.attention_mask), t.from_numpy(batch.ngram_ids)
            )
        return {k: v.numpy() for k, v in zip(OUTPUTS, out, strict=True)}


def load_backend(model_dir: Path, backend: str = "onnx", threads: int | None = None,
                 quantized: bool | None = None) -> Backend:
    """`backend`: "onnx" (int8 if present), "onnx-fp32", "onnx-int8" or "torch"."""
    if backend == "torch":
        return TorchBackend(model_dir, threads)
    if backend in ("onnx", "onnx-fp32", "onnx-int8"):
        q = {"onnx": quantized, "onnx-fp32": False, "onnx-int8": True}[backend]
        return OnnxBackend(model_dir, q, threads)
    raise ValueError(f"unknown backend {backend!r}; expected onnx, onnx-fp32, onnx-int8 or torch")
