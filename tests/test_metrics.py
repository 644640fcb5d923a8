"""emotag.metrics: the one home of the numbers eval, the trainer and fine-tuning report."""

from __future__ import annotations

import numpy as np
import pytest

from emotag.metrics import (
    accuracy,
    combine_windows,
    confusion,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    majority_rate,
    pearson,
    per_class,
    softmax,
)


def test_macro_f1_and_per_class_match_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    gold = rng.choice(labels, 200).tolist()
    pred = [g if rng.random() < 0.6 else rng.choice(labels) for g in gold]
    assert macro_f1(gold, pred, labels) == pytest.approx(sklearn.f1_score(gold, pred, average="macro"))
    ours = per_class(gold, pred, labels)
    rec = sklearn.recall_score(gold, pred, labels=labels, average=None)
    assert [ours[lab]["recall"] for lab in labels] == pytest.approx(rec.tolist())
    assert confusion(gold, pred, labels).tolist() == sklearn.confusion_matrix(gold, pred, labels=labels).tolist()


def test_hand_checked_cases() -> None:
    # a class never predicted has F1 0; macro-F1 averages over the labels asked for
    assert macro_f1(["a", "a", "b"], ["a", "a", "a"], ["a", "b"]) == pytest.approx((0.8 + 0.0) / 2)
    assert per_class(["a"], ["b"], ["a", "b"])["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert accuracy(["x", "y"], ["x", "x"]) == 0.5
    assert majority_rate(["p", "p", "n"], ["p", "n", "n", "n"]) == ("p", 0.25)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson([1, 1], [1, 2]) == 0.0


def test_combine_windows_is_the_length_weighted_sum_per_text() -> None:
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])  # text 0: windows 0, 1; text 1: window 2
    out = combine_windows(probs, np.array([0.75, 0.25, 1.0]), np.array([0, 2]))
    assert out.tolist() == [[0.75, 0.25], [0.5, 0.5]]
    assert combine_windows(np.array([0.2, 0.6, 1.0]), np.array([0.5, 0.5, 1.0]), np.array([0, 2])).tolist() == \
        pytest.approx([0.4, 1.0])


def test_temperature_recovers_an_overconfident_scale_and_lowers_ece() -> None:
    """Logits drawn so that softmax(z / 3) is calibrated: the fit finds T near 3, and ECE falls."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 6, (4000, 3))
    p_true = softmax(z, 3.0)
    y = np.array([rng.choice(3, p=p) for p in p_true])
    mask = np.eye(3)[y]
    t = fit_temperature(z, mask)
    assert 2.6 < t < 3.4
    assert expected_calibration_error(softmax(z, t), mask) < expected_calibration_error(softmax(z), mask) / 3
    # the same fit on windows: two identical windows per text give the same temperature
    first = np.arange(0, 8000, 2)
    assert fit_temperature(np.repeat(z, 2, 0), mask, np.full(8000, 0.5), first) == pytest.approx(t, rel=1e-3)
    assert fit_temperature(z[:0], mask[:0]) == 1.0
