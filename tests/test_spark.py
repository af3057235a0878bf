"""Spark execution: the Spark runner and the Spark MinHash dedup against the local ones.

One SparkSession (local[2]) is shared by the whole module. Inputs are built in
tmp_path: real WARC files from samples/warc (text extraction), the documents that
extraction yields (filters), and real news articles from samples/html/newspaper4k
with copies and near copies spread over shards (MinHash); one test puts the extracted
documents in a bucket of a moto S3 server on 127.0.0.1 and runs both runners there.
Parity is checked on the bytes: the shards' sha256 in the manifests, the quarantine
shards and the counters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from pyspark import TaskContext
from pyspark.sql import SparkSession
from stages_for_tests import TESTS, doc_row, output_dir, write_doc_output

from assets.spark import (
    SparkResource,
    dedup_web_minhash_spark,
    spark_dedup_job,
    spark_dedup_nightly,
)
from pipelines.dedup.cluster import connected_components as local_components
from pipelines.dedup.minhash import minhash_dedup
from pipelines.filters.stage import WebFilterStage, load_recipe
from pipelines.runner import LocalRunner
from pipelines.spark.components import CHECKPOINT_EVERY, connected_components
from pipelines.spark.minhash import spark_minhash_dedup
from pipelines.spark.runner import SparkRunner
from pipelines.spark.session import SparkSettings, spark_session
from pipelines.web.warc_text import WarcTextStage, warc_tasks
from storage import CorpusStore, read_shard

REPO = Path(__file__).resolve().parent.parent
WARCS = sorted(str(p) for p in (REPO / "samples" / "warc").rglob("*.warc*"))
PAGES = REPO / "samples" / "html" / "newspaper4k"
RECIPE = REPO / "recipes" / "web_filters.yaml"


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    # Spark's Python workers must import this module's FlakyFilterStage by name
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    root = tmp_path_factory.mktemp("spark")
    # a session another test left open would ignore the settings above: start afresh
    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    session = spark_session(SparkSettings(master="local[2]", input_url=str(root)))
    session.sparkContext.setCheckpointDir(str(root / "checkpoints"))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def web_text(tmp_path_factory):
    """text/web of the sample WARCs, by the local runner."""
    out = output_dir(tmp_path_factory.mktemp("text") / "text_web")
    LocalRunner(processes=1).run(WarcTextStage(), warc_tasks(out.fs, WARCS), out)
    return out


def same_output(a, b) -> None:
    ma, mb = a.manifest(), b.manifest()
    assert [s.name for s in ma.shards] == [s.name for s in mb.shards]
    assert ma.shards == mb.shards  # names, rows, bytes and sha256
    assert ma.quarantine == mb.quarantine
    assert ma.counters == mb.counters
    assert ma.digest() == mb.digest()


def test_warc_text_on_spark_equals_local(spark, web_text, tmp_path):
    out = output_dir(tmp_path / "spark_text")
    manifest = SparkRunner(spark=spark).run(WarcTextStage(), warc_tasks(out.fs, WARCS), out)
    assert manifest.rows > 0 and manifest.quarantined > 0  # documents and rejects both flow
    same_output(web_text, out)


@dataclass
class FlakyFilterStage(WebFilterStage):
    """The filter stage, but a task's first attempt dies after its first output batch
    (the shard writer has started: a temp file exists); a marker in ``marks`` says it
    happened. ``marks`` is left out of the config, so the output equals the real stage's."""

    marks: str = ""

    def config(self):
        cfg = super().config()
        cfg.pop("marks")
        return cfg

    def process(self, batches, ctx):
        attempt = TaskContext.get().attemptNumber()
        for batch in super().process(batches, ctx):
            yield batch
            if attempt == 0:
                Path(self.marks, ctx.input.replace("/", "_")).touch()
                raise RuntimeError("injected failure on the first attempt")


def test_filters_on_spark_equal_local_also_after_task_retries(spark, web_text, tmp_path):
    recipe = load_recipe(RECIPE)
    local = output_dir(tmp_path / "local")
    LocalRunner(processes=1).run_over(
        WebFilterStage(rules=recipe["rules"], language=recipe["language"]), web_text, local
    )
    assert local.manifest().quarantined > 0  # the rules dropped something

    marks = tmp_path / "marks"
    marks.mkdir()
    flaky = FlakyFilterStage(rules=recipe["rules"], language=recipe["language"], marks=str(marks))
    flaky_out = output_dir(tmp_path / "spark")
    SparkRunner(spark=spark).run_over(flaky, web_text, flaky_out)
    kept_parts = sum(1 for s in local.manifest().shards if s.rows)
    assert len(list(marks.iterdir())) == kept_parts  # each of those failed once, then passed
    same_output(local, flaky_out)
    assert not list(Path(flaky_out.folder).rglob(".tmp-*"))  # the failed attempt left nothing


@pytest.fixture
def s3_store(s3_endpoint):
    """A bucket in conftest's moto S3 server; the credentials and endpoint travel in the
    store options, also to Spark's workers."""
    store = CorpusStore("s3://corpus/run", {"endpoint_url": s3_endpoint, "key": "x", "secret": "y"})
    store.fs.fs.mkdir("corpus")
    return store


def test_spark_runner_on_an_s3_compatible_store_equals_local(spark, web_text, s3_store):
    source = s3_store.output("text/web")
    m = web_text.manifest()
    for name in [s.name for s in m.shards + m.quarantine] + ["_manifest.json"]:
        blob = web_text.fs.read_bytes(f"{web_text.folder}/{name}")
        source.fs.write_bytes(f"{source.folder}/{name}", blob)
    recipe = load_recipe(RECIPE)
    stage = WebFilterStage(rules=recipe["rules"], language=recipe["language"])
    local, on_spark = s3_store.output("filters/local"), s3_store.output("filters/spark")
    LocalRunner(processes=1).run_over(stage, source, local)
    manifest = SparkRunner(spark=spark).run_over(stage, source, on_spark)
    assert on_spark.uri.startswith("s3://") and manifest.rows and manifest.quarantined
    same_output(local, on_spark)  # same bytes, read from and written to the bucket


def components(spark, edges: np.ndarray) -> tuple[dict[int, int], int]:
    df = spark.createDataFrame(pa.table({"src": edges[:, 0], "dst": edges[:, 1]}).to_pandas())
    links, rounds = connected_components(df.persist())
    rows = {(r["src"], r["dst"]) for r in links.collect()}
    got = dict(rows)
    assert len(got) == len(rows)  # repeats allowed, but one root per node
    return got, rounds


def union_find(edges: np.ndarray) -> dict[int, int]:
    nodes, roots = local_components(edges[:, 0], edges[:, 1])
    return {int(n): int(r) for n, r in zip(nodes, roots, strict=True) if n != r}


def test_components_on_spark_match_the_local_union_find(spark):
    rng = np.random.default_rng(7)
    # a long path (deep: needs several rounds, past a checkpoint), a star, random sparse
    # edges, and every edge twice
    path = [(i + 1, i) for i in range(100, 140)]
    star = [(i, 200) for i in range(201, 220)]
    a, b = rng.integers(300, 400, 60), rng.integers(300, 400, 60)
    rand = [(int(max(x, y)), int(min(x, y))) for x, y in zip(a, b, strict=True) if x != y]
    edges = np.array(2 * (path + star + rand), dtype=np.int64)
    rng.shuffle(edges)
    got, rounds = components(spark, edges)
    assert got == union_find(edges)
    assert rounds > CHECKPOINT_EVERY  # a path shortens slowly: the rounds pass a checkpoint


def test_components_of_a_star_forest_take_no_round(spark):
    # LSH pairs often are one already: every doc of a bucket points at its smallest
    edges = np.array([(i, 10) for i in range(11, 20)] + [(31, 30), (32, 30)], dtype=np.int64)
    got, rounds = components(spark, edges)
    assert (got, rounds) == (union_find(edges), 0)
    # a node linked to two roots is no star forest, although no edge ends at a linked node
    edges = np.array([(5, 1), (5, 2), (6, 2)], dtype=np.int64)
    got, rounds = components(spark, edges)
    assert got == {2: 1, 5: 1, 6: 1} and rounds >= 1


def article(stem: str) -> str:
    return (PAGES / f"{stem}.txt").read_text(encoding="utf-8")


def minhash_corpus() -> list[list[dict]]:
    """Three shards of real articles: exact copies, near copies (changed footer or
    paragraph breaks) across shards, a three-member cluster, unique articles, a short doc."""
    cnn, wired = article("cnn_article"), article("wired_001")
    footer = "\n\nSubscribe to our newsletter for the latest headlines, every morning."
    shard0 = [("cnn", cnn + footer), ("arabic", article("arabic_article"))]
    shard0 += [("chia-a", article("cleveland.com1")), ("short", "Breaking news")]
    shard1 = [("wired", wired), ("cnn-copy", cnn + footer), ("latvian", article("latvian_article"))]
    shard2 = [("cnn-near", cnn + "\n\nAll rights reserved, Example Media Group 2024.")]
    shard2 += [("chia-b", article("video_article_01")), ("wired-near", wired.replace("\n", "\n\n"))]
    shard2 += [("spanish", article("spanish_article"))]
    shards, i = [], 0
    for rows in (shard0, shard1, shard2):
        shards.append([doc_row(nid, text, i=(i := i + 1)) for nid, text in rows])
    return shards


def test_dagster_materialises_the_spark_dedup_with_the_local_kept_set(spark, tmp_path):
    store = CorpusStore(str(tmp_path / "store"))
    source = store.output("dedup/web_exact")
    write_doc_output(source, minhash_corpus())
    local, local_attrs = output_dir(tmp_path / "local"), output_dir(tmp_path / "local_attrs")
    local_manifest = minhash_dedup(LocalRunner(processes=1), source, local, local_attrs)
    assert local_manifest.counters["near_duplicates_removed"] >= 4  # the corpus has copies

    resource = SparkResource(master="local[2]", input_url=store.root)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [dedup_web_minhash_spark], resources={"spark": resource}, instance=instance
    )
    assert result.success
    out = store.output("dedup/web_minhash_spark")
    attrs = store.output("attributes/web_minhash_spark")
    ma, mb = local.manifest(), out.manifest()
    assert ma.shards == mb.shards  # kept documents: same rows, same bytes
    assert ma.quarantine == mb.quarantine  # removed ones, with the doc_id that was kept
    assert local_attrs.manifest().shards == attrs.manifest().shards  # cluster attributes
    clusters = pa.concat_tables(
        read_shard(out.fs, f"{out.folder}/_work/clusters/{s.name}") for s in mb.shards
    )
    assert clusters.equals(read_shard(local.fs, f"{local.folder}/_work/clusters.parquet"))
    for key, value in local_manifest.counters.items():
        assert mb.counters[key] == value

    (event,) = result.get_asset_materialization_events()
    assert event.asset_key == dg.AssetKey(["dedup", "web_minhash_spark"])
    md = event.materialization.metadata
    assert md["near_duplicates_removed"].value == mb.counters["near_duplicates_removed"]
    assert md["candidate_pairs"].value == local_manifest.counters["candidate_pairs"]
    assert md["records_out"].value == mb.rows
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("components converged" in m for m in logs)  # progress reaches the run log
    signed = local_manifest.counters["documents_in"] - local_manifest.counters["too_short"]
    docs_in = local_manifest.counters["documents_in"]
    assert f"minhash: {signed} of {docs_in} documents have a signature" in logs


def test_nightly_schedule_runs_the_spark_job_once_per_input(tmp_path):
    assert spark_dedup_nightly.cron_schedule == "0 2 * * *"
    assert spark_dedup_nightly.job_name == spark_dedup_job.name == "spark_minhash_dedup"
    store = CorpusStore(str(tmp_path / "store"))
    resource = SparkResource(input_url=store.root)
    with dg.build_schedule_context(resources={"spark": resource}) as ctx:
        assert isinstance(spark_dedup_nightly(ctx), dg.SkipReason)  # no input yet
    manifest = write_doc_output(store.output("dedup/web_exact"), minhash_corpus())
    with dg.build_schedule_context(resources={"spark": resource}) as ctx:
        request = spark_dedup_nightly(ctx)
    digest = store.output("dedup/web_exact").manifest().digest()
    assert isinstance(request, dg.RunRequest) and manifest.shards
    assert request.run_key == f"web_exact-{digest[:16]}"


def test_spark_minhash_on_an_s3_compatible_store_equals_local(spark, s3_store, tmp_path):
    """Source, output and attributes in a bucket whose endpoint and keys are only in the
    store options: the cluster files are read back by the attribute and removal tasks
    (Spark executors, spawned local workers) with those options too. Spark's
    checkpoints go to a local temp folder (local mode, no checkpoint_dir given)."""
    local_store = CorpusStore(str(tmp_path / "store"))
    local_src = local_store.output("dedup/web_exact")
    write_doc_output(local_src, minhash_corpus())
    local, local_attrs = local_store.output("dedup/local"), local_store.output("attrs/local")
    want = minhash_dedup(LocalRunner(processes=1), local_src, local, local_attrs)

    source = s3_store.output("dedup/web_exact")
    write_doc_output(source, minhash_corpus())
    out, attrs = s3_store.output("dedup/web_minhash"), s3_store.output("attributes/minhash")
    got = spark_minhash_dedup(spark, source, out, attrs, progress=print)
    assert out.uri.startswith("s3://") and got.counters["near_duplicates_removed"] >= 4
    assert got.shards == want.shards  # kept documents: same rows, same bytes
    assert attrs.manifest().shards == local_attrs.manifest().shards  # cluster attributes
    for key, value in want.counters.items():
        assert got.counters[key] == value
    # removed documents: the same records, but ``input`` names the shard in the bucket
    assert [q.rows for q in got.quarantine] == [q.rows for q in want.quarantine]
    for q in got.quarantine:
        a = read_shard(out.fs, f"{out.folder}/{q.name}").drop_columns(["input"])
        b = read_shard(local.fs, f"{local.folder}/{q.name}").drop_columns(["input"])
        assert a.equals(b)
    # the local runner's spawned workers read the bucket's cluster file with the options too
    on_local = s3_store.output("dedup/local_runner")
    attrs_local = s3_store.output("attributes/local_runner")
    assert minhash_dedup(LocalRunner(processes=2), source, on_local, attrs_local).shards == (
        want.shards
    )
