"""`emotag serve`: an HTTP service that tags messages and updates profiles as they arrive.

Modules: `app` (routes and the shared service state), `schema` (request bodies, every refusal naming its
field), `batcher` (micro-batching of concurrent requests into model batches), `security` (API keys with
read/write scopes, the append-only audit log), `metrics` (Prometheus text). Needs the ``[serve]`` extra
(Starlette and uvicorn). See docs/serve.md.
"""

from __future__ import annotations

import os

from emotag.serve.app import SETTINGS_ENV, ServeSettings

__all__ = ["ServeSettings", "check_settings", "run_server"]


#: What `--backend` may name (`emotag.runtime.backends.load_backend`).
BACKENDS = ("onnx", "onnx-fp32", "onnx-int8", "torch")


def check_settings(settings: ServeSettings) -> None:
    """Fail before binding a port: keys present and valid, the model directory and backend usable, rules
    parse, a store has a pseudonymisation key (or --allow-raw-ids) and is compatible with it. Raises the
    profile, key and model errors (one line each; the CLI exits 1).

    Why the model is checked here too: the workers load it after the port is bound, and a load that fails
    there leaves a server that answers every request 503 -- an operator who typed a wrong --model or
    --backend should hear about it at once, not from a dashboard."""
    import importlib.util

    from emotag.model.config import EmotagConfig, resolve_model_dir
    from emotag.profiles.api import plan_profile
    from emotag.serve.security import KEYS_ENV, KeyFileError, load_keys

    if not load_keys(settings.api_keys):
        raise KeyFileError(f"no API keys: pass --api-keys FILE (one 'KEY [read|write]' per line) or set {KEYS_ENV}")
    if settings.backend not in BACKENDS:
        raise ValueError(f"unknown backend {settings.backend!r}; expected {', '.join(BACKENDS)}")
    if settings.backend == "torch" and importlib.util.find_spec("torch") is None:
        raise ValueError("--backend torch needs torch: pip install 'emotag[train]'")
    EmotagConfig.load(resolve_model_dir(settings.model))  # a directory with a readable emotag config
    if settings.store:
        plan_profile(None, rules_path=settings.rules, store_path=settings.store, key_file=settings.key_file,
                     allow_raw_ids=settings.allow_raw_ids, half_life_days=settings.half_life_days, wal=True).close()


def run_server(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, let in-flight requests finish (up to 30 s), drain
    the batch queue and close the audit log."""
    import uvicorn

    check_settings(settings)
    os.environ[SETTINGS_ENV] = settings.to_json()
    uvicorn.run("emotag.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_graceful_shutdown=30, lifespan="on")
