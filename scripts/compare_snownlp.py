#!/usr/bin/env python
"""Polarity accuracy of SnowNLP vs emotag on held-out review sets (files made by make_dev_sets.py).

    python scripts/compare_snownlp.py runs/devsets/shopping_dev.csv runs/devsets/hotel_dev.csv ...

Each file is a CSV with `review,label` (1 = positive). SnowNLP counts as positive when sentiments > 0.5,
emotag when polarity_score > 0 (the same rule as ../shared/tools/cli_eval.py).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def accuracy(pred: list[bool], gold: list[bool]) -> float:
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--model", default=None)
    a = ap.parse_args()
    from snownlp import SnowNLP

    from emotag import Tagger

    tagger = Tagger.load(a.model)
    print("| set | n | SnowNLP acc | emotag acc |")
    print("|---|---|---|---|")
    for path in a.files:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("review")]
        gold = [r["label"] == "1" for r in rows]
        snow = [SnowNLP(r["review"]).sentiments > 0.5 for r in rows]
        ours = [(x.polarity_score or 0) > 0 for x in tagger.tag_many([r["review"] for r in rows])]
        print(f"| {Path(path).stem} | {len(rows)} | {accuracy(snow, gold):.3f} | {accuracy(ours, gold):.3f} |")


if __name__ == "__main__":
    main()
