"""The Spark runner: any Stage, one Spark task per stage task, the local runner's output.

``SparkRunner`` is the local runner with a different engine under it: the
bookkeeping (resume from ``_done`` markers, stale-part removal, the manifest written
last from the markers) is ``LocalRunner.run``'s, and only ``execute`` differs. The
pending tasks become a DataFrame of (part, input, version) with exactly one row per
partition, and ``mapInArrow`` runs ``pipelines.runner.run_task`` on each row in an
executor. So a Spark partition is a task is an output part, the stage reads its own
input (a document shard as Arrow batches, or for ``WarcTextStage`` the WARC file
URI), and the shard, the quarantine shard and the marker are written by the very
code the local runner uses: same bytes, same sha256, same manifest.

Why a DataFrame of tasks and not ``spark.read.parquet`` of the shards: a Spark
scan splits and reorders large files and maps our typed schema (UTC timestamps,
non-null fields, the meta struct) through Spark's types; one row per part keeps
row order and schema exact, and the shards are already sized for one task each.

Failures: a task that raises is raised again to Spark while attempts remain (Spark
runs it again, ``task_max_failures`` times in all); every write is atomic (temp +
rename) and the content is a function of the input, so a retried or speculative
attempt writes the same bytes. On the last attempt the error is returned instead, and
the driver raises ``StageFailed`` listing every failed input, as the local runner
does; finished parts keep their markers and the rerun resumes.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession

from pipelines.runner import LocalRunner, run_task
from pipelines.spark.session import report_progress
from pipelines.stage import Stage, Task
from storage.fs import Filesystem
from storage.layout import OutputDir

TASK_SCHEMA = "shard int, part string, input string, version string"
RESULT_SCHEMA = pa.schema([pa.field("part", pa.string()), pa.field("record", pa.string())])
RESULT_DDL = "part string, record string"


def tasks_frame(spark: SparkSession, tasks: Sequence[Task]) -> DataFrame:
    """A DataFrame of tasks, one row per partition; ``shard`` is the task's index."""
    rows = [(i, t.part, t.input, t.version) for i, t in enumerate(tasks)]
    rdd = spark.sparkContext.parallelize(rows, max(1, len(rows)))
    return spark.createDataFrame(rdd, TASK_SCHEMA)


def attempts_left(max_failures: int) -> bool:
    """True when Spark will run this task again if it raises now."""
    ctx = TaskContext.get()
    return ctx is not None and ctx.attemptNumber() + 1 < max_failures


def error_record(task: Task, exc: BaseException) -> dict[str, Any]:
    return {"part": task.part, "input": task.input, "error": f"{exc!r}\n{traceback.format_exc()}"}


def _task_runner(
    stage: Stage, in_fs: Filesystem, out: OutputDir, chash: str, max_failures: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def run_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                task = Task(row["part"], row["input"], row["version"])
                try:
                    record = run_task(stage, in_fs, out, task, chash)
                except Exception as exc:
                    if attempts_left(max_failures):
                        raise  # Spark retries the task; its writes are idempotent
                    record = error_record(task, exc)
                yield pa.RecordBatch.from_pylist(
                    [{"part": task.part, "record": json.dumps(record)}], schema=RESULT_SCHEMA
                )

    return run_partition


@dataclass
class SparkRunner(LocalRunner):
    """Runs a stage's tasks on a Spark session; everything else is ``LocalRunner``'s."""

    spark: SparkSession | None = field(default=None, repr=False)
    max_failures: int = 4  # the session's task attempts (SparkSettings.task_max_failures)

    def execute(self, stage, in_fs, out, pending, chash, say) -> Iterator[dict[str, Any]]:
        if self.spark is None:
            raise ValueError("SparkRunner needs a SparkSession: SparkRunner(spark=...)")
        if not pending:
            return
        df = tasks_frame(self.spark, pending).mapInArrow(
            _task_runner(stage, in_fs, out, chash, self.max_failures), RESULT_DDL
        )
        self.spark.sparkContext.setJobDescription(f"{stage.name}: {len(pending)} tasks")
        with report_progress(self.spark, say):
            rows = df.collect()
        for row in sorted(rows, key=lambda r: r["part"]):
            yield json.loads(row["record"])


def sum_counters(records) -> dict[str, int]:
    total: dict[str, int] = {}
    for rec in records:
        for k, v in rec["counters"].items():
            total[k] = total.get(k, 0) + v
    return total
