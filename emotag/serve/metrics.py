"""Prometheus text-format metrics for `emotag serve`, without a client library.

Four families are all an operator needs to see the service's health and the batcher at work: requests
by route and status, request latency, model batch sizes and batch latency, and the queue depth. A dozen
lines of text formatting do not justify a dependency; the format is the stable exposition format 0.0.4.
Counts are per server process (with --workers N, scrape each or sum them).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.total += v
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, cum = [], 0
        for b, c in zip(self.buckets, self.counts, strict=False):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        brace = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{brace} {self.total:.6f}")
        out.append(f"{name}_count{brace} {self.n}")
        return out


class Metrics:
    """Thread-safe counters and histograms, rendered by `render()`."""

    def __init__(self, queue_depth: Callable[[], int] | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.events_folded = 0
        self.queue_depth = queue_depth

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            h = self.latency.get(route)
            if h is None:
                h = self.latency[route] = Histogram(LATENCY_BUCKETS)
            h.observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

    def folded(self, n: int) -> None:
        with self._lock:
            self.events_folded += n

    def render(self) -> str:
        with self._lock:
            out = ["# HELP emotag_requests_total HTTP requests by method, route and status.",
                   "# TYPE emotag_requests_total counter"]
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(f'emotag_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}')
            errors = sum(n for (_, _, s), n in self.requests.items() if s >= 400)
            out += ["# HELP emotag_request_errors_total Requests answered with a 4xx or 5xx status.",
                    "# TYPE emotag_request_errors_total counter", f"emotag_request_errors_total {errors}"]
            out += ["# HELP emotag_request_seconds Request latency by route.",
                    "# TYPE emotag_request_seconds histogram"]
            for r, h in sorted(self.latency.items()):
                out += h.lines("emotag_request_seconds", f'route="{r}"')
            out += ["# HELP emotag_batch_size Texts per model batch (micro-batching).",
                    "# TYPE emotag_batch_size histogram", *self.batch_size.lines("emotag_batch_size", "")]
            out += ["# HELP emotag_batch_seconds Model time per batch.", "# TYPE emotag_batch_seconds histogram",
                    *self.batch_seconds.lines("emotag_batch_seconds", "")]
            out += ["# HELP emotag_events_folded_total Events folded into the profile store.",
                    "# TYPE emotag_events_folded_total counter", f"emotag_events_folded_total {self.events_folded}"]
            if self.queue_depth is not None:
                out += ["# HELP emotag_queue_texts Texts waiting for the model.", "# TYPE emotag_queue_texts gauge",
                        f"emotag_queue_texts {self.queue_depth()}"]
        return "\n".join(out) + "\n"
