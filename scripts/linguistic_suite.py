#!/usr/bin/env python
"""Score a model on the hand-written linguistic minimal-pair suite (issue #17): negation scope, double
negation, contrast, degree words, neutral questions and no-opinion texts, emoticons, domain reviews.

    python scripts/linguistic_suite.py [--model DIR] [--backend onnx|torch] [--suite TSV] [--json OUT]
                                       [--half tune|report] [--template-words]

The suite (`tests/data/linguistic_pairs.tsv`, columns group, text, expected_polarity, pair_id) is judged
on the record's `polarity` field (SPEC §2), so "neutral" means the model's polarity decision is neutral,
not a small score. Why per pair as well as per case: a model that calls everything positive passes half
of every negated/plain pair; a pair passes only when both members are right, which such a model cannot do.
It prints pass rates per group, overall, per pair, and every failing case with what the model said.
`tests/test_linguistic.py` imports this module and holds the pass-rate floors.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotag.labels import POLARITY  # noqa: E402

DEFAULT_SUITE = ROOT / "tests" / "data" / "linguistic_pairs.tsv"
COLUMNS = ("group", "text", "expected_polarity", "pair_id")


class SuiteError(ValueError):
    """A malformed suite file: the message names the file, the row and the problem."""


@dataclass(frozen=True)
class Case:
    group: str
    text: str
    expected: str
    pair_id: str


@dataclass
class Outcome:
    """One scored case: what was expected and what the model said."""

    case: Case
    polarity: str | None
    polarity_score: float | None
    emotion: str | None

    @property
    def passed(self) -> bool:
        return self.polarity == self.case.expected


@dataclass
class SuiteReport:
    """Pass rates of one model on the suite. Rates are fractions in [0, 1]."""

    overall: float
    groups: dict[str, float]
    group_sizes: dict[str, int]
    by_expected: dict[str, float]  # pass rate per expected polarity: "neutral" is the no-opinion recall
    pairs: float
    n_cases: int
    n_pairs: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_suite(path: str | Path = DEFAULT_SUITE) -> list[Case]:
    """Read and validate the suite; every pair_id must name exactly two cases."""
    path = Path(path)
    cases: list[Case] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise SuiteError(f"{path}: row 1: header must be {' '.join(COLUMNS)} (tab-separated), got {header}")
        for row_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise SuiteError(f"{path}: row {row_no}: expected {len(COLUMNS)} tab-separated fields, got {len(row)}")
            group, text, expected, pair_id = (x.strip() for x in row)
            if expected not in POLARITY:
                raise SuiteError(f"{path}: row {row_no}: expected_polarity {expected!r} is not one of {list(POLARITY)}")
            if not group or not text or not pair_id:
                raise SuiteError(f"{path}: row {row_no}: group, text and pair_id must all be non-empty")
            cases.append(Case(group, text, expected, pair_id))
    members: dict[str, int] = defaultdict(int)
    for c in cases:
        members[c.pair_id] += 1
    odd = sorted(p for p, n in members.items() if n != 2)
    if odd:
        raise SuiteError(f"{path}: pair_id {odd[0]!r} has {members[odd[0]]} members, every pair needs exactly 2")
    return cases


def score_cases(tagger: Any, cases: Sequence[Case], batch_size: int = 64) -> list[Outcome]:
    """Run every case through `tagger.tag_many` (an `emotag.Tagger`), in suite order."""
    results = tagger.tag_many([c.text for c in cases], batch_size=batch_size)
    return [Outcome(c, r.polarity, r.polarity_score, r.emotion) for c, r in zip(cases, results, strict=True)]


def summarise(outcomes: Iterable[Outcome]) -> SuiteReport:
    """Pass rates per group, overall and per pair (both members right), plus the failing cases."""
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("no cases to summarise")
    by_group: dict[str, list[bool]] = defaultdict(list)
    by_pair: dict[str, list[bool]] = defaultdict(list)
    by_expected: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        by_group[o.case.group].append(o.passed)
        by_expected[o.case.expected].append(o.passed)
        by_pair[o.case.pair_id].append(o.passed)
    failures = [
        {"group": o.case.group, "pair_id": o.case.pair_id, "text": o.case.text, "expected": o.case.expected,
         "polarity": o.polarity, "polarity_score": o.polarity_score, "emotion": o.emotion}
        for o in outcomes if not o.passed
    ]
    return SuiteReport(
        overall=sum(o.passed for o in outcomes) / len(outcomes),
        groups={g: sum(v) / len(v) for g, v in by_group.items()},
        group_sizes={g: len(v) for g, v in by_group.items()},
        by_expected={p: sum(v) / len(v) for p, v in sorted(by_expected.items())},
        pairs=sum(all(v) for v in by_pair.values()) / len(by_pair),
        n_cases=len(outcomes),
        n_pairs=len(by_pair),
        failures=failures,
    )


def format_report(report: SuiteReport) -> str:
    lines = [f"{'group':<16} {'n':>4} {'pass':>6}"]
    for g, rate in report.groups.items():
        lines.append(f"{g:<16} {report.group_sizes[g]:>4} {rate:>6.1%}")
    lines.append(f"{'overall':<16} {report.n_cases:>4} {report.overall:>6.1%}")
    lines.append(f"{'pairs (both ok)':<16} {report.n_pairs:>4} {report.pairs:>6.1%}")
    lines.append("by expected polarity: " + ", ".join(f"{p} {r:.1%}" for p, r in report.by_expected.items()))
    if report.failures:
        lines.append(f"\nfailing cases ({len(report.failures)}):")
        for f in report.failures:
            score = "null" if f["polarity_score"] is None else f"{f['polarity_score']:+.2f}"
            lines.append(f"  [{f['group']}/{f['pair_id']}] {f['text']}  expected {f['expected']}, got "
                         f"{f['polarity']} {score} ({f['emotion']})")
    return "\n".join(lines)


def suite_half(case: Case) -> str:
    """The half of the suite a case belongs to, by its pair: "tune" (crc32 of the pair id even), which model
    choices may read, or "report", which only measures. Both members of a pair share a half."""
    return "tune" if zlib.crc32(case.pair_id.encode("utf-8")) % 2 == 0 else "report"


COMPOSITIONAL_GROUPS = ("negation", "double_negation", "contrast")


def template_word_split(outcomes: Iterable[Outcome]) -> dict[str, tuple[int, int]]:
    """(passed, cases) on the negation, double-negation and contrast cases, split by whether the text holds
    an opinion word of the training templates (emotag.train.compositional). Why: the templates share the
    suite's common words (难吃, 失望) but no sentence; the split says whether a model learnt the operators or
    the words."""
    from emotag.train.compositional import DOMAINS, FEEL_NEG, FEEL_POS

    # every opinion word, one-character ones too (差, 卡, 慢): a case counts as new only if it shares none
    words = {w for d in DOMAINS.values() for part in d[1:] for w in part} | set(FEEL_POS + FEEL_NEG)
    out = {"shares a template word": [0, 0], "no template word": [0, 0]}
    for o in outcomes:
        if o.case.group in COMPOSITIONAL_GROUPS:
            key = "shares a template word" if any(w in o.case.text for w in words) else "no template word"
            out[key][0] += o.passed
            out[key][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv: list[str] | None = None) -> SuiteReport:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--backend", default="onnx", help="onnx (int8 when present), onnx-fp32, onnx-int8 or torch")
    ap.add_argument("--suite", default=str(DEFAULT_SUITE), help=f"suite TSV (default: {DEFAULT_SUITE})")
    ap.add_argument("--json", default=None, help="also write the report (rates and failing cases) here")
    ap.add_argument("--half", choices=("all", "tune", "report"), default="all",
                    help="score one half of the pairs (suite_half): tune for choices, report to measure")
    ap.add_argument("--template-words", action="store_true",
                    help="also print the compositional groups split by the training templates' words")
    a = ap.parse_args(argv)
    from emotag import Tagger

    try:
        cases = load_suite(a.suite)
    except (SuiteError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if a.half != "all":
        cases = [c for c in cases if suite_half(c) == a.half]
    outcomes = score_cases(Tagger.load(a.model, backend=a.backend), cases)
    report = summarise(outcomes)
    print(format_report(report))
    if a.template_words:
        for k, (passed, n) in template_word_split(outcomes).items():
            print(f"{k:24s} {passed}/{n} = {passed / max(n, 1):.1%}")
    if a.json:
        Path(a.json).write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
