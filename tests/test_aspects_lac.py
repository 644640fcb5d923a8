"""Baidu LAC read without Paddle (emotag/aspects/lac.py) and its use in training the neural aspect tagger.

Tiny synthetic weights written in Paddle's parameter format: CI has neither the lac sdist nor a network."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest

from emotag.aspects.lac import Lac, gru, read_lod_tensor


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def write_lod_tensor(path: Path, arr: np.ndarray, lod: list[list[int]] = (), packed: bool = True,
                     dtype: int = 5) -> None:
    """Paddle's save format, written independently of the reader: version, LoD levels, version, a
    TensorDesc protobuf (data type, dims packed or one field each), raw float32 data."""
    desc = b"\x08" + _varint(dtype)
    if packed:
        dims = b"".join(_varint(d) for d in arr.shape)
        desc += b"\x12" + _varint(len(dims)) + dims
    else:
        desc += b"".join(b"\x10" + _varint(d) for d in arr.shape)
    buf = struct.pack("<I", 0) + struct.pack("<Q", len(lod))
    for level in lod:
        buf += struct.pack("<Q", 8 * len(level)) + np.asarray(level, "<u8").tobytes()
    buf += struct.pack("<I", 0) + struct.pack("<i", len(desc)) + desc + np.asarray(arr, "<f4").tobytes()
    path.write_bytes(buf)


@pytest.mark.parametrize("packed", [True, False])
def test_lod_tensor_round_trip(tmp_path, packed):
    rng = np.random.default_rng(0)
    for shape, lod in [((3, 200), []), ((1, 384), [[0, 1]]), ((7,), [[0, 2, 7], [0, 1]])]:
        a = rng.normal(size=shape).astype(np.float32)
        write_lod_tensor(tmp_path / "t", a, lod, packed)
        got = read_lod_tensor(tmp_path / "t")
        assert got.shape == shape and got.dtype == np.float32
        assert np.array_equal(got, a)
    write_lod_tensor(tmp_path / "i", np.zeros((2, 2)), dtype=3)  # int64 in Paddle's enum
    with pytest.raises(ValueError, match="float32"):
        read_lod_tensor(tmp_path / "i")


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _gru_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, reverse: bool) -> np.ndarray:
    """One text, step by step, as Paddle's GRU documents it (update gate u, reset gate r, candidate c)."""
    H = w.shape[0]
    w_u = w.reshape(-1)[:2 * H * H].reshape(H, 2 * H)[:, :H]
    w_r = w.reshape(-1)[:2 * H * H].reshape(H, 2 * H)[:, H:]
    w_c = w.reshape(-1)[2 * H * H:].reshape(H, H)
    h = np.zeros(H)
    out = np.zeros((len(x), H))
    steps = range(len(x) - 1, -1, -1) if reverse else range(len(x))
    for t in steps:
        g = x[t] + b.reshape(-1)
        u = _sig(g[:H] + h @ w_u)
        r = _sig(g[H:2 * H] + h @ w_r)
        c = np.tanh(g[2 * H:] + (r * h) @ w_c)
        h = (1 - u) * h + u * c
        out[t] = h
    return out


@pytest.mark.parametrize("reverse", [False, True])
def test_gru_batch_matches_each_text_alone(reverse):
    # right-padded batch: the reverse direction must start at each text's own last character, and the
    # padding must not leak into any text's states
    rng = np.random.default_rng(1)
    H, lengths = 3, np.array([5, 2, 1, 4])
    x = rng.normal(size=(len(lengths), 5, 3 * H)).astype(np.float32)
    w = rng.normal(size=(H, 3 * H)).astype(np.float32)
    b = rng.normal(size=(1, 3 * H)).astype(np.float32)
    got = gru(x, lengths, w, b, reverse)
    for k, n in enumerate(lengths):
        assert np.allclose(got[k, :n], _gru_reference(x[k, :n], w, b, reverse), atol=1e-5)
        assert not got[k, n:].any()


def _tiny_lac_dir(tmp_path: Path, seed: int = 0) -> Path:
    """A LAC model directory with LAC's file layout and made-up weights: 3-wide table, 2 per direction."""
    rng = np.random.default_rng(seed)
    d = tmp_path / "LAC" / "lac_model"
    (d / "model").mkdir(parents=True)
    (d / "conf").mkdir()
    words = ["好", "坏", "很", "不", "包装", "OOV"]
    (d / "conf" / "word.dic").write_text("".join(f"{i}\t{w}\n" for i, w in enumerate(words)), encoding="utf-8")
    (d / "conf" / "q2b.dic").write_text("壞\t坏\n", encoding="utf-8")
    (d / "conf" / "tag.dic").write_text("0\ta-B\n1\ta-I\n0\tX-B\n2\tO\n", encoding="utf-8")
    E, H, K = 3, 2, 3
    shapes = {"word_emb": (len(words), E), "crfw": (K + 2, K), "fc_4.w_0": (2 * H, K), "fc_4.b_0": (K,)}
    for i in range(4):
        shapes[f"fc_{i}.w_0"] = (E if i < 2 else 2 * H, 3 * H)
        shapes[f"fc_{i}.b_0"] = (3 * H,)
        shapes[f"gru_{i}.w_0"] = (H, 3 * H)
        shapes[f"gru_{i}.b_0"] = (1, 3 * H)
    for name, shape in shapes.items():
        write_lod_tensor(d / "model" / name, rng.normal(size=shape).astype(np.float32))
    return tmp_path


def test_lac_loads_tags_and_decodes(tmp_path):
    lac = Lac.load(_tiny_lac_dir(tmp_path))  # the sdist root: finds LAC/lac_model below it
    assert lac.tags == ["X-B", "a-I", "O"]  # a later line of tag.dic wins, as in LAC
    assert lac.char_id("壞") == lac.char_id("坏") == 1  # q2b.dic maps before the lookup
    assert lac.char_id("猫") == lac.oov
    rows, known = lac.char_rows(["", "好", "包装", "猫"])
    assert known.tolist() == [False, True, False, False]  # words are not characters
    assert np.array_equal(rows[1], lac.p["word_emb"][0])
    texts = ["很好不坏", "坏", "好猫很不好坏", ""]
    states, em, lengths = lac.forward(texts)
    assert states.shape == (4, 6, 4) and em.shape == (4, 6, 3)
    for k, t in enumerate(texts):  # batched as alone
        if t:
            s1, e1, _ = lac.forward([t])
            assert np.allclose(e1[0], em[k, :len(t)], atol=1e-5)
            assert np.allclose(s1[0], states[k, :len(t)], atol=1e-5)
    crf = lac.p["crfw"]
    for k, path in enumerate(lac.decode(em, lengths)):
        n = len(texts[k])
        if n == 0:
            continue
        best = max(itertools.product(range(3), repeat=n),
                   key=lambda p: crf[0][p[0]] + crf[1][p[-1]] + sum(em[k, i, p[i]] for i in range(n))
                   + sum(crf[2 + p[i - 1], p[i]] for i in range(1, n)))
        assert path.tolist() == list(best)
    tagged = lac.tag(texts, batch=2)
    assert [len(t) for t in tagged] == [len(t) for t in texts]
    assert all(np.array_equal(a, lac.tag([t])[0]) for a, t in zip(tagged, texts, strict=True))


def test_missing_lac_is_one_line_with_the_download_command(tmp_path):
    with pytest.raises(SystemExit, match="pip download --no-deps --no-build-isolation lac==2.1.2"):
        Lac.load(tmp_path / "nowhere")


def test_training_with_lac_rows_and_distillation(tmp_path):
    # LAC's rows join the character table (folded away at export: the scoring arrays keep their shapes),
    # and the training-only head learns the teacher's tags from the tagger's own states
    torch = pytest.importorskip("torch")
    from emotag.aspects.features import lexicon_pattern
    from emotag.aspects.neural import NeuralTagger, encode
    from emotag.aspects.neural_train import ConvTagger, batch_tensors, train_neural
    from tests.conftest import ROOT

    lac = Lac.load(_tiny_lac_dir(tmp_path))
    texts = ["包装很好。", "物流很快，包装坏了。", "味道不好。", "服务很好。"] * 2
    gold = []
    for t in texts:
        g = np.zeros(len(t), np.int16)
        i = t.index("很") if "很" in t else t.index("不")
        g[i] = 3
        g[i + 1] = 4
        gold.append(g)
    lex = {"aspect": ["包装", "物流"], "positive": ["很好"], "negative": ["坏了"], "negation": ["不"], "degree": ["很"]}
    pats = [lexicon_pattern(lex[k]) for k in lex]
    aux = [np.array([i % 3 for i in range(len(t))]) for t in texts]  # a learnable made-up teacher
    aux_states = [np.eye(4, dtype=np.float16)[a + 1] for a in aux]  # and its "hidden states"
    kw = dict(width=8, dilations=(1, 2), batch=4, ema=0.0, dropout=0.0)
    plain, _ = train_neural(texts, gold, [pats, pats], [0, 1] * 4, lex, ROOT / "models" / "emotag-zh-small", None,
                            epochs=1, **kw)
    torch.manual_seed(0)
    epochs = iter(range(1000))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with_lac, _ = train_neural(texts, gold, [pats, pats], [0, 1] * 4, lex, ROOT / "models" / "emotag-zh-small",
                               lambda _t: float(next(epochs)), epochs=60, lr=2e-2, checkpoint=ckpt, lac=lac,
                               lac_emb=True, aux_tags=aux, distill=1.0, aux_states=aux_states, distill_states=1.0,
                               **kw)
    a, b = plain.arrays(), with_lac.arrays()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert isinstance(with_lac, NeuralTagger) and len(with_lac.tag(["包装很好"])[0][0]) == 4
    # the head the export dropped learned the teacher's tags
    state = torch.load(ckpt / "neural_torch.pt")
    from emotag.aspects.neural_train import network_char_rows

    width = network_char_rows(ROOT / "models" / "emotag-zh-small")[0].shape[1] + 3
    assert state["emb.weight"].shape[1] == width  # the bundled network's rows, then LAC's
    model = ConvTagger(len(with_lac.vocab), 8, (1, 2), width, 0.0, 0, n_aux=3, n_aux_states=4).eval()
    model.load_state_dict(state)
    ids = {c: i for i, c in enumerate(with_lac.vocab)}
    _, codes, off = encode(texts, ids, pats)
    c, m, _ = batch_tensors([codes[off[k]:off[k + 1]] for k in range(len(texts))])
    with torch.no_grad():
        h = model.states(c, m)
        pred = model.aux(h).argmax(-1).numpy()
        regressed = model.aux_states(h).numpy()
    hits = sum(int((pred[k, :len(t)] == aux[k]).sum()) for k, t in enumerate(texts))
    assert hits / sum(len(t) for t in texts) > 0.9
    err = sum(float(((regressed[k, :len(t)] - aux_states[k]) ** 2).sum()) for k, t in enumerate(texts))
    assert err < 0.1 * sum(float((s.astype(np.float32) ** 2).sum()) for s in aux_states)  # far better than zeros


def test_word_codes_take_the_longest_dictionary_word_at_each_start():
    from emotag.aspects.neural import encode, word_codes, word_hashes

    words = ["包装", "包装盒", "破损", "了", "损了吗", "盒"]
    codes = np.array([10, 11, 12, 13, 14, 15])
    keys = word_hashes(words)
    order = np.argsort(keys)
    table = (keys[order], codes[order])
    text = "包装盒破损了\n包装了"
    got = word_codes(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), *table)
    #                 包  装 盒  破  损 了  \n 包  装 了
    assert got.tolist() == [11, 0, 15, 12, 0, 13, 0, 10, 0, 13]
    # encode's column: each text as alone, the joining newlines dropped
    texts = ["包装盒破损了", "包装了", "损了"]
    _, cols, off = encode(texts, {}, [], None, table)
    assert cols[:, -1].tolist() == [11, 0, 15, 12, 0, 13, 10, 0, 13, 0, 13]
    assert word_codes(np.zeros(0, np.uint32), *table).tolist() == []


def test_lac_word_dictionary_from_running_text(tmp_path):
    lac = Lac.load(_tiny_lac_dir(tmp_path))
    texts = ["很好不坏很好", "好坏不很", "很好不坏很好"]
    words, codes = lac.word_dictionary(texts, max_len=4, min_count=2)
    assert words == sorted(words) and len(words) == len(codes) > 0
    for w, c in zip(words, codes, strict=True):
        assert sum(t.count(w) for t in texts) >= 2 and 1 <= len(w) <= 4
        assert (c - 1) % 4 + 1 == len(w) and 0 <= (c - 1) // 4 < len(lac.tags)
    segmented = "".join(w for w in words)
    assert set(segmented) <= set("很好不坏")


def test_numpy_forward_with_the_word_table_matches_torch():
    torch = pytest.importorskip("torch")
    from emotag.aspects.features import lexicon_pattern
    from emotag.aspects.neural import NeuralTagger, encode, word_hashes
    from emotag.aspects.neural_train import ConvTagger, batch_tensors, export

    torch.manual_seed(0)
    texts = ["物流很快，但是包装破损了。", "包装不太好", "好"]
    vocab = ["", "[UNK]", *sorted(set("".join(texts)))]
    keys = word_hashes(["物流", "包装", "破损", "不太好", "好"])
    order = np.argsort(keys)
    words = (keys[order], np.array([3, 5, 7, 2, 9])[order])
    model = ConvTagger(len(vocab), width=16, dilations=(1, 2), emb_dim=8, dropout=0.0, n_word_codes=10).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    lex = {"aspect": ["物流", "包装"], "positive": ["很快"], "negative": ["破损"], "negation": ["不"], "degree": ["很", "太"]}
    np_tagger = export(model, vocab, lex, words=words)
    _, codes, off = encode(texts, {c: i for i, c in enumerate(vocab)}, [lexicon_pattern(lex[k]) for k in lex], None, words)
    assert (codes[:, -1] > 0).sum() == 7  # 物流 包装 破损 | 包装 不太好 好 | 好
    c, m, _ = batch_tensors([codes[off[k]:off[k + 1]] for k in range(len(texts))])
    with torch.no_grad():
        want = model(c, m).numpy()
    got, _ = np_tagger.emissions(texts)
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    saved = NeuralTagger(np_tagger.vocab, {k: np.asarray(v) for k, v in np_tagger.arrays().items()}, lex)
    assert np.abs(saved.emissions(texts)[0] - want).max() < 0.05 * max(1.0, np.abs(want).max())
