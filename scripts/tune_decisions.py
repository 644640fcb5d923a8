#!/usr/bin/env python
"""Choose a finished model's two decision settings on the tune halves of the dev splits, and write them
into its config.json:

- `contrast_weight` (features.window_weights): how much more the clause after 但是/可是/不过… counts;
  chosen by the mean of the judged tune metrics it can move (SMP usual/virus 6-way macro-F1, CLUE
  accuracy, polarity accuracy of the review and chat sets, ASTE restaurant polarity);
- `neutral_margin` (tagger._results): below this |P(positive) - P(negative)| the polarity is neutral;
  chosen by 3-way polarity macro-F1 on the sets that label neutral text (ASTE restaurant sentences,
  car-forum posts, CPED dialogue lines). The sign of polarity_score, and so every binary polarity
  metric, does not depend on it.

    python scripts/tune_decisions.py --model runs/rebuild/model [--data ../shared/data]

Only `split == "dev"` rows of `corpora.load_all` are read: the tune halves. The report halves stay unseen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag import Tagger  # noqa: E402
from emotag.labels import SMP2020_EVAL_MERGE  # noqa: E402
from emotag.metrics import macro_f1  # noqa: E402
from emotag.train import corpora  # noqa: E402

CONTRAST_WEIGHTS = (1.0, 2.0, 3.0)
NEUTRAL_MARGINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
BINARY = ("shopping", "hotel", "chat", "sentic", "aste")
THREE_WAY = ("aste", "car", "cped")


def judged(records: list, examples: list) -> dict[str, float]:
    """The tune metrics a contrast weight can move, per set."""
    src = np.array([e.source for e in examples])
    out: dict[str, float] = {}
    for s in ("smp_usual", "smp_virus"):
        sel = np.where(src == s)[0]
        gold = [next(k for k, v in SMP2020_EVAL_MERGE.items() if set(v) == set(examples[i].emotions)) for i in sel]
        pred = [max(SMP2020_EVAL_MERGE, key=lambda k, r=records[i]: sum(r.emotions[e] for e in SMP2020_EVAL_MERGE[k]))
                for i in sel]
        out[f"{s}_macroF1"] = macro_f1(gold, pred, list(SMP2020_EVAL_MERGE))
    sel = np.where(src == "clue")[0]
    out["clue_acc"] = float(np.mean([max(list(records[i].emotions)[1:], key=records[i].emotions.get)
                                     == examples[i].emotions[0] for i in sel]))
    for s in BINARY:
        sel = [i for i in np.where(src == s)[0] if examples[i].polarity in ("positive", "negative")]
        out[f"{s}_polarity_acc"] = float(np.mean([(records[i].polarity_score > 0) == (examples[i].polarity == "positive")
                                                  for i in sel]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=str(corpora.DEFAULT_DATA_DIR))
    a = ap.parse_args()
    dev = [e for e in corpora.load_all(a.data) if e.split == "dev"]
    moved = [e for e in dev if e.source in ("smp_usual", "smp_virus", "clue", *BINARY)]
    three = [e for e in dev if e.source in THREE_WAY and e.polarity]
    tagger = Tagger.load(a.model)
    log: dict[str, object] = {"contrast": {}, "neutral": {}}

    for k in CONTRAST_WEIGHTS:
        tagger.config.contrast_weight = k
        m = judged(list(tagger.tag_many([e.text for e in moved], batch_size=128)), moved)
        log["contrast"][k] = {"mean": float(np.mean(list(m.values()))), **m}
        print(f"contrast_weight {k}: mean {log['contrast'][k]['mean']:.4f} {json.dumps(m)}", flush=True)
    best_k = max(CONTRAST_WEIGHTS, key=lambda k: log["contrast"][k]["mean"])
    tagger.config.contrast_weight = best_k

    for margin in NEUTRAL_MARGINS:
        tagger.config.neutral_margin = margin
        recs = list(tagger.tag_many([e.text for e in three], batch_size=128))
        f1 = {s: macro_f1([e.polarity for e in three if e.source == s],
                          [r.polarity for r, e in zip(recs, three, strict=True) if e.source == s],
                          ["negative", "neutral", "positive"]) for s in THREE_WAY}
        log["neutral"][margin] = {"mean": float(np.mean(list(f1.values()))), **f1}
        print(f"neutral_margin {margin}: {json.dumps(log['neutral'][margin])}", flush=True)
    best_m = max(NEUTRAL_MARGINS, key=lambda m: log["neutral"][m]["mean"])

    path = Path(a.model) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["contrast_weight"], cfg["neutral_margin"] = best_k, best_m
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log_path = Path(a.model) / "training_log.json"
    full = json.loads(log_path.read_text()) if log_path.exists() else {}
    full["decisions"] = {"contrast_weight": best_k, "neutral_margin": best_m, "tune": log}
    log_path.write_text(json.dumps(full, indent=1, ensure_ascii=False))
    print(f"chose contrast_weight {best_k}, neutral_margin {best_m} -> {path}")


if __name__ == "__main__":
    main()
