"""Web text assets: raw/warc_files -> text/web -> dedup/web_exact, each with a check."""

from collections import Counter

import dagster as dg
import pyarrow.compute as pc

from assets.metadata import materialize_result
from assets.resources import RunnerResource, StoreResource, WebInputResource
from pipelines.dedup.exact import exact_dedup, text_hash
from pipelines.stage import Task
from pipelines.web.inputs import list_warc_files, read_file_index, write_file_index
from pipelines.web.warc_text import WarcTextStage
from storage.manifest import ManifestError
from storage.shards import read_shard

WARC_FILES = dg.AssetKey(["raw", "warc_files"])
TEXT_WEB = dg.AssetKey(["text", "web"])
DEDUP_WEB_EXACT = dg.AssetKey(["dedup", "web_exact"])


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


@dg.asset(key=TEXT_WEB, deps=[WARC_FILES], group_name="web", kinds={"parquet"})
def text_web(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
) -> dg.MaterializeResult:
    """Main text of every HTTP 200 HTML response; everything else quarantined with a reason."""
    corpus = store.store()
    files = read_file_index(corpus.output("raw/warc_files"))
    tasks = [Task(f"part-{i:05d}", f["uri"], f["version"]) for i, f in enumerate(files)]
    out = corpus.output("text/web")
    index = corpus.output("raw/warc_files").manifest()
    manifest = runner.runner().run(
        WarcTextStage(),
        tasks,
        out,
        inputs=[{"path": "raw/warc_files", "digest": index.digest()}],
        progress=context.log.info,
    )
    return materialize_result(manifest, out.uri)


@dg.asset(key=DEDUP_WEB_EXACT, deps=[TEXT_WEB], group_name="web", kinds={"parquet"})
def dedup_web_exact(
    context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource
) -> dg.MaterializeResult:
    """Web documents with exact duplicates (same normalised text) removed; first copy kept."""
    corpus = store.store()
    out = corpus.output("dedup/web_exact")
    manifest = exact_dedup(
        runner.runner(), corpus.output("text/web"), out, progress=context.log.info
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


def _verified(store: StoreResource, key: str):
    out = store.store().output(key)
    manifest = out.manifest()
    manifest.verify(out.fs, out.folder, checksums=True)
    return out, manifest


@dg.asset_check(
    asset=WARC_FILES,
    description="The index lists at least one WARC file and its shard matches the manifest.",
)
def warc_files_indexed(store: StoreResource) -> dg.AssetCheckResult:
    try:
        _, manifest = _verified(store, "raw/warc_files")
    except ManifestError as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    return dg.AssetCheckResult(passed=manifest.rows > 0, metadata={"files": manifest.rows})


def _doc_check(store: StoreResource, key: str, unique_texts: bool) -> dg.AssetCheckResult:
    try:
        out, manifest = _verified(store, key)
    except ManifestError as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    ids: Counter = Counter()
    texts: Counter = Counter()
    empty = 0
    for path, _info in out.shard_infos(verify=False):
        t = read_shard(out.fs, path, columns=["doc_id", "text"])
        ids.update(t.column("doc_id").to_pylist())
        empty += int(pc.sum(pc.equal(pc.utf8_length(t.column("text")), 0)).as_py() or 0)
        if unique_texts:
            texts.update(text_hash(x) for x in t.column("text").to_pylist())
    dup_ids = sum(n - 1 for n in ids.values() if n > 1)
    dup_texts = sum(n - 1 for n in texts.values() if n > 1)
    c = manifest.counters
    quarantined = sum(v for k, v in c.items() if k.startswith("quarantined."))
    accounted = c.get("records_in", 0) - quarantined - manifest.rows
    # WARC-level problems (corrupt members) are quarantined without being records_in
    passed = dup_ids == 0 and empty == 0 and dup_texts == 0 and accounted <= 0
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "duplicate_doc_ids": dup_ids,
            "duplicate_texts": dup_texts,
            "empty_texts": empty,
            "records_unaccounted": max(0, accounted),
        },
    )


@dg.asset_check(
    asset=TEXT_WEB,
    description="Checksums match, doc_ids unique, no empty text, every record accounted for.",
)
def text_web_valid(store: StoreResource) -> dg.AssetCheckResult:
    return _doc_check(store, "text/web", unique_texts=False)


@dg.asset_check(
    asset=DEDUP_WEB_EXACT,
    description="Checksums match, and no two documents share a normalised text.",
)
def dedup_web_exact_unique(store: StoreResource) -> dg.AssetCheckResult:
    return _doc_check(store, "dedup/web_exact", unique_texts=True)
