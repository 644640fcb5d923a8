"""`emotag serve` end to end: a real uvicorn server in a subprocess on a free 127.0.0.1 port.

Each endpoint, API keys and scopes, the audit log, the bad inputs the service must refuse with a JSON
error naming the field, backpressure (503 + Retry-After), and one kill -9: an event batch acknowledged
with 200 is in the store after a restart, exactly once. The bundled model scores; only clear-cut
sentences are pinned (很好吃 positive, 太难吃了 negative).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("EMOTAG_SKIP_SERVE") == "1":
        pytest.skip("EMOTAG_SKIP_SERVE=1", allow_module_level=True)
    pytest.fail("starlette/uvicorn are not installed: run `make test` (installs the [serve] extra) or "
                "`pip install -e '.[serve]'`; set EMOTAG_SKIP_SERVE=1 to skip these tests deliberately",
                pytrace=False)

from emotag.profiles import ProfileStore, Pseudonymizer  # noqa: E402

READ = "read-key-0123456789abcdef"
WRITE = "write-key-0123456789abcdef"
PSEUDO_KEY = "serve-test-pseudonym-key-0123456789"
LONG = "这个东西质量很好，物流也很快，客服态度不错，下次还会再来买的。" * 16  # ~500 characters, 16 sentences
EMOTIONS = {"neutral": 0.1, "like": 0.1, "happiness": 0.5, "sadness": 0.1, "anger": 0.05, "disgust": 0.05,
            "fear": 0.05, "surprise": 0.05}
SCORED = {"user_id": "u9", "time": "2024-05-01T10:00:00+08:00", "emotions": {"anger": 1.0}, "polarity_score": -0.6}
HUGE = 10**400  # valid JSON (any number of digits), but past float range


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None, key: str | None = READ, raw: bytes | None = None,
         ) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (None if body is None else json.dumps(body, ensure_ascii=False).encode())
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    try:
        payload: Any = json.loads(text)
    except ValueError:
        payload = text
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload


class Server:
    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir, self.args, self.env = workdir, args, env or {}
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> Server:
        """Start and wait until /readyz is 200 (`ready`) or, for a model meant to fail, reports the error."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "EMOTAG_PSEUDONYM_KEY": PSEUDO_KEY, **self.env}
        self.log = (self.workdir / f"server-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emotag.cli", "serve", "--port", str(self.port), "--threads", "1", *self.args],
            cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / f"server-{self.port}.log").read_text()
            try:
                status, _, body = call(self.port, "GET", "/readyz", key=None)
                if status == 200 if ready else isinstance(body, dict) and body.get("error"):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve")
    (work / "keys.txt").write_text(f"# test keys\n{READ}\n{WRITE} write\n", encoding="utf-8")
    srv = Server(work, "--api-keys", "keys.txt", "--store", "p.db", "--max-batch", "16")
    srv.start()
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down


def test_tag_one_text_and_a_list(server: Server) -> None:
    status, _, rec = call(server.port, "POST", "/v1/tag", {"text": "很好吃"})
    assert status == 200 and rec["polarity"] == "positive" and rec["error"] is None and rec["id"] == 0
    assert set(rec) == {"id", "emotion", "emotions", "polarity", "polarity_score", "intensity", "error"}
    status, _, body = call(server.port, "POST", "/v1/tag", {"texts": ["太难吃了", "", "很好吃"]})
    assert status == 200
    res = body["results"]
    assert [r["id"] for r in res] == [0, 1, 2]
    assert res[0]["polarity"] == "negative" and res[2]["polarity"] == "positive"
    assert res[1]["error"] and res[1]["emotions"] is None  # one record per text, even an empty one


def test_tag_with_aspects(server: Server) -> None:
    """SPEC §7 aspects when the extractor is installed; otherwise a 400 that says so, never a 500."""
    texts = ["包装太简陋了，味道还不错", ""]
    try:
        from emotag.aspects.extract import AspectExtractor

        want = [a.to_dict() for a in AspectExtractor.load().extract_many(texts[:1])[0]]
    except (ImportError, OSError):
        want = None
    status, _, body = call(server.port, "POST", "/v1/tag?aspects=true", {"texts": texts})
    if want is None:
        assert status == 400 and body["error"]["field"] == "aspects"
        return
    assert status == 200
    first, empty = body["results"]
    assert first["aspects"] == want and first["polarity"]  # the library's units, beside the SPEC §2 record
    assert empty["error"] and empty["aspects"] is None
    assert "aspects" not in call(server.port, "POST", "/v1/tag", {"text": texts[0]})[2]


def test_concurrent_requests_share_batches_and_keep_their_own_results(server: Server) -> None:
    texts = ["很好吃", "太难吃了"] * 12
    out: dict[int, Any] = {}

    def one(i: int) -> None:
        out[i] = call(server.port, "POST", "/v1/tag", {"text": texts[i]})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out[i][0] == 200 for i in out)
    assert [out[i][2]["polarity"] for i in range(len(texts))] == ["positive", "negative"] * 12
    _, _, metrics = call(server.port, "GET", "/metrics", key=None)
    count = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("emotag_batch_size_count")))
    total = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("emotag_batch_size_sum")))
    assert total >= 24 and count < total  # some batches held more than one request's text


def test_keys_and_scopes(server: Server) -> None:
    status, headers, body = call(server.port, "POST", "/v1/tag", {"text": "很好吃"}, key=None)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and "results" not in body
    assert call(server.port, "POST", "/v1/tag", {"text": "很好吃"}, key="not-a-key-0123456789")[0] == 401
    status, _, body = call(server.port, "POST", "/v1/events", {"events": []}, key=READ)
    assert status == 403 and "'write'" in body["error"]["message"]
    assert call(server.port, "GET", "/v1/profiles/abc", key=None)[0] == 401


@pytest.mark.parametrize(
    ("path", "raw", "status", "field"),
    [
        ("/v1/tag", b'{"text": ', 400, "body"),
        ("/v1/tag", b"\xff\xfe", 400, "body"),
        ("/v1/tag", b'{"txt": "x"}', 422, "txt"),
        ("/v1/tag", b'{"texts": ["ok", 3]}', 422, "texts[1]"),
        ("/v1/tag", b'{"text": "a", "texts": ["b"]}', 422, "text"),
        ("/v1/tag", json.dumps({"texts": ["x"] * 300}).encode(), 422, "texts"),
        ("/v1/tag", json.dumps({"text": "好" * 20_001}).encode(), 422, "text"),
        ("/v1/tag", b"[" + b'"x",' * 400_000 + b'"x"]', 413, "body"),
        ("/v1/tag?aspects=maybe", b'{"text": "x"}', 422, "aspects"),
        ("/v1/dialogues", b'{"turns": [{"speaker": "customer"}]}', 422, "turns[0].text"),
        # a posted turn's fields are top-level: named bare, as on every endpoint (docs/serve.md)
        ("/v1/dialogues/c9/turns", b'{"speaker": "customer", "text": "x", "time": "soon"}', 422, "time"),
        ("/v1/dialogues/c9/turns", '{"speaker": "", "text": "好"}'.encode(), 422, "speaker"),
        ("/v1/dialogues/c9/turns", b'{"speaker": "customer", "text": "x", "extra": 1}', 422, "extra"),
        ("/v1/dialogues/c9/turns", b'{"speaker": "customer"}', 422, "text"),
        ("/v1/tag", b"[" * 100_000 + b"]" * 100_000, 400, "body"),  # deeper than the parser's stack
        ("/v1/dialogues/c1/turns", b'{"speaker": "customer", "text": "x", "time": 1%s}' % (b"0" * 400), 422,
         "time"),
        ("/v1/dialogues", b'{"turns": [{"speaker": "customer", "text": "x", "time": 1%s}]}' % (b"0" * 400), 422,
         "turns[0].time"),
    ],
)
def test_bad_requests_name_the_field(server: Server, path: str, raw: bytes, status: int, field: str) -> None:
    got, _, body = call(server.port, "POST", path, raw=raw)
    assert (got, body["error"]["field"]) == (status, field), body
    assert call(server.port, "GET", "/healthz", key=None)[0] == 200  # the server never dies on a request


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"user_id": "u1", "time": "", "text": "x"}, "events[0].time"),
        ({"user_id": "u1", "time": "next tuesday", "text": "x"}, "events[0].time"),
        ({"time": "2025-01-01T10:00:00+08:00", "text": "x"}, "events[0].user_id"),
        ({"user_id": "u1", "time": "2025-01-01T10:00:00+08:00"}, "events[0]"),
        ({"user_id": "u1", "time": "2025-01-01T10:00:00+08:00", "text": "x", "mood": 1}, "events[0].mood"),
        ({"user_id": "u1", "time": "2025-01-01T10:00:00+08:00", "polarity_score": 4.0, "emotions": EMOTIONS},
         "events[0]"),
        ({"user_id": "u1", "time": "1960-01-01T00:00:00+00:00", "polarity_score": 0.5, "emotions": EMOTIONS},
         "events[0]"),
        # values the fold cannot hash or turn into a float: a 422 for the event, never a 500
        (SCORED | {"emotion": ["anger"]}, "events[0]"),
        (SCORED | {"emotion": {"a": 1}}, "events[0]"),
        (SCORED | {"polarity": ["negative"]}, "events[0]"),
        (SCORED | {"channel": "support", "resolved": False, "end_emotion": ["x"]}, "events[0]"),
        (SCORED | {"intensity": HUGE}, "events[0]"),
        (SCORED | {"emotions": {"anger": HUGE}}, "events[0]"),
        (SCORED | {"polarity_score": HUGE}, "events[0].polarity_score"),
        (SCORED | {"time": HUGE}, "events[0].time"),
        (SCORED | {"error": ["text is empty"]}, "events[0].error"),
    ],
)
def test_bad_events_are_refused_and_fold_nothing(server: Server, event: dict[str, Any], field: str) -> None:
    audit = server.workdir / "p.db.audit.jsonl"
    seen = len(audit.read_text(encoding="utf-8").splitlines()) if audit.exists() else 0
    status, _, body = call(server.port, "POST", "/v1/events", {"events": [event]}, key=WRITE)
    assert status == 422 and body["error"]["field"] == field, body
    # every event write is audited, accepted or refused (docs/serve.md)
    (entry,) = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()[seen:]]
    assert (entry["action"], entry["status"]) == ("events.write", 422)


def test_error_records_from_emotag_score_are_skipped_and_counted(server: Server) -> None:
    """A record `emotag score` wrote for a text it could not score folds nothing, as in `emotag profile`."""
    failed = {"emotion": None, "emotions": None, "polarity": None, "polarity_score": None, "intensity": None,
              "error": "text is empty", "user_id": "u22", "time": "2026-03-20T15:59:00+08:00"}
    good = SCORED | {"user_id": "u23"}
    status, _, body = call(server.port, "POST", "/v1/events", {"events": [failed, good]}, key=WRITE)
    assert status == 200 and (body["folded"], body["skipped_error"]) == (1, 1), body
    assert body["users"] == [Pseudonymizer(PSEUDO_KEY)("u23")]
    status, _, body = call(server.port, "POST", "/v1/events", {"events": [failed | {"text": ""}]}, key=WRITE)
    assert status == 200 and (body["folded"], body["skipped_error"]) == (0, 1), body  # its text is not scored


def test_events_fold_into_profiles_once_with_an_audit_trail(server: Server) -> None:
    events = [
        {"user_id": "alice-42", "time": "2025-03-01T10:00:00+08:00", "text": "太难吃了，再也不买了"},
        {"user_id": "alice-42", "time": "2025-03-02T10:00:00+08:00", "polarity_score": 0.6, "emotion": "happiness",
         "emotions": EMOTIONS, "polarity": "positive", "channel": "review"},
        {"user_id": 7, "time": 1740800000, "text": "很好吃"},
    ]
    status, _, body = call(server.port, "POST", "/v1/events", {"events": events}, key=WRITE)
    assert status == 200 and body["folded"] == 3 and not body["already_applied"], body
    pseudo = Pseudonymizer(PSEUDO_KEY)
    assert sorted(body["users"]) == sorted([pseudo("alice-42"), pseudo("7")])  # as `emotag profile` hashes
    again = call(server.port, "POST", "/v1/events", {"events": events}, key=WRITE)[2]
    assert again["already_applied"] and again["batch_id"] == body["batch_id"]  # a retried request is a no-op

    status, _, prof = call(server.port, "GET", f"/v1/profiles/{pseudo('alice-42')}")
    assert status == 200 and prof["user_id"] == pseudo("alice-42") and prof["evidence"] == 2
    assert call(server.port, "GET", "/v1/profiles/" + "0" * 64)[0] == 404
    with ProfileStore(server.workdir / "p.db") as store:
        assert "alice-42" not in store and store.get(pseudo("alice-42")).n == 2

    audit = (server.workdir / "p.db.audit.jsonl").read_text(encoding="utf-8")
    entries = [json.loads(line) for line in audit.splitlines()]
    writes = [e for e in entries if e["action"] == "events.write" and e["status"] == 200]
    assert writes and all(len(e["key_id"]) == 12 for e in entries if e["status"] != 401)
    assert any(e["key_id"] is None and e["status"] == 401 for e in entries)  # no key: audited, as nobody
    assert any(e["action"] == "profile.read" for e in entries)
    assert any(e["action"] == "events.write" and e["status"] == 403 for e in entries)  # refusals too
    for secret in ("alice-42", "太难吃了", READ, WRITE):
        assert secret not in audit


def test_live_dialogue(server: Server) -> None:
    conv = {"id": "chat-1", "user_id": "u5", "turns": [
        {"speaker": "customer", "text": "快递一周了还没到，太差了"}, {"speaker": "agent", "text": "马上为您查询"}]}
    status, _, rec = call(server.port, "POST", "/v1/dialogues", conv)
    assert status == 200 and rec["id"] == "chat-1" and len(rec["turns"]) == 1 and rec["error"] is None
    status, _, rec = call(server.port, "POST", "/v1/dialogues/chat-1/turns",
                          {"speaker": "customer", "text": "收到了，谢谢，很满意"})
    assert status == 200 and rec["state"]["turns"] == 3 and len(rec["turns"]) == 2
    assert rec["state"]["customer_emotion"] == rec["end_emotion"] and rec["satisfaction"] is not None
    status, _, rec = call(server.port, "POST", "/v1/dialogues/new-chat/turns", {"speaker": "customer", "text": "你好"})
    assert status == 200 and rec["state"]["turns"] == 1


def test_concurrent_turns_of_one_conversation_are_appended_one_at_a_time(server: Server) -> None:
    """Many turns posted at once to one live conversation: none is lost, each sees the one before it.

    Without a per-conversation lock two appends read the same old state while the model scores and the
    later write drops the earlier turn; the counts below would then repeat and the total fall short.
    """
    n = 24
    out: dict[int, tuple[int, dict[str, str], Any]] = {}
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        out[i] = call(server.port, "POST", "/v1/dialogues/race-1/turns",
                      {"id": f"t{i}", "speaker": "customer", "text": ["很好吃", "太难吃了"][i % 2] * (1 + i % 5)})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(n)) and all(out[i][0] == 200 for i in out), out
    recs = sorted((r[2] for r in out.values()), key=lambda r: r["state"]["turns"])
    # every append saw all the earlier ones: the states count 1..n, each exactly once
    assert [r["state"]["turns"] for r in recs] == list(range(1, n + 1))
    # and the order is one order: each answer's turns are a prefix of the next answer's
    order = [[t["id"] for t in r["turns"]] for r in recs]
    for shorter, longer in zip(order, order[1:], strict=False):
        assert longer[: len(shorter)] == shorter and len(longer) == len(shorter) + 1
    assert sorted(order[-1]) == sorted(f"t{i}" for i in range(n))
    # the conversation kept is the final one: one more turn makes n + 1
    status, _, rec = call(server.port, "POST", "/v1/dialogues/race-1/turns", {"speaker": "customer", "text": "好"})
    assert status == 200 and rec["state"]["turns"] == n + 1 and [t["id"] for t in rec["turns"]][:n] == order[-1]


def test_keyed_locks_serialise_one_key_and_forget_idle_keys() -> None:
    """Holders of one key run one at a time in arrival order; other keys do not wait; no entry is left."""
    import asyncio

    from emotag.serve.app import KeyedLocks

    async def main() -> tuple[list[str], int, int]:
        locks, log = KeyedLocks(), []
        gate = asyncio.Event()

        async def hold(key: str, name: str) -> None:
            async with locks.hold(key):
                log.append(f"{name}+")
                if name == "a0":
                    await gate.wait()  # a0 holds 'a' until b0 (another key) has run
                await asyncio.sleep(0)
                log.append(f"{name}-")

        tasks = [asyncio.create_task(hold("a", f"a{i}")) for i in range(3)]
        await asyncio.sleep(0)
        await hold("b", "b0")
        during = len(locks)
        gate.set()
        await asyncio.gather(*tasks)
        return log, during, len(locks)

    log, during, after = asyncio.run(main())
    assert log[:3] == ["a0+", "b0+", "b0-"]  # 'b' did not wait for 'a'
    assert log[3:] == ["a0-", "a1+", "a1-", "a2+", "a2-"]  # 'a' one at a time, in order
    assert during == 1 and after == 0


def test_record_dict_is_to_dict() -> None:
    """/v1/tag builds records without `to_dict`'s deep copy; they must stay the same records."""
    from emotag import Tagger
    from emotag.serve.app import record_dict

    results = list(Tagger.load(threads=1).tag_many(["很好吃", "", "快递太慢了，客服也不理人", 3]))
    assert any(r.error for r in results) and any(not r.error for r in results)
    for r in results:
        assert record_dict(r) == r.to_dict() and list(record_dict(r)) == list(r.to_dict())


@pytest.mark.parametrize(
    ("path", "body", "key", "where"),
    [
        ("/v1/tag?aspects=1", {"text": "菜\ud800很好吃"}, READ, "text"),
        ("/v1/tag", {"texts": ["很好吃", "\udfff"]}, READ, "texts[1]"),
        ("/v1/dialogues", {"id": "d\ud8002", "turns": [{"speaker": "customer", "text": "好"}]}, READ, "id"),
        ("/v1/dialogues", {"user_id": "u\ud800", "turns": []}, READ, "user_id"),
        ("/v1/dialogues", {"turns": [{"id": "t\ud800", "speaker": "customer", "text": "好"}]}, READ, "turns[0].id"),
        ("/v1/dialogues/c7/turns", {"speaker": "customer\udc00", "text": "好"}, READ, "speaker"),
        ("/v1/events", {"events": [{"user_id": "u1", "time": 1740800000, "text": "菜\ud800"}]}, WRITE,
         "events[0].text"),
        ("/v1/events", {"events": [{"user_id": "u\ud800", "time": 1740800000, "text": "好"}]}, WRITE,
         "events[0].user_id"),
        ("/v1/events", {"events": [SCORED | {"channel": "\ud800"}]}, WRITE, "events[0].channel"),
        ("/v1/events", {"events": [SCORED], "batch_id": "b\ud800"}, WRITE, "batch_id"),
        ("/v1/events", {"events": [SCORED | {"k\ud800": 1}]}, WRITE, "events[0].k\\ud800 (a key)"),
    ],
)
def test_lone_surrogates_are_a_400_not_a_500(server: Server, path: str, body: Any, key: str, where: str) -> None:
    """'\ud800' is valid JSON but not Unicode: refused once at parse time (400 `body`, naming where), before
    the answer, the batch id's hash, the store or the audit line can fail on it with a 500."""
    audit = server.workdir / "p.db.audit.jsonl"
    seen = len(audit.read_text(encoding="utf-8").splitlines()) if audit.exists() else 0
    status, _, got = call(server.port, "POST", path, key=key, raw=json.dumps(body).encode())  # ASCII escapes
    assert status == 400 and got["error"] == {
        "field": "body", "message": f"lone surrogate (invalid Unicode) at {where}"}, got
    if path == "/v1/events":  # a refused write is audited like any other
        (entry,) = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()[seen:]]
        assert (entry["action"], entry["status"], entry["field"]) == ("events.write", 400, "body")
    # a valid surrogate pair (an emoji) is text like any other
    assert call(server.port, "POST", "/v1/tag", raw=json.dumps({"text": "很好吃😀"}).encode())[0] == 200


def test_the_audit_log_keeps_a_line_with_a_value_that_is_not_unicode(tmp_path: Path) -> None:
    """Parsing refuses lone surrogates, but an audit write must never fail over what it records."""
    from emotag.serve.security import AuditLog

    log = AuditLog(tmp_path / "a.jsonl")
    log.record(None, "events.write", 400, batch_id="b\ud800")
    log.close()
    (line,) = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["batch_id"] == "b\ud800"


def test_probes_and_metrics(server: Server) -> None:
    assert call(server.port, "GET", "/healthz", key=None)[:1] == (200,)
    status, _, ready = call(server.port, "GET", "/readyz", key=None)
    assert status == 200 and ready["ready"] is True
    _, headers, text = call(server.port, "GET", "/metrics", key=None)
    assert headers["content-type"].startswith("text/plain")
    assert 'emotag_requests_total{method="POST",route="/v1/tag",status="200"}' in text
    assert "emotag_request_seconds_bucket" in text and "emotag_queue_texts" in text
    status, _, body = call(server.port, "GET", "/v1/nothing", key=None)
    assert status == 404 and body["error"]["field"] == "path"
    # the front router hands what it does not serve to Starlette: a known path with another method is 405,
    # an empty path parameter or a trailing segment is no route
    status, headers, body = call(server.port, "GET", "/v1/tag")
    assert status == 405 and body["error"]["field"] == "path" and headers["allow"] == "POST"
    status, headers, body = call(server.port, "PUT", "/v1/tag", {"text": "x"})  # a 405 says what is allowed
    assert status == 405 and headers["allow"] == "POST" and body["error"]["field"] == "path"
    allow = call(server.port, "POST", "/healthz", key=None)[1]["allow"]
    assert sorted(allow.split(", ")) == ["GET", "HEAD"]
    for path in ("/v1/dialogues//turns", "/v1/dialogues/a/turns/x", "/v1/profiles/"):
        assert call(server.port, "POST" if "turns" in path else "GET", path, {})[0] == 404, path
    assert call(server.port, "HEAD", "/healthz", key=None)[0] == 200


def test_a_trailing_slash_is_a_404_not_a_redirect(server: Server) -> None:
    """A bare 307 with an empty body is no answer for a client posting JSON: the error shape, like any path."""
    for method, path in (("POST", "/v1/tag/"), ("GET", "/healthz/"), ("POST", "/v1/events/")):
        status, headers, body = call(server.port, method, path, {"text": "很好吃"})
        assert status == 404 and body["error"]["field"] == "path" and "location" not in headers, (path, body)


def test_backpressure_and_kill_9_durability(tmp_path: Path) -> None:
    """A full queue answers 503 + Retry-After; a request larger than the bound 422; an acknowledged batch
    survives kill -9, exactly once."""
    env = {"EMOTAG_API_KEYS": f"{READ},{WRITE}:write"}
    args = ("--store", "p.db", "--max-queue", "64", "--batch-window-ms", "1500")
    srv = Server(tmp_path, *args, env=env).start()
    answers: list[tuple[int, dict[str, str], Any]] = []

    def post(body: dict[str, Any]) -> threading.Thread:
        t = threading.Thread(target=lambda: answers.append(call(srv.port, "POST", "/v1/tag", body)))
        t.start()
        return t

    busy = post({"texts": [LONG] * 64})  # keeps the model busy for a second or more
    time.sleep(0.2)
    waiting = post({"text": "很好吃"})  # the model is busy: it waits in its 1.5 s window, the queue is full
    time.sleep(0.3)
    status, headers, body = call(srv.port, "POST", "/v1/tag", {"texts": ["太难吃了"] * 64})  # 1 + 64 > 64
    busy.join()
    waiting.join()
    assert status == 503 and headers["retry-after"] == "1" and body["error"]["field"] == "queue"
    assert sorted(a[0] for a in answers) == [200, 200]
    # more texts than the bound can never be queued, not even alone: 422 naming the bound, not 200 or 503
    status, headers, body = call(srv.port, "POST", "/v1/tag", {"texts": ["很好吃"] * 65})
    assert status == 422 and body["error"]["field"] == "texts" and "64" in body["error"]["message"], body
    assert "retry-after" not in headers
    raw = [{"user_id": "u1", "time": 1740800000, "text": "好"}] * 65
    status, _, body = call(srv.port, "POST", "/v1/events", {"events": raw}, key=WRITE)
    assert status == 422 and body["error"]["field"] == "events" and "64" in body["error"]["message"], body

    pseudo = Pseudonymizer(PSEUDO_KEY)
    events = [{"user_id": f"u{i % 3}", "time": 1740800000 + i * 3600, "polarity_score": 0.5, "emotions": EMOTIONS}
              for i in range(9)]
    status, _, body = call(srv.port, "POST", "/v1/events", {"events": events, "batch_id": "b-1"}, key=WRITE)
    assert status == 200 and body["folded"] == 9
    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
    srv = Server(tmp_path, *args, env=env).start()
    try:
        again = call(srv.port, "POST", "/v1/events", {"events": events, "batch_id": "b-1"}, key=WRITE)[2]
        assert again["already_applied"] is True
        for u in ("u0", "u1", "u2"):
            assert call(srv.port, "GET", f"/v1/profiles/{pseudo(u)}")[2]["evidence"] == 3
        # graceful shutdown: a request in flight when SIGTERM arrives is answered before the server exits
        answers.clear()
        t = post({"texts": [LONG] * 63 + ["很好吃"]})
        time.sleep(0.3)
    finally:
        srv.stop()
    t.join()
    assert answers[0][0] == 200 and answers[0][2]["results"][-1]["polarity"] == "positive"


def test_bad_settings_fail_before_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from emotag.cli import app

    monkeypatch.delenv("EMOTAG_API_KEYS", raising=False)
    monkeypatch.setenv("EMOTAG_PSEUDONYM_KEY", PSEUDO_KEY)
    res = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert res.exit_code == 1 and "no API keys" in res.output
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{READ} admin\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["serve", "--api-keys", str(keys)])
    assert res.exit_code == 1 and f"{keys}, line 1: scope 'admin'" in res.output
    keys.write_text(f"{READ}\n", encoding="utf-8")
    # a model or backend that cannot load: one line and exit 1, not a server answering 503 forever
    res = CliRunner().invoke(app, ["serve", "--api-keys", str(keys), "--model", str(tmp_path / "nonexistent")])
    assert res.exit_code == 1 and "no such directory" in res.output, res.output
    res = CliRunner().invoke(app, ["serve", "--api-keys", str(keys), "--model", str(tmp_path)])
    assert res.exit_code == 1 and "not an emotag model directory" in res.output, res.output
    res = CliRunner().invoke(app, ["serve", "--api-keys", str(keys), "--backend", "nope"])
    assert res.exit_code == 1 and "unknown backend 'nope'" in res.output, res.output
    monkeypatch.delenv("EMOTAG_PSEUDONYM_KEY")
    res = CliRunner().invoke(app, ["serve", "--api-keys", str(keys), "--store", str(tmp_path / "p.db")])
    assert res.exit_code == 1 and "no pseudonymisation key" in res.output


def test_the_bearer_scheme_is_case_insensitive() -> None:
    from emotag.serve.security import KeyRing

    ring = KeyRing({"k" * 32: "read"})
    assert all(ring.lookup(f"{scheme} {'k' * 32}") is not None for scheme in ("Bearer", "bearer", "BEARER"))
    assert ring.lookup("Basic " + "k" * 32) is None and ring.lookup("Bearer wrong") is None


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No --store, an --audit-log, and a model that passes the pre-bind check (its config.json) but fails
    to load (no tokenizer): the server stays up and /readyz reports the error."""
    import shutil

    from emotag.model.config import resolve_model_dir

    work = tmp_path_factory.mktemp("bare")
    (work / "broken-model").mkdir()
    shutil.copy(resolve_model_dir(None) / "config.json", work / "broken-model")
    srv = Server(work, "--model", "broken-model", "--audit-log", "audit.jsonl",
                 env={"EMOTAG_API_KEYS": f"{READ},{WRITE}:write"})
    srv.start(ready=False)
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM)


def test_a_model_that_failed_to_load_is_a_503_without_retry_after(bare: Server) -> None:
    """Retry-After promises a retry can succeed; after a failed load none can until a restart."""
    status, _, ready = call(bare.port, "GET", "/readyz", key=None)
    assert status == 503 and "tokenizer.json" in ready["error"]
    status, headers, body = call(bare.port, "POST", "/v1/tag", {"text": "很好吃"})
    assert status == 503 and "retry-after" not in headers and body["error"]["field"] == "model"
    assert "failed to load" in body["error"]["message"] and "tokenizer.json" in body["error"]["message"]


def test_501_without_a_store_is_audited(bare: Server) -> None:
    """A write or profile read refused for want of a store is a refusal like any other: it has its line."""
    status, _, body = call(bare.port, "POST", "/v1/events", {"events": [SCORED]}, key=WRITE)
    assert status == 501 and body["error"]["field"] == "store"
    status, _, body = call(bare.port, "GET", "/v1/profiles/alice-42")
    assert status == 501 and body["error"]["field"] == "store"
    text = (bare.workdir / "audit.jsonl").read_text(encoding="utf-8")
    entries = [json.loads(line) for line in text.splitlines()]
    assert [(e["action"], e["status"], e["field"]) for e in entries[-2:]] == [
        ("events.write", 501, "store"), ("profile.read", 501, "store")]
    assert entries[-1]["requested"] and "alice-42" not in text  # a hash of what was asked, never the value
