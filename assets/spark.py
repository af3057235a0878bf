"""Spark-backed assets: the corpus-wide MinHash dedup on Spark, its job and nightly schedule.

    dedup/web_exact --> dedup/web_minhash_spark   (+ attributes/web_minhash_spark)

How Dagster launches Spark, and why: the asset's step process is the Spark driver. A
``SparkResource`` (the dagster-pyspark resource pattern: a resource that builds the
SparkSession from config) opens the session from one ``SparkSettings``; with the
default ``local[*]`` Spark runs embedded in the step, and with a cluster master
(``spark://...``, ``yarn``, ``k8s://...``) the same step drives remote executors in
client mode. Chosen over Dagster Pipes + spark-submit because the driver then runs
our own Python (``spark_minhash_dedup``): progress comes straight from the status
tracker into ``context.log`` and the counters are plain return values, with no
launcher or message channel to maintain, and the embedded default needs no
spark-submit or cluster at all. Pipes becomes the better fit when the driver must run
inside the cluster (cluster deploy mode, e.g. EMR/Dataproc jobs); the dedup function
would then be the Pipes script's body, unchanged. The resource is our own
``ConfigurableResource`` rather than dagster-pyspark's ``PySparkResource``: that one
only wraps ``SparkSession.builder.config(...).getOrCreate()`` with a dict, which
``SparkSettings`` already does (plus the local retry count and the worker Python), so
no extra package.

The local ``dedup/web_minhash`` asset and the main job's graph stay as they are; this
asset reads the same input (``dedup/web_exact``) and writes beside it, so the two can
be compared on the same store.

Schedule and partitions: MinHash is corpus-wide (a new document must be compared with
every old one), so the asset is not a Dagster-partitioned asset; its units of work are
the input's parts (``part-NNNNN``: one per input shard, one Spark task each, written
with the same part names). ``spark_dedup_nightly`` runs the job at 02:00 UTC over all
current parts, with the input manifest's digest as run key: a night with no new or
changed part launches nothing, and a new crawl's shards trigger one run over the
whole corpus.

Settings (environment variables, or the launchpad's resource config):
    CORPUSMILL_SPARK_MASTER        master URL (default local[*])
    CORPUSMILL_SPARK_EXECUTOR_MEMORY / CORPUSMILL_SPARK_DRIVER_MEMORY (default 2g)
    CORPUSMILL_SPARK_INPUT / CORPUSMILL_SPARK_OUTPUT   store roots (default: the store)
    CORPUSMILL_SPARK_CHECKPOINTS   checkpoint folder/URL (default <output>/_spark/checkpoints)
"""

import os

import dagster as dg

from assets.metadata import materialize_result
from assets.resources import DEFAULT_STORE
from pipelines.dedup.fingerprint import MinhashConfig
from pipelines.spark.minhash import spark_minhash_dedup
from pipelines.spark.session import SparkSession, SparkSettings, spark_session
from storage.manifest import ManifestError

DEDUP_WEB_EXACT = dg.AssetKey(["dedup", "web_exact"])
DEDUP_WEB_MINHASH_SPARK = dg.AssetKey(["dedup", "web_minhash_spark"])
DEDUP_COUNTERS = (
    "documents_in",
    "too_short",
    "candidate_pairs",
    "clusters",
    "documents_in_clusters",
    "near_duplicates_removed",
    "cc_rounds",
)


class SparkResource(dg.ConfigurableResource):
    """Where Spark runs and which store it reads and writes: one ``SparkSettings``."""

    master: str = os.environ.get("CORPUSMILL_SPARK_MASTER", "local[*]")
    executor_memory: str = os.environ.get("CORPUSMILL_SPARK_EXECUTOR_MEMORY", "2g")
    driver_memory: str = os.environ.get("CORPUSMILL_SPARK_DRIVER_MEMORY", "2g")
    task_max_failures: int = 4
    input_url: str = os.environ.get(
        "CORPUSMILL_SPARK_INPUT", os.environ.get("CORPUSMILL_STORE", DEFAULT_STORE)
    )
    output_url: str = os.environ.get("CORPUSMILL_SPARK_OUTPUT", "")
    endpoint_url: str = os.environ.get("AWS_ENDPOINT_URL", "")
    checkpoint_url: str = os.environ.get("CORPUSMILL_SPARK_CHECKPOINTS", "")

    def settings(self) -> SparkSettings:
        return SparkSettings(
            master=self.master,
            executor_memory=self.executor_memory,
            driver_memory=self.driver_memory,
            task_max_failures=self.task_max_failures,
            input_url=self.input_url,
            output_url=self.output_url,
            endpoint_url=self.endpoint_url,
            checkpoint_url=self.checkpoint_url,
        )

    def session(self) -> SparkSession:
        return spark_session(self.settings())


@dg.asset(key=DEDUP_WEB_MINHASH_SPARK, deps=[DEDUP_WEB_EXACT], group_name="spark", kinds={"spark"})
def dedup_web_minhash_spark(
    context: dg.AssetExecutionContext, spark: SparkResource
) -> dg.MaterializeResult:
    """Near duplicates removed on Spark: the local dedup's MinHash (5-grams, 14 x 8), band
    buckets, connected components and kept set; cluster attributes in
    attributes/web_minhash_spark. Same kept set as dedup/web_minhash on the same input."""
    settings = spark.settings()
    source = settings.input_store().output("dedup/web_exact")
    outputs = settings.output_store()
    out = outputs.output("dedup/web_minhash_spark")
    session = spark.session()
    context.log.info(
        f"Spark {session.version} on {settings.master_url()} "
        f"(app {session.sparkContext.applicationId}); input {source.uri}"
    )
    manifest = spark_minhash_dedup(
        session,
        source,
        out,
        outputs.output("attributes/web_minhash_spark"),
        MinhashConfig(),
        checkpoint_dir=settings.checkpoint_dir(),
        max_failures=settings.task_max_failures,
        progress=context.log.info,
    )
    c = manifest.counters
    extra = {k: dg.MetadataValue.int(int(c[k])) for k in DEDUP_COUNTERS}
    rate = c["near_duplicates_removed"] / c["documents_in"] if c["documents_in"] else 0.0
    extra["removal_rate"] = dg.MetadataValue.float(round(rate, 6))
    extra["spark_master"] = dg.MetadataValue.text(settings.master_url())
    extra["spark_app_id"] = dg.MetadataValue.text(session.sparkContext.applicationId)
    return materialize_result(manifest, out.uri, extra)


spark_dedup_job = dg.define_asset_job(
    "spark_minhash_dedup",
    selection=[DEDUP_WEB_MINHASH_SPARK],
    description="Corpus-wide MinHash dedup on Spark over every current part of dedup/web_exact.",
)


@dg.schedule(cron_schedule="0 2 * * *", job=spark_dedup_job, execution_timezone="UTC")
def spark_dedup_nightly(context: dg.ScheduleEvaluationContext, spark: SparkResource):
    """Nightly at 02:00 UTC, once per distinct input: the run key is the input's digest."""
    source = spark.settings().input_store().output("dedup/web_exact")
    try:
        digest = source.manifest().digest()
    except ManifestError as exc:
        return dg.SkipReason(f"no complete dedup/web_exact yet: {exc}")
    return dg.RunRequest(run_key=f"web_exact-{digest[:16]}", tags={"input_digest": digest})


@dg.asset_check(
    asset=DEDUP_WEB_MINHASH_SPARK,
    description="Checksums match, doc_ids unique, no two documents share a normalised text.",
)
def web_minhash_spark_valid(spark: SparkResource) -> dg.AssetCheckResult:
    from assets.checks import document_check

    out = spark.settings().output_store().output("dedup/web_minhash_spark")
    return document_check(out, unique_texts=True)
