"""Manifest -> Dagster metadata: the UI's view of what a stage wrote."""

from __future__ import annotations

from collections import Counter

import dagster as dg

from storage.manifest import Manifest


def manifest_metadata(manifest: Manifest, uri: str) -> dict[str, dg.MetadataValue]:
    c = manifest.counters
    reasons = Counter(
        {k.removeprefix("quarantined."): v for k, v in c.items() if k.startswith("quarantined.")}
    )
    md: dict[str, dg.MetadataValue] = {
        "records_in": dg.MetadataValue.int(int(c.get("records_in", 0))),
        "records_out": dg.MetadataValue.int(manifest.rows),
        "quarantined": dg.MetadataValue.int(manifest.quarantined),
        "bytes": dg.MetadataValue.int(manifest.bytes),
        "shards": dg.MetadataValue.int(len(manifest.shards)),
        "seconds": dg.MetadataValue.float(float(manifest.seconds)),
        "path": dg.MetadataValue.path(uri),
        "config_hash": dg.MetadataValue.text(manifest.config_hash),
        "digest": dg.MetadataValue.text(manifest.digest()),
    }
    if reasons:
        md["quarantine_reasons"] = dg.MetadataValue.table(
            records=[dg.TableRecord({"reason": r, "records": n}) for r, n in reasons.most_common()],
            schema=dg.TableSchema(
                columns=[dg.TableColumn("reason", "string"), dg.TableColumn("records", "int")]
            ),
        )
    other = {k: v for k, v in c.items() if not k.startswith("quarantined.")}
    md["counters"] = dg.MetadataValue.json(other)
    return md


def materialize_result(
    manifest: Manifest, uri: str, extra: dict | None = None
) -> dg.MaterializeResult:
    md = manifest_metadata(manifest, uri)
    md.update(extra or {})
    return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(manifest.digest()))
