"""The last pass every dedup shares: drop listed doc_ids from a shard, quarantining each
with the reason and the document that was kept instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stage import StageContext


def drop_listed(
    batches: Iterator[pa.RecordBatch],
    ctx: StageContext,
    drop: pa.Array,
    reason: str,
    detail: Callable[[str], str],
) -> Iterator[pa.RecordBatch]:
    """Yield ``batches`` without the rows whose doc_id is in ``drop``; each dropped row
    is quarantined with ``reason`` and ``detail(doc_id)``; row offsets count across batches."""
    row = 0
    for batch in batches:
        ctx.counters["records_in"] += batch.num_rows
        mask = pc.is_in(batch.column("doc_id"), value_set=drop)
        if pc.any(mask).as_py():
            ids, native, urls = (batch.column(c) for c in ("doc_id", "native_id", "url"))
            for i in pc.indices_nonzero(mask).to_pylist():
                ctx.quarantine(
                    reason,
                    detail(ids[i].as_py()),
                    offset=row + i,
                    native_id=native[i].as_py(),
                    url=urls[i].as_py(),
                )
            batch = batch.filter(pc.invert(mask))
        row += len(mask)
        yield batch
