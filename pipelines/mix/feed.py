"""From a finished selection (``mix/sN``) to the exporter's input, and to asset metadata.

``stage_documents`` streams every selected document's token ids (as ``mix/scan`` stored
them, ending with <|endoftext|>), repeats and labels as ``TokenBatch`` columns, in a
deterministic order (selection parts in name order, rows in shard order);
``export_stage`` takes it as is. ``mix_metadata`` turns
the selection manifest into what the Dagster assets show: tokens per
language/domain/source, the target-vs-achieved table and the length histogram.

Design choices:
- The ids come from the scan part the selection part was made from (same part name,
  same rows): the text is tokenised once, in the scan, for every stage. Each row's
  doc_id is checked against the scan row, and the selection's recorded input digest
  against the scan's current manifest, so a scan rewritten after the mix fails loudly
  instead of exporting the wrong tokens.
- The caller passes the tokenizer's sha256; a scan made with another tokenizer is an
  error (its ids would be meaningless in this stage's vocabulary).
- Labels passed to the exporter are the mixer's (source, family, lang, domain, edu
  and, for long-context stages, length), so the token manifest breaks down the same way.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.mix.scan import SCAN_KEY, ids_columns
from pipelines.mix.select import GROUPS, HIST_EDGES, counter_table
from pipelines.tokens.token_batch import TokenBatch
from storage.layout import CorpusStore, OutputDir
from storage.manifest import ManifestError
from storage.overlap import read_ahead
from storage.shards import iter_batches, read_shard

LABELS = GROUPS


def stage_documents(
    selection: OutputDir, corpus: CorpusStore, tokenizer_sha256: str
) -> Iterator[TokenBatch]:
    """Selected documents of a finished ``mix/sN`` as token batches, in a fixed order."""
    manifest = selection.manifest()
    scan = corpus.output(SCAN_KEY)
    scan_manifest = scan.manifest()
    made_from = {i["path"]: i["digest"] for i in manifest.inputs}
    if made_from.get(scan.uri) != scan_manifest.digest():
        raise ManifestError(
            f"{selection.uri} was selected from another {scan.uri} than the one there now; "
            "re-run the mix"
        )
    scanned_with = scan_manifest.config.get("tokenizer_sha256")
    if scanned_with != tokenizer_sha256:
        raise ManifestError(
            f"{scan.uri} was tokenised with tokenizer sha256 {scanned_with}, this export uses "
            f"{tokenizer_sha256}; re-run the mix with the export's tokenizer"
        )
    for path, _ in selection.shard_infos():
        sel = read_shard(selection.fs, path, columns=["doc_id", "row", "repeats", *LABELS])
        sel = sel.filter(pc.greater(sel.column("repeats"), 0))
        if sel.num_rows == 0:
            continue
        rows = sel.column("row").to_numpy()
        scan_path = posixpath.join(scan.folder, posixpath.basename(path))
        offset = 0
        for batch in read_ahead(iter_batches(scan.fs, scan_path, columns=["doc_id", "ids"])):
            lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
            if hi > lo:
                want = sel.slice(lo, hi - lo)
                first = int(rows[lo]) - offset
                if int(rows[hi - 1]) - offset - first == hi - lo - 1:  # a run of rows: no copy
                    scanned = batch.slice(first, hi - lo)
                else:
                    scanned = batch.take(pa.array(rows[lo:hi] - offset))
                doc_ids = scanned.column("doc_id")
                if not doc_ids.equals(want.column("doc_id").combine_chunks()):
                    raise ManifestError(
                        f"{scan_path}: rows {offset}..{offset + batch.num_rows} do not hold the "
                        f"documents the selection {path} expects; re-run the mix"
                    )
                offsets, values = ids_columns(scanned.column("ids"))
                yield TokenBatch(
                    doc_ids=doc_ids.to_pylist(),
                    offsets=offsets,
                    values=values,
                    repeats=want.column("repeats").to_numpy().astype(np.int64),
                    labels={k: want.column(k).combine_chunks() for k in LABELS},
                )
            offset += batch.num_rows
        if len(rows) and rows[-1] >= offset:
            raise ManifestError(
                f"{scan_path}: has {offset} rows, the selection {path} expects row "
                f"{rows[-1]}; re-run the mix"
            )


def mix_metadata(selection: OutputDir) -> dict[str, Any]:
    """Metadata of a finished ``mix/sN``: token tables, target vs achieved, length histogram.

    ``mixture`` rows: group, label, pool_share (tokens passing the thresholds),
    target_share (expected under the recipe's weights) and achieved_share (selected).
    """
    m = selection.manifest()
    c = m.counters
    pool, target, got = (counter_table(c, p) for p in ("pool", "target", "tokens"))
    totals = {"pool": c.get("pool.tokens", 0), "target": c.get("target.tokens", 0)}
    totals["tokens"] = c.get("tokens", 0)
    mixture = []
    for group in GROUPS:
        labels = set(pool.get(group, {})) | set(got.get(group, {}))
        for label in sorted(labels, key=lambda lab: -got.get(group, {}).get(lab, 0)):
            mixture.append(
                {
                    "group": group,
                    "label": label,
                    "pool_share": _share(pool.get(group, {}).get(label, 0), totals["pool"]),
                    "target_share": _share(target.get(group, {}).get(label, 0), totals["target"]),
                    "achieved_share": _share(got.get(group, {}).get(label, 0), totals["tokens"]),
                }
            )
    report = m.config.get("length_report") or {}
    for name, b in report.get("buckets", {}).items():  # the recipe's absolute targets
        for row in mixture:
            if row["group"] == "length" and row["label"] == name:
                row["target_share"] = b["target_share"]
    histogram = [
        {
            "min": lo,
            "max": hi - 1,
            "documents": c.get(f"hist.documents.{lo}", 0),
            "tokens": c.get(f"hist.tokens.{lo}", 0),
        }
        for lo, hi in zip(HIST_EDGES, [*HIST_EDGES[1:], None], strict=True)
        if hi is not None
    ]
    over = HIST_EDGES[-1]
    histogram.append(
        {
            "min": over,
            "max": None,
            "documents": c.get(f"hist.documents.{over}", 0),
            "tokens": c.get(f"hist.tokens.{over}", 0),
        }
    )
    return {
        "recipe_hash": m.config["recipe_hash"],
        "stage": m.config["stage_name"],
        "seq_len": m.config["recipe"]["stage"]["seq_len"],
        "documents": c.get("documents", 0),
        "documents_kept": c.get("documents_kept", 0),
        "copies": c.get("copies", 0),
        "tokens": totals["tokens"],
        "dropped": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("dropped.")},
        "tokens_by_source": got.get("source", {}),
        "tokens_by_family": got.get("family", {}),
        "tokens_by_lang": got.get("lang", {}),
        "tokens_by_domain": got.get("domain", {}),
        "tokens_by_edu": got.get("edu", {}),
        "mixture": mixture,
        "length_histogram": histogram,
        "length_report": report,
    }


def _share(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0
