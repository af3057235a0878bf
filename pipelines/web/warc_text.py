"""Stage ``text/web``: WARC files in, document shards of main text out.

One task per WARC file (local path or URL). Kept: HTTP 200 responses whose
Content-Type is HTML, decoded and reduced to their main text. Everything else that
is a response is quarantined with its reason, so the counts always add up:

    no_content_type   the HTTP response names no Content-Type
    not_html          a payload of another type (image, PDF, script ...)
    http_status       status other than 200 (redirects, errors)
    too_large         payload over ``max_html_bytes``
    binary_payload    declared HTML, but the bytes are binary
    empty_text        nothing left after extraction
    extract_error     the extractor raised (broken beyond repair)
    truncated_record / corrupt_gzip_member / corrupt_record   damaged WARC
"""

from __future__ import annotations

import email.utils
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import pyarrow as pa

from pipelines.stage import Stage, StageContext, Task, batches_from_rows
from pipelines.web.html import EXTRACTOR, choose_charset, html_to_text, looks_binary
from pipelines.web.warc import Problem, iter_warc
from storage.fs import Filesystem
from storage.schema import DOC_SCHEMA, make_doc_id

HTML_TYPES = ("text/html", "application/xhtml+xml")
FILE_SCHEMA = pa.schema([pa.field("uri", pa.string())])


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        if value[:4].isdigit():  # WARC-Date, ISO 8601
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        dt = email.utils.parsedate_to_datetime(value)  # HTTP date
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


@dataclass
class WarcTextStage(Stage):
    name: ClassVar[str] = "text/web"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = DOC_SCHEMA

    source: str = "web"
    max_html_bytes: int = 8 << 20
    min_text_chars: int = 1

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        yield pa.RecordBatch.from_pylist([{"uri": fs.uri(task.input)}], schema=FILE_SCHEMA)

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for uri in batch.column("uri").to_pylist():
                yield from batches_from_rows(self._documents(uri, ctx), DOC_SCHEMA)

    def _documents(self, uri: str, ctx: StageContext):
        from storage.fs import open_fs

        fs = open_fs(uri)
        name = posixpath.basename(uri)
        with fs.open(fs.root, "rb") as f:
            for item in iter_warc(
                f, self.max_html_bytes, lambda ct: ct in HTML_TYPES, ctx.counters
            ):
                if isinstance(item, Problem):
                    ctx.quarantine(
                        item.reason,
                        item.detail,
                        offset=item.offset,
                        native_id=item.record_id,
                        url=item.url,
                    )
                    continue
                ctx.counters["records_in"] += 1
                doc = self._document(item, name, ctx)
                if doc is not None:
                    yield doc

    def _document(self, rec, file_name: str, ctx: StageContext) -> dict | None:
        where = {"offset": rec.offset, "native_id": rec.record_id, "url": rec.url}
        if rec.status != 200:
            ctx.quarantine("http_status", f"HTTP {rec.status}", **where)
            return None
        if rec.content_type is None:
            ctx.quarantine("no_content_type", "HTTP response without Content-Type", **where)
            return None
        if rec.content_type not in HTML_TYPES:
            ctx.quarantine("not_html", rec.content_type, **where)
            return None
        if rec.payload is None:
            ctx.quarantine(
                "too_large",
                f"{rec.content_length} bytes > max_html_bytes={self.max_html_bytes}",
                **where,
            )
            return None
        body = rec.payload
        charset = choose_charset(body, rec.charset)
        if looks_binary(body, charset):
            ctx.quarantine("binary_payload", f"declared {rec.content_type}", excerpt=body, **where)
            return None
        try:
            page = html_to_text(body, charset)
        except Exception as exc:  # resiliparse is robust; keep the run alive if it is not
            ctx.quarantine("extract_error", repr(exc), excerpt=body, **where)
            return None
        if len(page.text) < self.min_text_chars:
            ctx.quarantine(
                "empty_text", f"{len(page.text)} chars after extraction", excerpt=body, **where
            )
            return None
        ctx.counters["bytes_html"] += len(body)
        ctx.counters["bytes_text"] += len(page.text.encode())
        return {
            "doc_id": make_doc_id(self.source, rec.record_id),
            "source": self.source,
            "native_id": rec.record_id,
            "url": rec.url,
            "text": page.text,
            "fetched_at": parse_time(rec.date),
            "modified_at": parse_time(rec.last_modified),
            "meta": {
                "input_file": file_name,
                "input_offset": rec.offset,
                "content_type": rec.content_type,
                "charset": page.charset,
                "http_status": rec.status,
                "title": page.title,
                "html_lang": page.lang,
                "raw_bytes": len(body),
                "extractor": EXTRACTOR,
            },
        }


def warc_tasks(fs: Filesystem, files: list[str]) -> list[Task]:
    """One task per WARC file; part names follow the sorted file order."""
    return [Task(part=f"part-{i:05d}", input=p) for i, p in enumerate(sorted(files))]
