"""emotag: emotions, polarity and intensity for Chinese text, folded into per-user emotional tags."""

from emotag.labels import EMOTION_ZH, EMOTIONS, POLARITY, POLARITY_ZH
from emotag.tagger import Result, Tagger

__version__ = "0.3.0"

__all__ = ["EMOTIONS", "EMOTION_ZH", "POLARITY", "POLARITY_ZH", "Result", "Tagger", "__version__"]
