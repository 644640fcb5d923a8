"""jieba word segmentation with emotag's user dictionary, for reports and lexicon features.

The scoring model does not need words (it reads WordPiece tokens and character n-grams); segmentation
serves the human-facing side: "top words per emotion" reports and lexicon checks. Two choices:

* A private, lazily built `jieba.Tokenizer` instead of jieba's global one, so importing emotag neither
  prints jieba's "Building prefix dict" log nor changes the dictionary of an application that also uses
  jieba.
* Weibo emoticons (``[哈哈]``, ``[笑哭了]``) and placeholders (``<url>``, ``<phone>`` ...) are cut out
  before jieba sees the text: jieba splits on brackets, and these are exactly the tokens that carry the
  most emotion (emoticons) or must never be mistaken for words (placeholders).

``resources/userdict.txt`` is jieba's ``word freq tag`` format: sentiment words, negators, degree adverbs
and internet slang (yyds, 绝绝子, 破防, 踩雷 ...), which the stock dictionary misses or splits. It only ever
adds words or raises their frequency: a word the stock dictionary already rates higher keeps its rating,
so ordinary segmentation is not disturbed.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from emotag.text.normalize import PLACEHOLDERS

if TYPE_CHECKING:
    import jieba

_RESOURCES = "emotag.text"
_PROTECTED = re.compile("|".join([*(re.escape(p) for p in PLACEHOLDERS), r"\[[^\[\]\s]{1,20}\]"]))
_PLACEHOLDER_SET = frozenset(PLACEHOLDERS)
_LOCK = threading.Lock()
_TOKENIZER: jieba.Tokenizer | None = None
_USER_WORDS: frozenset[str] = frozenset()


def _read_resource(name: str) -> str:
    return resources.files(_RESOURCES).joinpath("resources").joinpath(name).read_text(encoding="utf-8")


def _load_userdict(tok: jieba.Tokenizer, text: str) -> set[str]:
    """Add `word [freq] [tag]` lines to `tok`, never lowering a frequency the stock dictionary has."""
    added: set[str] = set()
    for line in text.splitlines():
        parts = line.strip().split()
        if not parts:
            continue
        word = parts[0]
        freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        tag = parts[2] if len(parts) > 2 else None
        if freq is not None:
            freq = max(freq, tok.FREQ.get(word) or 0)
        tok.add_word(word, freq, tag)
        added.add(word)
    return added


def tokenizer() -> jieba.Tokenizer:
    """The shared emotag tokenizer: stock dictionary plus the user dictionary, built on first use."""
    global _TOKENIZER, _USER_WORDS
    if _TOKENIZER is None:
        with _LOCK:
            if _TOKENIZER is None:
                import jieba  # deferred: importing emotag should not cost the jieba import

                # jieba logs the dictionary build at DEBUG to stderr: quiet it for this build only, so an
                # application's own jieba logging settings are left as they were
                logger = jieba.default_logger
                level = logger.level
                logger.setLevel(logging.WARNING)
                try:
                    tok = jieba.Tokenizer()
                    tok.initialize()
                finally:
                    logger.setLevel(level)
                _USER_WORDS = frozenset(_load_userdict(tok, _read_resource("userdict.txt")))
                _TOKENIZER = tok
    return _TOKENIZER


def _pieces(text: str) -> list[tuple[str, bool]]:
    """`text` cut into (piece, protected) pairs, protected pieces being emoticons and placeholders."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in _PROTECTED.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def segment(text: str) -> list[str]:
    """Words of `text`, emoticons and placeholders kept whole, whitespace dropped.

    ``"".join(segment(t))`` is `t` without its whitespace: nothing else is lost or changed, so callers can
    map words back to the text. Pass normalised text (`normalize`) to get the placeholders and the
    lower-case ASCII the user dictionary expects.
    """
    tok = tokenizer()
    words: list[str] = []
    for piece, protected in _pieces(text):
        if protected:
            words.append(piece)
            continue
        for w in tok.cut(piece):
            w = w.strip()
            if w:
                words.append(w)
    return words


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """Function words and punctuation that say nothing about emotion (negators are deliberately absent)."""
    return frozenset(w.strip() for w in _read_resource("stopwords.txt").splitlines() if w.strip())


def _is_noise(word: str) -> bool:
    """Punctuation, symbols and bare numbers (but not slang such as 666): never useful as a "top word"."""
    return word not in _USER_WORDS and all(unicodedata.category(c)[0] in "PSZN" for c in word)


def content_words(text: str) -> list[str]:
    """Segmented words minus stopwords, punctuation, numbers and placeholders, for "top words" reports.

    Emoticons such as ``[哈哈]`` are kept: they are among the strongest emotion cues in Weibo text.
    """
    stop = stopwords()
    words = segment(text)  # builds the tokenizer, and with it the user-word set _is_noise reads
    return [
        w for w in words
        if w not in stop and w not in _PLACEHOLDER_SET and not _is_noise(w)
    ]
