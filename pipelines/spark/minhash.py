"""MinHash fuzzy dedup on Spark, end to end, with the local dedup's kept set and outputs.

The same five steps as ``pipelines/dedup/minhash.py``, each a Spark operation, and
nothing that grows with the corpus passes through the driver:

  1. signatures   a DataFrame of shard tasks (one per partition); ``mapInArrow`` runs
                  ``FingerprintStage.process`` (the numpy MinHash of
                  pipelines/dedup/fingerprint.py) on each shard -> rows (band, key, doc),
                  ``doc = shard << 32 | row`` as in pipelines/dedup/cluster.py, the 64-bit
                  band key carried as a signed long (Spark has no unsigned type).
  2. buckets      per (band, key), the smallest doc (a window over band + key); every
                  other doc of the bucket gives the edge (doc -> smallest): the local
                  BucketStage's pairs, as a DataFrame.
  3. components   large-star / small-star on the edges, checkpointed each round
                  (pipelines/spark/components.py); the root of a component is its
                  smallest doc, the local tie-break: the first (shard, row) is kept.
  4. clusters     members joined with the shards' doc_id/url (read in ``mapInArrow``)
                  for their own and their root's doc_id, and the component size.
  5. attributes + removal  the tasks cogrouped with their shard's cluster rows
                  (``cogroup.applyInArrow``): the executor writes that shard's cluster
                  rows to ``_work/clusters/<part>.parquet`` and runs the local
                  ``ClusterAttributeStage`` and ``NearDuplicateFilterStage`` on the shard
                  through ``run_task``: same shards, quarantine rows and markers.

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
from collections.abc import Callable, Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from pipelines.dedup.fingerprint import MinhashConfig
from pipelines.dedup.minhash import (
    CLUSTER_SCHEMA,
    ClusterAttributeStage,
    FingerprintStage,
    NearDuplicateFilterStage,
)
from pipelines.runner import LocalRunner, run_task
from pipelines.spark.components import connected_components
from pipelines.spark.runner import (
    RESULT_DDL,
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
from storage.shards import iter_batches, write_shard

SIG_DDL = "band int, key long, doc long"
DOC_DDL = "doc long, doc_id string, url string"
CLUSTER_COLUMNS = [f.name for f in CLUSTER_SCHEMA]


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


def _doc_ids(fs: Filesystem):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                offset = row["shard"] << 32
                for b in iter_batches(fs, row["input"], columns=["doc_id", "url"]):
                    doc = np.arange(offset, offset + b.num_rows, dtype=np.int64)
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(doc), b.column("doc_id"), b.column("url")],
                        ["doc", "doc_id", "url"],
                    )
                    offset += b.num_rows

    return run


def _attributes_and_removal(
    fs: Filesystem, out: OutputDir, attrs_out: OutputDir, hashes: dict[str, str], max_failures: int
):
    def run(tasks: pa.Table, clusters: pa.Table) -> pa.Table:
        results = []
        for row in tasks.to_pylist():
            task = _task(row)
            path = posixpath.join(out.folder, "_work", "clusters", f"{task.part}.parquet")
            mine = clusters.sort_by("row").select(CLUSTER_COLUMNS)
            try:
                info = write_shard(out.fs, path, mine.cast(CLUSTER_SCHEMA), CLUSTER_SCHEMA)
                common = {"clusters_uri": out.fs.uri(path), "clusters_sha256": info.sha256}
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
        return pa.Table.from_pylist(
            results, schema=pa.schema([("part", pa.string()), ("record", pa.string())])
        )

    return run


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

    ``checkpoint_dir`` (a folder or URL Spark can write) holds the component rounds'
    checkpoints; "" puts them under ``out``'s ``_work/checkpoints`` (local stores only).
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
    spark.sparkContext.setCheckpointDir(
        checkpoint_dir or posixpath.join(out.folder, "_work", "checkpoints")
    )
    sc = spark.sparkContext
    with report_progress(spark, say):
        task_df = tasks_frame(spark, tasks)
        sc.setJobDescription("minhash: signatures and band buckets")
        sig = task_df.mapInArrow(_signatures(FingerprintStage(minhash=config), source.fs), SIG_DDL)
        first = F.min("doc").over(Window.partitionBy("band", "key"))
        buckets = sig.withColumn("first", first).persist(StorageLevel.MEMORY_AND_DISK)
        stats = buckets.agg(
            F.count(F.when(F.col("band") == 0, 1)).alias("signed"),
            F.count(F.when(F.col("doc") != F.col("first"), 1)).alias("pairs"),
        ).first()
        signed, candidate_pairs = stats["signed"], stats["pairs"]
        say(f"minhash: {signed} of {src.rows} documents have a signature")
        say(f"minhash: {candidate_pairs} candidate pairs")
        edges = buckets.where(F.col("doc") != F.col("first")).select(
            F.col("doc").alias("src"), F.col("first").alias("dst")
        )

        sc.setJobDescription("minhash: connected components")
        links, rounds = connected_components(edges, lambda df: df.checkpoint(eager=True))
        buckets.unpersist()
        say(f"minhash: components converged in {rounds} large-star/small-star rounds")

        sc.setJobDescription("minhash: clusters")
        members = links.unionByName(links.select(F.col("root").alias("node"), "root").distinct())
        sizes = members.groupBy("root").agg(F.count("*").alias("cluster_size"))
        docs = task_df.mapInArrow(_doc_ids(source.fs), DOC_DDL)
        roots = docs.select(F.col("doc").alias("root"), F.col("doc_id").alias("cluster_id"))
        clusters = (
            members.join(sizes, "root")
            .join(docs.withColumnRenamed("doc", "node"), "node")
            .join(roots, "root")
            .select(
                F.shiftright("node", 32).cast("int").alias("shard"),
                F.col("node").bitwiseAND(F.lit(0xFFFFFFFF)).alias("row"),
                *CLUSTER_COLUMNS[:2],
                "cluster_size",
                (F.col("node") == F.col("root")).alias("kept"),
                "url",
            )
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        stats = clusters.agg(
            F.count("*").alias("members"), F.count(F.when(F.col("kept"), 1)).alias("roots")
        ).first()
        in_clusters, n_clusters = stats["members"], stats["roots"]
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
        fn = _attributes_and_removal(source.fs, out, attrs_out, hashes, max_failures)
        rows = (
            task_df.groupBy("shard")
            .cogroup(clusters.groupBy("shard"))
            .applyInArrow(fn, RESULT_DDL)
            .collect()
        )
        clusters.unpersist()

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
