"""The Arrow schemas every shard in the corpus follows.

Document shards hold one row per document. ``doc_id`` is derived from where the
document came from (source + its native id, e.g. the WARC-Record-ID), never from
its content, so a re-extraction with a better extractor keeps the id and every
attribute shard stays joinable. ``meta`` is a typed struct: a field that does not
apply to a source is null, never a free-form dict.

Attribute shards (labels) are row-aligned with the document shard they describe
and carry its ``doc_id`` as first column; re-running a tagger never rewrites text.

Quarantine shards keep every record a stage rejected, with a short reason code and
a human-readable detail, so nothing is lost silently.
"""

from __future__ import annotations

import pyarrow as pa
import xxhash

SCHEMA_VERSION = 1

TIMESTAMP = pa.timestamp("us", tz="UTC")

META_TYPE = pa.struct(
    [
        pa.field("input_file", pa.string()),  # raw file the record came from
        pa.field("input_offset", pa.int64()),  # byte offset of the record in it
        pa.field("content_type", pa.string()),  # MIME type of the payload
        pa.field("charset", pa.string()),  # charset used to decode the payload
        pa.field("http_status", pa.int32()),
        pa.field("title", pa.string()),
        pa.field("html_lang", pa.string()),  # <html lang=...> as declared, unverified
        pa.field("raw_bytes", pa.int64()),  # payload size before extraction
        pa.field("extractor", pa.string()),  # name/version of the text extractor
    ]
)

DOC_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # web, pdf, synth/math, ...
        pa.field("native_id", pa.string(), nullable=False),  # id within the source
        pa.field("url", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("fetched_at", TIMESTAMP),  # when the source was captured
        pa.field("modified_at", TIMESTAMP),  # when the source says it last changed
        pa.field("meta", META_TYPE),
    ],
    metadata={
        b"corpusmill.schema": b"document",
        b"corpusmill.version": str(SCHEMA_VERSION).encode(),
    },
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),  # file or shard being read
        pa.field("offset", pa.int64()),  # byte offset or row index in the input
        pa.field("native_id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # short code, e.g. not_html
        pa.field("detail", pa.string()),  # what exactly was wrong
        pa.field("excerpt", pa.binary()),  # first bytes of the offending payload
    ],
    metadata={b"corpusmill.schema": b"quarantine"},
)

EXCERPT_BYTES = 1024


def make_doc_id(source: str, native_id: str) -> str:
    """Stable 128-bit id (32 hex chars) from the source name and the native id."""
    if not source or not native_id:
        raise ValueError(f"doc_id needs a source and a native id, got {source!r}, {native_id!r}")
    return xxhash.xxh3_128_hexdigest(f"{source}\x1f{native_id}".encode())


def attribute_schema(fields: list[pa.Field], name: str) -> pa.Schema:
    """Schema of an attribute shard: ``doc_id`` first, then the tagger's fields."""
    return pa.schema(
        [pa.field("doc_id", pa.string(), nullable=False), *fields],
        metadata={b"corpusmill.schema": b"attributes", b"corpusmill.tagger": name.encode()},
    )


def check_aligned(docs: pa.Table, attrs: pa.Table) -> None:
    """Raise if an attribute table is not row-aligned with its document table."""
    if docs.num_rows != attrs.num_rows:
        raise ValueError(f"attribute shard has {attrs.num_rows} rows, documents {docs.num_rows}")
    if not docs.column("doc_id").equals(attrs.column("doc_id")):
        raise ValueError("attribute shard doc_ids are not in document order")
