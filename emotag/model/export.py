"""Export a model directory to ONNX (fp32) and quantise it to int8 for the batch scorer.

Needs the `[train]` extra (torch, onnx); scoring the result needs only onnxruntime.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from emotag.model.config import ONNX_INT8_NAME, ONNX_NAME, resolve_model_dir
from emotag.model.modeling import OUTPUT_NAMES, EmotagModel

OPSET = 17


class _MultiHeadAttention(torch.autograd.Function):
    """Scaled dot-product attention with a key padding mask, exported as onnxruntime's contrib op.

    The forward is the reference the export is checked against; `symbolic` emits one
    `com.microsoft.MultiHeadAttention` node where the traced graph would hold ~20 small operators (head
    transposes, two batched matmuls, mask arithmetic, softmax): ~5% of the int8 scorer's time.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, key_mask, num_heads: int):  # noqa: ANN001, ARG004
        B, S, H = q.shape
        d = H // num_heads
        q, k, v = q + bias[:H], k + bias[H : 2 * H], v + bias[2 * H :]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(B, S, num_heads, d).transpose(1, 2)

        scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(key_mask[:, None, None, :] == 0, -10000.0)  # the op's mask_filter_value
        return (scores.softmax(-1) @ heads(v)).transpose(1, 2).reshape(B, S, H)

    @staticmethod
    def symbolic(g, q, k, v, bias, key_mask, num_heads):  # noqa: ANN001
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, bias, key_mask, num_heads_i=num_heads)
        out.setType(q.type())  # same shape and dtype as the query: lets the exporter infer shapes downstream
        return out


class _Hidden:
    def __init__(self, last_hidden_state: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state


class _ExportBert(torch.nn.Module):
    """A BERT encoder re-traced for export: the same weights and arithmetic, attention as one fused node.

    The Q/K/V projections stay separate MatMuls on weights, so int8 quantisation still reaches them.
    """

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    @staticmethod
    def supports(encoder: torch.nn.Module) -> bool:
        c = getattr(encoder, "config", None)
        return (getattr(c, "model_type", None) == "bert" and getattr(c, "is_decoder", False) is False
                and getattr(c, "position_embedding_type", "absolute") == "absolute"
                and hasattr(encoder, "embeddings") and hasattr(encoder, "encoder"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _Hidden:
        e = self.bert.embeddings
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = e.word_embeddings(input_ids) + e.position_embeddings(pos) + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)
        key_mask = attention_mask.to(torch.int32)
        heads = self.bert.config.num_attention_heads
        for layer in self.bert.encoder.layer:
            sa = layer.attention.self
            bias = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
            a = _MultiHeadAttention.apply(x @ sa.query.weight.t(), x @ sa.key.weight.t(), x @ sa.value.weight.t(),
                                          bias, key_mask, heads)
            out = layer.attention.output
            x = out.LayerNorm(out.dense(a) + x)
            h = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
            out = layer.output
            x = out.LayerNorm(out.dense(h) + x)
        return _Hidden(x)


def _torch_export(model: EmotagModel, path: Path, args: tuple, fused_attention: bool) -> None:
    encoder = model.encoder
    if fused_attention:
        model.encoder = _ExportBert(encoder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
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
                custom_opsets={"com.microsoft": 1} if fused_attention else None,
            )
    finally:
        model.encoder = encoder


def export_onnx(model_dir: str | os.PathLike[str], quantize: str | None = None, fp32: bool = True,
                calibration_texts: Sequence[str] | None = None, *, writing: bool = False) -> list[Path]:
    """Write model.onnx (and model.int8.onnx with quantize="int8") into the model directory.

    `calibration_texts` set the int8 activation ranges (see `quantize_int8`); default: emotag's own sample.
    A directory marked incomplete (an `emotag train` run stopped while writing it) is refused, as `score`,
    `eval` and `info` refuse it: its weights may be half-written, and ONNX files beside them would make it
    look finished. `writing`: the caller is the run that holds the marker (`emotag train` exports before
    it removes it).
    """
    d = Path(model_dir)
    if d.is_dir() and not writing:
        resolve_model_dir(d)  # the one home of the incomplete-directory check (a one-line ValueError)
    model = EmotagModel.load(d)
    model.eval()
    if hasattr(model.encoder, "precompute_piece_inputs"):  # USE: per-piece work becomes a table lookup
        model.encoder.precompute_piece_inputs()
    written: list[Path] = []
    onnx_path = d / ONNX_NAME
    v = int(model.config.encoder.get("vocab_size") or 8)
    ids = torch.tensor([[2, 5 % v, 6 % v, 7 % v, 3], [2, 5 % v, 3, 0, 0]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    b = max(model.config.ngram.buckets, 2)
    grams = torch.tensor([[1, 2 % b, 3 % b, 4 % b], [5 % b, 1, 0, 0]], dtype=torch.long)
    fused = _ExportBert.supports(model.encoder)
    _torch_export(model, onnx_path, (ids, mask, grams), fused)
    try:
        _check_parity(model, onnx_path, ids, mask, grams)
    except Exception as e:
        if not fused:
            raise
        # an encoder variant the re-trace does not cover (or an onnxruntime without the fused attention
        # kernel): export it as traced, and check that instead. Correct, about 6% slower: say so.
        warnings.warn(f"fused-attention export failed its check ({type(e).__name__}: {str(e)[:200]}); "
                      "exported the plain graph instead", RuntimeWarning, stacklevel=2)
        _torch_export(model, onnx_path, (ids, mask, grams), fused_attention=False)
        _check_parity(model, onnx_path, ids, mask, grams)
    written.append(onnx_path)
    if quantize:
        if quantize != "int8":
            raise ValueError(f"unsupported quantization {quantize!r}; only 'int8'")
        batches = calibration_batches(d, calibration_texts)
        int8_path = quantize_int8(onnx_path, d / ONNX_INT8_NAME, batches)
        agreement = int8_agreement(onnx_path, int8_path, batches)
        if agreement < INT8_MIN_AGREEMENT:
            warnings.warn(f"{int8_path}: same top emotion as fp32 on only {agreement:.1%} of the calibration "
                          f"windows (SPEC §2 asks >= 99% on a dev set); check it on yours before using it",
                          RuntimeWarning, stacklevel=2)
        written.append(int8_path)
    if not fp32:
        onnx_path.unlink()
        written.remove(onnx_path)
    return written


CALIBRATION_TEXTS = Path(__file__).parent / "resources" / "calibration_zh.txt"


def default_calibration_texts() -> list[str]:
    """emotag's own calibration sample (reviews, posts, service turns): the default int8 calibration."""
    return [t for t in CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines() if t.strip()]
INT8_MIN_AGREEMENT = 0.98  # on calibration windows; below it the int8 file is suspect (warned, still written)


def int8_agreement(fp32_path: Path, int8_path: Path, batches: Sequence[dict[str, np.ndarray]]) -> float:
    """Share of windows whose top emotion logit is the same in the int8 and the fp32 graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path)]
    same = total = 0
    for b in batches:
        a, q = (s.run(["emotion_logits"], b)[0] for s in sessions)
        same += int((a.argmax(-1) == q.argmax(-1)).sum())
        total += len(a)
    return same / total if total else 1.0


def calibration_batches(model_dir: Path, texts: Sequence[str] | None = None, batch_size: int = 32,
                        max_windows: int = 2048) -> list[dict[str, np.ndarray]]:
    """Model inputs for int8 calibration, prepared exactly as the scorer prepares them.

    `texts` should look like what the model will score (the training texts do); the default is a few hundred
    reviews, posts and service turns that ship with emotag.
    """
    from emotag.model.features import Featurizer

    if texts is None:
        texts = default_calibration_texts()
    feat = Featurizer.from_dir(model_dir)
    windows = [w for t in texts for w in feat.prepare(t).windows][:max_windows]
    if not windows:
        raise ValueError("no calibration text survives normalisation")
    return [feat.encode(windows[i : i + batch_size]).as_dict() for i in range(0, len(windows), batch_size)]


def quantize_int8(src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]]) -> Path:
    """Static int8: MatMul weights per channel, their inputs with fixed scales measured on `calibration`;
    lookup tables (Gather) weight-only, one int8 scale per row (`quantize_tables`).

    Why static: onnxruntime's dynamic quantisation picks one activation scale per *batch*, so a text's scores
    would change with its batch mates (up to 5e-2 here) and break SPEC §2's batch invariance. Fixed scales
    keep every row independent, and the QDQ pairs fuse into QLinearMatMul, which runs on the CPU's int8 dot
    product units (~2x the fp32 MatMul here; weight-only MatMulNBits was no faster than fp32). Products of
    two activations (attention scores) stay fp32, and so do products of pooled vectors (`pooled_products`).
    Two graph rewrites then cut the USE encoder's fp32 data movement
    (`quantize_windows_first`, `pool_norm_without_concat`; no-ops on other graphs).
    """
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    source = onnx.load(str(src))
    weights = {i.name for i in source.graph.initializer}
    activation_products = [n.name for n in source.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]
    activation_products += pooled_products(source)
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    tmp = [dst.with_suffix(f".{k}.tmp") for k in ("pre", "qdq")]
    try:
        quant_pre_process(str(src), str(tmp[0]), skip_symbolic_shape=True)
        quantize_static(str(tmp[0]), str(tmp[1]), _Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_exclude=activation_products, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"MatMulConstBOnly": True})
        quantized = onnx.load(str(tmp[1]))
    finally:
        logging.getLogger().setLevel(quiet)
        for t in tmp:
            t.unlink(missing_ok=True)
    quantize_tables(quantized)
    quantize_weights_only(quantized)
    quantize_windows_first(quantized)
    pool_norm_without_concat(quantized)
    onnx.save(quantized, str(dst))
    return dst


WEIGHT_MIN_VALUES = 65536  # an fp32 product weight at least this big is stored int8 (`quantize_weights_only`)


def quantize_weights_only(model: onnx.ModelProto) -> int:
    """Store the weights of the products left fp32 (pooled vectors, the heads' mixing layer) as int8, one
    scale per output column, read through DequantizeLinear: the product itself still runs in fp32. Returns
    how many weights it stored so.

    Why: they are a fifth of the USE network's file (6.6 MB fp32) and run once per window, so rounding the
    weights (0.4% of each column's largest value) costs no agreement, where rounding their inputs did.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    readers = _readers(g)
    done = 0
    for node in list(g.node):
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        init = inits.get(node.input[1])
        if init is None or init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
            continue
        if init.dims[0] * init.dims[1] < WEIGHT_MIN_VALUES or len(readers.get(init.name, [])) != 1:
            continue
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        axis = 0 if trans_b else 1  # the output column's axis
        w = numpy_helper.to_array(init).astype(np.float32)
        scale = (np.abs(w).max(axis=1 - axis) / 127.0).astype(np.float32)
        shape = (-1, 1) if axis == 0 else (1, -1)
        q = np.round(w / np.maximum(scale, 1e-30).reshape(shape)).clip(-127, 127).astype(np.int8)
        name = init.name
        # per-row scales keep the table name (`modeling.onnx_tables` reads a state-dict weight back from them);
        # per-column ones are named apart, so they are never mistaken for rows when the matrix is square
        scale_name = name + ("_scale" if axis == 0 else "_column_scale")
        g.initializer.remove(init)
        g.initializer.extend([numpy_helper.from_array(q, name + "_quantized"),
                              numpy_helper.from_array(scale, scale_name),
                              numpy_helper.from_array(np.zeros(scale.shape, np.int8), name + "_zero_point")])
        dq = helper.make_node("DequantizeLinear", [name + "_quantized", scale_name, name + "_zero_point"],
                              [name + "_dequantized"], name=name + "_DequantizeLinear", axis=axis)
        node.input[1] = name + "_dequantized"
        g.node.insert(list(g.node).index(node), dq)
        done += 1
    return done


TABLE_MIN_ROWS = 1024  # a Gather on an initialiser with at least this many rows is a lookup table


def quantize_tables(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Store each lookup table (a Gather on an fp32 initialiser) as int8 with one scale per row: `k_quantized`
    (int8) and `k_scale` (fp32, one per row; a scalar for a 1-D table), read as Gather -> Cast -> Mul by the
    row's scale. Returns {the Gather's output: (table name, ids input)} for each table it quantised.

    Why per row, not onnxruntime's one scale per table: a table's rows differ in size by 10-50x (USE's
    [SEP] row reaches 22.6 where a typical piece row's largest value is 1.3; an n-gram bag's frequent
    buckets carry far larger weights than its rare ones), so one uint8 step sized for the largest row
    leaves ordinary rows a few levels: the piece table alone cost the USE network about a point of
    top-emotion agreement with fp32. The rows are also what `EmotagModel.save(int8_tables=True)` stores
    (`modeling.quantize_rows`), so the two files hold the same numbers.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = _readers(graph)

    def lookup_only(name: str) -> bool:  # read by row Gathers alone (a tied output projection would break)
        return all(r.op_type == "Gather" and r.input[0] == name and list(r.input).count(name) == 1
                   and all(a.name != "axis" or a.i == 0 for a in r.attribute) for r in readers.get(name, []))

    done: dict[str, tuple[str, str]] = {}
    stored: dict[str, int] = {}  # table name -> its rank, once its int8 rows and scales are in the graph
    for node in list(graph.node):
        name = node.input[0] if node.op_type == "Gather" else None
        init = inits.get(name) if name else None
        if init is None or init.data_type != onnx.TensorProto.FLOAT or not init.dims or init.dims[0] < TABLE_MIN_ROWS:
            continue
        if not lookup_only(name) or len(init.dims) > 2:  # rows of vectors; nothing here has deeper tables
            continue
        if name not in stored:
            table = numpy_helper.to_array(init).astype(np.float32)
            rows = table.reshape(table.shape[0], -1) if table.ndim > 1 else table.reshape(1, -1)
            scale = np.abs(rows).max(axis=1) / 127.0
            q = np.round(rows / np.maximum(scale, 1e-30)[:, None]).clip(-127, 127).astype(np.int8).reshape(table.shape)
            scale = scale.astype(np.float32) if table.ndim > 1 else scale.astype(np.float32).reshape(())
            graph.initializer.remove(init)
            graph.initializer.extend([numpy_helper.from_array(q, name + "_quantized"),
                                      numpy_helper.from_array(scale, name + "_scale")])
            if table.ndim > 1:
                graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), name + "_scale_axes"))
            stored[name] = table.ndim
        out, idx = node.output[0], node.input[1]
        k = list(graph.node).index(node)
        graph.node.remove(node)
        new = [helper.make_node("Gather", [name + "_quantized", idx], [out + "_q"], name=(node.name or out) + "_q",
                                axis=0),
               helper.make_node("Cast", [out + "_q"], [out + "_f"], to=onnx.TensorProto.FLOAT)]
        if stored[name] > 1:
            new += [helper.make_node("Gather", [name + "_scale", idx], [out + "_s"], axis=0),
                    helper.make_node("Unsqueeze", [out + "_s", name + "_scale_axes"], [out + "_s1"]),
                    helper.make_node("Mul", [out + "_f", out + "_s1"], [out])]
        else:
            new.append(helper.make_node("Mul", [out + "_f", name + "_scale"], [out]))
        for j, n in enumerate(new):
            graph.node.insert(k + j, n)
        done[out] = (name, idx)
    return done


def pooled_products(model: onnx.ModelProto) -> list[str]:
    """MatMuls over pooled vectors (a 2-D input: one row per window, no token axis). They stay fp32.

    Why: they run once per window, not once per token, so int8 buys them almost no time, and their inputs
    (sums over a text's tokens) vary in range from text to text more than one fixed scale serves: with them
    quantised, the USE encoder's DAN layers cost another point of top-emotion agreement with fp32.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    rank = {v.name: len(v.type.tensor_type.shape.dim)
            for v in [*inferred.graph.value_info, *inferred.graph.input] if v.type.tensor_type.HasField("shape")}
    return [n.name for n in inferred.graph.node if n.op_type == "MatMul" and rank.get(n.input[0]) == 2]


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """{tensor name: the nodes that read it}: what every rewrite here checks before it moves a tensor."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def quantize_windows_first(model: onnx.ModelProto) -> int:
    """Quantise n-gram windows before they are built, not after: returns how many window blocks it moved.

    Why: the USE encoder's convolutions (`UseEncoder._windows`) pad a (B, T, C) activation, take n shifted
    slices and concatenate them into (B, T, n*C) fp32, which static quantisation then turns into uint8 for
    the int8 MatMul: the pad, slices and concat copy n times the data in fp32, ~18% of the network's time.
    A QuantizeLinear with one scale and zero point acts element by element, so it commutes with slicing and
    concatenation, and quantises a zero to the zero point: QuantizeLinear(x) once, then Pad with the zero
    point, Slice and Concat in uint8 gives the same bytes with a quarter of the memory traffic. The
    DequantizeLinear -> MatMul that follows is untouched, so onnxruntime still fuses it into QLinearMatMul.

    Pattern (all of it, or the graph is left alone): QuantizeLinear (scalar scale and zero point) of a
    Concat read by nothing else, whose inputs are all Slices of one tensor read by nothing else, that
    tensor optionally a constant-mode Pad with value 0. Graphs without it (the BERT-style models) are
    unchanged. The model is edited in place.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    init = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = _readers(g)
    graph_outputs = {o.name for o in g.output}

    def read_only_by(name: str, nodes: Sequence[onnx.NodeProto]) -> bool:
        return name not in graph_outputs and {id(r) for r in readers.get(name, [])} == {id(n) for n in nodes}

    def scalar(name: str) -> bool:
        return name in init and list(init[name].dims) in ([], [1])

    replaced: dict[int, list[onnx.NodeProto]] = {}
    dead: set[int] = set()
    for q in g.node:
        if q.op_type != "QuantizeLinear" or len(q.input) < 3 or not (scalar(q.input[1]) and scalar(q.input[2])):
            continue
        cat = producer.get(q.input[0])
        if cat is None or cat.op_type != "Concat" or not read_only_by(cat.output[0], [q]):
            continue
        slices = [producer.get(i) for i in cat.input]
        if any(s is None or s.op_type != "Slice" for s in slices) or len({s.input[0] for s in slices}) != 1:
            continue
        if not all(read_only_by(s.output[0], [cat]) for s in slices):
            continue
        pad = producer.get(slices[0].input[0])
        if pad is not None and pad.op_type == "Pad":
            mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
            value = pad.input[2] if len(pad.input) > 2 else ""
            zero = value == "" or (value in init and not numpy_helper.to_array(init[value]).any())
            if mode != b"constant" or not zero or not read_only_by(pad.output[0], slices):
                continue
            source = pad.input[0]
        else:
            pad, source = None, slices[0].input[0]
        tag = f"{q.name or q.output[0]}/windows_first"
        nodes = [helper.make_node("QuantizeLinear", [source, q.input[1], q.input[2]], [f"{tag}/q"], name=f"{tag}/q")]
        windowed = f"{tag}/q"
        if pad is not None:
            zero_point = numpy_helper.from_array(numpy_helper.to_array(init[q.input[2]]).reshape(()), f"{tag}/zp")
            g.initializer.append(zero_point)
            nodes.append(helper.make_node("Pad", [windowed, pad.input[1], zero_point.name, *pad.input[3:]],
                                          [f"{tag}/pad"], name=f"{tag}/pad", mode="constant"))
            windowed = f"{tag}/pad"
        for k, s in enumerate(slices):
            nodes.append(helper.make_node("Slice", [windowed, *s.input[1:]], [f"{tag}/slice{k}"],
                                          name=f"{tag}/slice{k}"))
        axis = next(a.i for a in cat.attribute if a.name == "axis")
        nodes.append(helper.make_node("Concat", [f"{tag}/slice{k}" for k in range(len(slices))], [q.output[0]],
                                      name=f"{tag}/concat", axis=axis))
        replaced[id(q)] = nodes  # in the QuantizeLinear's place: everything they read is computed by then
        dead |= {id(q), id(cat), *(id(s) for s in slices)} | ({id(pad)} if pad is not None else set())
    return _replace_nodes(g, replaced, dead)


def _check_parity(model: EmotagModel, path: Path, ids, mask, grams, tol: float = 1e-3) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "ngram_ids": grams.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in model(ids, mask, grams)]
    for name, g, w in zip(OUTPUT_NAMES, got, want, strict=True):
        if not np.allclose(g, w, atol=tol):
            raise RuntimeError(f"ONNX export of {path} differs from torch on {name}: max {np.abs(g - w).max():.2e}")


def pool_norm_without_concat(model: onnx.ModelProto) -> int:
    """Sum a layer norm of concatenated parts over tokens without building the concatenation; returns how
    many such blocks it rewrote.

    Why: the USE encoder pools `LayerNorm(concat(emb, c2, c3, c5)) * mask` over tokens (`UseEncoder.forward`):
    onnxruntime concatenates (B, T, 1280) fp32, normalises it, multiplies and sums it: four passes writing
    or reading the whole tensor, ~17% of the int8 network's time. With per-token mean mu_t and inverse
    deviation r_t (from per-part sums and sums of squares, as onnxruntime's own LayerNormalization computes
    them) and w_t = mask_t * r_t, the algebra of the norm gives

        sum_t mask_t * LN(x_t) = gamma * (sum_t w_t x_t - sum_t w_t mu_t) + beta * sum_t mask_t

    where sum_t w_t x_t is one small (1, T) x (T, C) product per part. Same values up to fp32 rounding (the
    int8 layers after it can turn that into one quantisation step). The concatenation is never built.

    Pattern (all of it, or the graph is left alone): ReduceSum over axis 1 of Mul(LayerNormalization(Concat
    over the last axis of rank-3 parts, constant scale and bias), M), where M is (B, T, 1) with the parts'
    B and T (shapes from the graph's value_info), each intermediate read by nothing else. Edited in place.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    init = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = _readers(g)
    graph_outputs = {o.name for o in g.output}
    shapes = {v.name: [d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                       for d in v.type.tensor_type.shape.dim]
              for v in [*g.value_info, *g.input] if v.type.tensor_type.HasField("shape")}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)

    def read_only_by(name: str, node: onnx.NodeProto) -> bool:
        return name not in graph_outputs and [id(r) for r in readers.get(name, [])] == [id(node)]

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(init[name]) if name in init else None

    def attr(node: onnx.NodeProto, name: str, default: object) -> object:
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    replaced: dict[int, list[onnx.NodeProto]] = {}
    dead: set[int] = set()
    for r in g.node:
        if r.op_type != "ReduceSum" or len(r.input) < 2 or attr(r, "noop_with_empty_axes", 0):
            continue
        axes = const(r.input[1])
        mul = producer.get(r.input[0])
        if axes is None or axes.reshape(-1).tolist() != [1] or mul is None or mul.op_type != "Mul":
            continue
        if not read_only_by(mul.output[0], r):
            continue
        ln = producer.get(mul.input[0])
        ln, mask = (ln, mul.input[1]) if ln is not None and ln.op_type == "LayerNormalization" else (
            producer.get(mul.input[1]), mul.input[0])
        if ln is None or ln.op_type != "LayerNormalization" or len([o for o in ln.output if o]) != 1:
            continue
        if not read_only_by(ln.output[0], mul) or attr(ln, "axis", -1) not in (-1, 2) or len(ln.input) < 3:
            continue
        gamma, beta = const(ln.input[1]), const(ln.input[2])
        cat = producer.get(ln.input[0])
        if gamma is None or beta is None or gamma.ndim != 1 or beta.shape != gamma.shape:
            continue
        if cat is None or cat.op_type != "Concat" or not read_only_by(cat.output[0], ln):
            continue
        shape, m_shape = shapes.get(cat.output[0]), shapes.get(mask)
        if shape is None or m_shape is None or len(shape) != 3 or len(m_shape) != 3 or attr(cat, "axis", 0) not in (-1, 2):
            continue
        if None in shape[:2] or m_shape[:2] != shape[:2] or m_shape[2] != 1 or shape[2] not in (gamma.size, None):
            continue
        tag = f"{r.name or r.output[0]}/pooled_norm"
        nodes, consts = _pooled_norm_nodes(tag, list(cat.input), mask, ln, gamma.size, opset, r)
        g.initializer.extend(consts)
        replaced[id(r)] = nodes  # in the ReduceSum's place: the parts and the mask are computed by then
        dead |= {id(r), id(mul), id(ln), id(cat)}
    return _replace_nodes(g, replaced, dead)


def _pooled_norm_nodes(tag: str, parts: list[str], mask: str, ln: onnx.NodeProto, width: int, opset: int,
                       reduce: onnx.NodeProto) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes (and constants) of `pool_norm_without_concat`'s formula, writing `reduce`'s output."""
    from onnx import helper, numpy_helper

    eps = next((a.f for a in ln.attribute if a.name == "epsilon"), 1e-5)
    keep = next((a.i for a in reduce.attribute if a.name == "keepdims"), 1)
    values = {"axis_last": np.array([-1], np.int64), "axis_t": np.array([1], np.int64),
              "inv_width": np.array(1.0 / width, np.float32), "zero": np.array(0.0, np.float32),
              "eps": np.array(eps, np.float32)}
    consts = [numpy_helper.from_array(v, f"{tag}/{k}") for k, v in values.items()]
    c = {k: f"{tag}/{k}" for k in values}
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], out: str, **kw: object) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{tag}/{out}"], name=f"{tag}/{out}", **kw))
        return f"{tag}/{out}"

    sums = [node("ReduceSum", [p, c["axis_last"]], f"sum{k}", keepdims=1) for k, p in enumerate(parts)]
    squares = [node("ReduceSumSquare", [p, c["axis_last"]], f"sumsq{k}", keepdims=1) if opset >= 18
               else node("ReduceSumSquare", [p], f"sumsq{k}", keepdims=1, axes=[-1]) for k, p in enumerate(parts)]
    total, total_sq = sums[0], squares[0]
    for k in range(1, len(parts)):
        total = node("Add", [total, sums[k]], f"total{k}")
        total_sq = node("Add", [total_sq, squares[k]], f"total_sq{k}")
    mean = node("Mul", [total, c["inv_width"]], "mean")
    var = node("Sub", [node("Mul", [total_sq, c["inv_width"]], "mean_sq"), node("Mul", [mean, mean], "mean2")],
               "var_raw")
    var = node("Add", [node("Max", [var, c["zero"]], "var"), c["eps"]], "var_eps")
    weight = node("Mul", [mask, node("Reciprocal", [node("Sqrt", [var], "std")], "rstd")], "weight")
    weight = node("Transpose", [weight], "weight_t", perm=[0, 2, 1])  # (B, 1, T)
    pooled = node("Concat", [node("MatMul", [weight, p], f"pool{k}") for k, p in enumerate(parts)], "pooled",
                  axis=-1)
    centred = node("Sub", [pooled, node("MatMul", [weight, mean], "pooled_mean")], "centred")
    count = node("ReduceSum", [mask, c["axis_t"]], "count", keepdims=1)
    out = node("Add", [node("Mul", [centred, ln.input[1]], "scaled"), node("Mul", [count, ln.input[2]], "shift")],
               "sum")
    nodes.append(helper.make_node("Identity" if keep else "Squeeze", [out] if keep else [out, c["axis_t"]],
                                  [reduce.output[0]], name=f"{tag}/out"))
    return nodes, consts


def _replace_nodes(g: onnx.GraphProto, replaced: dict[int, list[onnx.NodeProto]], dead: set[int]) -> int:
    """Put each `replaced` node's substitutes in its place (keeping the order topological) and drop `dead`
    nodes and the shapes recorded for the tensors that went with them."""
    if not replaced:
        return 0
    old = list(g.node)
    kept = [m for n in old for m in replaced.get(id(n), [] if id(n) in dead else [n])]
    gone = {o for n in old if id(n) in dead for o in n.output} - {o for n in kept for o in n.output}
    info = [v for v in g.value_info if v.name not in gone]
    del g.node[:], g.value_info[:]
    g.node.extend(kept)
    g.value_info.extend(info)
    return len(replaced)
