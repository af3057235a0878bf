"""The mixer's second pass: scan rows + one stage's recipe -> repeats per document (``mix/sN``).

For each document: thresholds first (safety flags, edu score, language score, length),
then the weight ``w`` = product of the recipe's multipliers for its source, family,
language, domain, edu bucket and MinHash cluster-size bucket, times the scale of its
length bucket (long-context stages). ``repeats = floor(w) + (u < frac(w))`` where
``u`` is a uniform number hashed from (seed, stage, doc_id): instance level,
deterministic, and exact in expectation.

Long-context stages (``length_buckets``): the driver first reads the scan's
(n_tokens, w, u) of the documents in each bucket and solves one scale per bucket so
the *realised* token shares (after rounding) match the targets: the total is set by
the scarcest bucket (T = min_b mass_b / share_b, so no bucket is upsampled to fill
another's share), and each bucket's scale is bisected on the monotone realised mass
``sum n * repeats(s * w, u)``. If a bucket is empty, the stage takes what exists and
the manifest says why the shares were missed (``length_report.status``).

The output (``mix/sN``, one part per scan part) keeps every document, dropped ones
with ``repeats`` 0 and a ``reason``, so a selection can be audited. Counters (summed
over parts by the runner) per label group and label: ``pool.*`` tokens passing the
thresholds, ``target.*`` expected tokens (sum n * w), ``tokens.*`` selected tokens
(sum n * repeats); ``hist.*`` the length histogram of selected tokens.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import xxhash

from pipelines.mix.recipe import (
    UNKNOWN,
    Filters,
    LengthBucket,
    Recipe,
    RecipeError,
    StageRecipe,
)
from pipelines.mix.scan import SCAN_SCHEMA, scan_corpus
from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext
from storage.layout import CorpusStore, OutputDir
from storage.manifest import Manifest
from storage.shards import iter_batches

GROUPS = ("source", "family", "lang", "domain", "edu", "length")
HIST_EDGES = (0, 512, 1024, 2048, 4096, 8192, 12288, 16384, 20480, 24576, 28672, 32769)
SELECTION_SCHEMA = pa.schema(
    [
        *SCAN_SCHEMA,
        pa.field("edu", pa.string(), nullable=False),  # edu bucket "0".."5" or unknown
        pa.field("length", pa.string()),  # length bucket name (long-context stages)
        pa.field("weight", pa.float64(), nullable=False),  # expected repeats
        pa.field("repeats", pa.int32(), nullable=False),
        pa.field("reason", pa.string()),  # why repeats is 0; null when kept
    ]
)


def uniform(seed: int, stage: str, doc_id: str) -> float:
    """The document's uniform number in [0, 1) for this stage and seed."""
    return xxhash.xxh3_64_intdigest(f"{stage}\0{doc_id}".encode(), seed=seed) / 2.0**64


def repeats_of(w: np.ndarray | float, u: np.ndarray | float) -> np.ndarray:
    """floor(w) + (u < frac(w)): unbiased integer rounding, monotone in w for fixed u."""
    w = np.asarray(w, dtype=np.float64)
    base = np.floor(w)
    return (base + (np.asarray(u) < w - base)).astype(np.int64)


def edu_bucket(score: float | None) -> str:
    return UNKNOWN if score is None else str(min(5, max(0, int(score + 0.5))))


def length_bucket(stage: StageRecipe, n_tokens: int) -> str | None:
    for b in stage.length_buckets:
        if b.min <= n_tokens <= b.max:
            return b.name
    return None


def label_row(row: dict[str, Any]) -> dict[str, str]:
    """The labels a document is weighted and reported by (no length bucket)."""
    return {
        "source": row["source"],
        "family": row["family"],
        "lang": row["lang"] or UNKNOWN,
        "domain": row["domain"] or UNKNOWN,
        "edu": edu_bucket(row["edu_score"]),
    }


def judge(stage: StageRecipe, row: dict[str, Any], labels: dict[str, str]) -> tuple[float, str]:
    """(weight before length scaling, drop reason or "") of one scan row."""
    f = stage.filters
    flagged = set(row["flags"] or ()) & set(f.drop_flags)
    if flagged:
        return 0.0, "safety:" + sorted(flagged)[0]
    if f.min_edu_score > 0 and (row["edu_score"] or 0.0) < f.min_edu_score:
        return 0.0, "edu_score"
    if f.min_lang_score > 0 and (row["lang_score"] or 0.0) < f.min_lang_score:
        return 0.0, "lang_score"
    if row["n_tokens"] < f.min_tokens:
        return 0.0, "min_tokens"
    if stage.length_buckets and length_bucket(stage, row["n_tokens"]) is None:
        return 0.0, "length"
    w = stage.cluster_weight(row["cluster_size"] or 1)
    for group, label in labels.items():
        w *= stage.weight(group, label)
    return w, ("weight_zero" if w == 0 else "")


@dataclass
class SelectStage(Stage):
    """Scan part -> the same rows with the stage's weight, repeats and drop reason."""

    recipe: dict[str, Any] = field(default_factory=dict)  # Recipe.stage_config(stage)
    stage_name: str = ""
    seed: int = 0
    recipe_hash: str = ""
    bucket_scales: dict[str, float] = field(default_factory=dict)
    length_report: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # name -> document output key

    name: ClassVar[str] = "mix/select"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = SELECTION_SCHEMA
    output_kind: ClassVar[str] = "selection"

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        stage = stage_from_config(self.recipe["stage"])
        sums: dict[str, float] = defaultdict(float)
        c = ctx.counters
        for batch in batches:
            out: dict[str, list] = {f.name: [] for f in SELECTION_SCHEMA}
            for row in batch.to_pylist():
                labels = label_row(row)
                w, reason = judge(stage, row, labels)
                bucket = length_bucket(stage, row["n_tokens"]) if stage.length_buckets else None
                if bucket is not None:
                    labels["length"] = bucket
                    w *= self.bucket_scales.get(bucket, 0.0)
                n = row["n_tokens"]
                rep = int(repeats_of(w, uniform(self.seed, self.stage_name, row["doc_id"])))
                if not reason and rep == 0:
                    reason = "sampled_out"
                c["records_in"] += 1
                c["documents"] += 1
                if reason in ("", "sampled_out", "weight_zero"):  # passed the thresholds
                    for g, label in labels.items():
                        c[f"pool.{g}={label}"] += n
                        sums[f"target.{g}={label}"] += n * w
                    c["pool.tokens"] += n
                    sums["target.tokens"] += n * w
                if rep:
                    c["documents_kept"] += 1
                    c["copies"] += rep
                    c["tokens"] += n * rep
                    for g, label in labels.items():
                        c[f"tokens.{g}={label}"] += n * rep
                    lo = HIST_EDGES[int(np.searchsorted(HIST_EDGES, n, side="right")) - 1]
                    c[f"hist.documents.{lo}"] += rep
                    c[f"hist.tokens.{lo}"] += n * rep
                else:
                    c[f"dropped.{reason.split(':')[0]}"] += 1
                row.update(edu=labels["edu"], length=bucket, weight=w, repeats=rep)
                row["reason"] = reason or None
                for k in out:
                    out[k].append(row[k])
            yield pa.RecordBatch.from_pydict(out, schema=SELECTION_SCHEMA)
        for key, value in sums.items():
            c[key] += int(round(value))


def stage_from_config(d: dict[str, Any]) -> StageRecipe:
    """Rebuild a StageRecipe from its ``asdict`` form (what travels in configs)."""
    return StageRecipe(
        name=d["name"],
        seq_len=d["seq_len"],
        filters=Filters(**{**d["filters"], "drop_flags": tuple(d["filters"]["drop_flags"])}),
        weights=d["weights"],
        cluster_size=tuple(tuple(x) for x in d["cluster_size"]),
        length_buckets=tuple(LengthBucket(**b) for b in d["length_buckets"]),
    )


# long-context share solving -------------------------------------------------------
def solve_length_shares(
    scan: OutputDir, stage: StageRecipe, seed: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per length bucket, the scale that makes realised token shares match the targets."""
    cols = ["doc_id", "source", "family", "n_tokens", "lang", "lang_score", "domain"]
    cols += ["edu_score", "flags", "cluster_size"]
    per: dict[str, list[tuple[int, float, float]]] = {b.name: [] for b in stage.length_buckets}
    for path, _ in scan.shard_infos():
        for batch in iter_batches(scan.fs, path, columns=cols):
            for row in batch.to_pylist():
                w, reason = judge(stage, row, label_row(row))
                if reason or w == 0:
                    continue
                bucket = length_bucket(stage, row["n_tokens"])
                per[bucket].append((row["n_tokens"], w, uniform(seed, stage.name, row["doc_id"])))
    arrays = {k: np.array(v, dtype=np.float64).reshape(-1, 3) for k, v in per.items()}
    mass = {k: float((a[:, 0] * a[:, 1]).sum()) for k, a in arrays.items()}
    empty = [b.name for b in stage.length_buckets if mass[b.name] == 0]
    if empty:
        scales = {b.name: 1.0 for b in stage.length_buckets}
        targets = {b.name: mass[b.name] for b in stage.length_buckets}
    else:
        total = min(mass[b.name] / b.share for b in stage.length_buckets)
        targets = {b.name: b.share * total for b in stage.length_buckets}
        scales = {k: _bisect(arrays[k], targets[k]) for k in arrays}
    achieved = {k: _realised(arrays[k], scales[k]) for k in arrays}
    whole = sum(achieved.values())
    report: dict[str, Any] = {"buckets": {}}
    worst = 0.0
    for b in stage.length_buckets:
        share = achieved[b.name] / whole if whole else 0.0
        worst = max(worst, abs(share - b.share))
        report["buckets"][b.name] = {
            "min": b.min,
            "max": b.max,
            "documents": len(arrays[b.name]),
            "available_tokens": int(round(mass[b.name])),
            "target_share": b.share,
            "achieved_tokens": int(achieved[b.name]),
            "achieved_share": round(share, 6),
            "scale": scales[b.name],
        }
    if empty:
        report["status"] = (
            f"not enough long text: no documents of {', '.join(empty)} tokens pass the "
            f"filters, so the target shares cannot be met; the stage takes what exists "
            f"({int(whole)} tokens). Add long documents (PDF, books, code repositories)."
        )
    elif worst > 0.01:
        report["status"] = (
            f"shares missed by {worst:.1%}: too few documents to round to the targets "
            f"within 1 point (each document is added whole)"
        )
    else:
        report["status"] = "ok"
    return scales, report


def _realised(a: np.ndarray, scale: float) -> float:
    return float((a[:, 0] * repeats_of(a[:, 1] * scale, a[:, 2])).sum())


def _bisect(a: np.ndarray, target: float) -> float:
    """Scale whose realised mass is closest to ``target`` (the mass is monotone in it)."""
    lo, hi = 0.0, 1.0
    while _realised(a, hi) < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if _realised(a, mid) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda s: abs(_realised(a, s) - target))


# driver ---------------------------------------------------------------------------
def mix_stage(
    corpus: CorpusStore,
    recipe: Recipe,
    stage_name: str,
    runner: LocalRunner,
    tokenizer_path: str = "",
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Scan (or resume the scan of) the recipe's sources and write ``mix/<stage_name>``."""
    stage = recipe.stage(stage_name)
    for source in recipe.sources:
        lacking = stage.filters.needs() - set(source.attributes)
        if lacking:
            raise RecipeError(
                f"{recipe.path}: stage {stage_name} filters on {', '.join(sorted(lacking))} "
                f"attributes, which source {source.name!r} does not list; add them to the "
                "source or drop those filters"
            )
    say = progress or (lambda msg: None)
    scan, _ = scan_corpus(corpus, recipe, runner, tokenizer_path, progress)
    scales: dict[str, float] = {}
    report: dict[str, Any] = {}
    if stage.length_buckets:
        scales, report = solve_length_shares(scan, stage, recipe.seed)
        say(f"mix/{stage_name}: length buckets {report['status']}")
    select = SelectStage(
        recipe=recipe.stage_config(stage_name),
        stage_name=stage_name,
        seed=recipe.seed,
        recipe_hash=recipe.stage_hash(stage_name),
        bucket_scales=scales,
        length_report=report,
        sources={s.name: s.documents for s in recipe.sources},
    )
    return runner.run_over(select, scan, corpus.output(f"mix/{stage_name}"), progress=progress)


def counter_table(counters: dict[str, int], prefix: str) -> dict[str, dict[str, int]]:
    """``{prefix}.{group}={label}`` counters as {group: {label: value}}."""
    out: dict[str, dict[str, int]] = {g: Counter() for g in GROUPS}
    for key, value in counters.items():
        if key.startswith(prefix + ".") and "=" in key:
            group, label = key[len(prefix) + 1 :].split("=", 1)
            out.setdefault(group, Counter())[label] += value
    return {g: dict(sorted(t.items(), key=lambda kv: -kv[1])) for g, t in out.items() if t}
