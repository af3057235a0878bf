"""Helper stages and input builders shared by the runner and dedup tests (not a test file).

The stage class lives in a module of its own because the runner starts its workers
with ``spawn``: they unpickle the stage by module and class name, so it must be
importable there (conftest.py puts tests/ on ``sys.path``, which spawned children
inherit; child ``python`` processes get ``subprocess_env()``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext, shard_tasks
from storage import DOC_SCHEMA, Manifest, OutputDir, make_doc_id, open_fs, write_shard

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SOURCE = "test"
CRAWLED = datetime(2024, 5, 14, 8, 0, tzinfo=UTC)


def subprocess_env() -> dict[str, str]:
    """Environment for a child ``python`` that imports the project and this module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(TESTS), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def output_dir(folder: str | os.PathLike) -> OutputDir:
    fs = open_fs(str(folder))
    return OutputDir(fs, fs.root)


def doc_row(native_id: str, text: str, i: int = 0, source: str = SOURCE) -> dict[str, Any]:
    """A complete DOC_SCHEMA row."""
    return {
        "doc_id": make_doc_id(source, native_id),
        "source": source,
        "native_id": native_id,
        "url": f"https://example.org/{native_id}",
        "text": text,
        "fetched_at": CRAWLED + timedelta(seconds=i),
        "modified_at": None,
        "meta": {
            "input_file": "synthetic.warc.gz",
            "input_offset": 1000 * i,
            "content_type": "text/html",
            "charset": "utf-8",
            "http_status": 200,
            "title": f"Title {native_id}",
            "html_lang": None,
            "raw_bytes": 10 * len(text),
            "extractor": "test",
        },
    }


def write_doc_output(out: OutputDir, shards: list[list[dict[str, Any]]]) -> Manifest:
    """A complete document output (shards + manifest), as a stage would leave it."""
    infos = [
        write_shard(
            out.fs,
            out.shard_path(f"part-{i:05d}"),
            pa.Table.from_pylist(rows, schema=DOC_SCHEMA),
            DOC_SCHEMA,
        )
        for i, rows in enumerate(shards)
    ]
    manifest = Manifest(
        stage="test/source",
        version="1",
        config={"shards": len(shards)},
        shards=infos,
        counters={"records_out": sum(len(rows) for rows in shards)},
    )
    out.write_manifest(manifest)
    return manifest


def source_rows(n_shards: int, rows_per_shard: int, spam_every: int = 0) -> list[list[dict]]:
    """Distinct documents; every ``spam_every``-th row of a shard contains ``SPAM``."""
    shards = []
    for s in range(n_shards):
        rows = []
        for r in range(rows_per_shard):
            text = f"Document {s}-{r}: the river bends past the mill, and the {r}th bell rings."
            if spam_every and r % spam_every == spam_every - 1:
                text = f"SPAM buy now {s}-{r}"
            rows.append(doc_row(f"doc-{s:03d}-{r:03d}", text, i=s * rows_per_shard + r))
        shards.append(rows)
    return shards


@dataclass
class SlowUpperStage(Stage):
    """Upper-cases each text; quarantines texts with ``SPAM``; raises on ``POISON``.

    After the first output batch of a shard it sleeps ``delay`` seconds, so a run is
    slow enough to be killed while shards are half written. The delay does not change
    the data, so it is kept out of the config: a rerun with another delay resumes.
    """

    name: ClassVar[str] = "test/slow_upper"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = DOC_SCHEMA

    delay: float = 0.0
    batch_rows: int = 4

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.pop("delay")
        return cfg

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        row = 0
        first = True
        for batch in batches:
            for start in range(0, batch.num_rows, self.batch_rows):
                keep = []
                for r in batch.slice(start, self.batch_rows).to_pylist():
                    ctx.counters["records_in"] += 1
                    if "POISON" in r["text"]:
                        raise RuntimeError(f"poison document {r['native_id']}")
                    if "SPAM" in r["text"]:
                        ctx.quarantine(
                            "spam",
                            "text advertises",
                            offset=row,
                            native_id=r["native_id"],
                            url=r["url"],
                            excerpt=r["text"].encode(),
                        )
                    else:
                        keep.append({**r, "text": r["text"].upper()})
                    row += 1
                yield pa.RecordBatch.from_pylist(keep, schema=DOC_SCHEMA)
                if first:
                    first = False
                    time.sleep(self.delay)


def run_slow(source_folder: str, out_folder: str, delay: float, processes: int) -> None:
    """Entry point for a child process: SlowUpperStage over every shard of a source."""
    source = output_dir(source_folder)
    out = output_dir(out_folder)
    LocalRunner(processes=processes).run(
        SlowUpperStage(delay=delay), shard_tasks(source), out, in_fs=source.fs, progress=print
    )


@dataclass
class WorkerPidStage(Stage):
    """Passes documents through and counts them under ``pid.<worker pid>``; a text with
    ``DIE`` ends the worker process on the spot (``os._exit``), as an OOM kill would."""

    name: ClassVar[str] = "test/worker_pid"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = DOC_SCHEMA

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if any("DIE" in t for t in batch.column("text").to_pylist()):
                os._exit(3)
            ctx.counters[f"pid.{os.getpid()}"] += batch.num_rows
            yield batch
