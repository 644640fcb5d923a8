"""emotag.text: normalisation, PII masking, sentence windows and segmentation.

Property tests pin the guarantees the rest of the pipeline relies on (normalize never raises and is
idempotent, windows never lose or exceed, segmentation never loses); example tests pin the exact outputs
the model is trained on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import emoji as _emoji
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emotag.text import (
    PLACEHOLDERS,
    content_words,
    mask_pii,
    normalize,
    segment,
    split_sentences,
    stopwords,
    windows,
)
from emotag.text.normalize import URL_TOKEN, USER_TOKEN
from emotag.text.pii import luhn_ok

ROOT = Path(__file__).resolve().parents[1]
_SKIN_TONE = re.compile("[\U0001f3fb-\U0001f3ff]")
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

_PIECES = [
    "哈", "好", "不", "了", "的", "!", "！", "?", "？", "。", "，", ",", "、", ";", "；", "…", "...", ".",
    " ", "  ", "\n", "\t", "\u3000", "\u200b", "#", "@", "[", "]", "<", ">", "-", "+", "x", "X",
    "😂", "👍🏻", "❤️", "#️⃣", "[哈哈]", "[泪]", "[笑哭了]", "<url>", "<phone>",
    "http://t.cn/A6abc", "https://weibo.com/u/1234567890", "www.example.com/a?b=1#c", "@小明", "@user_01",
    "#今日话题#", "13812345678", "+86 138 1234 5678", "110101199003071234", "4111111111111111",
    "a.b@example.com", "這款產品", "ＡＢＣ１２３", "10000", "哈哈哈哈哈", "!!!!!", "yyds", "绝绝子",
    "\ud83d", "\ude02", "👍🏿", "·", "@客服为什么还没发货气死我了",
    "\u200d", "😮\u200d💨", "\ufe0f", "\u2028", "\x85", "http://x.com!", "http://t.cn/abc#", "@客服、",
]
_CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
mixed_text = st.lists(
    st.one_of(
        st.sampled_from(_PIECES),
        st.text(_CJK, min_size=1, max_size=6),
        st.integers(min_value=0, max_value=10**19).map(str),
        st.text(min_size=1, max_size=3),
    ),
    max_size=25,
).map("".join)
any_text = st.one_of(st.text(), mixed_text)


def _nonspace(s: str) -> str:
    return "".join(c for c in s if not c.isspace())


def _assert_slices(text: str, parts: list[str]) -> None:
    """`parts` are non-empty, stripped, in-order slices of `text` separated only by whitespace."""
    pos = 0
    for part in parts:
        assert part and part == part.strip()
        i = text.find(part, pos)
        assert i >= 0, (text, parts)
        assert text[pos:i].strip() == "", (text, parts)
        pos = i + len(part)
    assert text[pos:].strip() == ""


# ---------------------------------------------------------------- normalize: properties


@PROPS
@given(st.one_of(st.text(), st.text(st.characters(blacklist_categories=()))))
def test_normalize_never_raises_on_any_text(text: str) -> None:
    """Any str, lone UTF-16 surrogates included: the output always encodes (tokenizers need that)."""
    out = normalize(text)
    assert isinstance(out.text, str)
    out.text.encode("utf-8")
    assert all(v >= 0 for v in out.signals.values())
    assert 0.0 <= out.emphasis <= 1.0


@PROPS
@given(any_text)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text).text
    assert normalize(once).text == once


# Characters of OpenCC phrases none of whose characters is traditional alone (沈默 -> 沉默, 瞭解 -> 了解):
# deleting a space or a # between them makes a phrase that t2s converts only if it runs after the deletion.
_PHRASE_PARTS = st.lists(st.sampled_from(["沈", "默", "瞭", "解", "反", "覆", "藉", "口", " ", "#", "@", "好"]),
                         max_size=12).map("".join)


@PROPS
@given(_PHRASE_PARTS)
def test_normalize_is_idempotent_when_deleting_joins_a_t2s_phrase(text: str) -> None:
    once = normalize(text).text
    assert normalize(once).text == once


def test_t2s_sees_the_text_after_spaces_and_topics_are_deleted() -> None:
    # t2s used to run before the space was removed: 沈 默 -> 沈默, which a second normalisation made 沉默
    for raw in ("沈 默", "沈#默#", "沈默"):
        assert normalize(raw).text == normalize(normalize(raw).text).text == "沉默"
    assert normalize("沈 船").text == "沉船"
    assert normalize("沈 先生").text == "沈先生"  # the surname stays: 沈 alone is not traditional


_ZWJ_EMOJI = sorted(e for e in _emoji.EMOJI_DATA if "\u200d" in e)


@PROPS
@given(st.sampled_from(_ZWJ_EMOJI), st.sampled_from(["", "好", "😂"]))
def test_zero_width_joiner_sequences_become_words(seq: str, tail: str) -> None:
    """The joiner goes only after the emoji are words: nothing of the sequence is left raw, twice or once."""
    out = normalize(seq + tail).text
    assert "\u200d" not in out and "\ufe0f" not in out
    assert _emoji.emoji_count(out) == 0
    assert normalize(out).text == out
    if not _SKIN_TONE.search(seq):  # a sequence the library names is one word, not its parts
        assert out.removesuffix(normalize(tail).text).count("[") == 1


def test_zero_width_joiner_makes_one_emoji_not_two() -> None:
    # 😮‍💨 (face exhaling) used to lose its joiner first and read as 😮 💨: [吃惊][尾气]
    assert normalize("累死了😮\u200d💨").text == "累死了[呼气]"
    assert normalize("累死了😮💨").text == "累死了[吃惊][尾气]"
    assert normalize("好\u200d的").text == "好的"  # a stray joiner still goes


@PROPS
@given(st.text(st.one_of(_CJK, st.sampled_from("abcXYZ019_-·")), min_size=1, max_size=6),
       st.sampled_from(["、", "。", ",", "!", "?", ":"]), st.text(_CJK, min_size=1, max_size=6))
def test_a_mention_ends_at_punctuation(name: str, punct: str, rest: str) -> None:
    """Whatever the nickname, punctuation after it is the post's, and so is what follows."""
    out = normalize(f"@{name}{punct}{rest}").text
    assert out.startswith(USER_TOKEN + punct)
    assert out.endswith(normalize(rest).text)


@PROPS
@given(st.sampled_from(["http://x.com", "https://a.com/p?q=1", "www.example.com/a", "http://t.cn/A6abc"]),
       st.text(",.;:!?'", min_size=1, max_size=3), st.text(_CJK, min_size=1, max_size=6))
def test_url_leaves_the_punctuation_after_it(url: str, punct: str, rest: str) -> None:
    out = normalize(f"{url}{punct}{rest}").text
    assert out.startswith(URL_TOKEN + punct)
    assert out.endswith(normalize(rest).text)


@PROPS
@given(any_text)
def test_mask_pii_is_idempotent(text: str) -> None:
    once = mask_pii(text)
    assert mask_pii(once) == once


# ---------------------------------------------------------------- normalize: examples


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("這款產品質量很差", "这款产品质量很差"),
        ("ＡＢＣ１２３", "abc123"),
        ("太好了[哈哈]", "太好了[哈哈]"),
        ("哈哈哈哈哈哈", "哈哈哈"),
        ("[泪][泪][泪][泪][泪]", "[泪][泪][泪]"),
        ("花了10000元,订单号1111111", "花了10000元,订单号1111111"),
        ("对比 了 一下", "对比了一下"),
        ("love  life", "love life"),
        ("看这个 https://t.cn/A6abc 哈哈", "看这个<url>哈哈"),
        ("www.example.com/page 不错", "<url>不错"),
        ("@小明 你好", "<user>你好"),
        # a nickname ends at CJK punctuation: the sentence after 、 or 。 is the post's
        ("@客服、你们太差了", "<user>、你们太差了"),
        ("@客服。太慢了", "<user>。太慢了"),
        ("@客服你们太差了", "<user>"),  # the minimal pair: with no mark, where the name ends is unknowable
        ("回复@王羊羊的微博:是的", "回复<user>:是的"),
        ("//@汪苏泷·光影星云:好", "//<user>:好"),
        ("//@王源曰有一次我和王俊凯睡觉:哇", "//<user>:哇"),  # a repost's long nickname, ended by the colon
        # longer than 20 units and not ended by a colon or space: the post's own words, kept
        ("@客服为什么还没发货气死我了", "@客服为什么还没发货气死我了"),
        ("我@了你三次都没人回复太失望了", "我@了你三次都没人回复太失望了"),
        ("东西不错👍🏻", "东西不错[拇指向上]"),
        ("👍🏿👍🏻👍👍👍", "[拇指向上][拇指向上][拇指向上]"),
        ("半个表情\ud83d", "半个表情"),
        ("x\ud83d\ude00y", "x[嘿嘿]y"),
        ("#今日话题#真不错", "今日话题真不错"),
        ("电话13812345678", "电话<phone>"),
        ("+86 138 1234 5678", "<phone>"),
        ("身份证110101199003071234", "身份证<idcard>"),
        ("邮箱 test.user@example.com 联系", "邮箱<email>联系"),
        # line and paragraph separators separate words like a newline
        ("hello\u2028world", "hello world"),
        ("hello\u2029world", "hello world"),
        ("hello\x85world", "hello world"),
        ("hello\nworld", "hello world"),
    ],
)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


def test_emoji_become_bracketed_words() -> None:
    out = normalize("笑死😂")
    assert out.text == "笑死[笑哭了]"
    assert out.signals["emoji"] == 1
    assert out.signals["emoticons"] == 1


def test_repeats_collapse_but_are_reported() -> None:
    out = normalize("哈哈哈哈哈哈")
    assert out.text == "哈哈哈"
    assert out.signals["repeat"] > 0
    for bang in ("!!!!!", "！！！！！"):
        out = normalize(bang)
        assert out.text == "!!!"
        assert out.signals["exclaim"] == 5
        assert out.emphasis > 0


def test_topic_signal() -> None:
    assert normalize("#今日话题#真不错").signals["topics"] == 1


def _luhn_complete(prefix: str) -> str:
    """`prefix` plus the check digit that makes it pass Luhn."""
    return next(prefix + d for d in "0123456789" if luhn_ok(prefix + d))


def test_bank_card_masked_only_when_luhn_valid() -> None:
    card = _luhn_complete("622202123456789")
    assert len(card) == 16 and luhn_ok(card)
    order = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert not luhn_ok(order)
    assert normalize(f"卡号{card}").text == "卡号<card>"
    assert normalize(f"卡号 {card[:4]} {card[4:8]} {card[8:12]} {card[12:]}").text == "卡号<card>"
    assert normalize(f"订单号{order}").text == f"订单号{order}"


def test_mask_pii_standalone() -> None:
    assert mask_pii("call 13812345678 or a@b.com") == "call <phone> or <email>"
    assert mask_pii("没有数字") == "没有数字"


# Regressions found by the property tests (see the report in the commit that added them).


def test_topic_markers_that_hide_a_mention_are_idempotent() -> None:
    # stripping "#0#" used to leave "@0", which only the *second* normalisation masked
    assert normalize("@#0#").text == normalize(normalize("@#0#").text).text == "<user>"


def test_space_after_at_sign_is_idempotent() -> None:
    # removing the space before CJK used to create a mention that only the second pass masked
    once = normalize("@ 小明").text
    assert normalize(once).text == once


def test_numbers_inside_urls_are_part_of_the_url() -> None:
    card = _luhn_complete("411111111111111")
    assert normalize(f"https://weibo.com/u/{card} 看看").text == "<url>看看"
    assert normalize("https://weibo.com/1234567890/13812345678").text == "<url>"
    assert normalize("联系 me@www.abc.com").text == "联系<email>"


def test_url_does_not_swallow_a_following_emoticon() -> None:
    # the URL pattern used to take the "[" of [哈哈], leaving <url>哈哈]
    assert normalize("看 http://t.cn/A6abc[哈哈]").text == "看<url>[哈哈]"
    assert normalize("https://a.com/x?a[0]=1 好").text == "<url>好"


def test_url_keeps_sentence_punctuation_and_topics_out() -> None:
    # the URL pattern used to take the punctuation that ends the sentence, and a #topic# as a fragment
    assert normalize("http://x.com!好评").text == "<url>!好评"
    assert normalize("http://a.com,很好").text == "<url>,很好"
    assert normalize("看 http://a.com. 很好").text == "看<url>.很好"
    assert normalize("http://t.cn/abc#好看#").text == "<url>好看"
    assert normalize("http://a.com/#/p?q=1 好").text == "<url>好"  # an ASCII fragment is the URL's
    assert normalize("https://a.com/wiki/Foo_(bar) 好").text == "<url>好"  # a ) the URL opened is its own
    assert normalize("(见 http://a.com/x)").text == "(见<url>)"


# ---------------------------------------------------------------- sentences and windows


@PROPS
@given(any_text)
def test_split_sentences_loses_only_whitespace(text: str) -> None:
    sents = split_sentences(text)
    _assert_slices(text, sents)
    assert _nonspace("".join(sents)) == _nonspace(text)


@PROPS
@given(any_text, st.integers(min_value=1, max_value=80), st.booleans())
def test_windows_cover_everything_within_limit(text: str, max_chars: int, normalised: bool) -> None:
    if normalised:
        text = normalize(text).text
    wins = windows(text, max_chars)
    assert all(len(w) <= max_chars for w in wins)
    _assert_slices(text, wins)
    assert _nonspace("".join(wins)) == _nonspace(text)


def test_split_sentences_examples() -> None:
    assert split_sentences("今天天气很好。我很开心！你呢?") == ["今天天气很好。", "我很开心！", "你呢?"]
    assert split_sentences("太好了![哈哈][哈哈]下次还来") == ["太好了![哈哈][哈哈]", "下次还来"]
    assert split_sentences('他说:"好!"然后走了...真的吗??') == ['他说:"好!"', "然后走了...", "真的吗??"]
    assert split_sentences("第一行\n第二行\n\n第三行") == ["第一行", "第二行", "第三行"]
    assert split_sentences("   ") == []


def test_windows_pack_sentences_and_cut_long_ones() -> None:
    text = normalize(
        "这款面膜真的太好用了！！！强烈推荐给大家，价格也不贵，包装很精美，物流也很快。"
        "但是客服态度一般，问了半天才回复。总体来说还是满意的，会回购。"
    ).text
    wins = windows(text, 20)
    assert "".join(wins) == text  # no whitespace in this text, so nothing at all is dropped
    assert wins[0] == "这款面膜真的太好用了!!!"
    assert wins[1].endswith(",")  # the 40-character sentence was cut at a comma
    assert windows(text, 1000) == [text]
    # a hard cut moves before a placeholder instead of splitting it
    assert windows("a" * 25 + "<phone>" + "b" * 10, 28) == ["a" * 25, "<phone>" + "b" * 10]
    with pytest.raises(ValueError):
        windows(text, 0)


# ---------------------------------------------------------------- segmentation


@PROPS
@given(any_text)
def test_segment_loses_nothing_but_whitespace(text: str) -> None:
    words = segment(text)
    assert all(w and w == w.strip() for w in words)
    assert "".join(words) == _nonspace(text)


def test_segment_keeps_emoticons_and_placeholders_whole() -> None:
    words = segment("[哈哈]太好了<phone>[笑哭了]联系<user>")
    for token in ("[哈哈]", "<phone>", "[笑哭了]", "<user>"):
        assert token in words
    for placeholder in PLACEHOLDERS:
        assert segment(f"好{placeholder}好") == ["好", placeholder, "好"]


def test_segment_splits_sensibly() -> None:
    assert segment("这款面膜不太好用") == ["这款", "面膜", "不太", "好用"]
    words = segment("这个真的绝绝子yyds,看完直接破防了")
    for w in ("绝绝子", "yyds", "破防"):
        assert w in words
    assert "踩雷" in segment("踩雷了大家避雷") and "避雷" in segment("踩雷了大家避雷")


def test_content_words_drop_function_words_and_placeholders() -> None:
    words = content_words("这个真的绝绝子yyds!!!联系<phone>[哈哈]")
    assert words == ["绝绝子", "yyds", "联系", "[哈哈]"]
    assert "的" in stopwords() and "不" not in stopwords()
    assert content_words("666") == ["666"]  # slang survives the bare-number filter


def test_segmentation_leaves_global_jieba_alone() -> None:
    import jieba

    segment("绝绝子")
    assert "绝绝子" not in jieba.dt.FREQ


def test_import_and_first_segment_print_nothing() -> None:
    code = "import emotag.text as t; print(t.segment('这款面膜不太好用'))"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    assert proc.stderr == ""
    assert "面膜" in proc.stdout
