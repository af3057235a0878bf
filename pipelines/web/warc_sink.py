"""Writes fetches as WARC request + response records into size-rotated, atomic files.

Each file is written under a hidden temporary name (``.crawl-00003.warc.gz.tmp``),
one gzip member per record (warcio), starting with a ``warcinfo`` record. When it
passes ``max_bytes`` (or the crawl stops) it is flushed, fsynced and renamed to
``crawl-00003.warc.gz``, the directory is fsynced, and only then is ``on_commit``
called with the outcomes of the pages it holds: the caller marks them fetched.
A reader (``pipelines.web.warc.iter_warc``, ``WarcTextStage``) therefore only ever
sees whole files, and a kill loses at most the pages of the unfinished file, which
stay queued. :func:`reconcile` repairs the one window left: killed after a rename and
before its commit.

Truncated bodies carry ``WARC-Truncated`` (length, time, disconnect), as the WARC
standard asks.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date
from warcio.warcwriter import WARCWriter

from pipelines.web.fetch import Fetched
from pipelines.web.frontier import Frontier, Outcome

NAME = re.compile(r"^crawl-(\d{5,})\.warc\.gz$")


@dataclass
class WarcSink:
    folder: str
    max_bytes: int
    on_commit: Callable[[str, list[Outcome]], None]
    info: dict[str, str] = field(default_factory=dict)  # warcinfo fields
    files: list[str] = field(default_factory=list)  # finished in this session

    def __post_init__(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        for name in os.listdir(self.folder):  # unfinished files of a killed run
            if name.startswith(".crawl-") and name.endswith(".tmp"):
                os.remove(os.path.join(self.folder, name))
        numbers = [int(m.group(1)) for n in os.listdir(self.folder) if (m := NAME.match(n))]
        self._next = max(numbers, default=-1) + 1
        self._f: io.BufferedWriter | None = None
        self._writer: WARCWriter | None = None
        self._name = ""
        self._outcomes: list[Outcome] = []

    def write(self, f: Fetched, outcome: Outcome | None) -> None:
        """Append the request and response of ``f``; ``outcome`` is None for robots.txt."""
        if self._writer is None:
            self._open()
        w = self._writer
        # warcio wants naive UTC; it appends the "Z" itself
        date = datetime_to_iso_date(f.started.astimezone(UTC).replace(tzinfo=None), use_micros=True)
        req = w.create_warc_record(
            f.url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=StatusAndHeaders(f.request_line, f.request_headers, is_http_request=True),
            warc_headers_dict={"WARC-Date": date},
        )
        warc_headers = {"WARC-Date": date, "WARC-Concurrent-To": req.rec_headers["WARC-Record-ID"]}
        if f.truncated:
            warc_headers["WARC-Truncated"] = f.truncated
        resp = w.create_warc_record(
            f.url,
            "response",
            payload=io.BytesIO(f.body),
            length=len(f.body),
            http_headers=StatusAndHeaders(
                f"{f.status} {f.reason_phrase}".strip(), f.headers, protocol="HTTP/1.1"
            ),
            warc_headers_dict=warc_headers,
        )
        w.write_record(req)
        w.write_record(resp)
        if outcome is not None:
            self._outcomes.append(outcome)
        if self._f.tell() >= self.max_bytes:
            self.finish()

    def _open(self) -> None:
        self._name = f"crawl-{self._next:05d}.warc.gz"
        self._next += 1
        self._f = open(os.path.join(self.folder, f".{self._name}.tmp"), "wb")
        self._writer = WARCWriter(self._f, gzip=True, warc_version="1.1")
        self._writer.write_record(self._writer.create_warcinfo_record(self._name, self.info))

    def finish(self) -> None:
        """Finish the open file (if any): fsync, rename, fsync the folder, then commit."""
        if self._f is None:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(
            os.path.join(self.folder, f".{self._name}.tmp"),
            os.path.join(self.folder, self._name),
        )
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        outcomes, self._outcomes = self._outcomes, []
        self._f = self._writer = None
        self.files.append(self._name)
        self.on_commit(self._name, outcomes)


def reconcile(folder: str, frontier: Frontier) -> list[str]:
    """Commit the pages of finished WARC files the frontier does not know (killed between
    rename and commit). Returns the names of the files repaired."""
    if not os.path.isdir(folder):
        return []
    known = frontier.committed_files()
    repaired = []
    for name in sorted(n for n in os.listdir(folder) if NAME.match(n) and n not in known):
        outcomes = []
        with open(os.path.join(folder, name), "rb") as fh:
            for rec in ArchiveIterator(fh):
                url = rec.rec_headers.get_header("WARC-Target-URI")
                if rec.rec_type == "response" and url in frontier.known:
                    status = rec.http_headers.get_statuscode() if rec.http_headers else None
                    truncated = rec.rec_headers.get_header("WARC-Truncated")
                    reason = f"truncated:{truncated}" if truncated else None
                    outcomes.append(Outcome(url, int(status) if status else None, reason))
        frontier.commit_file(name, outcomes)
        repaired.append(name)
    return repaired
