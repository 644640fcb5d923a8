"""Profiles on Spark: executors fold partitions into partial states, a shuffle merges them per user.

Profiles use the mergeable `ProfileState` (a commutative monoid, see emotag.profiles.state): each
partition folds its records into partial states keyed by pseudonymous id -- hashing happens on the
executors, so raw user ids never reach the shuffle or the driver -- and a ``groupBy(user).applyInPandas``
merges the partials. Any split of the data gives the one-pass answer up to float rounding, which is why
Spark-built profiles equal the CLI-built store (tests/test_spark.py checks 1e-9 relative). Writing a store
is `emotag.profiles`' plan -> fold -> commit with this module's fold in the middle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from emotag.integrations.spark.workers import col
from emotag.profiles.api import (
    FoldStats,
    ProfileInputError,
    ProfileRunResult,
    build_profiles,
    commit_profiles,
    plan_profile,
)
from emotag.profiles.privacy import Pseudonymizer, resolve_pseudonymizer
from emotag.profiles.state import DEFAULT_HALF_LIFE_DAYS, DEFAULT_RECENT_HALF_LIFE_DAYS, ProfileState
from emotag.profiles.timeutil import parse_time

if TYPE_CHECKING:
    import pandas as pd

_REC = "__emotag_record"

#: Fields the profile fold may read (SPEC §2 records, `--keep` extras, SPEC §3 conversation results).
#: Only these are shipped to the fold, so raw text never leaves the scan.
_FOLD_FIELDS = (
    "id",
    "user_id",
    "emotion",
    "emotions",
    "polarity",
    "polarity_score",
    "intensity",
    "error",
    "channel",
    "resolved",
    "start_emotion",
    "end_emotion",
    "satisfaction",
    "product",
    "turns",
)

#: Schema of the partial and merged profile states. A row with a null user_id carries FoldStats as JSON.
_STATE_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("evidence", T.LongType()),
        T.StructField("state", T.StringType()),
    ]
)
_OUT_CHUNK = 10_000  # rows per pandas frame emitted by the fold (bounds worker memory)


class _Folder:
    """The per-partition fold: records (as JSON) -> partial states keyed by pseudonymous id, plus stats."""

    def __init__(
        self,
        user_col: str,
        time_col: str,
        half_life_days: float,
        recent_half_life_days: float,
        cutoff: float | None,
        pseudonymizer: Pseudonymizer | None,
        strict: bool,
    ) -> None:
        self.user_col = user_col
        self.time_col = time_col
        self.half_life_days = half_life_days
        self.recent_half_life_days = recent_half_life_days
        self.cutoff = cutoff
        self.pseudonymizer = pseudonymizer
        self.strict = strict

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        def records() -> Iterator[dict[str, Any]]:
            for pdf in batches:
                for s in pdf[_REC].tolist():
                    yield json.loads(s)

        stats = FoldStats()
        try:
            states = build_profiles(
                records(),
                self.half_life_days,
                self.cutoff,
                user_col=self.user_col,
                time_col=self.time_col,
                pseudonymizer=self.pseudonymizer,
                recent_half_life_days=self.recent_half_life_days,
                strict=self.strict,
                stats=stats,
            )
        except ProfileInputError as exc:
            ctx = TaskContext.get()
            where = f" (row counted within Spark partition {ctx.partitionId()})" if ctx is not None else ""
            raise ProfileInputError(exc.row, exc.problem + where) from None
        items = list(states.items())
        for i in range(0, len(items), _OUT_CHUNK):
            part = items[i : i + _OUT_CHUNK]
            yield pd.DataFrame(
                {
                    "user_id": [u for u, _ in part],
                    "evidence": [st.n for _, st in part],
                    "state": [st.to_json() for _, st in part],
                }
            )
        yield pd.DataFrame({"user_id": [None], "evidence": [0], "state": [json.dumps(stats.__dict__)]})


def _merge_group(pdf: pd.DataFrame) -> pd.DataFrame:
    """Merge one user's partial states (or, for the null key, add up the partitions' FoldStats).

    Partials are merged in a fixed order (sorted by their JSON) so the float rounding of the result does
    not depend on shuffle order: repeated runs give bit-identical states.
    """
    import pandas as pd

    uid = pdf["user_id"].iloc[0]
    blobs = sorted(pdf["state"].tolist())
    if uid is None or (isinstance(uid, float) and uid != uid):
        total: dict[str, int] = {}
        for b in blobs:
            for k, v in json.loads(b).items():
                total[k] = total.get(k, 0) + int(v)
        return pd.DataFrame({"user_id": [None], "evidence": [0], "state": [json.dumps(total)]})
    st = ProfileState.from_json(blobs[0])
    for b in blobs[1:]:
        st.merge(ProfileState.from_json(b))
    return pd.DataFrame({"user_id": [uid], "evidence": [st.n], "state": [st.to_json()]})


def _fold_input(scored_df: DataFrame, user_col: str, time_col: str) -> DataFrame:
    """One JSON record per row with only the fields the fold reads (never the text).

    JSON is what the CLI's profile path reads, so maps, structs (e.g. `emotions` from ``spark.read.json``),
    flat ``emotions.<label>`` columns and conversation `turns` all reach the fold as they would from a
    file. Timestamps are written with their UTC offset (microseconds), so their instant is exact whatever
    the session time zone; zone-less ``timestamp_ntz`` values stay naive and follow the CLI's UTC+8 rule.
    """
    wanted = set(_FOLD_FIELDS) | {user_col, time_col}
    cols = [c for c in scored_df.columns if c in wanted or c.startswith("emotions.")]
    missing = [c for c in (user_col, time_col) if c not in scored_df.columns]
    if missing:
        raise ValueError(
            f"scored DataFrame lacks {missing} (columns: {', '.join(scored_df.columns)}); keep them when "
            "scoring, e.g. score_dataframe(df, keep=['user_id', 'time'])"
        )
    rec = F.to_json(
        F.struct(*[col(c) for c in cols]),
        {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"},
    )
    return scored_df.select(rec.alias(_REC))


def _merged_states(
    scored_df: DataFrame,
    user_col: str,
    time_col: str,
    half_life_days: float,
    recent_half_life_days: float,
    now: float | str | None,
    pseudonymizer: Pseudonymizer | None,
    strict: bool,
) -> DataFrame:
    ProfileState(half_life_days, recent_half_life_days)  # validate before any job runs
    cutoff = None if now is None else parse_time(now)
    folder = _Folder(user_col, time_col, float(half_life_days), float(recent_half_life_days), cutoff,
                     pseudonymizer, strict)
    partial = _fold_input(scored_df, user_col, time_col).mapInPandas(folder, _STATE_SCHEMA)
    return partial.groupBy("user_id").applyInPandas(_merge_group, _STATE_SCHEMA)


def _pseudonymizer(
    pseudonymizer: Pseudonymizer | None, key_file: str | Path | None, allow_raw_ids: bool
) -> Pseudonymizer | None:
    """Same rule as `emotag profile`: explicit pseudonymiser, else key file, else $EMOTAG_PSEUDONYM_KEY.

    Resolved on the driver and shipped to the executors inside the task closure (so executors need no
    key configuration, but run with ``spark.authenticate``/``spark.network.crypto.enabled`` on shared
    clusters: the key travels with the tasks).
    """
    if pseudonymizer is not None:
        return pseudonymizer
    return resolve_pseudonymizer(key_file, allow_raw_ids)


def profile_states_df(
    scored_df: DataFrame,
    user_col: str = "user_id",
    time_col: str = "time",
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    *,
    recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
    now: float | str | None = None,
    key_file: str | Path | None = None,
    allow_raw_ids: bool = False,
    pseudonymizer: Pseudonymizer | None = None,
    strict: bool = True,
) -> DataFrame:
    """Merged per-user states as a DataFrame ``(user_id, evidence, state)``, never collected to the driver.

    `state` is `ProfileState.to_json()`; `user_id` is the HMAC pseudonym (computed on the executors). Use
    this when there are too many users to hold on the driver: write it to Parquet, or summarise it on the
    executors with ``ProfileState.from_json(state).summary(...)``.
    """
    pseudo = _pseudonymizer(pseudonymizer, key_file, allow_raw_ids)
    merged = _merged_states(scored_df, user_col, time_col, half_life_days, recent_half_life_days, now,
                            pseudo, strict)
    return merged.where(F.col("user_id").isNotNull())


def build_profiles_spark(
    scored_df: DataFrame,
    user_col: str = "user_id",
    time_col: str = "time",
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    *,
    recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
    now: float | str | None = None,
    key_file: str | Path | None = None,
    allow_raw_ids: bool = False,
    pseudonymizer: Pseudonymizer | None = None,
    strict: bool = True,
    stats: FoldStats | None = None,
) -> dict[str, ProfileState]:
    """`emotag.profiles.build_profiles` on a scored DataFrame: {pseudonymous id: ProfileState} on the driver.

    Pseudonymisation follows `emotag profile`: a key is required (`key_file` or ``$EMOTAG_PSEUDONYM_KEY``
    on the driver) unless `allow_raw_ids`. `now` cuts off later records; `strict` raises on a malformed
    record (the Spark job fails with the row's problem) instead of counting it in `stats.skipped_invalid`.
    One job: per-partition folds, one shuffle of partial states, then the merged states are streamed to
    the driver (holding every user there is the limit; see `profile_states_df` beyond it).
    """
    pseudo = _pseudonymizer(pseudonymizer, key_file, allow_raw_ids)
    merged = _merged_states(scored_df, user_col, time_col, half_life_days, recent_half_life_days, now,
                            pseudo, strict)
    out: dict[str, ProfileState] = {}
    total: dict[str, int] = {}
    for row in merged.toLocalIterator(prefetchPartitions=True):
        if row["user_id"] is None:
            for k, v in json.loads(row["state"]).items():
                total[k] = total.get(k, 0) + int(v)
        else:
            out[row["user_id"]] = ProfileState.from_json(row["state"])
    if stats is not None:
        for k, v in total.items():
            setattr(stats, k, getattr(stats, k) + v)
    return out


def write_profiles_store(
    scored_df: DataFrame,
    store_path: str | Path,
    out: str | None = None,
    user_col: str = "user_id",
    time_col: str = "time",
    rules_path: str | Path | None = None,
    key_file: str | Path | None = None,
    allow_raw_ids: bool = False,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    recent_half_life_days: float = DEFAULT_RECENT_HALF_LIFE_DAYS,
    now: float | str | None = None,
    batch_id: str | None = None,
    strict: bool = True,
) -> ProfileRunResult:
    """`emotag.profiles.run_profile` for a scored DataFrame: fold on Spark, merge into a ProfileStore.

    The same three steps as the CLI (`plan_profile` -> fold -> `commit_profiles`), with the fold on the
    executors: rules, key, output extension, store compatibility and `batch_id` are checked before any
    Spark job; a misspelt `user_col`, records after `now`, and a batch that folded nothing are refused or
    left unrecorded exactly as `emotag profile` does. The store is a SQLite file on the driver, updated in
    one transaction; `out` then receives every profile in the store, summarised as of `now` (default: the
    newest record time in the store).
    """
    with plan_profile(out, user_col, time_col, rules_path, store_path, key_file, allow_raw_ids,
                      half_life_days=half_life_days, recent_half_life_days=recent_half_life_days, now=now,
                      batch_id=batch_id) as plan:
        stats = FoldStats()
        states: dict[str, ProfileState] = {}
        if not plan.already_applied:
            states = build_profiles_spark(
                scored_df,
                user_col,
                time_col,
                half_life_days,
                recent_half_life_days=recent_half_life_days,
                now=plan.cutoff,
                pseudonymizer=plan.pseudonymizer,
                allow_raw_ids=allow_raw_ids,
                strict=strict,
                stats=stats,
            )
        return commit_profiles(plan, states, stats, source="spark")
