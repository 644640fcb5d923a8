"""Export a model directory to ONNX (fp32) and quantise it to int8 for the batch scorer.

Needs the `[train]` extra (torch, onnx); scoring the result needs only onnxruntime.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from emotag.model.config import ONNX_INT8_NAME, ONNX_NAME
from emotag.model.modeling import OUTPUT_NAMES, EmotagModel

OPSET = 17


def export_onnx(model_dir: str | os.PathLike[str], quantize: str | None = None, fp32: bool = True) -> list[Path]:
    """Write model.onnx (and model.int8.onnx with quantize="int8") into the model directory."""
    d = Path(model_dir)
    model = EmotagModel.load(d)
    model.eval()
    written: list[Path] = []
    onnx_path = d / ONNX_NAME
    v = int(model.config.encoder.get("vocab_size") or 8)
    ids = torch.tensor([[2, 5 % v, 6 % v, 7 % v, 3], [2, 5 % v, 3, 0, 0]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    b = max(model.config.ngram.buckets, 2)
    grams = torch.tensor([[1, 2 % b, 3 % b, 4 % b], [5 % b, 1, 0, 0]], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask, grams),
            str(onnx_path),
            input_names=["input_ids", "attention_mask", "ngram_ids"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "ngram_ids": {0: "batch", 1: "grams"},
                **{n: {0: "batch"} for n in OUTPUT_NAMES},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    _check_parity(model, onnx_path, ids, mask, grams)
    written.append(onnx_path)
    if quantize:
        if quantize != "int8":
            raise ValueError(f"unsupported quantization {quantize!r}; only 'int8'")
        written.append(quantize_int8(onnx_path, d / ONNX_INT8_NAME))
    if not fp32:
        onnx_path.unlink()
        written.remove(onnx_path)
    return written


def quantize_int8(src: Path, dst: Path) -> Path:
    """Weight-only int8: embedding tables (Gather) and MatMul weights; activations are never quantised
    across the batch.

    onnxruntime's dynamic quantisation picks one activation scale per *batch*, so a text's scores would
    change with its batch mates (up to 5e-2 here) and break SPEC §2's batch invariance. Instead: int8
    Gather tables (a fixed per-tensor weight scale) and MatMulNBits 8-bit blocks with accuracy level 4,
    which quantises activations per row and block, so every row is computed independently.
    """
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        tmp = dst.with_suffix(".gather.tmp")
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])
        cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
        quantizer = MatMulNBitsQuantizer(onnx.load(str(tmp)), algo_config=cfg)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
        tmp.unlink()
    finally:
        logging.getLogger().setLevel(quiet)
    return dst


def _check_parity(model: EmotagModel, path: Path, ids, mask, grams, tol: float = 1e-3) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "ngram_ids": grams.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in model(ids, mask, grams)]
    for name, g, w in zip(OUTPUT_NAMES, got, want, strict=True):
        if not np.allclose(g, w, atol=tol):
            raise RuntimeError(f"ONNX export of {path} differs from torch on {name}: max {np.abs(g - w).max():.2e}")
