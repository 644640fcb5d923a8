"""Sentence splitting and scoring windows.

The encoder sees at most `max_length` tokens, but reviews and posts can be far longer. Rather than
truncating (which silently drops the complaint that often comes at the end of a review), a text is cut
into windows of whole sentences, each small enough for the encoder, and the tagger combines the windows'
scores. Windows are slices of the input: every character lands in exactly one window, only the whitespace
at a cut is dropped.

Works on raw or normalised text. After `normalize`, full-width punctuation is ASCII (``！`` -> ``!``,
``，`` -> ``,``, ``…`` -> ``...``) while ``。`` and ``、`` stay as they are; both forms are recognised.
"""

from __future__ import annotations

import re

from emotag.text.normalize import PLACEHOLDERS

# A sentence ends at a run of terminators (an ellipsis is two or more dots), followed by any closing
# quotes or brackets and by trailing Weibo emoticons: in ``太好了![哈哈]下次还来`` the emoticon belongs to
# the sentence it reacts to. A newline always ends a sentence.
_CLOSERS = "\"'”’」』）)】》"
_BRACKETED = r"\[[^\[\]\s]{1,20}\]"
_BOUNDARY = re.compile(
    rf"(?:[。！？!?；;…]+|\.{{2,}})[{_CLOSERS}]*(?:[ \t]*{_BRACKETED})*|\n",
)
# Where an over-long sentence may be cut, best first: after a comma-like mark, then at whitespace.
_CLAUSE_END = re.compile(r"[,，、:：]+")
_SPACE_RUN = re.compile(r"\s+")
# Tokens a hard cut must not split when it can avoid it: placeholders and bracketed emoticons.
_PROTECTED = re.compile("|".join([*(re.escape(p) for p in PLACEHOLDERS), _BRACKETED]))

Span = tuple[int, int]


def _strip(text: str, start: int, end: int) -> Span | None:
    """The span without surrounding whitespace, or None when nothing else is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _split_after(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[Span]:
    """Cut text[start:end] after every match of `pattern`, dropping whitespace at the cuts."""
    spans: list[Span] = []
    pos = start
    for m in pattern.finditer(text, start, end):
        if m.end() <= pos:
            continue
        span = _strip(text, pos, m.end())
        if span:
            spans.append(span)
        pos = m.end()
    span = _strip(text, pos, end)
    if span:
        spans.append(span)
    return spans


def sentence_spans(text: str) -> list[Span]:
    """(start, end) of each sentence in `text`, delimiters included, surrounding whitespace excluded."""
    return _split_after(text, 0, len(text), _BOUNDARY)


def split_sentences(text: str) -> list[str]:
    """Split on Chinese and ASCII sentence ends (。！？!?；;… and newlines), keeping each delimiter.

    Nothing but whitespace at a split point is lost: ``"".join(split_sentences(t))`` is `t` without it.
    """
    return [text[a:b] for a, b in sentence_spans(text)]


def _hard_cut(text: str, start: int, end: int, max_chars: int) -> list[Span]:
    """Cut a span with no usable comma or space into pieces of at most `max_chars` characters.

    A cut that would fall inside a placeholder or emoticon moves to just before it, when that still
    leaves a non-empty piece, so ``<phone>`` or ``[笑哭了]`` reaches the encoder whole.
    """
    protected = [(m.start(), m.end()) for m in _PROTECTED.finditer(text, start, end)]
    spans: list[Span] = []
    pos = start
    while end - pos > max_chars:
        cut = pos + max_chars
        for a, b in protected:
            if a < cut < b and a > pos:
                cut = a
                break
        span = _strip(text, pos, cut)
        if span:
            spans.append(span)
        pos = cut
    span = _strip(text, pos, end)
    if span:
        spans.append(span)
    return spans


def _pieces(text: str, span: Span, max_chars: int) -> list[Span]:
    """A sentence span as pieces of at most `max_chars`: whole, else clauses, else words, else hard cuts."""
    a, b = span
    if b - a <= max_chars:
        return [span]
    out: list[Span] = []
    for clause in _split_after(text, a, b, _CLAUSE_END):
        if clause[1] - clause[0] <= max_chars:
            out.append(clause)
            continue
        for word in _split_after(text, clause[0], clause[1], _SPACE_RUN):
            if word[1] - word[0] <= max_chars:
                out.append(word)
            else:
                out.extend(_hard_cut(text, word[0], word[1], max_chars))
    return out


def window_spans(text: str, max_chars: int) -> list[Span]:
    """(start, end) of each window of `windows`; consecutive spans are separated by whitespace only."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    spans: list[Span] = []
    cur: Span | None = None
    for sentence in sentence_spans(text):
        for a, b in _pieces(text, sentence, max_chars):
            if cur is not None and b - cur[0] <= max_chars:
                cur = (cur[0], b)  # the whitespace between pieces stays inside the window
                continue
            if cur is not None:
                spans.append(cur)
            cur = (a, b)
    if cur is not None:
        spans.append(cur)
    return spans


def windows(text: str, max_chars: int) -> list[str]:
    """Pack consecutive sentences into windows of at most `max_chars` characters.

    Long texts are scored window by window instead of being truncated: every character of `text` is in
    exactly one window, and only whitespace where two windows meet is dropped. A sentence longer than
    `max_chars` is cut at commas, then at spaces, then hard-cut. A blank text has no windows.
    """
    return [text[a:b] for a, b in window_spans(text, max_chars)]


# Contrast: in 物流很快但是包装破损了 the clause after the turn decides. A marker starts a new clause when
# real text stands before it; 就是/只是/不过/可惜 also open sentences with other senses (就是好吃,
# 不过如此), so they count only right after a comma-like or sentence mark. 但 alone is a marker except
# in 不但/非但 (not only) and 但愿/但凡. Markers that end or start other words are no turn there:
# 认可是/许可是 (the 可 belongs to the verb), and 然而 after the first half of an X然 adverb in an idiom
# (自然而然, 油然而生, 戛然而止, 悄然而至).
CONTRAST_MARKERS = ("但是", "可是", "然而", "不过", "只是", "就是", "可惜", "但")
_IDIOM_RAN = "自油戛悄突飘欣毅贸潸怅嫣翩黯蓦猝陡骤倏恍豁昂泰"
CONTRAST_RE = re.compile(
    rf"(?<![不非])但是|(?<![认许宁])可是|(?<![{_IDIOM_RAN}])然而|不过|只是|就是|可惜|(?<![不非])但(?![愿凡])"
)
_AFTER_PUNCT_ONLY = {"不过", "只是", "就是", "可惜"}
_CLAUSE_PUNCT = set(",，、;；:：。!！?？~～… \t")


def contrast_clauses(text: str) -> list[str]:
    """`text` cut before each contrast marker that turns the opinion: ``["物流很快", "但是包装破损了"]``.

    Every character lands in exactly one clause, in order; a text without a turn comes back whole.
    """
    cuts = [0]
    for m in CONTRAST_RE.finditer(text):
        p = m.start()
        before = text[cuts[-1] : p].rstrip("".join(_CLAUSE_PUNCT))
        if len(before) < 2:
            continue
        if m.group() in _AFTER_PUNCT_ONLY and text[p - 1] not in _CLAUSE_PUNCT:
            continue
        cuts.append(p)
    cuts.append(len(text))
    return [text[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if text[a:b].strip()]


def turns_opinion(clause: str) -> bool:
    """Whether a clause from `contrast_clauses` opens with a contrast marker."""
    return clause.lstrip("".join(_CLAUSE_PUNCT)).startswith(CONTRAST_MARKERS)
