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

Layout: `workers` (the model on the executors and the per-worker Tagger cache), `scoring`
(`score_dataframe`), `profiles` (the fold on executors; the store is written through
`emotag.profiles`' one plan -> fold -> commit path, so Spark runs the same checks as `emotag profile`).
Everything public is re-exported here. See docs/scale.md for running this on a real cluster.
"""

from __future__ import annotations

try:
    import pyspark  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "emotag.integrations.spark needs PySpark: pip install 'emotag[spark]' (and a Java 17+ runtime)"
    ) from exc

from emotag.integrations.spark.profiles import build_profiles_spark, profile_states_df, write_profiles_store
from emotag.integrations.spark.scoring import score_dataframe, scored_schema
from emotag.integrations.spark.workers import (
    SPARKFILES_PREFIX,
    load_tagger,
    resolve_model_on_worker,
    ship_model,
)

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
