#!/usr/bin/env python
"""Materialise emotag's held-out dev splits, in two halves, as files `../shared/tools/cli_eval.py` scores.

    python scripts/make_dev_sets.py [--data ../shared/data] [--out runs/devsets]

Every dev split the default model's training holds out (emotag.train.corpora: hash-bucketed 10% of each
review/chat corpus, 25% of CLUE, SMP2020 `*_eval`, CVAT fold 4, the ASTE `dev.jsonl`, STC-3 dialogues from
index 2960 on) is cut into a **tune** half, on which every choice of the recipe is made (early stopping,
fusion scales, temperatures), and a **report** half that nothing touches until the final measurement
(`corpora.dev_half_of`). Files: `<set>_tune.*` and `<set>_report.*`. ASAP restaurant samples (never
trained on, 300 texts) stand in for a stars set. ASTE sentences whose triples are all positive or all
negative make a restaurant-domain polarity set (the closest to the food-delivery row). It prints the
cli_eval commands to run on each half.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.train import corpora  # noqa: E402

HALVES = ("tune", "report")
STC3_SPLIT = 3330  # dialogues [2960, 3330) tune, [3330, end) report


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE,
                       escapechar="\\" if delimiter != "," else None)
        w.writerow(header)
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    ap.add_argument("--out", default="runs/devsets")
    a = ap.parse_args()
    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    half = corpora.dev_half_of

    for domain in ("usual", "virus"):
        with open(data / "smp2020_ewect" / f"{domain}_eval.tsv", encoding="utf-8-sig", newline="") as f:
            rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r.get("text")]
        for h in HALVES:
            sel = [[r["text"].replace("\t", " "), r["label"]] for r in rows if half(r["text"]) == h]
            _write_csv(out / f"smp_{domain}_{h}.tsv", ["text", "label"], sel, "\t")

    clue = [e for e in corpora.clue(data, 0.25) if e.split == "dev"]
    for h in HALVES:
        with open(out / f"clue_{h}.jsonl", "w", encoding="utf-8") as f:
            for e in clue:
                if half(e.text) == h:
                    f.write(json.dumps({"content": e.text, "label": e.emotions[0]}, ensure_ascii=False) + "\n")

    by_source: dict[str, list] = {}
    for reader in (corpora.reviews(data, 0.1), corpora.conversation_sentiment(data, 0.1), corpora.sentic(data, 0.1),
                   corpora.aste(data)):
        for e in reader:
            if e.split == "dev" and e.polarity in ("positive", "negative"):
                by_source.setdefault(e.source, []).append(e)
    for source, exs in by_source.items():
        for h in HALVES:
            rows = [[e.text, "1" if e.polarity == "positive" else "0"] for e in exs if half(e.text) == h]
            _write_csv(out / f"{source}_{h}.csv", ["review", "label"], rows)

    with open(data / "cvat" / "CVAT_4_SD.tsv", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        cvat = list(reader)
    ti = header.index("Text")
    for h in HALVES:
        _write_csv(out / f"cvat_{h}.tsv", header, [r for r in cvat if half(r[ti]) == h], "\t")

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
    tool = data.parent / "tools" / "cli_eval.py"
    spans = {"tune": f"{corpora.STC3_DEV_START}:{STC3_SPLIT}", "report": f"{STC3_SPLIT}:"}
    for h in HALVES:
        print(f'python {tool} ".venv/bin/emotag" --smp-usual {out}/smp_usual_{h}.tsv '
              f"--smp-virus {out}/smp_virus_{h}.tsv --clue {out}/clue_{h}.jsonl --cvat {out}/cvat_{h}.tsv "
              f"--polarity {out}/shopping_{h}.csv --stars {out}/asap_stars.tsv --stc3 {stc3}@{spans[h]}")
        for source in by_source:
            if source != "shopping":
                print(f"  (also: --only polarity --polarity {out}/{source}_{h}.csv)")


if __name__ == "__main__":
    main()
