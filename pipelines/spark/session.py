"""One setting for Spark, the session it builds, and live progress from the status tracker.

``SparkSettings`` holds everything that changes between a laptop and a cluster: the
master URL (``local[*]`` embeds Spark in this process), executor/driver memory, how
often a failed task is retried, the store URLs read from and written to (a folder or
``s3://bucket/prefix``; ``endpoint_url`` for MinIO/Ceph/R2) and where checkpoints go.

Local masters: Spark ignores ``spark.task.maxFailures`` in local mode and takes the
retry count from the master string instead, so ``local[N]`` becomes
``local[N,task_max_failures]``; on a cluster master the config key is set.

The driver JVM compiles with C1 only (``driver_java_options``): in local mode it is
also the executor, and on a few cores the C2 compiler threads of a fresh JVM burned 5-7
CPU seconds per MinHash dedup (measured per thread, 100k documents on ``local[2]``)
competing with the Python workers, while the rows the JVM itself shuffles ran no
slower under C1. On a cluster the driver only schedules; executors keep their own
JVM options.

Executors must import this project: locally the Python workers share the driver's
environment (the editable install); on a cluster ship it with ``--py-files`` or an
image that has it installed (the stage objects are pickled by reference).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from storage.layout import CorpusStore

_LOCAL = re.compile(r"^local(\[(\*|\d+)(,\s*\d+)?\])?$")


@dataclass(frozen=True)
class SparkSettings:
    """Where Spark runs and which stores it reads and writes."""

    master: str = "local[*]"
    executor_memory: str = "2g"
    driver_memory: str = "2g"
    task_max_failures: int = 4
    shuffle_partitions: int = 0  # 0: the default parallelism (cores), fine for local runs
    input_url: str = ""  # store root the inputs are read from (a folder or s3://...)
    output_url: str = ""  # store root the outputs are written to; "" = input_url
    endpoint_url: str = ""  # S3-compatible endpoint for s3:// URLs
    checkpoint_url: str = ""  # lineage checkpoints; "" = <output>/_spark/checkpoints
    python: str = ""  # executors' Python; "" = this interpreter
    driver_java_options: str = "-XX:TieredStopAtLevel=1"  # see the module docstring
    app_name: str = "corpusmill"

    def __post_init__(self) -> None:
        if self.task_max_failures < 1:
            raise ValueError(
                f"SparkSettings.task_max_failures must be >= 1, got {self.task_max_failures}"
            )

    def master_url(self) -> str:
        """The master, with the retry count folded in for local masters."""
        m = _LOCAL.match(self.master.strip())
        if not m:
            return self.master
        cores = m.group(2) or "1"
        return f"local[{cores},{self.task_max_failures}]"

    def _store(self, url: str) -> CorpusStore:
        if not url:
            raise ValueError(
                "SparkSettings needs input_url (the store root to read from): a folder or "
                "s3://bucket/prefix"
            )
        opts = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
        return CorpusStore(url, opts if url.startswith("s3") else None)

    def input_store(self) -> CorpusStore:
        return self._store(self.input_url)

    def output_store(self) -> CorpusStore:
        return self._store(self.output_url or self.input_url)

    def checkpoint_dir(self) -> str:
        if self.checkpoint_url:
            return self.checkpoint_url
        store = self.output_store()
        return store.fs.uri(store.fs.path("_spark", "checkpoints"))

    def conf(self) -> dict[str, str]:
        conf = {
            "spark.executor.memory": self.executor_memory,
            "spark.driver.memory": self.driver_memory,
            "spark.task.maxFailures": str(self.task_max_failures),
            "spark.sql.adaptive.enabled": "true",
            "spark.ui.showConsoleProgress": "false",
            "spark.ui.enabled": "false",
            "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
        }
        if self.python:
            conf["spark.pyspark.python"] = self.python
        if self.driver_java_options:
            conf["spark.driver.extraJavaOptions"] = self.driver_java_options
        if os.environ.get("PYTHONPATH"):  # Python workers import what the driver imports
            conf["spark.executorEnv.PYTHONPATH"] = os.environ["PYTHONPATH"]
        if self.shuffle_partitions:
            conf["spark.sql.shuffle.partitions"] = str(self.shuffle_partitions)
        return conf


def spark_session(settings: SparkSettings) -> SparkSession:
    """Get or create the session ``settings`` describe (memory settings apply at JVM start)."""
    # PySpark starts its local Python workers with $PYSPARK_PYTHON (else the python3 on
    # PATH, which lacks this project's packages): point it at this interpreter
    os.environ.setdefault("PYSPARK_PYTHON", settings.python or sys.executable)
    builder = SparkSession.builder.master(settings.master_url()).appName(settings.app_name)
    for key, value in settings.conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if not settings.shuffle_partitions:
        parallelism = spark.sparkContext.defaultParallelism
        spark.conf.set("spark.sql.shuffle.partitions", str(parallelism))
    spark.sparkContext.setLogLevel("WARN")
    return spark


@contextmanager
def report_progress(
    spark: SparkSession, say: Callable[[str], None], every: float = 2.0
) -> Iterator[None]:
    """While the block runs, report each active Spark stage's task counts through ``say``.

    A daemon thread polls the status tracker (no listener to register, works on any
    master) and only reports a line when it changed, so a quiet stage stays quiet.
    """
    stop = threading.Event()
    tracker = spark.sparkContext.statusTracker()
    last: dict[int, str] = {}

    def poll() -> None:
        while not stop.wait(every):
            for sid in tracker.getActiveStageIds():
                info: Any = tracker.getStageInfo(sid)
                if info is None:
                    continue
                name = info.name.split(" at ")[0]  # the action, e.g. collect, count
                line = (
                    f"spark stage {sid} ({'shuffle' if name.startswith('$') else name}): "
                    f"{info.numCompletedTasks}/{info.numTasks} tasks done, "
                    f"{info.numActiveTasks} running, {info.numFailedTasks} failed"
                )
                if last.get(sid) != line:
                    last[sid] = line
                    say(line)

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
