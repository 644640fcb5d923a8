"""The one writer: records to OUT through OUT.partial, renamed into place only when complete.

* Long runs get interrupted, so output goes to `OUT.partial` and is renamed onto OUT only once complete;
  `RecordWriter(resume=True)` picks the partial up again and `read_rows(skip=writer.rows_done)` skips the
  rows it already holds.
* A resumed partial must belong to this run: `OUT.partial.meta` records its inputs (path, size, a hash of
  the first MiB) and the settings that change the output; a mismatch is refused. An output (or partial)
  that is one of the inputs, under any name, is refused before anything is written.
* Two runs writing one OUT would interleave their records and race for the rename, so a writer holds
  `OUT.partial.lock` (an flock, which the OS drops when its process dies) from start to finish.
* A run that fails before its first record (a wrong column name) leaves no partial behind: an empty one
  would only block a later `--resume` with the right options.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from types import TracebackType
from typing import IO, Any

from emotag.io.detect import InputError, _open_binary, _parses, _resolve_format, warn_user
from emotag.io.formats import FORMAT_TABLE, read_records
from emotag.io.layout import _dumps, _Flattener, _Layout, _text_cell
from emotag.io.spool import _spooled

_HEADER_BUFFER = 1000  # csv/tsv output: records held back while the column layout is still unknown
_LOCK_SUFFIX = ".lock"  # OUT.partial.lock: held by the one run writing OUT
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # flock errors of file systems that cannot lock


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole text file (an HTML report, say) so that a reader never sees half of it.

    A temporary file in the target directory is written, fsynced and renamed onto `path`; a failure leaves
    any previous file intact. The file is world-readable (0644): such files are made to be shared.
    """
    target = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(target)


def _fsync_dir(path: str) -> None:
    """Make a rename durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _OutputLock:
    """An exclusive lock on OUT.partial.lock for as long as one writer owns OUT.partial.

    flock where the OS has it: the kernel drops it when the holder dies, so a killed run leaves no stale
    lock (the file is removed on release only to keep the directory tidy). Elsewhere the lock file itself,
    created with O_EXCL, is the lock; a run killed hard leaves it behind, which the message covers.
    """

    def __init__(self, out: str, lock_path: str) -> None:
        self.path = lock_path
        self._fh: IO[str] | None = None
        try:
            import fcntl
        except ImportError:  # Windows
            try:
                fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise InputError(out, f"another emotag run is writing this file (lock {lock_path}); wait for "
                                      "it, or remove the lock if that run is gone") from None
            self._fh = os.fdopen(fd, "w")
            self._fh.write(f"{os.getpid()}\n")
            self._fh.flush()
            return
        while True:
            fh = open(lock_path, "a")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # EWOULDBLOCK: another process holds it
                fh.close()
                # held by a live process (the OS drops the lock of a dead one): removing the file would not help
                raise InputError(out, f"another emotag run is writing this file (lock {lock_path}); wait for "
                                      "it to finish, or stop it") from None
            except OSError as e:
                if e.errno not in _NO_LOCKS:
                    fh.close()
                    raise
                self._fh = fh  # a file system without locks (some network mounts): write as before, unlocked
                return
            except BaseException:
                fh.close()
                raise
            # The holder before us may have removed the file between our open and our flock: then we hold
            # a lock on a file no one else will open, so start over with the one at the path now.
            try:
                same = os.path.samestat(os.fstat(fh.fileno()), os.stat(lock_path))
            except FileNotFoundError:
                same = False
            if same:
                self._fh = fh
                return
            fh.close()

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks a file about to vanish), unlock."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        fh.close()


def _recover_jsonl(partial: str) -> int:
    """Count complete records in a JSONL partial and cut off a torn tail (unterminated or unparseable)."""
    with open(partial, "r+b") as f:
        count, end = 0, 0
        tail: deque[tuple[int, bytes]] = deque(maxlen=16)
        for line in f:
            if not line.endswith(b"\n"):
                break
            if line.strip():
                count += 1
                tail.append((end, line))
            end += len(line)
        while tail:
            start, line = tail[-1]
            if _parses(line.decode("utf-8", errors="replace")):
                break
            tail.pop()
            count -= 1
            end = start
        f.truncate(end)
        return count


def _recover_delimited(partial: str, delimiter: str) -> tuple[int, list[str] | None]:
    """(complete data records, header) of a csv/tsv partial, cutting off a torn last record.

    csv.writer quotes every field holding a quote and doubles inner quotes, so quote parity tells whether a
    newline ends a record or sits inside a quoted field.
    """
    with open(partial, "r+b") as f:
        records, end, pos, header_end = 0, 0, 0, 0
        in_quotes = False
        for line in f:
            pos += len(line)
            if line.count(b'"') % 2:
                in_quotes = not in_quotes
            if not line.endswith(b"\n"):
                break
            if not in_quotes:
                records += 1
                end = pos
                if records == 1:
                    header_end = pos
        f.truncate(end)
        if records == 0:
            return 0, None
        f.seek(0)
        head = f.read(header_end).decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(head, newline=""), delimiter=delimiter))
    return records - 1, header


class RecordWriter:
    """Writes output records to OUT atomically and resumably.

    Everything goes to OUT + '.partial' in the same directory and is renamed onto OUT only by close(), so
    a crashed or interrupted run never leaves a truncated OUT that looks complete. On an exception the
    partial stays; `RecordWriter(OUT, resume=True)` continues it, with `rows_done` telling how many input
    rows to skip. csv/tsv/jsonl partials are already in the final format; parquet/xlsx/json are spooled as
    JSONL and converted at close, in bounded memory. '-' writes JSONL to stdout (no partial, no resume).

    csv/tsv/xlsx/parquet are flat: dict values are spread over `key.sub` columns. Columns follow the first
    record's key order; csv is UTF-8 with a BOM so that Excel shows Chinese correctly. A `template` record
    (never written) fixes the columns it shows up front, in every flat format: a run that starts with a
    thousand error rows (whose `emotions` is null) still gets its `emotions.<label>` columns, a run with no
    records at all still gets a header, and a key the template shows as a plain value ("") stays one
    column whatever the records hold there: a dict in it is one JSON cell (read back as the dict), never
    spread over `key.sub` columns that the first records would fix and a later record could not fit.
    `whole_keys` are kept one column the same way without a template fixing every column (a profile
    export's open-ended `products` map, whose keys would each make a column). Such a JSON cell is marked
    as JSON in parquet (field metadata `emotag.encoding: json`), so `read_records` decodes exactly the
    columns written from dicts and lists, and a text that only looks like JSON ('{}') stays text.
    """

    def __init__(self, path: str, fmt: str | None = None, resume: bool = False,
                 template: Mapping[str, Any] | None = None, inputs: Sequence[str] = (),
                 settings: Mapping[str, Any] | None = None, whole_keys: Iterable[str] = ()) -> None:
        self.path = path
        self._whole = frozenset(whole_keys)
        self.fmt = _resolve_format(path, fmt)
        self._format = FORMAT_TABLE[self.fmt]
        self.rows_done = 0
        self.partial_path: str | None = None
        self._closed = False
        self._lock: _OutputLock | None = None
        self._fresh = False  # this run created the partial (nothing resumed), so it may remove it again
        self.warnings: list[str] = []  # what the output could not hold as given (also printed to stderr)
        self._written = 0
        self._since_flush = 0
        self._pending: list[dict[str, Any]] = []  # csv/tsv records held back until the columns are known
        self._layout: _Layout | None = (
            None  # csv/tsv: decides the columns; parquet/xlsx: learnt while spooling
        )
        self._flat: _Flattener | None = None  # csv/tsv once the columns are fixed
        self._csv: Any = None
        self._text: IO[str] | None = None  # csv/tsv partial
        self._bin: IO[bytes] | None = None  # jsonl partial, spool, or stdout
        self._stdout = path == "-"
        if self._stdout:
            sys.stdout.flush()
            self._bin = getattr(sys.stdout, "buffer", None)
            return

        if os.path.isdir(path):
            raise InputError(path, "is a directory, not a file")
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            raise InputError(path, f"cannot write: directory '{parent}' does not exist")
        self.partial_path = partial = path + ".partial"
        _refuse_overwriting_inputs(path, partial, inputs)
        try:
            self._lock = _OutputLock(path, partial + _LOCK_SUFFIX)
        except OSError as e:
            raise InputError(path, f"cannot write {partial}{_LOCK_SUFFIX}: {e.strerror or e}") from None
        try:
            self._open_partial(resume, template, inputs, settings)
        except BaseException:
            self._close_handles()
            self._discard_unused_partial()
            self._lock.release()
            raise

    def _open_partial(self, resume: bool, template: Mapping[str, Any] | None, inputs: Sequence[str],
                      settings: Mapping[str, Any] | None) -> None:
        """Open OUT.partial: recover and append to it when resuming, else start it afresh."""
        path, partial, spec = self.path, self.partial_path, self._format
        assert partial is not None
        delimited = spec.delimiter is not None
        delimiter = spec.delimiter or ","
        header: list[str] | None = None
        resuming = resume and os.path.exists(partial)
        origin = _origin(inputs, settings)
        if resuming:
            _check_resume_origin(partial, origin, strict=bool(inputs))
        if spec.layout is not None:
            self._layout = _Layout(track_types=spec.layout == "typed", whole=self._whole)
            if template is not None:  # only number placeholders type columns: "" must not make int ids text
                self._layout.observe(template, value_types=False)
        try:
            if resuming and delimited:
                self.rows_done, header = _recover_delimited(partial, delimiter)
            elif resuming:
                self.rows_done = _recover_jsonl(partial)
                if self._layout is not None:
                    for rec in _spooled(partial):
                        self._layout.observe(rec)
            if delimited:
                mode = "a" if header is not None else "w"
                self._text = open(partial, mode, encoding="utf-8", errors="backslashreplace", newline="")  # noqa: SIM115
                if header is None and spec.bom:
                    self._text.write("\ufeff")
                self._csv = csv.writer(self._text, delimiter=delimiter, lineterminator="\n")
            else:
                self._bin = open(partial, "ab" if resuming else "wb")  # noqa: SIM115
            if not resuming:
                self._fresh = True
                _write_origin(partial, origin)
        except OSError as e:
            raise InputError(path, f"cannot write {partial}: {e.strerror or e}") from None
        if delimited:
            if header is not None:
                self._flat = _Flattener(header)
            else:
                self._layout = _Layout(whole=self._whole)
                if template is not None:
                    self._layout.observe(template)

    # -- writing

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (flushed to the OS every 1000 records, so a crash loses little)."""
        self._write_one(record)
        self._since_flush += 1
        if self._stdout or self._since_flush >= 1000:
            self._flush()

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append a batch of records, then flush (stdout consumers see each batch as it is done)."""
        for record in records:
            self._write_one(record)
        self._flush()

    def _write_one(self, record: Mapping[str, Any]) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if not isinstance(record, Mapping):
            raise TypeError(f"records must be dicts, got {type(record).__name__}")
        limit = self._format.max_rows
        if limit is not None and self.rows_done + self._written >= limit:
            raise InputError(self.path, f"an {self.fmt} sheet holds at most {limit:,} rows; write csv or parquet")
        if self._text is not None:
            if self._flat is None:
                rec = dict(record)
                self._pending.append(rec)
                assert self._layout is not None
                self._layout.observe(rec)
                if self._layout.settled() or len(self._pending) >= _HEADER_BUFFER:
                    self._start_table()
            else:
                self._flat.check(record)
                self._csv.writerow([_text_cell(v) for v in self._flat.values(record)])
        else:
            data = (_dumps(record) + "\n").encode("utf-8", errors="backslashreplace")
            if self._layout is not None:
                self._layout.observe(record)
            if self._bin is not None:
                self._bin.write(data)
            else:  # a replaced sys.stdout without a binary buffer
                sys.stdout.write(data.decode("utf-8"))
        self._written += 1

    def _start_table(self) -> None:
        """Fix the csv/tsv columns from the records held back so far, write the header and those records."""
        assert self._layout is not None
        self._flat = _Flattener(self._layout.columns())
        self._csv.writerow(self._flat.columns)
        pending, self._pending = self._pending, []
        for rec in pending:
            self._flat.check(rec)
            self._csv.writerow([_text_cell(v) for v in self._flat.values(rec)])

    def _has_columns(self) -> bool:
        """Whether the csv/tsv layout knows any column yet (from the template or a record)."""
        return self._layout is not None and bool(self._layout.keys)

    def _flush(self, sync: bool = False) -> None:
        self._since_flush = 0
        fh: IO[Any] | None = self._text if self._text is not None else self._bin
        if fh is None:
            sys.stdout.flush()
            return
        fh.flush()
        if sync and not self._stdout:
            os.fsync(fh.fileno())

    # -- finishing

    def close(self) -> None:
        """Finish: fsync, convert spooled formats, rename onto OUT, remove the partial. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stdout:
            self._flush()
            return
        try:
            self._finish()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _finish(self) -> None:
        assert self.partial_path is not None
        try:
            # With nothing written yet the header still goes out (when a template or a record gave columns):
            # a header-only input must give a table that reads back, not a file holding only a BOM.
            if self._text is not None and self._flat is None and (self._pending or self._has_columns()):
                self._start_table()
            self._flush(sync=True)
        finally:
            self._close_handles()
        spool = self._format.spool
        if spool is None:  # the partial already is the output
            os.replace(self.partial_path, self.path)
        else:
            tmp = self.path + ".converting"
            try:
                warning = spool(self.partial_path, tmp, self._layout)
                os.replace(tmp, self.path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            os.remove(self.partial_path)
            if warning:
                self._warn(warning)
        if os.path.exists(self.partial_path + _ORIGIN_SUFFIX):
            os.remove(self.partial_path + _ORIGIN_SUFFIX)
        _fsync_dir(self.path)

    def _warn(self, problem: str) -> None:
        """Say on stderr, in one line, what the output format could not hold (the run still succeeds: the
        file is written, and the line says how to keep everything). Also kept in `warnings` for callers."""
        warn_user(self.warnings, self.path, problem)

    def resumed_records(self) -> Iterator[dict[str, Any]]:
        """The complete records a resumed partial already holds (none for a fresh run), read back as the
        output format's reader reads them."""
        if not self.rows_done or self.partial_path is None:
            return iter(())
        self._flush()  # nothing of this run is written yet; a csv header held back is not a record either
        fmt = {",": "csv", "\t": "tsv"}.get(self._format.delimiter or "", "jsonl")
        return islice(read_records(self.partial_path, fmt=fmt), self.rows_done)

    def abort(self) -> None:
        """Stop without finishing: the partial stays on disk (complete records only) for a resumed run."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._text is not None and self._flat is None and self._pending:
                self._start_table()
            self._flush(sync=True)
        except Exception:
            pass  # already failing: never mask the original error
        finally:
            self._close_handles()
            if not self._stdout:
                self._discard_unused_partial()
                if self._lock is not None:
                    self._lock.release()

    def _discard_unused_partial(self) -> None:
        """Remove a partial this run started but never wrote a record to (a wrong column name stops the run
        before its first row): it holds nothing to resume, and its record of this run's options would make
        a later `--resume` with the right ones refuse it."""
        if not self._fresh or self._written or self.partial_path is None:
            return
        for leftover in (self.partial_path, self.partial_path + _ORIGIN_SUFFIX):
            with contextlib.suppress(OSError):
                os.remove(leftover)

    def _close_handles(self) -> None:
        for fh in (self._text, self._bin):
            if fh is not None and not self._stdout:
                fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_ORIGIN_SUFFIX = ".meta"  # OUT.partial.meta: what a partial output belongs to
_HEAD_HASH_BYTES = 1 << 20


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through a symlink, a hard link or `./`); False if either is absent."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_overwriting_inputs(path: str, partial: str, inputs: Sequence[str]) -> None:
    """An output (or the partial a resume appends to) that is one of the inputs would destroy it."""
    for src in inputs:
        if src == "-":
            continue
        for target in (path, partial):
            if same_file(src, target):
                raise InputError(target, f"is the input file {src}; writing there would replace the input "
                                         "with the scores: choose another output file")


def _input_identity(path: str) -> dict[str, Any]:
    """Path, size and a hash of the first MiB: enough to tell a resumed run's input from another file."""
    if path == "-":
        return {"path": "-"}
    with _open_binary(path) as f:
        head = hashlib.sha256(f.read(_HEAD_HASH_BYTES)).hexdigest()
        size = os.fstat(f.fileno()).st_size
    return {"path": os.path.abspath(path), "size": size, "head_sha256": head}


def _origin(inputs: Sequence[str], settings: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"inputs": [_input_identity(p) for p in inputs],
            "settings": json.loads(_dumps(dict(settings or {})))}


def _write_origin(partial: str, origin: Mapping[str, Any]) -> None:
    with open(partial + _ORIGIN_SUFFIX, "w", encoding="utf-8") as f:
        f.write(_dumps(origin) + "\n")


def _check_resume_origin(partial: str, origin: Mapping[str, Any], strict: bool) -> None:
    """Refuse to splice a partial written for another input or other options into this run's output.

    `strict`: a partial without a record of its origin (older emotag, copied by hand) is refused too.
    """
    fix = "delete it to start over, or resume with the input and options it was started with"
    try:
        with open(partial + _ORIGIN_SUFFIX, encoding="utf-8") as f:
            old = json.loads(f.read())
    except FileNotFoundError:
        if strict:
            raise InputError(partial, f"cannot resume: no record of the input it was written from; {fix}") from None
        return
    except (OSError, ValueError) as e:
        raise InputError(partial, f"cannot resume: its record {partial}{_ORIGIN_SUFFIX} is unreadable ({e}); "
                                  f"{fix}") from None
    why = _origin_mismatch(old, origin)
    if why:
        raise InputError(partial, f"cannot resume: {why}; {fix}")


def _origin_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Why a partial's recorded origin is not this run's, in words, or None when they match."""
    olds, news = old.get("inputs", []), new.get("inputs", [])
    if len(olds) != len(news):
        return f"it was written from {len(olds)} input files, not {len(news)}"
    for o, n in zip(olds, news, strict=True):
        if o.get("path") != n.get("path"):
            return f"it was written from {o.get('path')}, not {n.get('path')}"
        if o.get("size") != n.get("size"):
            return f"its input had {o.get('size')} bytes, {n.get('path')} has {n.get('size')} now"
        if o.get("head_sha256") != n.get("head_sha256"):
            return f"{n.get('path')} has changed since the partial was written"
    old_set, new_set = old.get("settings", {}), new.get("settings", {})
    for key in dict.fromkeys([*old_set, *new_set]):
        if old_set.get(key) != new_set.get(key):
            return f"it was written with {key} {old_set.get(key)!r}, not {new_set.get(key)!r}"
    return None

