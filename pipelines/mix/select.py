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
import pyarrow.compute as pc
import xxhash

from pipelines.mix.recipe import (
    UNKNOWN,
    Filters,
    LengthBucket,
    Recipe,
    RecipeError,
    StageRecipe,
)
from pipelines.mix.scan import LABEL_COLUMNS, SCAN_SCHEMA, scan_corpus
from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext, Task
from storage.fs import Filesystem
from storage.layout import CorpusStore, OutputDir
from storage.manifest import Manifest
from storage.shards import iter_batches

GROUPS = ("source", "family", "lang", "domain", "edu", "length")
HIST_EDGES = (0, 512, 1024, 2048, 4096, 8192, 12288, 16384, 20480, 24576, 28672, 32769)
SELECTION_SCHEMA = pa.schema(
    [
        *(SCAN_SCHEMA.field(name) for name in LABEL_COLUMNS),
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


EDU_LABELS = np.array([str(k) for k in range(6)], dtype=object)


def edu_buckets(scores: pa.Array) -> pa.Array:
    """Each score rounded half up to "0".."5", in float64 (clipped at 0 and 5); null or
    NaN: unknown."""
    x = scores.cast(pa.float64()).to_numpy(zero_copy_only=False)
    missing = np.isnan(x)
    k = np.clip(np.floor(np.where(missing, 0.0, x) + 0.5), 0, 5).astype(np.int64)
    return pa.array(np.where(missing, UNKNOWN, EDU_LABELS[k]), pa.string())


def length_bucket(stage: StageRecipe, n_tokens: int) -> str | None:
    for b in stage.length_buckets:
        if b.min <= n_tokens <= b.max:
            return b.name
    return None


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

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        """The scan part's label columns (never its token ids)."""
        yield from iter_batches(fs, task.input, columns=LABEL_COLUMNS)

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        stage = stage_from_config(self.recipe["stage"])
        sums: dict[str, float] = defaultdict(float)
        c = ctx.counters
        for batch in batches:
            n = batch.num_rows
            labels, w, reasons, buckets = judge_batch(stage, batch)
            n_tok = batch.column("n_tokens").to_numpy()
            if stage.length_buckets:
                scale = self.bucket_scales
                w = w * np.array([scale.get(b, 0.0) if b else 1.0 for b in buckets])
                labels["length"] = buckets  # None: outside every bucket (reason "length")
            doc_ids = batch.column("doc_id").to_pylist()
            u = np.fromiter((uniform(self.seed, self.stage_name, d) for d in doc_ids), float, n)
            rep = repeats_of(w, u)
            passed = [r in ("", "weight_zero") for r in reasons]  # passed the thresholds
            for i in np.flatnonzero(rep == 0):
                if not reasons[i]:
                    reasons[i] = "sampled_out"
            c["records_in"] += n
            c["documents"] += n
            count_batch(c, sums, labels, n_tok, w, rep, np.array(passed, dtype=bool), reasons)
            cols = {name: batch.column(name) for name in LABEL_COLUMNS}
            cols["edu"] = labels["edu"]
            cols["length"] = pa.array(buckets, pa.string())
            cols["weight"] = pa.array(w, pa.float64())
            cols["repeats"] = pa.array(rep, pa.int32())
            cols["reason"] = pa.array([r or None for r in reasons], pa.string())
            yield pa.RecordBatch.from_pydict(
                {f.name: cols[f.name] for f in SELECTION_SCHEMA}, schema=SELECTION_SCHEMA
            )
        for key, value in sums.items():
            c[key] += int(round(value))


def count_batch(
    c: Counter,
    sums: dict[str, float],
    labels: dict[str, pa.Array | list[str | None]],
    n_tok: np.ndarray,
    w: np.ndarray,
    rep: np.ndarray,
    passed: np.ndarray,
    reasons: list[str],
) -> None:
    """Add a judged batch to the counters (``pool.*``, ``target.*`` into ``sums``,
    ``tokens.*``, ``hist.*``, ``dropped.*``), grouped by label in Arrow, not per row."""
    pool = np.where(passed, n_tok, 0)
    target = np.where(passed, n_tok * w, 0.0)
    kept = n_tok * rep
    columns = {"pool": pool, "target": target, "kept": kept, "passed": passed, "copies": rep}
    table = pa.table(
        {
            **{
                f"label:{g}": v if isinstance(v, pa.Array) else pa.array(v, pa.string())
                for g, v in labels.items()
            },
            **columns,
        }
    )
    for group in labels:
        agg = table.group_by(f"label:{group}").aggregate(
            [
                ("pool", "sum"),
                ("target", "sum"),
                ("kept", "sum"),
                ("passed", "sum"),
                ("copies", "sum"),
            ]
        )
        rows = zip(
            *(
                agg.column(k).to_pylist()
                for k in (
                    f"label:{group}",
                    "pool_sum",
                    "target_sum",
                    "kept_sum",
                    "passed_sum",
                    "copies_sum",
                )
            ),
            strict=True,
        )
        for label, pool_sum, target_sum, kept_sum, n_passed, copies in rows:
            if label is None:
                continue
            if n_passed:
                c[f"pool.{group}={label}"] += pool_sum
                sums[f"target.{group}={label}"] += target_sum
            if copies:
                c[f"tokens.{group}={label}"] += kept_sum
    if passed.any():
        c["pool.tokens"] += int(pool.sum())
        sums["target.tokens"] += float(target.sum())
    kept_docs = rep > 0
    if kept_docs.any():
        c["documents_kept"] += int(kept_docs.sum())
        c["copies"] += int(rep.sum())
        c["tokens"] += int(kept.sum())
        edges = np.asarray(HIST_EDGES)
        at = np.searchsorted(edges, n_tok, side="right") - 1
        for i in np.unique(at[kept_docs]).tolist():
            here = kept_docs & (at == i)
            c[f"hist.documents.{edges[i]}"] += int(rep[here].sum())
            c[f"hist.tokens.{edges[i]}"] += int(kept[here].sum())
    for reason, k in Counter(
        r.split(":")[0] for r, keep in zip(reasons, kept_docs.tolist(), strict=True) if not keep
    ).items():
        c[f"dropped.{reason}"] += k


def judge_batch(
    stage: StageRecipe, batch: pa.RecordBatch
) -> tuple[dict[str, pa.Array], np.ndarray, list[str], list[str | None]]:
    """Labels, weight and drop reason of every scan row in a batch, column by column.

    Returns the labels per group (source, family, lang, domain, edu; no length bucket)
    as Arrow string arrays,
    the weights before length scaling (0 for a dropped row), the drop reasons ("" when
    none) and each row's length bucket (None: none, or the stage has no buckets).
    Reasons in priority order: ``safety:<first flag>``, ``edu_score``, ``lang_score``,
    ``min_tokens``, ``length``, then ``weight_zero`` for a weight of 0.
    """
    n = batch.num_rows

    def col(name: str) -> list:
        return batch.column(name).to_pylist()

    labels = {
        "source": batch.column("source").cast(pa.string()),
        "family": batch.column("family").cast(pa.string()),
        "lang": pc.fill_null(batch.column("lang"), UNKNOWN),
        "domain": pc.fill_null(batch.column("domain"), UNKNOWN),
        "edu": edu_buckets(batch.column("edu_score")),
    }
    sizes = pc.fill_null(batch.column("cluster_size"), 1).to_numpy(zero_copy_only=False)
    sizes = np.where(sizes == 0, 1, sizes)
    distinct, at = np.unique(sizes, return_inverse=True)
    w = np.array([stage.cluster_weight(int(x)) for x in distinct], np.float64)[at]
    for group, labs in labels.items():  # the order of judge's products: same rounding
        codes = pc.dictionary_encode(labs)
        table = [stage.weight(group, lab) for lab in codes.dictionary.to_pylist()]
        w *= np.array(table, np.float64)[codes.indices.to_numpy(zero_copy_only=False)]

    f = stage.filters
    reasons = np.full(n, "", dtype=object)  # lowest priority first, later rules overwrite
    n_tok = batch.column("n_tokens").to_numpy()
    buckets: list[str | None] = [None] * n
    if stage.length_buckets:
        buckets = [length_bucket(stage, k) for k in n_tok.tolist()]
        reasons[np.array([b is None for b in buckets], dtype=bool)] = "length"
    reasons[n_tok < f.min_tokens] = "min_tokens"
    if f.min_lang_score > 0:
        scores = np.array([x or 0.0 for x in col("lang_score")])
        reasons[scores < f.min_lang_score] = "lang_score"
    if f.min_edu_score > 0:
        scores = np.array([x or 0.0 for x in col("edu_score")])
        reasons[scores < f.min_edu_score] = "edu_score"
    if f.drop_flags:
        drop = set(f.drop_flags)
        for i, flags in enumerate(col("flags")):
            hit = drop.intersection(flags or ())
            if hit:
                reasons[i] = "safety:" + min(hit)
    reasons = reasons.tolist()
    for i in np.flatnonzero(w == 0):
        if not reasons[i]:
            reasons[i] = "weight_zero"
    w[[bool(r) and r != "weight_zero" for r in reasons]] = 0.0
    return labels, w, reasons, buckets


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
    per: dict[str, list[tuple[int, float, float]]] = {b.name: [] for b in stage.length_buckets}
    for path, _ in scan.shard_infos():
        for batch in iter_batches(scan.fs, path, columns=LABEL_COLUMNS):
            _, weights, reasons, buckets = judge_batch(stage, batch)
            n_tok = batch.column("n_tokens").to_pylist()
            doc_ids = batch.column("doc_id").to_pylist()
            rows = zip(n_tok, weights.tolist(), reasons, buckets, doc_ids, strict=True)
            for n, w, reason, bucket, doc_id in rows:
                if reason or w == 0:
                    continue
                per[bucket].append((n, w, uniform(seed, stage.name, doc_id)))
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
