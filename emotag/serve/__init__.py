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


def check_settings(settings: ServeSettings) -> None:
    """Fail before binding a port: keys present and valid, rules parse, a store has a pseudonymisation key
    (or --allow-raw-ids) and is compatible with it. Raises the profile and key errors (one line each)."""
    from emotag.profiles.api import plan_profile
    from emotag.serve.security import KEYS_ENV, KeyFileError, load_keys

    if not load_keys(settings.api_keys):
        raise KeyFileError(f"no API keys: pass --api-keys FILE (one 'KEY [read|write]' per line) or set {KEYS_ENV}")
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
