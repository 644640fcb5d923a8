#!/usr/bin/env python
"""Throughput of the Spark path (local mode) against the plain CLI, on the same input file.

    python scripts/bench_spark.py [--n 20000] [--model DIR] [--repeats 3] [--master local[2]]
                                  [--partitions 4] [--threads-per-worker 1] [--batch-size 64] [--json OUT]

Both paths read the same JSONL file ({"id", "text"} per line) and write JSONL results:

* CLI: ``emotag score IN -o OUT --id-col id`` in a fresh process per run (what a user types: process
  start, model load, read, score, write), with the CLI's default threads (min(cores, 8)).
* Spark: ``score_dataframe(spark.read.json(IN), id_col="id")`` written with ``.write.json``, in one
  SparkSession started once (its start-up is reported separately); ``threads_per_worker`` onnxruntime
  threads in each of the master's task slots. The input is split into ``--partitions`` partitions through
  ``spark.sql.files.maxPartitionBytes`` (one small file would otherwise be a single task on one core).

Texts: N reviews from ../shared/data/reviews_polarity/online_shopping_10_cats.csv (seeded shuffle, so all
ten categories and the natural length mix are present), else the bundled samples repeated. Model: --model,
else models/emotag-zh-small, else runs/m1 (whichever has model.int8.onnx), else a tiny model trained on the
spot (needs the [train] extra). Reported: median wall time of --repeats runs and texts/s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHOPPING = ROOT.parent / "shared" / "data" / "reviews_polarity" / "online_shopping_10_cats.csv"


def load_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """N review texts and where they came from."""
    texts: list[str] = []
    if SHOPPING.exists():
        with open(SHOPPING, encoding="utf-8-sig", newline="") as f:
            texts = [t for r in csv.DictReader(f) if (t := (r.get("review") or "").strip())]
        random.Random(seed).shuffle(texts)
        source = f"{SHOPPING.name} (seeded shuffle)"
    else:
        with open(ROOT / "data" / "samples" / "reviews.csv", encoding="utf-8", newline="") as f:
            texts = [r["text"] for r in csv.DictReader(f) if r["text"].strip()]
        source = "data/samples/reviews.csv (repeated)"
    while len(texts) < n:
        texts = texts + texts
    return texts[:n], source


def pick_model(arg: str | None, tmp: Path) -> tuple[str, str]:
    """The model directory to benchmark, and a description of which one it is."""
    if arg:
        return arg, arg
    for cand, what in ((ROOT / "models" / "emotag-zh-small", "bundled models/emotag-zh-small"),
                       (ROOT / "runs" / "m1", "runs/m1")):
        if (cand / "model.int8.onnx").exists() and (cand / "config.json").exists():
            return str(cand), what
    from tests.conftest import build_tiny_model

    path = build_tiny_model(tmp / "tiny")
    return str(path), "tiny test model (tests/conftest.py build_tiny_model: 1 layer, width 32)"


def time_cli(inp: Path, out: Path, model: str, batch_size: int, repeats: int) -> tuple[list[float], list[float]]:
    """Wall times of `repeats` CLI runs, and the 1-minute load average after each (others' jobs show up)."""
    exe = Path(sys.executable).with_name("emotag")
    cmd = [str(exe), "score", str(inp), "-o", str(out), "--id-col", "id", "--model", model,
           "--batch-size", str(batch_size), "--quiet"]
    times, loads = [], []
    for _ in range(repeats):
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "CI": "1"})
        times.append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    return times, loads


def time_spark(inp: Path, out: Path, model: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    from pyspark.sql import SparkSession

    from emotag.integrations.spark import score_dataframe

    split = max(1, -(-inp.stat().st_size // args.partitions))  # ceil(size / partitions)
    spark = (
        SparkSession.builder.master(args.master)
        .appName("emotag-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.files.maxPartitionBytes", str(split))
        .config("spark.sql.files.openCostInBytes", "0")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - t0
    try:
        times, loads, parts = [], [], 0
        for _ in range(args.repeats):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            df = spark.read.schema("id long, text string").json(str(inp))
            parts = df.rdd.getNumPartitions()
            scored = score_dataframe(df, id_col="id", model=model, threads_per_worker=args.threads_per_worker,
                                     batch_size=args.batch_size)
            scored.write.mode("overwrite").json(str(out))
            times.append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
    finally:
        spark.stop()
    return {"startup_s": startup, "times_s": times, "load_after_each": loads, "partitions": parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="emotag-bench-spark-") as d:
        tmp = Path(d)
        model, model_desc = pick_model(args.model, tmp)
        texts, source = load_texts(args.n)
        inp = tmp / "in.jsonl"
        with inp.open("w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
        chars = sum(len(t) for t in texts)
        print(f"model: {model_desc}\ntexts: {len(texts)} from {source}, mean {chars / len(texts):.0f} chars\n"
              f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}", flush=True)
        res: dict[str, Any] = {"model": model_desc, "n": len(texts), "source": source,
                               "mean_chars": chars / len(texts), "cores": os.cpu_count(),
                               "load_before": os.getloadavg()[0], "batch_size": args.batch_size}
        if not args.skip_cli:
            cli, loads = time_cli(inp, tmp / "cli.jsonl", model, args.batch_size, args.repeats)
            med = statistics.median(cli)
            res["cli"] = {"times_s": cli, "load_after_each": loads, "median_s": med, "texts_per_s": len(texts) / med}
            print(f"CLI   emotag score: runs {', '.join(f'{t:.1f}' for t in cli)} s; median {med:.1f} s = "
                  f"{len(texts) / med:.0f} texts/s (load after each: {', '.join(f'{x:.1f}' for x in loads)})",
                  flush=True)
        sp = time_spark(inp, tmp / "spark_out", model, args)
        med = statistics.median(sp["times_s"])
        sp.update(median_s=med, texts_per_s=len(texts) / med, master=args.master,
                  threads_per_worker=args.threads_per_worker)
        res["spark"] = sp
        res["load_after"] = os.getloadavg()[0]
        print(f"Spark {args.master}, {sp['partitions']} partitions, threads_per_worker={args.threads_per_worker}: "
              f"session start {sp['startup_s']:.1f} s; runs {', '.join(f'{t:.1f}' for t in sp['times_s'])} s; "
              f"median {med:.1f} s = {len(texts) / med:.0f} texts/s "
              f"(load after each: {', '.join(f'{x:.1f}' for x in sp['load_after_each'])})", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
