"""From a finished selection (``mix/sN``) to the exporter's input, and to asset metadata.

``stage_documents`` streams ``(doc_id, text, repeats, labels)`` for every selected
document, in a deterministic order (selection parts in name order, rows in shard
order), reading each document shard once and in batches; ``export_stage`` takes it as
is. ``mix_metadata`` turns the selection manifest into what the Dagster assets show:
tokens per language/domain/source, the target-vs-achieved table and the length
histogram.

Design choices:
- The text is read from the document output the selection points at (source, part,
  row), never copied; each row's doc_id is checked against the shard, so a document
  output rewritten after the mix fails loudly instead of exporting the wrong text.
- Labels passed to the exporter are the mixer's (source, family, lang, domain, edu
  and, for long-context stages, length), so the token manifest breaks down the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow.compute as pc

from pipelines.mix.select import GROUPS, HIST_EDGES, counter_table
from storage.layout import CorpusStore, OutputDir
from storage.manifest import ManifestError
from storage.shards import iter_batches, read_shard

LABELS = GROUPS


def stage_documents(
    selection: OutputDir, corpus: CorpusStore
) -> Iterator[tuple[str, str, int, dict[str, str]]]:
    """Selected documents of a finished ``mix/sN``, with repeats and labels, in a fixed order."""
    manifest = selection.manifest()
    sources: dict[str, str] = manifest.config["sources"]
    cols = ["doc_id", "source", "part", "row", "repeats", *LABELS]
    for path, _ in selection.shard_infos():
        sel = read_shard(selection.fs, path, columns=cols)
        sel = sel.filter(pc.greater(sel.column("repeats"), 0))
        if sel.num_rows == 0:
            continue
        rows = sel.to_pylist()
        source, part = rows[0]["source"], rows[0]["part"]
        docs = corpus.output(sources[source])
        want = iter(rows)
        nxt = next(want, None)
        offset = 0
        for batch in iter_batches(docs.fs, docs.shard_path(part), columns=["doc_id", "text"]):
            ids = batch.column("doc_id")
            texts = batch.column("text")
            while nxt is not None and nxt["row"] < offset + batch.num_rows:
                i = nxt["row"] - offset
                if ids[i].as_py() != nxt["doc_id"]:
                    raise ManifestError(
                        f"{docs.uri}/{part}: row {nxt['row']} holds {ids[i].as_py()}, the "
                        f"selection {path} expects {nxt['doc_id']}; the documents changed "
                        "after the mix: re-run the mix"
                    )
                labels = {k: nxt[k] for k in LABELS if nxt[k] is not None}
                yield nxt["doc_id"], texts[i].as_py(), nxt["repeats"], labels
                nxt = next(want, None)
            offset += batch.num_rows
        if nxt is not None:
            raise ManifestError(
                f"{docs.uri}/{part}: has {offset} rows, the selection {path} expects row "
                f"{nxt['row']} ({nxt['doc_id']}); re-run the mix"
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
