"""Duplicate pairs -> clusters: connected components over document keys, vectorised.

A document key is ``shard_index << 32 | row`` (its place in the input, in manifest
order). The components are found by hooking and pointer jumping (Shiloach-Vishkin
style) in numpy: every node points at the smallest node it is known to be joined
with, until no pair joins two different roots. Each component's root is therefore its
smallest key, i.e. the document that comes first in (shard, row) order: that one is
kept, which makes the choice deterministic and agrees with exact dedup (first copy
kept). Memory and time are linear in the number of pairs, which is far smaller than
the number of documents: only documents that share a band bucket appear.
"""

from __future__ import annotations

import numpy as np


def connected_components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, roots): the sorted distinct keys of the pairs, and each one's component root.

    The root of a component is its smallest key.
    """
    nodes = np.unique(np.concatenate([a, b]).astype(np.int64))
    u = np.searchsorted(nodes, a)
    v = np.searchsorted(nodes, b)
    label = np.arange(nodes.size)  # invariant: label[i] <= i, and in i's component
    while True:
        lu, lv = label[u], label[v]
        if np.array_equal(lu, lv):
            break
        low = np.minimum(lu, lv)
        np.minimum.at(label, lu, low)  # hook the larger root under the smaller
        np.minimum.at(label, lv, low)
        while True:  # pointer jumping until every node points at a root
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
    return nodes, nodes[label]


def cluster_sizes(roots: np.ndarray) -> np.ndarray:
    """Size of the component of each node (``roots`` as returned above)."""
    _, inverse, counts = np.unique(roots, return_inverse=True, return_counts=True)
    return counts[inverse]


def doc_key(shard: np.ndarray | int, row: np.ndarray) -> np.ndarray:
    return (np.int64(shard) << np.int64(32)) | row.astype(np.int64)


def split_key(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard index, row) of each key."""
    return key >> np.int64(32), key & np.int64(0xFFFFFFFF)
