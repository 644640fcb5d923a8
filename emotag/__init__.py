"""emotag: emotions, polarity and intensity for Chinese text, folded into per-user emotional tags."""

from emotag.labels import EMOTIONS, POLARITY

__version__ = "0.1.0"

__all__ = ["EMOTIONS", "POLARITY", "__version__"]
