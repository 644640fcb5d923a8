"""Model core and Tagger: save/load round trip, backend parity, batch parity, windows, failure rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotag import EMOTIONS, POLARITY
from emotag.model.features import Featurizer, hash_ngrams
from emotag.tagger import Result, Tagger

TEXTS = [
    "这款面膜真的很好用，超赞，推荐！",
    "质量很差，客服态度也差，非常失望，要退货",
    "物流",
    "今天心情不错[哈哈]",
    "東西很差，很後悔買了",
    "love it 很喜欢",
    "感觉一般般吧，没什么特别的，价格还行，包装也普通。" * 3,
]


def _close(a: Result, b: Result, tol: float) -> None:
    assert a.emotion == b.emotion
    assert a.polarity == b.polarity
    for k in EMOTIONS:
        assert abs(a.emotions[k] - b.emotions[k]) <= tol, k
    assert abs(a.polarity_score - b.polarity_score) <= tol
    assert abs(a.intensity - b.intensity) <= tol


def test_result_contract(tiny_model_dir):
    r = Tagger.load(tiny_model_dir, backend="onnx-fp32").tag(TEXTS[0])
    d = json.loads(r.to_json())
    assert set(d) == {"id", "emotion", "emotions", "polarity", "polarity_score", "intensity", "error"}
    assert d["emotion"] in EMOTIONS and d["polarity"] in POLARITY
    assert abs(sum(d["emotions"].values()) - 1) < 1e-4
    assert -1 <= d["polarity_score"] <= 1 and 0 <= d["intensity"] <= 1
    assert d["error"] is None


def test_tiny_model_learned_polarity(tiny_model_dir):
    tagger = Tagger.load(tiny_model_dir, backend="torch")
    pos, neg = tagger.tag("真的很好很喜欢"), tagger.tag("很差很失望")
    assert pos.polarity_score > 0 > neg.polarity_score


def test_save_load_round_trip(tiny_model_dir, tmp_path):
    import torch

    from emotag.model.config import EmotagConfig
    from emotag.model.modeling import EmotagModel

    m1 = EmotagModel.load(tiny_model_dir)
    m1.save(tmp_path / "copy")
    m2 = EmotagModel.load(tmp_path / "copy")
    assert EmotagConfig.load(tmp_path / "copy").to_dict() == EmotagConfig.load(tiny_model_dir).to_dict()
    ids = torch.tensor([[2, 10, 11, 3]])
    mask = torch.ones_like(ids)
    grams = torch.tensor([[5, 6, 7]])
    for a, b in zip(m1(ids, mask, grams), m2(ids, mask, grams), strict=True):
        assert torch.equal(a, b)
    assert not list((tmp_path / "copy").glob("*.bin")) and not list((tmp_path / "copy").glob("*.pt"))


def test_int8_tables_round_trip(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from safetensors import safe_open

    from emotag.model import modeling
    from emotag.model.modeling import ROW_SCALE, EmotagModel

    monkeypatch.setattr(modeling, "TABLE_MIN_VALUES", 1000)  # the tiny model's tables are small
    m1 = EmotagModel.load(tiny_model_dir)
    m1.save(tmp_path / "half")
    m1.save(tmp_path / "int8", int8_tables=True)
    with safe_open(str(tmp_path / "int8" / "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    tables = [k for k in stored if k + ROW_SCALE in stored]
    assert "ngram.weight" in tables and all(stored[k].dtype == torch.int8 for k in tables)
    assert (tmp_path / "int8" / "model.safetensors").stat().st_size < (tmp_path / "half" / "model.safetensors").stat().st_size
    m2 = EmotagModel.load(tmp_path / "int8")
    assert set(m2.state_dict()) == set(m1.state_dict())
    for k in tables:  # each value within half a step of its row's scale
        step = stored[k + ROW_SCALE].float()[:, None]
        assert torch.all((m2.state_dict()[k] - m1.state_dict()[k]).abs() <= step / 2 + 1e-6)
    ids = torch.tensor([[2, 10, 11, 3]])
    mask = torch.ones_like(ids)
    grams = torch.tensor([[5, 6, 7]])
    for a, b in zip(m1(ids, mask, grams), m2(ids, mask, grams), strict=True):
        assert torch.allclose(a, b, atol=0.05)


def test_tables_shared_with_int8_onnx(tiny_model_dir, tmp_path):
    """A finished model keeps each lookup table once: model.safetensors leaves it to model.int8.onnx, torch
    reads back exactly the values the int8 scorer uses, and re-exporting from those weights reproduces them."""
    import shutil

    import torch
    from safetensors import safe_open

    from emotag.model.export import export_onnx
    from emotag.model.modeling import TABLES_IN_ONNX, EmotagModel, onnx_tables

    d = tmp_path / "shared"
    shutil.copytree(tiny_model_dir, d)
    full = (d / "model.safetensors").stat().st_size
    m1 = EmotagModel.load(d)
    with pytest.raises(FileNotFoundError, match="no int8 ONNX graph"):  # nothing written then
        m1.save(tmp_path / "alone", tables_in_onnx=True)
    assert not (tmp_path / "alone").exists()
    m1.save(d, tables_in_onnx=True)
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        kept, shared = set(f.keys()), f.metadata()[TABLES_IN_ONNX].split(",")
    assert "ngram.weight" in shared and not kept & set(shared)
    assert (d / "model.safetensors").stat().st_size < full
    m2 = EmotagModel.load(d)
    assert set(m2.state_dict()) == set(m1.state_dict())
    graph = onnx_tables(d / "model.int8.onnx", dict.fromkeys(shared), values=True)
    for k in shared:
        assert torch.equal(m2.state_dict()[k], torch.from_numpy(graph[k]))
        # int8 with one scale per row (per table when 1-D): each value within half its row's step
        rows = graph[k].reshape(graph[k].shape[0], -1) if graph[k].ndim > 1 else graph[k].reshape(1, -1)
        step = torch.from_numpy(np.abs(rows).max(axis=1) / 127).reshape((-1,) + (1,) * (graph[k].ndim - 1))
        assert torch.all((m2.state_dict()[k] - m1.state_dict()[k]).abs() <= step / 2 + 1e-6), k
    a = list(Tagger.load(d, backend="torch").tag_many(TEXTS))
    b = list(Tagger.load(tiny_model_dir, backend="torch").tag_many(TEXTS))
    for x, y in zip(a, b, strict=True):
        _close(x, y, 0.05)
    export_onnx(d, quantize="int8")  # from the shared weights: the same tables come back
    again = onnx_tables(d / "model.int8.onnx", dict.fromkeys(shared), values=True)
    for k in shared:
        assert np.allclose(again[k], graph[k], atol=1e-6), k
    (d / "model.int8.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="model.int8.onnx"):
        EmotagModel.load(d)


def test_onnx_fp32_matches_torch(tiny_model_dir):
    onnx = list(Tagger.load(tiny_model_dir, backend="onnx-fp32").tag_many(TEXTS))
    torch_ = list(Tagger.load(tiny_model_dir, backend="torch").tag_many(TEXTS))
    for a, b in zip(onnx, torch_, strict=True):
        _close(a, b, 1e-3)


def test_onnx_int8_agrees_with_fp32(tiny_model_dir):
    texts = TEXTS * 3
    fp32 = [r.emotion for r in Tagger.load(tiny_model_dir, backend="onnx-fp32").tag_many(texts)]
    int8 = [r.emotion for r in Tagger.load(tiny_model_dir, backend="onnx-int8").tag_many(texts)]
    assert np.mean([a == b for a, b in zip(fp32, int8, strict=True)]) >= 0.8


@pytest.mark.parametrize("backend", ["onnx-fp32", "onnx-int8", "torch"])
def test_same_scores_in_any_batch(tiny_model_dir, backend):
    tagger = Tagger.load(tiny_model_dir, backend=backend)
    alone = [tagger.tag(t) for t in TEXTS]
    for bs in (1, 2, 5, 64):
        for a, b in zip(alone, tagger.tag_many(TEXTS, batch_size=bs), strict=True):
            _close(a, b, 1e-4)
    # mixed into a bigger batch of other lengths, in another order
    mixed = list(tagger.tag_many(list(reversed(TEXTS)) + ["短"] * 10, batch_size=8))
    for a, b in zip(alone, reversed(mixed[: len(TEXTS)]), strict=True):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("backend", ["onnx-fp32", "onnx-int8"])
def test_parallel_sessions_score_exactly_like_one_session(tiny_model_dir, backend):
    texts = [t * k for t in TEXTS for k in (1, 2, 5)]  # many batches of different widths
    one = Tagger.load(tiny_model_dir, backend=backend, threads=2, parallel=False)
    side = Tagger.load(tiny_model_dir, backend=backend, threads=3, parallel=True)
    assert len(side.backend.sessions) == 3 and len(one.backend.sessions) == 1
    a = [r.to_dict() for r in one.tag_many(texts, batch_size=2)]
    b = [r.to_dict() for r in side.tag_many(texts, batch_size=2)]
    assert a == b  # bit for bit: a batch is always scored whole by one single session


def test_parallel_sessions_raise_a_failing_batch(tiny_model_dir):
    from emotag.model.features import Batch

    tagger = Tagger.load(tiny_model_dir, backend="onnx-fp32", threads=2)
    backend = tagger.backend
    good = tagger.featurizer.encode(["很好", "很差"])
    bad = Batch(good.input_ids.astype(np.float32), good.attention_mask, good.ngram_ids)  # wrong dtype
    with pytest.raises(Exception, match="(?i)type"):
        backend.run_many([good, bad, good, good])
    assert len(backend.run_many([good, good, good])) == 3  # still usable afterwards


def test_parallel_sessions_are_capped(tiny_model_dir):
    from emotag.runtime.backends import MAX_SESSIONS

    backend = Tagger.load(tiny_model_dir, backend="onnx-fp32", threads=MAX_SESSIONS * 2).backend
    assert len(backend.sessions) == MAX_SESSIONS  # memory grows per session: more threads share them
    assert len(Tagger.load(tiny_model_dir, backend="onnx-fp32", threads=1).backend.sessions) == 1


def test_long_text_is_windowed_not_truncated(tiny_model_dir):
    tagger = Tagger.load(tiny_model_dir, backend="onnx-fp32")
    long = "很好很喜欢。" * 40 + "很差很失望，非常生气！" * 40
    prep = tagger.featurizer.prepare(long)
    assert len(prep.windows) > 1
    assert sum(len(w) for w in prep.windows) >= len(prep.normalized.replace(" ", "")) - len(prep.windows)
    assert all(len(w) <= tagger.config.window_chars for w in prep.windows)
    head = tagger.tag("很好很喜欢。" * 40)
    both = tagger.tag(long)
    assert both.error is None
    # the negative second half must move the score: it was read, not cut off
    assert both.polarity_score < head.polarity_score


def test_bad_rows_yield_error_results(tiny_model_dir):
    tagger = Tagger.load(tiny_model_dir, backend="onnx-fp32")
    rows = ["好", None, "", "   ", 42, "很差"]
    out = list(tagger.tag_many(rows, ids=["a", "b", "c", "d", "e", "f"]))
    assert [r.id for r in out] == ["a", "b", "c", "d", "e", "f"]
    assert [r.error is None for r in out] == [True, False, False, False, False, True]
    for r in out:
        if r.error:
            assert r.emotion is None and r.emotions is None and r.polarity_score is None and r.intensity is None


def test_tag_many_streams_lazily(tiny_model_dir):
    tagger = Tagger.load(tiny_model_dir, backend="onnx-fp32")
    consumed = []

    def gen():
        for i in range(10_000):
            consumed.append(i)
            yield "很好"

    it = tagger.tag_many(gen(), batch_size=16, chunk_size=64)
    first = next(it)
    # the chunk being scored plus the one being prepared in the background, never the whole input
    assert first.id == 0 and len(consumed) <= 2 * 64


def test_missing_model_dir_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        Tagger.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        Tagger.load(tmp_path / "empty")


def test_fast_token_path_equals_tokenizer(tiny_model_dir):
    """The per-character fast path must give exactly the general tokenizer's ids, for any text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from emotag.model.features import Featurizer

    feat = Featurizer.from_dir(tiny_model_dir)
    alphabet = st.sampled_from(list("很好差失望喜欢面膜手机的了,。!?、：;“”（）[]<> \u3000\tabc123哈") +
                               ["[哈哈]", "<url>", "<phone>", "𠀀", "ー", "☆", "é"])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.lists(alphabet, max_size=30).map("".join), min_size=1, max_size=8))
    def check(windows):
        assert feat.token_ids(windows) == [e.ids for e in feat.tokenizer.encode_batch(windows)]

    check()


def test_batched_ngram_hashing_matches_one_text_at_a_time():
    """`hash_ngrams_batch` row i is exactly `hash_ngrams(texts[i])` then zeros: no n-gram spans two texts."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from emotag.model.config import NgramConfig
    from emotag.model.features import hash_ngrams_batch

    texts = st.lists(st.text(alphabet=st.sampled_from(list("很好差的了。!a1 ") + ["𠀀", "😀", "\u3000"]), max_size=12),
                     min_size=1, max_size=6)

    @settings(max_examples=200, deadline=None)
    @given(texts, st.sampled_from([(1,), (1, 2, 3), (2, 4)]), st.sampled_from([1, 2, 97, 1 << 18]))
    def check(batch, orders, buckets):
        cfg = NgramConfig(buckets=buckets, orders=orders)
        m = hash_ngrams_batch(batch, cfg)
        assert m.shape[0] == len(batch) and m.shape[1] >= 1
        for i, t in enumerate(batch):
            g = hash_ngrams(t, cfg)
            assert m[i, : g.shape[0]].tolist() == g.tolist()
            assert not m[i, g.shape[0] :].any()

    check()


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    """A hub id is real loading code; offline it must fail with a message, not a traceback."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="someone/model"):
        Tagger.load("someone/model")


def test_lexical_expert_is_the_tfidf_linear_model(tiny_model_dir):
    """The network's expert reproduces X @ W + b for the sparse TF-IDF matrix it was fit on."""
    import torch

    from emotag.model.modeling import EmotagModel
    from emotag.train.lexical import design_matrix

    model = EmotagModel.load(tiny_model_dir)
    assert model.has_lexical and model.config.lexical.buckets == 1024
    feat = Featurizer.from_dir(tiny_model_dir)
    windows = ["很好很好", "物流很差，失望", "喜欢"]
    batch = feat.encode(windows)
    with torch.no_grad():
        got = model.lexical_logits(torch.from_numpy(batch.ngram_ids)).numpy()
    grams = [hash_ngrams(w, model.config.ngram) for w in windows]
    X = design_matrix(grams, model.lex_idf.numpy())
    want = X @ model.lex_weight.numpy() + model.lex_bias.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(want).max() > 0.1  # a fitted expert, not zeros


def test_fit_lexical_learns_held_out_polarity():
    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.train.lexical import LexicalTargets, design_matrix, fit_idf, fit_lexical, head_columns
    from tests.conftest import synthetic_corpus

    cfg = EmotagConfig(ngram=NgramConfig(buckets=4096, dim=8))
    train, test = synthetic_corpus(300, seed=1), synthetic_corpus(200, seed=2)
    gtr = [hash_ngrams(e.text, cfg.ngram) for e in train]
    gte = [hash_ngrams(e.text, cfg.ngram) for e in test]
    idf = fit_idf(gtr, 2048)
    P = len(cfg.polarity_labels)
    pol = np.zeros((len(train), P), np.float32)
    for i, e in enumerate(train):
        pol[i, cfg.polarity_labels.index(e.polarity)] = 1
    nan = np.full(len(train), np.nan, np.float32)
    y = LexicalTargets(np.zeros((len(train), len(cfg.emotion_labels)), np.float32), pol, nan, nan,
                       np.ones(len(train), np.float32))
    W, b = fit_lexical(design_matrix(gtr, idf), y, l2=1e-4, iterations=100)
    z = design_matrix(gte, idf) @ W + b
    cols = head_columns(len(cfg.emotion_labels), P)
    pred = [cfg.polarity_labels[j] for j in z[:, cols["polarity"]].argmax(-1)]
    acc = np.mean([p == e.polarity for p, e in zip(pred, test, strict=True)])
    assert acc > 0.95


def test_balanced_emotion_weights_equalise_each_sources_classes():
    from emotag.train.lexical import balanced_emotion_weights

    mask = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [1, 0], [0, 0]], np.float32)
    src = ["a", "a", "a", "a", "b", "a"]
    w = balanced_emotion_weights(mask, src, power=1.0)
    # source a: 3 rows of class 0 and 1 of class 1 -> total weight per class equal (2 each); b alone -> 1
    assert np.isclose(w[:3].sum(), w[3]) and np.isclose(w[:3].sum() + w[3], 4.0)
    assert w[4] == 1.0 and w[5] == 1.0  # unlabelled rows keep weight 1 (they carry no emotion loss)
    assert np.allclose(balanced_emotion_weights(mask, src, power=0.0), 1.0)


def test_int8_graph_is_static_int8(tiny_model_dir):
    """int8 MatMuls with fixed activation scales: no DynamicQuantizeLinear (a per-batch scale would make a
    text's scores depend on its batch mates) and no float MatMul left on a weight."""
    import onnx

    g = onnx.load(str(tiny_model_dir / "model.int8.onnx")).graph
    ops = {n.op_type for n in g.node}
    assert "DynamicQuantizeLinear" not in ops
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = {i.name for i in g.initializer}
    dequantized = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    # every encoder MatMul on a weight is quantised (the small heads may stay fp32: they cost nothing)
    assert not [n.name for n in matmuls if n.input[1] in weights and "/encoder/" in n.name]
    assert sum(n.input[0] in dequantized and n.input[1] in dequantized for n in matmuls) >= 4


def test_bert_attention_exports_as_one_fused_node(tiny_model_dir):
    """The export re-traces BERT with onnxruntime's MultiHeadAttention: one node per layer instead of the
    transposes, batched matmuls and mask arithmetic (test_onnx_fp32_matches_torch checks the numbers)."""
    import onnx

    for name in ("model.onnx", "model.int8.onnx"):
        g = onnx.load(str(tiny_model_dir / name)).graph
        ops = [n.op_type for n in g.node]
        layers = json.loads((tiny_model_dir / "config.json").read_text())["encoder"]["num_hidden_layers"]
        assert ops.count("MultiHeadAttention") == layers, name
        encoder_ops = {n.op_type for n in g.node if n.name.startswith("/encoder/")}
        assert not encoder_ops & {"Softmax", "Where", "Transpose"}, (name, encoder_ops)


def test_polarity_score_blend_keeps_the_sign():
    from hypothesis import given
    from hypothesis import strategies as st

    from emotag.tagger import polarity_score

    unit = st.floats(-1, 1, allow_nan=False)

    @given(unit, unit, st.floats(0, 1, exclude_max=True, allow_nan=False))
    def check(margin, valence, blend):
        s = polarity_score(margin, valence, blend)
        assert -1 <= s <= 1
        assert (s > 0) == (margin > 0) and (s < 0) == (margin < 0)  # polarity accuracy cannot move
        assert polarity_score(margin, valence, 0.0) == margin

    check()
    # where the heads agree, the valence head grades strength: "fine" and "great" stop tying
    assert polarity_score(0.9, 0.2, 0.6) < polarity_score(0.9, 0.9, 0.6)
    with pytest.raises(ValueError, match="blend"):
        polarity_score(0.5, 0.5, 1.0)


def test_rows_read_before_an_input_error_still_get_results(tiny_model_dir):
    """Reading ahead must not lose the chunk in hand when the input fails further on."""
    tagger = Tagger.load(tiny_model_dir, backend="onnx-fp32")

    def gen():
        for _ in range(100):
            yield "很好"
        raise OSError("disk went away")

    got = []
    with pytest.raises(OSError, match="disk went away"):
        for r in tagger.tag_many(gen(), batch_size=16, chunk_size=64):
            got.append(r)
    assert len(got) == 100 and [r.id for r in got] == list(range(100))


def test_tag_many_refuses_bad_arguments_up_front(tiny_model_dir):
    tagger = Tagger.load(tiny_model_dir)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            tagger.tag_many(["好"], batch_size=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        tagger.tag_many(["好"], chunk_size=-1)
    with pytest.raises(TypeError, match="not one text"):
        tagger.tag_many("气死我了")
    # a stream with more ids than texts: every text is scored, then the mismatch is raised
    got = []
    with pytest.raises(ValueError, match="more ids than texts"):
        for r in tagger.tag_many((t for t in ["好", "差"]), ids=iter(["a", "b", "c"]), chunk_size=1):
            got.append(r.id)
    assert got == ["a", "b"]


def test_mistyped_local_model_path_never_goes_to_the_hub(tmp_path, monkeypatch):
    from emotag.model import config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    monkeypatch.setattr(config, "_download_from_hub", lambda repo: pytest.fail(f"hub asked for {repo}"))
    with pytest.raises(FileNotFoundError, match="'models/mine': no such directory"):
        config.resolve_model_dir("models/mine")


def test_windows_fit_in_tokens_for_byte_level_vocabularies():
    """A byte-level BPE makes up to three tokens per Chinese character: windows are then cut by tokens,
    so the encoder never drops the end of a text (the complaint after the praise)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from emotag.model.config import EmotagConfig
    from emotag.model.features import Featurizer

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["服务很好", "hello world"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[CLS]", "[SEP]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    cfg = EmotagConfig(max_length=32)
    feat = Featurizer(tok, cfg)
    text = "服务很好" * 10 + "但是最后退款被拒绝了"
    prepared = feat.prepare(text)
    assert "".join(prepared.windows) == text
    assert all(len(ids) <= cfg.max_length for ids in feat.token_ids(prepared.windows))
    assert prepared.windows[-1].endswith("拒绝了") and abs(sum(prepared.weights) - 1) < 1e-9


def test_int8_export_checks_agreement_with_fp32(tiny_model_dir, tmp_path, monkeypatch):
    """The int8 file is compared with fp32 on the calibration windows; a poor match is reported."""
    import shutil

    from emotag.model import export

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    monkeypatch.setattr(export, "INT8_MIN_AGREEMENT", 1.01)  # nothing can pass: the warning must fire
    with pytest.warns(RuntimeWarning, match="same top emotion as fp32 on only"):
        export.export_onnx(d, quantize="int8", calibration_texts=["很好", "太差了", "一般般"])
    assert (d / "model.int8.onnx").exists()
