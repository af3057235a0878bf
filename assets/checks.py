"""Shared bodies of the asset checks: outputs match their manifests, documents are sound."""

from collections import Counter

import dagster as dg
import pyarrow.compute as pc

from pipelines.dedup.exact import text_hash
from storage.layout import OutputDir
from storage.manifest import ManifestError
from storage.shards import read_shard


def index_check(out: OutputDir) -> dg.AssetCheckResult:
    """A file index (raw/*) lists at least one file and its shard matches the manifest."""
    try:
        manifest = out.manifest()
        manifest.verify(out.fs, out.folder, checksums=True)
    except ManifestError as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    return dg.AssetCheckResult(passed=manifest.rows > 0, metadata={"files": manifest.rows})


def document_check(out: OutputDir, unique_texts: bool = False) -> dg.AssetCheckResult:
    """Checksums match, doc_ids unique, no empty text, in = out + quarantined
    (and, with ``unique_texts``, no two documents share a normalised text)."""
    try:
        manifest = out.manifest()
        manifest.verify(out.fs, out.folder, checksums=True)
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
    # WARC-level problems (corrupt members) are quarantined without being records_in,
    # so in - quarantined - out may be negative, never positive
    unaccounted = c.get("records_in", 0) - quarantined - manifest.rows
    passed = dup_ids == 0 and empty == 0 and dup_texts == 0 and unaccounted <= 0
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "duplicate_doc_ids": dup_ids,
            "duplicate_texts": dup_texts,
            "empty_texts": empty,
            "records_unaccounted": max(0, unaccounted),
        },
    )
