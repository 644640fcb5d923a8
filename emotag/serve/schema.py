"""Request bodies of `emotag serve`: parsed and checked by hand, every refusal naming its field.

A service must never die on a request and must tell the client exactly what to fix. Each check raises
`BadRequest(status, field, message)`; the app turns it into ``{"error": {"field", "message"}}`` with a 4xx
status: 400 for a body that is not JSON, 413 for a body over the size limit, 422 for well-formed JSON with
the wrong shape (wrong types, unknown fields, a text over its limit, a bad timestamp). Unknown fields are
refused rather than ignored, so a misspelt ``"txt"`` is an error and not a silently empty request.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emotag.profiles.timeutil import TimeParseError, parse_time, short_repr

#: Fields an event may carry: a scored record's (SPEC §2 and the fold's extras) or a raw text to score.
EVENT_FIELDS = frozenset({
    "id", "user_id", "time", "text", "channel", "product", "emotion", "emotions", "polarity", "polarity_score",
    "intensity", "error", "resolved", "start_emotion", "end_emotion", "satisfaction",
})
TURN_FIELDS = frozenset({"id", "speaker", "text", "time"})
DIALOGUE_FIELDS = frozenset({"id", "user_id", "turns"})


class BadRequest(Exception):
    """A request the client must fix: HTTP `status`, the offending `field` (a JSON path), a message, and
    any headers the answer needs (`Retry-After` when a retry can succeed)."""

    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.field = field
        self.message = message
        self.headers = headers
        super().__init__(f"{field}: {message}")

    def body(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_text_chars: int = 20_000
    max_events: int = 1000
    max_turns: int = 200


#: A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF): the only way a lone surrogate gets into a parsed
#: body, since the UTF-8 decoder refuses encoded ones. A valid pair (an emoji) matches too; the walk tells.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or 400 `body`: not UTF-8, not JSON, nested too deeply, or a lone surrogate.

    Why surrogates are refused here: ``"\\ud800"`` is valid JSON but no Unicode text, and every later step
    that encodes the value (the answer, the batch id's hash, the store, the audit line) would fail with a
    500 in its own place; refusing it once at the door keeps all of them on real text."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest(400, "body", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise BadRequest(400, "body", f"invalid JSON: {exc}") from None
    except RecursionError:  # the parser recurses per level: '[' * 100000 fits in a body, not in the stack
        raise BadRequest(400, "body", "invalid JSON: arrays or objects nested too deeply") from None
    if _SURROGATE_ESCAPE.search(raw):  # the walk below only for a body that escapes a surrogate at all
        where = _lone_surrogate(value)
        if where is not None:
            raise BadRequest(400, "body", f"lone surrogate (invalid Unicode) at {where}")
    return value


def _not_unicode(s: str) -> bool:
    """Whether `s` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lone_surrogate(value: Any) -> str | None:
    """The path (``texts[1]``, ``events[0].user_id``) of the first string or key in `value` that holds a
    lone surrogate, else None. Iterative: a body nested as deep as the parser allows must not overflow here."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if _not_unicode(v):
                return path or "body"
        elif isinstance(v, dict):
            children = []
            for k, item in v.items():
                key_path = _at(path or "body", k)
                if _not_unicode(k):  # the key itself, shown escaped so the message is valid text
                    return key_path.encode("utf-8", "backslashreplace").decode("utf-8") + " (a key)"
                children.append((item, key_path))
            stack.extend(reversed(children))
        elif isinstance(v, list):
            stack.extend(reversed([(item, f"{path or 'body'}[{i}]") for i, item in enumerate(v)]))
    return None


def _at(field: str, name: str) -> str:
    """The path of member `name` of the object at `field`: a top-level member (`field` "body") is named
    bare (``text``, ``speaker``), as every endpoint and docs/serve.md name them; a nested one is
    ``events[0].time``."""
    return name if field == "body" else f"{field}.{name}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _object(value: Any, field: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(422, field, f"expected a JSON object, got {_type(value)}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BadRequest(422, _at(field, unknown[0]), f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return value


def _type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _array(value: Any, field: str, limit: int, of: str) -> list[Any]:
    """A non-empty JSON array of at most `limit` items."""
    if not isinstance(value, list):
        raise BadRequest(422, field, f"expected an array of {of}, got {_type(value)}")
    if not value:
        raise BadRequest(422, field, "empty list")
    if len(value) > limit:
        raise BadRequest(422, field, f"{len(value)} items; the limit per request is {limit}")
    return value


def _text(value: Any, field: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise BadRequest(422, field, f"expected a string, got {_type(value)}")
    if len(value) > limits.max_text_chars:
        raise BadRequest(422, field, f"text is {len(value)} characters; the limit is {limits.max_text_chars}")
    return value


def tag_texts(body: Any, limits: Limits) -> tuple[list[str], bool]:
    """(texts, single) from ``{"text": "..."}`` or ``{"texts": [...]}``."""
    obj = _object(body, "body", frozenset({"text", "texts"}))
    if ("text" in obj) == ("texts" in obj):
        raise BadRequest(422, "text", "give exactly one of 'text' (one string) or 'texts' (a list of strings)")
    if "text" in obj:
        return [_text(obj["text"], "text", limits)], True
    texts = _array(obj["texts"], "texts", limits.max_texts, "strings")
    return [_text(t, f"texts[{i}]", limits) for i, t in enumerate(texts)], False


def _time(value: Any, field: str, required: bool) -> None:
    if value is None and not required:
        return
    try:
        parse_time(value)
    except TimeParseError as exc:
        raise BadRequest(422, field, str(exc)) from None


def _user(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
        raise BadRequest(422, field, f"expected a non-empty string or an integer, got {_type(value)}")


def events(body: Any, limits: Limits) -> tuple[list[dict[str, Any]], str | None]:
    """(events, client batch id) from ``{"events": [...], "batch_id": "..."}``.

    An event is a scored record (it has `polarity_score`; any `text` in it is ignored, as the CLI ignores
    it), a raw text to score (`text` without scores), or a record `emotag score` could not score (a
    non-empty `error`: accepted, and skipped and counted as `skipped_error` by the fold, as `emotag profile`
    does). All need `user_id` and `time`. Only the shapes checked here are the service's own; the values
    of a scored record are checked by the fold (`profiles.records.extract`), the one gate for every writer.
    """
    obj = _object(body, "body", frozenset({"events", "batch_id"}))
    batch_id = obj.get("batch_id")
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id.strip() or len(batch_id) > 200):
        raise BadRequest(422, "batch_id", "expected a non-empty string of at most 200 characters")
    evs = _array(obj.get("events"), "events", limits.max_events, "events")
    out = []
    for i, ev in enumerate(evs):
        where = f"events[{i}]"
        ev = dict(_object(ev, where, EVENT_FIELDS))
        if "user_id" not in ev:
            raise BadRequest(422, f"{where}.user_id", "required")
        _user(ev["user_id"], f"{where}.user_id")
        if "time" not in ev:
            raise BadRequest(422, f"{where}.time", "required")
        _time(ev["time"], f"{where}.time", True)
        error = ev.get("error")
        if error is not None and not isinstance(error, str):
            raise BadRequest(422, f"{where}.error", f"expected a string or null, got {_type(error)}")
        if error:  # nothing to score or fold: the null scores beside it are what `emotag score` writes
            out.append(ev)
            continue
        score = ev.get("polarity_score")
        if score is None:
            if "text" not in ev:
                raise BadRequest(422, where, "needs 'text' to score or the scores of a record (polarity_score)")
            _text(ev["text"], f"{where}.text", limits)
        elif isinstance(score, bool) or not isinstance(score, (int, float)):
            raise BadRequest(422, f"{where}.polarity_score", f"expected a number, got {_type(score)}")
        elif not _finite(score):  # 1e400, or an integer of hundreds of digits: valid JSON, not a float
            raise BadRequest(422, f"{where}.polarity_score", f"expected a finite number, got {short_repr(score)}")
        out.append(ev)
    return out, batch_id


def _finite(number: float) -> bool:
    """math.isfinite, with an int past float range (JSON allows any number of digits) not finite."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def turn(body: Any, field: str, limits: Limits) -> dict[str, Any]:
    """One turn ``{"speaker", "text", "time"}`` at `field`: ``turns[3]`` in a conversation, or "body" for
    a turn posted alone (its members are then named bare: ``speaker``, ``time``, like other bodies')."""
    obj = dict(_object(body, field, TURN_FIELDS))
    if not isinstance(obj.get("speaker"), str) or not obj["speaker"].strip():
        raise BadRequest(422, _at(field, "speaker"), "required: a non-empty string ('customer' for the customer)")
    obj["text"] = _text(obj.get("text"), _at(field, "text"), limits)
    _time(obj.get("time"), _at(field, "time"), False)
    return obj


def dialogue(body: Any, limits: Limits) -> dict[str, Any]:
    """A SPEC §3 conversation ``{"id", "user_id", "turns": [{"speaker", "text", "time"}]}``."""
    obj = dict(_object(body, "body", DIALOGUE_FIELDS))
    if "id" in obj and (isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int))):
        raise BadRequest(422, "id", f"expected a string or an integer, got {_type(obj['id'])}")
    if obj.get("user_id") is not None:
        _user(obj["user_id"], "user_id")
    turns = obj.get("turns")
    if not isinstance(turns, list):
        raise BadRequest(422, "turns", f"expected an array of turns, got {_type(turns)}")
    if len(turns) > limits.max_turns:
        raise BadRequest(422, "turns", f"{len(turns)} turns; the limit is {limits.max_turns}")
    obj["turns"] = [turn(t, f"turns[{i}]", limits) for i, t in enumerate(turns)]
    return obj
