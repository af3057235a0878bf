"""export_stage: a stream of documents -> one tokenized, packed, sharded curriculum stage.

Input is what a mixer emits for one stage: ``(doc_id, text, repeats[, labels])`` in a
deterministic order, where ``repeats`` is how many times the recipe wants the document
(0 drops it) and ``labels`` an optional {name: value} map (source, language ...) that
token counts are broken down by. Documents already tokenised come as ``TokenBatch``
items in the same stream (token_batch.py; ``pipelines.mix.feed.stage_documents`` streams
``mix/scan``'s ids that way): pass 1 then spills them with array operations, no
tokeniser involved, and the output bytes are the same as for the text. Output, in
``out.folder``:

    part-00000.bin/.idx          sequences of exactly seq_len int32 ids (Megatron format)
    part-00000.seg.bin/.seg.idx  segment lengths per sequence (see pack.py)
    part-00000.docs.parquet      provenance: which document piece sits where
    _done/part-00000.json        per-part completion marker (resume)
    _manifest.json               written last

Two passes, both spread over processes and both resumable:
  1. tokenise  input batches (~``batch_chars`` characters of text) in worker processes; each
               copy of each document gets a seeded hash key that decides its part
               and its place in the part (a deterministic shuffle in which the
               copies of an upsampled document land far apart). Spill files and a
               marker per batch under ``_work/``.
  2. pack      each part in a worker: its copies sorted by key, placed into sequences
               on their lengths alone (``pack.placements``), the sequences built 4 MB
               at a time and written by a second thread while the next chunk is built,
               atomically (.bin/.idx, .seg.bin/.seg.idx, .docs.parquet), then the
               part's marker. The manifest comes last, then ``_work/`` is removed.
Spill files and batch markers are scratch: written without fsync, checked (xxh3) before
a rerun trusts them. Part files, part markers and the manifest are synced.
Every byte depends only on the input, the seed and the config, so a killed export
rerun with the same input skips finished batches and parts and ends with the same
bytes. The spill is as large as the output; a part is packed in memory, so choose
``parts`` to keep a part to a few GB of tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import posixpath
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipelines.tokens.indexed import IndexedWriter
from pipelines.tokens.pack import placements
from pipelines.tokens.token_batch import Plan, TokenBatch, plan
from pipelines.tokens.tokenizer import Tokenizer
from storage.fs import Filesystem
from storage.layout import OutputDir
from storage.manifest import Manifest, ShardInfo, config_hash

VERSION = "1"
PROVENANCE_SCHEMA = pa.schema(
    [
        pa.field("sequence", pa.int64()),
        pa.field("start", pa.int32()),  # first token of the piece within the sequence
        pa.field("length", pa.int32()),
        pa.field("doc_id", pa.string()),
        pa.field("copy", pa.int32()),  # 0..repeats-1
        pa.field("doc_offset", pa.int64()),  # first token of the piece within the document
    ]
)


@dataclass(frozen=True)
class ExportConfig:
    stage: str
    seq_len: int
    seed: int = 0
    parts: int = 8
    open_sequences: int = 64
    batch_chars: int = 2_000_000
    recipe_hash: str = ""


def part_name(i: int) -> str:
    return f"part-{i:05d}"


# pass 1: tokenise ---------------------------------------------------------------
def _batches(docs: Iterable, batch_chars: int) -> Iterator[list[tuple] | TokenBatch]:
    """Rows grouped into batches of ~``batch_chars`` characters; a TokenBatch passes as is."""
    batch, size = [], 0
    for i, row in enumerate(docs):
        if isinstance(row, TokenBatch):
            if batch:
                yield batch
                batch, size = [], 0
            yield row
            continue
        doc_id, text, repeats, *rest = row
        labels = dict(rest[0]) if rest and rest[0] else {}
        if not isinstance(text, str) or not isinstance(repeats, int) or repeats < 0:
            raise ValueError(
                f"input row {i} (doc_id {doc_id!r}): expected (doc_id, text: str, repeats: "
                f"int >= 0[, labels]) or a TokenBatch, got text {type(text).__name__}, "
                f"repeats {repeats!r}"
            )
        batch.append((str(doc_id), text, repeats, labels))
        size += len(text)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _batch_digest(batch: list[tuple[str, str, int, dict]] | TokenBatch) -> str:
    if isinstance(batch, TokenBatch):
        return batch.digest()
    h = xxhash.xxh3_128()
    for doc_id, text, repeats, labels in batch:
        h.update(f"{doc_id}\0{repeats}\0{sorted(labels.items())}\0".encode())
        h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _tokenize_batch(fs: Filesystem, work: str, b: int, batch, cfg, digest: str, tok: Tokenizer):
    """Pass 1 for a batch of text rows (in a worker): tokenise the wanted documents into a
    TokenBatch and spill it as any TokenBatch; empty and repeats-0 rows are only counted.
    ``tok`` travels as its path and sha256 and is built once per worker (load_tokenizer)."""
    wanted = [row for row in batch if row[1] and row[2] > 0]
    skipped = Counter(
        "documents_dropped" if text else "documents_empty"
        for _, text, repeats, _ in batch
        if not (text and repeats > 0)
    )
    offsets, values = tok.encode_docs([text for _, text, _, _ in wanted])
    keys = sorted({key for *_, labels in wanted for key in labels})
    tb = TokenBatch(
        doc_ids=[doc_id for doc_id, *_ in wanted],
        offsets=offsets,
        values=values,
        repeats=np.array([repeats for _, _, repeats, _ in wanted], np.int64),
        labels={  # as str, like the counter keys of a label map; missing: null
            k: pa.array([str(lab[k]) if k in lab else None for *_, lab in wanted], pa.string())
            for k in keys
        },
    )
    p = plan(tb, cfg.seed, cfg.parts, tok.eot_id)
    p.counters.update(skipped)
    p.counters["documents_in"] = len(batch)
    return _spill(fs, work, b, p, digest)


def _spill_token_batch(fs: Filesystem, work: str, b: int, tb: TokenBatch, cfg, digest, eot_id):
    """Pass 1 for a TokenBatch (in the driver: no tokenising, only array work)."""
    return _spill(fs, work, b, plan(tb, cfg.seed, cfg.parts, eot_id), digest)


def _spill(fs: Filesystem, work: str, b: int, p: Plan, digest: str):
    """Write a batch's spill files and its marker. The spill is scratch: written without
    fsync, its xxh3 recorded in the marker and checked before a resumed run trusts it."""
    prefix = posixpath.join(work, f"b{b:06d}")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(p.tokens))
    tokens = memoryview(np.ascontiguousarray(p.tokens)).cast("B")  # written as is, no copy
    h = xxhash.xxh3_128(header.getvalue())
    h.update(tokens)
    with fs.atomic_writer(prefix + ".tokens.npy", durable=False) as f:
        f.write(header.getvalue())
        f.write(tokens)
    buf = io.BytesIO()
    np.savez(
        buf,
        offsets=p.offsets,
        lengths=p.lengths,
        copies=p.copies,
        doc_ids=np.array(p.doc_ids, str),
    )
    docs = buf.getvalue()
    fs.write_bytes(prefix + ".docs.npz", docs, durable=False)
    marker = {
        "digest": digest,
        "counters": dict(p.counters),
        "spill": {"tokens.npy": h.hexdigest(), "docs.npz": _xxh(docs)},
    }
    # scratch too: a marker lost or torn by a power cut only means the batch is redone
    fs.write_bytes(prefix + ".done.json", json.dumps(marker, sort_keys=True).encode(), False)
    return b, marker


def _read_marker(fs: Filesystem, path: str) -> dict | None:
    """A batch marker, or None when it is missing or unreadable (then the batch is redone)."""
    try:
        marker = json.loads(fs.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _xxh(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _spill_intact(fs: Filesystem, work: str, b: int, marker: dict) -> bool:
    """The spill files are there with the content the marker recorded."""
    prefix = posixpath.join(work, f"b{b:06d}")
    spill = marker.get("spill")  # absent: a marker from before spill hashes; redo the batch
    try:
        return bool(spill) and all(
            _xxh(fs.read_bytes(f"{prefix}.{name}")) == digest for name, digest in spill.items()
        )
    except FileNotFoundError:
        return False


# pass 2: pack -------------------------------------------------------------------
def _load_tokens(fs: Filesystem, path: str) -> np.ndarray:
    if fs.is_local:
        return np.asarray(np.load(path, mmap_mode="r"))  # plain view: cheap slices
    return np.load(io.BytesIO(fs.read_bytes(path)))


def _pack_part(fs: Filesystem, work: str, folder: str, p: int, n_batches: int, cfg, pad_id, chash):
    t0 = time.perf_counter()
    picked, tables = [], []  # per batch: rows (key, batch, doc, copy) of part p
    for b in range(n_batches):
        prefix = posixpath.join(work, f"b{b:06d}")
        with np.load(io.BytesIO(fs.read_bytes(prefix + ".docs.npz"))) as z:
            t = {k: z[k] for k in z.files}
        rows = t["copies"]
        lo, hi = np.searchsorted(rows[:, 0], [p, p + 1]) if len(rows) else (0, 0)
        sel = rows[lo:hi]
        picked.append(
            np.stack([sel[:, 1], np.full(len(sel), b, np.uint64), sel[:, 2], sel[:, 3]], 1)
        )
        t["tokens"] = _load_tokens(fs, prefix + ".tokens.npy") if hi > lo else None
        tables.append(t)
    chosen = np.concatenate(picked) if picked else np.zeros((0, 4), np.uint64)
    chosen = chosen[np.lexsort(chosen.T[::-1])].astype(np.int64)  # by key, then batch, doc, copy
    # per copy, in packing order: its batch, its document there, where its tokens start, length
    batch, doc, copy = chosen[:, 1], chosen[:, 2], chosen[:, 3]
    src, length = np.zeros(len(chosen), np.int64), np.zeros(len(chosen), np.int64)
    for b in np.unique(batch).tolist():
        at = np.flatnonzero(batch == b)
        src[at], length[at] = tables[b]["offsets"][doc[at]], tables[b]["lengths"][doc[at]]

    lay = _layout(length.tolist(), cfg.seq_len, cfg.open_sequences)
    name = part_name(p)
    prefix = posixpath.join(folder, name)
    with (
        IndexedWriter(fs, prefix) as seqs,
        IndexedWriter(fs, prefix + ".seg") as segs,
        ThreadPoolExecutor(1, thread_name_prefix="pack-write") as writer,
    ):
        # chunk k is written (and hashed) by the writer thread while this one builds k + 1
        tokens = [t["tokens"] for t in tables]
        piece_batch = batch[lay.copy].tolist()
        piece_src = (src[lay.copy] + lay.offset).tolist()
        piece_len = lay.length.tolist()
        dest = lay.seq * cfg.seq_len + lay.start
        per_chunk = max(1, PACK_CHUNK_TOKENS // cfg.seq_len)  # sequences built at a time
        size = min(per_chunk, lay.sequences) * cfg.seq_len
        chunks = [np.empty(size, np.int32), np.empty(size, np.int32)]
        writes: list[Future | None] = [None, None]
        for k, s0 in enumerate(range(0, lay.sequences, per_chunk)):
            s1 = min(lay.sequences, s0 + per_chunk)
            if writes[k % 2] is not None:
                writes[k % 2].result()  # the buffer is free again
            buf = chunks[k % 2][: (s1 - s0) * cfg.seq_len]
            buf.fill(pad_id)
            lo, hi = int(lay.first[s0]), int(lay.first[s1])
            for b, at, to, n in zip(
                piece_batch[lo:hi],
                piece_src[lo:hi],
                (dest[lo:hi] - s0 * cfg.seq_len).tolist(),
                piece_len[lo:hi],
                strict=True,
            ):
                buf[to : to + n] = tokens[b][at : at + n]
            writes[k % 2] = writer.submit(seqs.add_many, buf, np.full(s1 - s0, cfg.seq_len))
        segs.add_many(*lay.segments())
        for w in writes:
            if w is not None:
                w.result()
    piece_doc = doc[lay.copy].tolist()
    doc_ids = [tables[b]["doc_ids"][d] for b, d in zip(piece_batch, piece_doc, strict=True)]
    prov = {
        "sequence": lay.seq,
        "start": lay.start.astype(np.int32),
        "length": lay.length.astype(np.int32),
        "doc_id": pa.array(doc_ids, pa.string()),
        "copy": copy[lay.copy].astype(np.int32),
        "doc_offset": lay.offset,
    }
    buf = io.BytesIO()
    pq.write_table(pa.table(prov, schema=PROVENANCE_SCHEMA), buf, compression="zstd")
    fs.write_bytes(prefix + ".docs.parquet", buf.getvalue())
    padding = int(lay.padding.sum())
    prov_info = ShardInfo(name + ".docs.parquet", len(lay.seq), buf.tell(), _sha256(buf.getvalue()))
    record = {
        "part": name,
        "config_hash": chash,
        "files": [i.__dict__ for i in (*_infos(seqs), *_infos(segs), prov_info)],
        "sequences": lay.sequences,
        "tokens": lay.sequences * cfg.seq_len - padding,
        "padding": padding,
        "copies": len(chosen),
        "seconds": time.perf_counter() - t0,
    }
    OutputDir(fs, folder).mark_done(name, record)
    return record


PACK_CHUNK_TOKENS = 1 << 20  # a part's sequences are built and written 4 MB at a time


@dataclass
class _Layout:
    """A part's packing as arrays over its pieces, grouped by sequence in output order."""

    sequences: int
    first: np.ndarray  # int64[sequences + 1]: first piece of each sequence (and the end)
    seq: np.ndarray  # per piece: its sequence
    start: np.ndarray  # its first position in the sequence
    copy: np.ndarray  # the copy (index in packing order) it comes from
    offset: np.ndarray  # its first token within that copy
    length: np.ndarray
    padding: np.ndarray  # int64[sequences]: padding at the end of each sequence

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, sizes) of the .seg items: each sequence's piece lengths, then -padding."""
        pads = self.padding > 0
        sizes = np.diff(self.first) + pads
        ends = np.cumsum(sizes)
        values = np.zeros(int(ends[-1]) if len(ends) else 0, np.int32)
        piece = np.arange(len(self.seq), dtype=np.int64)
        values[(ends - sizes)[self.seq] + piece - self.first[self.seq]] = self.length
        values[ends[pads] - 1] = -self.padding[pads]
        return values, sizes


def _layout(lengths: list[int], seq_len: int, open_sequences: int) -> _Layout:
    placed = list(placements(lengths, seq_len, open_sequences))
    counts = np.fromiter(map(len, placed), np.int64, len(placed))
    flat = np.array([piece for pieces in placed for piece in pieces], np.int64).reshape(-1, 3)
    first = np.zeros(len(placed) + 1, np.int64)
    np.cumsum(counts, out=first[1:])
    seq = np.repeat(np.arange(len(placed), dtype=np.int64), counts)
    length = flat[:, 2]
    before = np.cumsum(length) - length  # tokens of all earlier pieces
    start = before - before[first[:-1]][seq] if len(seq) else before
    fill = np.add.reduceat(length, first[:-1]) if len(seq) else np.zeros(0, np.int64)
    return _Layout(len(placed), first, seq, start, flat[:, 0], flat[:, 1], length, seq_len - fill)


def _infos(w: IndexedWriter) -> tuple[ShardInfo, ShardInfo]:
    return w.result.bin, w.result.idx


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# driver -------------------------------------------------------------------------
def export_stage(
    docs: Iterable[tuple[str, str, int] | tuple[str, str, int, Mapping[str, str]]],
    out: OutputDir,
    seq_len: int,
    tokenizer: Tokenizer,
    *,
    stage: str = "tokens/stage",
    seed: int = 0,
    parts: int = 8,
    open_sequences: int = 64,
    batch_chars: int = 2_000_000,
    recipe_hash: str = "",
    processes: int = 2,
    pool: Executor | None = None,
    inputs: list[dict[str, str]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Tokenise, pack and shard ``docs`` into ``out``; returns the stage manifest.

    ``processes`` > 1 runs the batches and parts in that many worker processes: a pool
    of its own, or ``pool`` (a ``LocalRunner``'s shared one: no second start)."""
    shared_pool = pool
    cfg = ExportConfig(stage, seq_len, seed, parts, open_sequences, batch_chars, recipe_hash)
    config = {
        **cfg.__dict__,
        "tokenizer_sha256": tokenizer.sha256,
        "pad_id": tokenizer.eot_id,
        "eot_id": tokenizer.eot_id,
        "format": "megatron-mmidx-v1-int32",
    }
    chash = config_hash(config)
    say = progress or (lambda msg: None)
    fs, folder = out.fs, out.folder
    work = posixpath.join(folder, "_work", chash)
    t0 = time.perf_counter()
    fs.makedirs(work)
    fs.clean_temp(folder)
    fs.remove(posixpath.join(folder, "_manifest.json"))

    if processes <= 1:
        pool = _Inline()
    elif shared_pool is not None:
        pool = _Borrowed(shared_pool)
    else:
        pool = ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"))
    with pool:
        markers = _pass_tokenise(pool, fs, work, docs, cfg, processes, tokenizer, say)
        content = [{k: v for k, v in m.items() if k != "spill"} for m in markers]  # npz: dated
        tok_digest = xxhash.xxh3_128_hexdigest(json.dumps(content, sort_keys=True).encode())
        part_hash = config_hash({"config": chash, "tokens": tok_digest})
        records = _pass_pack(
            pool, fs, work, out, len(markers), cfg, tokenizer.eot_id, part_hash, processes, say
        )

    names = [part_name(p) for p in range(parts)]
    _remove_stale(out, set(names))
    counters: Counter = Counter()
    for m in markers:
        counters.update(m["counters"])
    for name in names:
        rec = records[name]
        counters["sequences"] += rec["sequences"]
        counters["padding"] += rec["padding"]
        for key in ("sequences", "tokens", "padding"):
            counters[f"part.{name}.{key}"] = rec[key]
    manifest = Manifest(
        stage=stage,
        version=VERSION,
        config=config,
        kind="tokens",
        inputs=list(inputs or []),
        shards=[ShardInfo.from_dict(f) for n in names for f in records[n]["files"]],
        counters=dict(sorted(counters.items())),
        seconds=round(time.perf_counter() - t0, 3),
    )
    out.write_manifest(manifest)
    fs.remove(posixpath.join(folder, "_work"))
    return manifest


class _Borrowed:
    """Someone else's executor, used in a ``with`` block without shutting it down."""

    def __init__(self, pool: Executor):
        self.submit = pool.submit

    def __enter__(self) -> _Borrowed:
        return self

    def __exit__(self, *exc) -> None:
        return None


class _Inline:
    """Runs submitted calls at once in this process (``processes=1``: no spawn, no reload)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut


def _pass_tokenise(pool, fs, work, docs, cfg, processes, tok, say) -> list[dict[str, Any]]:
    markers: dict[int, dict] = {}
    running: set[Future] = set()
    n_batches = reused = 0
    for b, batch in enumerate(_batches(docs, cfg.batch_chars)):
        n_batches += 1
        digest = _batch_digest(batch)
        done = posixpath.join(work, f"b{b:06d}.done.json")
        old = _read_marker(fs, done)
        if old is not None:
            if old.get("digest") == digest and _spill_intact(fs, work, b, old):
                markers[b] = old
                reused += 1
                continue
        while len(running) >= 2 * processes:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                i, m = fut.result()
                markers[i] = m
        if isinstance(batch, TokenBatch):
            markers[b] = _spill_token_batch(fs, work, b, batch, cfg, digest, tok.eot_id)[1]
            continue
        running.add(pool.submit(_tokenize_batch, fs, work, b, batch, cfg, digest, tok))
    for fut in running:
        i, m = fut.result()
        markers[i] = m
    say(f"{cfg.stage}: tokenised {n_batches} batches ({reused} done before)")
    return [markers[b] for b in range(n_batches)]


def _pass_pack(pool, fs, work, out, n_batches, cfg, pad_id, part_hash, processes, say):
    records: dict[str, dict] = {}
    running: deque[Future] = deque()

    def collect(fut: Future) -> None:
        rec = fut.result()
        records[rec["part"]] = rec
        say(f"{cfg.stage}: packed {rec['part']} ({len(records)}/{cfg.parts})")

    for p in range(cfg.parts):
        done = out.done(part_name(p))
        if done and done.get("config_hash") == part_hash:
            records[part_name(p)] = done
            continue
        args = (fs, work, out.folder, p, n_batches, cfg, pad_id, part_hash)
        running.append(pool.submit(_pack_part, *args))
        while len(running) >= processes:
            collect(running.popleft())
    while running:
        collect(running.popleft())
    return records


def _remove_stale(out: OutputDir, names: set[str]) -> None:
    """Drop part files and markers of parts that are not in this export (older config)."""
    for path in out.fs.ls(out.folder):
        base = posixpath.basename(path)
        if base.startswith("part-") and base.split(".", 1)[0] not in names:
            out.fs.remove(path)
    for path in out.fs.ls(posixpath.join(out.folder, "_done"), ".json"):
        if posixpath.basename(path)[: -len(".json")] not in names:
            out.fs.remove(path)
