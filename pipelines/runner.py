"""The local runner: spreads a stage's tasks over processes, resumably.

For each task the worker streams the input through the stage and writes, in order:
the quarantine shard, the output shard (both atomically) and a completion marker
(``_done/<part>.json``) holding their checksums and the counters. A rerun skips
every task whose marker exists for the same config, input and input version, so a killed
run resumes without duplicates or gaps. The manifest is written last, from the
markers, and only when every task has succeeded; a task that raised is reported with
its input and the error, and the next run retries only what failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import posixpath
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.stage import Stage, StageContext, Task, shard_tasks
from storage.fs import Filesystem
from storage.layout import OutputDir
from storage.manifest import Manifest, ShardInfo, config_hash
from storage.overlap import read_ahead, write_shard_behind
from storage.schema import QUARANTINE_SCHEMA
from storage.shards import write_shard

log = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """One or more tasks raised; finished tasks are kept and the rerun resumes."""


def run_task(
    stage: Stage, in_fs: Filesystem, out: OutputDir, task: Task, chash: str
) -> dict[str, Any]:
    """Run one task to completion and write its shards and completion marker."""
    t0 = time.perf_counter()
    ctx = StageContext(stage.name, task.input)
    batches = stage.process(read_ahead(stage.open_input(in_fs, task)), ctx)
    shard = write_shard_behind(
        out.fs, out.shard_path(task.part), batches, stage.output_schema, stage.bulk_columns
    )
    quarantine = None
    if ctx.quarantined:
        q = write_shard(
            out.fs, out.quarantine_path(task.part), ctx.quarantine_table(), QUARANTINE_SCHEMA
        )
        quarantine = replace(q, name=f"_quarantine/{q.name}")
    ctx.counters["records_out"] += shard.rows
    record = {
        "part": task.part,
        "input": task.input,
        "version": task.version,
        "config_hash": chash,
        "shard": shard.__dict__,
        "quarantine": quarantine.__dict__ if quarantine else None,
        "counters": dict(ctx.counters),
        "seconds": time.perf_counter() - t0,
    }
    out.mark_done(task.part, record)
    return record


def _run_task_safe(stage, in_fs, out, task, chash):
    try:
        return run_task(stage, in_fs, out, task, chash)
    except Exception as exc:  # reported by the parent with the task's input
        return {
            "part": task.part,
            "input": task.input,
            "error": f"{exc!r}\n{traceback.format_exc()}",
        }


@dataclass
class LocalRunner:
    """Runs a stage over tasks on this machine. ``processes=0`` means one per core.

    Each ``run`` starts (and stops) its own pool of spawned worker processes. Used as a
    context manager, the runner keeps one pool for every run inside the ``with`` block
    and hands it to whoever else needs one (``pool()``: the export of a stage), so the
    workers start and import once: ``with LocalRunner(2) as runner: mix_stage(...,
    runner); export_stage(..., pool=runner.pool())``."""

    processes: int = 0
    _shared: bool = field(default=False, init=False, repr=False, compare=False)
    _pool: ProcessPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)

    def workers(self, n_tasks: int) -> int:
        n = self.processes or os.cpu_count() or 1
        return max(1, min(n, n_tasks))

    def __enter__(self) -> LocalRunner:
        self._shared = True
        return self

    def __exit__(self, *exc) -> None:
        self._shared = False
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:  # a pool does not travel
        return {**self.__dict__, "_shared": False, "_pool": None}

    def pool(self) -> ProcessPoolExecutor | None:
        """Inside ``with runner:`` the shared pool (started on first use); else None."""
        workers = self.processes or os.cpu_count() or 1
        if not self._shared or workers == 1:
            return None
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        return self._pool

    def run(
        self,
        stage: Stage,
        tasks: Sequence[Task],
        out: OutputDir,
        in_fs: Filesystem | None = None,
        inputs: Sequence[dict[str, str]] = (),
        progress: Callable[[str], None] | None = None,
    ) -> Manifest:
        in_fs = in_fs or out.fs
        parts = [t.part for t in tasks]
        if len(set(parts)) != len(parts):
            raise ValueError(f"{stage.name}: task part names must be unique")
        config = stage.config()
        chash = config_hash(config)
        t0 = time.perf_counter()
        out.fs.makedirs(out.folder)
        out.fs.clean_temp(out.folder)
        manifest_path = posixpath.join(out.folder, "_manifest.json")
        out.fs.remove(manifest_path)  # the folder is in flux until the new manifest lands

        records: dict[str, dict[str, Any]] = {}
        pending = []
        for task in tasks:
            done = out.done(task.part)
            # a marker counts only for the same config, input path and input version
            if done and (done.get("config_hash"), done.get("input"), done.get("version")) == (
                chash,
                task.input,
                task.version,
            ):
                records[task.part] = done
            else:
                pending.append(task)
        say = progress or (lambda msg: log.info(msg))
        if records:
            say(f"{stage.name}: {len(records)} of {len(tasks)} tasks already done, resuming")

        failures: list[dict] = []
        for rec in self.execute(stage, in_fs, out, pending, chash, say):
            if "error" in rec:
                failures.append(rec)
                say(f"{stage.name}: FAILED {rec['input']}: {rec['error'].splitlines()[0]}")
                continue
            records[rec["part"]] = rec
            c = rec["counters"]
            say(
                f"{stage.name}: {len(records)}/{len(tasks)} done ({rec['part']}: "
                f"{c.get('records_in', 0)} in, {c.get('records_out', 0)} out, "
                f"{sum(v for k, v in c.items() if k.startswith('quarantined.'))} quarantined, "
                f"{rec['seconds']:.1f}s)"
            )
        if failures:
            lines = "\n".join(f"  {f['input']}: {f['error'].splitlines()[0]}" for f in failures)
            raise StageFailed(
                f"{stage.name}: {len(failures)} of {len(tasks)} tasks failed (finished tasks are "
                f"kept; rerun to retry only these):\n{lines}\n\nfirst traceback:\n{failures[0]['error']}"
            )

        self._remove_stale(out, set(parts))
        counters: Counter = Counter()
        for part in parts:
            counters.update(records[part]["counters"])
        manifest = Manifest(
            stage=stage.name,
            version=stage.version,
            config=config,
            kind=getattr(stage, "output_kind", "document"),
            inputs=list(inputs),
            shards=[ShardInfo.from_dict(records[p]["shard"]) for p in parts],
            quarantine=[
                ShardInfo.from_dict(records[p]["quarantine"])
                for p in parts
                if records[p]["quarantine"]
            ],
            counters=dict(sorted(counters.items())),
            seconds=round(time.perf_counter() - t0, 3),
        )
        out.write_manifest(manifest)
        return manifest

    def run_over(
        self,
        stage: Stage,
        source: OutputDir,
        out: OutputDir,
        progress: Callable[[str], None] | None = None,
    ) -> Manifest:
        """Run ``stage`` over every shard of a finished output; part names carry over,
        so an attribute output stays row-aligned with its documents."""
        inputs = [{"path": source.uri, "digest": source.manifest().digest()}]
        return self.run(
            stage, shard_tasks(source), out, in_fs=source.fs, inputs=inputs, progress=progress
        )

    def execute(
        self,
        stage: Stage,
        in_fs: Filesystem,
        out: OutputDir,
        pending: list[Task],
        chash: str,
        say: Callable[[str], None],
    ) -> Iterator[dict[str, Any]]:
        """Run the pending tasks; yield each one's record (``run_task``'s, or a dict with
        ``part``, ``input`` and ``error``) as it finishes. The hook a runner overrides to
        run the tasks elsewhere (``SparkRunner``); ``run`` does the bookkeeping around it
        and reports each record; ``say`` is for progress of the engine's own."""
        workers = self.workers(len(pending))
        if workers == 1:
            for task in pending:
                yield _run_task_safe(stage, in_fs, out, task, chash)
            return
        shared = self.pool()
        if shared is None:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                yield from self._run_on(pool, stage, in_fs, out, pending, chash)
            return
        broken = yield from self._run_on(shared, stage, in_fs, out, pending, chash)
        if broken:  # a worker died: let the pool go, the next run starts a new one
            shared.shutdown(wait=False)
            self._pool = None

    @staticmethod
    def _run_on(pool, stage, in_fs, out, pending, chash):
        """Yield the tasks' records from ``pool`` as they finish; returns True when a
        worker process died (the pool is broken)."""
        broken = False
        futures = {pool.submit(_run_task_safe, stage, in_fs, out, t, chash): t for t in pending}
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                task = futures.pop(fut)
                try:
                    yield fut.result()
                except Exception as exc:  # a worker process died (OOM kill, segfault)
                    broken = broken or isinstance(exc, BrokenProcessPool)
                    yield {"part": task.part, "input": task.input, "error": f"worker died: {exc!r}"}
        return broken

    @staticmethod
    def _remove_stale(out: OutputDir, parts: set[str]) -> None:
        """Drop shards and markers of parts that are not in this run (older inputs)."""
        fs = out.fs
        for folder, suffix in (
            (out.folder, ".parquet"),
            (posixpath.join(out.folder, "_quarantine"), ".parquet"),
            (posixpath.join(out.folder, "_done"), ".json"),
        ):
            for path in fs.ls(folder, suffix):
                if posixpath.basename(path)[: -len(suffix)] not in parts:
                    fs.remove(path)
        # a part that now has no quarantine must not keep an old quarantine shard
        for path in fs.ls(posixpath.join(out.folder, "_quarantine"), ".parquet"):
            part = posixpath.basename(path)[: -len(".parquet")]
            rec = out.done(part)
            if rec is not None and not rec.get("quarantine"):
                fs.remove(path)
