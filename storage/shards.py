"""Writing and reading shard files (Parquet, zstd) atomically, with checksums.

A shard is written through ``Filesystem.atomic_writer`` so a writer killed midway
leaves only a hidden temp file that no reader lists; the sha256 is computed while
the bytes stream out, so the manifest never needs a second read.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Sequence
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import Filesystem
from storage.manifest import ManifestError, ShardInfo

ROW_GROUP_ROWS = 8192
WRITE_BUFFER = 4 << 20


class _HashingWriter:
    """File-like wrapper that hashes and counts what goes through it."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.n = 0
        self.closed = False
        self.discard = False

    def write(self, data: bytes) -> int:
        if self.discard:
            return len(data)
        data = bytes(data)
        self.sha.update(data)
        self.n += len(data)
        self.raw.write(data)
        return len(data)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:  # the atomic writer owns the real file
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def write_shard(
    fs: Filesystem,
    path: str,
    data: pa.Table | Iterable[pa.RecordBatch],
    schema: pa.Schema,
    bulk_columns: Sequence[str] = (),
) -> ShardInfo:
    """Write a Parquet shard atomically; returns its rows, bytes and sha256.

    ``bulk_columns``: large columns read and written in bulk (token ids): no dictionary,
    LZ4. On 18.6 MB of int32 ids of Python code: LZ4 6.8 MB, written in 0.039 s and
    read in 0.010 s; zstd level 1 4.9 MB, 0.066 s and 0.028 s (the default, dictionary
    and zstd 3, is ~3x slower still to write)."""
    rows = 0
    options: dict = {"compression": "zstd", "compression_level": 3}
    if bulk_columns:
        options["compression"] = {n: "lz4" if n in bulk_columns else "zstd" for n in schema.names}
        options["compression_level"] = {n: 3 for n in schema.names if n not in bulk_columns}
        options["use_dictionary"] = [n for n in schema.names if n not in bulk_columns]
    with fs.atomic_writer(path) as raw:
        sink = _HashingWriter(raw)
        # Parquet writes page by page; buffered in Arrow, the Python sink (hash + file)
        # is called once per few MB, not per page: fewer GIL round trips when the
        # writing runs beside a tokeniser (storage.overlap.write_shard_behind)
        stream = pa.output_stream(sink, buffer_size=WRITE_BUFFER)
        try:
            with pq.ParquetWriter(stream, schema, **options) as writer:
                batches = data.to_batches() if isinstance(data, pa.Table) else data
                for batch in batches:
                    if batch.num_rows == 0:
                        continue
                    if batch.schema != schema:
                        batch = pa.Table.from_batches([batch]).cast(schema).to_batches()[0]
                    writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
                    rows += batch.num_rows
        except BaseException:
            sink.discard = True  # the shard is abandoned: what is still buffered goes nowhere
            raise
        finally:
            stream.close()  # flushes into the sink
    return ShardInfo(posixpath.basename(path), rows, sink.n, sink.sha.hexdigest())


def read_shard(
    fs: Filesystem,
    path: str,
    columns: list[str] | None = None,
    expect: ShardInfo | None = None,
) -> pa.Table:
    """Read a shard; with ``expect`` the bytes are checked against its sha256 first."""
    if expect is not None:
        blob = fs.read_bytes(path)
        digest = hashlib.sha256(blob).hexdigest()
        if len(blob) != expect.bytes or digest != expect.sha256:
            raise ManifestError(
                f"{fs.uri(path)}: checksum mismatch (sha256 {digest[:12]}..., manifest "
                f"{expect.sha256[:12]}...); the shard is corrupt, re-run the stage that wrote it"
            )
        return pq.read_table(pa.BufferReader(blob), columns=columns)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def iter_batches(
    fs: Filesystem, path: str, columns: list[str] | None = None, batch_rows: int = 4096
):
    """Stream a shard as record batches without loading it whole.

    A local file is read by Arrow itself (no Python file object, no GIL per read: the
    reading overlaps the stage's work in ``storage.overlap.read_ahead``)."""
    with pa.OSFile(path, "rb") if fs.is_local else fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
