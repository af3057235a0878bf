"""Summaries of attribute outputs for asset metadata: domain, quality and safety histograms.

Each function takes a finished attribute OutputDir (its manifest lists the shards),
reads only the columns it needs, and returns plain dicts of counts (JSON-ready, so
an asset can put them in ``MaterializeResult.metadata`` as JSON or a Markdown table).
"""

from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc

from storage.layout import OutputDir
from storage.shards import read_shard

EDU_BUCKETS = ("0", "1", "2", "3", "4", "5")


def _columns(out: OutputDir, columns: list[str]):
    for path, _info in out.shard_infos(verify=True):
        yield read_shard(out.fs, path, columns=columns)


def domain_histogram(out: OutputDir) -> dict[str, int]:
    """Documents per domain label, most frequent first."""
    counts: Counter = Counter()
    for table in _columns(out, ["domain"]):
        counts.update(table.column("domain").to_pylist())
    return dict(counts.most_common())


def quality_histogram(out: OutputDir) -> dict[str, dict[str, int]]:
    """``edu``: documents per rounded edu score 0-5; ``dclm``: per tenth of dclm_prob."""
    edu: Counter = Counter()
    dclm: Counter = Counter()
    for table in _columns(out, ["edu_score", "dclm_prob"]):
        rounded = pc.round(table.column("edu_score"), 0).cast("int64").to_pylist()
        edu.update(str(min(5, max(0, v))) for v in rounded)
        tenths = pc.floor(pc.multiply(table.column("dclm_prob"), 10)).cast("int64").to_pylist()
        dclm.update(f"{min(v, 9) / 10:.1f}" for v in tenths)
    return {
        "edu": {b: edu.get(b, 0) for b in EDU_BUCKETS},
        "dclm": {f"{i / 10:.1f}": dclm.get(f"{i / 10:.1f}", 0) for i in range(10)},
    }


def safety_counts(out: OutputDir) -> dict[str, int]:
    """Documents carrying each safety flag, plus ``documents`` (the total)."""
    counts: Counter = Counter()
    for table in _columns(out, ["flags"]):
        counts["documents"] += table.num_rows
        for flags in table.column("flags").to_pylist():
            counts.update(flags)
    return dict(counts)


def markdown_table(counts: dict[str, int], key: str = "label", width: int = 30) -> str:
    """A Markdown table with a bar per row: a chart the Dagster UI renders as is."""
    total = sum(counts.values()) or 1
    top = max(counts.values(), default=0) or 1
    rows = [f"| {key} | documents | share | |", "|---|---:|---:|---|"]
    rows += [
        f"| {k} | {v} | {100 * v / total:.1f}% | {'█' * max(1 if v else 0, round(width * v / top))} |"
        for k, v in counts.items()
    ]
    return "\n".join(rows)
