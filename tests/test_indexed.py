"""Megatron indexed datasets: what the writer produces is read back by an independent reader.

``read_megatron`` below is written from the format's description (Megatron-LM's
MMapIndexedDataset, index version 1) with ``struct`` and plain byte slicing; it shares
no code with pipelines/tokens/indexed.py.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from pipelines.tokens.indexed import IndexedDataset, IndexedWriter
from storage.fs import open_fs


def read_megatron(prefix: str) -> tuple[list[list[int]], list[int]]:
    """(items, document index) from <prefix>.idx/.bin, straight from the spec."""
    idx = Path(prefix + ".idx").read_bytes()
    data = Path(prefix + ".bin").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack("<Q", idx[9:17])
    (dtype_code,) = struct.unpack("<B", idx[17:18])
    count, doc_count = struct.unpack("<QQ", idx[18:34])
    assert (version, dtype_code) == (1, 4)  # version 1, int32
    pos = 34
    sizes = list(struct.unpack(f"<{count}i", idx[pos : pos + 4 * count]))
    pos += 4 * count
    pointers = list(struct.unpack(f"<{count}q", idx[pos : pos + 8 * count]))
    pos += 8 * count
    doc_idx = list(struct.unpack(f"<{doc_count}q", idx[pos : pos + 8 * doc_count]))
    assert pos + 8 * doc_count == len(idx)
    items = [
        list(struct.unpack(f"<{n}i", data[p : p + 4 * n]))
        for n, p in zip(sizes, pointers, strict=True)
    ]
    assert sum(sizes) * 4 == len(data)
    return items, doc_idx


def write(tmp_path: Path, items: list[np.ndarray], name: str = "part-00000"):
    fs = open_fs(str(tmp_path))
    with IndexedWriter(fs, fs.path(name)) as w:
        for item in items:
            w.add(item)
    return w, str(tmp_path / name)


def test_round_trip_through_independent_reader(tmp_path: Path):
    rng = np.random.default_rng(7)
    items = [rng.integers(0, 151669, 4096, dtype=np.int32) for _ in range(5)]
    items += [np.array([5, -3, -4088], dtype=np.int32), np.array([], dtype=np.int32)]
    w, prefix = write(tmp_path, items)
    got, doc_idx = read_megatron(prefix)
    assert got == [i.tolist() for i in items]
    assert doc_idx == list(range(len(items) + 1))  # every item its own document
    assert w.result.bin.rows == len(items) == w.result.idx.rows
    assert w.result.bin.bytes == os.path.getsize(prefix + ".bin")
    ours = IndexedDataset(prefix)
    assert len(ours) == len(items)
    assert [ours[i].tolist() for i in range(len(ours))] == [i.tolist() for i in items]


def test_empty_dataset(tmp_path: Path):
    _, prefix = write(tmp_path, [])
    assert read_megatron(prefix) == ([], [0])
    assert len(IndexedDataset(prefix)) == 0


def test_failed_writer_leaves_nothing(tmp_path: Path):
    fs = open_fs(str(tmp_path))
    with pytest.raises(RuntimeError, match="killed"):
        with IndexedWriter(fs, fs.path("part-00001")) as w:
            w.add(np.arange(10, dtype=np.int32))
            raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []


def test_reader_rejects_other_formats(tmp_path: Path):
    (tmp_path / "x.idx").write_bytes(b"NOTMMIDX" + bytes(40))
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not a Megatron index"):
        IndexedDataset(str(tmp_path / "x"))
