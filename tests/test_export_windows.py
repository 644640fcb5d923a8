"""The int8 export's graph rewrites for the USE encoder: n-gram windows quantised before they are built
(`export.quantize_windows_first`: the same bytes reach the int8 MatMuls) and the layer norm pooled over
tokens without building its concatenation (`export.pool_norm_without_concat`: the same values up to fp32
rounding). Graphs without the patterns are left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from emotag.model import export  # noqa: E402

TEXTS = ["这款面膜包装太简陋了，很失望", "不难吃，送餐不慢", "物流很快但是包装破损了", "今天好开心[哈哈]",
         "请问什么时候发货", "ok 好的", "客服态度很差，再也不买了", "东西不错，下次还来"]


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny_use(tmp_path_factory):
    """A randomly initialised USE-style model (pretrained weights are not needed for the graph's shape)."""
    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.modeling import EmotagModel
    from emotag.model.use import SPECIAL, build_unigram_tokenizer

    chars = sorted(set("".join(TEXTS).replace(" ", "")))
    pieces = list(SPECIAL) + ["\u2581"] + ["\u2581" + c for c in chars] + chars + ["很快", "但是", "好的"]
    tok = build_unigram_tokenizer(pieces, [0.0] * 4 + [-5.0] * (len(pieces) - 4))
    torch.manual_seed(0)
    cfg = EmotagConfig(encoder={"model_type": "use", "vocab_size": tok.get_vocab_size()}, max_length=64,
                       ngram=NgramConfig(buckets=512, dim=8), name="tiny-use")
    d = tmp_path_factory.mktemp("use") / "model"
    EmotagModel(cfg).eval().save(d, tokenizer=tok)
    export.export_onnx(d, quantize="int8", calibration_texts=TEXTS)
    return d


def _inputs(model_dir):
    from emotag.model.features import Featurizer

    feat = Featurizer.from_dir(model_dir)
    return feat.encode([w for t in TEXTS for w in feat.prepare(t).windows]).as_dict()


def _windows_quantized_after_concat(model: onnx.ModelProto) -> int:
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(n.op_type == "QuantizeLinear" and producer.get(n.input[0]) == "Concat" for n in model.graph.node)


def test_use_export_builds_windows_in_uint8_with_the_same_outputs(tiny_use, tmp_path, monkeypatch):
    rewritten = onnx.load(str(tiny_use / "model.int8.onnx"))
    assert _windows_quantized_after_concat(rewritten) == 0  # all six window blocks moved
    pads = [n for n in rewritten.graph.node if n.op_type == "Pad" and n.name.endswith("/windows_first/pad")]
    assert len(pads) == 6  # conv1 and conv2 of each n-gram order
    # the same fp32 graph and calibration quantised without the rewrite: the reference
    batches = export.calibration_batches(tiny_use, TEXTS)
    monkeypatch.setattr(export, "quantize_windows_first", lambda model: 0)
    plain = export.quantize_int8(tiny_use / "model.onnx", tmp_path / "plain.int8.onnx", batches)
    assert _windows_quantized_after_concat(onnx.load(str(plain))) == 6
    x = _inputs(tiny_use)
    got = _session(tiny_use / "model.int8.onnx").run(None, x)
    want = _session(plain).run(None, x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)  # identical values, not merely close
    fp32 = _session(tiny_use / "model.onnx").run(None, x)
    assert np.abs(got[0] - fp32[0]).max() < 0.5  # still int8 of the same network (loose: random weights)


def test_rewritten_graph_scores_a_text_alone_as_in_a_batch(tiny_use):
    """SPEC §2 batch invariance: the uint8 padding must stay the zero point, never leak across rows."""
    x = _inputs(tiny_use)
    sess = _session(tiny_use / "model.int8.onnx")
    together = sess.run(None, x)
    for r in range(len(x["input_ids"])):
        n = int(x["attention_mask"][r].sum())
        alone = sess.run(None, {"input_ids": x["input_ids"][r:r + 1, :n],
                                "attention_mask": x["attention_mask"][r:r + 1, :n],
                                "ngram_ids": x["ngram_ids"][r:r + 1]})
        for a, t in zip(alone, together, strict=True):
            np.testing.assert_allclose(a[0], t[r], atol=1e-6)


def test_bert_style_int8_graph_is_left_alone(tiny_model_dir):
    model = onnx.load(str(tiny_model_dir / "model.int8.onnx"))
    before = model.SerializeToString()
    assert export.quantize_windows_first(model) == 0
    assert export.pool_norm_without_concat(model) == 0
    assert model.SerializeToString() == before


def test_use_export_pools_the_norm_without_its_concat(tiny_use, tmp_path):
    """On the fp32 graph (shapes recorded as the int8 export records them) the rewrite changes the outputs
    only by fp32 rounding; the int8 file carries it too."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8 = onnx.load(str(tiny_use / "model.int8.onnx"))
    assert any(n.name.endswith("/pooled_norm/out") for n in int8.graph.node)
    assert not any(n.op_type == "LayerNormalization" and n.name.endswith("encoder/norm/LayerNormalization")
                   for n in int8.graph.node)
    quant_pre_process(str(tiny_use / "model.onnx"), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    model = onnx.load(str(tmp_path / "pre.onnx"))
    assert export.pool_norm_without_concat(model) == 1
    assert export.pool_norm_without_concat(model) == 0  # nothing left to rewrite
    onnx.save(model, str(tmp_path / "pooled.onnx"))
    x = _inputs(tiny_use)
    want = _session(tmp_path / "pre.onnx").run(None, x)
    got = _session(tmp_path / "pooled.onnx").run(None, x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def _window_graph(pad_value: float | None = None, mode: str = "constant", extra_reader: bool = False):
    """x (1, T, 2) -> Pad(left 1, right 1) -> 3 Slices along T -> Concat(-1) -> Q -> DQ -> output."""
    t = "T"
    inits = [numpy_helper.from_array(np.array([0, 1, 0, 0, 1, 0], dtype=np.int64), "pads"),
             numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
             numpy_helper.from_array(np.array(128, dtype=np.uint8), "zp"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1")]
    pad_inputs = ["x", "pads"]
    if pad_value is not None:
        inits.append(numpy_helper.from_array(np.array(pad_value, dtype=np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("Pad", pad_inputs, ["padded"], mode=mode)]
    for k, (start, end) in enumerate([(0, -2), (1, -1), (2, None)]):
        inits.append(numpy_helper.from_array(np.array([start], dtype=np.int64), f"s{k}"))
        inits.append(numpy_helper.from_array(np.array([end if end is not None else 2**62], dtype=np.int64), f"e{k}"))
        nodes.append(helper.make_node("Slice", ["padded", f"s{k}", f"e{k}", "axis1"], [f"w{k}"]))
    nodes += [helper.make_node("Concat", ["w0", "w1", "w2"], ["cat"], axis=-1),
              helper.make_node("QuantizeLinear", ["cat", "scale", "zp"], ["q"]),
              helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, t, 6])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("cat", TensorProto.FLOAT, [1, t, 6]))
    graph = helper.make_graph(nodes, "windows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, 2])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_handmade_window_graph_gives_identical_values(tmp_path):
    model = _window_graph()
    x = {"x": np.random.default_rng(0).normal(size=(1, 5, 2)).astype(np.float32) * 3}
    onnx.save(model, str(tmp_path / "a.onnx"))
    want = _session(tmp_path / "a.onnx").run(None, x)[0]
    assert export.quantize_windows_first(model) == 1
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "b.onnx"))
    got = _session(tmp_path / "b.onnx").run(None, x)[0]
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, :2].tolist() == [0.0, 0.0]  # the left edge is padding: zero after the round trip


@pytest.mark.parametrize("variant", [{"pad_value": 1.0}, {"mode": "reflect"}, {"extra_reader": True}])
def test_window_graphs_it_cannot_prove_equal_are_left_alone(variant):
    """A non-zero pad value, another pad mode or the fp32 concat read elsewhere: no rewrite."""
    model = _window_graph(**variant)
    before = model.SerializeToString()
    assert export.quantize_windows_first(model) == 0
    assert model.SerializeToString() == before


def _pooled_graph(axis: int = 1, mask_width: int = 1, norm_is_output: bool = False):
    """parts (B, T, 3) and (B, T, 2) -> Concat -> LayerNorm -> Mul(mask (B, T, mask_width)) -> ReduceSum(axis)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "beta"),
             numpy_helper.from_array(np.array([axis], dtype=np.int64), "axes")]
    nodes = [helper.make_node("Concat", ["a", "b"], ["cat"], axis=-1),
             helper.make_node("LayerNormalization", ["cat", "gamma", "beta"], ["norm"], axis=-1, epsilon=1e-6),
             helper.make_node("Mul", ["norm", "mask"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "axes"], ["y"], keepdims=0)]
    vi = helper.make_tensor_value_info
    inputs = [vi("a", TensorProto.FLOAT, ["B", "T", 3]), vi("b", TensorProto.FLOAT, ["B", "T", 2]),
              vi("mask", TensorProto.FLOAT, ["B", "T", mask_width])]
    outputs = [vi("y", TensorProto.FLOAT, ["B", 5])]
    outputs += [vi("norm", TensorProto.FLOAT, ["B", "T", 5])] if norm_is_output else []
    graph = helper.make_graph(nodes, "pooled", inputs, outputs, inits,
                              value_info=[vi("cat", TensorProto.FLOAT, ["B", "T", 5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_handmade_pooled_norm_gives_the_same_sums(tmp_path):
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(2, 4, 3)).astype(np.float32) * 3 + 1,
         "b": rng.normal(size=(2, 4, 2)).astype(np.float32),
         "mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=np.float32)[..., None]}
    model = _pooled_graph()
    onnx.save(model, str(tmp_path / "a.onnx"))
    want = _session(tmp_path / "a.onnx").run(None, x)[0]
    assert export.pool_norm_without_concat(model) == 1
    onnx.checker.check_model(model)
    assert not any(n.op_type in ("LayerNormalization", "Concat") and n.output[0] in ("norm", "cat")
                   for n in model.graph.node)
    onnx.save(model, str(tmp_path / "b.onnx"))
    got = _session(tmp_path / "b.onnx").run(None, x)[0]
    assert got.shape == want.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", [{"axis": 2}, {"mask_width": 5}, {"norm_is_output": True}])
def test_pooled_norms_it_cannot_prove_equal_are_left_alone(variant):
    """A sum over another axis, a mask that is not one weight per token, the norm read elsewhere: no rewrite."""
    model = _pooled_graph(**variant)
    before = model.SerializeToString()
    assert export.pool_norm_without_concat(model) == 0
    assert model.SerializeToString() == before
