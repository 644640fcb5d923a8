"""API keys with scopes, and the append-only audit log of `emotag serve`.

Why this shape
--------------
* Keys are opaque bearer tokens (``Authorization: Bearer <key>``) with one of two scopes: ``read`` (tag,
  score dialogues, read profiles) or ``write`` (also fold events into the profile store). A service that
  tags text for a support desk should not be able to change the CRM's profiles with the same key.
* A key is never logged or kept in memory beyond the lookup table: the audit log names a key by
  ``key_id`` = the first 12 hex digits of its SHA-256, enough to tell keys apart and useless to an attacker.
* The audit log records who (key id), what (action, counts, batch id, pseudonym), when, and the outcome --
  never raw text and never raw user ids, which is what the privacy chapter of the product promises. It is
  a JSONL file opened for appending only; each line is flushed before the response is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS_ENV = "EMOTAG_API_KEYS"
SCOPES = ("read", "write")


class KeyFileError(ValueError):
    """The API key file or $EMOTAG_API_KEYS cannot be used (one line naming the file, line and problem)."""


@dataclass(frozen=True)
class Caller:
    """The authenticated client of one request."""

    key_id: str
    scope: str

    def can(self, scope: str) -> bool:
        return self.scope == "write" or scope == "read"


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def _parse_entry(parts: list[str], where: str) -> tuple[str, str]:
    """``[KEY]`` (read scope) or ``[KEY, SCOPE]``."""
    if len(parts) == 1:
        key, scope = parts[0], "read"
    elif len(parts) == 2:
        key, scope = parts
    else:
        raise KeyFileError(f"{where}: expected 'KEY [read|write]', got {len(parts)} fields")
    if scope not in SCOPES:
        raise KeyFileError(f"{where}: scope {scope!r} is not one of {', '.join(SCOPES)}")
    if len(key) < 16:
        raise KeyFileError(f"{where}: key is {len(key)} characters; use at least 16 (e.g. `openssl rand -hex 24`)")
    return key, scope


def load_keys(path: str | Path | None = None, env: str | None = None) -> dict[str, str]:
    """{key: scope} from `path` (one key per line, optional scope, ``#`` comments) and/or ``$EMOTAG_API_KEYS``
    (comma-separated ``KEY`` or ``KEY:scope``). Both may be given; the file wins on a repeated key."""
    keys: dict[str, str] = {}
    env_value = os.environ.get(KEYS_ENV) if env is None else env
    if env_value:
        for i, entry in enumerate(e.strip() for e in env_value.split(",")):
            if entry:
                k, s = _parse_entry(entry.split(":", 1), f"${KEYS_ENV}, entry {i + 1}")
                keys[k] = s
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read the API key file ({exc})") from None
        for n, line in enumerate(lines, start=1):
            line = line.split("#", 1)[0].strip()
            if line:
                k, s = _parse_entry(line.split(), f"{path}, line {n}")
                keys[k] = s
    return keys


class KeyRing:
    """Looks a bearer token up in constant time per key (no early exit that leaks a prefix match)."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = [(k.encode("utf-8"), Caller(key_id(k), s)) for k, s in keys.items()]

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, authorization: str | None) -> Caller | None:
        if not authorization or authorization[:7].lower() != "bearer ":  # the scheme is case-insensitive (RFC 7235)
            return None
        token = authorization[7:].strip().encode("utf-8")
        found = None
        for k, caller in self._keys:
            if hmac.compare_digest(k, token):
                found = caller
        return found


class AuditLog:
    """Append-only JSONL: one line per write and per profile read (who, what, when, outcome)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # backslashreplace: a value that is not Unicode text (a lone surrogate) is written as its JSON escape
        # rather than failing the write -- a refusal must never lose its audit line over what it refused
        self._fh = self.path.open("a", encoding="utf-8", errors="backslashreplace")
        self._lock = threading.Lock()

    def record(self, caller: Caller | None, action: str, status: int, **what: Any) -> None:
        """Append one entry. `what` holds counts, batch ids and pseudonyms only (callers' duty: no raw
        text, no raw user id ever reaches this method)."""
        entry = {"ts": round(time.time(), 3), "key_id": caller.key_id if caller else None, "action": action,
                 "status": status, **what}
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
