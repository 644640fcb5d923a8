"""Benchmark the profile fold: N synthetic scored records (default 1,000,000 over ~50k users).

Records are generated up front (not timed) as the dicts a JSONL reader would produce -- ISO timestamps
with +08:00, an `emotions` dict per record, channel/product on some -- so the timing covers exactly what
`build_profiles` does in production: validation, time parsing, decay, accumulation and pseudonymisation.
Prints the median of `--runs` runs (default 3) as seconds and records/s.

    .venv/bin/python scripts/bench_profiles.py [-n 1000000] [--users 50000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotag.labels import EMOTIONS, POLARITY  # noqa: E402
from emotag.profiles import Pseudonymizer, build_profiles  # noqa: E402

CST = timezone(timedelta(hours=8))


def make_records(n: int, users: int, seed: int = 0) -> list[dict]:
    """Synthetic SPEC §2 records plus user_id/time/channel/product, roughly like a real export."""
    rng = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=CST)
    span = 365 * 86400
    channels = ("review", "social", "support", None)
    products = [f"SKU-{i:04d}" for i in range(200)]
    # Distinct emotion dicts per record (as json.loads would give), built from a pool of shapes.
    out = []
    for i in range(n):
        raw = [rng.random() ** 3 for _ in EMOTIONS]
        s = sum(raw)
        probs = {e: v / s for e, v in zip(EMOTIONS, raw, strict=True)}
        top = max(probs, key=probs.__getitem__)
        score = rng.uniform(-1.0, 1.0)
        t = base + timedelta(seconds=rng.randrange(span))
        rec = {
            "id": i,
            "user_id": f"u{rng.randrange(users)}",
            "time": t.isoformat(),
            "emotion": top,
            "emotions": probs,
            "polarity": POLARITY[0 if score < -0.1 else (2 if score > 0.1 else 1)],
            "polarity_score": score,
            "intensity": rng.random(),
            "error": None,
        }
        ch = channels[i % 4]
        if ch is not None:
            rec["channel"] = ch
        if ch == "support":
            rec["resolved"] = rng.random() < 0.7
        if i % 3 == 0:
            rec["product"] = products[i % len(products)]
        out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="records (default 1,000,000)")
    ap.add_argument("--users", type=int, default=50_000, help="distinct users (default 50,000)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported (default 3)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one run instead")
    ap.add_argument(
        "--store",
        action="store_true",
        help="also time one end-to-end run_profile into a fresh SQLite store plus a JSONL export",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    records = make_records(args.n, args.users)
    print(f"generated {args.n:,} records for ~{args.users:,} users in {time.perf_counter() - t0:.1f}s")
    pseudo = Pseudonymizer(b"bench-key-bench-key-bench-key-00")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        build_profiles(records, pseudonymizer=pseudo)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return

    times = []
    users = 0
    for run in range(args.runs):
        gc.collect()
        t = time.perf_counter()
        states = build_profiles(records, pseudonymizer=pseudo)
        dt = time.perf_counter() - t
        users = len(states)
        del states
        times.append(dt)
        print(f"run {run + 1}: {dt:.2f}s ({args.n / dt:,.0f} records/s)")
    med = statistics.median(times)
    print(f"median of {args.runs}: {med:.2f}s, {args.n / med:,.0f} records/s, {users:,} users")

    if args.store:
        import os
        import tempfile

        from emotag.profiles import KEY_ENV, run_profile

        os.environ.setdefault(KEY_ENV, "bench-key-bench-key-bench-key-00")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            res = run_profile(records, out=f"{tmp}/profiles.jsonl", store_path=f"{tmp}/profiles.db")
            dt = time.perf_counter() - t
            size = os.path.getsize(f"{tmp}/profiles.db") / 1e6
            print(f"run_profile with store + JSONL export: {dt:.2f}s ({res.message()}); store {size:.1f} MB")


if __name__ == "__main__":
    main()
