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

__all__ = [
    "PLACEHOLDERS",
    "Normalized",
    "NormalizeOptions",
    "mask_pii",
    "normalize",
    "normalize_text",
    "to_simplified",
]
