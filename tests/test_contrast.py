"""Contrast clauses: the clause after 但是/可是/不过… decides, and every path weighs windows the same way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emotag.model.features import window_weights
from emotag.text.sentences import contrast_clauses, turns_opinion


@pytest.mark.parametrize(("text", "clauses"), [
    ("物流很快但是包装破损了", ["物流很快", "但是包装破损了"]),
    ("包装一般,但是味道很好", ["包装一般,", "但是味道很好"]),
    ("虽然贵但好吃", ["虽然贵", "但好吃"]),
    ("味道不错,就是有点贵", ["味道不错,", "就是有点贵"]),
    ("挺好的,可惜没货了", ["挺好的,", "可惜没货了"]),
    ("好吃,不过,量少,但是便宜", ["好吃,", "不过,量少,", "但是便宜"]),
    ("物流很快然而包装破损了", ["物流很快", "然而包装破损了"]),
    ("他很认可,可是没有用", ["他很认可,", "可是没有用"]),
])
def test_contrast_markers_cut_before_the_turn(text, clauses):
    assert contrast_clauses(text) == clauses
    assert [turns_opinion(c) for c in clauses] == [False] + [True] * (len(clauses) - 1)


@pytest.mark.parametrize("text", [
    "不但好吃而且便宜",  # not only ... but also
    "他不但是好人而且聪明",
    "就是好吃",  # emphasis, nothing before it
    "味道就是好",  # 就是 without a comma before it is emphasis
    "不过如此",
    "但是很好",  # a turn from an earlier text: nothing to weigh against
    "环境好但愿常来",
    "今天天气很好",
    # markers inside words: 认可是/许可是, X然而 idioms, 非但 (not only)
    "他的认可是对我最大的鼓励",
    "你的许可是必要的",
    "自然而然就喜欢上了",
    "香味油然而生",
    "音乐戛然而止",
    "他非但不帮忙还骂人",
    "他非但是好人而且聪明",
])
def test_words_that_only_look_like_a_turn_do_not_cut(text):
    assert contrast_clauses(text) == [text]


@given(st.text(alphabet="好差但是可不过就只惜,。 很快慢ab", max_size=40))
def test_clauses_cover_the_text_in_order(text):
    clauses = contrast_clauses(text)
    # a cut needs text before it and lands before a marker, so no clause is blank unless the text is
    if not text.strip():
        assert clauses == []
    assert "".join(clauses) == (text if text.strip() else "")
    assert all(c.strip() for c in clauses)


def test_window_weights_favour_the_clause_after_each_turn():
    wins = ["物流很快", "但是包装破损了"]
    assert window_weights(wins) == pytest.approx([4 / 11, 7 / 11])
    w = window_weights(wins, contrast_weight=3.0)
    assert w == pytest.approx([4 / 25, 21 / 25])
    assert sum(window_weights(["好吃,", "不过,量少,", "但是便宜"], 2.0)) == pytest.approx(1.0)
    # without a turn the weighting is the plain length share whatever the weight
    assert window_weights(["很好", "很快"], 3.0) == pytest.approx([0.5, 0.5])


def test_featurizer_cuts_contrast_only_when_the_model_asks(tiny_model_dir):
    from emotag.model.features import Featurizer

    feat = Featurizer.from_dir(tiny_model_dir)
    assert feat.prepare("物流很快但是包装破损了").windows == ["物流很快但是包装破损了"]
    feat.config.contrast_weight = 3.0
    p = feat.prepare("物流很快但是包装破损了")
    assert p.windows == ["物流很快", "但是包装破损了"]
    assert p.weights == pytest.approx([4 / 25, 21 / 25])


def test_neutral_margin_turns_weak_leanings_neutral_and_keeps_the_score_sign(tiny_model_dir):
    """`neutral_margin`: a text leaning neither way clearly is neutral; the sign of its score is kept."""
    from emotag import Tagger

    tagger = Tagger.load(tiny_model_dir)
    texts = ["这个很好", "这个很差", "今天的东西", "感觉真的"]
    plain = list(tagger.tag_many(texts))
    tagger.config.neutral_margin = 2.0  # wider than any |P(pos) - P(neg)|: everything is neutral
    wide = list(tagger.tag_many(texts))
    assert {r.polarity for r in wide} == {"neutral"}
    for a, b in zip(plain, wide, strict=True):
        assert (a.polarity_score > 0) == (b.polarity_score > 0) or a.polarity_score == 0
        assert abs(b.polarity_score) <= tagger.config.neutral_score_band + 1e-9
        assert b.emotion in ("neutral", "surprise")
    tagger.config.neutral_margin = 1e-9  # narrower than any margin: the plain argmax
    assert [r.polarity for r in tagger.tag_many(texts)] == [r.polarity for r in plain]
