"""Reads the tokenized stage shards and turns them into training micro-batches.

The shard contract (written by pipelines/tokens/, read here independently of its code):
``<part>.bin`` + ``<part>.idx`` is a Megatron MMapIndexedDataset whose items are
training sequences of exactly ``seq_len`` tokens; ``<part>.seg.bin`` + ``<part>.seg.idx``
(same format, int32) holds for sequence i its segment lengths: n > 0 is n tokens of
one document, -n is n padding tokens (pad id 151643). A stage folder holds several
parts and a ``_manifest.json`` whose config gives ``seq_len``.

Design choices:
- np.memmap over the .bin files: nothing is loaded up front, workers share pages.
- One example = one sequence of T tokens: ``input_ids`` are all T tokens, ``labels[t]``
  is token t+1 (the last position has none), so the model sees the trained length.
  A label is dropped (-100) when its target is padding, its source is padding or,
  with ``mask_boundary``, the target starts a new document (no cross-document
  prediction). ``position_ids`` restart at 0 in every segment, ``doc_ids`` number the
  segments for the attention mask (a document continued from the previous sequence
  starts again at 0: its earlier context is not visible anyway).
- Order: epoch e visits all sequences in a permutation seeded by (seed, e), the same
  on every rank. Each micro-batch takes the next ``micro_batch * world`` of them and
  rank r keeps slice r, so ranks see disjoint, equal shares and the state is just
  (epoch, index): saved in the checkpoint, it resumes mid-epoch exactly. A tail
  shorter than one global micro-batch is skipped at the end of an epoch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {4: np.int32, 5: np.int64, 8: np.uint16}
PAD_ID = 151643
IGNORE = -100


class ShardError(ValueError):
    """A token shard does not follow the .bin/.idx contract."""


class IndexedFile:
    """One MMapIndexedDataset pair: item i is ``data[pointer_i : pointer_i + size_i]``."""

    def __init__(self, prefix: Path) -> None:
        idx, self.prefix = prefix.with_name(prefix.name + ".idx"), prefix
        raw = idx.read_bytes()
        if raw[:9] != MAGIC:
            raise ShardError(f"{idx}: not a Megatron index (magic {raw[:9]!r}); rewrite the shard")
        version, code, count, n_docs = struct.unpack_from("<QBQQ", raw, 9)
        if version != 1 or code not in DTYPES:
            raise ShardError(
                f"{idx}: version {version}, dtype code {code}; expected version 1 and a dtype "
                f"code in {sorted(DTYPES)} (4=int32, 5=int64, 8=uint16)"
            )
        off = 9 + struct.calcsize("<QBQQ")
        if len(raw) != off + count * 12 + n_docs * 8:
            raise ShardError(f"{idx}: {len(raw)} bytes, not the size {count} items imply")
        self.sizes = np.frombuffer(raw, np.int32, count, off)
        self.pointers = np.frombuffer(raw, np.int64, count, off + count * 4)
        self.dtype = np.dtype(DTYPES[code])
        bin_path = prefix.with_name(prefix.name + ".bin")
        end = int(self.pointers[-1] + self.sizes[-1] * self.dtype.itemsize) if count else 0
        if not bin_path.exists() or bin_path.stat().st_size < end:
            raise ShardError(f"{bin_path}: missing or shorter than its index says ({end} bytes)")
        self.data = np.memmap(bin_path, np.uint8, "r") if end else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i])
        return self.data[start : start + int(self.sizes[i]) * self.dtype.itemsize].view(self.dtype)


class StageShards:
    """All parts of one stage folder (e.g. tokens/s1) as one list of sequences."""

    def __init__(self, folder: str | Path, window: int = 0) -> None:
        self.folder = Path(folder)
        self.window = window  # > 0: serve only the first `window` tokens of each sequence
        manifest = self.folder / "_manifest.json"
        if not manifest.exists():
            raise ShardError(f"{self.folder}: no _manifest.json; the tokens stage did not finish")
        self.seq_len = int(json.loads(manifest.read_text())["config"]["seq_len"])
        prefixes = sorted(p for p in self.folder.glob("*.idx") if not p.name.endswith(".seg.idx"))
        if not prefixes:
            raise ShardError(f"{self.folder}: no <part>.idx token shards")
        self.parts: list[tuple[IndexedFile, IndexedFile]] = []
        for p in prefixes:
            tokens, segs = IndexedFile(p.with_suffix("")), IndexedFile(p.with_suffix(".seg"))
            if len(tokens) != len(segs):
                raise ShardError(f"{p}: {len(tokens)} sequences but {len(segs)} segment lists")
            if len(tokens) and (tokens.sizes != self.seq_len).any():
                raise ShardError(f"{p}: sequences are not all seq_len={self.seq_len} tokens")
            self.parts.append((tokens, segs))
        self.starts = np.cumsum([0] + [len(t) for t, _ in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def sequence(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens [T] and segment lengths of global sequence i."""
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        tokens, segs = self.parts[part]
        j = i - int(self.starts[part])
        seg = segs[j].astype(np.int64)
        if np.abs(seg).sum() != self.seq_len or (seg == 0).any():
            raise ShardError(f"{tokens.prefix} sequence {j}: segments {seg} do not sum to seq_len")
        toks = tokens[j].astype(np.int64)
        if 0 < self.window < self.seq_len:
            ends = np.cumsum(np.abs(seg))
            k = int(np.searchsorted(ends, self.window))  # the segment the window ends in
            seg = seg[: k + 1].copy()
            seg[k] = np.sign(seg[k]) * (self.window - (ends[k - 1] if k else 0))
            toks = toks[: self.window]
        return toks, seg


def make_example(
    tokens_T: np.ndarray, segs: np.ndarray, mask_boundary: bool = True
) -> dict[str, np.ndarray]:
    """input_ids, labels, position_ids, doc_ids (all [T]) for one packed sequence."""
    lengths = np.abs(segs)
    doc_T = np.repeat(np.arange(len(segs)), lengths)
    pad_T = np.repeat(segs < 0, lengths)
    starts = np.cumsum(lengths) - lengths
    pos_T = np.arange(len(tokens_T)) - np.repeat(starts, lengths)
    labels_T = np.full_like(tokens_T, IGNORE)
    keep = ~pad_T[:-1] & ~pad_T[1:]
    if mask_boundary:
        keep &= doc_T[:-1] == doc_T[1:]
    labels_T[:-1] = np.where(keep, tokens_T[1:], IGNORE)
    return {"input_ids": tokens_T, "labels": labels_T, "position_ids": pos_T, "doc_ids": doc_T}


@dataclass
class DataState:
    epoch: int = 0
    index: int = 0  # sequences of the epoch's order consumed by all ranks together


class Loader:
    """Deterministic, rank-split, resumable micro-batches over one stage."""

    def __init__(
        self,
        shards: StageShards,
        micro_batch: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        mask_boundary: bool = True,
    ) -> None:
        self.shards, self.micro_batch, self.rank, self.world = shards, micro_batch, rank, world
        self.seed, self.mask_boundary = seed, mask_boundary
        self.state = DataState()
        if len(shards) < micro_batch * world:
            raise ShardError(
                f"{shards.folder}: {len(shards)} sequences, fewer than one global micro-batch "
                f"({micro_batch} x {world} ranks); lower the micro-batch or add data"
            )
        self._order_epoch, self._order = -1, np.empty(0, np.int64)

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order, self._order_epoch = rng.permutation(len(self.shards)), epoch
        return self._order

    def next_indices(self) -> np.ndarray:
        """The sequence ids of this rank's next micro-batch; advances the state."""
        g = self.micro_batch * self.world
        if self.state.index + g > len(self.shards):
            self.state = DataState(self.state.epoch + 1, 0)
        chunk = self.order(self.state.epoch)[self.state.index : self.state.index + g]
        self.state.index += g
        return chunk[self.rank * self.micro_batch : (self.rank + 1) * self.micro_batch]

    def next_batch(self) -> dict[str, torch.Tensor]:
        examples = [
            make_example(*self.shards.sequence(int(i)), self.mask_boundary)
            for i in self.next_indices()
        ]
        return {k: torch.from_numpy(np.stack([e[k] for e in examples])) for k in examples[0]}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.state.epoch, "index": self.state.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = DataState(int(state["epoch"]), int(state["index"]))
