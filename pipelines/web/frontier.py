"""The crawl's persistent frontier: every URL it knows, and what became of it (sqlite).

One row per normalised URL, in discovery order (rowid), with its depth, redirect
hop count and the URL that redirected to it. States:

    queued    known, not fetched yet (also: fetched, but its WARC file never finished)
    fetched   its response is in a finished WARC file (``warc_file``)
    failed    tried, no usable response (timeout, connection error, malformed ...)
    skipped   never requested (robots.txt, redirect off the allow-list, loop ...)

The invariant that makes stop-and-resume exact: a URL is ``fetched`` only once the
WARC file holding it has been renamed to its final name, and that is recorded in
the same transaction that lists the file in ``warc_files``. A kill after the rename
and before the commit is repaired at start-up by ``warc_sink.reconcile``, which
reads the URLs of every finished WARC file the database does not know yet. A page
in a WARC file that never finished is still ``queued`` and is fetched again;
a page in a finished one never is.

The database uses WAL with ``synchronous=FULL``: a commit is on disk when it returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS urls (
    url TEXT PRIMARY KEY,
    depth INTEGER NOT NULL,
    hops INTEGER NOT NULL,
    redirect_from TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    status INTEGER,
    warc_file TEXT
);
CREATE TABLE IF NOT EXISTS warc_files (name TEXT PRIMARY KEY, records INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Entry:
    url: str
    depth: int
    hops: int = 0  # redirects followed to reach this URL
    redirect_from: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one fetch of a page gave, to be committed with its WARC file."""

    url: str
    status: int | None
    reason: str | None  # e.g. truncated:length, redirect, redirect_loop


class Frontier:
    def __init__(self, path: str) -> None:
        # explicit transactions: each ``with self._transaction()`` is all or nothing
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.known: set[str] = {r[0] for r in self.db.execute("SELECT url FROM urls")}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def add(self, entries: Iterable[Entry]) -> list[Entry]:
        """Insert the entries not known yet, in one transaction; return those."""
        new = []
        for e in entries:
            if e.url not in self.known:
                self.known.add(e.url)
                new.append(e)
        if new:
            with self._transaction():
                self.db.executemany(
                    "INSERT OR IGNORE INTO urls(url, depth, hops, redirect_from, state) "
                    "VALUES (?, ?, ?, ?, 'queued')",
                    [(e.url, e.depth, e.hops, e.redirect_from) for e in new],
                )
        return new

    def queued(self) -> list[Entry]:
        rows = self.db.execute(
            "SELECT url, depth, hops, redirect_from FROM urls WHERE state='queued' ORDER BY rowid"
        )
        return [Entry(*r) for r in rows]

    def finish(self, url: str, state: str, reason: str, detail: str = "") -> None:
        """Record a URL that ends without a WARC record (failed or skipped), durably."""
        with self._transaction():
            self.db.execute(
                "UPDATE urls SET state=?, reason=?, detail=? WHERE url=?",
                (state, reason, detail, url),
            )

    def commit_file(self, name: str, outcomes: list[Outcome]) -> None:
        """Mark the pages of a finished WARC file fetched, with the file, atomically."""
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO warc_files(name, records) VALUES (?, ?)",
                (name, len(outcomes)),
            )
            self.db.executemany(
                "UPDATE urls SET state='fetched', status=?, reason=?, warc_file=? WHERE url=?",
                [(o.status, o.reason, name, o.url) for o in outcomes],
            )

    def committed_files(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM warc_files")}

    def redirect_from(self, url: str) -> str | None:
        row = self.db.execute("SELECT redirect_from FROM urls WHERE url=?", (url,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM urls GROUP BY state").fetchall())

    def reasons(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT state || ':' || reason, COUNT(*) FROM urls WHERE reason IS NOT NULL "
            "GROUP BY state, reason"
        )
        return dict(rows.fetchall())

    def attempted(self) -> int:
        """Page fetches that count against the budget: fetched or failed."""
        row = self.db.execute("SELECT COUNT(*) FROM urls WHERE state IN ('fetched', 'failed')")
        return row.fetchone()[0]
