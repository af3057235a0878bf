"""Megatron-compatible indexed datasets: ``<prefix>.bin`` + ``<prefix>.idx``.

The format is Megatron-LM's MMapIndexedDataset (index version 1):

    .bin  the items' int32 values, back to back, little-endian
    .idx  b"MMIDIDX\\x00\\x00"  magic (9 bytes)
          <Q 1                   version
          <B 4                   dtype code (4 = int32)
          <Q count               number of items (sequences)
          <Q doc_count           length of the document index
          int32[count]           sizes: values per item
          int64[count]           pointers: byte offset of each item in .bin
          int64[doc_count]       document index: item indices where documents start,
                                 from 0, ending with count

In a stage export every item is one training sequence, and every sequence is its own
"document" for Megatron (document index = 0..count). The same format holds the
``.seg`` sidecar (item i = segment lengths of sequence i).

Writes are atomic: both files go to temporary names and are renamed (``.bin`` first,
``.idx`` last) only when the writer is closed without error, so a killed writer
leaves no part that looks complete. The reader here is for our own checks and tools;
tests read the files back with an independent reader written from the spec above.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from storage.fs import Filesystem
from storage.manifest import ShardInfo

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODE_INT32 = 4


def index_bytes(sizes: np.ndarray) -> bytes:
    """The .idx content for items of these sizes (int32 values each)."""
    sizes = np.asarray(sizes, dtype="<i4")
    count = len(sizes)
    pointers = np.zeros(count, dtype="<i8")
    if count:
        np.cumsum(sizes[:-1].astype("<i8") * 4, out=pointers[1:])
    doc_idx = np.arange(count + 1, dtype="<i8")
    header = MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", DTYPE_CODE_INT32)
    header += struct.pack("<Q", count) + struct.pack("<Q", len(doc_idx))
    return header + sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes()


@dataclass
class WrittenDataset:
    """What a closed writer produced: the two files' infos (rows = items)."""

    bin: ShardInfo
    idx: ShardInfo


class IndexedWriter:
    """Streams int32 items into ``<prefix>.bin`` and writes ``<prefix>.idx`` on close.

    Use as a context manager; on an exception nothing is renamed into place.
    """

    def __init__(self, fs: Filesystem, prefix: str):
        self.fs, self.prefix = fs, prefix
        self.sizes: list[int] = []  # values per item
        self.result: WrittenDataset | None = None

    def __enter__(self) -> IndexedWriter:
        self._bin_ctx = self.fs.atomic_writer(self.prefix + ".bin")
        self._bin = self._bin_ctx.__enter__()
        self._sha = hashlib.sha256()
        self._nbytes = 0
        return self

    def add(self, item: np.ndarray) -> None:
        self.add_many(item, [len(item)])

    def add_many(self, values: np.ndarray, sizes) -> None:
        """Items back to back in one buffer: item i is the next ``sizes[i]`` values."""
        data = memoryview(np.ascontiguousarray(values, dtype="<i4")).cast("B")  # no copy
        if len(data) != 4 * int(np.sum(sizes)):
            raise ValueError(f"{len(data) // 4} values for items of {int(np.sum(sizes))} in all")
        self._bin.write(data)
        self._sha.update(data)
        self._nbytes += len(data)
        self.sizes.extend(np.asarray(sizes, np.int64).tolist())

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is not None:
            return self._bin_ctx.__exit__(exc_type, exc, tb)
        self._bin_ctx.__exit__(None, None, None)
        idx = index_bytes(np.array(self.sizes, dtype=np.int64))
        self.fs.write_bytes(self.prefix + ".idx", idx)
        name = self.prefix.rsplit("/", 1)[-1]
        n = len(self.sizes)
        self.result = WrittenDataset(
            bin=ShardInfo(name + ".bin", n, self._nbytes, self._sha.hexdigest()),
            idx=ShardInfo(name + ".idx", n, len(idx), hashlib.sha256(idx).hexdigest()),
        )
        return None


class IndexedDataset:
    """Reads ``<prefix>.bin/.idx`` (local files), memory-mapped."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        with open(prefix + ".idx", "rb") as f:
            raw = f.read()
        if raw[:9] != MAGIC:
            raise ValueError(f"{prefix}.idx: not a Megatron index (magic {raw[:9]!r})")
        version, code = struct.unpack_from("<QB", raw, 9)
        if version != VERSION or code != DTYPE_CODE_INT32:
            raise ValueError(
                f"{prefix}.idx: version {version}, dtype code {code}; "
                f"this reader handles version {VERSION} with int32 (code 4)"
            )
        count, doc_count = struct.unpack_from("<QQ", raw, 18)
        off = 34
        self.sizes = np.frombuffer(raw, "<i4", count, off)
        self.pointers = np.frombuffer(raw, "<i8", count, off + 4 * count)
        self.doc_idx = np.frombuffer(raw, "<i8", doc_count, off + 12 * count)
        self._bin = np.memmap(prefix + ".bin", dtype="<i4", mode="r") if count else None

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // 4
        return self._bin[start : start + int(self.sizes[i])]
