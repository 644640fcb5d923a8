"""Turn one `emotag score-dialogues` result (SPEC §3) into one support-channel fold record.

A support conversation is one contact with the brand, so it counts as one piece of evidence, not one per
turn: a long angry chat should not outweigh ten short reviews. Its polarity is the customer's satisfaction
with the service (the quantity the support team is judged on), rescaled from [-2, 2] to [-1, 1]; its
emotion distribution is the mean over the customer's turns. `resolved` and `end_emotion` are carried so
the profile can count unresolved negative contacts (the 服务不满 tag). Turn texts are never copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emotag.labels import EMOTIONS
from emotag.profiles.records import record_error

_NEUTRAL_BAND = 0.1


def is_conversation(record: Mapping[str, Any]) -> bool:
    """True for a SPEC §3 conversation result (has a `turns` list) rather than a SPEC §2 record."""
    return isinstance(record.get("turns"), list)


def conversation_to_record(
    conv: Mapping[str, Any], user_col: str = "user_id", time_col: str = "time"
) -> dict[str, Any]:
    """One support-channel record: last turn's time, satisfaction/2 polarity, mean customer emotions.

    Falls back to the mean of the customer turns' polarity scores when `satisfaction` is missing. A
    conversation with no successfully scored customer turn gets an `error`, so the fold skips and counts it.
    """
    turns = conv.get("turns") or []
    t = conv.get(time_col)
    if t is None:
        for turn in reversed(turns):
            if isinstance(turn, Mapping) and turn.get(time_col, turn.get("time")) is not None:
                t = turn.get(time_col, turn.get("time"))
                break
    customer = [
        turn
        for turn in turns
        if isinstance(turn, Mapping)
        and str(turn.get("speaker", "customer")).lower() == "customer"
        and record_error(turn) is None
        and isinstance(turn.get("emotions"), Mapping)
    ]
    rec: dict[str, Any] = {
        "id": conv.get("id"),
        # `emotag score-dialogues` always writes `user_id`, whatever --user-col the profile run uses.
        user_col: conv.get(user_col, conv.get("user_id")),
        time_col: t,
        "channel": "support",
        "resolved": conv.get("resolved"),
        "start_emotion": conv.get("start_emotion"),
        "end_emotion": conv.get("end_emotion"),
        "error": record_error(conv),
    }
    if conv.get("product") is not None:
        rec["product"] = conv.get("product")
    if not customer:
        rec["error"] = rec["error"] or "conversation has no scored customer turns"
        return rec
    n = len(customer)
    # the model's own labels (a custom-label model's too), in its order; the fold checks they agree
    labels = list(dict.fromkeys(k for turn in customer for k in turn["emotions"])) or list(EMOTIONS)
    emotions = {e: sum(float(turn["emotions"].get(e, 0.0) or 0.0) for turn in customer) / n for e in labels}
    sat = conv.get("satisfaction")
    if isinstance(sat, float) and sat != sat:  # NaN: a missing cell, not a satisfied customer
        sat = None
    if sat is not None:
        score = max(-1.0, min(1.0, float(sat) / 2.0))
    else:
        scores = [
            float(turn["polarity_score"]) for turn in customer if turn.get("polarity_score") is not None
        ]
        score = sum(scores) / len(scores) if scores else 0.0
    intens = [float(turn["intensity"]) for turn in customer if turn.get("intensity") is not None]
    rec.update(
        {
            "emotion": max(labels, key=emotions.__getitem__),
            "emotions": emotions,
            "polarity_score": score,
            "polarity": "negative"
            if score < -_NEUTRAL_BAND
            else ("positive" if score > _NEUTRAL_BAND else "neutral"),
            "intensity": sum(intens) / len(intens) if intens else None,
        }
    )
    return rec
