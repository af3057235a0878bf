"""storage/overlap.py: the read-ahead and write-behind threads a runner task uses.

Real Parquet shards on disk: the write-behind shard must be byte-identical to the
plain writer's, a failing producer must leave no shard (and no temp file), a failing
writer must surface in the caller without blocking it, and the read-ahead must keep
order, raise where the source raised and stop its thread when closed early.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pytest

from storage.fs import TMP_PREFIX, open_fs
from storage.overlap import read_ahead, write_shard_behind
from storage.shards import read_shard, write_shard

SCHEMA = pa.schema([pa.field("n", pa.int64()), pa.field("text", pa.string())])


def batches(count: int, fail_at: int | None = None):
    for i in range(count):
        if i == fail_at:
            raise RuntimeError(f"producer failed at batch {i}")
        rows = range(i * 100, i * 100 + 100)
        yield pa.record_batch(
            [pa.array(list(rows), pa.int64()), pa.array([f"row {r} ü" for r in rows])],
            schema=SCHEMA,
        )


def test_write_behind_writes_the_same_bytes(tmp_path):
    fs = open_fs(str(tmp_path))
    plain = write_shard(fs, str(tmp_path / "plain.parquet"), batches(7), SCHEMA)
    behind = write_shard_behind(fs, str(tmp_path / "behind.parquet"), batches(7), SCHEMA)
    assert (behind.rows, behind.bytes, behind.sha256) == (700, plain.bytes, plain.sha256)
    assert (tmp_path / "behind.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    assert read_shard(fs, str(tmp_path / "behind.parquet")).column("n").to_pylist() == list(
        range(700)
    )


def test_write_behind_failed_producer_leaves_no_shard(tmp_path):
    fs = open_fs(str(tmp_path))
    with pytest.raises(RuntimeError, match="producer failed at batch 5"):
        write_shard_behind(fs, str(tmp_path / "s.parquet"), batches(9, fail_at=5), SCHEMA)
    assert os.listdir(tmp_path) == []  # neither the shard nor a temp file
    assert not [t for t in threading.enumerate() if t.name.startswith("write ")]


def test_write_behind_writer_error_reaches_the_caller(tmp_path):
    fs = open_fs(str(tmp_path))
    wrong = pa.record_batch([pa.array(["not a number"])], names=["n"])
    produced = []

    def feed():
        for i, b in enumerate(batches(3)):
            produced.append(i)
            yield b
        yield wrong  # cannot be cast to SCHEMA: the writer thread fails
        for i in range(3, 40):  # many more than the queue holds: the caller must not block
            produced.append(i)
            yield next(batches(1))

    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, ValueError, KeyError)):
        write_shard_behind(fs, str(tmp_path / "s.parquet"), feed(), SCHEMA)
    assert not (tmp_path / "s.parquet").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(TMP_PREFIX)]
    assert len(produced) < 40  # the producer stopped soon after the writer failed


def test_read_ahead_keeps_order_and_raises_where_the_source_did():
    assert list(read_ahead(iter(range(1000)), depth=3)) == list(range(1000))

    def source():
        yield from range(5)
        raise ValueError("bad record 5")

    got = []
    with pytest.raises(ValueError, match="bad record 5"):
        for x in read_ahead(source()):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_read_ahead_closed_early_stops_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    it = read_ahead(source(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]
