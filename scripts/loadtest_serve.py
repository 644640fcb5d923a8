"""Load and fault test for `emotag serve`, on 127.0.0.1 only, bounded in requests and time.

1. Latency and throughput: single-text POST /v1/tag requests from C concurrent clients (keep-alive
   connections), for each C in --concurrency; prints throughput, p50/p95/p99, the mean model batch (from
   /metrics), and the CPU seconds the server and this generator spent during the level.
2. The batch baseline: `score_file` (what `emotag score` runs; model load excluded) on the same texts with
   the same thread count, so "server throughput / batch throughput" compares like with like. It is
   measured in every round (--repeat), just before that round's load levels, and each ratio is taken
   within its round: on a shared machine both slow down alike. Medians over the rounds close the output.
3. Durability: --cycles times, event writers post batches of scored events (each with its own batch_id)
   while the server is killed with SIGKILL mid-load and restarted on the same store; unanswered batches
   are retried after the restart (a client's retry). At the end every acknowledged batch must be in the
   store exactly once, and the store's evidence must equal the events of the batches it recorded.

The generator is one asyncio loop (uvloop when installed) speaking raw HTTP/1.1 over one keep-alive
connection per client, with every request encoded before the clock starts: it shares the machine's
cores with the server, and a thread per client with http.client took 13% of the CPU of a run at 64
clients where this one takes 3% (its share is printed with each level). The texts are the review texts of
data/samples/reviews.csv, cycled. On a shared machine say so next to the numbers.

    .venv/bin/python scripts/loadtest_serve.py [--requests 2000] [--concurrency 1,64] [--threads N]
        [--repeat 3] [--server-args '--batch-window-ms 5'] [--cycles 3] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
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


def start_server(workdir: Path, port: int, threads: int | None, store: str,
                 extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EMOTAG_API_KEYS": f"{READ},{WRITE}:write", "EMOTAG_PSEUDONYM_KEY": PSEUDO_KEY}
    args = [sys.executable, "-m", "emotag.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--store", store]
    if threads:
        args += ["--threads", str(threads)]
    args += extra or []
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


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds so far of process `pid` and its live children (uvicorn's --workers run
    in child processes); Linux /proc, None elsewhere."""
    def stat(p: str) -> list[str] | None:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None

    own = stat(str(pid))
    if own is None:
        return None
    ticks = int(own[11]) + int(own[12])
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pid):
            f = stat(entry)
            if f is not None and f[1] == str(pid):  # a child of the server
                ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _batch_counts(port: int) -> tuple[float, float]:
    """(texts, batches) the server's model has scored so far, from its /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode("utf-8")
    c.close()
    got = {}
    for line in text.splitlines():
        if line.startswith(("emotag_batch_size_sum ", "emotag_batch_size_count ")):
            name, value = line.split()
            got[name] = float(value)
    return got.get("emotag_batch_size_sum", 0.0), got.get("emotag_batch_size_count", 0.0)


def _tag_request(port: int, text: str) -> bytes:
    """One pre-encoded keep-alive `POST /v1/tag` (the generator does no per-request encoding work)."""
    body = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
    head = (f"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {READ}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("response without content-length")
    n = int(head[at + 17 : head.index(b"\r\n", at + 2)])
    return status, await reader.readexactly(n)


async def _load_async(port: int, requests_: list[bytes], concurrency: int, n: int, duration: float,
                      lat: list[float], statuses: dict[int, int]) -> None:
    """`concurrency` clients, each one keep-alive connection sending its next request when answered.

    A raw HTTP/1.1 client on one asyncio loop: the requests are encoded once, up front, and an answer
    costs a header scan and one json.loads (to check it is a record). A thread per client with
    http.client spends several times the CPU per request, and on a 2-core machine that CPU is taken from
    the server being measured.
    """
    next_i = 0
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        nonlocal next_i
        reader = writer = None
        while next_i < n and time.perf_counter() < stop_at:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(requests_[i % len(requests_)])
                status, body = await _read_response(reader)
                if status == 200 and "emotion" not in json.loads(body):
                    status = -2  # answered 200 without a record: counted as a failure
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                status = -1
                if writer is not None:
                    writer.close()
                reader = writer = None
            dt = time.perf_counter() - t0
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                lat.append(dt)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # the [serve] extra has it; the client's loop is then cheaper too

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def load(port: int, texts: list[str], concurrency: int, requests: int, duration: float,
         server_pid: int | None = None) -> dict[str, Any]:
    """`requests` single-text requests from `concurrency` clients (or until `duration` seconds), with the
    CPU seconds the generator (this process) and the server spent meanwhile."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    reqs = [_tag_request(port, t) for t in texts]
    loop = _new_loop()
    try:
        loop.run_until_complete(_load_async(port, reqs, min(4, concurrency), min(20, requests), 30.0, [], {}))
        srv0 = _cpu_seconds(server_pid) if server_pid else None
        texts0, batches0 = _batch_counts(port)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        loop.run_until_complete(_load_async(port, reqs, concurrency, requests, duration, lat, statuses))
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
        srv1 = _cpu_seconds(server_pid) if server_pid else None
        texts1, batches1 = _batch_counts(port)
    finally:
        loop.close()
    server_cpu = srv1 - srv0 if srv0 is not None and srv1 is not None else None
    ok = len(lat)
    out = {"concurrency": concurrency, "requests": sum(statuses.values()), "ok": ok, "statuses": statuses,
           "seconds": round(wall, 3), "texts_per_s": round(ok / wall, 1),
           "p50_ms": round(1000 * percentile(lat, 50), 2), "p95_ms": round(1000 * percentile(lat, 95), 2),
           "p99_ms": round(1000 * percentile(lat, 99), 2),
           "mean_batch": round((texts1 - texts0) / max(batches1 - batches0, 1), 1),
           "client_cpu_s": round(client_cpu, 3), "server_cpu_s": None if server_cpu is None else round(server_cpu, 3)}
    if server_cpu is not None:
        # the generator's share of all the CPU spent during the run (server + generator)
        out["client_cpu_share"] = round(client_cpu / max(client_cpu + server_cpu, 1e-9), 3)
    return out


_TAGGERS: dict[int | None, Any] = {}


def batch_baseline(texts: list[str], n: int, threads: int | None, workdir: Path) -> dict[str, Any]:
    """What `emotag score` does on the same texts: score_file with the same thread count (model load
    excluded: the model is loaded once per run and warmed up)."""
    from emotag import Tagger
    from emotag.scoring import score_file

    src = workdir / "baseline.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
    if threads not in _TAGGERS:
        _TAGGERS[threads] = Tagger.load(threads=threads)
        score_file(_TAGGERS[threads], str(src), str(workdir / "warm.jsonl"))  # warm-up
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    summary = score_file(_TAGGERS[threads], str(src), str(workdir / "baseline.scored.jsonl"))
    wall = time.perf_counter() - t0
    return {"texts": summary.rows, "seconds": round(wall, 3), "texts_per_s": round(summary.rows / wall, 1),
            "cpu_s": round(time.process_time() - cpu0, 3)}


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


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,64", help="comma-separated client counts")
    ap.add_argument("--threads", type=int, default=None, help="scorer threads (server and baseline)")
    ap.add_argument("--duration", type=float, default=60.0, help="cap per concurrency level, seconds")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of (batch baseline, then each concurrency); medians are printed at the end")
    ap.add_argument("--server-args", default="", help="extra `emotag serve` options, e.g. '--batch-window-ms 5'")
    ap.add_argument("--cycles", type=int, default=3, help="kill -9 cycles of the durability check (0: skip)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from emotag.io import read_rows

    texts = [r.text for r in read_rows(str(ROOT / "data" / "samples" / "reviews.csv")) if r.text]
    levels = [int(x) for x in args.concurrency.split(",")]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "texts": len(texts), "server_args": args.server_args,
                               "mean_chars": round(statistics.mean(len(t) for t in texts), 1), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="emotag-loadtest-") as tmp:
        work = Path(tmp)
        port = free_port()
        proc = start_server(work, port, args.threads, str(work / "load.db"), args.server_args.split())
        try:
            # Each round measures the batch scorer and then the server, minutes apart at most, so a busy
            # machine slows both alike; the ratio is taken within the round, and the median over rounds.
            for k in range(args.repeat):
                base = batch_baseline(texts, args.requests, args.threads, work)
                rnd: dict[str, Any] = {"batch": base, "load": []}
                results["rounds"].append(rnd)
                print(f"round {k + 1}: emotag score (score_file, same texts): {base['texts']} texts in "
                      f"{base['seconds']:.1f}s, {base['texts_per_s']:.0f} texts/s, {base['cpu_s']:.1f} CPU s",
                      flush=True)
                for c in levels:
                    n = args.requests if c > 1 else min(args.requests, 500)
                    r = load(port, texts, c, n, args.duration, proc.pid)
                    r["vs_batch"] = round(r["texts_per_s"] / base["texts_per_s"], 3)
                    rnd["load"].append(r)
                    cpu = (f", CPU s: server {r['server_cpu_s']:.1f}, generator {r['client_cpu_s']:.1f} "
                           f"({100 * r['client_cpu_share']:.0f}% of the run's)" if r.get("server_cpu_s") is not None
                           else f", generator CPU {r['client_cpu_s']:.1f} s")
                    print(f"  concurrency {c:>3}: {r['ok']}/{r['requests']} ok in {r['seconds']:.1f}s, "
                          f"{r['texts_per_s']:.0f} texts/s = {100 * r['vs_batch']:.0f}% of the batch scorer's, "
                          f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                          f"mean model batch {r['mean_batch']:.1f}, statuses {r['statuses']}{cpu}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        summary = []
        for j, c in enumerate(levels):
            rs = [rnd["load"][j] for rnd in results["rounds"]]
            row = {"concurrency": c, "rounds": len(rs)}
            for key in ("texts_per_s", "vs_batch", "p50_ms", "p95_ms", "p99_ms", "client_cpu_share"):
                vals = [r[key] for r in rs if r.get(key) is not None]
                row[key] = _median(vals) if vals else None
            summary.append(row)
            share = (f", generator {100 * row['client_cpu_share']:.0f}% of the CPU spent"
                     if row["client_cpu_share"] is not None else "")
            print(f"median of {len(rs)}: concurrency {c:>3}: {row['texts_per_s']:.0f} texts/s = "
                  f"{100 * row['vs_batch']:.0f}% of the batch scorer's, p50 {row['p50_ms']:.1f} ms, "
                  f"p95 {row['p95_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms{share}", flush=True)
        results["median"] = summary
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
