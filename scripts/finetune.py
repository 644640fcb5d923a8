#!/usr/bin/env python
"""Fine-tune emotag on your own labelled table (the same function as `emotag train`).

    python scripts/finetune.py TRAIN -o MODEL_DIR [--dev DEV] [--base-model M] [--labels a,b,c]
        [--text-col text] [--label-col label ...] [--task emotion|polarity] [--epochs 3] [--batch-size 32]
        [--lr LR] [--seed 13] [--max-minutes N] [--threads N] [--no-progress] [--no-onnx]

TRAIN/DEV: .csv, .tsv, .jsonl/.json or .parquet. Several --label-col (or "a,b,c") of 0/1 or T/F flags
train a multi-label set. Exit code 0 on success, 1 with a one-line message for bad input. See
docs/finetune.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    """The options of `emotag train`, so the script and the CLI stay interchangeable."""
    ap = argparse.ArgumentParser(prog="finetune.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train", help="labelled training file")
    ap.add_argument("-o", "--out", required=True, help="model directory to write")
    ap.add_argument("--dev", help="labelled dev file (default: a stratified 12%% of TRAIN)")
    ap.add_argument("--base-model", help="emotag model dir, or a Hugging Face checkpoint id/path "
                                         "(default: the bundled model)")
    ap.add_argument("--labels", help="custom label set, comma-separated (default: inferred from the data)")
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", action="append", dest="label_cols",
                    help="label column; repeat (or a,b,c) for multi-label flag columns (default: label)")
    ap.add_argument("--task", choices=["emotion", "polarity"], default="emotion")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: by base model)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX export (score with --backend torch)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, fine-tune, print a summary; returns the exit code (1 for user errors, never a traceback)."""
    a = build_parser().parse_args(argv)
    if sys.stderr.isatty() and not a.no_progress:  # log lines must not tear through the progress bar
        from rich.logging import RichHandler

        logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(show_path=False)])
    else:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("emotag").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from emotag.train.finetune import finetune

    cols: list[str] = []
    for c in a.label_cols or ["label"]:
        cols.extend(x.strip() for x in c.split(",") if x.strip())
    try:
        r = finetune(a.train, a.out, dev_path=a.dev, base_model=a.base_model, labels=a.labels, text_col=a.text_col,
                     label_cols=tuple(cols), task=a.task, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                     seed=a.seed, max_minutes=a.max_minutes, progress=not a.no_progress, threads=a.threads,
                     export=not a.no_onnx)
    except (ValueError, FileNotFoundError) as e:
        print(f"finetune: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    before = f" (base model: {r.dev_before['macro_f1']:.4f})" if r.dev_before else ""
    print(f"wrote {r.out_dir}: {r.task} head, {len(r.labels)} labels, {r.train_rows} train / {r.dev_rows} dev rows, "
          f"{r.steps} steps in {r.minutes:.2f} min; dev macro-F1 {r.dev_after['macro_f1']:.4f}{before}; "
          f"report {r.out_dir / 'eval_report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
