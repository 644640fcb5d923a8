"""Chinese-aware text normalisation: the first stage of text -> features -> scores -> tags.

Every text, at training time and at scoring time, goes through `normalize` with the options stored in
the model's `config.json`, so the model always sees text shaped the same way. The steps, in order:

1. repair UTF-16 surrogates (pairs joined, lone halves dropped), line and paragraph separators -> newline,
   drop control and zero-width characters (but the zero-width joiner, see 2) and emoji skin-tone
   modifiers, NFKC (full-width ASCII -> half-width);
2. emoji -> Chinese words in Weibo-emoticon brackets (😂 -> ``[笑哭了]``), via the maintained `emoji` package;
   only then are the zero-width joiner and variation selector 16 dropped, since they build one emoji out of
   several (😮‍💨 is [呼气], not [吃惊][尾气]);
3. traditional -> simplified (OpenCC t2s), only when the text holds a traditional character (fast path);
4. ASCII lower-casing;
5. PII masking (emails, ID-card, bank-card and mainland mobile numbers) -> placeholders; URLs are masked
   after e-mails but before the numbers, so an id inside a URL is not taken for a phone or card;
6. URLs, @mentions -> placeholders; ``#topic#`` markers dropped, the topic words kept;
7. whitespace: spaces next to CJK characters are removed (undoes pre-segmented corpora), other runs -> one;
8. runs of a repeated character or emoticon (``!!!!!``, ``哈哈哈哈哈``, ``[泪][泪][泪][泪]``) collapsed to at
   most three, while the emphasis they carried is reported in `Normalized.signals`.

The order matters for idempotence (``normalize(normalize(x).text) == normalize(x)``), which the property
tests check: every step produces text that no earlier step would change again, and steps 5-8, which can
create new matches for one another, are repeated until the text is stable. Step 3 is repeated with them:
deleting a space or a ``#`` can join two characters into an OpenCC phrase (``沈 默`` -> ``沈默`` -> ``沉默``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

import emoji as _emoji

from emotag.text.pii import PLACEHOLDERS as PII_PLACEHOLDERS
from emotag.text.pii import mask_emails, mask_pii

URL_TOKEN = "<url>"
USER_TOKEN = "<user>"
PLACEHOLDERS: tuple[str, ...] = (URL_TOKEN, USER_TOKEN, *PII_PLACEHOLDERS)

# CJK ideographs, CJK punctuation and full-width forms: spaces beside these carry no meaning in Chinese.
_CJK = r"\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")
_SPACES = re.compile(r"\s+")
# Line and paragraph separators (NEL, U+2028, U+2029) separate words like a newline does; deleted as
# controls, they would glue hello\u2028world into one word.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\x85\u2028\u2029", "\n"))
# Cc/Cf controls and zero-width characters, except tab/newline which become whitespace; and emoji skin-tone
# modifiers, so 👍🏻 and 👍🏿 read as the 👍 they qualify (the tone says nothing about emotion). The
# zero-width joiner (U+200D) is not here: it is part of emoji sequences and goes only after them (_JOINERS).
_CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200c\u200e\u200f\u202a-\u202f\u2060-\u206f\ufeff"
    r"\ufff0-\ufffb\U0001f3fb-\U0001f3ff]"
)
# What is left of emoji sequences once the emoji are words: joiners and the emoji-presentation selector.
_JOINERS = re.compile("[\u200d\ufe0f]")
# UTF-16 surrogates: a pair written as two code points, or half of one (Weibo cuts posts at 140 UTF-16
# units, which can split an emoji). Neither can be encoded, so both are repaired before anything else.
_SURROGATE = re.compile("[\ud800-\udfff]")
# A URL may hold brackets (?a[0]=1) but never runs into a Weibo emoticon written right after it:
# http://t.cn/x[哈哈] must leave [哈哈] whole, not <url>哈哈]. A ``#`` followed by a non-ASCII character
# opens a #topic#, not a fragment (http://t.cn/x#好看#).
_URL = re.compile(
    r"(?:https?://|www\.)(?:(?!\[[^\[\]\s]{0,19}[^\x00-\x7f\[\]\s][^\[\]\s]{0,19}\])"
    r"(?:#(?![^\x00-\x7f])|[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]))+|\bt\.cn/[A-Za-z0-9]+",
    re.ASCII,
)
# Punctuation that ends the sentence around a URL far more often than the URL itself (http://x.com!好评).
_URL_TRAILING = ",.;:!?')"
# Weibo mention: @ followed by a nickname (word characters, which cover hanzi, letters, digits and _; and
# - and ·), which ends at the first other character, CJK punctuation included (@客服、你们太差了). Weibo allows a nickname 30 units, a CJK character counting 2. Reposts and replies end a
# name with a colon or a space (//@王源曰有一次我和王俊凯睡觉:), so there any name up to 30 units is one.
# Elsewhere a run longer than MENTION_MAX_UNITS is more likely the post's own words
# (@客服为什么还没发货气死我了), and is kept.
_MENTION = re.compile(r"@[\w\-·]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
MENTION_MAX_UNITS = 20
_NAME_END = frozenset(":：/@ \t\n\r\u3000")
_TOPIC = re.compile(r"#([^#\n]{1,60})#")
# A Weibo emoticon: a short bracketed name such as [哈哈] or [笑哭了].
EMOTICON = re.compile(r"\[[^\[\]\s]{1,8}\]")
# A repeated unit: one emoticon or one character, four or more times in a row.
# Digits are never collapsed: 10000元 must stay 10000元.
_REPEAT_UNIT = r"(\[[^\[\]\s]{1,8}\]|[^0-9])"
# Characters that may start an emoji; texts without any skip the (slow) emoji library entirely.
_EMOJI_HINT = re.compile("[\u00a9\u00ae\u203c-\u2bff\u3030\u303d\u3297\u3299\U0001f000-\U0001faff]")
_EXCLAIM = re.compile(r"[!！]")
_QUESTION = re.compile(r"[?？]")


@dataclass(frozen=True)
class NormalizeOptions:
    """Which normalisation steps run; stored in a model's config.json so training and scoring agree."""

    t2s: bool = True
    emoji_to_words: bool = True
    lowercase: bool = True
    mask_pii: bool = True
    mask_urls: bool = True
    mask_mentions: bool = True
    strip_topics: bool = True
    collapse_repeats: bool = True
    max_repeat: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NormalizeOptions:
        """Build from a config dict, ignoring keys a newer version may have added."""
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Normalized:
    """A normalised text and the signals that normalisation would otherwise erase."""

    text: str
    signals: dict[str, int] = field(default_factory=dict)

    @property
    def emphasis(self) -> float:
        """A 0..1 emphasis cue from !!!, ??? and repetition: useful to intensity, kept out of the text."""
        s = self.signals
        raw = s.get("exclaim", 0) + 0.5 * s.get("question", 0) + s.get("repeat", 0)
        return min(1.0, raw / 10.0)


@lru_cache(maxsize=1)
def _t2s():
    """The OpenCC converter and a regex that finds any character it would change (loaded once)."""
    import opencc

    converter = opencc.OpenCC("t2s")
    converter.convert("")  # forces the dictionary load
    chars: set[str] = set()
    phrases: dict[str, str] = {}
    for level in converter._dict_chain_data:  # noqa: SLF001 - the reimplementation exposes no public API
        for entry in level:
            for key, value in entry[2].items():
                if len(key) == 1:
                    chars.add(key)
                else:
                    phrases[key] = value
    # phrases made only of characters that are not traditional on their own (沈默 -> 沉默) still need
    # the converter: their characters join the trigger set
    for key, value in phrases.items():
        if chars.isdisjoint(key) and key != value.split(" ")[0]:
            chars.update(key)
    return converter, frozenset(chars)


def to_simplified(text: str) -> str:
    """OpenCC traditional -> simplified; texts with no traditional character skip the converter."""
    converter, trad = _t2s()
    if trad.isdisjoint(text):
        return text
    # Repeat until stable: a few t2s outputs are themselves traditional forms of another character.
    for _ in range(3):
        out = converter.convert(text)
        if out == text:
            break
        text = out
    return text


def _demojize(text: str) -> str:
    if not _EMOJI_HINT.search(text) or not _emoji.emoji_count(text):
        return text
    return _emoji.demojize(text, language="zh", delimiters=("[", "]"))


@lru_cache(maxsize=8)
def _repeat_pattern(max_repeat: int) -> re.Pattern[str]:
    return re.compile(_REPEAT_UNIT + r"\1{" + str(max_repeat) + ",}", re.DOTALL)


def _collapse(text: str, max_repeat: int) -> tuple[str, int]:
    removed = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal removed
        unit = m.group(1)
        count = len(m.group(0)) // len(unit)
        if count <= max_repeat:
            return m.group(0)
        removed += count - max_repeat
        return unit * max_repeat

    pattern = _repeat_pattern(max_repeat)
    return pattern.sub(repl, text), removed


_MAX_PASSES = 4


def _mask_mention(m: re.Match[str]) -> str:
    name = m.group(0)[1:]
    units = len(name) + len(_CJK_CHAR.findall(name))
    after = m.string[m.end() : m.end() + 1]
    limit = 30 if after and after in _NAME_END else MENTION_MAX_UNITS
    return USER_TOKEN if units <= limit else m.group(0)


def _mask_url(m: re.Match[str]) -> str:
    """The URL as a placeholder, with the sentence punctuation it ended on kept outside it.

    A ``)`` stays in the URL while it closes a ``(`` of the URL (wiki/Foo_(bar)).
    """
    url = m.group(0)
    end = len(url)
    while end > 0 and url[end - 1] in _URL_TRAILING:
        if url[end - 1] == ")" and url.count("(", 0, end) >= url.count(")", 0, end):
            break
        end -= 1
    return URL_TOKEN + url[end:]


def _repair_surrogates(text: str) -> str:
    """Join surrogate pairs into the character they encode and drop lone halves."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")


def _late_steps(t: str, opts: NormalizeOptions) -> tuple[str, int, int]:
    """Masking, topics, whitespace and repeats: returns the text, topics stripped and repeats removed."""
    # e-mails, then URLs, then the numbers: a long id inside a URL (weibo.com/u/<16 digits>) is part of
    # the URL, not a bank card or phone number of its own.
    if opts.mask_pii:
        t = mask_emails(t)
    if opts.mask_urls:
        t = _URL.sub(_mask_url, t)
    if opts.mask_pii:
        t = mask_pii(t)
    if opts.mask_mentions:
        t = _MENTION.sub(_mask_mention, t)
    topics = 0
    if opts.strip_topics:
        t, topics = _TOPIC.subn(lambda m: m.group(1).strip(), t)
    t = _SPACE_NEAR_CJK.sub("", t)
    t = _SPACES.sub(" ", t).strip()
    removed = 0
    if opts.collapse_repeats:
        t, removed = _collapse(t, opts.max_repeat)
    return t, topics, removed


def normalize(text: str, options: NormalizeOptions | None = None) -> Normalized:
    """Normalise one text; never raises on a `str` (property-tested) and is idempotent."""
    opts = options or NormalizeOptions()
    if not isinstance(text, str):
        raise TypeError(f"normalize() expects str, got {type(text).__name__}")
    if _SURROGATE.search(text):
        text = _repair_surrogates(text)
    signals = {
        "exclaim": len(_EXCLAIM.findall(text)),
        "question": len(_QUESTION.findall(text)),
        "emoji": _emoji.emoji_count(text) if _EMOJI_HINT.search(text) else 0,
    }
    t = _CONTROL.sub("", text.translate(_LINE_BREAKS))
    t = unicodedata.normalize("NFKC", t)
    if opts.emoji_to_words:
        t = unicodedata.normalize("NFKC", _demojize(t))
    if _JOINERS.search(t):
        t = _JOINERS.sub("", t)
        if opts.emoji_to_words:
            # a sequence the library does not know (🧑🏿‍❤️‍🧑🏻 without its skin tones) leaves some of its
            # parts unconverted; without the joiners they are plain emoji, converted now, not on a second run
            t = unicodedata.normalize("NFKC", _demojize(t))
    if opts.t2s:
        t = to_simplified(t)
    if opts.lowercase:
        t = t.lower()
    # Steps 5-8 can feed each other (stripping ``#`` in ``@#x#`` makes a new mention, collapsing a run can
    # join digits into a phone number), so they are repeated until the text stops changing; t2s with them,
    # since deleting a space or ``#`` can join an OpenCC phrase (沈 默 -> 沈默 -> 沉默). Ordinary texts
    # settle on the first pass; the second is only the check.
    signals["topics"] = 0
    repeat = 0
    for _ in range(_MAX_PASSES):
        before = t
        t, topics, removed = _late_steps(t, opts)
        if opts.t2s and t != before:  # unchanged text was simplified already
            t = to_simplified(t)
        signals["topics"] += topics
        repeat += removed
        if t == before:
            break
    signals["repeat"] = repeat
    signals["emoticons"] = len(EMOTICON.findall(t))
    return Normalized(text=t, signals=signals)


def normalize_text(text: str, options: NormalizeOptions | None = None) -> str:
    """Just the normalised string, for callers that do not need the signals."""
    return normalize(text, options).text
