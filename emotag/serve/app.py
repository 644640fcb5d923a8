"""The `emotag serve` application: routes, authentication, and the service state they share.

Starlette (the ASGI toolkit FastAPI is built on) rather than FastAPI: every body is checked by hand in
`schema` (so each refusal names its field in one fixed JSON shape), which leaves FastAPI's pydantic
models and generated docs nothing to do but add a dependency and per-request validation cost. uvicorn
runs it; docs/serve.md has the full reasoning, the endpoints and the measured numbers.

Every request is handled by one `_handler` wrapper: it times the request for /metrics, turns `BadRequest`
into a 4xx/5xx JSON error (with the headers it carries), `QueueFull` into 503 + Retry-After, and anything unexpected into a 500 JSON error
(logged with its traceback) -- the server never dies on a request.

The routes are dispatched by `FrontRouter`, a few lines of ASGI in front of Starlette: a dict lookup on
(method, path) and a small request object read straight from the ASGI scope. Starlette's middleware stack,
regex routing and `Request` cost more Python per request than the route itself, and under load that
Python runs on the same two cores (and under the same GIL) as the model's text preparation. Anything the
front does not know (404, 405) goes on to Starlette, which also runs the lifespan (model load, drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Union
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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
from emotag.serve.batcher import MicroBatcher, QueueFull, TooManyTexts
from emotag.serve.metrics import Metrics
from emotag.serve.security import AuditLog, Caller, KeyRing, key_id, load_keys
from emotag.tagger import Result

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


class KeyedLocks:
    """One asyncio lock per key (a conversation id), kept only while a request holds or awaits it.

    Why: appending a turn reads the conversation, awaits the model, then stores the longer conversation;
    two appends to one conversation that overlap would both start from the same old turns and the later
    store would drop the other's turn. Appends to *different* conversations still run side by side (and
    share model batches). The locks live in the event loop's thread only, so a dict needs no lock itself;
    an entry goes once its last holder leaves, so idle conversations cost nothing.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:  # FIFO: turns are applied in the order their requests reached this point
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


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
        self.dialogue_locks = KeyedLocks()  # one live conversation's turns are appended one at a time
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
        """The running batcher, or 503 `model`: with Retry-After while the model loads, without it once the
        load has failed (a retry cannot succeed until the server is restarted; /readyz has the error)."""
        if self.batcher is None or not self.batcher.running:
            if self.load_error:
                raise schema.BadRequest(503, "model", f"the model failed to load: {self.load_error}")
            raise schema.BadRequest(503, "model", "the model is still loading; retry shortly", {"Retry-After": "2"})
        return self.batcher

    # -- auth and audit -------------------------------------------------------------------------------

    def caller(self, request: AnyRequest, scope: str, audit: str | None = None) -> Caller:
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


class _Headers:
    """Request headers by lower-case name (the first of repeated ones, as Starlette's `Headers.get`)."""

    __slots__ = ("_map", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        if self._map is None:
            self._map = {}
            for k, v in self._raw:
                self._map.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        return self._map.get(name, default)


class LightRequest:
    """The part of a request the routes read (method, headers, query, path parameters, body stream),
    straight from the ASGI scope: building Starlette's `Request` and its middleware context costs more
    per request than the route's own work on a one-text `/v1/tag`."""

    __slots__ = ("_headers", "_query", "_receive", "path_params", "scope")

    def __init__(self, scope: Scope, receive: Receive, path_params: dict[str, str]) -> None:
        self.scope = scope
        self._receive = receive
        self.path_params = path_params
        self._headers: _Headers | None = None
        self._query: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def headers(self) -> _Headers:
        if self._headers is None:
            self._headers = _Headers(self.scope["headers"])
        return self._headers

    @property
    def query_params(self) -> dict[str, str]:
        if self._query is None:  # as Starlette: blank values kept, the last of repeated names wins
            qs = self.scope.get("query_string", b"")
            self._query = dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {}
        return self._query

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return


#: What a route reads: Starlette's request (through the fallback routes) or the front's `LightRequest`.
AnyRequest = Union[Request, LightRequest]  # noqa: UP007 - a runtime alias


class JSONAnswer:
    """A JSON response as one ASGI start and one body message (compact, UTF-8, NaN refused as Starlette's
    `JSONResponse` does), with the headers encoded once when it is built."""

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self.status_code = status_code
        self.raw_headers = [(b"content-length", str(len(self.body)).encode("ascii")),
                            (b"content-type", b"application/json")]
        for k, v in (headers or {}).items():
            self.raw_headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


Answer = Union[Response, JSONAnswer]  # noqa: UP007 - a runtime alias


def _error(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONAnswer:
    return JSONAnswer({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


#: Result fields that are not record keys as such: `aspects` (a record with units takes `to_dict`) and
#: `asked_aspects` (a flag that gives an error row `aspects: null`; `to_dict` again), where Result has it.
_NOT_RECORD_KEYS = frozenset({"aspects", "asked_aspects"})
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Result) if f.name not in _NOT_RECORD_KEYS)


def record_dict(r: Result) -> dict[str, Any]:
    """`r.to_dict()` for a record without aspects, without its deep copy: `dataclasses.asdict` recurses
    into the emotions dict of every record, a tenth of the event loop's time per one-text request. The
    dict is serialised at once, so sharing the Result's emotions dict is safe. tests/test_serve.py checks
    that it equals `to_dict()`; a record with aspects takes `to_dict()` itself."""
    if r.aspects is not None or getattr(r, "asked_aspects", False):
        return r.to_dict()
    d = {name: getattr(r, name) for name in _RECORD_FIELDS}
    if d["score"] is None:  # only a regression model's records carry `score`, as the last field
        del d["score"]
    else:
        d["score"] = d.pop("score")
    return d


async def _body(request: AnyRequest, limit: int) -> Any:
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
    return schema.parse_json(parts[0] if len(parts) == 1 else b"".join(parts))


Handler = Callable[["Service", Any], Awaitable[Answer]]
Endpoint = Callable[[Any], Awaitable[Answer]]


def _handler(route: str, fn: Handler, service: Service) -> Endpoint:
    async def endpoint(request: AnyRequest) -> Answer:
        t0 = time.perf_counter()
        try:
            response = await fn(service, request)
        except schema.BadRequest as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
            response = _error(exc.status, exc.field, exc.message, headers)
        except QueueFull as exc:
            response = _error(503, "queue", str(exc), {"Retry-After": str(exc.retry_after)})
        except TooManyTexts as exc:  # the routes check first (`_admissible`, naming their field); a safety net
            response = _error(422, "texts", str(exc))
        except ClientDisconnect:  # nobody is left to answer; not a server error
            response = _error(400, "body", "the client disconnected before sending its body")
        except Exception:  # noqa: BLE001 - a bug answers 500; the server keeps serving
            log.exception("internal error on %s", route)
            response = _error(500, "server", "internal error (a bug, not your request); it has been logged")
        service.metrics.request(request.method, route, response.status_code, time.perf_counter() - t0)
        return response

    return endpoint


class FrontRouter:
    """ASGI app in front of Starlette: the service's routes by a dict lookup on (method, path), or by
    segments for the two paths with a parameter; everything else (404, 405, HEAD, lifespan) is Starlette's.

    Why not Starlette's router: for a one-text `/v1/tag` its middleware stack, regex matching and
    `Request` were more of the event loop's Python per request than the route itself (py-spy, GIL
    samples), and that Python shares the GIL and the two cores with the model's text preparation.
    """

    def __init__(self, app: Starlette, routes: list[tuple[str, str, Endpoint]]) -> None:
        self.app = app
        self.state = app.state
        self.static: dict[tuple[str, str], Endpoint] = {}
        self.templated: list[tuple[str, list[str], Endpoint]] = []
        for method, path, endpoint in routes:
            if "{" in path:
                self.templated.append((method, path.split("/"), endpoint))
            else:
                self.static[(method, path)] = endpoint

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        endpoint = self.static.get((method, path))
        if endpoint is not None:
            return endpoint, {}
        parts = path.split("/")
        for m, template, endpoint in self.templated:
            if m != method or len(template) != len(parts):
                continue
            params = {}
            for want, got in zip(template, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return endpoint, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = self.match(scope["method"], scope["path"])
            if hit is not None:
                endpoint, params = hit
                response = await endpoint(LightRequest(scope, receive, params))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _flag(request: AnyRequest, name: str) -> bool:
    v = request.query_params.get(name)
    if v is None or v.lower() in ("false", "0", "no"):
        return False
    if v.lower() in ("true", "1", "yes", ""):
        return True
    raise schema.BadRequest(422, name, f"expected true or false, got {v!r}")


# -- routes -------------------------------------------------------------------------------------------


def _admissible(batcher: MicroBatcher, n: int, field: str) -> None:
    """422 for a request of more texts than the queue bound: the queue could never take it, so the 503
    "retry later" of a full queue would be a lie (docs/serve.md, backpressure)."""
    if n > batcher.max_queue:
        raise schema.BadRequest(422, field, f"{n} texts to score; this server queues at most {batcher.max_queue} "
                                "(--max-queue): send them in smaller requests")


async def tag(service: Service, request: AnyRequest) -> Answer:
    service.caller(request, "read")
    texts, single = schema.tag_texts(await _body(request, service.settings.limits.max_body_bytes),
                                     service.settings.limits)
    want_aspects = _flag(request, "aspects")
    batcher = service.ready_batcher()
    _admissible(batcher, len(texts), "texts")
    records = [record_dict(r) for r in await batcher.submit(texts)]
    if want_aspects:
        ok = [i for i, r in enumerate(records) if r["error"] is None]
        units = await batcher.run_model(service.aspects_for, [texts[i] for i in ok])
        for r in records:
            r["aspects"] = None
        for i, u in zip(ok, units, strict=True):
            records[i]["aspects"] = u
    return JSONAnswer(records[0] if single else {"results": records})


async def dialogue(service: Service, request: AnyRequest) -> Answer:
    service.caller(request, "read")
    conv = schema.dialogue(await _body(request, service.settings.limits.max_body_bytes), service.settings.limits)
    conv.setdefault("id", uuid.uuid4().hex)
    cid = str(conv["id"])
    async with service.dialogue_locks.hold(cid):  # not in the middle of a turn being appended to it
        record = await service.ready_batcher().run_model(service.score_dialogue, conv)
        _remember(service, cid, conv)
    return JSONAnswer(record)


async def dialogue_turn(service: Service, request: AnyRequest) -> Answer:
    service.caller(request, "read")
    cid = request.path_params["conversation_id"]
    limits = service.settings.limits
    turn = schema.turn(await _body(request, limits.max_body_bytes), "body", limits)  # fields named bare
    batcher = service.ready_batcher()
    # read, score and store under the conversation's lock: a concurrent append waits for this one and then
    # starts from the conversation with this turn in it (no lost turns, one order for all answers)
    async with service.dialogue_locks.hold(cid):
        conv = service.live.get(cid) or {"id": cid, "turns": []}
        if len(conv["turns"]) >= limits.max_turns:
            raise schema.BadRequest(422, "turns", f"conversation {cid!r} has {limits.max_turns} turns, the limit")
        conv = {**conv, "turns": [*conv["turns"], turn]}
        record = await batcher.run_model(service.score_dialogue, conv)
        _remember(service, cid, conv)
    state = {"turns": len(conv["turns"]), "customer_emotion": record.get("end_emotion"),
             "satisfaction": record.get("satisfaction"), "resolved": record.get("resolved")}
    return JSONAnswer({**record, "state": state})


def _remember(service: Service, cid: str, conv: dict[str, Any]) -> None:
    """Keep a live conversation (most recently used last); the oldest go beyond the bound."""
    service.live[cid] = conv
    service.live.move_to_end(cid)
    while len(service.live) > service.settings.max_live_dialogues:
        service.live.popitem(last=False)


def _no_store(service: Service) -> None:
    if not service.settings.store:
        raise schema.BadRequest(501, "store", "this server has no profile store (start it with --store)")


async def events(service: Service, request: AnyRequest) -> Answer:
    caller = service.caller(request, "write", audit="events.write")  # audits its own 401/403
    what: dict[str, Any] = {}  # what the audit line can say so far: the count, then the batch id
    # every write is audited, accepted or refused (docs/serve.md): everything after the key check runs in
    # this one try, so a refusal -- no store, a bad body, the batch id's hash, the fold, even a bug's 500 --
    # always leaves its line
    try:
        _no_store(service)
        evs, batch_id = schema.events(await _body(request, service.settings.limits.max_body_bytes),
                                      service.settings.limits)
        what["events"] = len(evs)
        if batch_id is None:  # the CLI's rule: the same content is the same batch (a retried request is a no-op)
            canon = json.dumps(evs, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            batch_id = "events-sha256:" + hashlib.sha256(canon.encode("utf-8")).hexdigest()
        what["batch_id"] = batch_id
        await _score_raw_texts(service, evs)
        body = await asyncio.to_thread(service.commit_events, evs, batch_id)
    except ProfileInputError as exc:
        service.record(caller, "events.write", 422, field=f"events[{exc.row}]", **what)
        raise schema.BadRequest(422, f"events[{exc.row}]", exc.problem) from None
    except StoreError as exc:
        service.record(caller, "events.write", 409, field="store", **what)
        raise schema.BadRequest(409, "store", str(exc)) from None
    except schema.BadRequest as exc:  # 501 no store, 4xx the body, 503 the model
        service.record(caller, "events.write", exc.status, field=exc.field, **what)
        raise
    except QueueFull:
        service.record(caller, "events.write", 503, field="queue", **what)
        raise
    except ClientDisconnect:
        service.record(caller, "events.write", 400, field="body", **what)
        raise
    except Exception:
        service.record(caller, "events.write", 500, **what)
        raise
    service.metrics.folded(body["folded"] if not body["already_applied"] else 0)
    service.record(caller, "events.write", 200, batch_id=batch_id, events=len(evs), folded=body["folded"],
                   users=len(body["users"]), already_applied=body["already_applied"])
    return JSONAnswer(body)


async def _score_raw_texts(service: Service, evs: list[dict[str, Any]]) -> None:
    """Score the events that came as raw text, in place, and drop every event's text (never folded)."""
    # an `error` record is no text to score: the fold skips and counts it, as `emotag profile` does
    raw = [i for i, e in enumerate(evs) if e.get("polarity_score") is None and not e.get("error")]
    if raw:
        batcher = service.ready_batcher()
        _admissible(batcher, len(raw), "events")
        results = await batcher.submit([evs[i]["text"] for i in raw])
        for i, r in zip(raw, results, strict=True):
            scored = r.to_dict()
            scored.pop("id")
            evs[i].update(scored)
    for e in evs:
        e.pop("text", None)  # raw text is never folded (the fold ignores it too)


async def profile(service: Service, request: AnyRequest) -> Answer:
    caller = service.caller(request, "read", audit="profile.read")  # audits its own 401/403
    pseudonym = request.path_params["pseudonym"]
    try:  # every profile read is audited, refused ones too (docs/serve.md)
        _no_store(service)
        row = await asyncio.to_thread(service.read_profile, pseudonym)
    except schema.BadRequest as exc:
        service.record(caller, "profile.read", exc.status, field=exc.field, requested=key_id(pseudonym))
        raise
    except Exception:
        service.record(caller, "profile.read", 500, requested=key_id(pseudonym))
        raise
    # a miss may be a raw id typed by mistake: the audit log keeps only a hash of it, never the value
    service.record(caller, "profile.read", 200 if row else 404,
                   **({"pseudonym": pseudonym} if row else {"requested": key_id(pseudonym)}))
    if row is None:
        raise schema.BadRequest(404, "pseudonym", "no profile for this pseudonym")
    return JSONAnswer(row)


async def healthz(service: Service, request: AnyRequest) -> Answer:
    return JSONAnswer({"status": "ok"})


async def readyz(service: Service, request: AnyRequest) -> Answer:
    if service.batcher is None or not service.batcher.running:
        return JSONAnswer({"ready": False, "error": service.load_error}, status_code=503)
    return JSONAnswer({"ready": True, "model": service.model_name, "queued": service.batcher.queued})


async def metrics(service: Service, request: AnyRequest) -> Answer:
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(settings: ServeSettings) -> FrontRouter:
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

    table: list[tuple[str, str, str, Handler]] = [  # method, path, metrics route label, handler
        ("POST", "/v1/tag", "/v1/tag", tag),
        ("POST", "/v1/dialogues", "/v1/dialogues", dialogue),
        ("POST", "/v1/dialogues/{conversation_id}/turns", "/v1/dialogues/{id}/turns", dialogue_turn),
        ("POST", "/v1/events", "/v1/events", events),
        ("GET", "/v1/profiles/{pseudonym}", "/v1/profiles/{pseudonym}", profile),
        ("GET", "/healthz", "/healthz", healthz),
        ("GET", "/readyz", "/readyz", readyz),
        ("GET", "/metrics", "/metrics", metrics),
    ]
    endpoints = [(method, path, _handler(label, fn, service)) for method, path, label, fn in table]
    # the same endpoints as Starlette routes: the front serves them; these answer HEAD, and let Starlette
    # tell 405 (known path, other method) from 404
    routes = [Route(path, _starlette_endpoint(ep), methods=[method]) for method, path, ep in endpoints]

    async def http_error(request: Request, exc: Exception) -> Answer:
        # the exception's headers travel with the answer: a 405 must name the methods it allows (`Allow`)
        status = getattr(exc, "status_code", 500)
        headers = getattr(exc, "headers", None)
        return _error(status, "path", getattr(exc, "detail", "") or "no such endpoint or method",
                      dict(headers) if headers else None)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: http_error, 405: http_error})
    # no 307 from /v1/tag/ to /v1/tag: a redirected POST is a bare, empty answer many clients do not follow
    # with their body; an unknown path is a 404 in the error shape, like any other
    app.router.redirect_slashes = False
    app.state.service = service
    return FrontRouter(app, endpoints)


def _starlette_endpoint(endpoint: Endpoint) -> Callable[[Request], Awaitable[Answer]]:
    async def run(request: Request) -> Answer:
        return await endpoint(request)

    return run


def app_from_env() -> FrontRouter:
    """uvicorn's factory for worker processes: the settings travel in $EMOTAG_SERVE_SETTINGS."""
    import os

    return create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
