"""TokenBatch: documents that are already tokenised, column-wise, as the exporter's fast input.

``mix/scan`` keeps every document's token ids (a Parquet large_list<int32> column, i.e.
one values buffer plus offsets), so a stage's export needs no tokeniser: a batch of
selected documents arrives as those two arrays plus doc ids, repeats and labels, and
``export_stage`` spills it with array operations instead of a Python loop per document.
A document's ids are ``values[offsets[i]:offsets[i + 1]]`` and end with <|endoftext|>.

``plan`` computes what the exporter's pass 1 needs from a batch: the kept documents'
tokens (dropped ones, repeats 0, are cut out), their offsets and lengths, the
(part, key, doc, copy) table of copies and the counters, all equal to what the
per-document path (``export._tokenize_batch`` on the same documents as text) yields.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import xxhash


@dataclass
class TokenBatch:
    doc_ids: list[str]
    offsets: np.ndarray  # int64[n + 1]; absolute positions in ``values``
    values: np.ndarray  # int32 token ids
    repeats: np.ndarray  # int64[n], >= 0
    labels: Mapping[str, pa.Array] = field(default_factory=dict)  # name -> string[n], nulls ok

    def __len__(self) -> int:
        return len(self.doc_ids)

    def rows(self) -> Iterator[tuple[str, np.ndarray, int, dict[str, str]]]:
        """Per document: (doc_id, ids, repeats, labels without nulls); for reading, not speed."""
        labels = {k: v.to_pylist() for k, v in self.labels.items()}
        for i, doc_id in enumerate(self.doc_ids):
            ids = self.values[self.offsets[i] : self.offsets[i + 1]]
            row_labels = {k: v[i] for k, v in labels.items() if v[i] is not None}
            yield doc_id, ids, int(self.repeats[i]), row_labels

    def digest(self) -> str:
        """Content hash (ids, doc ids, repeats, labels) that names the batch for resume."""
        h = xxhash.xxh3_128()
        h.update("\0".join(self.doc_ids).encode("utf-8", "surrogatepass"))
        h.update(np.ascontiguousarray(self.repeats, "<i8").tobytes())
        h.update(np.ascontiguousarray(np.diff(self.offsets), "<i8").tobytes())
        lo, hi = (int(self.offsets[0]), int(self.offsets[-1])) if len(self) else (0, 0)
        h.update(np.ascontiguousarray(self.values[lo:hi], "<i4").tobytes())
        for name in sorted(self.labels):
            h.update(f"\0{name}\0".encode())
            h.update("\0".join(map(str, self.labels[name].to_pylist())).encode())
        return "tb-" + h.hexdigest()


@dataclass
class Plan:
    tokens: np.ndarray  # int32: the kept documents' ids, concatenated
    offsets: np.ndarray  # int64[kept]: start of each kept document in ``tokens``
    lengths: np.ndarray  # int64[kept]
    copies: np.ndarray  # uint64[copies, 4]: (part, key, doc, copy), rows sorted
    doc_ids: list[str]  # of the kept documents
    counters: Counter


def copy_key(seed: int, doc_id: str, copy: int) -> int:
    """Where copy ``copy`` of a document lands: part = key % parts, order in the part = key."""
    return xxhash.xxh3_64_intdigest(f"{doc_id}\0{copy}".encode(), seed=seed)


def _kept_tokens(values: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept documents' ids back to back: one slice per run of consecutive documents
    (all of a batch, usually: a view, no copy)."""
    if len(keep) == 0:
        return np.zeros(0, np.int32)
    cut = np.flatnonzero(np.diff(keep) != 1) + 1
    lo = offsets[keep[np.r_[0, cut]]].tolist()
    hi = offsets[keep[np.r_[cut - 1, len(keep) - 1]] + 1].tolist()
    runs = [values[a:b] for a, b in zip(lo, hi, strict=True)]
    return np.ascontiguousarray(runs[0] if len(runs) == 1 else np.concatenate(runs), np.int32)


def plan(tb: TokenBatch, seed: int, parts: int, eot_id: int) -> Plan:
    n = len(tb)
    repeats = np.asarray(tb.repeats, np.int64)
    offsets = np.asarray(tb.offsets, np.int64)
    lengths_all = offsets[1:] - offsets[:-1]
    if len(repeats) != n or len(offsets) != n + 1 or (repeats < 0).any():
        raise ValueError(f"TokenBatch of {n} documents: offsets/repeats do not match or < 0")
    last = tb.values[np.maximum(offsets[1:] - 1, 0)] if len(tb.values) else np.zeros(n, np.int32)
    empty = (lengths_all == 1) & (last == eot_id)  # only <|endoftext|>: an empty text
    keep = np.flatnonzero((repeats > 0) & ~empty)
    lengths = lengths_all[keep]
    bad = np.flatnonzero((lengths < 1) | (last[keep] != eot_id))
    if len(bad):
        i = int(keep[bad[0]])
        raise ValueError(
            f"document {tb.doc_ids[i]!r}: pre-tokenised ids must end with <|endoftext|> ({eot_id})"
        )
    starts = np.zeros(len(keep), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    total = int(lengths.sum())
    tokens = _kept_tokens(tb.values, offsets, keep)

    kept_ids = [tb.doc_ids[i] for i in keep.tolist()]
    reps = repeats[keep]
    doc = np.repeat(np.arange(len(keep), dtype=np.uint64), reps)
    first = np.repeat(np.cumsum(reps) - reps, reps)  # index of each document's copy 0
    copy = (np.arange(len(doc), dtype=np.int64) - first).astype(np.uint64)
    keys = np.fromiter(
        (copy_key(seed, kept_ids[d], c) for d, c in zip(doc.tolist(), copy.tolist(), strict=True)),
        np.uint64,
        len(doc),
    )
    table = np.stack([keys % np.uint64(parts), keys, doc, copy.astype(np.uint64)], axis=1)
    table = table[np.lexsort(table.T[::-1])] if len(table) else table.reshape(0, 4)

    c: Counter = Counter()
    c["documents_in"] += n
    c["documents_empty"] += int(empty.sum())  # as the text path counts them
    c["documents_dropped"] += int(((repeats == 0) & ~empty).sum())
    c["documents"] += len(keep)
    c["document_copies"] += int(reps.sum())
    c["tokens_unique"] += total
    weighted = lengths * reps
    c["tokens"] += int(weighted.sum())
    for name, arr in tb.labels.items():
        kept = arr.take(pa.array(keep))
        sums = (
            pa.table({"label": kept, "tokens": pa.array(weighted)})
            .group_by("label")
            .aggregate([("tokens", "sum")])
        )
        for label, value in zip(
            sums.column("label").to_pylist(), sums.column("tokens_sum").to_pylist(), strict=True
        ):
            if label is not None:
                c[f"tokens.{name}={label}"] += value
    return Plan(
        tokens, starts, lengths, table, kept_ids, Counter({k: v for k, v in c.items() if v})
    )
