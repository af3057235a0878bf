"""Connected components of a duplicate-pair DataFrame, in Spark: large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Edges are
kept oriented from the larger node to the smaller (``src > dst``). Two operations
alternate, each a groupBy and a join, and both keep every component connected:

  large-star  for each node u, m(u) = the smallest of u and its neighbours; every
              neighbour v > u is re-linked to m(u).
  small-star  for each node u, m(u) = its smallest (smaller) neighbour; u and every
              other smaller neighbour of u are re-linked to m(u).

The fixed point is a star forest: every edge goes from a node to the smallest node of
its component, and no edge ends at a node that has an edge of its own. That test is one
semi-join per round; the expected number of rounds is O(log^2 n), and on LSH pairs (all
pairs of a bucket point at its smallest document already) two or three rounds do.

The edge DataFrame is checkpointed after each round (``checkpoint``), so the plan
Spark re-optimises stays one round long instead of growing with every iteration; the
pairs never leave the executors. The root of a component is its smallest node, the
tie-break of ``pipelines/dedup/cluster.py``: the document first in (shard, row) order.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

MAX_ROUNDS = 64


def large_star(edges: DataFrame) -> DataFrame:
    both = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        edges.select(F.col("dst").alias("u"), F.col("src").alias("v"))
    )
    low = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (
        both.join(low, "u")
        .where(F.col("v") > F.col("u"))
        .select(F.col("v").alias("src"), F.col("m").alias("dst"))
        .distinct()
    )


def small_star(edges: DataFrame) -> DataFrame:
    low = edges.groupBy("src").agg(F.min("dst").alias("m"))
    relinked = (
        edges.join(low, "src")
        .where(F.col("dst") != F.col("m"))
        .select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    )
    return relinked.unionByName(low.select("src", F.col("m").alias("dst"))).distinct()


def is_star_forest(edges: DataFrame) -> bool:
    """True when no edge ends at a node that is itself the start of an edge."""
    inner = edges.select(F.col("dst").alias("node")).join(
        edges.select(F.col("src").alias("node")), "node", "leftsemi"
    )
    return inner.limit(1).count() == 0


def connected_components(
    edges: DataFrame, checkpoint: Callable[[DataFrame], DataFrame]
) -> tuple[DataFrame, int]:
    """(node, root) of every node that is not its component's root, and the rounds taken.

    ``edges`` has long columns ``src > dst``; ``checkpoint`` cuts the lineage of a
    round's result (e.g. ``lambda df: df.checkpoint()``).
    """
    current = checkpoint(edges.select("src", "dst").distinct())
    for rounds in range(1, MAX_ROUNDS + 1):
        current = checkpoint(small_star(large_star(current)))
        if is_star_forest(current):
            return current.select(F.col("src").alias("node"), F.col("dst").alias("root")), rounds
    raise RuntimeError(
        f"connected components did not converge in {MAX_ROUNDS} large-star/small-star "
        "rounds; the pair graph is unusually deep: check the band settings"
    )
