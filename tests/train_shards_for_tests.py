"""Writes token shards by the tokens-stage contract, for the training tests.

Built from the contract text, not from pipelines/tokens/, so the reader in train/data.py
is checked against the specification: ``<part>.bin/.idx`` Megatron MMapIndexedDataset
(magic, version 1, dtype code, item and document counts, int32 sizes, int64 byte
pointers, int64 document index) with one item per seq_len-token sequence, and the
``<part>.seg.bin/.idx`` sidecar of int32 segment lengths (n: document tokens, -n:
padding of id 151643), plus a ``_manifest.json`` with ``config.seq_len``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from storage.fs import Filesystem
from storage.manifest import Manifest

PAD_ID = 151643
CODES = {np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.uint16): 8}


def write_indexed(prefix: Path, items: list[np.ndarray], dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if any(len(x) and int(np.max(x)) > np.iinfo(dtype).max for x in items):
        raise ValueError(f"{prefix}: token ids do not fit {dtype}; write wider shards")
    sizes = np.array([len(x) for x in items], np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))[:-1]]) * dtype.itemsize
    Path(f"{prefix}.bin").write_bytes(b"".join(np.asarray(x, dtype).tobytes() for x in items))
    header = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, CODES[dtype], len(items), len(items) + 1)
    doc_idx = np.arange(len(items) + 1, dtype=np.int64)
    body = sizes.tobytes() + pointers.astype(np.int64).tobytes() + doc_idx.tobytes()
    Path(f"{prefix}.idx").write_bytes(header + body)


def pack(docs: list[np.ndarray], seq_len: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Greedy packing: long documents split across sequences, short ones that do not fit
    move to the next sequence (the rest is padding), the last sequence is padded."""
    seqs, segs, cur, cur_segs = [], [], [], []
    for doc in docs:
        doc = list(doc)
        while doc:
            room = seq_len - len(cur)
            if len(doc) > room and len(doc) <= seq_len // 4:
                cur_segs.append(-room)
                cur += [PAD_ID] * room
                room = 0
            else:
                take = doc[:room]
                doc = doc[room:]
                cur += take
                cur_segs.append(len(take))
                room -= len(take)
            if room == 0:
                seqs.append(np.array(cur))
                segs.append(np.array(cur_segs))
                cur, cur_segs = [], []
    if cur:
        cur_segs.append(-(seq_len - len(cur)))
        cur += [PAD_ID] * (seq_len - len(cur))
        seqs.append(np.array(cur))
        segs.append(np.array(cur_segs))
    return seqs, segs


def write_stage(
    folder: Path, docs: list[np.ndarray], seq_len: int, parts: int = 2, dtype=np.int32
) -> int:
    """Packs ``docs`` into ``parts`` part files under ``folder``; returns the sequence count."""
    folder.mkdir(parents=True, exist_ok=True)
    seqs, segs = pack(docs, seq_len)
    bounds = np.linspace(0, len(seqs), parts + 1).astype(int)
    for p in range(parts):
        lo, hi = bounds[p], bounds[p + 1]
        write_indexed(folder / f"part-{p:05d}", seqs[lo:hi], dtype)
        write_indexed(folder / f"part-{p:05d}.seg", segs[lo:hi], np.int32)
    Manifest(stage="tokens", version="test", config={"seq_len": seq_len}, kind="tokens").write(
        Filesystem(str(folder)), str(folder)
    )
    return len(seqs)


def random_docs(n: int, vocab: int, seed: int, lo: int = 5, hi: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, rng.integers(lo, hi)) for _ in range(n)]


def unpadded_docs(n: int, vocab: int, seed: int, seq_len: int) -> list[np.ndarray]:
    """Documents that pack with no padding at all (none short, the total a multiple of
    seq_len): shards a small-vocabulary model can read, the pad id never appears."""
    docs = random_docs(n, vocab, seed, lo=seq_len // 4 + 1, hi=3 * seq_len)
    docs[-1] = docs[-1][: len(docs[-1]) - sum(map(len, docs)) % seq_len]
    return docs
