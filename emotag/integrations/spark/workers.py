"""The model on Spark executors: shipping a model directory, finding it on a worker, one Tagger per worker.

Loading an ONNX session costs far more than scoring one batch, so the Tagger lives in a module-level cache
keyed by the resolved model path, backend and threads; PySpark reuses Python workers across tasks, so each
worker loads the model once for the whole job.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pyspark import SparkFiles
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from emotag.tagger import Tagger

#: Model references starting with this are directories shipped with `ship_model` / ``addFile``.
SPARKFILES_PREFIX = "sparkfiles:"

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


def col(name: str) -> Column:
    """A column by its literal name (names such as ``emotions.anger`` contain dots)."""
    return F.col("`" + name.replace("`", "``") + "`")
