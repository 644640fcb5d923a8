"""Support conversations (SPEC §3): per-turn results for customer turns plus conversation outcomes.

Satisfaction is a linear read-out of customer-turn statistics (mean, last, first and lowest polarity,
mean anger, ...), fitted on STC-3 training dialogues against the annotators' mean S score and stored in the
model's config, so a fine-tuned model can carry its own read-out. Models that ship dialogue_lexical.npy add
one more statistic, `lexical_satisfaction`: a TF-IDF ridge over the customer turns' character n-grams,
which catches service-specific cues ("还没解决", "谢谢") that per-turn emotion scores miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotag.io import UnreadableRecord
from emotag.model.config import DIALOGUE_LEXICAL_NAME
from emotag.model.features import Featurizer, hash_ngrams, tfidf_dot
from emotag.profiles.timeutil import TimeParseError, parse_time
from emotag.tagger import Result, Tagger
from emotag.text.normalize import normalize

CUSTOMER = "customer"


@dataclass(frozen=True)
class Speakers:
    """Which turns are the customer's: outcomes are read from those turns only.

    By default a turn whose `speaker` is `customer` (any case). Transcripts that name their speakers (a TV
    script, a CPED export, a chat log with nicknames) say who is who: `customer` lists the customer's names,
    or `agent` lists the agents' names and every other named speaker is the customer. Names match exactly,
    ignoring case and surrounding spaces.
    """

    customer: frozenset[str] = frozenset({CUSTOMER})
    agent: frozenset[str] = frozenset()

    @classmethod
    def from_names(cls, customer: Iterable[str] = (), agent: Iterable[str] = ()) -> Speakers:
        """From the CLI's comma-separated lists; both empty means the default."""
        cust = frozenset(_speaker_key(n) for n in customer if _speaker_key(n))
        ag = frozenset(_speaker_key(n) for n in agent if _speaker_key(n))
        both = sorted(cust & ag)
        if both:
            raise ValueError(f"speaker {both[0]!r} is named as both customer and agent")
        if not cust and not ag:
            return cls()
        return cls(customer=cust, agent=ag)

    def is_customer(self, speaker: Any) -> bool:
        key = _speaker_key(speaker)
        if not key:
            return False
        if self.customer:
            return key in self.customer
        return key not in self.agent


def _speaker_key(name: Any) -> str:
    return "" if name is None else str(name).strip().casefold()


@dataclass
class Conversation:
    id: str | int
    turns: list[dict[str, Any]]
    user_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def conversations_from_records(records: Iterable[dict[str, Any] | UnreadableRecord]) -> Iterator[Conversation]:
    """Accept nested conversations (`turns`) or a flat turn table (`conversation_id`, `speaker`, `text`, `time`).

    Flat rows are grouped by `conversation_id` wherever they stand: an export sorted by time interleaves its
    conversations (a, b, a, b), and grouping only consecutive rows cut each one into fragments with the same
    id, most of them without a customer turn. The flat conversations are therefore yielded once the input
    is read, in the order their ids first appear, and a flat table is held in memory (its turns only;
    nested conversations stream). A nested or unreadable record is yielded in its place, so every input
    record still has its output record, as is a flat row with an empty `conversation_id` (an error record
    whose id is the row's 0-based position, as a nested record without `id` gets).
    """
    flat: dict[Any, Conversation] = {}
    seen: set[str] = set()  # turn columns any flat row had (a JSONL line may leave one out: a system event)
    for i, rec in enumerate(records):
        if isinstance(rec, UnreadableRecord):
            yield Conversation(rec.index, [], None, error=rec.error)
            continue
        if "turns" in rec or "conversation_id" not in rec:
            cid = rec.get("id", i)
            turns = rec.get("turns")
            if not isinstance(turns, list):
                yield Conversation(cid, [], rec.get("user_id"), error="no 'turns' list")
                continue
            bad = [j for j, t in enumerate(turns) if not isinstance(t, dict)]
            if bad:
                yield Conversation(cid, [], rec.get("user_id"), error=f"turn {bad[0]} is not an object")
                continue
            yield Conversation(cid, turns, rec.get("user_id"))
            continue
        cid = rec["conversation_id"]
        if _no_id(cid):
            # not one conversation of all the id-less rows (they were merged and scored as one dialogue):
            # each is an error record of its own, so the summary counts them and nothing is lost unseen;
            # it waits with the flat conversations, so the output keeps the table's order
            flat[("row", i)] = Conversation(i, [], rec.get("user_id"), error="no conversation_id")
            continue
        seen.update(c for c in ("speaker", "text") if c in rec)
        key = (type(cid).__name__, cid) if isinstance(cid, (str, int, float)) else ("repr", repr(cid))
        conv = flat.get(key)
        if conv is None:
            conv = flat[key] = Conversation(cid, [], rec.get("user_id"))
        # a flat table's own turn ids (an `id` column) are the turns' ids, as a nested turn's `id` field is
        conv.turns.append({k: rec.get(k) for k in ("speaker", "text", "time", "id") if k != "id" or k in rec})
    missing = [c for c in ("speaker", "text") if c not in seen]
    for conv in flat.values():
        if missing and conv.error is None:  # no row had the column: say so, not "no scorable customer turn"
            conv.turns, conv.error = [], f"flat turn table has no {' or '.join(map(repr, missing))} column"
        yield conv


def _no_id(cid: Any) -> bool:
    """An empty conversation_id cell: null, blank text, or NaN (a typed format's empty number cell)."""
    if cid is None:
        return True
    if isinstance(cid, str):
        return not cid.strip()
    return isinstance(cid, float) and cid != cid


def dialogue_grams(featurizer: Featurizer, texts: Iterable[Any]) -> np.ndarray:
    """The n-gram ids of a conversation's customer turns (normalised as for scoring), pooled."""
    cfg = featurizer.config
    parts = []
    for t in texts:
        if isinstance(t, str):
            norm = normalize(t, cfg.normalization).text  # no sentence windows: the whole turn counts
            if norm:
                parts.append(hash_ngrams(norm, cfg.ngram))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def load_dialogue_lexicon(tagger: Tagger) -> np.ndarray | None:
    """(idf, weight) rows of the dialogue TF-IDF ridge, or None when the model has none."""
    n = tagger.config.dialogue.lexical_buckets
    if not n:
        return None
    path = (tagger.model_dir / DIALOGUE_LEXICAL_NAME) if tagger.model_dir else None
    if path is None or not path.exists():
        raise FileNotFoundError(f"{tagger.model_dir}: config.json names a dialogue lexicon but "
                                f"{DIALOGUE_LEXICAL_NAME} is missing")
    arr = np.load(path, allow_pickle=False)
    if arr.shape != (2, n):
        raise ValueError(f"{path}: expected shape (2, {n}), got {arr.shape}")
    return arr


_LABEL_FREE = frozenset({"mean_polarity", "last_polarity", "first_polarity", "min_polarity", "max_polarity",
                         "mean_intensity", "last_intensity", "log_turns", "lexical_satisfaction"})


def readout_fits(features: Iterable[str], emotion_labels: Iterable[str], has_polarity: bool) -> bool:
    """Whether a model with these heads computes every statistic a satisfaction read-out uses. A read-out
    fit on the taxonomy's emotions means nothing on a model fine-tuned to other labels (its `last_like`
    would always be 0), and the polarity statistics need a polarity head."""
    labels = set(emotion_labels)
    producible = set(_LABEL_FREE) | {f"{k}_{lab}" for lab in labels for k in ("mean", "last")}
    if labels & {"anger", "disgust"}:
        producible.add("mean_anger")
    feats = set(features)
    return feats <= producible and (has_polarity or not feats & {f for f in _LABEL_FREE if "polarity" in f})


def _features(results: list[Result]) -> dict[str, float]:
    ok = [r for r in results if r.error is None and r.polarity_score is not None]
    if not ok:
        return {}
    pol = [r.polarity_score for r in ok]
    feats = {
        "mean_polarity": float(np.mean(pol)),
        "last_polarity": pol[-1],
        "first_polarity": pol[0],
        "min_polarity": float(min(pol)),
        "max_polarity": float(max(pol)),
        "mean_intensity": float(np.mean([r.intensity or 0.0 for r in ok])),
        "last_intensity": ok[-1].intensity or 0.0,
        "log_turns": float(np.log1p(len(ok))),
    }
    emos = [r.emotions or {} for r in ok]
    feats["mean_anger"] = float(np.mean([e.get("anger", 0.0) + e.get("disgust", 0.0) for e in emos]))
    for lab in emos[0]:
        feats[f"mean_{lab}"] = float(np.mean([e.get(lab, 0.0) for e in emos]))
        feats[f"last_{lab}"] = float(emos[-1].get(lab, 0.0))
    return feats


def satisfaction_features(results: list[Result], grams: np.ndarray | None = None,
                          lexicon: np.ndarray | None = None) -> dict[str, float]:
    """The statistics the satisfaction read-out uses (exposed so training can refit it)."""
    feats = _features(results)
    if feats and lexicon is not None and grams is not None:
        feats["lexical_satisfaction"] = float(tfidf_dot(grams, lexicon[0], lexicon[1]))
    return feats


def turn_order(turns: list[dict[str, Any]]) -> list[int]:
    """The turns' positions in the order they were said: by `time` when every turn has one that parses,
    else as given. Why: SPEC §3's start and end emotion and `resolved` compare the first turn with the
    last, and a flat export sorted by another column (agent, channel) or a ticket system's newest-first
    list would otherwise swap them. The sort is stable (turns at the same second keep their order), and a
    single turn without a readable time keeps the file's order for the whole conversation: half a clock
    is no clock."""
    times = []
    for t in turns:
        try:
            times.append(parse_time(t.get("time")))
        except (TimeParseError, TypeError, ValueError, OverflowError):
            return list(range(len(turns)))
    return sorted(range(len(turns)), key=times.__getitem__)


def score_conversations(
    tagger: Tagger, conversations: Iterable[Conversation], batch_size: int = 64, speakers: Speakers | None = None
) -> Iterator[dict[str, Any]]:
    """One output record per conversation, in input order; `speakers` says which turns are the customer's."""
    speakers = speakers or Speakers()
    cfg = tagger.config.dialogue
    lexicon = load_dialogue_lexicon(tagger)
    for conv in conversations:
        base = {"id": conv.id, "user_id": conv.user_id}
        if conv.error:
            yield {**base, "turns": [], "satisfaction": None, "start_emotion": None, "end_emotion": None,
                   "resolved": None, "error": conv.error}
            continue
        # a turn's id (SPEC §2): its own `id` field, else its 0-based position among all the turns
        order = turn_order(conv.turns)
        cust_at = [j for j in order if speakers.is_customer(conv.turns[j].get("speaker"))]
        cust = [conv.turns[j] for j in cust_at]
        results = list(tagger.tag_many([t.get("text") for t in cust], batch_size=batch_size,
                                       ids=[t.get("id", j) for j, t in zip(cust_at, cust, strict=True)]))
        turns = [{"speaker": CUSTOMER, "time": t.get("time"), **r.to_dict()}
                 for t, r in zip(cust, results, strict=True)]
        ok = [r for r in results if r.error is None]
        grams = dialogue_grams(tagger.featurizer, [t.get("text") for t in cust]) if lexicon is not None else None
        feats = satisfaction_features(results, grams, lexicon)
        if not feats:
            why = ("no scorable customer turn" if not ok else
                   "this model has no polarity head, which conversation outcomes are read from")
            yield {**base, "turns": turns, "satisfaction": None, "start_emotion": None, "end_emotion": None,
                   "resolved": None, "error": why}
            continue
        sat = cfg.bias + sum(w * feats.get(f, 0.0) for f, w in zip(cfg.features, cfg.weights, strict=True))
        # "improved from the first customer turn to the last" (SPEC §3) needs two of them: with one, the
        # answer is unknown (null), not "did not improve" (false was counted as an unresolved contact)
        polar = sum(1 for r in results if r.error is None and r.polarity_score is not None)
        resolved = bool(feats["last_polarity"] > feats["first_polarity"]) if polar >= 2 else None
        last_time = next((conv.turns[j].get("time") for j in reversed(order) if conv.turns[j].get("time")), None)
        yield {
            **base,
            "time": last_time,
            "turns": turns,
            "satisfaction": round(float(np.clip(sat, -2.0, 2.0)), 6) if cfg.features else None,
            "start_emotion": ok[0].emotion,
            "end_emotion": ok[-1].emotion,
            "resolved": resolved,
            "error": None if cfg.features else "this model has no satisfaction read-out (see its MODEL_CARD.md)",
        }
