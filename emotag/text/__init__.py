"""Chinese text handling: normalisation, PII masking, sentence windows and jieba segmentation."""

from emotag.text.normalize import (
    PLACEHOLDERS,
    Normalized,
    NormalizeOptions,
    normalize,
    normalize_text,
    to_simplified,
)
from emotag.text.pii import mask_pii
from emotag.text.segment import content_words, segment, stopwords
from emotag.text.sentences import split_sentences, windows

__all__ = [
    "PLACEHOLDERS",
    "Normalized",
    "NormalizeOptions",
    "content_words",
    "mask_pii",
    "normalize",
    "normalize_text",
    "segment",
    "split_sentences",
    "stopwords",
    "to_simplified",
    "windows",
]
