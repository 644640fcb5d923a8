#!/usr/bin/env python
"""Throughput and memory of emotag's scorers, measured side by side in one run.

    python scripts/bench.py [--model DIR] [--n 10000] [--repeats 3] [--cli-sizes 10000,100000] [--out docs/benchmarks.md]

Every configuration runs in its own fresh process (so peak RSS is its own), on the same texts:
review-length texts (<= 128 characters) from the shopping and hotel reviews in ../shared/data (or the
bundled samples, repeated, when the data directory is absent). Reported numbers are medians over
`--repeats` runs after a warm-up batch.

1. library scoring: onnx int8 (single-threaded sessions side by side, the default, and one session
   splitting each operator over the threads), onnx fp32, torch fp32 eager (same model), SnowNLP;
2. end to end through the CLI (read CSV, score, write JSONL) at several sizes: is cost linear, is RSS flat;
3. a batch-size x threads sweep of the onnx int8 scorer;
4. the network's time per text by kind of operator (matrix products, attention, the rest), int8 vs torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def load_texts(n: int, data: Path) -> list[str]:
    texts: list[str] = []
    src = data / "reviews_polarity" / "online_shopping_10_cats.csv"
    if src.exists():
        with open(src, encoding="utf-8-sig", newline="") as f:
            for r in csv.DictReader(f):
                t = (r.get("review") or "").strip()
                if 4 <= len(t) <= 128:
                    texts.append(t)
    else:
        with open(ROOT / "data" / "samples" / "reviews.csv", encoding="utf-8") as f:
            texts = [r["text"][:128] for r in csv.DictReader(f) if r["text"].strip()]
    if not texts:
        raise SystemExit("no texts to benchmark")
    # the file is grouped by product category; a fixed shuffle makes any prefix (SnowNLP scores the first
    # 3,000) a sample of the same length and topic mix as the whole set
    random.Random(0).shuffle(texts)
    while len(texts) < n:
        texts = texts + texts
    return texts[:n]


def worker(kind: str, model: str | None, texts_file: str, repeats: int, batch_size: int, threads: int) -> dict:
    """Runs inside a fresh process: score the texts `repeats` times, report rates and peak RSS."""
    with open(texts_file, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    if kind == "snownlp":
        from snownlp import SnowNLP

        def run(batch):
            return [SnowNLP(t).sentiments for t in batch]
    else:
        from emotag import Tagger

        backend, _, mode = kind.partition(":")  # "onnx-int8:split" = one session, operators split over threads
        tagger = Tagger.load(model, backend=backend, threads=threads,
                             parallel=(mode != "split") if backend.startswith("onnx") else None)

        def run(batch):
            return list(tagger.tag_many(batch, batch_size=batch_size))

    run(texts[:64])  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return {"kind": kind, "rates": rates, "median": statistics.median(rates), "peak_rss_mb": peak_rss_mb()}


MATMUL_OPS = {"QLinearMatMul", "MatMul", "MatMulInteger", "MatMulIntegerToFloat", "Gemm", "DynamicQuantizeMatMul",
              "aten::addmm", "aten::mm", "aten::bmm", "aten::matmul"}
ATTENTION_OPS = {"MultiHeadAttention", "Attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_attention_math", "aten::softmax", "aten::_softmax"}


def network_us_per_text(backend, batches: list, n_texts: int, passes: int = 3) -> float:
    """The network alone: best of `passes` passes over already-encoded batches, microseconds per text."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for b in batches:
            backend.run(b)
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / n_texts


def profile_worker(model: str | None, texts_file: str) -> dict:
    """Network time per text by kind of operator, one thread, int8 onnxruntime vs torch eager on the same
    batches: the matrix products are where int8 gains, everything else runs in fp32 in both."""
    import json as _json

    import onnxruntime as ort
    import torch
    from torch.profiler import ProfilerActivity, profile

    from emotag import Tagger

    with open(texts_file, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f][:3000]
    tagger = Tagger.load(model, backend="onnx-int8", threads=1)
    batches = [b for _, b in tagger._prepare_chunk(texts, list(range(len(texts))), 64).batches]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "emotag-bench-prof")
    from emotag.runtime.backends import SLOWER_FUSIONS

    sess = ort.InferenceSession(str(tagger.backend.path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(SLOWER_FUSIONS))
    for b in batches:
        sess.run(None, b.as_dict())
    trace = sess.end_profiling()
    with open(trace) as f:
        events = _json.load(f)
    os.remove(trace)
    out = {"int8": {"matmul": 0.0, "attention": 0.0}, "torch": {"matmul": 0.0, "attention": 0.0}}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            kind = "matmul" if op in MATMUL_OPS else "attention" if op in ATTENTION_OPS else None
            if kind:
                out["int8"][kind] += e["dur"] / len(texts)  # microseconds per text
    torch.set_num_threads(1)
    tb = Tagger.load(model, backend="torch", threads=1).backend
    tb.run(batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            tb.run(b)
    for ev in prof.key_averages():
        kind = "matmul" if ev.key in MATMUL_OPS else "attention" if ev.key in ATTENTION_OPS else None
        if kind:
            out["torch"][kind] += ev.self_cpu_time_total / len(texts)
    # the profilers' own cost lands on the many small operators, so "other" is the unprofiled total
    # (best of 3 passes) minus the two measured kinds
    for name, backend in (("int8", tagger.backend), ("torch", tb)):
        total = network_us_per_text(backend, batches, len(texts))
        out[name]["other"] = max(0.0, total - out[name]["matmul"] - out[name]["attention"])
    return out


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss would carry over the parent's peak across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn(kind: str, model: str | None, texts_file: str, repeats: int, batch_size: int = 64, threads: int = 2) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--texts-file", texts_file, "--repeats", str(repeats),
           "--batch-size", str(batch_size), "--threads", str(threads)]
    if model:
        cmd += ["--model", model]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"kind": kind, "error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def cli_run(model: str | None, csv_path: str, out: str, batch_size: int = 64, extra: tuple[str, ...] = ()) -> dict:
    """One `emotag score` run in a child process; its peak RSS read from RUSAGE_CHILDREN of a wrapper."""
    emotag = [sys.executable, "-m", "emotag.cli", "score", csv_path, "-o", out, "--quiet",
              "--batch-size", str(batch_size), *extra] + (["--model", model] if model else [])
    # the wrapper is a small fresh process, so its children's ru_maxrss is emotag's own peak
    wrapper = ("import resource,subprocess,sys,time,json;t=time.perf_counter();"
               "r=subprocess.run(sys.argv[1:]);dt=time.perf_counter()-t;"
               "print(json.dumps({'rc':r.returncode,'seconds':dt,"
               "'peak_rss_mb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))")
    r = subprocess.run([sys.executable, "-c", wrapper, *emotag], capture_output=True, text=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"emotag score failed: {r.stderr.strip()[-300:]}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cli-sizes", default="10000,100000")
    ap.add_argument("--cli-repeats", type=int, default=3)
    ap.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="network time by kind of operator, int8 vs torch (section 4)")
    ap.add_argument("--skip", default="", help="comma-separated kinds to skip (e.g. torch,snownlp)")
    ap.add_argument("--baseline-model", default=None,
                    help="another model directory (e.g. the previous release) scored with the default int8 scorer "
                         "in the same run, library and CLI, for the side-by-side ratio")
    ap.add_argument("--out", default=None, help="also write the markdown tables here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--texts-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "profile":
        print(json.dumps(profile_worker(a.model, a.texts_file)))
        return
    if a.worker:
        print(json.dumps(worker(a.worker, a.model, a.texts_file, a.repeats, a.batch_size, a.threads)))
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    skip = set(filter(None, a.skip.split(",")))
    lines = [f"# emotag benchmarks\n\nMachine: {os.cpu_count()} cores. Texts: review-length (<= 128 chars). "
             f"Medians of {a.repeats} runs, each configuration in its own process.\n"]
    with tempfile.TemporaryDirectory() as tmp:
        from emotag.model.config import ONNX_NAME, resolve_model_dir

        model_dir = resolve_model_dir(a.model)
        if not (model_dir / ONNX_NAME).exists() and "onnx-fp32" not in skip:
            # the fp32 graph is not committed (4x the int8 file): export it into a scratch copy
            import shutil

            from emotag.model.export import export_onnx

            shutil.copytree(model_dir, os.path.join(tmp, "model"))
            export_onnx(os.path.join(tmp, "model"))
            a.model = os.path.join(tmp, "model")
        texts = load_texts(max(a.n, max(int(s) for s in a.cli_sizes.split(","))), Path(a.data))
        tf = os.path.join(tmp, "texts.txt")
        with open(tf, "w", encoding="utf-8") as f:
            f.write("\n".join(t.replace("\n", " ") for t in texts[: a.n]) + "\n")

        rows = []
        for kind in ("onnx-int8", "onnx-int8:split", "onnx-fp32", "torch", "snownlp"):
            if kind in skip or kind.partition(":")[0] in skip:
                continue
            n_texts = a.n if kind != "snownlp" else min(a.n, 3000)
            if n_texts != a.n:
                sf = os.path.join(tmp, "texts_small.txt")
                with open(sf, "w", encoding="utf-8") as f:
                    f.write("\n".join(t.replace("\n", " ") for t in texts[:n_texts]) + "\n")
                rows.append(spawn(kind, a.model, sf, a.repeats) | {"n": n_texts})
            else:
                rows.append(spawn(kind, a.model, tf, a.repeats) | {"n": n_texts})
            print(rows[-1], file=sys.stderr)
        if a.baseline_model:
            rows.append(spawn("onnx-int8", a.baseline_model, tf, a.repeats) | {"n": a.n, "kind": "onnx-int8, baseline model"})
            print(rows[-1], file=sys.stderr)
        base = {r["kind"]: r.get("median") for r in rows}
        lines.append("## 1. Library scoring, same texts\n")
        lines.append("| scorer | texts | texts/s (median) | x torch fp32 | x SnowNLP | peak RSS MB |")
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['kind']} | - | failed: {r['error']} | | | |")
                continue
            xt = r["median"] / base["torch"] if base.get("torch") else float("nan")
            xs = r["median"] / base["snownlp"] if base.get("snownlp") else float("nan")
            lines.append(f"| {r['kind']} | {r['n']} | {r['median']:.0f} | {xt:.2f} | {xs:.1f} | {r['peak_rss_mb']:.0f} |")

        lines.append("\n## 2. End to end through the CLI (CSV in, JSONL out, onnx int8)\n")
        lines.append("| rows | seconds (median) | rows/s | peak RSS MB | with --aspects: rows/s | aspects / plain "
                     "| baseline model: rows/s | this / baseline |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for size in (int(s) for s in a.cli_sizes.split(",")):
            inp = os.path.join(tmp, f"in_{size}.csv")
            with open(inp, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "text"])
                for i in range(size):
                    w.writerow([i, texts[i % len(texts)]])
            runs = [cli_run(a.model, inp, os.path.join(tmp, f"out_{size}.jsonl")) for _ in range(a.cli_repeats)]
            secs = statistics.median(r["seconds"] for r in runs)
            rss = max(r["peak_rss_mb"] for r in runs)
            # the same file with SPEC §7 aspects (issue #18: >= 800 rows/s, the plain path no slower)
            asp = [cli_run(a.model, inp, os.path.join(tmp, f"out_{size}_aspects.jsonl"), extra=("--aspects",))
                   for _ in range(a.cli_repeats)]
            asecs = statistics.median(r["seconds"] for r in asp)
            bsecs = float("nan")
            if a.baseline_model:
                bsecs = statistics.median(cli_run(a.baseline_model, inp, os.path.join(tmp, f"out_{size}_base.jsonl"))
                                          ["seconds"] for _ in range(a.cli_repeats))
            lines.append(f"| {size} | {secs:.1f} | {size / secs:.0f} | {rss:.0f} | {size / asecs:.0f} | "
                         f"{secs / asecs:.2f} | {size / bsecs:.0f} | {bsecs / secs:.2f} |")
            print(lines[-1], file=sys.stderr)

        if a.sweep:
            lines.append("\n## 3. onnx int8: batch size x threads (library, texts/s median)\n")
            lines.append("| batch \\ threads | 1 | 2: sessions side by side (default) | 2: one session, split operators |")
            lines.append("|---|---|---|---|")
            small = os.path.join(tmp, "sweep.txt")
            with open(small, "w", encoding="utf-8") as f:
                f.write("\n".join(t.replace("\n", " ") for t in texts[:3000]) + "\n")
            for bs in (16, 32, 64, 128, 256):
                cells = [spawn(kind, a.model, small, a.repeats, bs, th).get("median", float("nan"))
                         for kind, th in (("onnx-int8", 1), ("onnx-int8", 2), ("onnx-int8:split", 2))]
                lines.append(f"| {bs} | {cells[0]:.0f} | {cells[1]:.0f} | {cells[2]:.0f} |")
                print(lines[-1], file=sys.stderr)
        if a.profile and "torch" not in skip:
            lines.append("\n## 4. Where the network's time goes (one thread, same 3,000 texts, microseconds per text)\n")
            lines.append("| operators | onnx int8 | torch fp32 eager | torch / int8 |")
            lines.append("|---|---|---|---|")
            prof = spawn("profile", a.model, tf, 1)
            for kind in ("matmul", "attention", "other"):
                i8, pt = prof["int8"][kind], prof["torch"][kind]
                lines.append(f"| {kind} | {i8:.0f} | {pt:.0f} | {pt / i8:.2f} |")
            i8, pt = sum(prof["int8"].values()), sum(prof["torch"].values())
            lines.append(f"| all | {i8:.0f} | {pt:.0f} | {pt / i8:.2f} |")
            print("\n".join(lines[-5:]), file=sys.stderr)
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
