"""The hand-written linguistic minimal-pair suite (issue #17) as a regression floor for the bundled model.

Cases live in tests/data/linguistic_pairs.tsv; scripts/linguistic_suite.py loads and scores them. A case
passes when the record's `polarity` equals the expected one; a pair passes when both members do.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from emotag import Tagger

# ---- pass-rate floors: the ONE place to change them --------------------------------------------------
# Set 0.02 below what the bundled model v0.6.0 scores (negation 0.912, double_negation 0.650, contrast 0.854,
# degree 1.000, neutral 0.838, emoticon 1.000, domain 0.964, overall 0.881, pairs 0.776;
# v0.5.0 scored 0.765 / 0.500 / 0.688 / 1.000 / 0.750 / 1.000 / 0.929, overall 0.780, pairs 0.587;
# v0.4.1 scored 0.735 / 0.450 / 0.646 / 1.000 / 0.700 / 0.950 / 0.964, overall 0.748, pairs 0.538).
# A regression floor, not the goal: issue #17 asks for >= 0.90 overall, which no model here reaches
# (MODEL_CARD.md lists the failing cases). Raise them when a better model lands.
GROUP_FLOORS: dict[str, float] = {
    "negation": 0.89,
    "double_negation": 0.63,
    "contrast": 0.83,
    "degree": 0.98,
    "neutral": 0.81,
    "emoticon": 0.98,
    "domain": 0.94,
}
OVERALL_FLOOR = 0.86
PAIR_FLOOR = 0.75
# -------------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("linguistic_suite", ROOT / "scripts" / "linguistic_suite.py")
suite = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("linguistic_suite", suite)  # dataclasses look their module up there
_spec.loader.exec_module(suite)


@pytest.fixture(scope="module")
def cases():
    return suite.load_suite()


@pytest.fixture(scope="module")
def report(bundled_model_dir, cases):
    return suite.summarise(suite.score_cases(Tagger.load(bundled_model_dir), cases))


def test_suite_shape(cases):
    """The suite the issue asks for: >= 220 cases, negation >= 60, contrast >= 40, neutral >= 40, in pairs."""
    groups = Counter(c.group for c in cases)
    assert len(cases) >= 220
    assert groups["negation"] >= 60 and groups["contrast"] >= 40 and groups["neutral"] >= 40, groups
    assert set(groups) == set(GROUP_FLOORS), "every group needs a floor (and every floor a group)"
    texts = Counter(c.text for c in cases)
    assert not [t for t, n in texts.items() if n > 1], "duplicate texts"
    assert sum(c.expected == "neutral" for c in cases) >= 40  # no-opinion texts, not only their partners


def test_every_pair_differs_in_text_and_stays_in_its_group(cases):
    by_pair: dict[str, list] = {}
    for c in cases:
        by_pair.setdefault(c.pair_id, []).append(c)
    for pid, (a, b) in by_pair.items():
        assert a.group == b.group, pid
        assert a.text != b.text, pid


@pytest.mark.parametrize("group", sorted(GROUP_FLOORS))
def test_group_floor(report, group):
    failing = [f["text"] for f in report.failures if f["group"] == group]
    assert report.groups[group] >= GROUP_FLOORS[group], f"{group}: {report.groups[group]:.3f}; failing: {failing}"


def test_overall_and_pair_floors(report):
    assert report.overall >= OVERALL_FLOOR, suite.format_report(report)
    assert report.pairs >= PAIR_FLOOR, suite.format_report(report)


def test_summary_counts_a_pair_only_when_both_members_pass():
    C, Out = suite.Case, suite.Outcome
    outcomes = [
        Out(C("negation", "不难吃", "positive", "p1"), "positive", 0.5, "like"),
        Out(C("negation", "难吃", "negative", "p1"), "positive", 0.4, "like"),  # wrong: pair p1 fails
        Out(C("neutral", "请问几点开门", "neutral", "p2"), "neutral", 0.0, "neutral"),
        Out(C("neutral", "开门太晚了", "negative", "p2"), "negative", -0.6, "anger"),
    ]
    r = suite.summarise(outcomes)
    assert (r.overall, r.pairs, r.groups) == (0.75, 0.5, {"negation": 0.5, "neutral": 1.0})
    assert r.by_expected == {"negative": 0.5, "neutral": 1.0, "positive": 1.0}
    assert [f["text"] for f in r.failures] == ["难吃"]
    assert "难吃  expected negative, got positive +0.40 (like)" in suite.format_report(r)


def test_halves_keep_pairs_together_and_split_the_suite(cases):
    """Model choices read the tune half only; a pair never straddles the halves, and both are sizeable."""
    half = {}
    for c in cases:
        assert half.setdefault(c.pair_id, suite.suite_half(c)) == suite.suite_half(c)
    counts = Counter(half.values())
    assert set(counts) == {"tune", "report"} and min(counts.values()) > 0.4 * len(half)


def test_template_word_split_counts_one_character_words():
    """差 and 卡 are template words: a case holding one is not counted as new to the templates."""
    C, Out = suite.Case, suite.Outcome
    outcomes = [
        Out(C("negation", "味道不差", "positive", "p1"), "positive", 0.5, "like"),
        Out(C("negation", "这台打印机不卡纸", "positive", "p2"), "negative", -0.5, "anger"),
        Out(C("contrast", "开头无聊，后面越看越精彩", "positive", "p3"), "positive", 0.3, "like"),
        Out(C("neutral", "请问几点开门", "neutral", "p4"), "neutral", 0.0, "neutral"),  # not a compositional group
    ]
    split = suite.template_word_split(outcomes)
    assert split == {"shares a template word": (1, 2), "no template word": (1, 1)}


@pytest.mark.parametrize(
    "body, problem",
    [
        ("negation\t不难吃\tgood\tp1\nnegation\t难吃\tnegative\tp1\n", "row 2: expected_polarity 'good'"),
        ("negation\t不难吃\tpositive\nnegation\t难吃\tnegative\tp1\n", "row 2: expected 4 tab-separated fields"),
        ("negation\t不难吃\tpositive\tp1\nnegation\t难吃\tnegative\tp2\n", "pair_id 'p1' has 1 members"),
        ("negation\t\tpositive\tp1\nnegation\t难吃\tnegative\tp1\n", "row 2: group, text and pair_id"),
    ],
)
def test_malformed_suite_names_file_and_row(tmp_path, body, problem):
    path = tmp_path / "suite.tsv"
    path.write_text("group\ttext\texpected_polarity\tpair_id\n" + body, encoding="utf-8")
    with pytest.raises(suite.SuiteError) as e:
        suite.load_suite(path)
    assert str(e.value).startswith(f"{path}: ") and problem in str(e.value)


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "suite.tsv"
    path.write_text("text\tlabel\n不难吃\tpositive\n", encoding="utf-8")
    with pytest.raises(suite.SuiteError, match="row 1: header must be"):
        suite.load_suite(path)


def test_script_writes_json_report(bundled_model_dir, tmp_path, capsys):
    small = tmp_path / "small.tsv"
    small.write_text("group\ttext\texpected_polarity\tpair_id\n"
                     "degree\t这家的烤鸭太好吃了\tpositive\td\ndegree\t这家的烤鸭太难吃了\tnegative\td\n", encoding="utf-8")
    out = tmp_path / "r.json"
    suite.main(["--model", str(bundled_model_dir), "--suite", str(small), "--json", str(out)])
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["n_cases"] == 2 and data["n_pairs"] == 1 and data["overall"] == 1.0 and data["failures"] == []
    assert "overall" in capsys.readouterr().out
