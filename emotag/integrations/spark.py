"""Apache Spark integration: score a DataFrame column and build per-user profiles on a cluster.

Why it is shaped this way
-------------------------
* **Scoring** runs inside ``mapInPandas``: Spark hands each Python worker Arrow batches of a partition, so
  texts cross the JVM/Python boundary in bulk, and the worker scores them with the same `Tagger.tag_many`
  the CLI uses. Loading an ONNX session costs far more than scoring one batch, so sessions live in a
  module-level cache (`load_tagger`, keyed by the resolved model path, backend and threads): PySpark
  reuses Python workers across tasks (``spark.python.worker.reuse``, on by default), so each worker loads
  the model once for the whole job instead of once per partition or batch.
* **The model directory** must exist on every executor. Three ways are supported, resolved inside the
  worker (`resolve_model_on_worker`): a path that exists on every node (shared filesystem, cluster image),
  a directory shipped from the driver by `ship_model` (``addFile`` in local mode, a packed ``addArchive``
  on a cluster; referenced as ``"sparkfiles:<name>"``), or an archive shipped with
  ``--archives model.tar.gz#emotag_model`` (referenced by its unpacked name, ``"emotag_model"``, which is
  looked up in the worker's working directory and in the SparkFiles root).
* **Profiles** use the mergeable `ProfileState` (a commutative monoid, see emotag.profiles.state): each
  partition folds its records into partial states keyed by pseudonymous id -- hashing happens on the
  executors, so raw user ids never reach the shuffle or the driver -- and a ``groupBy(user).applyInPandas``
  merges the partials. Any split of the data gives the one-pass answer up to float rounding, which is why
  Spark-built profiles equal the CLI-built store (tests/test_spark.py checks 1e-9 relative).

See docs/scale.md for running this on a real cluster.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from pyspark import SparkFiles, TaskContext
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "emotag.integrations.spark needs PySpark: pip install 'emotag[spark]' (and a Java 17+ runtime)"
    ) from exc

from emotag.labels import EMOTIONS
from emotag.profiles.api import FoldStats, ProfileInputError, ProfileRunResult, build_profiles, profile_rows
from emotag.profiles.export import format_for, write_rows
from emotag.profiles.privacy import Pseudonymizer, resolve_pseudonymizer
from emotag.profiles.rules import load_rules
from emotag.profiles.state import DEFAULT_HALF_LIFE_DAYS, DEFAULT_RECENT_HALF_LIFE_DAYS, ProfileState
from emotag.profiles.store import ProfileStore
from emotag.profiles.timeutil import parse_time
from emotag.scoring import OUTPUT_FIELDS
from emotag.tagger import Tagger

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SPARKFILES_PREFIX",
    "build_profiles_spark",
    "load_tagger",
    "profile_states_df",
    "resolve_model_on_worker",
    "score_dataframe",
    "scored_schema",
    "ship_model",
    "write_profiles_store",
]

#: Model references starting with this are directories shipped with `ship_model` / ``addFile``.
SPARKFILES_PREFIX = "sparkfiles:"

# Internal column names for the scorer's input, chosen so they cannot collide with kept columns.
_TEXT = "__emotag_text"
_ID = "__emotag_id"
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


# -- the model on the executors -----------------------------------------------------------------------


_SHIPPED: dict[tuple[str, str], str] = {}  # (application id, model dir) -> reference


def ship_model(spark: SparkSession, model_dir: str | os.PathLike[str], method: str = "auto") -> str:
    """Send a local model directory to every executor; returns the reference to pass as `model`.

    No shared filesystem or pre-installed model is needed: the driver serves the files and each executor
    fetches them once per application. `method`:

    * ``"file"``: ``SparkContext.addFile(dir, recursive=True)``. Spark accepts a *local* directory only
      with a local master, so this is what ``"auto"`` picks in local mode (no packing step).
    * ``"archive"``: pack the directory into a temporary ``.tar.gz`` on the driver and
      ``SparkContext.addArchive(tar#name)`` it; executors unpack it under their SparkFiles root. This is
      what ``"auto"`` picks on a cluster.

    Calling it again for the same directory in the same application returns the first reference.
    """
    path = Path(model_dir).resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an emotag model directory (no config.json)")
    sc = spark.sparkContext
    if method == "auto":
        method = "file" if sc.master.startswith("local") else "archive"
    if method not in ("file", "archive"):
        raise ValueError(f"method must be 'auto', 'file' or 'archive', not {method!r}")
    key = (sc.applicationId, str(path))
    if key in _SHIPPED:
        return _SHIPPED[key]
    if method == "file":
        sc.addFile(str(path), recursive=True)
        name = path.name
    else:
        import atexit
        import hashlib
        import shutil
        import tarfile
        import tempfile

        taken = {r for (app, _), r in _SHIPPED.items() if app == sc.applicationId}
        name = path.name
        if SPARKFILES_PREFIX + name in taken:  # another directory of the same name was shipped already
            name += "-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
        tmp = tempfile.mkdtemp(prefix="emotag-model-")
        atexit.register(shutil.rmtree, tmp, True)  # the driver serves the file until the application ends
        archive = os.path.join(tmp, name + ".tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for f in sorted(path.iterdir()):
                tar.add(str(f), arcname=f.name)
        sc.addArchive(f"{archive}#{name}")
    ref = SPARKFILES_PREFIX + name
    _SHIPPED[key] = ref
    return ref


def resolve_model_on_worker(model: str | os.PathLike[str] | None) -> str | None:
    """The local directory for a model reference, as seen from the process calling it (a worker).

    * None: the bundled default (``$EMOTAG_MODEL`` or the installed package's models/); None is returned
      and `Tagger.load` resolves it.
    * ``"sparkfiles:NAME"``: a directory shipped with `ship_model` / ``addFile``.
    * any other string: that path if it is a directory (absolute, or relative to the worker's working
      directory, where YARN unpacks ``--archives x.tar.gz#NAME``), else NAME under the SparkFiles root
      (where local, standalone and Kubernetes deployments unpack ``spark.archives``).
    """
    if model is None:
        return None
    ref = os.fspath(model)
    tried: list[str] = []
    if ref.startswith(SPARKFILES_PREFIX):
        path = SparkFiles.get(ref[len(SPARKFILES_PREFIX) :])
        if os.path.isdir(path):
            return path
        tried.append(path)
    else:
        if os.path.isdir(ref):
            return os.path.abspath(ref)
        tried.append(os.path.abspath(ref))
        if not os.path.isabs(ref):
            try:
                root = SparkFiles.getRootDirectory()
            except Exception:  # noqa: BLE001 - not inside a Spark application
                root = None
            if root:
                path = os.path.join(root, ref)
                if os.path.isdir(path):
                    return path
                tried.append(path)
    raise FileNotFoundError(
        f"emotag model {ref!r} not found on this Spark worker (tried {', '.join(tried)}); use a path that "
        "exists on every node, emotag.integrations.spark.ship_model(spark, dir), or "
        "--archives model.tar.gz#NAME with model='NAME'"
    )


@functools.lru_cache(maxsize=4)
def _cached_tagger(model_dir: str | None, backend: str, threads: int) -> Tagger:
    return Tagger.load(model_dir, backend=backend, threads=threads)


def load_tagger(model: str | os.PathLike[str] | None, backend: str = "onnx", threads: int = 1) -> Tagger:
    """The worker's Tagger for `model`, loaded once per Python worker process and reused.

    Cached on the resolved path (so a reference and the path it resolves to share one session), the backend
    and the thread count. Sessions are never shared across processes: onnxruntime sessions are not fork-safe.
    """
    return _cached_tagger(resolve_model_on_worker(model), backend, int(threads))


# -- scoring ------------------------------------------------------------------------------------------


def _col(name: str) -> Column:
    """A column by its literal name (names such as ``emotions.anger`` contain dots)."""
    return F.col("`" + name.replace("`", "``") + "`")


def scored_schema(id_type: T.DataType = T.LongType(), keep: Sequence[T.StructField] = ()) -> T.StructType:
    """The SPEC §2 output schema of `score_dataframe` (before flattening), then the kept columns.

    `emotions` is ``map<string,double>``: a model may carry its own label set, the map needs no label list
    on the driver, and it round-trips to the ``{label: prob}`` object of the CLI's JSONL (``to_json``,
    Parquet and the profile fold all read it as such).
    """
    fields = [
        T.StructField("id", id_type),
        T.StructField("emotion", T.StringType()),
        T.StructField("emotions", T.MapType(T.StringType(), T.DoubleType(), valueContainsNull=False)),
        T.StructField("polarity", T.StringType()),
        T.StructField("polarity_score", T.DoubleType()),
        T.StructField("intensity", T.DoubleType()),
        T.StructField("error", T.StringType()),
    ]
    return T.StructType(fields + list(keep))


def _id_value(v: Any, as_int: bool) -> str | int | None:
    """Python value of an id cell. Ids travel as strings (a nullable long column would reach pandas as
    float64, which silently rounds ids above 2**53) and integer ids are turned back into ints here."""
    if v is None or (isinstance(v, float) and v != v):  # None, or NaN from pandas' string dtype
        return None
    return int(v) if as_int else str(v)


def _text_problem(t: Any) -> str | None:
    """Why a cell cannot be scored (the CLI's wording), or None when it is a non-blank string."""
    if isinstance(t, str):
        return None if t.strip() else "text is empty"
    if t is None or (isinstance(t, float) and t != t):
        return "text is null"
    return f"text is not a string (got {type(t).__name__})"


class _Scorer:
    """The ``mapInPandas`` function: picklable state only; the Tagger comes from the worker's cache."""

    def __init__(
        self,
        model: str | None,
        backend: str,
        threads: int,
        batch_size: int,
        id_kind: str | None,
        keep: tuple[str, ...],
        row_offsets: dict[int, int] | None,
    ) -> None:
        self.model = model
        self.backend = backend
        self.threads = threads
        self.batch_size = batch_size
        self.id_kind = id_kind  # None (row numbers), "int" or "str"
        self.keep = keep
        self.row_offsets = row_offsets

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        tagger = load_tagger(self.model, self.backend, self.threads)
        index = 0
        if self.row_offsets is not None:
            ctx = TaskContext.get()
            index = self.row_offsets.get(ctx.partitionId(), 0) if ctx is not None else 0
        chunk = max(2048, self.batch_size * 16)  # as `score_file`: length-sorted batching within 2048 texts
        for pdf in batches:
            n = len(pdf)
            texts = pdf[_TEXT].tolist()
            if self.id_kind is not None:
                as_int = self.id_kind == "int"
                ids: list[Any] = [_id_value(v, as_int) for v in pdf[_ID].tolist()]
            else:
                ids = list(range(index, index + n))
                index += n
            problems = [_text_problem(t) for t in texts]
            ok = [i for i in range(n) if problems[i] is None]
            cols: dict[str, list[Any]] = {f: [None] * n for f in OUTPUT_FIELDS}
            cols["id"] = ids
            results = tagger.tag_many([texts[i] for i in ok], batch_size=self.batch_size,
                                      ids=[ids[i] for i in ok], chunk_size=chunk)
            for i, res in zip(ok, results, strict=True):
                cols["emotion"][i] = res.emotion
                cols["emotions"][i] = res.emotions
                cols["polarity"][i] = res.polarity
                cols["polarity_score"][i] = res.polarity_score
                cols["intensity"][i] = res.intensity
                cols["error"][i] = res.error
            for i in range(n):
                if problems[i] is not None:
                    cols["error"][i] = problems[i]
            out = pd.DataFrame(cols)
            if self.keep:
                out = pd.concat([out, pdf[list(self.keep)].reset_index(drop=True)], axis=1)
            yield out


def _count_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Rows in this task's partition (the counting pass behind default row-number ids)."""
    import pandas as pd

    ctx = TaskContext.get()
    n = sum(len(pdf) for pdf in batches)
    yield pd.DataFrame({"p": [ctx.partitionId() if ctx is not None else 0], "n": [n]})


def _row_offsets(scorer_input: DataFrame) -> dict[int, int]:
    """First 0-based row number of each partition of `scorer_input`.

    Counted with a ``mapInPandas`` over exactly the plan the scorer will run on, so both see the same
    partitions: a ``spark_partition_id()`` aggregate is not safe (the optimizer folds it into local
    relations, and column pruning below a shuffle can change how AQE coalesces partitions).
    """
    counts = {int(r["p"]): int(r["n"]) for r in scorer_input.mapInPandas(_count_partition, "p int, n long").collect()}
    offsets: dict[int, int] = {}
    total = 0
    for p in sorted(counts):
        offsets[p] = total
        total += counts[p]
    return offsets


def _driver_labels(model: str | None) -> tuple[str, ...]:
    """Emotion labels of `model` if the driver can read its config, else the default taxonomy."""
    from emotag.model.config import EmotagConfig, resolve_model_dir

    try:
        if model is not None and model.startswith(SPARKFILES_PREFIX):
            path = Path(SparkFiles.get(model[len(SPARKFILES_PREFIX) :]))
        else:
            path = resolve_model_dir(model)
        return tuple(EmotagConfig.load(path).emotion_labels)
    except Exception:  # noqa: BLE001 - the model may exist only on the executors (--archives)
        return EMOTIONS


def score_dataframe(
    df: DataFrame,
    text_col: str = "text",
    id_col: str | None = None,
    keep: Sequence[str] | str | None = None,
    model: str | os.PathLike[str] | None = None,
    threads_per_worker: int = 1,
    batch_size: int = 64,
    backend: str = "onnx",
    flatten_emotions: bool = False,
) -> DataFrame:
    """Score `text_col` of `df`: one output row per input row with the SPEC §2 columns, then `keep`.

    * `id_col`: a string or integer column copied to `id`. None = the 0-based row number in the
      DataFrame's partition order (the CLI's default). That costs one extra pass over the input (a count
      per partition, run now) and is only stable for inputs whose partitions are deterministic (files,
      tables, local data); pass an id column after ``repartition()``, sampling or non-deterministic joins.
    * `model`: a path present on every node, a `ship_model` reference (``"sparkfiles:NAME"``), the name an
      ``--archives ...#NAME`` archive is unpacked under, or None for the bundled model.
    * `threads_per_worker`: onnxruntime threads per Python worker. Each executor core runs one worker, so
      match it with ``spark.task.cpus`` to avoid oversubscribing cores (docs/scale.md).
    * `flatten_emotions`: replace the `emotions` map with one ``emotions.<label>`` column per label (the
      CLI's tabular layout); labels come from the model config when the driver can read it.

    Rows whose text is null, blank or not a string get `error` set and null scores, never an exception.
    The result is lazy, like any DataFrame transformation.
    """
    if isinstance(keep, str):
        keep = [k for k in keep.split(",") if k]
    keep_t = tuple(dict.fromkeys(keep or ()))
    names = set(df.columns)
    for c in (text_col, *([id_col] if id_col else []), *keep_t):
        if c not in names:
            raise ValueError(f"column {c!r} not in the DataFrame (columns: {', '.join(df.columns)})")
    clash = [k for k in keep_t if k in OUTPUT_FIELDS]
    if clash:
        raise ValueError(f"kept column(s) {clash} would collide with output fields {list(OUTPUT_FIELDS)}")
    if threads_per_worker < 1 or batch_size < 1:
        raise ValueError("threads_per_worker and batch_size must be >= 1")
    model_ref = None if model is None else os.fspath(model)

    cols = [_col(text_col).cast("string").alias(_TEXT)]
    id_type: T.DataType = T.LongType()
    id_kind: str | None = None
    if id_col is not None:
        src = df.schema[id_col].dataType
        id_kind = "int" if isinstance(src, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)) else "str"
        if id_kind == "str":
            id_type = T.StringType()
        cols.append(_col(id_col).cast("string").alias(_ID))
    cols += [_col(k) for k in keep_t]
    schema = scored_schema(id_type, [df.schema[k] for k in keep_t])
    source = df.select(*cols)
    offsets = _row_offsets(source) if id_col is None else None
    scorer = _Scorer(model_ref, backend, threads_per_worker, batch_size, id_kind, keep_t, offsets)
    out = source.mapInPandas(scorer, schema)
    if flatten_emotions:
        labels = _driver_labels(model_ref)
        sel: list[Column] = []
        for c in out.columns:
            if c == "emotions":
                sel += [F.col("emotions")[lab].alias(f"emotions.{lab}") for lab in labels]
            else:
                sel.append(_col(c))
        out = out.select(*sel)
    return out


# -- profiles -----------------------------------------------------------------------------------------


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
        F.struct(*[_col(c) for c in cols]),
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

    Same checks, in the same order, before any Spark job: rules file, pseudonymisation key, output
    extension, store compatibility (half-lives, key fingerprint) and `batch_id` (an applied batch is a
    no-op, so a re-run job does not double-count). The store is a SQLite file on the driver and is updated
    in one transaction; `out` then receives every profile in the store, summarised as of `now` (default:
    the newest record time in the store), exactly like the CLI.
    """
    t0 = time.perf_counter()
    rules = load_rules(rules_path)
    pseudo = resolve_pseudonymizer(key_file, allow_raw_ids)
    fingerprint = pseudo.fingerprint if pseudo is not None else None
    if out is not None:
        format_for(out)
    cutoff = None if now is None else parse_time(now)
    stats = FoldStats()
    with ProfileStore(store_path) as store:
        store.check_compatible(half_life_days, recent_half_life_days, fingerprint)
        already = batch_id is not None and store.has_batch(batch_id)
        states: dict[str, ProfileState] = {}
        if not already:
            states = build_profiles_spark(
                scored_df,
                user_col,
                time_col,
                half_life_days,
                recent_half_life_days=recent_half_life_days,
                now=cutoff,
                pseudonymizer=pseudo,
                allow_raw_ids=allow_raw_ids,
                strict=strict,
                stats=stats,
            )
            already = not store.upsert(
                states, key_fingerprint=fingerprint, batch_id=batch_id, records=stats.folded, source="spark"
            )
        result = ProfileRunResult(
            stats=stats,
            users_in_batch=len(states),
            users_total=len(store),
            out=out,
            store=str(store_path),
            batch_id=batch_id,
            already_applied=already,
            pseudonymous=pseudo is not None,
            states=states,
        )
        result.now = cutoff if cutoff is not None else store.max_time
        if out is not None:
            result.profiles_written = write_rows(profile_rows(store.iter_states(), rules, result.now), out)
    result.elapsed_s = time.perf_counter() - t0
    return result

