"""Aspects (SPEC §7, issue #18): hard cases with expected units, spans into the text as given, category
files and their errors, unlisted terms finding their category, aggregation, and `score --aspects`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emotag.aspects import AspectExtractor, CategoryFileError, CategorySet
from emotag.aspects.aggregate import aggregate, top_complaints, wilson
from emotag.cli import app
from tests.conftest import ROOT, SAMPLES

DATA = ROOT / "tests" / "data" / "aspects"
runner = CliRunner()


@pytest.fixture(scope="module")
def ex() -> AspectExtractor:
    return AspectExtractor.load()


def triples(units):
    return [(u.aspect, u.opinion, u.polarity) for u in units]


# (text, expected (aspect, opinion, polarity) units in order): one hard case each
HARD = [
    # several aspects with different polarities, contrast (但是)
    ("物流很快，但是包装破损了", [("物流", "很快", "positive"), ("包装", "破损了", "negative")]),
    ("面膜很保湿，但是味道太刺鼻了", [("面膜", "很保湿", "positive"), ("味道", "太刺鼻了", "negative")]),
    ("菜品很新鲜，服务员也很热情", [("菜品", "很新鲜", "positive"), ("服务员", "也很热情", "positive")]),
    # implicit aspect: no aspect term, the opinion still counts
    ("很好用", [(None, "很好用", "positive")]),
    ("超值！", [(None, "超值", "positive")]),
    # negation inside the opinion flips it
    ("海鲜不太新鲜", [("海鲜", "不太新鲜", "negative")]),
    ("服务员态度不太好", [("服务员", "态度不太好", "negative")]),
    # traditional characters and emoji: strings are the text as given; an emoji is a clause break, never
    # part of a span, and never the start of an aspect (🙂包 | 装破损了 before)
    ("這個面膜很保濕👍", [("面膜", "很保濕", "positive")]),
    ("🙂包装破损了", [("包装", "破损了", "negative")]),
    ("物流很快😂包装破损了", [("物流", "很快", "positive"), ("包装", "破损了", "negative")]),
    # ... and an opinion never runs across one (was 价格 / 很便宜👍瓶子漏液了 / positive: a leak counted as praise)
    ("价格很便宜👍瓶子漏液了", [("价格", "很便宜", "positive"), ("瓶子", "漏液了", "negative")]),
    # a carriage return ends a sentence, a tab a clause, as a line break and a comma do
    ("物流很快\r包装破损了", [("物流", "很快", "positive"), ("包装", "破损了", "negative")]),
    ("物流很快\t\t包装破损了", [("物流", "很快", "positive"), ("包装", "破损了", "negative")]),
    # e-commerce complaints the restaurant-trained tagger reads as praise: the word lists decide
    ("包装很随便", [("包装", "很随便", "negative")]),
    ("包装太随便了", [("包装", "太随便了", "negative")]),
    ("面膜袋都皱了", [("面膜袋", "都皱了", "negative")]),
    ("包装一点也不随便", [("包装", "一点也不随便", "positive")]),
    # ... but bare 随便 is no complaint (随便看看: just browsing)
    ("随便看看，东西不错", [("东西", "不错", "positive")]),
    ("这个包装也太随便了吧", [("包装", "也太随便了吧", "negative")]),
    # a Kangxi radical (⼤, U+2F24, from a PDF) is its character, not a pictograph
    ("尺码偏⼤", [("尺码", "偏⼤", "negative")]),
    # coordination: one opinion, two aspects
    ("环境和服务都很好", [("环境", "很好", "positive"), ("服务", "很好", "positive")]),
]


@pytest.mark.parametrize(("text", "expected"), HARD)
def test_hard_cases(ex, text, expected):
    assert triples(ex.extract(text)) == expected


def test_negated_complaint_word_is_praise(ex):
    # the tagger sees 压坏 (a complaint) inside the span; the negation before it makes it praise, and
    # 特别 / 非常 are not negations. The neural tagger reads the two clauses as one opinion across the comma,
    # as the training data annotates 18% of its opinions (the perceptron gave two units: 很严实, 一点没压坏)
    units = ex.extract("包装很严实，一点没压坏。")
    assert triples(units) == [("包装", "很严实，一点没压坏", "positive")]
    assert units[0].score > 0
    alone = ex.extract("一点没压坏。")
    assert [(u.polarity, "没压坏" in u.opinion) for u in alone] == [("positive", True)] and alone[0].score > 0
    assert [u.polarity for u in ex.extract("服务员特别热情，菜非常好吃")] == ["positive", "positive"]


def test_no_span_holds_an_emoji_or_a_tab(ex):
    """The tagger runs an opinion across a comma as its training data does; an emoji or a tab reads as a
    comma, but a span never holds one (docs/aspects.md), and a text whose spans keep clear of them is read
    as before (这个面膜😍很好用 still pairs 很好用 with 面膜)."""
    for text in ("包装很严实😂一点没压坏", "味道很香\t很好闻", "价格很便宜👍瓶子漏液了"):
        units = ex.extract(text)
        assert len({u.opinion_span for u in units}) == 2, text
        for u in units:
            assert not any(c in u.opinion + (u.aspect or "") for c in "😂👍\t"), (text, u)
            assert text[slice(*u.opinion_span)] == u.opinion
    assert [u.polarity for u in ex.extract("包装很严实😂一点没压坏")] == ["positive", "positive"]
    assert [u.opinion for u in ex.extract("味道很香\t很好闻")] == ["很香", "很好闻"]
    assert triples(ex.extract("这个面膜😍很好用")) == [("面膜", "很好用", "positive")]


def test_a_symbol_inside_a_clause_is_no_break_and_an_emoji_breaks_only_where_crossed(ex):
    """The break test counted every symbol read as a comma: 40℃ and 20㎡ sent the text to the second reading
    with a 。 there, which lost 水温只有40℃不够热's unit (and 面积's aspect). And the second reading put a 。 at
    every emoji of the text, so one crossed 👍 cost 这个面膜😍很好用 its aspect."""
    assert triples(ex.extract("水温只有40℃不够热")) == [("水温", "只有40℃不够热", "negative")]
    assert [u.aspect for u in ex.extract("面积20㎡太小了")] == ["面积"]
    assert triples(ex.extract("这个面膜😍很好用，价格很便宜👍瓶子漏液了")) == [
        ("面膜", "很好用", "positive"), ("价格", "很便宜", "positive"), ("瓶子", "漏液了", "negative")]


def test_a_sentence_without_chinese_gives_no_units(ex):
    """The tagger learned Chinese reviews and read keyboard noise as praise: "cv 0x3F9a lorem ipsum qqq" was
    a positive 整体 opinion in a product's summary. A sentence with no Chinese character is not tagged; Latin
    words inside a Chinese sentence still are (价格ok, iPhone很好用)."""
    assert ex.extract("asdf8 qwe#rt zx!cv 0x3F9a lorem ipsum qqq ;;") == []
    assert triples(ex.extract("好评！asdf qwe lorem ipsum")) == [(None, "好评", "positive")]
    assert triples(ex.extract("价格ok，质量nice"))[0] == ("价格", "ok", "positive")
    assert triples(ex.extract("订单号 12345。物流很快")) == [("物流", "很快", "positive")]
    assert [triples(u) for u in ex.extract_many(["lorem ipsum", "iPhone很好用", "12345"])] == [
        [], [("iPhone", "很好用", "positive")], []]


def test_a_span_is_cut_at_a_break_position():
    from emotag.aspects.extract import _cut_at

    assert _cut_at([(0, 5, 1), (5, 11, 3)], [7]) == [(0, 5, 1), (5, 7, 3), (8, 11, 3)]
    assert _cut_at([(2, 3, 3)], [2]) == []  # a span that is the break alone is gone
    assert _cut_at([(2, 6, 7)], []) == [(2, 6, 7)]


def test_no_aspect_inside_an_opinion(ex):
    """床单不干净过敏: the seed opinions 不干净 and 过敏 were added, then 干净 (a known aspect term: 环境很干净) was
    taken as the aspect of 过敏 from inside 不干净, and paired with both. 床单 is no known term, so both are
    implicit."""
    from emotag.aspects.extract import _add_seed_opinions

    units = ex.extract("床单不干净过敏")
    assert [(u.opinion, u.polarity) for u in units] == [("不干净", "negative"), ("过敏", "negative")]
    for u in units:
        if u.aspect_span:
            a0, a1 = u.aspect_span
            assert all(a1 <= v.opinion_span[0] or a0 >= v.opinion_span[1] for v in units), u
    # an aspect the tagger gave that a new seed opinion swallows is dropped, one it starts inside is cut
    assert _add_seed_opinions("床单不干净", [(3, 5)], [])[0] == []
    assert _add_seed_opinions("床单不干净", [(0, 3)], [])[0] == [(0, 2)]


def test_no_span_starts_with_a_space(ex):
    """An aspect grown to whole Latin words (IMAC BOOK) left the opinion after it starting at the space."""
    units = ex.extract("仿IMAC BOOK AIR很到位")
    assert units and all(u.opinion == u.opinion.strip() and (u.aspect or "x") == (u.aspect or "x").strip()
                         for u in units)
    assert units[-1].opinion.endswith("很到位")


def test_minimal_pair_negation_flips_polarity(ex):
    pos = ex.extract("菜很新鲜")
    neg = ex.extract("菜不新鲜")
    assert [u.polarity for u in pos] == ["positive"] and [u.polarity for u in neg] == ["negative"]
    assert pos[0].score > 0 > neg[0].score


def test_spans_point_into_the_text_as_given(ex):
    texts = ["這家店的服務態度不太好😡，菜倒是挺好吃的", "ＡＢＣ面膜很保湿👍，但是包装太简陋了！！", "物流很快，但是包装破损了"]
    n = 0
    for text, units in zip(texts, ex.extract_many(texts), strict=True):
        for u in units:
            n += 1
            assert text[slice(*u.opinion_span)] == u.opinion
            if u.aspect is not None:
                assert text[slice(*u.aspect_span)] == u.aspect
            else:
                assert u.aspect_span is None
            d = u.to_dict()
            assert set(d) == {"aspect", "opinion", "polarity", "score", "category", "aspect_span", "opinion_span"}
            assert -1 <= d["score"] <= 1 and json.dumps(d, ensure_ascii=False)
    assert n >= 5


def test_sentences_are_tagged_one_by_one(ex):
    # the tagger learned from single sentences: an opinion never runs across 。 into the next one
    assert triples(ex.extract("物流很快。包装破损了。面膜还不错。")) == [
        ("物流", "很快", "positive"), ("包装", "破损了", "negative"), ("面膜", "还不错", "positive")]
    units = ex.extract("包装很好。" * 2000)
    assert len(units) == 2000 and all(u.opinion == "很好" for u in units)


def test_spec_example_units_and_categories(ex):
    """SPEC §7's own example: three units, the product itself (面膜本身) under the default category, not under
    包装 (its last character 身 is the head of 瓶身)."""
    units = ex.extract("物流很快，但是包装破损了，面膜本身还不错")
    assert [(u.aspect, u.opinion, u.polarity, u.category) for u in units] == [
        ("物流", "很快", "positive", "物流"), ("包装", "破损了", "negative", "包装"),
        ("面膜本身", "还不错", "positive", "整体")]


def test_lather_and_the_foam_box_are_told_apart(ex):
    """泡沫 is a cleanser's lather (体验), 泡沫箱 the foam box (包装): the tagger cut 泡沫|箱破了, and the span now
    grows to the whole category term."""
    got = [(u.aspect, u.opinion, u.category, u.polarity) for t in ("泡沫很丰富", "泡沫箱破了", "洗完不紧绷")
           for u in ex.extract(t)]
    assert got == [("泡沫", "很丰富", "体验", "positive"), ("泡沫箱", "破了", "包装", "negative"),
                   (None, "不紧绷", "体验", "positive")]


def test_one_long_text_does_not_pad_a_chunk():
    """Batches are capped by padded characters as well as by count: the 20,000-character text goes alone, so
    the short sentences beside it are not padded to its length; the units are the same either way."""
    from emotag.aspects.extract import _length_batches

    pieces = [(k, 0, 10) for k in range(600)] + [(600, 0, 20_000)]
    batches = list(_length_batches(pieces, 512))
    assert [len(b) for b in batches] == [512, 88, 1]
    assert all(len(b) * max(e - s for _, s, e in b) <= 1 << 15 or len(b) == 1 for b in batches)
    short = ["物流很快，但是包装破损了", "面膜很保湿，但是味道太刺鼻了"]
    ex = AspectExtractor.load()
    alone = ex.extract_many(short)
    assert [triples(u) for u in ex.extract_many(short + ["好" * 20_000])[:2]] == [triples(u) for u in alone]


def test_odd_characters_do_not_break_a_chunk(ex):
    texts = ["\ud83d包装破损了", "\x00物流很快", "包装很好\u200b", "😀😀😀", "物流很快，但是包装破损了"]
    out = ex.extract_many(texts)
    assert len(out) == 5 and out[3] == []
    assert triples(out[4]) == [("物流", "很快", "positive"), ("包装", "破损了", "negative")]


def test_spans_keep_latin_words_whole(ex):
    units = ex.extract("这个mask很好用")
    assert [(u.aspect, u.opinion) for u in units] == [("mask", "很好用")]


def test_feature_groups_are_batch_independent_and_leave_base_keys_alone():
    # a text's keys must not depend on its neighbours in a chunk (the wide window reads their padding),
    # and a model without optional groups (older resources) must see exactly the base keys
    from emotag.aspects.features import EXTRA_GROUPS, NGRAM_TEMPLATES, feature_keys, lexicon_pattern

    lex = [lexicon_pattern(w) for w in (["鳗鱼", "味道"], ["可口", "好"], ["差"], ["不"], ["很"])]
    texts = ["鳗鱼也是非常软绵可口，好", "差", "华夫味道一般，味道很好。", "x"]
    keys, off = feature_keys(texts, lex, EXTRA_GROUPS)
    for k, t in enumerate(texts):
        alone, _ = feature_keys([t], lex, EXTRA_GROUPS)
        assert (alone == keys[off[k]:off[k + 1]]).all()
    base, _ = feature_keys(texts, lex)
    assert base.shape[1] == len(NGRAM_TEMPLATES) + len(lex) + 1 < keys.shape[1]
    assert (base[:, :len(NGRAM_TEMPLATES)] == keys[:, :len(NGRAM_TEMPLATES)]).all()


def test_context_features_see_earlier_aspects_and_opinions_ahead():
    from emotag.aspects.features import _opinion_ahead, _prior_aspects, lexicon_marks, lexicon_pattern

    text = "华夫味道一般，味道很好。味道"
    marks = lexicon_marks(text, [lexicon_pattern(["华夫", "味道"])])[0]
    prior = _prior_aspects(text, marks).tolist()
    # 味道 after 华夫 in one clause: one term before it in sentence and clause (3 * 1 + 1)
    assert prior[0] == 0 and prior[2] == 4
    assert prior[7] == 6  # after the comma: two terms before it in the sentence, none in the clause
    assert prior[12] == 0  # a new sentence starts from zero
    ops = lexicon_marks("鳗鱼也是非常可口，好", [lexicon_pattern(["可口", "好"])])[0]
    ahead = _opinion_ahead("鳗鱼也是非常可口，好", ops).tolist()
    assert ahead[:7] == [5, 5, 4, 3, 2, 1, 0] and ahead[9] == 0  # 5: none ahead within reach / clause


def test_table_lookup_matches_every_probe():
    # the lookup stops at a key's home slot when that slot is empty or holds the key; it must find every
    # stored key (row) and no unknown one (the zero row) exactly as probing all slots would
    import numpy as np

    from emotag.aspects.tagger import N_TAGS, SpanTagger

    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(1, 2**63, 5000, dtype=np.uint64))
    tg = SpanTagger(keys, np.zeros((len(keys) + 1, N_TAGS), np.float32), np.zeros((N_TAGS, N_TAGS), np.float32),
                    np.zeros(N_TAGS, np.float32), {})
    unknown = rng.integers(1, 2**63, 5000, dtype=np.uint64)
    unknown = unknown[~np.isin(unknown, keys)]
    rows = tg.lookup(np.concatenate([keys, unknown]).reshape(-1, 1))[:, 0]
    placed = tg._slot_row[tg._slot_row < len(keys)]
    assert (rows[:len(keys)][placed] == placed).all() and len(placed) == len(keys)
    assert (rows[len(keys):] == len(keys)).all()


def test_empty_and_opinionless_texts_give_no_units(ex):
    assert ex.extract_many(["", "今天去了一趟超市。", "   "]) == [[], [], []]


def test_builtin_categories_and_unlisted_terms(ex):
    cats = CategorySet.builtin()
    assert "外盒" not in cats.terms and "外箱" not in cats.terms
    assert cats.assign("外盒", "压扁了") == "包装"  # by learned similarity, not a listed string
    assert cats.assign("外箱", "破了") == "包装"
    assert cats.assign("快递小哥", "很负责") == "物流"
    assert cats.assign(None, "超值") == "价格"  # implicit aspect: the opinion says which
    assert cats.assign(None, "很好用") == "效果"
    assert cats.assign("包装盒", "很精致") == "包装"  # synonyms fold into one display name
    assert cats.assign("东西", "还行") == "整体"


def test_user_category_file(tmp_path):
    f = tmp_path / "cats.toml"
    # SPEC §7 writes Chinese bare keys (TOML 1.1); Python's TOML 1.0 reader needs them quoted: both work
    f.write_text('default = "其他"\n[categories]\n包装 = ["包装", "盒子"]\n"物流" = ["快递"]\n', encoding="utf-8")
    cats = CategorySet.from_toml(f)
    assert cats.names == ["包装", "物流"] and cats.default == "其他"
    assert cats.assign("外盒", "压扁了") == "包装"  # not listed in the file
    assert cats.assign("快递员", "态度差") == "物流"
    assert cats.assign("颜色", "很正") == "其他"  # fits no category: the file's default
    no_default = tmp_path / "nd.toml"
    no_default.write_text('[categories]\n包装 = ["包装"]\n', encoding="utf-8")
    assert CategorySet.from_toml(no_default).assign("颜色", "很正") is None


@pytest.mark.parametrize(("content", "problem"), [
    ("[categories\n", "not valid TOML"),
    ('default = "x"\n', "[categories]"),
    ('[categories]\n包装 = 3\n', "must be a list of strings"),
    ('colour = "red"\n[categories]\n包装 = ["包装"]\n', "unknown key"),
    ('default = 1\n[categories]\n包装 = ["包装"]\n', "'default'"),
    ('[categories]\n包装 = ["盒子", 3]\n', "3 is not a string (int)"),  # it said "must be a list of strings, got list"
    ('[categories]\n包装 = ["盒子", "瓶子"]\n物流 = ["快递", "盒子"]\n',  # it went to 包装 silently
     "term '盒子' is listed under both '包装' and '物流'"),
    ('[categories]\n包装 = ["盒子"]\n外观 = ["盒子 "]\n', "listed under both"),
])
def test_bad_category_files_are_one_line_errors(tmp_path, content, problem):
    f = tmp_path / "bad.toml"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(CategoryFileError) as e:
        CategorySet.from_toml(f)
    assert str(f) in str(e.value) and problem in str(e.value) and "\n" not in str(e.value)


def test_bad_category_file_through_the_cli(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[categories\n", encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "很好"}\n', encoding="utf-8")
    res = runner.invoke(app, ["score", str(inp), "-o", str(tmp_path / "o.jsonl"), "--aspect-categories", str(f)])
    assert res.exit_code == 1
    assert f"{f}: not valid TOML" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["score", str(inp), "-o", str(tmp_path / "o.jsonl"), "--aspect-categories",
                              str(tmp_path / "missing.toml")])
    assert res.exit_code == 1 and "missing.toml: no such file" in res.output


def test_wilson_interval():
    lo, hi = wilson(0, 0)
    assert (lo, hi) == (0.0, 1.0)
    lo, hi = wilson(8, 10)
    assert lo < 0.8 < hi and 0.4 < lo < 0.5 and 0.94 < hi < 0.97
    assert wilson(50, 100)[1] - wilson(50, 100)[0] < wilson(5, 10)[1] - wilson(5, 10)[0]


def _sample_records(ex):
    import csv

    with open(SAMPLES / "aspect_reviews.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    units = ex.extract_many([r["text"] for r in rows])
    return [{"id": r["review_id"], "product": r["product"], "time": r["time"],
             "aspects": [u.to_dict() for u in us]} for r, us in zip(rows, units, strict=True)]


def test_aggregation_surfaces_the_packaging_story(ex):
    rows = aggregate(_sample_records(ex) + [{"id": "bad", "product": "补水面膜", "aspects": None}], by="product")
    worst = {r["group"]: r for r in top_complaints(rows)}
    mask = worst["补水面膜"]
    assert mask["category"] == "包装"
    assert mask["negative"] >= 10 and mask["negative_share_low"] > 0.3
    assert mask["negative_examples"] and mask["top_negative"]
    assert worst["氨基酸洁面"]["category"] == "物流"
    # texts counts only records that carry aspects
    assert {r["texts"] for r in rows if r["group"] == "补水面膜"} == {40}


def test_aspects_command(ex, tmp_path):
    scored = tmp_path / "scored.jsonl"
    with open(scored, "w", encoding="utf-8") as f:
        for r in _sample_records(ex):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    out = tmp_path / "table.csv"
    res = runner.invoke(app, ["aspects", str(scored), "--by", "product", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "补水面膜: most complaints are about 包装" in res.output
    from emotag.io import read_records

    table = list(read_records(str(out)))
    assert {"group", "category", "mentions", "negative_share_low", "top_negative"} <= set(table[0])
    res = runner.invoke(app, ["aspects", str(scored), "--by", "shop"])
    assert res.exit_code == 1 and "no column 'shop'" in res.output
    before = scored.read_bytes()
    res = runner.invoke(app, ["aspects", str(scored), "--by", "product", "-o", str(scored)])
    assert res.exit_code == 1 and "input" in res.output  # never writes the table over the scored file
    assert scored.read_bytes() == before


def test_aspects_command_says_what_it_did_not_count(tmp_path):
    """A file scored without --aspects beside one scored with them is an error naming it; a damaged aspects
    cell or a unit of the wrong types is skipped with one line saying how many, never a traceback."""
    unit = {"aspect": "包装", "opinion": "破损了", "polarity": "negative", "score": -0.5, "category": "包装",
            "aspect_span": [0, 2], "opinion_span": [2, 5]}
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": 1, "product": "a", "aspects": [unit]},
        {"id": 2, "product": "a", "aspects": "[{\"aspect\": \"包装\""},  # a damaged cell
        {"id": 3, "product": "a", "aspects": [unit | {"category": 123}, unit | {"polarity": "weird"}]},
        {"id": 4, "product": "a", "aspects": None, "error": "text is empty"},
    ]) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["aspects", str(good), "--by", "product"])
    assert res.exit_code == 0, res.output
    assert "skipped 1 records without an aspects list" in res.output and "2 units whose polarity" in res.output
    failed = tmp_path / "failed.jsonl"  # scored with --aspects, every row an error: counted, not refused
    failed.write_text(json.dumps({"id": 6, "product": "a", "aspects": None, "error": "text is empty"}) + "\n",
                      encoding="utf-8")
    res = runner.invoke(app, ["aspects", str(good), str(failed), "--by", "product"])
    assert res.exit_code == 0, res.output
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": 5, "product": "a", "polarity": "negative"}) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["aspects", str(good), str(plain), "--by", "product"])
    assert res.exit_code == 1 and "plain.jsonl: no record has an 'aspects' list" in res.output
    from emotag.aspects.aggregate import AspectTable

    table = AspectTable("product")
    for line in good.read_text(encoding="utf-8").splitlines():
        table.add(json.loads(line))
    (row,) = table.rows()
    assert (row["category"], row["mentions"], row["negative"]) == ("包装", 1, 1)
    assert table.skipped == {"no_aspects": 1, "bad_units": 2, "error": 1}


def test_category_source_changes_when_the_file_is_edited(tmp_path):
    """`score --resume` compares the category setting: an edited file must not read as the same one."""
    f = tmp_path / "cats.toml"
    f.write_text('[categories]\n包装 = ["包装"]\n', encoding="utf-8")
    first = CategorySet.from_toml(f).source
    assert first == CategorySet.from_toml(f).source
    f.write_text('[categories]\n售后 = ["客服", "包装"]\n', encoding="utf-8")
    assert CategorySet.from_toml(f).source != first


@pytest.mark.parametrize("ext", ["jsonl", "csv", "tsv", "parquet", "xlsx"])
def test_score_with_aspects(tiny_model_dir, tmp_path, ext):
    inp = tmp_path / "in.jsonl"
    rows = [{"id": 1, "text": "物流很快，但是包装破损了"}, {"id": 2, "text": ""}, {"id": 3}, {"id": 4, "text": "很好用"}]
    inp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / f"out.{ext}"
    res = runner.invoke(app, ["score", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--aspects", "-q"])
    assert res.exit_code == 0, res.output
    from emotag.io import read_records

    got = {r["id"]: r for r in read_records(str(out))}
    assert len(got) == 4
    assert got[2]["error"] and got[2]["aspects"] is None
    assert got[3]["error"] and got[3]["aspects"] is None
    assert [(u["aspect"], u["polarity"], u["category"]) for u in got[1]["aspects"]] == [
        ("物流", "positive", "物流"), ("包装", "negative", "包装")]
    assert got[4]["aspects"][0]["aspect"] is None


def test_kept_aspects_column_never_replaces_the_units(tiny_model_dir, tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("id,text,aspects\n1,包装破损了,x\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--aspects",
                              "--keep", "aspects", "-q"])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rec["input.aspects"] == "x" and rec["aspects"][0]["opinion"] == "破损了"


def test_plain_score_has_no_aspects_field(tiny_model_dir, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": 1, "text": "很好"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0, res.output
    assert "aspects" not in json.loads(out.read_text(encoding="utf-8"))


def test_tagger_library_api(tiny_model_dir):
    from emotag.tagger import Tagger

    tagger = Tagger.load(tiny_model_dir)
    r = tagger.tag("物流很快，但是包装破损了", aspects=True)
    assert [u.category for u in r.aspects] == ["物流", "包装"]
    assert r.to_dict()["aspects"][1]["opinion_span"] == [9, 12]
    plain = tagger.tag("物流很快")
    assert plain.aspects is None and "aspects" not in plain.to_dict()
    custom = AspectExtractor.load(CategorySet.from_toml(DATA / "cosmetics_categories.toml"))
    rs = list(tagger.tag_many(["包装破损了", 5], aspects=custom))
    assert rs[0].aspects[0].category == "包装" and rs[1].error and rs[1].aspects is None
    # asked for, an error record still says so (SPEC §7: null), as the CLI and the service write it
    assert rs[1].to_dict()["aspects"] is None and tagger.tag("", aspects=True).to_dict()["aspects"] is None
    for bad in ("yes", 1, 0):  # not an extractor: a TypeError naming the argument, not an AttributeError
        with pytest.raises(TypeError, match="aspects= takes True, False or an emotag.aspects.AspectExtractor"):
            tagger.tag("物流很快", aspects=bad)


def test_report_aspect_section(ex, tmp_path):
    """The HTML report's aspect section: per product, the complaint categories and their monthly share."""
    pytest.importorskip("matplotlib")
    from emotag.report import build_report

    scored = tmp_path / "scored.jsonl"
    with open(scored, "w", encoding="utf-8") as f:
        for r in _sample_records(ex):
            r |= {"emotion": "neutral", "emotions": {"neutral": 1.0}, "polarity": "neutral", "polarity_score": 0.0,
                  "intensity": 0.1, "error": None}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    page = build_report([str(scored)], str(tmp_path / "r.html")).read_text(encoding="utf-8")
    section = page[page.index('<section id="aspects">'):]
    section = section[:section.index("</section>")]
    assert "补水面膜" in section and "包装" in section and "2026-01" in section and "2026-05" in section
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": 1, "emotion": "neutral", "polarity": "neutral", "polarity_score": 0.0,
                                 "error": None}) + "\n", encoding="utf-8")
    page = build_report([str(plain)], str(tmp_path / "p.html")).read_text(encoding="utf-8")
    assert "score with <code>emotag score --aspects" in page


def test_eval_scores_aspect_triples(tiny_model_dir, tmp_path):
    from emotag.evaluate import evaluate_file
    from emotag.tagger import Tagger

    f = tmp_path / "aste.jsonl"
    gold = [("物流很快，但是包装破损了", [("物流", "很快", "positive"), ("包装", "破损了", "negative")]),
            ("很好用", [(None, "很好用", "positive")])]
    f.write_text("".join(json.dumps({"text": t, "triples": [{"aspect": a, "opinion": o, "polarity": p}
                                                            for a, o, p in ts]}, ensure_ascii=False) + "\n"
                         for t, ts in gold), encoding="utf-8")
    res = evaluate_file(Tagger.load(tiny_model_dir), f)
    assert res["kind"] == "aste" and res["n"] == 2
    assert res["triple_f1_exact"] == res["triple_f1_soft"] == 1.0
    f.write_text(json.dumps({"text": "很好用", "triples": [{"aspect": None, "opinion": "很好用", "polarity": "negative"}]},
                            ensure_ascii=False) + "\n", encoding="utf-8")
    assert evaluate_file(Tagger.load(tiny_model_dir), f)["triple_f1_soft"] == 0.0  # polarity must match


@pytest.mark.parametrize("with_bigrams", [False, True])
def test_neural_numpy_forward_matches_torch(with_bigrams):
    # the shipped tagger is scored by a numpy forward of the torch network it was trained as: the export
    # (folded character table, conv taps, zeros past each sentence's ends in a padded batch, the bigram
    # rows) must give the torch scores and the same decoded tags, for sentences of different lengths in one
    # batch; and the saved float16 arrays must decode the same tags
    torch = pytest.importorskip("torch")
    import numpy as np

    from emotag.aspects.features import lexicon_pattern
    from emotag.aspects.neural import NeuralTagger, bigram_keys, encode
    from emotag.aspects.neural_train import ConvTagger, batch_tensors, export
    from emotag.aspects.tagger import viterbi

    torch.manual_seed(0)
    texts = ["物流很快，但是包装破损了。", "服务员态度不太好", "好"]
    vocab = ["", "[UNK]", *sorted(set("物流很快但是包装破损了。服务员态度不太好"))]
    bigrams = None
    if with_bigrams:
        cps = np.frombuffer("物流很快，但是包装".encode("utf-32-le"), dtype=np.uint32)
        bigrams = np.unique(bigram_keys(cps, np.array([len(cps) - 1])))
    model = ConvTagger(len(vocab), width=16, dilations=(1, 2, 4), emb_dim=8, dropout=0.0,
                       n_bigrams=len(bigrams) if bigrams is not None else 0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    lex = {"aspect": ["物流", "包装"], "positive": ["很快"], "negative": ["破损"], "negation": ["不"], "degree": ["很", "太"]}
    np_tagger = export(model, vocab, lex, bigrams=bigrams)
    ids = {c: i for i, c in enumerate(vocab)}
    _, codes, off = encode(texts, ids, [lexicon_pattern(lex[k]) for k in lex], bigrams)
    if with_bigrams:
        assert (codes[:, -1] > 0).sum() == 8  # the listed bigrams of the first text, nowhere else
    c, m, _ = batch_tensors([codes[off[k]:off[k + 1]] for k in range(len(texts))])
    with torch.no_grad():
        want = model(c, m).numpy()
    got, lengths = np_tagger.emissions(texts)
    assert lengths.tolist() == [len(t) for t in texts]
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    want_tags = viterbi(want, lengths, np_tagger.trans, np_tagger.start)
    assert (viterbi(got, lengths, np_tagger.trans, np_tagger.start) == want_tags).all()
    # one text alone is scored as in the batch
    alone, _ = np_tagger.emissions(texts[1:2])
    assert np.allclose(alone[0], got[1, :len(texts[1])], atol=1e-5)
    saved = NeuralTagger(np_tagger.vocab, {k: np.asarray(v) for k, v in np_tagger.arrays().items()}, lex)
    em16, _ = saved.emissions(texts)
    assert np.abs(em16 - want).max() < 0.05 * max(1.0, np.abs(want).max())
