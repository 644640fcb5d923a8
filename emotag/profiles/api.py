"""Library entry points: fold records into profiles, persist them, export them.

`run_profile` is what `emotag profile` calls. It is three steps, and every writer of a store (the CLI,
Spark's `write_profiles_store`, `emotag serve`) runs the same three, so a check lives in one place:

1. `plan_profile`: rules, key, output format, half-lives, store compatibility, applied batch -- all checked
   before a record is read;
2. fold: `fold_records` (one machine) or any fold that fills a `FoldStats` (Spark's executors);
3. `commit_profiles`: the post-fold checks (`check_fold`), one store transaction, the profile export.

`build_profiles` and `profile_rows` remain usable alone for notebooks and pipelines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotag.profiles.conversations import conversation_to_record
from emotag.profiles.export import format_for, write_rows
from emotag.profiles.privacy import Pseudonymizer, normalize_user_id, resolve_pseudonymizer
from emotag.profiles.records import EmotionLabels, LabelSetError, RecordError, extract, record_error
from emotag.profiles.rules import RuleSet, load_rules
from emotag.profiles.state import DEFAULT_HALF_LIFE_DAYS, DEFAULT_RECENT_HALF_LIFE_DAYS, ProfileState
from emotag.profiles.store import ProfileStore, StoreError
from emotag.profiles.timeutil import parse_time


class ProfileInputError(ValueError):
    """A record that cannot be folded. `row` is its 0-based position in the input; the message counts from 1,
    as every other input error does. The CLI names the file and the row within it."""

    def __init__(self, row: int, problem: str) -> None:
        self.row = row
        self.problem = problem
        super().__init__(f"row {row + 1}: {problem}")


class ProfileColumnError(ValueError):
    """A column setting that no record matches (a misspelt --user-col): nothing is folded or recorded."""


@dataclass
class FoldStats:
    """What happened to each input record (every record lands in exactly one bucket)."""

    read: int = 0
    folded: int = 0
    skipped_error: int = 0
    skipped_no_user: int = 0
    skipped_invalid: int = 0
    skipped_future: int = 0
    conversations: int = 0

    @property
    def skipped(self) -> int:
        return self.skipped_error + self.skipped_no_user + self.skipped_invalid + self.skipped_future


def build_profiles(
    records: Iterable[Mapping[str, Any]],
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    now: float | str | None = None,
    *,
    user_col: str = "user_id",
    time_col: str = "time",
    pseudonymizer: Pseudonymizer | None = None,
    recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
    strict: bool = True,
    stats: FoldStats | None = None,
    on_invalid: Callable[[int, str], None] | None = None,
    labels: EmotionLabels | Sequence[str] | None = None,
) -> dict[str, ProfileState]:
    """Fold an iterable of scored records (SPEC §2) or conversation results (SPEC §3) into user states.

    * Records with an `error` (see `record_error`: None, blank and NaN are none), or without a user id, are
      skipped and counted in `stats`.
    * `now` (epoch seconds or ISO string) builds profiles "as of" that instant: later records are skipped
      (counted as `skipped_future`), which makes back-testing tags reproducible. None = no cut-off.
    * Keys are ``pseudonymizer(user_id)`` when a pseudonymiser is given, else the normalised raw ids
      (fine in memory; `run_profile` and the store refuse to persist raw ids unless allowed).
    * A malformed record raises ProfileInputError (row, problem) when `strict`, else is counted as
      `skipped_invalid` and reported to `on_invalid(row, problem)` (0-based row), so a caller can name it.
      Any `text` field is ignored: raw text never reaches a profile.
    * Emotion labels are the default taxonomy or a custom-label model's, fixed by the first record (or
      given as `labels`, e.g. a store's); a record over other labels stops the fold even when not
      `strict` (ProfileInputError): that is a mix of two models' output, not one bad row.

    Longer than most functions on purpose: it is the fold's hot path (scripts/bench_profiles.py), one loop
    with local counters and no per-record call beyond `extract` and `ProfileState.add`.
    """
    st_ = stats if stats is not None else FoldStats()
    cutoff = None if now is None else parse_time(now)
    states: dict[str, ProfileState] = {}
    get = states.get
    hl, rhl = float(half_life_days), float(recent_half_life_days)
    ProfileState(hl, rhl)  # validate half-lives before reading any input
    labs = labels if isinstance(labels, EmotionLabels) else EmotionLabels(labels)
    read = folded = err = nouser = invalid = future = convs = 0
    row = -1
    for row, rec in enumerate(records):  # noqa: B007 - row is reported on error
        if "turns" in rec and isinstance(rec["turns"], list):
            try:
                rec = conversation_to_record(rec, user_col, time_col)
            # a damaged score-dialogues record (OverflowError: a satisfaction of hundreds of digits)
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
                if strict:
                    st_.read += row + 1
                    raise ProfileInputError(row, f"conversation record: {exc}") from None
                invalid += 1
                if on_invalid is not None:
                    on_invalid(row, f"conversation record: {exc}")
                continue
            convs += 1
        # the `is not None` pre-test keeps the common case (no error field, or null) free of a call
        if rec.get("error") is not None and record_error(rec) is not None:
            err += 1
            continue
        uid = rec.get(user_col)
        if type(uid) is not str or not uid or uid[0].isspace() or uid[-1].isspace():
            uid = normalize_user_id(uid)
            if uid is None:
                nouser += 1
                continue
        try:
            vals = extract(rec, time_col, labs)
        except RecordError as exc:
            if strict or isinstance(exc, LabelSetError):
                st_.read += row + 1
                raise ProfileInputError(row, str(exc)) from None
            invalid += 1
            if on_invalid is not None:
                on_invalid(row, str(exc))
            continue
        if cutoff is not None and vals[0] > cutoff:
            future += 1
            continue
        st = get(uid)
        if st is None:
            st = states[uid] = ProfileState(hl, rhl, labs.names)  # type: ignore[arg-type]
        st.add(*vals)
        folded += 1
    read = row + 1
    st_.read += read
    st_.folded += folded
    st_.skipped_error += err
    st_.skipped_no_user += nouser
    st_.skipped_invalid += invalid
    st_.skipped_future += future
    st_.conversations += convs
    if pseudonymizer is None:
        return states
    out: dict[str, ProfileState] = {}
    for uid, st in states.items():
        pid = pseudonymizer(uid)
        if pid in out:  # pragma: no cover - a SHA-256 collision
            out[pid].merge(st)
        else:
            out[pid] = st
    return out


def profile_rows(
    states: Iterable[tuple[str, ProfileState]] | Mapping[str, ProfileState],
    rules: RuleSet | None = None,
    now: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Per-user summaries (SPEC §4) with tags, in the given order.

    `now` defaults to the newest record time among these users, so `days_since_last` and the decayed
    evidence compare across users (each user's own last record would make every user look current).
    """
    if rules is None:
        rules = load_rules()
    items = states.items() if isinstance(states, Mapping) else states
    if now is None:
        items = list(items)
        now = max((st.last for _, st in items if st.n), default=None)
    for uid, st in items:
        yield st.summary(now, rules, user_id=uid)


@dataclass
class ProfileRunResult:
    """Outcome of `run_profile`; `message()` is the one-line summary the CLI prints."""

    stats: FoldStats
    users_in_batch: int
    users_total: int
    profiles_written: int = 0
    out: str | None = None
    store: str | None = None
    batch_id: str | None = None
    already_applied: bool = False
    pseudonymous: bool = True
    now: float | None = None
    elapsed_s: float = 0.0
    #: Emotion labels of the profiles (the default taxonomy or a custom-label model's); None: none folded.
    labels: tuple[str, ...] | None = None
    #: (tag, missing labels) of the rules these labels cannot fire, named in `message()`.
    rules_skipped: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    states: dict[str, ProfileState] = field(default_factory=dict, repr=False)
    #: (input, the earlier input with the same content) for each input left out as a repeat: the caller
    #: (`emotag profile` without --store) folds a file once, and `message()` says which were left out, so
    #: a count that is smaller than the inputs suggest is explained.
    repeated_inputs: list[tuple[str, str]] = field(default_factory=list)

    def message(self) -> str:
        s = self.stats
        parts = [f"{s.folded} records folded into {self.users_in_batch} users"]
        if s.skipped:
            parts.append(
                f"skipped {s.skipped} (error {s.skipped_error}, no user {s.skipped_no_user}, "
                f"invalid {s.skipped_invalid}, after cut-off {s.skipped_future})"
            )
        if self.repeated_inputs:
            parts.append("repeated input skipped, folded once: " + ", ".join(
                f"{path} (same content as {first})" if path != first else f"{path} (given twice)"
                for path, first in self.repeated_inputs))
        if self.store:
            parts.append(
                f"store {self.store}: batch already applied, unchanged"
                if self.already_applied
                else f"store {self.store}"
            )
            parts.append(f"{self.users_total} users total")
        if self.out:
            parts.append(f"{self.profiles_written} profiles written to {self.out}")
        if self.rules_skipped:
            skipped = ", ".join(f"{tag} ({', '.join(need)})" for tag, need in self.rules_skipped)
            parts.append(f"rules skipped, their emotion labels are not this model's: {skipped}")
        if not self.pseudonymous:
            parts.append("WARNING: raw user ids kept (allow_raw_ids)")
        parts.append(f"{self.elapsed_s:.1f}s")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("states", "stats")}
        d["stats"] = dict(self.stats.__dict__)
        return d


@dataclass
class ProfilePlan:
    """Step 1 of a profile run: every setting checked, and the store opened, before a record is read.

    `run_profile`, Spark's `write_profiles_store` and the HTTP service all start here, fold their records
    with `self.pseudonymizer`/`self.cutoff`, and finish with `commit_profiles`, so a check added to one
    path reaches all of them. Close it (or use it as a context manager) to release the store.
    """

    rules: RuleSet
    pseudonymizer: Pseudonymizer | None
    cutoff: float | None
    half_life_days: float
    recent_half_life_days: float
    user_col: str = "user_id"
    time_col: str = "time"
    out: str | None = None
    store: ProfileStore | None = None
    store_path: str | None = None
    batch_id: str | None = None
    already_applied: bool = False
    #: The store's emotion labels (None: no store, or an empty one): the fold must match them.
    labels: tuple[str, ...] | None = None
    #: The files the records come from: `out` must not be one of them.
    inputs: tuple[str, ...] = ()
    t0: float = field(default_factory=time.perf_counter)

    @property
    def fingerprint(self) -> str | None:
        return self.pseudonymizer.fingerprint if self.pseudonymizer is not None else None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> ProfilePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_profile(
    out: str | None = None,
    user_col: str = "user_id",
    time_col: str = "time",
    rules_path: str | Path | RuleSet | None = None,
    store_path: str | Path | None = None,
    key_file: str | Path | None = None,
    allow_raw_ids: bool = False,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
    now: float | str | None = None,
    batch_id: str | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    wal: bool = False,
    inputs: Sequence[str] = (),
) -> ProfilePlan:
    """Check everything that can fail cheaply -- rules, key, output extension, half-lives, store
    compatibility, whether `batch_id` was applied -- before any record is read or any job runs.

    `rules_path` may be an already loaded RuleSet (a long-running service loads it once); `pseudonymizer`
    overrides the key lookup. `wal` opens the store in SQLite WAL mode (the service's durability setting).
    `inputs` (the scored files) are never written over: an `out` that is one of them is refused here.
    """
    rules = rules_path if isinstance(rules_path, RuleSet) else load_rules(rules_path)
    pseudo = pseudonymizer if pseudonymizer is not None else resolve_pseudonymizer(key_file, allow_raw_ids)
    if out is not None:
        format_for(out, inputs)
    ProfileState(half_life_days, recent_half_life_days)  # validate half-lives before reading any input
    plan = ProfilePlan(
        rules=rules,
        pseudonymizer=pseudo,
        cutoff=None if now is None else parse_time(now),
        half_life_days=float(half_life_days),
        recent_half_life_days=float(recent_half_life_days),
        user_col=user_col,
        time_col=time_col,
        out=out,
        store_path=None if store_path is None else str(store_path),
        batch_id=batch_id,
        inputs=tuple(inputs),
    )
    if store_path is not None:
        plan.store = ProfileStore(store_path, wal=wal)
        try:
            plan.store.check_compatible(half_life_days, recent_half_life_days, plan.fingerprint)
            plan.already_applied = batch_id is not None and plan.store.has_batch(batch_id)
            plan.labels = plan.store.labels
        except BaseException:
            plan.close()
            raise
    return plan


def fold_records(
    plan: ProfilePlan,
    records: Iterable[Mapping[str, Any]],
    stats: FoldStats,
    *,
    strict: bool = True,
    on_invalid: Callable[[int, str], None] | None = None,
) -> dict[str, ProfileState]:
    """Step 2 on one machine: `build_profiles` with the plan's settings (nothing when the batch was applied)."""
    if plan.already_applied:
        return {}
    return build_profiles(
        records,
        plan.half_life_days,
        plan.cutoff,
        user_col=plan.user_col,
        time_col=plan.time_col,
        pseudonymizer=plan.pseudonymizer,
        recent_half_life_days=plan.recent_half_life_days,
        strict=strict,
        stats=stats,
        on_invalid=on_invalid,
        labels=None if plan.labels is None else EmotionLabels(plan.labels, f"the store {plan.store_path}"),
    )


def check_fold(plan: ProfilePlan, stats: FoldStats) -> None:
    """The checks between folding and committing, shared by every path that writes a store.

    * No record had a user in `user_col` (a misspelt column): nothing is recorded, so the corrected
      re-run is not refused as an already applied batch.
    * A store with records after `--now`: recording the batch would lose those records for good.
    """
    if stats.read and stats.skipped_no_user and stats.skipped_no_user == stats.read - stats.skipped_error:
        raise ProfileColumnError(f"no record has a user in column '{plan.user_col}' (--user-col)")
    if plan.store is not None and stats.skipped_future:
        raise StoreError(f"{stats.skipped_future} records are after --now; a store keeps every record, "
                         "so fold them without --now (or use --now without --store for a view)")


def commit_profiles(
    plan: ProfilePlan,
    states: Mapping[str, ProfileState],
    stats: FoldStats,
    *,
    source: str | None = None,
) -> ProfileRunResult:
    """Step 3: check the fold, merge it into the store in one transaction, write `plan.out`.

    A batch that folded nothing is not recorded as applied (its corrected re-run must still count).
    With a store, `plan.out` receives every user in the store, summarised as of the cut-off, else the
    newest record time in the store (or in this batch without a store), so output is reproducible.
    """
    store = plan.store
    already = plan.already_applied
    if not already:
        check_fold(plan, stats)
        if store is not None and stats.folded:
            already = not store.upsert(
                states, key_fingerprint=plan.fingerprint, batch_id=plan.batch_id, records=stats.folded,
                source=source,
            )
    result = ProfileRunResult(
        stats=stats,
        users_in_batch=len(states),
        users_total=len(store) if store is not None else len(states),
        out=plan.out,
        store=plan.store_path,
        batch_id=plan.batch_id,
        already_applied=already,
        pseudonymous=plan.pseudonymizer is not None,
        labels=next((st.labels for st in states.values()), plan.labels),
        states=dict(states),
    )
    if result.labels is not None:
        result.rules_skipped = plan.rules.unusable(result.labels)
    as_of = plan.cutoff
    if as_of is None:
        if store is not None:
            as_of = store.max_time
        elif states:
            as_of = max(st.last for st in states.values())
    result.now = as_of
    if plan.out is not None:
        items: Iterable[tuple[str, ProfileState]]
        items = store.iter_states() if store is not None else sorted(states.items())
        result.profiles_written = write_rows(profile_rows(items, plan.rules, as_of), plan.out,
                                             inputs=plan.inputs)
    result.elapsed_s = time.perf_counter() - plan.t0
    return result


def run_profile(
    records: Iterable[Mapping[str, Any]],
    out: str | None = None,
    user_col: str = "user_id",
    time_col: str = "time",
    rules_path: str | Path | None = None,
    store_path: str | Path | None = None,
    key_file: str | Path | None = None,
    allow_raw_ids: bool = False,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
    now: float | str | None = None,
    batch_id: str | None = None,
    strict: bool = True,
    on_invalid: Callable[[int, str], None] | None = None,
    inputs: Sequence[str] = (),
) -> ProfileRunResult:
    """Fold `records`, merge them into the store (if `store_path`), write profiles to `out` (if given).

    `plan_profile` -> `fold_records` -> `commit_profiles`; see each for what it checks. `batch_id`
    (e.g. `file_batch_id(path)`) makes re-applying the same input a no-op. With `strict=False` a malformed
    record is skipped, counted in `stats.skipped_invalid` and passed to `on_invalid(row, problem)`.
    `inputs` names the files `records` come from, so that `out` never replaces one of them.
    Raises ProfileInputError, RulesError, PseudonymKeyError, StoreError, ExportError for user errors.
    """
    with plan_profile(out, user_col, time_col, rules_path, store_path, key_file, allow_raw_ids,
                      half_life_days=half_life_days, recent_half_life_days=recent_half_life_days, now=now,
                      batch_id=batch_id, inputs=inputs) as plan:
        stats = FoldStats()
        states = fold_records(plan, records, stats, strict=strict, on_invalid=on_invalid)
        return commit_profiles(plan, states, stats)
