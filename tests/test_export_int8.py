"""The int8 export's storage choices: lookup tables with one int8 scale per row (`export.quantize_tables`),
int8-stored weights for the products that run in fp32 (`export.quantize_weights_only`), the USE encoder's
per-piece work as a table (`UseEncoder.precompute_piece_inputs`), and reading tables back for torch
(`modeling.onnx_tables`, both the per-row and the older one-scale-per-table layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from emotag.model import export  # noqa: E402
from emotag.model.modeling import onnx_tables  # noqa: E402


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _gather_model(table: np.ndarray) -> onnx.ModelProto:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [None])
    out = helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "g", [ids], [out],
                              [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tables_keep_ordinary_rows_precise_beside_an_outlier_row():
    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.5, (2048, 16)).astype(np.float32)
    table[7] *= 40  # like USE's [SEP] row: one row far larger than the rest
    model = _gather_model(table)
    assert export.quantize_tables(model) == {"rows": ("table", "ids")}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["table_quantized"].dtype == np.int8 and inits["table_scale"].shape == (2048,)
    ids = np.arange(2048, dtype=np.int64)
    got = _run(model, {"ids": ids})
    step = np.abs(table).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - table) <= step / 2 + 1e-6)
    # one scale for the whole table would leave ordinary rows a step 40x coarser than theirs
    ordinary = np.delete(np.arange(2048), 7)
    assert np.abs(got - table)[ordinary].max() < (np.abs(table).max() / 127) / 20
    back = onnx_tables_from(model, {"table": (2048, 16)})
    np.testing.assert_array_equal(back["table"], got)


def onnx_tables_from(model: onnx.ModelProto, wanted: dict) -> dict:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        onnx.save(model, str(path))
        return onnx_tables(path, wanted, values=True)


def test_one_dimensional_tables_take_one_scale():
    table = np.linspace(-3, 5, 4096).astype(np.float32)
    model = _gather_model(table)
    export.quantize_tables(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["table_scale"].shape == ()
    got = _run(model, {"ids": np.arange(4096, dtype=np.int64)})
    assert np.abs(got - table).max() <= 5 / 127 / 2 + 1e-6
    np.testing.assert_allclose(onnx_tables_from(model, {"table": None})["table"], got, atol=1e-7)


def test_small_gathers_and_other_axes_are_left_alone():
    model = _gather_model(np.ones((100, 4), np.float32))  # a few rows: not a lookup table worth it
    assert export.quantize_tables(model) == {}
    assert [n.op_type for n in model.graph.node] == ["Gather"]


def test_the_older_one_scale_layout_still_reads_back():
    """Files exported before per-row tables: onnxruntime's uint8 table with one scale and zero point."""
    q = np.array([[0, 128, 255], [10, 20, 30]], np.uint8)
    graph = helper.make_graph([], "g", [], [], [numpy_helper.from_array(q, "t_quantized"),
                                                numpy_helper.from_array(np.array(0.5, np.float32), "t_scale"),
                                                numpy_helper.from_array(np.array(128, np.uint8), "t_zero_point")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = onnx_tables_from(model, {"t": (2, 3), "missing": None})
    assert set(got) == {"t"}
    np.testing.assert_array_equal(got["t"], (q.astype(np.float32) - 128) * 0.5)


def test_fp32_products_store_their_weights_int8():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (256, 512)).astype(np.float32)  # MatMul B: (in, out)
    v = rng.normal(0, 0.1, (300, 512)).astype(np.float32)  # Gemm with transB: (out, in)
    small = rng.normal(0, 0.1, (300, 4)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Gemm", ["h", "v"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "small"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(a, n) for a, n in
                                                      ((w, "w"), (v, "v"), (small, "small"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rng.normal(0, 1, (5, 256)).astype(np.float32)}
    want = _run(model, feeds)
    assert export.quantize_weights_only(model) == 2  # the small one stays fp32
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["w_quantized"].dtype == np.int8 and inits["w_column_scale"].shape == (512,)
    assert inits["v_quantized"].dtype == np.int8 and inits["v_scale"].shape == (300,)
    assert inits["small"].dtype == np.float32
    for name, a, axis in (("w_column", w, 0), ("v", v, 1)):  # each weight within half its column's step
        scale = np.expand_dims(inits[name + "_scale"], axis)
        name = name.removesuffix("_column")
        assert np.all(np.abs(inits[name + "_quantized"] * scale - a) <= scale / 2 + 1e-7)
    back = onnx_tables_from(model, {"w": None, "v": None})  # per-row weights read back; per-column never
    assert set(back) == {"v"} and np.abs(back["v"] - v).max() <= inits["v_scale"].max() / 2 + 1e-7
    got = _run(model, feeds)  # two rounded products in a row: a few tenths of a percent each
    assert np.abs(got - want).max() <= 0.03 * np.abs(want).max()


def test_piece_table_gives_the_encoder_the_same_vectors():
    from emotag.model.use import UseEncoder

    torch.manual_seed(0)
    enc = UseEncoder(40).eval()
    ids = torch.tensor([[1, 5, 9, 12, 2], [1, 7, 2, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        want = enc(ids, mask)
        enc.precompute_piece_inputs()
        got = enc(ids, mask)
    assert enc.piece_inputs is not None and enc.piece_inputs.shape == (40, 768)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_use_export_reads_the_piece_table_not_the_projection(tmp_path):
    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.modeling import EmotagModel

    torch.manual_seed(0)
    cfg = EmotagConfig(encoder={"model_type": "use", "vocab_size": 64}, max_length=32,
                       ngram=NgramConfig(buckets=2048, dim=8), name="tiny-use")
    from emotag.model.use import SPECIAL, build_unigram_tokenizer

    pieces = list(SPECIAL) + ["\u2581"] + [chr(0x4E00 + i) for i in range(59)]
    EmotagModel(cfg).eval().save(tmp_path, tokenizer=build_unigram_tokenizer(pieces, [0.0] * 4 + [-5.0] * 60))
    export.export_onnx(tmp_path, quantize="int8", calibration_texts=["一丁七万丈三上下", "丌不与丐丑"])
    for name in ("model.onnx", "model.int8.onnx"):
        nodes = onnx.load(str(tmp_path / name)).graph.node
        assert not [n for n in nodes if "proj" in n.name and n.op_type in ("MatMul", "Gemm")], name
    int8 = {i.name: i for i in onnx.load(str(tmp_path / "model.int8.onnx")).graph.initializer}
    assert int8["ngram.weight_quantized"].data_type == TensorProto.INT8
    assert list(int8["ngram.weight_scale"].dims) == [2048]


def test_a_table_read_twice_is_stored_once_and_a_tied_one_is_left_alone():
    rng = np.random.default_rng(2)
    table = rng.normal(0, 0.5, (2048, 8)).astype(np.float32)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [None])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")]
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["a"], axis=0),
                               helper.make_node("Gather", ["table", "ids"], ["b"], axis=0)], "g", [ids], outs,
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert set(export.quantize_tables(model)) == {"a", "b"}
    names = [i.name for i in model.graph.initializer]
    assert names.count("table_quantized") == 1 and "table" not in names
    feeds = {"ids": np.array([0, 5, 2047], np.int64)}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    a, b = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - table[feeds["ids"]]).max() <= np.abs(table).max() / 254 + 1e-6
    # the same table also read by a product (tied weights): not a lookup table only, left fp32
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2048])
    tied = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["a"], axis=0),
                              helper.make_node("MatMul", ["x", "table"], ["b"])], "g", [ids, x], outs,
                             [numpy_helper.from_array(table, "table")])
    tied_model = helper.make_model(tied, opset_imports=[helper.make_opsetid("", 17)])
    assert export.quantize_tables(tied_model) == {}


def test_saved_use_model_keeps_the_folded_projection_fp16(tmp_path):
    """int8 rows for big weights, except the projection the export folds into the piece table: stored as the
    table was computed from it, so a re-export rebuilds the same table."""
    from safetensors import safe_open

    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.modeling import ROW_SCALE, EmotagModel

    torch.manual_seed(0)
    cfg = EmotagConfig(encoder={"model_type": "use", "vocab_size": 64}, max_length=32,
                       ngram=NgramConfig(buckets=2048, dim=8), name="tiny-use")
    EmotagModel(cfg).eval().save(tmp_path, int8_tables=True)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert stored["encoder.proj.weight"].dtype == torch.float16
    assert "encoder.proj.weight" + ROW_SCALE not in stored
    assert stored["encoder.conv1.2.weight"].dtype == torch.int8  # 256 x 1280: int8 rows
