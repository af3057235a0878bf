"""Exact dedup by normalised-text hash, over a whole document output.

A straight line of three steps, each resumable:
  1. fingerprint  every shard in parallel: (doc_id, 128-bit hash of normalised text)
  2. select       in the driver: the first occurrence of each hash (in shard, row
                  order) is kept; every later one is dropped, pointing at the keeper
  3. filter       every shard in parallel: kept rows go to the output shard with the
                  same part name, dropped rows to the quarantine with reason
                  ``duplicate`` and the doc_id of the copy that was kept

Normalisation: NFKC, case-folded, every run of non-word characters (punctuation,
symbols, whitespace) collapsed to one space. Two pages that differ only in markup
whitespace or punctuation are the same text.

The driver holds 16 bytes + ids per document in step 2: fine on one machine up to
tens of millions of documents; the Spark runner does the same step as a shuffle.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipelines.dedup.drop import drop_listed
from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext, shard_tasks
from storage.layout import OutputDir
from storage.manifest import Manifest
from storage.schema import DOC_SCHEMA
from storage.shards import read_shard, write_shard

_NON_WORD = re.compile(r"[\W_]+")

HASH_SCHEMA = pa.schema([pa.field("doc_id", pa.string()), pa.field("hash", pa.binary(16))])
DROP_SCHEMA = pa.schema([pa.field("doc_id", pa.string()), pa.field("dup_of", pa.string())])


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> bytes:
    return xxhash.xxh3_128_digest(normalise(text).encode("utf-8", "surrogatepass"))


@dataclass
class FingerprintStage(Stage):
    name: ClassVar[str] = "dedup/exact_fingerprint"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = HASH_SCHEMA
    output_kind: ClassVar[str] = "work"

    def process(self, batches, ctx: StageContext) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            ctx.counters["records_in"] += batch.num_rows
            hashes = [text_hash(t) for t in batch.column("text").to_pylist()]
            yield pa.RecordBatch.from_arrays(
                [batch.column("doc_id"), pa.array(hashes, pa.binary(16))], schema=HASH_SCHEMA
            )


@dataclass
class DropStage(Stage):
    """Removes the doc_ids listed in a drop file; its digest is part of the config."""

    name: ClassVar[str] = "dedup/web_exact"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = DOC_SCHEMA

    drops_uri: str = ""
    drops_sha256: str = ""
    reason: str = "duplicate"

    def process(self, batches, ctx: StageContext) -> Iterator[pa.RecordBatch]:
        from storage.fs import open_fs

        fs = open_fs(self.drops_uri)
        drops = read_shard(fs, fs.root)
        dup_of = dict(
            zip(drops.column("doc_id").to_pylist(), drops.column("dup_of").to_pylist(), strict=True)
        )
        drop_set = pa.array(list(dup_of), pa.string())
        yield from drop_listed(
            batches, ctx, drop_set, self.reason, lambda d: f"same normalised text as {dup_of[d]}"
        )


def exact_dedup(
    runner: LocalRunner,
    source: OutputDir,
    out: OutputDir,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Deduplicate the documents of ``source`` into ``out`` (same part names)."""
    tasks = shard_tasks(source)
    src = source.manifest()
    inputs = [{"path": source.uri, "digest": src.digest()}]

    work = OutputDir(out.fs, posixpath.join(out.folder, "_work", "fingerprints"))
    fp = runner.run(
        FingerprintStage(), tasks, work, in_fs=source.fs, inputs=inputs, progress=progress
    )

    drops = select_drops(
        [read_shard(work.fs, posixpath.join(work.folder, s.name)) for s in fp.shards]
    )
    drops_path = posixpath.join(out.folder, "_work", "drops.parquet")
    info = write_shard(out.fs, drops_path, drops, DROP_SCHEMA)
    stage = DropStage(drops_uri=out.fs.uri(drops_path), drops_sha256=info.sha256)
    manifest = runner.run(stage, tasks, out, in_fs=source.fs, inputs=inputs, progress=progress)
    manifest.counters["duplicates_removed"] = drops.num_rows
    manifest.counters["unique_texts"] = fp.rows - drops.num_rows
    out.write_manifest(manifest)
    return manifest


def select_drops(fingerprints: list[pa.Table]) -> pa.Table:
    """First occurrence (shard order, then row order) of each hash wins."""
    if not fingerprints:
        return DROP_SCHEMA.empty_table()
    t = pa.concat_tables(fingerprints)
    t = t.append_column("idx", pa.array(range(t.num_rows), pa.int64()))
    first = t.group_by("hash", use_threads=False).aggregate([("idx", "min")])
    keepers = (
        t.take(first.column("idx_min"))
        .select(["hash", "doc_id"])
        .rename_columns(["hash", "dup_of"])
    )
    is_first = pc.is_in(t.column("idx"), value_set=first.column("idx_min"))
    dropped = t.filter(pc.invert(is_first)).join(keepers, "hash", join_type="left outer")
    return dropped.sort_by("doc_id").select(["doc_id", "dup_of"]).cast(DROP_SCHEMA)
