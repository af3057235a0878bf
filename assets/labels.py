"""Label assets: instance-level attributes of every document, as attribute shards
row-aligned with the documents they describe (re-running a tagger never rewrites
text). One output folder per document source under each key:

    attributes/lang/web      attributes/domain/web    attributes/quality/web
    attributes/safety/web    attributes/signals/web

Sources today: web (dedup/web_minhash). PDF and synth outputs join as they land.
"""

import dagster as dg

from assets.metadata import materialize_result
from assets.resources import PROJECT_ROOT, RunnerResource, StoreResource
from assets.web import DEDUP_WEB_MINHASH
from classifiers.histograms import (
    domain_histogram,
    markdown_table,
    quality_histogram,
    safety_counts,
)
from classifiers.lid.stage import LidStage, lid_distribution
from classifiers.signals import SignalsTagger
from classifiers.taggers import DomainTagger, QualityTagger, SafetyTagger
from storage.layout import OutputDir
from storage.manifest import ManifestError
from storage.schema import check_aligned
from storage.shards import read_shard

SOURCES = {"web": "dedup/web_minhash"}  # source name -> document output key
LANG = dg.AssetKey(["attributes", "lang"])
DOMAIN = dg.AssetKey(["attributes", "domain"])
LID_RECIPE = PROJECT_ROOT / "recipes" / "lid.yaml"
QUALITY = dg.AssetKey(["attributes", "quality"])
SAFETY = dg.AssetKey(["attributes", "safety"])
SIGNALS = dg.AssetKey(["attributes", "signals"])


def _tag(context, store: StoreResource, runner: RunnerResource, key: str, stage):
    """Run ``stage`` over every source; returns {source: (manifest, out)}."""
    corpus = store.store()
    done = {}
    for source, doc_key in SOURCES.items():
        out = corpus.output(f"{key}/{source}")
        manifest = runner.runner().run_over(
            stage, corpus.output(doc_key), out, progress=context.log.info
        )
        done[source] = (manifest, out)
    return done


def _result(done: dict, extra: dict) -> dg.MaterializeResult:
    ((manifest, out),) = done.values()  # one source today; merge metadata when there are more
    return materialize_result(manifest, out.uri, extra)


@dg.asset(key=LANG, deps=[DEDUP_WEB_MINHASH], group_name="labels", kinds={"fasttext"})
def attributes_lang(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
):
    """Language among the 119 Qwen3 languages (FLORES-200 codes) or ``other``: lid.176
    with a label map, a Han script split and a second stage trained on UDHR
    (classifiers/lid/README.md lists per-language coverage); thresholds in recipes/lid.yaml."""
    done = _tag(context, store, runner, "attributes/lang", LidStage.from_recipe(LID_RECIPE))
    dist = lid_distribution(done["web"][1])
    return _result(
        done,
        {
            "languages": dg.MetadataValue.md(markdown_table(dist, "lang")),
            "language_counts": dg.MetadataValue.json(dist),
            "distinct_languages": dg.MetadataValue.int(len(dist)),
        },
    )


@dg.asset(key=DOMAIN, deps=[DEDUP_WEB_MINHASH], group_name="labels", kinds={"fasttext"})
def attributes_domain(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
):
    """Domain (26 fields of recipes/taxonomy.yaml) with score and top 3, per document."""
    done = _tag(context, store, runner, "attributes/domain", DomainTagger())
    hist = domain_histogram(done["web"][1])
    return _result(
        done,
        {
            "domains": dg.MetadataValue.md(markdown_table(hist, "domain")),
            "domain_counts": dg.MetadataValue.json(hist),
        },
    )


@dg.asset(key=QUALITY, deps=[DEDUP_WEB_MINHASH], group_name="labels", kinds={"fasttext"})
def attributes_quality(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
):
    """Educational value 0-5 (FineWeb-Edu sense) and a DCLM-style quality probability."""
    done = _tag(context, store, runner, "attributes/quality", QualityTagger())
    q = quality_histogram(done["web"][1])
    return _result(
        done,
        {
            "edu_histogram": dg.MetadataValue.md(markdown_table(q["edu"], "edu score")),
            "dclm_histogram": dg.MetadataValue.md(markdown_table(q["dclm"], "dclm prob")),
        },
    )


@dg.asset(key=SAFETY, deps=[DEDUP_WEB_MINHASH], group_name="labels", kinds={"fasttext"})
def attributes_safety(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
):
    """Safety flags (toxic, adult, spam) with scores."""
    done = _tag(context, store, runner, "attributes/safety", SafetyTagger())
    return _result(done, {"flags": dg.MetadataValue.json(safety_counts(done["web"][1]))})


@dg.asset(key=SIGNALS, deps=[DEDUP_WEB_MINHASH], group_name="labels", kinds={"parquet"})
def attributes_signals(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
):
    """Heuristic signals (length, symbol ratio, repetition, stopwords) a recipe can filter on."""
    return _result(_tag(context, store, runner, "attributes/signals", SignalsTagger()), {})


def aligned_check(store: StoreResource, key: str) -> dg.AssetCheckResult:
    """Every attribute shard is row-aligned with its document shard (same doc_ids, same order)."""
    corpus = store.store()
    parts = 0
    try:
        for source, doc_key in SOURCES.items():
            docs: OutputDir = corpus.output(doc_key)
            attrs: OutputDir = corpus.output(f"{key}/{source}")
            attrs.manifest().verify(attrs.fs, attrs.folder, checksums=True)
            doc_shards = dict(docs.shard_infos())
            attr_shards = dict(attrs.shard_infos())
            if len(doc_shards) != len(attr_shards):
                return dg.AssetCheckResult(
                    passed=False,
                    description=f"{source}: {len(attr_shards)} attribute shards for {len(doc_shards)} document shards",
                )
            for (dp, _), (ap, _) in zip(
                sorted(doc_shards.items()), sorted(attr_shards.items()), strict=True
            ):
                check_aligned(
                    read_shard(docs.fs, dp, columns=["doc_id"]),
                    read_shard(attrs.fs, ap, columns=["doc_id"]),
                )
                parts += 1
    except (ManifestError, ValueError) as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    return dg.AssetCheckResult(passed=True, metadata={"parts": parts})


@dg.asset_check(asset=LANG, description="Row-aligned with the documents; checksums match.")
def lang_aligned(store: StoreResource) -> dg.AssetCheckResult:
    return aligned_check(store, "attributes/lang")


@dg.asset_check(asset=DOMAIN, description="Row-aligned with the documents; checksums match.")
def domain_aligned(store: StoreResource) -> dg.AssetCheckResult:
    return aligned_check(store, "attributes/domain")


@dg.asset_check(asset=QUALITY, description="Row-aligned with the documents; checksums match.")
def quality_aligned(store: StoreResource) -> dg.AssetCheckResult:
    return aligned_check(store, "attributes/quality")


@dg.asset_check(asset=SAFETY, description="Row-aligned with the documents; checksums match.")
def safety_aligned(store: StoreResource) -> dg.AssetCheckResult:
    return aligned_check(store, "attributes/safety")


@dg.asset_check(asset=SIGNALS, description="Row-aligned with the documents; checksums match.")
def signals_aligned(store: StoreResource) -> dg.AssetCheckResult:
    return aligned_check(store, "attributes/signals")
