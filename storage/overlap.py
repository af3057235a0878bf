"""Overlapping a task's reading, processing and writing with threads.

A stage task reads batches (Parquet decoding), processes them (tokenising, fastText,
MinHash) and writes its shard (Parquet encoding, compression, checksum). Each step
spends most of its time in native code that releases the GIL, so running the reading
and the writing in threads of their own, a couple of batches ahead and behind, hides
them behind the processing: in ``bench/tokenize.py`` the scan of 24 MB of text,
tokenising bound, went from ~0.25 s to ~0.1 s more than tokenising alone. The
results are the same, byte for byte, and in the same order; errors are raised in the
calling thread, and a failed producer never leaves a shard behind.
"""

from __future__ import annotations

import posixpath
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import pyarrow as pa

from storage.fs import Filesystem
from storage.manifest import ShardInfo
from storage.shards import write_shard

T = TypeVar("T")


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` produced in a thread, up to ``depth`` ahead of the consumer.

    Closing the returned generator early stops the thread (and closes ``items``)."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(msg: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer
            put((False, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            more, value = q.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


_END, _ABORT = object(), object()


class _ProducerFailed(Exception):
    """Raised inside the writer thread when the batches' producer failed: no shard."""


def write_shard_behind(
    fs: Filesystem,
    path: str,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    bulk_columns: Sequence[str] = (),
    depth: int = 2,
) -> ShardInfo:
    """``write_shard`` with the writing in a second thread, ``depth`` batches behind.

    Batches are produced here (a stage reading and tokenising or classifying) while the
    writer thread encodes, compresses and writes the previous ones; both halves spend
    most of their time in native code that releases the GIL (pyarrow, tiktoken,
    fastText), so they overlap. Same bytes as ``write_shard``. If producing fails, the
    writer is told to abort and nothing is renamed into place; a writer error is
    raised here once the producer has stopped."""
    q: queue.Queue = queue.Queue(depth)
    result: dict = {}
    ended = threading.Event()  # the writer has taken the producer's last message

    def fed():
        while True:
            item = q.get()
            if item is _END or item is _ABORT:
                ended.set()
                if item is _ABORT:
                    raise _ProducerFailed()
                return
            yield item

    def write() -> None:
        try:
            result["info"] = write_shard(fs, path, fed(), schema, bulk_columns)
        except BaseException as exc:  # noqa: BLE001 - handed to the producer's thread
            result["error"] = exc
            while not ended.is_set():  # keep taking batches so the producer never blocks
                item = q.get()
                if item is _END or item is _ABORT:
                    ended.set()

    writer = threading.Thread(target=write, name=f"write {posixpath.basename(path)}")
    writer.start()
    finished = False
    try:
        for batch in batches:
            if "error" in result:
                break
            q.put(batch)
        finished = True
    finally:
        q.put(_END if finished else _ABORT)
        writer.join()
    if "error" in result and not isinstance(result["error"], _ProducerFailed):
        raise result["error"]
    return result["info"]
