"""Micro-batching: concurrent requests share one model call, the way Triton's dynamic batcher does.

Why this shape
--------------
The network costs far less per text in a batch than alone (one ONNX call, padding shared across
length-sorted windows), but a service receives texts one request at a time. The batcher keeps one queue
of pending texts and takes whatever is waiting: at once when the model is idle or `max_batch` texts are
waiting, else after a short window (default 3 ms) from the first text's arrival. It scores the batch with
`Tagger.tag_many` on a model thread and resolves each request's future with its own slice. While a batch
runs, new requests queue up, so under load batches fill by themselves, and a lone request that finds the
model idle does not wait at all.

Two batches may be in flight at once (`in_flight`): one is normalised and tokenised (Python, holding the
GIL) while the other runs in onnxruntime (which releases it) -- the overlap `emotag score` gets from its
prepare and score threads. A gathered batch is scored in model batches of at most `sub_batch` (8) texts
sorted by length, spread over the backend's sessions so every session works on it: a gathered batch
mixes short and long reviews, and one model batch of them pads every text to the longest (64 random
reviews cost 2.1 ms of CPU per text in one model batch, 1.3 ms in sorted batches of 8; docs/serve.md).
The Tagger thus sees at most `in_flight` concurrent calls
(onnxruntime sessions may be called from several threads; the featuriser keeps no per-call state);
dialogue and aspect scoring run on the same model threads.

The queue is bounded in *texts*: a request that would push it past `max_queue` is refused at once
(`QueueFull`, HTTP 503 with Retry-After) instead of growing memory without limit. A request of more
texts than the bound could never fit, not even in an empty queue, so a retry cannot help: it is refused
with `TooManyTexts` (the routes check first and answer 422 naming the bound).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from emotag.tagger import Result, Tagger

T = TypeVar("T")


class QueueFull(Exception):
    """The pending-text queue is at its bound; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"server busy: retry after {retry_after}s")


class TooManyTexts(ValueError):
    """One request holds more texts than the queue's bound: no wait makes it fit (the app answers 422)."""

    def __init__(self, n: int, bound: int) -> None:
        self.n = n
        self.bound = bound
        super().__init__(f"{n} texts to score; the queue holds at most {bound} (--max-queue)")


@dataclass
class _Pending:
    texts: Sequence[Any]
    future: asyncio.Future[list[Result]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers `submit` calls into model batches of at most `max_batch` texts (larger requests alone)."""

    def __init__(
        self,
        tagger: Tagger,
        *,
        max_batch: int = 64,
        window_ms: float = 3.0,
        max_queue: int = 2048,
        in_flight: int = 2,
        sub_batch: int = 8,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.tagger = tagger
        self.max_batch = int(max_batch)
        self.window_s = float(window_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.sub_batch = max(1, int(sub_batch))
        self.on_batch = on_batch
        # sessions the backend scores side by side (OnnxBackend with 2+ threads); a gathered batch is split
        # into that many model batches so every session works on it (one session per batch otherwise)
        self.parallel = max(1, len(getattr(tagger.backend, "sessions", ()) or ()))
        self._pending: deque[_Pending] = deque()
        self._queued = 0  # texts waiting (not yet taken by the model thread)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.in_flight = max(1, int(in_flight))
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.executor = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="emotag-model")

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.in_flight)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="emotag-batcher")

    async def run_model(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any other model work (dialogues, aspects) on the model thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, texts: Sequence[Any]) -> list[Result]:
        """Score `texts` (ids 0..n-1 within the request); raises QueueFull when they would take the queue
        past its bound, TooManyTexts when they are more than the bound itself."""
        if len(texts) > self.max_queue:
            raise TooManyTexts(len(texts), self.max_queue)
        if self._closing or self._wake is None:
            raise QueueFull(1)
        if self._queued + len(texts) > self.max_queue:
            raise QueueFull(1)
        fut: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(texts, fut))
        self._queued += len(texts)
        self._wake.set()
        return await fut

    def _take(self) -> list[_Pending]:
        """Whole requests, up to `max_batch` texts (a bigger request goes alone: it is never split)."""
        taken: list[_Pending] = []
        n = 0
        while self._pending and (not taken or n + len(self._pending[0].texts) <= self.max_batch):
            p = self._pending.popleft()
            taken.append(p)
            n += len(p.texts)
        self._queued -= n
        return taken

    def _score(self, texts: list[Any]) -> list[Result]:
        # model batches of at most `sub_batch` windows, sorted by length: a gathered batch mixes short and
        # long texts, and one model batch of them all pads every text to the longest
        per = max(1, min(self.sub_batch, -(-len(texts) // self.parallel)))
        return list(self.tagger.tag_many(texts, batch_size=per, chunk_size=max(len(texts), 1)))

    async def _loop(self) -> None:
        assert self._wake is not None and self._slots is not None
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # a short window for company while the model is busy, unless a full batch is already waiting;
            # a request that finds the model idle starts at once (waiting would only add latency)
            first = self._pending[0].enqueued
            wait = self.window_s - (time.perf_counter() - first)
            if wait > 0 and self._running and self._queued < self.max_batch and not self._closing:
                await asyncio.sleep(wait)
            await self._slots.acquire()  # at most `in_flight` batches at once; the queue grows meanwhile
            taken = [p for p in self._take() if not p.future.cancelled()]
            if not taken:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(taken))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, taken: list[_Pending]) -> None:
        assert self._slots is not None
        try:
            texts = [t for p in taken for t in p.texts]
            t0 = time.perf_counter()
            try:
                results = await asyncio.get_running_loop().run_in_executor(self.executor, self._score, texts)
            except Exception as exc:  # noqa: BLE001 - a model failure fails these requests, not the server
                for p in taken:
                    if not p.future.done():
                        p.future.set_exception(exc)
                return
            if self.on_batch is not None:
                self.on_batch(len(texts), time.perf_counter() - t0)
            i = 0
            for p in taken:
                part = results[i : i + len(p.texts)]
                i += len(p.texts)
                for k, r in enumerate(part):  # ids are positions within the request, not the batch
                    r.id = k
                if not p.future.done():
                    p.future.set_result(part)
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Drain: requests already queued are scored; new ones are refused."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self.executor.shutdown(wait=True)
