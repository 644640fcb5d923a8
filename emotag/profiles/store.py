"""Embedded SQLite store for profile states.

Why SQLite: one file, no server, transactional. Each `upsert` folds a batch of partial states into the
stored ones inside a single transaction, so a run that is interrupted (crash, Ctrl-C, bad record) leaves
the store exactly as it was before that run. Because profile states merge associatively and
commutatively, applying the same data as two batches or as one gives the same profiles; recording the
ids of applied batches (e.g. a hash of the input file) makes re-running a batch a no-op instead of
double-counting it.

Stored: pseudonymous user id, evidence count, first/last seen, and the state as JSON (no pickle, so the
file is inspectable and cannot execute code when read). Never stored: raw text (the fold never reads it)
and, unless the store was explicitly created for raw ids, raw user ids. The `meta` table records the
schema version, the decay half-lives, the emotion labels (the default taxonomy or a custom-label model's)
and a fingerprint of the pseudonymisation key, so mixing data produced with a different key, half-life or
model label set is refused instead of silently splitting or skewing profiles.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from emotag.labels import EMOTIONS
from emotag.profiles.state import ProfileState

SCHEMA_VERSION = 1
RAW_IDS = "raw"
HMAC_IDS = "hmac-sha256"
_CHUNK = 500  # SQLite's default limit on host parameters is 999 (older builds)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY,
    evidence INTEGER NOT NULL,
    first_seen REAL,
    last_seen REAL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    applied_at REAL NOT NULL,
    records INTEGER NOT NULL,
    users INTEGER NOT NULL,
    source TEXT
);
"""

# Future schema upgrades: {from_version: sql}; applied in order when an older store is opened.
_MIGRATIONS: dict[int, str] = {}


class StoreError(RuntimeError):
    """The store cannot be used as asked (incompatible settings, not a profile store, ...)."""


class StoreVersionError(StoreError):
    """The store was written by a newer emotag with a schema this version does not understand."""


def file_batch_id(path: str | Path, chunk: int = 1 << 20) -> str:
    """A batch id for an input file: SHA-256 of its bytes, so renaming or re-running does not re-apply."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


class ProfileStore:
    """A SQLite file of {pseudonymous user id: ProfileState}."""

    def __init__(self, path: str | Path, *, wal: bool = False) -> None:
        """Open (or create) the store. `wal=True` switches the file to SQLite's write-ahead log with
        ``synchronous=FULL`` and a busy timeout: what a long-running writer with concurrent readers (the
        HTTP service) needs, where an acknowledged commit must survive ``kill -9`` and a reader must not
        fail while a batch commits. The mode is persistent, and CLI runs on the same file keep working."""
        self.path = Path(path)
        try:
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=not wal)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open profile store: {exc}") from None
        try:
            self._init_schema()
            if wal:
                self._conn.execute("PRAGMA busy_timeout = 10000")
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle -----------------------------------------------------------------------------------

    def _init_schema(self) -> None:
        conn = self._conn
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a SQLite profile store ({exc})") from None
        if tables and "meta" not in tables:
            raise StoreError(
                f"{self.path}: not an emotag profile store (no meta table); refusing to modify it"
            )
        if "meta" in tables:
            version = self._meta_get("schema_version")
            if version is None or not version.isdigit():
                raise StoreError(f"{self.path}: profile store has no valid schema_version in its meta table")
            v = int(version)
            if v > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"{self.path}: profile store schema version {v} is newer than this emotag supports "
                    f"({SCHEMA_VERSION}); upgrade emotag to read it"
                )
            if v < SCHEMA_VERSION:
                self._migrate(v)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            now = repr(time.time())
            from emotag import __version__

            conn.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", now),
                    ("created_by", f"emotag {__version__}"),
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, from_version: int) -> None:  # pragma: no cover - no older schema exists yet
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for v in range(from_version, SCHEMA_VERSION):
                for stmt in _MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            self._meta_set("schema_version", str(SCHEMA_VERSION))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ----------------------------------------------------------------------------------------

    def _meta_get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _meta_set(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def meta(self) -> dict[str, str]:
        """All meta entries (schema_version, half-lives, id mode, key fingerprint, max_time, ...)."""
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    @property
    def schema_version(self) -> int:
        return int(self._meta_get("schema_version") or 0)

    @property
    def max_time(self) -> float | None:
        """Newest record time folded into the store (the default 'as of' for summaries)."""
        v = self._meta_get("max_time")
        return None if v is None else float(v)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The emotion labels of the stored profiles; None while the store holds none.

        Stores written before label sets were recorded hold the default taxonomy.
        """
        v = self._meta_get("emotion_labels")
        if v is not None:
            return tuple(json.loads(v))
        held = self._conn.execute("SELECT 1 FROM profiles LIMIT 1").fetchone()
        return EMOTIONS if held is not None else None

    def check_compatible(
        self,
        half_life_days: float,
        recent_half_life_days: float,
        key_fingerprint: str | None,
        labels: tuple[str, ...] | None = None,
    ) -> None:
        """Refuse to mix states built with other half-lives, another pseudonymisation key or other labels."""
        m = self.meta
        stored = self.labels
        if labels is not None and stored is not None and tuple(labels) != stored:
            raise StoreError(
                f"{self.path}: store holds profiles over the emotion labels {', '.join(stored)}, not "
                f"{', '.join(labels)}: records scored by different models cannot share a store; use a new store"
            )
        if "half_life_days" in m and (
            float(m["half_life_days"]) != float(half_life_days)
            or float(m["recent_half_life_days"]) != float(recent_half_life_days)
        ):
            raise StoreError(
                f"{self.path}: store was built with half-life {m['half_life_days']} days (recent "
                f"{m['recent_half_life_days']}), not {half_life_days} ({recent_half_life_days}); "
                "use the same half-life or a new store"
            )
        if "id_mode" in m:
            mode = HMAC_IDS if key_fingerprint else RAW_IDS
            if m["id_mode"] != mode:
                raise StoreError(
                    f"{self.path}: store holds {m['id_mode']} user ids but this run would write {mode} ids; "
                    "refusing to mix them"
                )
            if key_fingerprint and m.get("key_fingerprint") != key_fingerprint:
                raise StoreError(
                    f"{self.path}: pseudonymisation key differs from the one this store was built with "
                    f"(fingerprint {m.get('key_fingerprint')} vs {key_fingerprint}); the same user would get "
                    "a different id"
                )

    # -- reads ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM profiles").fetchone()[0])

    def __contains__(self, user_id: object) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM profiles WHERE user_id = ?", (user_id,)).fetchone() is not None
        )

    def get(self, user_id: str) -> ProfileState | None:
        row = self._conn.execute("SELECT state FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else ProfileState.from_json(row[0])

    def iter_states(self) -> Iterator[tuple[str, ProfileState]]:
        """All (user_id, state) pairs ordered by user id, streamed (not loaded at once)."""
        cur = self._conn.execute("SELECT user_id, state FROM profiles ORDER BY user_id")
        for uid, state in cur:
            yield uid, ProfileState.from_json(state)

    def has_batch(self, batch_id: str) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone() is not None
        )

    def batches(self) -> list[dict[str, Any]]:
        cur = self._conn.execute(
            "SELECT batch_id, applied_at, records, users, source FROM batches ORDER BY applied_at"
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # -- writes --------------------------------------------------------------------------------------

    def upsert(
        self,
        states: Mapping[str, ProfileState],
        *,
        key_fingerprint: str | None,
        batch_id: str | None = None,
        records: int = 0,
        source: str | None = None,
    ) -> bool:
        """Merge `states` into the store atomically; False (nothing changed) if `batch_id` was applied.

        `key_fingerprint` is the `Pseudonymizer.fingerprint` the ids were made with, or None for raw ids
        (the caller must have been explicitly allowed to keep raw ids).
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch_id is not None and self.has_batch(batch_id):
                conn.execute("ROLLBACK")
                return False
            first = next(iter(states.values()), None)
            mixed = sorted({st.labels for st in states.values()} - {first.labels}) if first is not None else []
            if mixed:  # one fold refuses this; partial states from elsewhere (Spark partitions) are checked here
                raise StoreError(f"{self.path}: this batch holds profiles over different emotion labels "
                                 f"({', '.join(first.labels)} and {', '.join(mixed[0])}); refusing to store it")
            if first is not None:
                self.check_compatible(first.half_life_days, first.recent_half_life_days, key_fingerprint,
                                      first.labels)
                if self._meta_get("half_life_days") is None:
                    self._meta_set("half_life_days", repr(first.half_life_days))
                    self._meta_set("recent_half_life_days", repr(first.recent_half_life_days))
                if self._meta_get("emotion_labels") is None:
                    self._meta_set("emotion_labels", json.dumps(list(first.labels), ensure_ascii=False))
            if self._meta_get("id_mode") is None and states:
                self._meta_set("id_mode", HMAC_IDS if key_fingerprint else RAW_IDS)
                if key_fingerprint:
                    self._meta_set("key_fingerprint", key_fingerprint)
            now = time.time()
            max_time = self.max_time
            ids = list(states)
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                existing = dict(
                    conn.execute(
                        f"SELECT user_id, state FROM profiles WHERE user_id IN ({marks})", chunk
                    ).fetchall()
                )
                rows = []
                for uid in chunk:
                    st = states[uid]
                    if st.n == 0:
                        continue
                    old = existing.get(uid)
                    merged = ProfileState.from_json(old).merge(st) if old is not None else st.copy()
                    merged.canonical()
                    if max_time is None or merged.last > max_time:
                        max_time = merged.last
                    rows.append((uid, merged.n, merged.first, merged.last, merged.to_json(), now))
                conn.executemany(
                    "INSERT OR REPLACE INTO profiles(user_id, evidence, first_seen, last_seen, state, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if max_time is not None:
                self._meta_set("max_time", repr(max_time))
            self._meta_set("updated_at", repr(now))
            if batch_id is not None:
                conn.execute(
                    "INSERT INTO batches(batch_id, applied_at, records, users, source) VALUES (?, ?, ?, ?, ?)",
                    (batch_id, now, int(records), len(states), source),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True
