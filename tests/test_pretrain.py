"""MLM pre-training: whole-word masks, the loss actually falls, and the encoder loads into an emotag model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from emotag.text.segment import segment  # noqa: E402
from emotag.train.pretrain import (  # noqa: E402
    MaskedText,
    encode_corpus,
    load_pretrained_encoder,
    mask_batch,
    pretrain_mlm,
    pretrained_architecture,
    word_ids,
)
from emotag.train.vocab import SPECIAL, build_tokenizer  # noqa: E402

from .conftest import sentiment_rows  # noqa: E402

TEXTS = [t for t, _ in sentiment_rows(300, seed=3)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS, vocab_size=200, min_frequency=1)


def test_word_ids_follow_jieba_words(tok):
    text = "今天物流很差，客服也很失望"
    enc = tok.encode(text)
    wid = word_ids(text, enc.offsets)
    assert wid[0] == -1 and wid[-1] == -1  # [CLS], [SEP]
    words = segment(text)
    # every token's characters belong to the word it is assigned to
    for (s, e), w in zip(enc.offsets[1:-1], wid[1:-1], strict=True):
        assert text[s:e] in words[w]
    # tokens of one word share an id; ids never decrease
    inner = wid[1:-1]
    assert inner == sorted(inner) and len(set(inner)) == len(words)


def test_mask_batch_masks_whole_words_only(tok):
    data = encode_corpus(tok, TEXTS[:64])
    rng = np.random.default_rng(0)
    b = mask_batch(data, pad_id=0, mask_id=tok.token_to_id("[MASK]"), vocab_size=tok.get_vocab_size(),
                   n_special=len(SPECIAL), rng=rng, rate=0.3)
    labels = b["labels"].numpy()
    att = b["attention_mask"].numpy()
    assert (labels[att == 0] == -100).all()  # padding never predicted
    hit = 0
    for r, x in enumerate(data):
        n = len(x.ids)
        sel = labels[r, :n] >= 0
        assert sel.any()  # at least one word per text
        assert not sel[x.words < 0].any()  # specials never masked
        np.testing.assert_array_equal(labels[r, :n][sel], x.ids[sel])  # targets are the original tokens
        for w in np.unique(x.words[sel]):  # a chosen word is masked in full
            assert sel[x.words == w].all()
        hit += int((b["input_ids"].numpy()[r, :n][sel] == tok.token_to_id("[MASK]")).sum())
    total = int((labels >= 0).sum())
    assert 0.6 < hit / total <= 1.0  # ~80% of targets replaced by [MASK]


def test_mask_batch_is_deterministic_per_seed(tok):
    data = encode_corpus(tok, TEXTS[:16])
    kw = dict(pad_id=0, mask_id=4, vocab_size=tok.get_vocab_size(), n_special=5)
    a = mask_batch(data, rng=np.random.default_rng(5), **kw)
    b = mask_batch(data, rng=np.random.default_rng(5), **kw)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def _tiny_mlm(tok):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=130, type_vocab_size=1,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertForMaskedLM(cfg)


def _mlm_loss(model, data, tok) -> float:
    rng = np.random.default_rng(99)
    b = mask_batch(data, 0, tok.token_to_id("[MASK]"), tok.get_vocab_size(), len(SPECIAL), rng)
    with torch.no_grad():
        return float(model(**b).loss)


def test_pretraining_lowers_held_out_mlm_loss(tok):
    data = encode_corpus(tok, TEXTS[:250])
    held = encode_corpus(tok, TEXTS[250:])
    model = _tiny_mlm(tok)
    before = _mlm_loss(model, held, tok)
    res = pretrain_mlm(model, data, pad_id=0, mask_id=tok.token_to_id("[MASK]"), n_special=len(SPECIAL),
                       minutes=30.0, epochs=12, batch_size=32, lr=3e-3)
    after = _mlm_loss(model, held, tok)
    assert res["steps"] > 0
    assert after < before - 1.0, (before, after)


def test_pretrained_encoder_loads_into_emotag_model(tmp_path, tok):
    from emotag.model.config import EmotagConfig, NgramConfig
    from emotag.model.modeling import EmotagModel

    mlm = _tiny_mlm(tok)
    mlm.bert.save_pretrained(str(tmp_path / "encoder"))
    arch = pretrained_architecture(tmp_path)
    assert arch["hidden_size"] == 32 and arch["vocab_size"] == tok.get_vocab_size()
    cfg = EmotagConfig(encoder={"model_type": "bert", **arch}, ngram=NgramConfig(buckets=64, dim=4))
    model = EmotagModel(cfg)
    load_pretrained_encoder(model, tmp_path)
    for k, v in mlm.bert.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k

    wrong = EmotagModel(EmotagConfig(encoder={"model_type": "bert", **{**arch, "hidden_size": 16,
                                                                        "intermediate_size": 32}},
                                     ngram=NgramConfig(buckets=64, dim=4)))
    with pytest.raises((ValueError, RuntimeError)):
        load_pretrained_encoder(wrong, tmp_path)


def test_encode_corpus_truncates_keeping_sep(tok):
    data = encode_corpus(tok, ["很好" * 100], max_tokens=16)
    assert len(data) == 1 and isinstance(data[0], MaskedText)
    assert len(data[0].ids) == 16 and data[0].ids[-1] == tok.token_to_id("[SEP]") and data[0].words[-1] == -1
