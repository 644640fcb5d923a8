"""The composition stage (emotag.model.compose): units, features, the composer and its place in Tagger."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emotag import Tagger
from emotag.model.compose import (
    FEATURES,
    Composer,
    Part,
    form_cues,
    negation_scopes,
    turn_split,
    units_of,
)
from emotag.model.config import CONFIG_NAME, default_model_dir
from emotag.model.experts import EXPERTS_NAME, Experts
from emotag.model.features import tfidf_dot


@pytest.mark.parametrize(("text", "scopes"), [
    ("这家外卖不难吃", ["难吃"]),
    ("这次购物一点也不失望", ["失望"]),
    ("衣服没有色差", ["色差"]),
    ("房间里一点异味都没有", ["异味"]),
    ("送餐不慢，半小时就到了", ["慢"]),  # the scope ends at the clause
    ("这家店没有不好吃的菜", ["不好吃的菜"]),  # the inner negator belongs to the outer one's scope
    ("这个蛋糕很好吃", []),
    ("味道不错，服务特别好", []),  # 不错 and 特别 are words, not negations
    ("本来以为会很难吃，没想到特别好吃", []),
    ("请问这个好不好用", []),  # A-not-A question
    ("有没有大一码的", []),
    ("不得不说，服务很好", []),
    ("这个手机不怎么样", []),  # a fixed phrase for "not good"; no scope of 样
    ("这个不怎么好吃", ["好吃"]),  # 怎么 is skipped, the opinion is negated
    ("不好用.下次不买了", ["好用", "买了"]),  # an ASCII full stop ends a scope
    ("不好用(已退货)", ["好用"]),  # so does an aside in parentheses
    ("不好用[怒]", ["好用"]),  # and an emoji word tag
    # counter-expectation words and 别提 (别提多好吃了: "too good for words") hold a negator character but
    # negate nothing; each against a real negation of the same opinion
    ("想不到这么好吃", []),
    ("这么不好吃", ["好吃"]),
    ("不料很好吃", []),
    ("别提多好吃了", []),
    ("别买,不好吃", ["买", "好吃"]),
    # a scope ends where the opinion turns, and at a second predicate joined by 也/而且
    ("不太甜不过很好吃", ["太甜"]),
    ("不好吃但是便宜", ["好吃"]),
    ("不贵却很难吃", ["贵"]),
    ("不好吃也不便宜", ["好吃", "便宜"]),
    ("不好吃而且很贵", ["好吃"]),
    ("不只是好吃", ["只是好吃"]),  # a marker opening the scope is what is negated
    # 一点儿...也不: the negated thing is the opinion, not the 儿 of 一点儿
    ("一点儿也不好吃", ["好吃"]),
    ("一点儿异味都没有", ["异味"]),
])
def test_negation_scopes(text: str, scopes: list[str]) -> None:
    assert negation_scopes(text) == scopes


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="不没好吃贵很可是却也,", max_size=30))
def test_no_negation_scope_runs_past_a_turn_or_a_second_predicate(text: str) -> None:
    """Whatever the text, a scope may open with 可是/却/也 (the negated word) but never holds one later."""
    for scope in negation_scopes(text):
        assert not any(marker in scope[1:] for marker in ("可是", "却", "也")), (text, scope)


@pytest.mark.parametrize(("text", "split"), [
    ("物流很快但是包装破损了", ("物流很快", "但是包装破损了")),
    ("价格有点贵，但是质量真的很好", ("价格有点贵", "但是质量真的很好")),
    ("本来以为会很难吃，没想到特别好吃", ("本来以为会很难吃", "没想到特别好吃")),
    ("这个蛋糕很好吃", None),
    ("但是很好吃", None),  # nothing before the turn
    ("质量不错却很贵", ("质量不错", "却很贵")),
    ("冷却效果很好", None),  # 却 inside a word (冷却) is no turn
    ("这个风扇冷却很快", None),
    # markers inside words are no turn: 认可是, 自然而然, 非但, 望而却步, 了却心愿; each against the marker
    ("他的认可是对我最大的鼓励", None),
    ("他很认可,可是没有用", ("他很认可", "可是没有用")),
    ("自然而然就喜欢上了", None),
    ("物流很快然而包装破损了", ("物流很快", "然而包装破损了")),
    ("他非但不帮忙还骂人", None),
    ("他帮忙但还骂人", ("他帮忙", "但还骂人")),
    ("价格让人望而却步", None),
    ("终于了却心愿", None),
    ("买了却一直没用", ("买了", "却一直没用")),  # after the particle 了, 却 does turn
])
def test_turn_split(text: str, split: tuple[str, str] | None) -> None:
    assert turn_split(text) == split


def test_form_cues() -> None:
    assert form_cues("请问什么时候发货")["question_word"] == 1.0
    assert form_cues("几号能到货？")["question_mark"] == 1.0
    assert form_cues("这个蛋糕很好吃")["question_word"] == 0.0
    assert form_cues("12345")["no_cjk"] == 1.0 and form_cues("12345")["digit_share"] == 1.0
    assert form_cues("太好吃了")["degree"] == 1.0 and form_cues("好的，收到")["degree"] == 0.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_units_of_any_text(text: str) -> None:
    """Units are pieces of the text, never empty, at most three negation scopes."""
    u = units_of(text)
    for piece in u.texts():
        assert piece and piece in text
    assert len(u.scopes) <= 3


def _composer(sign_bias: float = 0.0, neutral_bias: float = -1.0) -> Composer:
    return Composer(("negative", "neutral", "positive"),
                    Part(("whole_margin", "negated_margin"), np.array([3.0, -2.0]), sign_bias),
                    Part(("question_word",), np.array([2.0]), neutral_bias))


def test_composer_round_trip_and_probabilities() -> None:
    c = _composer()
    back = Composer.from_dict(json.loads(json.dumps(c.to_dict())))
    x = np.random.default_rng(0).normal(size=(20, len(FEATURES)))
    np.testing.assert_allclose(back.probabilities(x), c.probabilities(x))
    np.testing.assert_allclose(c.probabilities(x).sum(1), 1.0)


def test_the_neutral_part_never_changes_the_sign() -> None:
    """Every binary metric reads sign(P(pos) - P(neg)); it is the sign part's alone."""
    x = np.random.default_rng(1).normal(size=(50, len(FEATURES)))
    a = _composer(neutral_bias=-5.0).probabilities(x)
    b = _composer(neutral_bias=+5.0).probabilities(x)
    assert np.array_equal(a[:, 2] > a[:, 0], b[:, 2] > b[:, 0])


def test_a_bad_composer_is_refused_with_a_reason() -> None:
    d = _composer().to_dict()
    d["sign"]["features"] = ["whole_margin", "no_such_feature"]
    with pytest.raises(ValueError, match="no_such_feature"):
        Composer.from_dict(d)
    d = _composer().to_dict()
    d["neutral"]["weight"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="weights for 1 features"):
        Composer.from_dict(d)


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    t = Tagger.load()
    if t.composer is None:
        pytest.skip("the bundled model has no composer")
    return t


def test_the_bundled_composer_is_what_scoring_applies(tagger: Tagger) -> None:
    """Tagger's polarity equals the composer applied to composition_inputs (the fitting script's input)."""
    texts = ["这家外卖不难吃", "物流很快但是包装破损了", "请问什么时候发货", "好吃！"]
    probs = tagger.composer.probabilities(tagger.composition_inputs(texts)[0], tagger.composition_names)
    labels = tagger.config.polarity_labels
    for r, p in zip(tagger.tag_many(texts), probs, strict=True):
        assert r.polarity == labels[int(p.argmax())]


def test_units_do_not_leak_between_texts(tagger: Tagger) -> None:
    """A text scored alone and inside a batch of others (each with units of its own) reads the same."""
    texts = ["味道不差", "包装很好但是菜是凉的", "订单号12345", "一点也不好吃", "这道菜很好吃，但是太贵了"] * 3
    alone = [tagger.tag(t) for t in texts]
    together = list(tagger.tag_many(texts, batch_size=4))
    for a, b in zip(alone, together, strict=True):
        assert a.polarity == b.polarity
        assert a.polarity_score == pytest.approx(b.polarity_score, abs=1e-4)


def test_a_model_without_composer_reads_the_heads(tmp_path, tagger: Tagger) -> None:
    model = tmp_path / "m"
    shutil.copytree(default_model_dir(), model)
    cfg = json.loads((model / CONFIG_NAME).read_text(encoding="utf-8"))
    cfg.pop("composer")
    (model / CONFIG_NAME).write_text(json.dumps(cfg), encoding="utf-8")
    plain = Tagger.load(model)
    assert plain.composer is None
    r = plain.tag("这个蛋糕很好吃")
    assert r.polarity == "positive" and r.error is None


# -- domain experts and the emotion pool ----------------------------------------------------------------

def _experts(rng: np.random.Generator, B: int = 64) -> Experts:
    idf = rng.uniform(1.0, 5.0, size=B).astype(np.float32)
    idf[0] = 0.0
    names = ("polarity:a", "polarity:b", "domain:a", "domain:b")
    return Experts(names, idf, rng.normal(size=(B, len(names))).astype(np.float32),
                   rng.normal(size=len(names)).astype(np.float32))


def test_expert_logits_are_the_lexical_tfidf_map() -> None:
    rng = np.random.default_rng(0)
    ex = _experts(rng)
    grams = [rng.integers(1, 500, size=n) for n in (5, 1, 9)]
    batch = np.zeros((3, 9), dtype=np.int64)
    for i, g in enumerate(grams):
        batch[i, : len(g)] = g
    z = ex.logits(batch)
    for i, g in enumerate(grams):
        for k in range(len(ex.names)):
            assert z[i, k] == pytest.approx(tfidf_dot(g, ex.idf, ex.weight[:, k]) + ex.bias[k], rel=1e-5, abs=1e-5)


def test_experts_round_trip_keeps_the_largest_weights(tmp_path) -> None:
    ex = _experts(np.random.default_rng(1))
    ex.save(tmp_path, keep=10)
    back = Experts.load(tmp_path)
    assert back.names == ex.names
    for k in range(len(ex.names)):
        kept = np.nonzero(back.weight[:, k])[0]
        assert len(kept) == 10
        top = np.argsort(-np.abs(ex.weight[:, k]))[:10]
        assert set(kept) == set(top)
        np.testing.assert_allclose(back.weight[kept, k], ex.weight[kept, k], rtol=1e-3, atol=1e-3)


def test_a_damaged_experts_file_is_refused(tmp_path) -> None:
    ex = _experts(np.random.default_rng(2))
    ex.save(tmp_path, keep=5)
    z = dict(np.load(tmp_path / EXPERTS_NAME))
    z["index"] = z["index"] + 1000
    np.savez(tmp_path / EXPERTS_NAME, **z)
    with pytest.raises(ValueError, match="outside"):
        Experts.load(tmp_path)


def test_the_gate_mixes_each_domains_expert() -> None:
    ex = _experts(np.random.default_rng(3))
    z = np.array([[2.0, -1.0, 5.0, -5.0], [2.0, -1.0, -5.0, 5.0]])
    cols = ex.text_columns(z)
    assert ex.columns[-1] == "polarity:gated" and cols.shape == (2, len(ex.names) + 1)
    assert cols[0, -1] == pytest.approx(2.0, abs=1e-3)  # gate says domain a: expert a's logit
    assert cols[1, -1] == pytest.approx(-1.0, abs=1e-3)


def _fit_composer_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "fit_composer.py"
    spec = importlib.util.spec_from_file_location("fit_composer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_composer_keeps_negated_twins_in_one_fold() -> None:
    """A sentence and its negated twins share a cross-validation group, so the composer's CV table never
    scores a twin with a model that saw the other one; unrelated sentences do not."""
    group = _fit_composer_script().skeleton_group
    assert group("味道很好") == group("味道不好") == group("味道一点也不好") == group("味道并不好")
    assert group("房间很宽敞") == group("房间一点都不宽敞")
    assert group("味道很好") != group("房间很宽敞")
