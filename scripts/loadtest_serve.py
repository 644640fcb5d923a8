"""Load and fault test for `emotag serve`, on 127.0.0.1 only, bounded in requests and time.

1. Latency and throughput: single-text POST /v1/tag requests from C concurrent clients (keep-alive
   connections, one thread each), for each C in --concurrency; prints throughput and p50/p95/p99.
2. The batch baseline: `score_file` (what `emotag score` runs; model load excluded) on the same texts with
   the same thread count, so "server throughput / batch throughput" compares like with like.
3. Durability: --cycles times, event writers post batches of scored events (each with its own batch_id)
   while the server is killed with SIGKILL mid-load and restarted on the same store; unanswered batches
   are retried after the restart (a client's retry). At the end every acknowledged batch must be in the
   store exactly once, and the store's evidence must equal the events of the batches it recorded.

The texts are the review texts of data/samples/reviews.csv, cycled. The client shares the machine's cores
with the server, as a sidecar would; on a shared machine say so next to the numbers.

    .venv/bin/python scripts/loadtest_serve.py [--requests 2000] [--concurrency 1,64] [--threads N]
        [--cycles 3] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READ = "loadtest-read-key-0123456789"
WRITE = "loadtest-write-key-0123456789"
PSEUDO_KEY = "loadtest-pseudonym-key-0123456789"
EMOTIONS = {"neutral": 0.1, "like": 0.1, "happiness": 0.5, "sadness": 0.1, "anger": 0.05, "disgust": 0.05,
            "fear": 0.05, "surprise": 0.05}
EVENTS_PER_BATCH = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """One keep-alive connection; reconnects after a failure."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"}
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request("POST", path, body=data, headers=headers)
            resp = self.conn.getresponse()
            payload = json.loads(resp.read())
            return resp.status, payload
        except (OSError, http.client.HTTPException, ValueError):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            raise


def start_server(workdir: Path, port: int, threads: int | None, store: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EMOTAG_API_KEYS": f"{READ},{WRITE}:write", "EMOTAG_PSEUDONYM_KEY": PSEUDO_KEY}
    args = [sys.executable, "-m", "emotag.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--store", store]
    if threads:
        args += ["--threads", str(threads)]
    log = (workdir / "server.log").open("ab")
    proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(workdir / 'server.log').read_text()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready in 120 s")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def load(port: int, texts: list[str], concurrency: int, requests: int, duration: float) -> dict[str, Any]:
    """`requests` single-text requests from `concurrency` clients (or until `duration` seconds)."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def worker() -> None:
        client = Client(port, READ)
        while time.perf_counter() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                status, _ = client.post("/v1/tag", {"text": texts[i % len(texts)]})
            except (OSError, http.client.HTTPException, ValueError):
                status = -1
            dt = time.perf_counter() - t0
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat.append(dt)

    for _ in range(min(20, requests)):  # warm-up (not measured)
        Client(port, READ).post("/v1/tag", {"text": texts[0]})
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = len(lat)
    return {"concurrency": concurrency, "requests": sum(statuses.values()), "ok": ok, "statuses": statuses,
            "seconds": round(wall, 3), "texts_per_s": round(ok / wall, 1),
            "p50_ms": round(1000 * percentile(lat, 50), 2), "p95_ms": round(1000 * percentile(lat, 95), 2),
            "p99_ms": round(1000 * percentile(lat, 99), 2)}


def batch_baseline(texts: list[str], n: int, threads: int | None, workdir: Path) -> dict[str, Any]:
    """What `emotag score` does on the same texts: score_file with the same thread count."""
    from emotag import Tagger
    from emotag.scoring import score_file

    src = workdir / "baseline.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
    tagger = Tagger.load(threads=threads)
    score_file(tagger, str(src), str(workdir / "warm.jsonl"))  # warm-up
    t0 = time.perf_counter()
    summary = score_file(tagger, str(src), str(workdir / "baseline.scored.jsonl"))
    wall = time.perf_counter() - t0
    return {"texts": summary.rows, "seconds": round(wall, 3), "texts_per_s": round(summary.rows / wall, 1)}


def durability(workdir: Path, threads: int | None, cycles: int, writers: int = 8) -> dict[str, Any]:
    """Kill -9 the server under write load `cycles` times; check every acknowledged batch exactly once."""
    from emotag.profiles import ProfileStore

    store = str(workdir / "durability.db")
    acked: set[str] = set()
    sent: dict[str, list[dict[str, Any]]] = {}
    seq = iter(range(10**9))
    lock = threading.Lock()
    rng = random.Random(0)

    def batch() -> tuple[str, list[dict[str, Any]]]:
        with lock:
            k = next(seq)
        events = [{"user_id": f"user-{(k * EVENTS_PER_BATCH + j) % 500}", "time": 1735689600 + k * 60 + j,
                   "polarity_score": 0.4, "emotion": "happiness", "emotions": EMOTIONS}
                  for j in range(EVENTS_PER_BATCH)]
        return f"lt-{k}", events

    def writer(port: int, stop: threading.Event) -> None:
        client = Client(port, WRITE)
        while not stop.is_set():
            bid, events = batch()
            with lock:
                sent[bid] = events
            try:
                status, body = client.post("/v1/events", {"events": events, "batch_id": bid})
            except (OSError, http.client.HTTPException, ValueError):
                continue  # the server died mid-request: unknown outcome, retried after the restart
            if status == 200:
                with lock:
                    acked.add(bid)

    for _ in range(cycles):
        port = free_port()
        proc = start_server(workdir, port, threads, store)
        stop = threading.Event()
        ts = [threading.Thread(target=writer, args=(port, stop)) for _ in range(writers)]
        for t in ts:
            t.start()
        time.sleep(1.0 + rng.random())
        proc.send_signal(signal.SIGKILL)
        stop.set()
        proc.wait()
        for t in ts:
            t.join()
    # restart once more: the client retries every batch it has no answer for
    port = free_port()
    proc = start_server(workdir, port, threads, store)
    client = Client(port, WRITE)
    retried = 0
    for bid, events in sorted(sent.items()):
        if bid not in acked:
            status, _ = client.post("/v1/events", {"events": events, "batch_id": bid})
            assert status == 200, status
            retried += 1
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    with ProfileStore(store) as st:
        batches = {b["batch_id"]: b["records"] for b in st.batches()}
        evidence = sum(s.n for _, s in st.iter_states())
    lost = sorted(acked - set(batches))
    return {"cycles": cycles, "batches_sent": len(sent), "acknowledged": len(acked), "retried_after_restart": retried,
            "batches_in_store": len(batches), "lost_acknowledged": len(lost),
            "evidence": evidence, "expected_evidence": EVENTS_PER_BATCH * len(sent),
            "ok": not lost and set(batches) == set(sent) and evidence == EVENTS_PER_BATCH * len(sent)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,64", help="comma-separated client counts")
    ap.add_argument("--threads", type=int, default=None, help="scorer threads (server and baseline)")
    ap.add_argument("--duration", type=float, default=60.0, help="cap per concurrency level, seconds")
    ap.add_argument("--cycles", type=int, default=3, help="kill -9 cycles of the durability check (0: skip)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from emotag.io import read_rows

    texts = [r.text for r in read_rows(str(ROOT / "data" / "samples" / "reviews.csv")) if r.text]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "texts": len(texts),
                               "mean_chars": round(statistics.mean(len(t) for t in texts), 1)}
    with tempfile.TemporaryDirectory(prefix="emotag-loadtest-") as tmp:
        work = Path(tmp)
        port = free_port()
        proc = start_server(work, port, args.threads, str(work / "load.db"))
        try:
            results["load"] = []
            for c in (int(x) for x in args.concurrency.split(",")):
                n = args.requests if c > 1 else min(args.requests, 500)
                r = load(port, texts, c, n, args.duration)
                results["load"].append(r)
                print(f"concurrency {c:>3}: {r['ok']}/{r['requests']} ok in {r['seconds']:.1f}s, "
                      f"{r['texts_per_s']:.0f} texts/s, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, statuses {r['statuses']}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        base = batch_baseline(texts, args.requests, args.threads, work)
        results["batch"] = base
        print(f"emotag score (score_file, same texts): {base['texts']} texts in {base['seconds']:.1f}s, "
              f"{base['texts_per_s']:.0f} texts/s", flush=True)
        for r in results["load"]:
            r["vs_batch"] = round(r["texts_per_s"] / base["texts_per_s"], 3)
            print(f"  concurrency {r['concurrency']}: {100 * r['vs_batch']:.0f}% of the batch scorer's throughput")
        if args.cycles:
            d = durability(work, args.threads, args.cycles)
            results["durability"] = d
            print(f"durability: {d['cycles']} kill -9 cycles, {d['batches_sent']} batches sent, "
                  f"{d['acknowledged']} acknowledged, {d['retried_after_restart']} retried, "
                  f"{d['lost_acknowledged']} acknowledged lost, evidence {d['evidence']} "
                  f"(expected {d['expected_evidence']}): {'OK' if d['ok'] else 'FAILED'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    if "durability" in results and not results["durability"]["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
