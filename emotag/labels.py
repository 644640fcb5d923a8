"""The taxonomy of SPEC §1 and the source-label mappings used for both training and evaluation.

Keeping the mappings in one module means training and `emotag eval` cannot drift apart.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("neutral", "like", "happiness", "sadness", "anger", "disgust", "fear", "surprise")
POLARITY: tuple[str, ...] = ("negative", "neutral", "positive")

EMOTION_ZH: dict[str, str] = {
    "neutral": "中性",
    "like": "喜好",
    "happiness": "高兴",
    "sadness": "悲伤",
    "anger": "愤怒",
    "disgust": "厌恶",
    "fear": "恐惧",
    "surprise": "惊讶",
}
POLARITY_ZH: dict[str, str] = {"negative": "负面", "neutral": "中性", "positive": "正面"}

# Which polarity an emotion implies; surprise can go either way and so implies none.
EMOTION_POLARITY: dict[str, str | None] = {
    "neutral": "neutral",
    "like": "positive",
    "happiness": "positive",
    "sadness": "negative",
    "anger": "negative",
    "disgust": "negative",
    "fear": "negative",
    "surprise": None,
}

# Source label -> set of our emotions ("either" = partial label, SPEC §1).
SMP2020: dict[str, tuple[str, ...]] = {
    "happy": ("like", "happiness"),
    "angry": ("anger", "disgust"),
    "sad": ("sadness",),
    "fear": ("fear",),
    "surprise": ("surprise",),
    "neutral": ("neutral",),
}
NLPCC: dict[str, tuple[str, ...]] = {e: (e,) for e in EMOTIONS if e != "neutral"} | {"none": ("neutral",)}
CLUE: dict[str, tuple[str, ...]] = {e: (e,) for e in EMOTIONS if e != "neutral"}
CPED_EMOTION: dict[str, tuple[str, ...]] = {
    "happy": ("happiness",),
    "anger": ("anger",),
    "disgust": ("disgust",),
    "fear": ("fear",),
    "worried": ("fear",),
    "sadness": ("sadness",),
    "depress": ("sadness",),
    "astonished": ("surprise",),
    "neutral": ("neutral",),
}
CPED_SENTIMENT: dict[str, str] = {"negative": "negative", "neutral": "neutral", "positive": "positive"}
CODESWITCH_FLAGS: tuple[str, ...] = ("happiness", "sadness", "anger", "fear", "surprise")

# SMP2020's six classes as evaluated (cli_eval): probabilities of our labels summed.
SMP2020_EVAL_MERGE: dict[str, tuple[str, ...]] = SMP2020


def emotion_mask(labels: tuple[str, ...] | list[str], label_set: tuple[str, ...] = EMOTIONS) -> list[float]:
    """A 0/1 vector over `label_set` marking the allowed labels of a (possibly partial) label."""
    allowed = set(labels)
    unknown = allowed - set(label_set)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; expected some of {list(label_set)}")
    return [1.0 if e in allowed else 0.0 for e in label_set]
