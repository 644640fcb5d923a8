"""`score_dataframe`: a DataFrame text column -> SPEC §2 columns, scored inside ``mapInPandas``.

Spark hands each Python worker Arrow batches of a partition, so texts cross the JVM/Python boundary in
bulk, and the worker scores them with the same `Tagger.tag_many` the CLI uses; each result is the CLI's
record (`Result.to_dict()`), so the two cannot drift apart field by field.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark import SparkFiles, TaskContext
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from emotag.integrations.spark.workers import SPARKFILES_PREFIX, col, load_tagger
from emotag.labels import EMOTIONS
from emotag.scoring import KEPT_PREFIX, OUTPUT_FIELDS
from emotag.tagger import Result

if TYPE_CHECKING:
    import pandas as pd

# Internal column names for the scorer's input, chosen so they cannot collide with kept columns.
_TEXT = "__emotag_text"
_ID = "__emotag_id"


def _keep_alias(i: int) -> str:
    """Internal name of the i-th kept column in the scorer's input. Not the output name: ``mapInPandas``
    looks its input columns up by unquoted name, so a name with a dot (``input.emotions.like``) would be
    read as a struct field and not resolve; the worker renames the columns to their output names."""
    return f"__emotag_keep_{i}"


def scored_schema(id_type: T.DataType = T.LongType(), keep: Sequence[T.StructField] = (),
                  aspects: bool = False, score: bool = False) -> T.StructType:
    """The SPEC §2 output schema of `score_dataframe` (before flattening), then the kept columns.

    The fields come in the order of the CLI's records: the SPEC §2 fields, `aspects` (with `aspects`),
    `score` (with `score`: a regression model's records carry it, `Result.to_dict()`), then `keep`, whose
    names must already be the output names (`kept_output_names`).

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
    if aspects:  # SPEC §7 opinion units (score_dataframe(..., aspects=True)); null on error rows
        unit = T.StructType([
            T.StructField("aspect", T.StringType()), T.StructField("opinion", T.StringType()),
            T.StructField("polarity", T.StringType()), T.StructField("score", T.DoubleType()),
            T.StructField("category", T.StringType()),
            T.StructField("aspect_span", T.ArrayType(T.IntegerType())),
            T.StructField("opinion_span", T.ArrayType(T.IntegerType())),
        ])
        fields.append(T.StructField("aspects", T.ArrayType(unit)))
    if score:  # a regression model's value on its scale (docs/finetune.md §6); null on error rows
        fields.append(T.StructField("score", T.DoubleType()))
    return T.StructType(fields + list(keep))


def scored_columns(aspects: bool = False, score: bool = False) -> list[str]:
    """The names of the scored (not kept) columns the workers emit, in `scored_schema`'s order: the list
    the pandas frame is built with, so a field of `Result.to_dict()` missing here would be dropped."""
    return [*OUTPUT_FIELDS, *(["aspects"] if aspects else []), *(["score"] if score else [])]


def kept_output_names(keep: Sequence[str], case_sensitive: bool = False) -> dict[str, str]:
    """{kept column: its output name}: the CLI's `emotag.scoring.kept_name` rule, compared the way Spark
    resolves names.

    A kept column named like a field of a scored record (`id`, `emotion`, ..., `score`, `aspects`, any
    ``emotions.<label>``) or starting with ``input.`` becomes ``input.<name>``, as in the CLI's output,
    whether or not this run emits that field: the same input then gives the same columns on both paths.
    Spark compares names case-insensitively unless ``spark.sql.caseSensitive`` is set, so ``ID`` next to
    `id` would be an ambiguous reference later (and a kept ``emotions.like`` next to the flattened one an
    unresolvable one): without case sensitivity the comparison is on lower-cased names.
    """
    reserved = {*OUTPUT_FIELDS, "score", "aspects"}
    out: dict[str, str] = {}
    for c in keep:
        k = c if case_sensitive else c.lower()
        clash = k in reserved or k.startswith("emotions.") or k.startswith(KEPT_PREFIX)
        out[c] = KEPT_PREFIX + c if clash else c
    return out


def _id_value(v: Any, as_int: bool) -> str | int | None:
    """Python value of an id cell. Ids travel as strings (a nullable long column would reach pandas as
    float64, which silently rounds ids above 2**53) and integer ids are turned back into ints here; the
    output id column is built as pandas ``Int64`` for the same reason (`_id_series`)."""
    if v is None or (isinstance(v, float) and v != v):  # None, or NaN from pandas' string dtype
        return None
    return int(v) if as_int else str(v)


def _id_series(ids: list[Any], as_int: bool) -> pd.Series:
    """The output `id` column. ``Int64`` (nullable, exact) for integer ids: built from records, a column
    of ints with one None in the Arrow batch becomes float64, and ids above 2**53 came back rounded."""
    import pandas as pd

    return pd.Series(ids, dtype="Int64" if as_int else object)


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
        aspects: bool = False,
        score: bool = False,
    ) -> None:
        self.model = model
        self.backend = backend
        self.threads = threads
        self.batch_size = batch_size
        self.id_kind = id_kind  # None (row numbers), "int" or "str"
        self.keep = keep  # output names of the kept columns, which arrive as _keep_alias(0), _keep_alias(1), ...
        self.row_offsets = row_offsets
        self.aspects = aspects
        self.score = score  # the schema has `score`: the driver read a regression model's config

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        tagger = load_tagger(self.model, self.backend, self.threads)
        regression = Result.scale_of(tagger.emotion_labels) is not None
        if regression != self.score:
            # the schema was fixed on the driver; a `score` it has no column for would be dropped silently
            raise RuntimeError(
                f"emotag model {self.model!r} on this Spark worker has labels {list(tagger.emotion_labels)}, "
                f"{'a regression' if regression else 'not a regression'} model, but the driver "
                f"{'could not read its config' if regression else 'read a regression model'}, so the output "
                "schema " + ("has no `score` column" if regression else "has a `score` column") + ": pass a "
                "`model` the driver can read too (a path, or ship_model(...))"
            )
        columns = scored_columns(self.aspects, self.score)
        index = 0
        if self.row_offsets is not None:
            ctx = TaskContext.get()
            index = self.row_offsets.get(ctx.partitionId(), 0) if ctx is not None else 0
        chunk = max(2048, self.batch_size * 16)  # as `score_file`: length-sorted batching within 2048 texts
        for pdf in batches:
            n = len(pdf)
            texts = pdf[_TEXT].tolist()
            as_int = self.id_kind != "str"  # row numbers are ints too
            if self.id_kind is not None:
                ids: list[Any] = [_id_value(v, as_int) for v in pdf[_ID].tolist()]
            else:
                ids = list(range(index, index + n))
                index += n
            problems = [_text_problem(t) for t in texts]
            ok = [i for i in range(n) if problems[i] is None]
            # a failed row asked for aspects says `aspects: null` (SPEC §7); a missing key would become NaN,
            # which Arrow cannot cast to the aspects struct array, and the whole job failed on one blank text
            rows: list[dict[str, Any]] = [_failed(ids[i], p, self.aspects) if p is not None else {}
                                          for i, p in enumerate(problems)]
            results = tagger.tag_many([texts[i] for i in ok], batch_size=self.batch_size,
                                      ids=[ids[i] for i in ok], chunk_size=chunk, aspects=self.aspects)
            for i, res in zip(ok, results, strict=True):
                rows[i] = res.to_dict()
            out = pd.DataFrame.from_records(rows, columns=columns)
            out["id"] = _id_series(ids, as_int)
            if self.keep:
                kept = pdf[[_keep_alias(i) for i in range(len(self.keep))]].reset_index(drop=True)
                kept.columns = list(self.keep)
                out = pd.concat([out, kept], axis=1)
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


def _driver_labels(model: str | None) -> tuple[str, ...] | None:
    """Emotion labels of `model` if the driver can read its config, else None."""
    from emotag.model.config import EmotagConfig, resolve_model_dir

    try:
        if model is not None and model.startswith(SPARKFILES_PREFIX):
            path = Path(SparkFiles.get(model[len(SPARKFILES_PREFIX) :]))
        else:
            path = resolve_model_dir(model)
        return tuple(EmotagConfig.load(path).emotion_labels)
    except Exception:  # noqa: BLE001 - the model may exist only on the executors (--archives)
        return None


def _failed(id_: Any, problem: str, aspects: Any) -> dict[str, Any]:
    r = Result.failed(id_, problem)
    r.asked_aspects = bool(aspects)
    return r.to_dict()


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
    aspects: bool = False,
) -> DataFrame:
    """Score `text_col` of `df`: one output row per input row with the SPEC §2 columns, then `keep`.

    * `id_col`: a string or integer column copied to `id`. None = the column named ``id`` when `df` has
      one (the CLI's default, SPEC §5), else the 0-based row number in the DataFrame's partition order.
      Row numbers cost one extra pass over the input (a count per partition, run now) and are only stable
      for inputs whose partitions are deterministic (files, tables, local data); pass an id column after
      ``repartition()``, sampling or non-deterministic joins.
    * `keep`: input columns copied after the scored ones. One named like a scored field (`id`, `emotion`,
      ..., `score`, `aspects`, ``emotions.<label>``, compared case-insensitively unless
      ``spark.sql.caseSensitive`` is set) or starting with ``input.`` is renamed ``input.<name>``, as the
      CLI does.
    * `model`: a path present on every node, a `ship_model` reference (``"sparkfiles:NAME"``), the name an
      ``--archives ...#NAME`` archive is unpacked under, or None for the bundled model.
    * `threads_per_worker`: onnxruntime threads per Python worker. Each executor core runs one worker, so
      match it with ``spark.task.cpus`` to avoid oversubscribing cores (docs/scale.md).
    * `flatten_emotions`: replace the `emotions` map with one ``emotions.<label>`` column per label (the
      CLI's tabular layout); labels come from the model config when the driver can read it.
    * `aspects`: add SPEC §7's `aspects` column (array of opinion-unit structs, null on error rows), as
      ``emotag score --aspects`` does.

    A regression model (one label ``name[low,high]``) adds a `score` column, as in the CLI's records. The
    driver must be able to read the model's config to know that: when it cannot (a model that exists only
    on the executors) the schema has no `score`, and the first task that loads a regression model fails.

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
    if id_col is None and "id" in names:  # the CLI reads `id` by default (SPEC §5, emotag.io.readers)
        id_col = "id"
    if threads_per_worker < 1 or batch_size < 1:
        raise ValueError("threads_per_worker and batch_size must be >= 1")
    case_sensitive = df.sparkSession.conf.get("spark.sql.caseSensitive", "false").lower() == "true"
    out_names = kept_output_names(keep_t, case_sensitive)
    model_ref = None if model is None else os.fspath(model)
    driver_labels = _driver_labels(model_ref)
    score = driver_labels is not None and Result.scale_of(driver_labels) is not None

    cols = [col(text_col).cast("string").alias(_TEXT)]
    id_type: T.DataType = T.LongType()
    id_kind: str | None = None
    if id_col is not None:
        src = df.schema[id_col].dataType
        id_kind = "int" if isinstance(src, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)) else "str"
        if id_kind == "str":
            id_type = T.StringType()
        cols.append(col(id_col).cast("string").alias(_ID))
    cols += [col(k).alias(_keep_alias(i)) for i, k in enumerate(keep_t)]
    kept_fields = [T.StructField(out_names[k], f.dataType, f.nullable, f.metadata)
                   for k in keep_t for f in [df.schema[k]]]
    schema = scored_schema(id_type, kept_fields, aspects=aspects, score=score)
    source = df.select(*cols)
    offsets = _row_offsets(source) if id_col is None else None
    kept = tuple(out_names[k] for k in keep_t)
    scorer = _Scorer(model_ref, backend, threads_per_worker, batch_size, id_kind, kept, offsets, aspects, score)
    out = source.mapInPandas(scorer, schema)
    if flatten_emotions:
        labels = driver_labels or EMOTIONS
        sel: list[Column] = []
        for c in out.columns:
            if c == "emotions":
                sel += [F.col("emotions")[lab].alias(f"emotions.{lab}") for lab in labels]
            else:
                sel.append(col(c))
        out = out.select(*sel)
    return out
