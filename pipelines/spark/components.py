"""Connected components of a duplicate-pair DataFrame, in Spark: large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Edges are
kept oriented from the larger node to the smaller (``src > dst``). Two operations
alternate, and both keep every component connected:

  large-star  for each node u, m(u) = the smallest of u and its neighbours; every
              neighbour v > u is re-linked to m(u).
  small-star  for each node u, m(u) = its smallest (smaller) neighbour; u and every
              other smaller neighbour of u are re-linked to m(u).

Each operation is one hash exchange (by u) and one numpy pass per partition
(``mapInArrow``: sort the partition's edges by node, then per-run minima), so a round
is one Spark job of three stages; the grouped edges never leave the executors.

The fixed point is a star forest: every node has at most one distinct out-edge and no
node has both an out-edge and an in-edge; the root of each star is then its
component's smallest node. The large-star pass sees, for each node it owns, all of its
edges in both directions, so it counts the nodes of its *input* that break that rule
(an accumulator: a task that is run again can only add, so a total of zero is exact).
The loop ends with the first round whose input had none: that input is the answer and
the round's own output, the same star forest, is dropped; so the check costs one round,
and the rounds reported are those whose output was used. The expected number of rounds
is O(log^2 n); on LSH pairs, where every pair of a bucket already points at its
smallest document, zero to three.

Each round's edges are persisted (memory, then disk) and counted, which cuts the
query plan to one round; every ``CHECKPOINT_EVERY`` rounds they are also checkpointed
to the context's checkpoint folder (when one is set), so a long iteration does not
keep an ever longer lineage to recompute after an executor is lost. The root of a
component is its smallest node, the tie-break of ``pipelines/dedup/cluster.py``: the
document first in (shard, row) order. The links may repeat a (node, root) row; the
caller drops repeats where it groups them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.accumulators import Accumulator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

MAX_ROUNDS = 64
CHECKPOINT_EVERY = 4
EDGE_DDL = "src long, dst long"


def sorted_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs, sorted by a, then b."""
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(a.size, bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def runs(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a sorted key: the index of each run's first element, and each element's run."""
    starts = np.ones(key.size, bool)
    starts[1:] = key[1:] != key[:-1]
    first = np.flatnonzero(starts)
    return first, np.cumsum(starts) - 1


def columns(batches: Iterator[pa.RecordBatch], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    parts = list(batches)
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = pa.Table.from_batches(parts)
    return (
        t.column(a).to_numpy().astype(np.int64, copy=False),
        t.column(b).to_numpy().astype(np.int64, copy=False),
    )


def _edges(src: np.ndarray, dst: np.ndarray) -> Iterator[pa.RecordBatch]:
    if src.size:
        yield pa.RecordBatch.from_arrays([pa.array(src), pa.array(dst)], ["src", "dst"])


def _large_star(violations: Accumulator):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # (u, v): both directions of every edge; all of a node u's rows are here
        u, v = sorted_pairs(*columns(batches, "u", "v"))
        if not u.size:
            return
        first, run_of = runs(u)
        smaller = np.bincount(run_of, weights=v < u, minlength=first.size)
        larger = np.bincount(run_of, weights=v > u, minlength=first.size)
        violations.add(int(np.count_nonzero((smaller > 1) | ((smaller > 0) & (larger > 0)))))
        m = np.minimum(u[first], v[first])[run_of]  # v sorted within u: the first is the least
        up = v > u
        yield from _edges(v[up], m[up])

    return run


def _small_star(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    src, dst = sorted_pairs(*columns(batches, "src", "dst"))
    if not src.size:
        return
    first, run_of = runs(src)
    m = dst[first][run_of]  # the least neighbour of each src
    other = dst != m
    yield from _edges(
        np.concatenate([src[first], dst[other]]), np.concatenate([dst[first], m[other]])
    )


def star_round(edges: DataFrame, violations: Accumulator, partitions: int) -> DataFrame:
    """small-star(large-star(edges)); ``violations`` counts the non-star nodes of ``edges``."""
    both = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        edges.select(F.col("dst").alias("u"), F.col("src").alias("v"))
    )
    large = both.repartition(partitions, "u").mapInArrow(_large_star(violations), EDGE_DDL)
    return large.repartition(partitions, "src").mapInArrow(_small_star, EDGE_DDL)


def connected_components(edges: DataFrame, partitions: int = 0) -> tuple[DataFrame, int]:
    """The component links and the rounds taken.

    ``edges`` has long columns ``src > dst`` (repeats allowed) and should be persisted
    by the caller. The links are (src, dst) rows, one or more per node that is not its
    component's root, dst being that root: ``edges`` itself when it is a star forest
    already (0 rounds), else a frame persisted here; unpersist both when done.
    ``partitions``: of each exchange; 0 takes ``spark.sql.shuffle.partitions``.
    """
    spark = edges.sparkSession
    sc = spark.sparkContext
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    current = edges.select("src", "dst")
    for rounds in range(MAX_ROUNDS + 1):
        violations = sc.accumulator(0)
        after = star_round(current, violations, partitions).persist(StorageLevel.MEMORY_AND_DISK)
        if (rounds + 1) % CHECKPOINT_EVERY == 0 and sc.getCheckpointDir():
            cached, after = after, after.checkpoint(eager=True)  # written from the cache
            cached.unpersist()
        else:
            after.count()
        if violations.value == 0:  # ``current`` was a star forest already
            after.unpersist()
            return current, rounds
        if rounds:
            current.unpersist()
        current = after
    raise RuntimeError(
        f"connected components did not converge in {MAX_ROUNDS} large-star/small-star "
        "rounds; the pair graph is unusually deep: check the band settings"
    )
