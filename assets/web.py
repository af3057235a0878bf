"""Web text assets, each with a check:

raw/warc_files --+
                 +--> text/web --> text/web_filtered --> dedup/web_exact
raw/crawl -------+
"""

import dagster as dg

from assets.checks import document_check, index_check
from assets.metadata import materialize_result
from assets.resources import (
    PROJECT_ROOT,
    CrawlResource,
    RunnerResource,
    StoreResource,
    WebInputResource,
)
from pipelines.dedup.exact import exact_dedup
from pipelines.dedup.fingerprint import MinhashConfig
from pipelines.dedup.minhash import minhash_dedup, minhash_metadata
from pipelines.filters.stage import filter_web
from pipelines.stage import Task
from pipelines.web.crawl import CrawlConfig, crawl
from pipelines.web.inputs import list_warc_files, read_file_index, write_file_index
from pipelines.web.sample_site import SiteServer, make_app
from pipelines.web.warc_text import WarcTextStage

FILTER_RECIPE = PROJECT_ROOT / "recipes" / "web_filters.yaml"

WARC_FILES = dg.AssetKey(["raw", "warc_files"])
CRAWL = dg.AssetKey(["raw", "crawl"])
TEXT_WEB = dg.AssetKey(["text", "web"])
TEXT_WEB_FILTERED = dg.AssetKey(["text", "web_filtered"])
DEDUP_WEB_EXACT = dg.AssetKey(["dedup", "web_exact"])
DEDUP_WEB_MINHASH = dg.AssetKey(["dedup", "web_minhash"])


@dg.asset(key=WARC_FILES, group_name="web", kinds={"parquet"})
def warc_files(
    context: dg.AssetExecutionContext, store: StoreResource, web_input: WebInputResource
) -> dg.MaterializeResult:
    """Index of the WARC files to read: a folder, file or paths list (local or S3)."""
    files = list_warc_files(web_input.warc_input, web_input.storage_options())
    out = store.store().output("raw/warc_files")
    manifest = write_file_index(out, web_input.warc_input, files)
    context.log.info(f"indexed {len(files)} WARC files from {web_input.warc_input}")
    return materialize_result(
        manifest,
        out.uri,
        {
            "files": dg.MetadataValue.int(len(files)),
            "bytes_raw": dg.MetadataValue.int(manifest.counters["bytes_raw"]),
            "records_in": dg.MetadataValue.int(len(files)),
            "records_out": dg.MetadataValue.int(len(files)),
            "input": dg.MetadataValue.text(web_input.warc_input),
        },
    )


@dg.asset(key=CRAWL, group_name="web", kinds={"warc"})
def crawl_web(
    context: dg.AssetExecutionContext, store: StoreResource, crawler: CrawlResource
) -> dg.MaterializeResult:
    """A polite crawl (robots.txt, crawl-delay, per-host limits) recorded as WARC files.

    With seeds it resumes its frontier across runs; without, it crawls the bundled
    sample site on 127.0.0.1 afresh (the site gets a new port each run)."""
    out = store.store().output("raw/crawl")
    if not out.fs.is_local:
        raise ValueError("raw/crawl writes its frontier with sqlite: use a local CORPUSMILL_STORE")
    seeds = crawler.seed_list()
    if seeds:
        cfg = CrawlConfig(
            seeds=seeds,
            allowed_domains=crawler.domain_list(),
            max_depth=crawler.max_depth,
            max_pages=crawler.max_pages,
            min_delay=crawler.min_delay,
        )
        report = crawl(cfg, out.folder)
        what = f"{len(seeds)} seeds"
    else:
        out.clear()
        with SiteServer(make_app(crawl_delay=0.0)) as site:
            cfg = CrawlConfig(seeds=(site.url + "/",), max_depth=crawler.max_depth, min_delay=0.0)
            report = crawl(cfg, out.folder)
        what = "bundled sample site on 127.0.0.1 (set CORPUSMILL_CRAWL_SEEDS to crawl the web)"
    context.log.info(f"crawl of {what}: {report.fetched} pages, stopped by {report.stopped_by}")
    warc_dir = f"{out.folder}/warc"
    manifest = write_file_index(out, warc_dir, list_warc_files(warc_dir), stage="raw/crawl")
    return materialize_result(
        manifest,
        out.uri,
        {
            "seeds": dg.MetadataValue.text(what),
            "records_in": dg.MetadataValue.int(report.fetched + report.resumed_with),
            "records_out": dg.MetadataValue.int(report.states.get("fetched", 0)),
            "pages_fetched_this_run": dg.MetadataValue.int(report.fetched),
            "stopped_by": dg.MetadataValue.text(report.stopped_by),
            "url_states": dg.MetadataValue.json(report.states),
            "reasons": dg.MetadataValue.json(report.reasons),
            "warc_files": dg.MetadataValue.int(len(report.warc_files)),
        },
    )


@dg.asset(key=TEXT_WEB, deps=[WARC_FILES, CRAWL], group_name="web", kinds={"parquet"})
def text_web(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
) -> dg.MaterializeResult:
    """Main text of every HTTP 200 HTML response; everything else quarantined with a reason."""
    corpus = store.store()
    files, inputs = [], []
    for key in ("raw/warc_files", "raw/crawl"):
        index = corpus.output(key)
        files += read_file_index(index)
        inputs.append({"path": key, "digest": index.manifest().digest()})
    tasks = [Task(f"part-{i:05d}", f["uri"], f["version"]) for i, f in enumerate(files)]
    out = corpus.output("text/web")
    manifest = runner.runner().run(
        WarcTextStage(), tasks, out, inputs=inputs, progress=context.log.info
    )
    return materialize_result(manifest, out.uri)


@dg.asset(key=TEXT_WEB_FILTERED, deps=[TEXT_WEB], group_name="web", kinds={"parquet"})
def text_web_filtered(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
) -> dg.MaterializeResult:
    """FineWeb's heuristic rules (URL blocklist, Gopher, C4, FineWeb) from
    recipes/web_filters.yaml; dropped documents kept in _quarantine with the rule."""
    corpus = store.store()
    out = corpus.output("text/web_filtered")
    manifest = filter_web(
        runner.runner(), corpus.output("text/web"), out, FILTER_RECIPE, progress=context.log.info
    )
    return materialize_result(
        manifest, out.uri, {"recipe": dg.MetadataValue.path(str(FILTER_RECIPE))}
    )


@dg.asset(key=DEDUP_WEB_EXACT, deps=[TEXT_WEB_FILTERED], group_name="web", kinds={"parquet"})
def dedup_web_exact(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
) -> dg.MaterializeResult:
    """Web documents with exact duplicates (same normalised text) removed; first copy kept."""
    corpus = store.store()
    out = corpus.output("dedup/web_exact")
    manifest = exact_dedup(
        runner.runner(), corpus.output("text/web_filtered"), out, progress=context.log.info
    )
    c = manifest.counters
    rate = c.get("duplicates_removed", 0) / max(1, c.get("records_in", 0))
    return materialize_result(
        manifest,
        out.uri,
        {
            "duplicates_removed": dg.MetadataValue.int(int(c.get("duplicates_removed", 0))),
            "removal_rate": dg.MetadataValue.float(round(rate, 4)),
        },
    )


@dg.asset(key=DEDUP_WEB_MINHASH, deps=[DEDUP_WEB_EXACT], group_name="web", kinds={"parquet"})
def dedup_web_minhash(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
) -> dg.MaterializeResult:
    """Near duplicates removed: MinHash LSH over word 5-grams, 14 bands x 8 rows (FineWeb),
    one document kept per cluster; cluster id and size of every document go to the
    attribute shards in attributes/web_minhash (for upsampling by cluster size)."""
    corpus = store.store()
    out = corpus.output("dedup/web_minhash")
    manifest = minhash_dedup(
        runner.runner(),
        corpus.output("dedup/web_exact"),
        out,
        corpus.output("attributes/web_minhash"),
        MinhashConfig(),
        progress=context.log.info,
    )
    m = minhash_metadata(out)
    largest = [
        {
            "cluster_id": c["cluster_id"],
            "size": c["size"],
            "sample_urls": ", ".join(map(str, c["sample_urls"][:3])),
        }
        for c in m["largest_clusters"]
    ]
    return materialize_result(
        manifest,
        out.uri,
        {
            "documents_in": dg.MetadataValue.int(m["documents_in"]),
            "clusters": dg.MetadataValue.int(m["clusters"]),
            "removed": dg.MetadataValue.int(m["removed"]),
            "removal_rate": dg.MetadataValue.float(float(m["removal_rate"])),
            "largest_clusters": dg.MetadataValue.table(
                records=[dg.TableRecord(r) for r in largest],
                schema=dg.TableSchema(
                    columns=[
                        dg.TableColumn("cluster_id", "string"),
                        dg.TableColumn("size", "int"),
                        dg.TableColumn("sample_urls", "string"),
                    ]
                ),
            ),
        },
    )


@dg.asset_check(asset=WARC_FILES, description="At least one WARC file; index matches its manifest.")
def warc_files_indexed(store: StoreResource) -> dg.AssetCheckResult:
    return index_check(store.store().output("raw/warc_files"))


@dg.asset_check(
    asset=CRAWL, description="The crawl produced WARC files; index matches its manifest."
)
def crawl_indexed(store: StoreResource) -> dg.AssetCheckResult:
    return index_check(store.store().output("raw/crawl"))


@dg.asset_check(
    asset=TEXT_WEB,
    description="Checksums match, doc_ids unique, no empty text, every record accounted for.",
)
def text_web_valid(store: StoreResource) -> dg.AssetCheckResult:
    return document_check(store.store().output("text/web"))


@dg.asset_check(
    asset=TEXT_WEB_FILTERED,
    description="Checksums match, doc_ids unique, every dropped document has its rule recorded.",
)
def text_web_filtered_valid(store: StoreResource) -> dg.AssetCheckResult:
    return document_check(store.store().output("text/web_filtered"))


@dg.asset_check(
    asset=DEDUP_WEB_EXACT,
    description="Checksums match, and no two documents share a normalised text.",
)
def dedup_web_exact_unique(store: StoreResource) -> dg.AssetCheckResult:
    return document_check(store.store().output("dedup/web_exact"), unique_texts=True)


@dg.asset_check(
    asset=DEDUP_WEB_MINHASH,
    description="Checksums match, doc_ids unique, no two documents share a normalised text.",
)
def dedup_web_minhash_valid(store: StoreResource) -> dg.AssetCheckResult:
    return document_check(store.store().output("dedup/web_minhash"), unique_texts=True)
