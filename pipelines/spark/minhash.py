"""MinHash fuzzy dedup on Spark, end to end, with the local dedup's kept set and outputs.

The same five steps as ``pipelines/dedup/minhash.py`` in six Spark jobs (one per step,
one per component round), and nothing that grows with the corpus passes through the
driver. The rows are processed by numpy inside ``mapInArrow`` between hash exchanges
with explicit partition counts (``spark.sql.shuffle.partitions``); Spark moves, caches
and retries them, and the JVM does no per-row SQL work beyond the exchanges:

  1. signatures   a DataFrame of shard tasks (one per partition); ``mapInArrow`` runs
                  ``FingerprintStage.process`` (the numpy MinHash of
                  pipelines/dedup/fingerprint.py) on each shard -> rows (band, key, doc),
                  ``doc = shard << 32 | row`` as in pipelines/dedup/cluster.py, the 64-bit
                  band key carried as a signed long (Spark has no unsigned type).
  2. buckets      exchanged by (band, key); each partition sorts its rows and every doc
                  but the smallest of a bucket gives the edge (doc -> smallest): the
                  local BucketStage's pairs. Persisted; one aggregation counts them and
                  the signed documents (one extra row per partition carries that count).
  3. components   large-star / small-star rounds on the edges, one job each
                  (pipelines/spark/components.py); the root of a component is its
                  smallest doc, the local tie-break: the first (shard, row) is kept.
  4. clusters     one job: the links exchanged by their root's shard, where each
                  partition reads the doc_id column of the shards it holds roots of
                  (cluster_id, and the cluster size); then by their own shard, where
                  each partition reads doc_id/url of its shards and writes each one's
                  cluster rows to ``_work/clusters/<part>.parquet`` (CLUSTER_SCHEMA, row
                  order), returning one small (shard, members, roots, sha256) row each.
  5. attributes + removal  ``mapInArrow`` over the shard tasks, one per partition (no
                  exchange): the local ``ClusterAttributeStage`` and
                  ``NearDuplicateFilterStage`` on the shard with its cluster file (an
                  empty one written for a shard without clusters) through ``run_task``:
                  same shards, quarantine rows and markers.

Adaptive query execution is off for these queries: every exchange has its partition
count and there is no join to re-plan, so it would only cut each job at every exchange.

The manifests are written by the driver, last, from the per-part records (small:
one per shard). Counters match the local dedup's: documents_in, too_short,
candidate_pairs, clusters, documents_in_clusters, near_duplicates_removed (plus
``cc_rounds``). Resume: the job is one Spark application; Spark retries failed tasks,
and a failed job is rerun whole (every write is atomic and deterministic, so a rerun
overwrites with the same bytes).
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import pyarrow as pa
from pyspark import Broadcast, StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.dedup.fingerprint import MinhashConfig
from pipelines.dedup.minhash import (
    CLUSTER_SCHEMA,
    ClusterAttributeStage,
    FingerprintStage,
    NearDuplicateFilterStage,
)
from pipelines.runner import LocalRunner, run_task
from pipelines.spark.components import (
    EDGE_DDL,
    columns,
    connected_components,
    runs,
    sorted_pairs,
)
from pipelines.spark.runner import (
    RESULT_DDL,
    RESULT_SCHEMA,
    attempts_left,
    error_record,
    sum_counters,
    tasks_frame,
)
from pipelines.spark.session import report_progress
from pipelines.stage import StageContext, Task, shard_tasks
from storage.fs import Filesystem
from storage.layout import OutputDir
from storage.manifest import Manifest, ShardInfo, config_hash
from storage.shards import read_shard, write_shard

SIG_DDL = "band int, key long, doc long"
LINK_DDL = "node long, root long, cluster_size long, cluster_id string"
WRITTEN_DDL = "shard int, members long, roots long, sha256 string"
WRITTEN_SCHEMA = pa.schema(
    [("shard", pa.int32()), ("members", pa.int64()), ("roots", pa.int64()), ("sha256", pa.string())]
)
CLUSTER_COLUMNS = [f.name for f in CLUSTER_SCHEMA]
STATS = -1  # src of the per-partition row that carries the count of signed documents


def _task(row: dict) -> Task:
    return Task(row["part"], row["input"], row["version"])


def _signatures(stage: FingerprintStage, fs: Filesystem):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                task, shard = _task(row), np.int64(row["shard"])
                ctx = StageContext(stage.name, task.input)
                for b in stage.process(stage.open_input(fs, task), ctx):
                    doc = (shard << np.int64(32)) | b.column("row").to_numpy().astype(np.int64)
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array(b.column("band").to_numpy().astype(np.int32)),
                            pa.array(b.column("key").to_numpy().view(np.int64)),
                            pa.array(doc),
                        ],
                        ["band", "key", "doc"],
                    )

    return run


def _band_pairs(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """All rows of some (band, key) buckets -> (doc, the bucket's smallest doc) for every
    other doc of a bucket, as BucketStage pairs them; plus one (STATS, signed) row."""
    parts = list(batches)
    if not parts:
        return
    t = pa.Table.from_batches(parts)
    band, key, doc = (t.column(c).to_numpy() for c in ("band", "key", "doc"))
    order = np.lexsort((doc, key, band))
    band, key, doc = band[order], key[order], doc[order]
    starts = np.ones(doc.size, bool)
    starts[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    first = np.maximum.accumulate(np.where(starts, np.arange(doc.size), 0))
    dup = ~starts
    signed = np.count_nonzero(band == 0)  # one band-0 row per signed document
    yield pa.RecordBatch.from_arrays(
        [
            pa.array(np.append(doc[dup], np.int64(STATS))),
            pa.array(np.append(doc[first[dup]], np.int64(signed))),
        ],
        ["src", "dst"],
    )


def _shard_groups(key: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(shard, indices) of a sorted document-key array, one per shard present."""
    first, _ = runs(key >> np.int64(32))
    bounds = np.append(first, key.size)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        yield int(key[lo] >> 32), np.arange(lo, hi)


def _column(fs: Filesystem, path: str, name: str, rows: np.ndarray) -> pa.Array:
    return read_shard(fs, path, columns=[name]).column(name).take(rows).combine_chunks()


def _root_ids(fs: Filesystem, tasks: Broadcast):
    """Links grouped by their root's shard -> (node, root, cluster_size, cluster_id) for
    every member, the root included; cluster_id is the root's doc_id."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        root, node = sorted_pairs(*reversed(columns(batches, "src", "dst")))
        if not root.size:
            return
        first, run_of = runs(root)
        roots = root[first]
        sizes = np.diff(np.append(first, root.size)) + 1
        ends = np.append(first[1:], root.size)  # rows of each root: first .. end
        for shard, at in _shard_groups(roots):
            ids = _column(fs, tasks.value[shard].input, "doc_id", roots[at] & 0xFFFFFFFF)
            mine = slice(first[at[0]], ends[at[-1]])  # the rows whose root is in this shard
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(np.concatenate([node[mine], roots[at]])),
                    pa.array(np.concatenate([root[mine], roots[at]])),
                    pa.array(np.concatenate([sizes[run_of[mine]], sizes[at]])),
                    pa.concat_arrays([ids.take(pa.array(run_of[mine] - at[0])), ids]),
                ],
                ["node", "root", "cluster_size", "cluster_id"],
            )

    return run


def _write_clusters(fs: Filesystem, out: OutputDir, tasks: Broadcast):
    """Members grouped by their own shard -> ``_work/clusters/<part>.parquet`` of each
    shard (CLUSTER_SCHEMA, in row order, as the local dedup's table for that shard) and
    one (shard, members, roots, sha256) row per file."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = list(batches)
        if not parts:
            return
        t = pa.Table.from_batches(parts)
        t = t.take(pa.array(np.argsort(t.column("node").to_numpy(), kind="stable")))
        node = t.column("node").to_numpy()
        for shard, at in _shard_groups(node):
            task = tasks.value[shard]
            take = pa.array(at)
            rows = pa.array(node[at] & 0xFFFFFFFF)
            docs = read_shard(fs, task.input, columns=["doc_id", "url"])
            kept = node[at] == t.column("root").to_numpy()[at]
            table = pa.Table.from_arrays(
                [
                    docs.column("doc_id").take(rows),
                    t.column("cluster_id").take(take),
                    t.column("cluster_size").take(take),
                    pa.array(kept),
                    docs.column("url").take(rows),
                ],
                CLUSTER_COLUMNS,
            ).combine_chunks()
            info = write_shard(out.fs, _clusters_path(out, task.part), table, CLUSTER_SCHEMA)
            stats = {"members": at.size, "roots": int(kept.sum()), "sha256": info.sha256}
            yield pa.RecordBatch.from_pylist([{"shard": shard, **stats}], schema=WRITTEN_SCHEMA)

    return run


def _clusters_path(out: OutputDir, part: str) -> str:
    return posixpath.join(out.folder, "_work", "clusters", f"{part}.parquet")


def _attributes_and_removal(
    fs: Filesystem,
    out: OutputDir,
    attrs_out: OutputDir,
    hashes: dict[str, str],
    written: Broadcast,
    max_failures: int,
):
    """Each task: its cluster file (an empty one if its shard has no cluster rows), then
    the local ClusterAttributeStage and NearDuplicateFilterStage through ``run_task``."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            results = []
            for row in batch.to_pylist():
                task = _task(row)
                path = _clusters_path(out, task.part)
                try:
                    sha256 = written.value.get(task.part)
                    if sha256 is None:
                        empty = CLUSTER_SCHEMA.empty_table()
                        sha256 = write_shard(out.fs, path, empty, CLUSTER_SCHEMA).sha256
                    common = {
                        "clusters_uri": out.fs.uri(path),
                        "clusters_sha256": sha256,
                        "clusters_options": out.fs.storage_options,
                    }
                    a = run_task(ClusterAttributeStage(**common), fs, attrs_out, task, hashes["a"])
                    d = run_task(NearDuplicateFilterStage(**common), fs, out, task, hashes["d"])
                except Exception as exc:
                    if attempts_left(max_failures):
                        raise  # Spark retries; every write above is atomic and deterministic
                    a = d = error_record(task, exc)
                results += [
                    {"part": "a:" + task.part, "record": json.dumps(a)},
                    {"part": "d:" + task.part, "record": json.dumps(d)},
                ]
            yield pa.RecordBatch.from_pylist(results, schema=RESULT_SCHEMA)

    return run


@contextmanager
def _sql_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """Session SQL settings for the block, the previous values restored after it."""
    before = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _write_manifest(
    output: OutputDir, stage_cls, config: dict, inputs: list, records: dict, parts: list[str]
) -> Manifest:
    LocalRunner._remove_stale(output, set(parts))
    manifest = Manifest(
        stage=stage_cls.name,
        version=stage_cls.version,
        config=config,
        kind=getattr(stage_cls, "output_kind", "document"),
        inputs=inputs,
        shards=[ShardInfo.from_dict(records[p]["shard"]) for p in parts],
        quarantine=[
            ShardInfo.from_dict(records[p]["quarantine"]) for p in parts if records[p]["quarantine"]
        ],
        counters=dict(sorted(sum_counters(records[p] for p in parts).items())),
    )
    output.write_manifest(manifest)
    return manifest


@contextmanager
def _checkpoint_dir(spark: SparkSession, out: OutputDir, given: str) -> Iterator[str]:
    """``given``, else ``out``'s ``_work/checkpoints`` for a local store, else (an object
    store that Spark's Hadoop layer may not reach) a local temp folder in local mode,
    removed afterwards."""
    if given:
        yield given
    elif out.fs.is_local:
        yield posixpath.join(out.folder, "_work", "checkpoints")
    elif spark.sparkContext.master.startswith("local"):
        with tempfile.TemporaryDirectory(prefix="corpusmill-checkpoints-") as tmp:
            yield tmp
    else:
        raise ValueError(
            f"{out.uri} is not a local folder: give checkpoint_dir, a folder every executor "
            "can write (hdfs://..., or s3a://... with hadoop-aws on the classpath)"
        )


def spark_minhash_dedup(
    spark: SparkSession,
    source: OutputDir,
    out: OutputDir,
    attrs_out: OutputDir,
    config: MinhashConfig | None = None,
    checkpoint_dir: str = "",
    max_failures: int = 4,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Remove the near duplicates of ``source`` into ``out``; cluster attributes to ``attrs_out``.

    ``checkpoint_dir`` (a folder or URL Spark can write) holds the checkpoints of long
    component iterations; "" puts them under ``out``'s ``_work/checkpoints`` for a local
    store, in a local temp folder for an object store in local mode, and is an error for
    an object store on a cluster (see ``_checkpoint_dir``).
    """
    config = config or MinhashConfig()
    say = progress or print
    src = source.manifest()
    tasks = shard_tasks(source)
    inputs = [{"path": source.uri, "digest": src.digest()}]
    for output in (out, attrs_out):
        output.fs.makedirs(output.folder)
        output.fs.clean_temp(output.folder)
        output.fs.remove(posixpath.join(output.folder, "_manifest.json"))
    sc = spark.sparkContext
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    shared = sc.broadcast(tasks)
    # every exchange has an explicit partition count and no join is left to re-plan,
    # so adaptive execution would only split each job at every exchange
    with (
        _checkpoint_dir(spark, out, checkpoint_dir) as checkpoints,
        report_progress(spark, say),
        _sql_conf(spark, {"spark.sql.adaptive.enabled": "false"}),
    ):
        sc.setCheckpointDir(checkpoints)
        task_df = tasks_frame(spark, tasks)
        sc.setJobDescription("minhash: signatures and band buckets")
        sig = task_df.mapInArrow(_signatures(FingerprintStage(minhash=config), source.fs), SIG_DDL)
        pairs = sig.repartition(partitions, "band", "key").mapInArrow(_band_pairs, EDGE_DDL)
        pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
        stats = pairs.agg(
            F.sum(F.when(F.col("src") == STATS, F.col("dst"))).alias("signed"),
            F.count(F.when(F.col("src") != STATS, 1)).alias("pairs"),
        ).first()
        signed, candidate_pairs = stats["signed"] or 0, stats["pairs"]
        say(f"minhash: {signed} of {src.rows} documents have a signature")
        say(f"minhash: {candidate_pairs} candidate pairs")

        sc.setJobDescription("minhash: connected components")
        edges = pairs.where(F.col("src") != STATS)
        links, rounds = edges, 0
        if candidate_pairs:
            links, rounds = connected_components(edges, partitions)
        say(f"minhash: components converged in {rounds} large-star/small-star rounds")

        sc.setJobDescription("minhash: clusters")
        written = (
            links.repartition(partitions, F.shiftright("dst", 32))
            .mapInArrow(_root_ids(source.fs, shared), LINK_DDL)
            .repartition(partitions, F.shiftright("node", 32))
            .mapInArrow(_write_clusters(source.fs, out, shared), WRITTEN_DDL)
            .collect()
        )
        links.unpersist()
        pairs.unpersist()
        in_clusters = sum(r["members"] for r in written)
        n_clusters = sum(r["roots"] for r in written)
        say(f"minhash: {in_clusters} documents in {n_clusters} clusters")

        sc.setJobDescription("minhash: attributes and removal")
        base = {"clusters": out.fs.uri(posixpath.join(out.folder, "_work", "clusters"))}
        base["minhash"] = asdict(config)
        cfg_a = {"stage": ClusterAttributeStage.name, "version": ClusterAttributeStage.version}
        cfg_d = {
            "stage": NearDuplicateFilterStage.name,
            "version": NearDuplicateFilterStage.version,
        }
        cfg_a.update(base)
        cfg_d.update(base)
        hashes = {"a": config_hash(cfg_a), "d": config_hash(cfg_d)}
        sha = sc.broadcast({tasks[r["shard"]].part: r["sha256"] for r in written})
        fn = _attributes_and_removal(source.fs, out, attrs_out, hashes, sha, max_failures)
        rows = task_df.mapInArrow(fn, RESULT_DDL).collect()
    for b in (shared, sha):
        b.destroy()

    records: dict[str, dict] = {r["part"]: json.loads(r["record"]) for r in rows}
    failed = [r for r in records.values() if "error" in r]
    if failed:
        lines = "\n".join(f"  {r['input']}: {r['error'].splitlines()[0]}" for r in failed)
        raise RuntimeError(
            f"minhash on Spark: {len(failed) // 2} of {len(tasks)} shards failed after "
            f"{max_failures} attempts each; rerun the job:\n{lines}\n\n{failed[0]['error']}"
        )
    parts = [t.part for t in tasks]
    _write_manifest(
        attrs_out,
        ClusterAttributeStage,
        cfg_a,
        inputs,
        {p: records["a:" + p] for p in parts},
        parts,
    )
    manifest = _write_manifest(
        out, NearDuplicateFilterStage, cfg_d, inputs, {p: records["d:" + p] for p in parts}, parts
    )
    manifest.counters.update(
        {
            "documents_in": src.rows,
            "too_short": src.rows - signed,
            "candidate_pairs": candidate_pairs,
            "clusters": n_clusters,
            "documents_in_clusters": in_clusters,
            "near_duplicates_removed": in_clusters - n_clusters,
            "cc_rounds": rounds,
        }
    )
    out.write_manifest(manifest)
    return manifest
