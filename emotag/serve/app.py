"""The `emotag serve` application: routes, authentication, and the service state they share.

Starlette (the ASGI toolkit FastAPI is built on) rather than FastAPI: every body is checked by hand in
`schema` (so each refusal names its field in one fixed JSON shape), which leaves FastAPI's pydantic
models and generated docs nothing to do but add a dependency and per-request validation cost. uvicorn
runs it; docs/serve.md has the full reasoning, the endpoints and the measured numbers.

Every request is handled by one `_handler` wrapper: it times the request for /metrics, turns `BadRequest`
into a 4xx JSON error, `QueueFull` into 503 + Retry-After, and anything unexpected into a 500 JSON error
(logged with its traceback) -- the server never dies on a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from emotag.profiles.api import (
    FoldStats,
    ProfileInputError,
    commit_profiles,
    fold_records,
    plan_profile,
    profile_rows,
)
from emotag.profiles.privacy import resolve_pseudonymizer
from emotag.profiles.rules import load_rules
from emotag.profiles.store import ProfileStore, StoreError
from emotag.serve import schema
from emotag.serve.batcher import MicroBatcher, QueueFull
from emotag.serve.metrics import Metrics
from emotag.serve.security import AuditLog, Caller, KeyRing, key_id, load_keys

log = logging.getLogger("emotag.serve")
SETTINGS_ENV = "EMOTAG_SERVE_SETTINGS"


@dataclass
class ServeSettings:
    """Everything `emotag serve` is started with (passed to uvicorn workers as JSON in the environment)."""

    model: str | None = None
    backend: str = "onnx"
    threads: int | None = None
    store: str | None = None
    key_file: str | None = None
    allow_raw_ids: bool = False
    rules: str | None = None
    api_keys: str | None = None
    audit_log: str | None = None
    half_life_days: float = 30.0
    max_batch: int = 64
    window_ms: float = 3.0
    max_queue: int = 2048
    max_live_dialogues: int = 10_000
    limits: schema.Limits = field(default_factory=schema.Limits)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        d = json.loads(text)
        d["limits"] = schema.Limits(**d.get("limits", {}))
        return cls(**d)


class Service:
    """The state behind the routes: keys, audit log, model batcher, live dialogues, profile store access."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.keys = KeyRing(load_keys(settings.api_keys))
        self.rules = load_rules(settings.rules)
        self.pseudonymizer = (resolve_pseudonymizer(settings.key_file, settings.allow_raw_ids)
                              if settings.store else None)
        self.audit = AuditLog(settings.audit_log) if settings.audit_log else None
        self.metrics = Metrics(lambda: self.batcher.queued if self.batcher else 0)
        self.batcher: MicroBatcher | None = None
        self.model_name: str | None = None
        self.load_error: str | None = None
        self.live: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.store_lock = threading.Lock()  # one writer at a time within this process (SQLite serialises processes)
        self._aspects: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        from emotag.tagger import Tagger

        s = self.settings
        try:
            tagger = await asyncio.to_thread(Tagger.load, s.model, backend=s.backend, threads=s.threads)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the server stays up
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.load_error)
            return
        self.batcher = MicroBatcher(tagger, max_batch=s.max_batch, window_ms=s.window_ms, max_queue=s.max_queue,
                                    on_batch=self.metrics.batch)
        self.batcher.start()
        self.model_name = f"{tagger.config.name} {tagger.config.version}"

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.audit is not None:
            self.audit.close()

    def ready_batcher(self) -> MicroBatcher:
        if self.batcher is None or not self.batcher.running:
            raise schema.BadRequest(503, "model", self.load_error or "the model is still loading; retry shortly")
        return self.batcher

    # -- auth and audit -------------------------------------------------------------------------------

    def caller(self, request: Request, scope: str, audit: str | None = None) -> Caller:
        """The request's key, or 401/403. With `audit` (an audited action), a refusal is audited too."""
        caller = self.keys.lookup(request.headers.get("authorization"))
        if caller is None:
            if audit:
                self.record(None, audit, 401)
            raise schema.BadRequest(401, "authorization", "missing or unknown API key (Authorization: Bearer <key>)")
        if not caller.can(scope):
            if audit:
                self.record(caller, audit, 403)
            raise schema.BadRequest(403, "authorization", f"this key has the '{caller.scope}' scope; "
                                    f"this endpoint needs '{scope}'")
        return caller

    def record(self, caller: Caller | None, action: str, status: int, **what: Any) -> None:
        if self.audit is not None:
            self.audit.record(caller, action, status, **what)

    # -- model work (on the batcher's model thread) ---------------------------------------------------

    def score_dialogue(self, conv: dict[str, Any]) -> dict[str, Any]:
        from emotag.dialogues import conversations_from_records, score_conversations

        tagger = self.ready_batcher().tagger
        return next(score_conversations(tagger, conversations_from_records([conv])))

    def aspects_for(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        """SPEC §7 aspects per text; 400 when this install has no aspect extractor (module or weights)."""
        if self._aspects is None:
            try:
                from emotag.aspects.extract import AspectExtractor

                self._aspects = AspectExtractor.load()
            except (ImportError, OSError) as exc:
                raise schema.BadRequest(400, "aspects", f"aspects are not available in this install ({exc})") from None
        return [[a.to_dict() for a in units] for units in self._aspects.extract_many(texts)]

    # -- the profile store (on worker threads) --------------------------------------------------------

    def commit_events(self, events: list[dict[str, Any]], batch_id: str) -> dict[str, Any]:
        """plan -> fold -> commit, the path `emotag profile` and Spark take; returns the response body."""
        s = self.settings
        with self.store_lock, plan_profile(
            None, "user_id", "time", self.rules, s.store, s.key_file, s.allow_raw_ids,
            half_life_days=s.half_life_days, batch_id=batch_id, pseudonymizer=self.pseudonymizer, wal=True,
        ) as plan:
            stats = FoldStats()
            states = fold_records(plan, events, stats, strict=True)
            result = commit_profiles(plan, states, stats, source="serve")
        return {"batch_id": batch_id, "already_applied": result.already_applied, "folded": stats.folded,
                "skipped_error": stats.skipped_error, "users": sorted(result.states)}

    def read_profile(self, pseudonym: str) -> dict[str, Any] | None:
        with ProfileStore(self.settings.store, wal=True) as store:  # type: ignore[arg-type]
            state = store.get(pseudonym)
            if state is None:
                return None
            return next(profile_rows([(pseudonym, state)], self.rules, store.max_time))


# -- request plumbing ---------------------------------------------------------------------------------


def _error(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


async def _body(request: Request, limit: int) -> Any:
    """The JSON body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise schema.BadRequest(413, "body", f"body is {declared} bytes; the limit is {limit}")
    parts, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise schema.BadRequest(413, "body", f"body is over the limit of {limit} bytes")
        parts.append(chunk)
    return schema.parse_json(b"".join(parts))


Handler = Callable[[Service, Request], Awaitable[Response]]


def _handler(route: str, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        service: Service = request.app.state.service
        t0 = time.perf_counter()
        try:
            response = await fn(service, request)
        except schema.BadRequest as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            if exc.status == 503:
                headers = {"Retry-After": "2"}
            response = _error(exc.status, exc.field, exc.message, headers)
        except QueueFull as exc:
            response = _error(503, "queue", str(exc), {"Retry-After": str(exc.retry_after)})
        except Exception:  # noqa: BLE001 - a bug answers 500; the server keeps serving
            log.exception("internal error on %s", route)
            response = _error(500, "server", "internal error (a bug, not your request); it has been logged")
        service.metrics.request(request.method, route, response.status_code, time.perf_counter() - t0)
        return response

    return endpoint


def _flag(request: Request, name: str) -> bool:
    v = request.query_params.get(name)
    if v is None or v.lower() in ("false", "0", "no"):
        return False
    if v.lower() in ("true", "1", "yes", ""):
        return True
    raise schema.BadRequest(422, name, f"expected true or false, got {v!r}")


# -- routes -------------------------------------------------------------------------------------------


async def tag(service: Service, request: Request) -> Response:
    service.caller(request, "read")
    texts, single = schema.tag_texts(await _body(request, service.settings.limits.max_body_bytes),
                                     service.settings.limits)
    want_aspects = _flag(request, "aspects")
    batcher = service.ready_batcher()
    records = [r.to_dict() for r in await batcher.submit(texts)]
    if want_aspects:
        ok = [i for i, r in enumerate(records) if r["error"] is None]
        units = await batcher.run_model(service.aspects_for, [texts[i] for i in ok])
        for r in records:
            r["aspects"] = None
        for i, u in zip(ok, units, strict=True):
            records[i]["aspects"] = u
    return JSONResponse(records[0] if single else {"results": records})


async def dialogue(service: Service, request: Request) -> Response:
    service.caller(request, "read")
    conv = schema.dialogue(await _body(request, service.settings.limits.max_body_bytes), service.settings.limits)
    conv.setdefault("id", uuid.uuid4().hex)
    record = await service.ready_batcher().run_model(service.score_dialogue, conv)
    _remember(service, str(conv["id"]), conv)
    return JSONResponse(record)


async def dialogue_turn(service: Service, request: Request) -> Response:
    service.caller(request, "read")
    cid = request.path_params["conversation_id"]
    limits = service.settings.limits
    turn = schema.turn(await _body(request, limits.max_body_bytes), "body", limits)
    conv = service.live.get(cid) or {"id": cid, "turns": []}
    if len(conv["turns"]) >= limits.max_turns:
        raise schema.BadRequest(422, "turns", f"conversation {cid!r} has {limits.max_turns} turns, the limit")
    conv = {**conv, "turns": [*conv["turns"], turn]}
    record = await service.ready_batcher().run_model(service.score_dialogue, conv)
    _remember(service, cid, conv)
    state = {"turns": len(conv["turns"]), "customer_emotion": record.get("end_emotion"),
             "satisfaction": record.get("satisfaction"), "resolved": record.get("resolved")}
    return JSONResponse({**record, "state": state})


def _remember(service: Service, cid: str, conv: dict[str, Any]) -> None:
    """Keep a live conversation (most recently used last); the oldest go beyond the bound."""
    service.live[cid] = conv
    service.live.move_to_end(cid)
    while len(service.live) > service.settings.max_live_dialogues:
        service.live.popitem(last=False)


def _no_store(service: Service) -> None:
    if not service.settings.store:
        raise schema.BadRequest(501, "store", "this server has no profile store (start it with --store)")


async def events(service: Service, request: Request) -> Response:
    caller = service.caller(request, "write", audit="events.write")
    _no_store(service)
    try:
        evs, batch_id = schema.events(await _body(request, service.settings.limits.max_body_bytes),
                                      service.settings.limits)
    except schema.BadRequest as exc:
        service.record(caller, "events.write", exc.status, field=exc.field)
        raise
    if batch_id is None:  # the CLI's rule: the same content is the same batch (a retried request is a no-op)
        canon = json.dumps(evs, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        batch_id = "events-sha256:" + hashlib.sha256(canon.encode("utf-8")).hexdigest()
    raw = [i for i, e in enumerate(evs) if e.get("polarity_score") is None]
    if raw:
        results = await service.ready_batcher().submit([evs[i]["text"] for i in raw])
        for i, r in zip(raw, results, strict=True):
            scored = r.to_dict()
            scored.pop("id")
            evs[i].update(scored)
    for e in evs:
        e.pop("text", None)  # raw text is never folded (the fold ignores it too)
    try:
        body = await asyncio.to_thread(service.commit_events, evs, batch_id)
    except ProfileInputError as exc:
        service.record(caller, "events.write", 422, batch_id=batch_id, events=len(evs))
        raise schema.BadRequest(422, f"events[{exc.row}]", exc.problem) from None
    except StoreError as exc:
        service.record(caller, "events.write", 409, batch_id=batch_id, events=len(evs))
        raise schema.BadRequest(409, "store", str(exc)) from None
    service.metrics.folded(body["folded"] if not body["already_applied"] else 0)
    service.record(caller, "events.write", 200, batch_id=batch_id, events=len(evs), folded=body["folded"],
                   users=len(body["users"]), already_applied=body["already_applied"])
    return JSONResponse(body)


async def profile(service: Service, request: Request) -> Response:
    caller = service.caller(request, "read", audit="profile.read")
    _no_store(service)
    pseudonym = request.path_params["pseudonym"]
    row = await asyncio.to_thread(service.read_profile, pseudonym)
    # a miss may be a raw id typed by mistake: the audit log keeps only a hash of it, never the value
    service.record(caller, "profile.read", 200 if row else 404,
                   **({"pseudonym": pseudonym} if row else {"requested": key_id(pseudonym)}))
    if row is None:
        raise schema.BadRequest(404, "pseudonym", "no profile for this pseudonym")
    return JSONResponse(row)


async def healthz(service: Service, request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(service: Service, request: Request) -> Response:
    if service.batcher is None or not service.batcher.running:
        return JSONResponse({"ready": False, "error": service.load_error}, status_code=503)
    return JSONResponse({"ready": True, "model": service.model_name, "queued": service.batcher.queued})


async def metrics(service: Service, request: Request) -> Response:
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(settings: ServeSettings) -> Starlette:
    """The ASGI app. Raises KeyFileError, RulesError, PseudonymKeyError for bad settings (before serving)."""
    service = Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(service.start())  # /healthz answers while the model loads
        try:
            yield
        finally:
            await task
            await service.stop()

    routes = [
        Route("/v1/tag", _handler("/v1/tag", tag), methods=["POST"]),
        Route("/v1/dialogues", _handler("/v1/dialogues", dialogue), methods=["POST"]),
        Route("/v1/dialogues/{conversation_id}/turns", _handler("/v1/dialogues/{id}/turns", dialogue_turn),
              methods=["POST"]),
        Route("/v1/events", _handler("/v1/events", events), methods=["POST"]),
        Route("/v1/profiles/{pseudonym}", _handler("/v1/profiles/{pseudonym}", profile), methods=["GET"]),
        Route("/healthz", _handler("/healthz", healthz), methods=["GET"]),
        Route("/readyz", _handler("/readyz", readyz), methods=["GET"]),
        Route("/metrics", _handler("/metrics", metrics), methods=["GET"]),
    ]
    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return _error(status, "path", getattr(exc, "detail", "") or "no such endpoint or method")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: http_error, 405: http_error})
    app.state.service = service
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory for worker processes: the settings travel in $EMOTAG_SERVE_SETTINGS."""
    import os

    return create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
