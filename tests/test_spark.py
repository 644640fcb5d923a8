"""Spark integration (emotag.integrations.spark) in local mode: same scores and profiles as one machine.

One session-scoped SparkSession (`local[2]`, bound to 127.0.0.1, no UI, 2 shuffle partitions) keeps the
JVM start-up cost to once per run. The comparisons use the fp32 ONNX file on both paths, whose scores
SPEC §2 ties to 1e-4 whatever the batch; Spark necessarily batches differently from the CLI. (The int8
file is statically quantised, so it is batch-invariant too; fp32 keeps the tolerance tight.)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, build_tiny_model

try:
    import pyspark  # noqa: F401
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("EMOTAG_SKIP_SPARK") == "1":
        pytest.skip("EMOTAG_SKIP_SPARK=1", allow_module_level=True)
    pytest.fail(
        "pyspark is not installed: run `make test` (installs the [spark] extra) or "
        "`pip install -e '.[spark]'`; set EMOTAG_SKIP_SPARK=1 to skip these tests deliberately",
        pytrace=False,
    )

from emotag import Tagger
from emotag.io import read_records
from emotag.profiles import (
    KEY_ENV,
    FoldStats,
    ProfileStore,
    Pseudonymizer,
    PseudonymKeyError,
    load_rules,
    profile_rows,
    run_profile,
)
from emotag.scoring import score_file

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # pyspark's "pandas >= 3" notice

REVIEWS = SAMPLES / "reviews.csv"
KEEP = ("user_id", "time", "product")
BACKEND = "onnx-fp32"
KEY = "spark-test-pseudonym-key-0123456789"


# -- fixtures -----------------------------------------------------------------------------------------


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").exists():
        return str(Path(home, "bin", "java"))
    return shutil.which("java")


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    if _java() is None:
        pytest.fail(
            "PySpark needs a Java 17+ runtime and none was found (no `java` on PATH, no JAVA_HOME): "
            "apt-get install -y openjdk-17-jre-headless",
            pytrace=False,
        )
    from pyspark.sql import SparkSession

    env = {
        "PYSPARK_PYTHON": sys.executable,  # executors must import emotag from this venv
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("emotag-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def cli_scored(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The single-machine path: `score_file` (what `emotag score` runs) on the sample reviews."""
    out = tmp_path_factory.mktemp("cli") / "reviews.scored.jsonl"
    tagger = Tagger.load(tiny_model_dir, backend=BACKEND, threads=1)
    score_file(tagger, str(REVIEWS), str(out), id_col="review_id", keep=KEEP)
    return list(read_records(str(out)))


@pytest.fixture(scope="session")
def regression_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny regression model (one label `stars[1,5]`), whose records carry `score`."""
    return build_tiny_model(tmp_path_factory.mktemp("reg") / "model", steps_epochs=1.0, labels=["stars[1,5]"],
                            multi_label=True)


@pytest.fixture(scope="session")
def cli_scored_path(cli_scored: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli_jsonl") / "scored.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for rec in cli_scored:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def reviews_df(spark: Any) -> Any:
    # The sample has quoted multi-line reviews and "" escapes (RFC 4180), hence multiLine and escape.
    return spark.read.csv(str(REVIEWS), header=True, multiLine=True, escape='"')


@pytest.fixture(scope="session")
def spark_scored(reviews_df: Any, tiny_model_dir: Path) -> Any:
    from emotag.integrations.spark import score_dataframe

    return score_dataframe(reviews_df, "text", id_col="review_id", keep=list(KEEP), model=str(tiny_model_dir),
                           backend=BACKEND, batch_size=16).cache()


# -- helpers ------------------------------------------------------------------------------------------


def _assert_same_scores(spark_rows: list[dict[str, Any]], cli_rows: list[dict[str, Any]], ids: bool = True) -> None:
    assert len(spark_rows) == len(cli_rows)
    for s, c in zip(spark_rows, cli_rows, strict=True):
        if ids:
            assert s["id"] == c["id"]
        assert (s["error"] is None) == (c["error"] is None), (s, c)
        if c["error"] is not None:
            assert s["emotions"] is None and s["emotion"] is None
            continue
        assert s["emotion"] == c["emotion"] and s["polarity"] == c["polarity"], c["id"]
        assert set(s["emotions"]) == set(c["emotions"])
        for lab, p in c["emotions"].items():
            assert abs(s["emotions"][lab] - p) <= 1e-6 + 1e-12, (c["id"], lab)
        assert abs(s["polarity_score"] - c["polarity_score"]) <= 1e-6 + 1e-12
        assert abs(s["intensity"] - c["intensity"]) <= 1e-6 + 1e-12


def _assert_close(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality with floats compared at 1e-9 relative (abs 1e-12 for values near zero)."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, where
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _summaries(store_path: Path) -> dict[str, dict[str, Any]]:
    rules = load_rules()
    with ProfileStore(store_path) as store:
        return {s["user_id"]: s for s in profile_rows(store.iter_states(), rules, store.max_time)}


# -- scoring ------------------------------------------------------------------------------------------


def test_spark_scores_equal_single_machine(spark_scored: Any, cli_scored: list[dict[str, Any]]) -> None:
    rows = [r.asDict(recursive=True) for r in spark_scored.collect()]
    assert spark_scored.columns == ["id", "emotion", "emotions", "polarity", "polarity_score", "intensity",
                                    "error", *KEEP]
    _assert_same_scores(rows, cli_scored)
    for s, c in zip(rows, cli_scored, strict=True):
        assert {k: s[k] for k in KEEP} == {k: c[k] for k in KEEP}
    # the two empty reviews are reported, not dropped (Spark's CSV reader makes an unquoted empty cell null)
    errors = [(r["id"], r["error"]) for r in rows if r["error"]]
    assert [i for i, _ in errors] == [c["id"] for c in cli_scored if c["error"]] == ["r057", "r088"]
    assert {e for _, e in errors} <= {"text is null", "text is empty"}


def test_row_numbers_across_partitions_and_flat_emotions(
    spark: Any, tiny_model_dir: Path, cli_scored: list[dict[str, Any]]
) -> None:
    """Without id_col the id is the 0-based row number, as in the CLI, however the rows are partitioned."""
    import pandas as pd

    from emotag.integrations.spark import score_dataframe
    from emotag.io import read_rows

    pdf = pd.DataFrame({"text": [r.text for r in read_rows(str(REVIEWS))]})  # None for the empty reviews
    df = spark.createDataFrame(pdf, "text string")  # split over spark.default.parallelism partitions
    assert df.rdd.getNumPartitions() >= 2
    out = score_dataframe(df, model=str(tiny_model_dir), backend=BACKEND, flatten_emotions=True)
    rows = [r.asDict() for r in out.collect()]
    assert [r["id"] for r in rows] == list(range(len(cli_scored)))
    labels = list(cli_scored[0]["emotions"])
    assert [c for c in out.columns if c.startswith("emotions.")] == [f"emotions.{lab}" for lab in labels]
    for r in rows:
        r["emotions"] = None if r["error"] else {lab: r.pop(f"emotions.{lab}") for lab in labels}
    _assert_same_scores(rows, cli_scored, ids=False)


def test_model_shipped_to_executors(
    spark: Any, reviews_df: Any, tiny_model_dir: Path, tmp_path: Path, cli_scored: list[dict[str, Any]]
) -> None:
    """Every way of getting the model to executors that have no copy of it gives the same scores."""
    from emotag.integrations.spark import score_dataframe, ship_model

    as_file = ship_model(spark, tiny_model_dir, method="file")  # addFile(dir): local masters only
    assert as_file == "sparkfiles:" + tiny_model_dir.name
    assert ship_model(spark, tiny_model_dir, method="archive") == as_file  # shipped already
    copy = shutil.copytree(tiny_model_dir, tmp_path / "packed_model")
    as_archive = ship_model(spark, copy, method="archive")  # packed + addArchive: what clusters use
    assert as_archive == "sparkfiles:packed_model"
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(tiny_model_dir.iterdir()):
            tar.add(f, arcname=f.name)
    # what `spark-submit --archives model.tar.gz#emotag_model` does, at run time
    spark.sparkContext.addArchive(f"{archive}#emotag_model")

    for model in (as_file, as_archive, "emotag_model"):
        out = score_dataframe(reviews_df, id_col="review_id", model=model, backend=BACKEND)
        _assert_same_scores([r.asDict(recursive=True) for r in out.collect()], cli_scored)


def test_missing_model_fails_with_a_clear_message(reviews_df: Any) -> None:
    from emotag.integrations.spark import score_dataframe

    with pytest.raises(Exception, match="emotag model 'no_such_model' not found on this Spark worker"):
        score_dataframe(reviews_df, id_col="review_id", model="no_such_model").collect()


def test_one_onnx_session_per_python_worker(spark: Any, reviews_df: Any, tiny_model_dir: Path) -> None:
    """Six partitions on two worker processes: each worker loads the model at most once."""
    import pandas as pd

    from emotag.integrations import spark as es
    from emotag.integrations.spark import workers

    def loads(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for _ in batches:
            pass
        yield pd.DataFrame({"pid": [os.getpid()], "misses": [workers._cached_tagger.cache_info().misses]})

    def probe() -> dict[int, int]:
        rows = spark.range(0, 8, 1, 8).mapInPandas(loads, "pid long, misses long").collect()
        return {r["pid"]: r["misses"] for r in rows}

    before = probe()
    # threads=2: a cache key no other test uses, so every load below is counted
    out = es.score_dataframe(reviews_df.repartition(6), id_col="review_id", model=str(tiny_model_dir),
                             backend=BACKEND, threads_per_worker=2)
    assert out.count() == 100
    after = probe()
    new_loads = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert sum(new_loads.values()) >= 1, new_loads
    assert all(n <= 1 for n in new_loads.values()), new_loads


def test_integer_ids_stay_exact(spark: Any, tiny_model_dir: Path) -> None:
    """Long ids above 2**53 in the same Arrow batch as a null id come back exact: neither the input side
    nor the output frame (records with a None among ints made it float64, 2**62+1 became 2**62) rounds
    them. One partition, so all three rows share a batch."""
    from emotag.integrations.spark import score_dataframe

    big = 2**62 + 1
    df = spark.createDataFrame([(big, "很好用，推荐"), (None, "太差了"), (7, "   ")], "rid long, text string")
    out = score_dataframe(df.coalesce(1), id_col="rid", keep=["rid"], model=str(tiny_model_dir), backend=BACKEND)
    assert dict(out.dtypes)["id"] == "bigint"
    rows = out.collect()
    assert [r["id"] for r in rows] == [r["rid"] for r in rows] == [big, None, 7]
    assert [r["error"] for r in rows] == [None, None, "text is empty"]


def test_id_column_used_by_default(spark: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Without id_col, a column named `id` is the id, as `emotag score` reads it (SPEC §5); string and
    integer ids keep their type."""
    from emotag.integrations.spark import score_dataframe

    src = tmp_path / "in.jsonl"
    recs = [{"id": 2**60 + i, "text": t} for i, t in enumerate(["很好用", "太差了", ""])]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    score_file(Tagger.load(tiny_model_dir, backend=BACKEND, threads=1), str(src), str(tmp_path / "out.jsonl"))
    cli = list(read_records(str(tmp_path / "out.jsonl")))
    out = score_dataframe(spark.read.json(str(src)), model=str(tiny_model_dir), backend=BACKEND)
    assert [r["id"] for r in out.collect()] == [c["id"] for c in cli] == [r["id"] for r in recs]
    by_name = spark.createDataFrame([("a", "好"), ("b", "差")], "id string, text string")
    out = score_dataframe(by_name, model=str(tiny_model_dir), backend=BACKEND)
    assert dict(out.dtypes)["id"] == "string" and [r["id"] for r in out.collect()] == ["a", "b"]


def test_regression_model_has_score(spark: Any, regression_model_dir: Path, tmp_path: Path) -> None:
    """A regression model's `score` (the CLI's last scored field) is a column, null on error rows; a kept
    column named `score` is renamed `input.score` as in the CLI."""
    from emotag.integrations.spark import score_dataframe

    src = tmp_path / "in.jsonl"
    texts = ["很好用，推荐", "太差了", "", "物流很快，但是包装破损了"]
    src.write_text("".join(json.dumps({"id": i, "text": t, "score": i * 10}, ensure_ascii=False) + "\n"
                           for i, t in enumerate(texts)), encoding="utf-8")
    tagger = Tagger.load(regression_model_dir, backend=BACKEND, threads=1)
    score_file(tagger, str(src), str(tmp_path / "out.jsonl"), keep=("score",))
    cli = list(read_records(str(tmp_path / "out.jsonl")))
    out = score_dataframe(spark.read.json(str(src)), keep=["score"], model=str(regression_model_dir),
                          backend=BACKEND)
    assert out.columns == list(cli[0]) == ["id", "emotion", "emotions", "polarity", "polarity_score",
                                           "intensity", "error", "score", "input.score"]
    rows = [r.asDict(recursive=True) for r in out.collect()]
    _assert_same_scores(rows, cli)
    for s, c in zip(rows, cli, strict=True):
        assert s["input.score"] == c["input.score"]
        if c["error"] is None:
            assert abs(s["score"] - c["score"]) <= 1e-5 and 1.0 <= s["score"] <= 5.0
        else:
            assert s["score"] is None and c["score"] is None
    assert sum(r["error"] is not None for r in rows) == 1


def test_regression_model_the_driver_cannot_read_fails_loudly(regression_model_dir: Path) -> None:
    """A worker that loads a regression model into a schema without `score` (the driver could not read the
    config) refuses, rather than dropping every score."""
    import pandas as pd

    from emotag.integrations.spark.scoring import _TEXT, _Scorer

    scorer = _Scorer(str(regression_model_dir), BACKEND, 1, 8, None, (), None, score=False)
    with pytest.raises(RuntimeError, match="regression model, but the driver could not read its config"):
        next(scorer(iter([pd.DataFrame({_TEXT: ["好"]})])))


def test_bad_arguments_fail_on_the_driver(reviews_df: Any) -> None:
    from emotag.integrations.spark import score_dataframe

    with pytest.raises(ValueError, match="'body' not in the DataFrame"):
        score_dataframe(reviews_df, text_col="body")


def test_kept_columns_named_like_output_fields_are_renamed(spark: Any, tiny_model_dir: Path) -> None:
    """The CLI's `kept_name` rule: a kept column that would clash with a scored field becomes
    `input.<name>`, compared case-insensitively as Spark resolves names (`ID` next to `id` was an
    ambiguous reference, a kept `emotions.like` next to the flattened one an unresolved column), and
    exactly when spark.sql.caseSensitive is on."""
    from emotag.integrations.spark import score_dataframe

    df = spark.createDataFrame([(5, "好", "x", 0.5, "y", 1)],
                               "ID long, text string, Emotion string, `emotions.like` double, `input.a` string, "
                               "Aspects long")
    keep = ["ID", "Emotion", "emotions.like", "input.a", "Aspects"]
    out = score_dataframe(df, keep=keep, model=str(tiny_model_dir), backend=BACKEND, flatten_emotions=True,
                          aspects=True)
    renamed = ["input.ID", "input.Emotion", "input.emotions.like", "input.input.a", "input.Aspects"]
    assert out.columns[-6:] == ["aspects", *renamed]
    row = out.collect()[0].asDict()
    assert [row[c] for c in renamed] == [5, "x", 0.5, "y", 1]
    assert row["id"] == 0 and row["emotion"] != "x" and row["emotions.like"] != 0.5  # `ID` is not `id`
    assert out.select("id", "Emotion", "`emotions.like`").first() is not None  # no ambiguous reference

    spark.conf.set("spark.sql.caseSensitive", "true")
    try:
        out = score_dataframe(df, keep=keep, model=str(tiny_model_dir), backend=BACKEND)
        assert out.columns[-5:] == ["ID", "Emotion", "input.emotions.like", "input.input.a", "Aspects"]
    finally:
        spark.conf.unset("spark.sql.caseSensitive")
    out = score_dataframe(df.withColumnRenamed("ID", "id"), keep=["id"], model=str(tiny_model_dir),
                          backend=BACKEND)
    assert out.columns[-1] == "input.id" and out.first()["id"] == out.first()["input.id"] == 5


# -- profiles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["spark-scored", "cli-jsonl", "timestamp-column"])
def test_spark_profiles_equal_cli_store(
    source: str,
    spark: Any,
    spark_scored: Any,
    cli_scored_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`write_profiles_store` on Spark == `run_profile` (the `emotag profile` path) on the same records."""
    from pyspark.sql import functions as F

    from emotag.integrations.spark import write_profiles_store

    monkeypatch.setenv(KEY_ENV, KEY)
    if source == "spark-scored":
        df = spark_scored
        records = [r.asDict(recursive=True) for r in spark_scored.collect()]
    elif source == "cli-jsonl":  # emotions inferred as a struct, time as a string
        df = spark.read.json(str(cli_scored_path))
        records = list(read_records(str(cli_scored_path)))
    else:  # a real timestamp column: the fold must see the same instants as the ISO strings
        df = spark_scored.withColumn("time", F.to_timestamp("time"))
        records = [r.asDict(recursive=True) for r in spark_scored.collect()]
    # Round-robin over 3 partitions: every user's records are split, so partial states really merge.
    df = df.repartition(3)

    cli = run_profile(records, store_path=tmp_path / "cli.db")
    zone = spark.conf.get("spark.sql.session.timeZone")
    if source == "timestamp-column":  # neither UTC nor the UTC+8 that naive times are read in
        spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        res = write_profiles_store(df, tmp_path / "spark.db", out=str(tmp_path / "profiles.jsonl"))
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)

    assert res.stats.folded == cli.stats.folded == 98
    assert res.stats.skipped_error == cli.stats.skipped_error == 2
    assert res.users_total == cli.users_total > 10
    want, got = _summaries(tmp_path / "cli.db"), _summaries(tmp_path / "spark.db")
    assert set(got) == set(want)
    pseudo = Pseudonymizer(KEY)
    assert set(got) == {pseudo(r["user_id"]) for r in records}  # hashed with the same key, on executors
    assert all(re.fullmatch(r"[0-9a-f]{64}", u) for u in got)
    for uid in want:
        _assert_close(got[uid], want[uid], uid[:8])
    assert res.profiles_written == len(want)
    with ProfileStore(tmp_path / "spark.db") as store:
        assert store.meta["key_fingerprint"] == pseudo.fingerprint


def test_profiles_batch_id_strict_and_key(
    spark: Any, spark_scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emotag.integrations.spark import build_profiles_spark, write_profiles_store

    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError):  # refused on the driver, like `emotag profile`
        build_profiles_spark(spark_scored)
    raw = build_profiles_spark(spark_scored, allow_raw_ids=True)
    assert "u04" in raw and raw["u04"].n == 7

    monkeypatch.setenv(KEY_ENV, KEY)
    db = tmp_path / "p.db"
    first = write_profiles_store(spark_scored, db, batch_id="day-1")
    again = write_profiles_store(spark_scored, db, batch_id="day-1")
    assert not first.already_applied and again.already_applied and again.stats.read == 0
    with ProfileStore(db) as store:
        assert sum(st.n for _, st in store.iter_states()) == 98

    bad = spark.createDataFrame(
        [("u1", "2025-01-01T00:00:00+08:00", 0.5, "like"), ("u1", "yesterday-ish", 0.1, "like"),
         ("u2", "2025-01-02T00:00:00+08:00", -0.5, "anger")],
        "user_id string, time string, polarity_score double, emotion string",
    )
    stats = FoldStats()
    states = build_profiles_spark(bad, strict=False, stats=stats)
    assert (stats.read, stats.folded, stats.skipped_invalid) == (3, 2, 1)
    assert sorted(st.n for st in states.values()) == [1, 1]
    with pytest.raises(Exception, match="field 'time'"):
        build_profiles_spark(bad)


def test_spark_store_runs_the_cli_checks(
    spark: Any, spark_scored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three checks Spark's copy of the commit path had lost, now shared with `emotag profile`:
    a misspelt user column is refused and records no batch (so the corrected re-run folds), records after
    `now` are refused with a store, and a batch that folded nothing is not recorded as applied."""
    from pyspark.sql import functions as F

    from emotag.integrations.spark import write_profiles_store
    from emotag.profiles import ProfileColumnError, StoreError

    monkeypatch.setenv(KEY_ENV, KEY)
    db = tmp_path / "p.db"
    wrong = spark_scored.withColumn("customer", F.lit(None).cast("string"))  # the column exists, no user in it
    with pytest.raises(ProfileColumnError, match="'customer'"):
        write_profiles_store(wrong, db, user_col="customer", batch_id="day-1")
    with ProfileStore(db) as store:
        assert store.batches() == [] and len(store) == 0
    with pytest.raises(StoreError, match="after --now"):
        write_profiles_store(spark_scored, db, now="2024-01-01T00:00:00+08:00", batch_id="day-1")
    errors_only = spark_scored.where("error IS NOT NULL")
    empty = write_profiles_store(errors_only, db, batch_id="day-1")
    assert empty.stats.folded == 0 and not empty.already_applied
    with ProfileStore(db) as store:
        assert store.batches() == []
    fixed = write_profiles_store(spark_scored, db, batch_id="day-1")  # the corrected re-run counts
    assert fixed.stats.folded == 98 and not fixed.already_applied


def test_aspects_pass_through(reviews_df: Any, tiny_model_dir: Path) -> None:
    """score_dataframe(..., aspects=True) carries SPEC §7's aspects like `emotag score --aspects`."""
    from emotag.aspects import AspectExtractor
    from emotag.integrations.spark import score_dataframe

    out = score_dataframe(reviews_df.limit(20), "text", id_col="review_id", model=str(tiny_model_dir),
                          backend=BACKEND, batch_size=16, aspects=True)
    assert out.columns[-1] == "aspects"
    rows = [r.asDict(recursive=True) for r in out.collect()]
    texts = {r["review_id"]: r["text"] for r in reviews_df.limit(20).collect()}
    ex = AspectExtractor.load()
    for r in rows:
        if r["error"]:
            assert r["aspects"] is None
            continue
        want = [u.to_dict() for u in ex.extract(texts[r["id"]])]
        assert [{**u, "score": round(u["score"], 6)} for u in r["aspects"]] == \
            [{**u, "score": round(u["score"], 6)} for u in want]
    assert any(r["aspects"] for r in rows)


def test_aspects_with_blank_and_null_texts(spark: Any, tiny_model_dir: Path) -> None:
    """A null or blank text with aspects=True is an error row with `aspects` null (SPEC §7), not a failed
    job (the missing key became NaN, which Arrow cannot cast to the aspects array)."""
    from emotag.integrations.spark import score_dataframe

    df = spark.createDataFrame([(1, "包装太简陋了"), (2, None), (3, "")], "id long, text string")
    rows = {r["id"]: r.asDict(recursive=True) for r in score_dataframe(
        df, "text", id_col="id", model=str(tiny_model_dir), backend=BACKEND, aspects=True).collect()}
    assert rows[2]["error"] and rows[2]["aspects"] is None and rows[3]["error"] and rows[3]["aspects"] is None
    assert rows[1]["error"] is None and rows[1]["aspects"][0]["opinion"] == "太简陋了"
