"""The Stage protocol: Arrow record batches in, Arrow record batches out, with counters.

This is the shape of Spark's ``mapInArrow``, so the same stage runs in the local
runner, on Spark, or from a plain Python call::

    ctx = StageContext(stage.name, input="part-00000")
    for batch in stage.process(stage.open_input(task), ctx):
        ...

A stage never raises on bad input: it calls ``ctx.quarantine(reason, detail, ...)``
and moves on. Counters are plain integers in ``ctx.counters``; the runner adds them
up into the output manifest.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from storage.fs import Filesystem
from storage.layout import SHARD_SUFFIX, OutputDir
from storage.schema import EXCERPT_BYTES, QUARANTINE_SCHEMA
from storage.shards import iter_batches


@dataclass(frozen=True)
class Task:
    """One unit of work: an input (file or shard URI) that becomes one output part."""

    part: str  # output part name, e.g. "part-00003"
    input: str  # path of the input in the stage's filesystem
    version: str = ""  # what identifies the input's content (sha256, ETag): a rerun
    # reuses a finished part only if config, input and version are all unchanged


def shard_tasks(source: OutputDir) -> list[Task]:
    """One task per shard of a finished output, same part names, versioned by sha256."""
    manifest = source.manifest()
    manifest.verify(source.fs, source.folder, checksums=False)
    return [
        Task(
            part=s.name.removesuffix(SHARD_SUFFIX),
            input=posixpath.join(source.folder, s.name),
            version=s.sha256,
        )
        for s in manifest.shards
    ]


@dataclass
class StageContext:
    """What a running stage reports to: counters and the quarantine list."""

    stage: str
    input: str
    counters: Counter = field(default_factory=Counter)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def quarantine(
        self,
        reason: str,
        detail: str = "",
        *,
        offset: int | None = None,
        native_id: str | None = None,
        url: str | None = None,
        excerpt: bytes = b"",
    ) -> None:
        self.counters[f"quarantined.{reason}"] += 1
        self.quarantined.append(
            {
                "stage": self.stage,
                "input": self.input,
                "offset": offset,
                "native_id": native_id,
                "url": url,
                "reason": reason,
                "detail": detail,
                "excerpt": bytes(excerpt[:EXCERPT_BYTES]),
            }
        )

    def quarantine_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.quarantined, schema=QUARANTINE_SCHEMA)


class Stage:
    """Base class of every stage. Subclasses are dataclasses whose fields are the config."""

    name: ClassVar[str]
    version: ClassVar[str]
    output_schema: ClassVar[pa.Schema]
    bulk_columns: ClassVar[tuple[str, ...]] = ()  # see storage.shards.write_shard

    def config(self) -> dict[str, Any]:
        from dataclasses import asdict, is_dataclass

        cfg = asdict(self) if is_dataclass(self) else {}
        return {"stage": self.name, "version": self.version, **cfg}

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        """Turn a task's input into record batches. Default: stream a Parquet shard."""
        yield from iter_batches(fs, task.input)

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError


def batches_from_rows(
    rows: Iterator[dict[str, Any]],
    schema: pa.Schema,
    max_rows: int = 1024,
    max_bytes: int = 32 << 20,
) -> Iterator[pa.RecordBatch]:
    """Group row dicts into record batches of bounded rows and (text) bytes."""
    buf: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        buf.append(row)
        size += len(row.get("text") or "")
        if len(buf) >= max_rows or size >= max_bytes:
            yield pa.RecordBatch.from_pylist(buf, schema=schema)
            buf, size = [], 0
    if buf:
        yield pa.RecordBatch.from_pylist(buf, schema=schema)
