"""Robust WARC / WARC.gz reading (Common Crawl layout) on top of fastwarc.

fastwarc parses records at C++/Rust speed but stops the whole file at the first
corrupt gzip member. Here an error never ends the file: the reader reports a
``Problem`` for the broken span, scans forward for the next position where a valid
record starts (a gzip member that inflates completely to ``WARC/1.x``, or a
well-formed WARC header in an uncompressed file), and resumes from there. A record
cut short at the end of a file, with its headers or body incomplete, is reported too.

A record is only yielded once the stream has moved on past it cleanly: a gzip member
cut short in the middle of a file inflates to garbage without any error until its
end, and an uncompressed record cut short swallows the records after it; either is
reported as a ``Problem`` naming the record, never yielded with a mangled payload.

Each good record is yielded as a ``WarcResponse`` with its payload already read
(and HTTP content/transfer encodings undone), so the caller never touches the
stream and a decoding error is attributed to the right record.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from fastwarc.stream_io import BrotliReader, ChunkedReader, GzipReader, ZstdReader
from fastwarc.warc import ArchiveIterator, WarcRecordType

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGICS = (b"WARC/1.0\r\n", b"WARC/1.1\r\n")
SCAN_CHUNK = 1 << 20
MAX_HEADER = 32 << 10  # fastwarc's default max_header_len


@dataclass
class WarcResponse:
    offset: int  # byte offset of the record in the (compressed) file
    record_id: str
    url: str | None
    date: str | None
    status: int | None
    content_type: str | None  # HTTP Content-Type, MIME part only, lower case
    charset: str | None  # charset parameter of the HTTP Content-Type
    last_modified: str | None
    content_length: int  # WARC block length (HTTP headers + body)
    payload: bytes | None  # HTTP body, None when not read (too large / not wanted)


@dataclass
class Problem:
    offset: int
    reason: str
    detail: str
    record_id: str | None = None
    url: str | None = None


def iter_warc(
    f: IO[bytes],
    max_payload: int,
    want_payload=lambda content_type: True,
    counters: dict | None = None,
) -> Iterator[WarcResponse | Problem]:
    """Yield every response record of a seekable WARC stream, and every problem met.

    ``want_payload(content_type)`` decides whether the body is read; records larger
    than ``max_payload`` bytes are yielded with ``payload=None``.
    """
    counters = counters if counters is not None else {}
    head = f.read(4)
    f.seek(0)
    gz = head[:3] == GZIP_MAGIC
    base = 0
    while True:
        f.seek(base)
        # (offset, id, url) of the last record that started
        last: tuple[int, str | None, str | None] | None = None
        # the last record read: yielded once the next record starts or the file ends
        pending: WarcResponse | Problem | None = None
        in_record = False
        try:
            for rec in ArchiveIterator(
                f, record_types=WarcRecordType.any_type, parse_http=False, auto_decode="none"
            ):
                if pending is not None:
                    yield pending
                    pending = None
                # stream_pos is the absolute offset in f, also after a seek to ``base``
                last = (
                    rec.stream_pos,
                    rec.headers.get("WARC-Record-ID"),
                    _target_uri(rec.headers),
                )
                in_record = True
                pending = _read_record(rec, last[0], max_payload, want_payload, counters)
                in_record = False
            if (
                isinstance(pending, Problem)
                and pending.reason == "truncated_record"
                and last is not None
            ):
                # a record cut short (or with a wrong Content-Length) swallows the records
                # after it: look for one that starts inside its bytes and go on from there
                nxt = _resync(f, last[0] + 1, gz)
                if nxt is not None:
                    pending.detail += (
                        f"; skipped bytes {last[0]}..offset {nxt} to the next valid record"
                    )
                    yield pending
                    base = nxt
                    continue
            if pending is not None:
                yield pending
            return
        except (OSError, ValueError) as exc:
            # A record is only trusted once the stream reached the next one: a gzip member
            # cut short inflates to garbage (deflate has no check until the member's end)
            # and an uncompressed record cut short swallows the records after it.
            bad = None
            if last is None:  # nothing readable at base: the damage starts there
                start = base
            else:
                end = None if in_record else _record_end(f, last[0], gz)
                if end is None:  # the last record itself is damaged
                    start, bad = last[0], last
                else:  # the last record is whole; the damage starts right after it
                    if pending is not None:
                        yield pending
                    start = end
            nxt = _resync(f, start + 1, gz)
            to = "end of file" if nxt is None else f"offset {nxt}"
            span = f"skipped bytes {start}..{to} to the next valid record"
            if bad is not None and isinstance(pending, Problem) and pending.offset == start:
                pending.detail = f"{pending.detail}; {span}"
                yield pending
            elif bad is not None:
                reason = "corrupt_gzip_member" if gz else "corrupt_record"
                claimed = None if gz or in_record else _claimed_end(f, start)
                if claimed is not None and nxt is not None and nxt < claimed:
                    reason = "truncated_record"  # the next record starts inside this one
                yield Problem(start, reason, f"{exc}; {span}", bad[1], bad[2])
            else:
                reason = "corrupt_gzip_member" if gz else "corrupt_record"
                yield Problem(start, reason, f"{exc}; {span}", *_peek_ids(f, start, gz))
            if nxt is None:
                return
            base = nxt


def _read_record(rec, offset, max_payload, want_payload, counters) -> WarcResponse | Problem | None:
    h = rec.headers
    rtype = h.get("WARC-Type")
    record_id = h.get("WARC-Record-ID")
    if (
        rtype is None
        or record_id is None
        or h.get("Content-Length") is None
        or not record_id.endswith(">")
    ):
        return Problem(offset, "truncated_record", f"WARC headers incomplete: {dict(h)!r:.200}")
    counters[f"warc_records.{rtype}"] = counters.get(f"warc_records.{rtype}", 0) + 1
    if rtype != "response":
        return None
    url = _target_uri(h)
    expected = int(h.get("Content-Length"))
    if not rec.is_http:
        return Problem(
            offset, "not_http", "response record without an HTTP message", record_id, url
        )
    rec.parse_http(auto_decode="none")
    http = rec.http_headers
    status = http.status_code if http is not None else None
    ctype_full = http.get("Content-Type") if http is not None else None
    ctype, charset = _split_content_type(ctype_full)
    resp = WarcResponse(
        offset=offset,
        record_id=record_id,
        url=url,
        date=h.get("WARC-Date"),
        status=status,
        content_type=ctype,
        charset=charset,
        last_modified=http.get("Last-Modified") if http is not None else None,
        content_length=expected,
        payload=None,
    )
    if expected > max_payload or not want_payload(ctype) or status != 200:
        return resp
    expected_body = rec.content_length  # after parse_http: the body bytes still unread
    body = rec.reader.read()
    if len(body) < expected_body:
        return Problem(
            offset,
            "truncated_record",
            f"body has {len(body)} bytes, the record promises {expected_body}",
            record_id,
            url,
        )
    resp.payload = _decode_http_body(body, http)
    return resp


def _target_uri(headers) -> str | None:
    """WARC-Target-URI without the angle brackets WARC/1.0 writers (wget) put around it."""
    uri = headers.get("WARC-Target-URI")
    if uri and uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    return uri


def _split_content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [p.strip() for p in value.split(";")]
    mime = parts[0].lower() or None
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset" and v:
            charset = v.strip().strip("\"'").lower() or None
    return mime, charset


def _decode_http_body(body: bytes, http) -> bytes:
    """Undo chunked transfer and gzip/deflate/br/zstd content encodings, leniently:
    servers often lie about their encoding, and then the bytes are kept as sent."""
    te = (http.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        body = _try(ChunkedReader, body)
    ce = (http.get("Content-Encoding") or "").lower().strip()
    if ce in ("gzip", "x-gzip"):
        body = _try(GzipReader, body)
    elif ce == "deflate":
        try:
            body = zlib.decompressobj().decompress(body)
        except zlib.error:
            pass
    elif ce == "br":
        body = _try(BrotliReader, body)
    elif ce == "zstd":
        body = _try(ZstdReader, body)
    return body


def _try(reader, body: bytes) -> bytes:
    try:
        out = reader(io.BytesIO(body)).read()
    except OSError:
        return body
    return out if out or not body else body


def _resync(f: IO[bytes], start: int, gz: bool) -> int | None:
    """Offset of the first valid record start at or after ``start``, or None."""
    pos = start
    while True:
        f.seek(pos)
        chunk = f.read(SCAN_CHUNK + 16)
        if not chunk:
            return None
        cands = []
        if gz:
            i = chunk.find(GZIP_MAGIC)
            while 0 <= i < SCAN_CHUNK:
                cands.append(i)
                i = chunk.find(GZIP_MAGIC, i + 1)
        else:
            for magic in WARC_MAGICS:
                i = chunk.find(magic)
                while 0 <= i < SCAN_CHUNK:
                    cands.append(i)
                    i = chunk.find(magic, i + 1)
        for i in sorted(cands):
            if (_member_end(f, pos + i) if gz else _claimed_end(f, pos + i)) is not None:
                return pos + i
        if len(chunk) <= SCAN_CHUNK:
            return None
        pos += SCAN_CHUNK


def _member_end(f: IO[bytes], at: int) -> int | None:
    """End offset of the gzip member at ``at`` if it inflates completely to a WARC record."""
    f.seek(at)
    d = zlib.decompressobj(31)
    first = b""
    read = 0
    try:
        while not d.eof:
            block = f.read(1 << 16)
            if not block:
                return None
            read += len(block)
            out = d.decompress(block)
            if len(first) < 16:
                first += out[: 16 - len(first)]
                if first and not (first.startswith(b"WARC/") or b"WARC/".startswith(first)):
                    return None
    except zlib.error:
        return None
    return at + read - len(d.unused_data) if first.startswith(b"WARC/") else None


def _header_fields(head: bytes) -> dict[bytes, bytes] | None:
    """Fields of a WARC header block (without its first line), None if malformed."""
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            return None
        fields[name.strip().lower()] = value.strip()
    return fields


def _peek_ids(f: IO[bytes], at: int, gz: bool) -> tuple[str | None, str | None]:
    """Best effort: record id and target URI of a damaged record whose header is whole."""
    f.seek(at)
    raw = f.read(MAX_HEADER)
    if gz:
        d, out = zlib.decompressobj(31), b""
        try:
            for i in range(0, len(raw), 1024):
                out += d.decompress(raw[i : i + 1024])
                if b"\r\n\r\n" in out or d.eof:
                    break
        except zlib.error:
            pass
        raw = out
    head, sep, _ = raw.partition(b"\r\n\r\n")
    fields = _header_fields(head) if sep else None
    if not fields:
        return None, None
    rid = fields.get(b"warc-record-id", b"").decode("utf-8", "replace")
    uri = fields.get(b"warc-target-uri", b"").decode("utf-8", "replace")
    if not (rid.startswith("<") and rid.endswith(">")):
        return None, None
    return rid, _target_uri({"WARC-Target-URI": uri}) or None


def _claimed_end(f: IO[bytes], at: int) -> int | None:
    """End offset (after the trailing CRLFCRLF) that the uncompressed record header at
    ``at`` promises, or None if no well-formed WARC header starts there."""
    f.seek(at)
    head = f.read(MAX_HEADER)
    if not head.startswith(WARC_MAGICS):
        return None
    stop = head.find(b"\r\n\r\n")
    if stop < 0:
        return None
    fields = _header_fields(head[:stop])
    if fields is None:
        return None
    length = fields.get(b"content-length", b"")
    if b"warc-type" not in fields or b"warc-record-id" not in fields or not length.isdigit():
        return None
    return at + stop + 4 + int(length) + 4


def _record_end(f: IO[bytes], at: int, gz: bool) -> int | None:
    """End of the record at ``at`` if it is whole, None if it is damaged or cut short."""
    if gz:
        return _member_end(f, at)
    end = _claimed_end(f, at)
    if end is None:
        return None
    f.seek(end - 4)
    if f.read(4) != b"\r\n\r\n":
        return None
    nxt = _resync(f, at + 1, gz)
    return end if nxt is None or nxt >= end else None
