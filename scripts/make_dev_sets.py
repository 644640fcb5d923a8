#!/usr/bin/env python
"""Materialise emotag's held-out dev splits as files that `../shared/tools/cli_eval.py` can score.

    python scripts/make_dev_sets.py [--data ../shared/data] [--out runs/devsets]

The splits are the ones the default model's training holds out (emotag.train.corpora): hash-bucketed
10% of each review/chat corpus, 25% of CLUE, SMP2020 `*_eval`, CVAT fold 4 and STC-3 dialogues from
index 2960 on. ASAP restaurant samples (never trained on) stand in for a stars set, and the chat and
sentic sets for out-of-domain polarity. It prints the cli_eval command to run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.train import corpora  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--out", default="runs/devsets")
    a = ap.parse_args()
    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "clue_dev.jsonl", "w", encoding="utf-8") as f:
        for e in corpora.clue(data, 0.25):
            if e.split == "dev":
                f.write(json.dumps({"content": e.text, "label": e.emotions[0]}, ensure_ascii=False) + "\n")
    by_source: dict[str, list] = {}
    for reader in (corpora.reviews(data, 0.1), corpora.conversation_sentiment(data, 0.1), corpora.sentic(data, 0.1)):
        for e in reader:
            if e.split == "dev":
                by_source.setdefault(e.source, []).append(e)
    for source, exs in by_source.items():
        with open(out / f"{source}_dev.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["review", "label"])
            for e in exs:
                w.writerow([e.text, "1" if e.polarity == "positive" else "0"])
    with open(out / "asap_stars.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("text\tstars\n")
        for name in ("train_sample.csv", "dev_sample.csv", "test_sample.csv"):
            p = data / "asap_samples" / name
            if p.exists():
                with open(p, encoding="utf-8-sig", newline="") as g:
                    for r in csv.DictReader(g):
                        text = " ".join(r["reviewbody"].split()).replace("\t", " ")
                        f.write(f"{text}\t{int(float(r['star']))}\n")
    stc3 = data / "stc3_helpdesk" / "train_data_cn.json.gz"
    cmd = (f'python {data.parent / "tools" / "cli_eval.py"} ".venv/bin/emotag" '
           f"--clue {out / 'clue_dev.jsonl'} --polarity {out / 'shopping_dev.csv'} --stars {out / 'asap_stars.tsv'} "
           f"--stc3 {stc3}@{corpora.STC3_DEV_START}:")
    print(cmd)
    for source in by_source:
        print(f"  (also: --only polarity --polarity {out / f'{source}_dev.csv'})")


if __name__ == "__main__":
    main()
