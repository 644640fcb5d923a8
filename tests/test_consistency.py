"""Consistent outputs (issue #17, docs/taxonomy.md): polarity, polarity_score and emotion agree.

The rule under test: the polarity is the polarity heads' decision; the emotion is the most probable of the
emotions compatible with it (never anger/sadness/disgust/fear with positive, never like/happiness with
negative, only neutral/surprise with neutral); a neutral polarity's |polarity_score| is at most the
config's `neutral_score_band`. `emotions` (the distribution) is left as the model gives it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from emotag import Tagger
from emotag.labels import EMOTIONS, POLARITY
from emotag.model.config import EmotagConfig
from emotag.tagger import emotion_polarity_table, neutral_polarity_score

# the rule restated independently of the code under test
POSITIVE_EMOTIONS = {"like", "happiness"}
NEGATIVE_EMOTIONS = {"sadness", "anger", "disgust", "fear"}


def disagreements(r, band: float) -> list[str]:
    """Why a record breaks the rule (empty = consistent)."""
    why = []
    if r.polarity == "positive" and r.emotion in NEGATIVE_EMOTIONS:
        why.append(f"{r.emotion} with positive polarity")
    if r.polarity == "negative" and r.emotion in POSITIVE_EMOTIONS:
        why.append(f"{r.emotion} with negative polarity")
    if r.polarity == "neutral" and r.emotion not in {"neutral", "surprise"}:
        why.append(f"{r.emotion} with neutral polarity")
    if r.polarity == "neutral" and abs(r.polarity_score) > band + 1e-9:
        why.append(f"neutral polarity with score {r.polarity_score:+.3f}")
    if (r.polarity == "positive" and r.polarity_score <= 0) or (r.polarity == "negative" and r.polarity_score >= 0):
        why.append(f"{r.polarity} polarity with score {r.polarity_score:+.3f}")
    return why


def fake_tagger(emotion_labels=EMOTIONS, blend: float = 0.5, band: float = 0.4) -> Tagger:
    """A Tagger whose read-out (_results) runs on probability vectors we choose; no network involved."""
    cfg = EmotagConfig(emotion_labels=tuple(emotion_labels), polarity_valence_blend=blend, neutral_score_band=band)
    return Tagger(SimpleNamespace(config=cfg), backend=None)


def read_out(tagger: Tagger, emo, pol, valence=0.0):
    """One text's (emotion, emotions, polarity, score, intensity) from its emotion and polarity probabilities."""
    emo = np.asarray([emo], dtype=np.float64)
    pol = np.asarray([pol], dtype=np.float64)
    return next(tagger._results(emo, pol, np.array([0.5]), np.array([valence])))


def probs(**kw: float) -> list[float]:
    return [kw.get(e, 0.0) for e in EMOTIONS]


def test_table_matches_the_documented_rule():
    t = emotion_polarity_table(EMOTIONS, POLARITY)
    allowed = {p: {e for e, ok in zip(EMOTIONS, row, strict=True) if ok} for p, row in zip(POLARITY, t, strict=True)}
    assert allowed == {
        "negative": {"neutral", "sadness", "anger", "disgust", "fear", "surprise"},
        "neutral": {"neutral", "surprise"},
        "positive": {"neutral", "like", "happiness", "surprise"},
    }


def test_table_is_off_for_label_sets_outside_the_taxonomy():
    assert emotion_polarity_table(("咨询", "投诉", "表扬"), POLARITY) is None
    assert emotion_polarity_table(EMOTIONS, ("bad", "good")) is None
    # a subset of the taxonomy keeps the rule; a polarity none of its emotions agrees with constrains nothing
    t = emotion_polarity_table(("like", "anger"), POLARITY)
    assert t.tolist() == [[False, True], [True, True], [True, False]]


@pytest.mark.parametrize(
    "emo, pol, expected",
    [
        (probs(anger=0.7, like=0.2, neutral=0.1), [0.3, 0.1, 0.6], "like"),  # anger + positive -> like
        (probs(happiness=0.8, sadness=0.15, neutral=0.05), [0.7, 0.1, 0.2], "sadness"),  # happy + negative
        (probs(like=0.6, neutral=0.3, disgust=0.1), [0.6, 0.2, 0.2], "neutral"),  # neutral beats disgust
        (probs(anger=0.9, surprise=0.06, neutral=0.04), [0.2, 0.5, 0.3], "surprise"),  # neutral polarity
        (probs(sadness=0.5, neutral=0.4, surprise=0.1), [0.2, 0.6, 0.2], "neutral"),
        (probs(anger=0.5, disgust=0.4, neutral=0.1), [0.8, 0.1, 0.1], "anger"),  # agreeing: the plain argmax
        (probs(surprise=0.7, like=0.3), [0.8, 0.1, 0.1], "surprise"),  # surprise goes with any polarity
    ],
)
def test_emotion_is_the_most_probable_compatible_one(emo, pol, expected):
    emotion, emotions, polarity, _, _ = read_out(fake_tagger(), emo, pol)
    assert emotion == expected
    assert polarity == POLARITY[int(np.argmax(pol))]  # the polarity is never changed by the rule
    assert list(emotions.values()) == pytest.approx(emo)  # nor the distribution


def test_custom_label_sets_keep_the_plain_argmax():
    t = fake_tagger(emotion_labels=("咨询", "投诉", "表扬"))
    emotion, *_ = read_out(t, [0.1, 0.2, 0.7], [0.8, 0.1, 0.1])
    assert emotion == "表扬"


@pytest.mark.parametrize("valence", [-1.0, -0.3, 0.0, 0.6, 1.0])
def test_neutral_polarity_score_stays_in_band_and_keeps_its_sign(valence):
    pol = [0.3, 0.45, 0.25]  # neutral wins, margin -0.05
    _, _, polarity, score, _ = read_out(fake_tagger(band=0.4), probs(neutral=1.0), pol, valence)
    _, _, _, unclipped, _ = read_out(fake_tagger(band=1.0), probs(neutral=1.0), pol, valence)
    assert polarity == "neutral"
    assert abs(score) <= 0.4
    assert np.sign(score) == np.sign(unclipped)
    if abs(unclipped) <= 0.4:
        assert score == unclipped  # inside the band nothing moves


def test_opinionated_scores_are_not_clipped():
    _, _, polarity, score, _ = read_out(fake_tagger(band=0.1), probs(like=1.0), [0.05, 0.05, 0.9], 1.0)
    assert polarity == "positive" and score > 0.9


def test_neutral_polarity_score_function():
    assert neutral_polarity_score(0.7, 0.4) == 0.4
    assert neutral_polarity_score(-0.7, 0.4) == -0.4
    assert neutral_polarity_score(0.12, 0.4) == 0.12
    assert neutral_polarity_score(0.3, -1.0) == 0.0  # a negative band is an empty one, not a sign flip


def test_random_probabilities_always_give_consistent_records():
    """2,000 random (emotion, polarity, valence) read-outs: every record obeys the rule, and the emotion
    differs from the plain argmax only where the argmax would have disagreed."""
    rng = np.random.default_rng(0)
    n = 2000
    emo = rng.dirichlet(np.full(len(EMOTIONS), 0.5), n)
    pol = rng.dirichlet(np.full(len(POLARITY), 0.7), n)
    val = rng.uniform(-1, 1, n)
    t = fake_tagger()
    rows = list(t._results(emo, pol, np.full(n, 0.5), val))
    changed = 0
    for k, (emotion, _, polarity, score, _) in enumerate(rows):
        r = SimpleNamespace(emotion=emotion, polarity=polarity, polarity_score=score)
        assert not disagreements(r, 0.4), (k, disagreements(r, 0.4))
        argmax = EMOTIONS[int(emo[k].argmax())]
        if emotion != argmax:
            changed += 1
            plain = SimpleNamespace(emotion=argmax, polarity=polarity, polarity_score=score)
            assert disagreements(plain, 0.4), "the rule changed an emotion that already agreed"
    assert changed > 100  # random heads disagree often: the rule was exercised


def test_bundled_model_records_on_the_linguistic_suite_are_consistent(bundled_model_dir):
    from tests.test_linguistic import suite

    tagger = Tagger.load(bundled_model_dir)
    band = tagger.config.neutral_score_band
    texts = [c.text for c in suite.load_suite()]
    bad = [(t, r.emotion, r.polarity, r.polarity_score, disagreements(r, band))
           for t, r in zip(texts, tagger.tag_many(texts), strict=True) if disagreements(r, band)]
    assert not bad, bad
