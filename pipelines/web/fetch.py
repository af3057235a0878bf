"""One HTTP GET with hard limits, giving back what a WARC record needs (aiohttp).

Limits, each ending the fetch cleanly with a reason instead of an exception:

    connect_timeout  no TCP connection in time             -> error "connect_timeout"
    read_timeout     no byte for this long (a stall)        -> error "timeout" before the
    total_timeout    the whole exchange took too long          headers, else the body so far
                                                               with truncated="time"
    max_bytes        body larger than this: reading stops   -> truncated="length"
    connection drop  mid-body                               -> truncated="disconnect"
    malformed        unparsable status line or headers      -> error "malformed_response"

Redirects are never followed here (the crawler decides, see crawl.py). Bodies are
stored decoded: aiohttp undoes gzip/deflate and chunking, and the headers that
described the wire form are renamed ``X-Crawler-Content-Encoding``,
``X-Crawler-Transfer-Encoding`` and ``X-Crawler-Content-Length`` with a new
``Content-Length`` of the stored body: the convention of Common Crawl's own WARC
files, so readers never decode twice, and ``max_bytes`` also caps a gzip bomb.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp

ACCEPT_ENCODING = "gzip, deflate"  # what aiohttp always decodes
RENAMED = ("content-encoding", "transfer-encoding", "content-length")


@dataclass
class Limits:
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_bytes: int


@dataclass
class Fetched:
    url: str
    started: datetime
    request_headers: list[tuple[str, str]]
    status: int | None = None  # None: no response at all (see error)
    reason_phrase: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    truncated: str | None = None  # WARC-Truncated value: length, time, disconnect
    error: str | None = None  # reason code when there is no response
    detail: str = ""

    @property
    def request_line(self) -> str:
        p = urlsplit(self.url)
        return f"GET {p.path or '/'}{'?' + p.query if p.query else ''} HTTP/1.1"

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def make_session(limits: Limits, max_connections: int) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=limits.connect_timeout,
        sock_connect=limits.connect_timeout,
        sock_read=limits.read_timeout,
    )
    connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300)
    return aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=True)


async def fetch(
    session: aiohttp.ClientSession, url: str, user_agent: str, limits: Limits
) -> Fetched:
    """GET ``url`` within ``limits``; never raises for network or protocol problems."""
    host = urlsplit(url).netloc
    req = [
        ("Host", host),
        ("User-Agent", user_agent),
        ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"),
        ("Accept-Encoding", ACCEPT_ENCODING),
    ]
    out = Fetched(url=url, started=datetime.now(UTC), request_headers=req)
    body = bytearray()
    got_headers = False
    try:
        async with asyncio.timeout(limits.total_timeout):
            async with session.get(
                url,
                headers={k: v for k, v in req if k != "Host"},
                allow_redirects=False,
                max_line_size=16 << 10,
                max_field_size=16 << 10,
            ) as resp:
                got_headers = True
                out.status = resp.status
                out.reason_phrase = resp.reason or ""
                out.headers = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers
                ]
                async for chunk in resp.content.iter_chunked(1 << 16):
                    room = limits.max_bytes - len(body)
                    if len(chunk) > room:
                        body += chunk[:room]
                        out.truncated = "length"
                        break
                    body += chunk
    except TimeoutError as exc:  # aiohttp's connect/read timeouts are TimeoutErrors too
        if got_headers:
            out.truncated = "time"
        else:
            connect = isinstance(exc, aiohttp.ConnectionTimeoutError)
            out.error = "connect_timeout" if connect else "timeout"
            out.detail = f"no response within the limits ({type(exc).__name__})"
    except aiohttp.ClientPayloadError as exc:
        if got_headers:
            out.truncated = "disconnect"
        else:
            out.error, out.detail = "malformed_response", repr(exc)
    except aiohttp.ClientResponseError as exc:  # unparsable status line or headers
        out.error, out.detail = "malformed_response", repr(exc)
    except aiohttp.ServerDisconnectedError as exc:
        if got_headers:
            out.truncated = "disconnect"
        else:
            out.error, out.detail = "malformed_response", f"closed without a response: {exc!r}"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        if got_headers:
            out.truncated = "disconnect"
        else:
            out.error, out.detail = "connection_error", repr(exc)
    out.body = bytes(body)
    if out.status is not None:
        out.headers = _stored_headers(out.headers, len(out.body))
    return out


def _stored_headers(headers: list[tuple[str, str]], body_len: int) -> list[tuple[str, str]]:
    """Headers as stored beside the decoded body (Common Crawl's convention)."""
    stored = []
    for k, v in headers:
        if k.lower() in RENAMED:
            stored.append(("X-Crawler-" + k, v))
        else:
            stored.append((k, v))
    stored.append(("Content-Length", str(body_len)))
    return stored
