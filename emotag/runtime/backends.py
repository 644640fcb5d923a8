"""Scoring backends: the same network behind onnxruntime (default, light) or torch (training extra).

A backend maps a `Batch` of model inputs to raw outputs (logits, intensity, valence); everything
before (features) and after (probabilities, window merging) is shared, so both backends agree to
float precision (SPEC §2: 1e-3 for fp32 ONNX vs torch).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from emotag.model.config import ONNX_INT8_NAME, ONNX_NAME, WEIGHTS_NAME
from emotag.model.features import Batch

OUTPUTS = ("emotion_logits", "polarity_logits", "intensity", "valence")


class Backend(Protocol):
    name: str

    def run(self, batch: Batch) -> dict[str, np.ndarray]: ...


def available_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    return max(1, min(available_cpus(), 8))


def run_batches(backend: Backend, batches: Sequence[Batch]) -> list[dict[str, np.ndarray]]:
    """Outputs of every batch, in order; backends that can score batches concurrently do so."""
    many = getattr(backend, "run_many", None)
    return many(batches) if many is not None else [backend.run(b) for b in batches]


MAX_SESSIONS = 4
# onnxruntime graph fusions that make this network slower on CPU: its fused SkipLayerNormalization and
# BiasGelu kernels run behind the plain Add + LayerNormalization and Add + Gelu they replace (int8, one
# thread, same batches: 1,169 vs 1,027-1,058 texts/s with both off; outputs within 8e-3 of the fused graph,
# far inside int8's own distance from fp32). Re-measure with scripts/bench.py when onnxruntime changes.
SLOWER_FUSIONS = ("SkipLayerNormFusion", "BiasGeluFusion")


class OnnxBackend:
    """onnxruntime tuned for throughput on a few CPU cores.

    With `parallel` (the default when `threads` > 1) the backend holds one session per thread (up to
    MAX_SESSIONS; beyond that each session gets several threads) and `run_many` scores different batches
    on them at once. For a network this small, splitting each operator across threads spends much of
    the time at the barriers between its ~100 operators; whole batches side by side keep every core busy
    (+10-25% texts/s on 2 cores, scripts/bench.py). Each batch is still scored whole by one session, so
    results do not depend on which one, or on the mode.
    """

    def __init__(self, model_dir: Path, quantized: bool | None = None, threads: int | None = None,
                 parallel: bool | None = None) -> None:
        import onnxruntime as ort

        fp32, int8 = model_dir / ONNX_NAME, model_dir / ONNX_INT8_NAME
        if quantized is None:  # prefer the int8 file: faster, same emotion on ~99% of dev
            path = int8 if int8.exists() else fp32
        else:
            path = int8 if quantized else fp32
        if not path.exists():
            raise FileNotFoundError(
                f"{model_dir}: no {path.name}; run `emotag export-onnx {model_dir}"
                f"{' --quantize int8' if path == int8 else ''}` or use --backend torch"
            )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        threads = threads if threads is not None else default_threads()
        self.parallel = threads > 1 if parallel is None else parallel
        # each session holds its own copy of the weights and its own arena (~250 MB for the bundled model),
        # so on many cores the threads are shared out over at most MAX_SESSIONS sessions
        n_sessions = min(threads, MAX_SESSIONS) if self.parallel else 1
        intra = max(1, threads // n_sessions)
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sessions = [ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                              disabled_optimizers=list(SLOWER_FUSIONS))
                         for _ in range(n_sessions)]
        self.session = self.sessions[0]
        self._pool: ThreadPoolExecutor | None = None
        self.path = path
        self.name = "onnx-int8" if path == int8 else "onnx"

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        return self._run(self.session, batch)

    @staticmethod
    def _run(session, batch: Batch) -> dict[str, np.ndarray]:
        out = session.run(list(OUTPUTS), batch.as_dict())
        return dict(zip(OUTPUTS, out, strict=True))

    def run_many(self, batches: Sequence[Batch]) -> list[dict[str, np.ndarray]]:
        """Score `batches` on all sessions at once; each session takes the next unscored batch when free."""
        if len(self.sessions) == 1 or len(batches) < 2:
            return [self.run(b) for b in batches]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self.sessions) - 1, thread_name_prefix="emotag-onnx")
        results: list[dict[str, np.ndarray] | None] = [None] * len(batches)
        lock = threading.Lock()
        # longest batches first: the last batch of a call leaves the other sessions idle until it ends, so
        # it should be a short one (longest-processing-time-first scheduling)
        todo = iter(sorted(range(len(batches)), key=lambda k: -batches[k].input_ids.size))
        failed = threading.Event()

        def work(session) -> None:
            while not failed.is_set():
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results[i] = self._run(session, batches[i])
                except BaseException:
                    failed.set()  # the other workers stop after their current batch
                    raise

        # onnxruntime releases the GIL while it runs: the caller's thread is one of the workers
        futures = [self._pool.submit(work, s) for s in self.sessions[1:]]
        try:
            work(self.session)
        finally:
            errors = [f.exception() for f in futures]  # waits until every worker has stopped
        for e in errors:
            if e is not None:
                raise e
        return results  # type: ignore[return-value]


class TorchBackend:
    """The training-time network in eval mode (needs the [train] extra)."""

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        try:
            import torch

            from emotag.model.modeling import EmotagModel
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the torch backend needs `pip install emotag[train]`") from e
        if not (model_dir / WEIGHTS_NAME).exists():
            raise FileNotFoundError(f"{model_dir}: no {WEIGHTS_NAME}")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = EmotagModel.load(model_dir)
        self.name = "torch"

    def run(self, batch: Batch) -> dict[str, np.ndarray]:
        t = self.torch
        with t.inference_mode():
            out = self.model(
                t.from_numpy(batch.input_ids), t.from_numpy(batch.attention_mask), t.from_numpy(batch.ngram_ids)
            )
        return {k: v.numpy() for k, v in zip(OUTPUTS, out, strict=True)}


def load_backend(model_dir: Path, backend: str = "onnx", threads: int | None = None,
                 quantized: bool | None = None, parallel: bool | None = None) -> Backend:
    """`backend`: "onnx" (int8 if present), "onnx-fp32", "onnx-int8" or "torch".

    `parallel` (onnx only): one single-threaded session per thread, batches side by side (default when
    threads > 1), instead of one session whose operators are split across the threads.
    """
    if backend == "torch":
        return TorchBackend(model_dir, threads)
    if backend in ("onnx", "onnx-fp32", "onnx-int8"):
        q = {"onnx": quantized, "onnx-fp32": False, "onnx-int8": True}[backend]
        return OnnxBackend(model_dir, q, threads, parallel)
    raise ValueError(f"unknown backend {backend!r}; expected onnx, onnx-fp32, onnx-int8 or torch")
