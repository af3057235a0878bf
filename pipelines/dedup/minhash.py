"""Fuzzy dedup with MinHash LSH, over a whole document output, FineWeb style.

A straight line of five steps; every step but ``cluster`` is a runner pass, so a
killed run resumes where it stopped (``_done`` markers), and no step holds all
signatures in memory:

  1. fingerprint  every shard in parallel: MinHash signature of each document
                  (pipelines/dedup/fingerprint.py), written as one 64-bit bucket key
                  per band: ``_work/buckets/<part>.parquet`` rows (band, key, row),
                  grouped by band, so step 2 reads one band's row groups only.
  2. bucket       every band in parallel (task ``band-007``): that band's keys of all
                  shards, sorted; each document whose key equals the first one of its
                  run becomes a pair (first, other) -> ``_work/pairs/band-007.parquet``.
  3. cluster      in the driver: connected components over the pairs
                  (pipelines/dedup/cluster.py); the first document (shard, row) of a
                  component is kept -> ``_work/clusters.parquet`` (doc_id, cluster_id =
                  the kept doc_id, cluster_size, kept, url), duplicates only.
  4. attributes   every shard in parallel: ``attrs_out`` shard row-aligned with the
                  input shard: doc_id, cluster_id, cluster_size, kept (a singleton is
                  its own cluster of 1), so FineWeb-2 style upsampling by cluster size
                  stays possible downstream.
  5. remove       every shard in parallel: kept documents to ``out`` (same part names),
                  the others to the quarantine with reason ``near_duplicate`` and the
                  doc_id of the document that was kept.

Documents with fewer than ``n_grams`` words get no signature and are kept (counter
``too_short``). Memory: step 2 holds one band of all documents (16 bytes each, plus
the sort), step 3 the pairs; beyond ~100M documents per band the bucket step needs a
hash-range split, as datatrove does with several workers per band.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.dedup.cluster import cluster_sizes, connected_components, doc_key, split_key
from pipelines.dedup.drop import drop_listed
from pipelines.dedup.fingerprint import MinhashConfig, minhash_batch
from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext, Task, shard_tasks
from storage.fs import Filesystem, open_fs
from storage.layout import OutputDir
from storage.manifest import Manifest
from storage.schema import DOC_SCHEMA, attribute_schema
from storage.shards import iter_batches, read_shard, write_shard

BUCKET_SCHEMA = pa.schema(
    [pa.field("band", pa.uint16()), pa.field("key", pa.uint64()), pa.field("row", pa.uint32())]
)
PAIR_SCHEMA = pa.schema([pa.field("a", pa.int64()), pa.field("b", pa.int64())])
CLUSTER_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string()),
        pa.field("cluster_id", pa.string()),  # doc_id of the document kept
        pa.field("cluster_size", pa.int64()),
        pa.field("kept", pa.bool_()),
        pa.field("url", pa.string()),
    ]
)
ATTRIBUTE_SCHEMA = attribute_schema(
    [
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("cluster_size", pa.int64(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
    ],
    "minhash_cluster_v1",
)


@dataclass
class FingerprintStage(Stage):
    """Input shard -> its documents' band keys, grouped by band."""

    name: ClassVar[str] = "dedup/minhash_fingerprint"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = BUCKET_SCHEMA
    output_kind: ClassVar[str] = "work"

    minhash: MinhashConfig = field(default_factory=MinhashConfig)

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(fs, task.input, columns=["text"])

    def process(self, batches, ctx: StageContext) -> Iterator[pa.RecordBatch]:
        keys, rows, offset = [], [], 0
        for batch in batches:
            ctx.counters["records_in"] += batch.num_rows
            k, r = minhash_batch(batch.column("text").to_pylist(), self.minhash)
            ctx.counters["too_short"] += batch.num_rows - r.size
            keys.append(k)
            rows.append(r + offset)
            offset += batch.num_rows
        if not keys:
            return
        key, row = np.concatenate(keys), pa.array(np.concatenate(rows), pa.uint32())
        for band in range(self.minhash.bands):
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.full(len(row), band, np.uint16)), pa.array(key[:, band]), row],
                schema=BUCKET_SCHEMA,
            )


@dataclass
class BucketStage(Stage):
    """One band of every fingerprint shard -> pairs of documents with equal keys."""

    name: ClassVar[str] = "dedup/minhash_bucket"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = PAIR_SCHEMA
    output_kind: ClassVar[str] = "work"

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        band = int(task.part.removeprefix("band-"))
        manifest = Manifest.read(fs, task.input)
        for shard, info in enumerate(manifest.shards):
            with fs.open(posixpath.join(task.input, info.name), "rb") as f:
                t = pq.read_table(f, columns=["key", "row"], filters=[("band", "==", band)])
            key = doc_key(shard, t.column("row").to_numpy())
            yield pa.record_batch([t.column("key").combine_chunks(), pa.array(key)], ["key", "doc"])

    def process(self, batches, ctx: StageContext) -> Iterator[pa.RecordBatch]:
        parts = list(batches)
        if not parts:
            return
        key = np.concatenate([b.column("key").to_numpy() for b in parts])
        doc = np.concatenate([b.column("doc").to_numpy() for b in parts])
        ctx.counters["records_in"] += key.size
        order = np.lexsort((doc, key))
        key, doc = key[order], doc[order]
        starts = np.ones(key.size, bool)
        starts[1:] = key[1:] != key[:-1]
        first = np.maximum.accumulate(np.where(starts, np.arange(key.size), 0))
        dup = ~starts
        ctx.counters["pairs"] += int(dup.sum())
        yield pa.RecordBatch.from_arrays(
            [pa.array(doc[first[dup]]), pa.array(doc[dup])], schema=PAIR_SCHEMA
        )


_CACHE: dict[str, tuple[tuple[str, str], Any]] = {}  # what -> ((uri, sha256), value)


def _once(what: str, uri: str, sha256: str, build: Callable[[], Any]) -> Any:
    """``build()``, kept per worker process for the last cluster file (uri and sha256)."""
    key = (uri, sha256)
    if what not in _CACHE or _CACHE[what][0] != key:
        _CACHE[what] = key, build()
    return _CACHE[what][1]


def _clusters(uri: str, sha256: str, options: dict[str, Any]) -> pa.RecordBatch:
    """The cluster table, read once per worker process (``options``: the store's, e.g.
    an S3 endpoint and keys that exist nowhere else)."""

    def read() -> pa.RecordBatch:
        fs = open_fs(uri, options)
        t = read_shard(fs, fs.root)
        return pa.RecordBatch.from_arrays([c.combine_chunks() for c in t.columns], schema=t.schema)

    return _once("clusters", uri, sha256, read)


def _removed(uri: str, sha256: str, options: dict[str, Any]):
    """doc_ids to remove, and for each the doc_id kept in its cluster and the size."""

    def build():
        t = _clusters(uri, sha256, options)
        t = t.filter(pc.invert(t.column("kept")))
        kept = zip(
            t.column("cluster_id").to_pylist(), t.column("cluster_size").to_pylist(), strict=True
        )
        return t.column("doc_id"), dict(zip(t.column("doc_id").to_pylist(), kept, strict=True))

    return _once("removed", uri, sha256, build)


@dataclass
class _ClusterReader(Stage):
    """A stage that reads the cluster table: its location (config) and the store options
    to open it with (not config: they may hold credentials, and do not change the data)."""

    clusters_uri: str = ""
    clusters_sha256: str = ""
    clusters_options: dict[str, Any] = field(default_factory=dict, repr=False)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.pop("clusters_options")
        return cfg


@dataclass
class ClusterAttributeStage(_ClusterReader):
    """Input shard -> (doc_id, cluster_id, cluster_size, kept), row-aligned with it."""

    name: ClassVar[str] = "dedup/minhash_clusters"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = ATTRIBUTE_SCHEMA
    output_kind: ClassVar[str] = "attributes"

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(fs, task.input, columns=["doc_id"])

    def process(self, batches, ctx: StageContext) -> Iterator[pa.RecordBatch]:
        clusters = _clusters(self.clusters_uri, self.clusters_sha256, self.clusters_options)
        for batch in batches:
            ctx.counters["records_in"] += batch.num_rows
            doc_id = batch.column("doc_id")
            at = pc.index_in(doc_id, value_set=clusters.column("doc_id"))
            yield pa.RecordBatch.from_arrays(
                [
                    doc_id,
                    pc.coalesce(pc.take(clusters.column("cluster_id"), at), doc_id),
                    pc.coalesce(pc.take(clusters.column("cluster_size"), at), 1),
                    pc.coalesce(pc.take(clusters.column("kept"), at), True),
                ],
                schema=ATTRIBUTE_SCHEMA,
            )


@dataclass
class NearDuplicateFilterStage(_ClusterReader):
    """Input shard -> its documents that are kept; the others go to the quarantine."""

    name: ClassVar[str] = "dedup/minhash"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = DOC_SCHEMA

    def process(self, batches, ctx: StageContext) -> Iterator[pa.RecordBatch]:
        removed, keeper = _removed(self.clusters_uri, self.clusters_sha256, self.clusters_options)

        def detail(doc_id: str) -> str:
            kept_id, size = keeper[doc_id]
            return f"near duplicate of {kept_id} (MinHash cluster of {size}, that one kept)"

        yield from drop_listed(batches, ctx, removed, "near_duplicate", detail)


def minhash_dedup(
    runner: LocalRunner,
    source: OutputDir,
    out: OutputDir,
    attrs_out: OutputDir,
    config: MinhashConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Remove the near duplicates of ``source`` into ``out``; cluster attributes to ``attrs_out``."""
    config = config or MinhashConfig()
    tasks = shard_tasks(source)  # versioned by sha256: a changed shard is redone
    src = source.manifest()
    inputs = [{"path": source.uri, "digest": src.digest()}]
    work = posixpath.join(out.folder, "_work")

    # 1. fingerprint
    buckets = OutputDir(out.fs, posixpath.join(work, "buckets"))
    fp = runner.run(
        FingerprintStage(minhash=config),
        tasks,
        buckets,
        in_fs=source.fs,
        inputs=inputs,
        progress=progress,
    )
    # 2. bucket, one task per band
    pairs_out = OutputDir(out.fs, posixpath.join(work, "pairs"))
    band_tasks = [
        Task(part=f"band-{b:03d}", input=buckets.folder, version=fp.digest())
        for b in range(config.bands)
    ]
    pairs = runner.run(
        BucketStage(),
        band_tasks,
        pairs_out,
        in_fs=out.fs,
        inputs=[{"path": buckets.uri, "digest": fp.digest()}],
        progress=progress,
    )
    # 3. cluster
    tables = [read_shard(out.fs, posixpath.join(pairs_out.folder, s.name)) for s in pairs.shards]
    clusters = build_clusters(pa.concat_tables(tables, promote_options="none"), source, src)
    clusters_path = posixpath.join(work, "clusters.parquet")
    info = write_shard(out.fs, clusters_path, clusters, CLUSTER_SCHEMA)
    common = {
        "clusters_uri": out.fs.uri(clusters_path),
        "clusters_sha256": info.sha256,
        "clusters_options": out.fs.storage_options,
    }
    # 4. attributes, 5. remove
    runner.run(
        ClusterAttributeStage(**common),
        tasks,
        attrs_out,
        in_fs=source.fs,
        inputs=inputs,
        progress=progress,
    )
    manifest = runner.run(
        NearDuplicateFilterStage(**common),
        tasks,
        out,
        in_fs=source.fs,
        inputs=inputs,
        progress=progress,
    )
    removed = int(pc.sum(pc.invert(clusters.column("kept"))).as_py() or 0)
    manifest.counters.update(
        {
            "documents_in": src.rows,
            "too_short": fp.counters.get("too_short", 0),
            "candidate_pairs": pairs.counters.get("pairs", 0),
            "clusters": clusters.num_rows - removed,
            "documents_in_clusters": clusters.num_rows,
            "near_duplicates_removed": removed,
        }
    )
    out.write_manifest(manifest)
    return manifest


def build_clusters(pairs: pa.Table, source: OutputDir, src: Manifest) -> pa.Table:
    """Cluster table of every document that has a near duplicate, in (shard, row) order."""
    if pairs.num_rows == 0:
        return CLUSTER_SCHEMA.empty_table()
    nodes, roots = connected_components(pairs.column("a").to_numpy(), pairs.column("b").to_numpy())
    sizes = cluster_sizes(roots)
    shard, row = split_key(nodes)
    doc_ids = np.empty(nodes.size, object)
    urls = np.empty(nodes.size, object)
    for s in np.unique(shard).tolist():
        at = np.flatnonzero(shard == s)
        path = posixpath.join(source.folder, src.shards[s].name)
        t = read_shard(source.fs, path, columns=["doc_id", "url"]).take(row[at])
        doc_ids[at] = t.column("doc_id").to_pylist()
        urls[at] = t.column("url").to_pylist()
    root_doc = doc_ids[np.searchsorted(nodes, roots)]
    return pa.Table.from_arrays(
        [
            pa.array(doc_ids.tolist(), pa.string()),
            pa.array(root_doc.tolist(), pa.string()),
            pa.array(sizes, pa.int64()),
            pa.array(nodes == roots),
            pa.array(urls.tolist(), pa.string()),
        ],
        schema=CLUSTER_SCHEMA,
    )


def minhash_metadata(out: OutputDir, largest: int = 5, sample_urls: int = 3) -> dict[str, Any]:
    """What the ``dedup/web_minhash`` asset reports: counts, rate, the largest clusters."""
    counters = out.manifest().counters
    clusters = read_shard(out.fs, posixpath.join(out.folder, "_work", "clusters.parquet"))
    docs_in = counters["documents_in"]
    removed = counters["near_duplicates_removed"]
    top = []
    if clusters.num_rows:
        sizes = clusters.group_by("cluster_id").aggregate([("cluster_size", "max")])
        sizes = sizes.sort_by([("cluster_size_max", "descending"), ("cluster_id", "ascending")])
        for cid, size in zip(
            sizes.column("cluster_id").to_pylist()[:largest],
            sizes.column("cluster_size_max").to_pylist()[:largest],
            strict=True,
        ):
            members = clusters.filter(pc.equal(clusters.column("cluster_id"), cid))
            members = members.sort_by([("kept", "descending")])  # the kept document first
            top.append(
                {
                    "cluster_id": cid,
                    "size": size,
                    "sample_urls": members.column("url").to_pylist()[:sample_urls],
                }
            )
    return {
        "documents_in": docs_in,
        "documents_out": docs_in - removed,
        "clusters": counters["clusters"],
        "documents_in_clusters": counters["documents_in_clusters"],
        "removed": removed,
        "removal_rate": round(removed / docs_in, 6) if docs_in else 0.0,
        "too_short": counters["too_short"],
        "candidate_pairs": counters["candidate_pairs"],
        "largest_clusters": top,
    }
