"""The crawler against a real HTTP server on 127.0.0.1 serving the bundled news pages.

The site (pipelines/web/sample_site.py) has a robots.txt with a disallowed path and a
crawl delay; the tests add traps: a redirect loop, a redirect chain longer than the
limit, a redirect to a host off the allow-list, a 404, a 30 MB streamed body, a
server that stalls before and after its headers, and a second origin that answers
garbage instead of HTTP. The crawl must honour every rule, finish, and leave WARC
files that ``WarcTextStage`` reads into documents. The resume test runs the crawler
CLI in a child process, kills it (SIGKILL, then SIGTERM) and reruns it: the server's
request counts show that nothing committed is fetched twice and nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from aiohttp import web
from stages_for_tests import subprocess_env
from warcio.archiveiterator import ArchiveIterator

from pipelines.stage import StageContext
from pipelines.web.crawl import CrawlConfig, crawl
from pipelines.web.sample_site import ARRIVALS, COUNTS, DEEP_PAGES, PAGES, SiteServer, make_app
from pipelines.web.urls import normalize_url
from pipelines.web.warc_text import WarcTextStage

REPO = Path(__file__).resolve().parents[1]
CRAWL_DELAY = 0.15
MAX_BYTES = 4 << 20
HUGE = 30 << 20
N_PAGES = len(list(PAGES.glob("*.html")))
SENT = web.AppKey("sent", Counter)


def _warc_responses(folder: Path) -> list[dict[str, str]]:
    """WARC headers of every response record in the finished WARC files, in file order."""
    out = []
    for path in sorted(folder.glob("crawl-*.warc.gz")):
        with open(path, "rb") as fh:
            out += [
                dict(rec.rec_headers.headers)
                for rec in ArchiveIterator(fh)
                if rec.rec_type == "response"
            ]
    return out


def _crawl_cli(out: Path, seed: str, *options: str) -> subprocess.Popen:
    """The crawler CLI in a child process (the server keeps this process to itself)."""
    cmd = [sys.executable, "-m", "pipelines.web.crawl", "--out", str(out), "--seeds", seed]
    return subprocess.Popen(
        [*cmd, *options],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen, out: Path) -> dict:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads((out / "crawl_report.json").read_text())


class GarbageServer:
    """A TCP server that answers /robots.txt with a 404 and anything else with non-HTTP bytes."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if b"/robots.txt" in line:
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        else:
            writer.write(b"THIS IS NOT HTTP\x00\x01\r\n\r\n")
        await writer.drain()
        writer.close()


def trap_app(garbage_port: int) -> web.Application:
    app = make_app(
        CRAWL_DELAY,
        (
            "/loop/a",
            "/hop/1",
            "/away",
            "/missing",
            "/huge",
            "/stall",
            "/stall-body",
            "/private/secret.html",
            "http://elsewhere.example/",
            f"http://127.0.0.1:{garbage_port}/bad.html",
            "/news/cnn_article.html?b=2&a=1#top",  # the same page as ?a=1&b=2
            "/news/cnn_article.html?a=1&b=2",
        ),
    )
    sent = Counter()

    async def loop_a(request):
        raise web.HTTPFound("/loop/b")

    async def loop_b(request):
        raise web.HTTPFound("/loop/a")

    async def hop(request):
        raise web.HTTPFound(f"/hop/{int(request.match_info['n']) + 1}")

    async def away(request):
        raise web.HTTPFound(f"http://localhost:{request.url.port}/away-target")

    async def huge(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.content_length = HUGE
        await resp.prepare(request)
        chunk = b"<p>" + b"x" * ((1 << 16) - 3)
        try:
            for _ in range(HUGE // len(chunk)):
                await resp.write(chunk)
                sent["huge"] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the crawler hung up, as it should
        return resp

    async def stall(request):
        await asyncio.sleep(30)
        return web.Response(text="too late")

    async def stall_body(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<html><body><p>The start of a page, then silence.</p>")
        await asyncio.sleep(30)
        return resp

    app.router.add_get("/loop/a", loop_a)
    app.router.add_get("/loop/b", loop_b)
    app.router.add_get(r"/hop/{n:\d+}", hop)
    app.router.add_get("/away", away)
    app.router.add_get("/huge", huge)
    app.router.add_get("/stall", stall)
    app.router.add_get("/stall-body", stall_body)
    app[SENT] = sent
    return app


@pytest.fixture
def garbage_port():
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(GarbageServer().handle, "127.0.0.1", 0))
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    t.join(timeout=10)


def test_crawl_honours_every_rule(tmp_path, garbage_port):
    with SiteServer(trap_app(garbage_port)) as site:
        options = ["--allowed-domains", "127.0.0.1", "--max-depth", "3", "--min-delay", "0"]
        options += ["--per-host-concurrency", "2", "--connect-timeout", "2"]
        options += ["--read-timeout", "1", "--total-timeout", "3", "--max-redirects", "3"]
        options += ["--max-bytes", str(MAX_BYTES), "--warc-max-bytes", str(4 << 20)]
        report = _finish(_crawl_cli(tmp_path, site.url + "/", *options), tmp_path)
        counts = site.app[COUNTS]
        arrivals = site.app[ARRIVALS]
        sent = site.app[SENT]

    assert report["stopped_by"] == "frontier_empty"
    assert report["states"].get("queued", 0) == 0
    reasons = report["reasons"]
    # robots.txt: the disallowed page is never requested, the delay is kept
    assert counts["/private/secret.html"] == 0
    assert reasons["skipped:robots_disallowed"] == 1
    # the delay holds on average at the server (jitter does not add up over a span) ...
    starts = sorted(t for ts in arrivals.values() for t in ts)
    per_request = (starts[-1] - starts[0]) / (len(starts) - 1)
    assert per_request >= 0.97 * CRAWL_DELAY, f"{per_request:.3f}s per request"
    # ... and between every two requests the crawler started (WARC-Date, microseconds)
    dates = sorted(
        datetime.fromisoformat(h["WARC-Date"].replace("Z", "+00:00"))
        for h in _warc_responses(tmp_path / "warc")
        if h["WARC-Target-URI"].startswith(site.url + "/")
    )
    gaps = [(b - a).total_seconds() for a, b in zip(dates, dates[1:], strict=False)]
    assert min(gaps) >= CRAWL_DELAY / 2, f"two requests {min(gaps):.3f}s apart"
    # redirects: the loop ends, the chain stops at the limit, the foreign host is untouched
    assert counts["/loop/a"] == 1 and counts["/loop/b"] == 1
    assert reasons["fetched:redirect_loop"] == 1
    assert counts["/hop/1"] == counts["/hop/4"] == 1 and counts["/hop/5"] == 0
    assert reasons["fetched:too_many_redirects"] == 1
    assert counts["/away"] == 1 and counts["/away-target"] == 0
    assert reasons["fetched:redirect_off_allowlist"] == 1
    # depth limit: /deep/1 is at depth 2 from the seed
    assert counts["/deep/3"] == 1 and counts["/deep/4"] == 0
    # slow, huge and malformed responses end cleanly
    assert reasons["failed:timeout"] == 1  # /stall: no headers within read_timeout
    assert reasons["fetched:truncated:time"] == 1  # /stall-body
    assert reasons["failed:malformed_response"] == 1  # the garbage origin
    assert reasons["fetched:truncated:length"] >= 1  # /huge (and any page over max_bytes)
    assert sent["huge"] < HUGE, "the crawler read the whole 30 MB body"
    # normalisation: two spellings of one URL were fetched once
    assert counts["/news/cnn_article.html?a=1&b=2"] == 1
    # every page of the site was fetched exactly once
    assert all(counts[f"/news/{p.name}"] == 1 for p in PAGES.glob("*.html"))
    assert max(n for path, n in counts.items() if path != "/robots.txt") == 1

    responses = _warc_responses(tmp_path / "warc")
    by_path = {urlsplit(h["WARC-Target-URI"]).path: h for h in responses}
    assert by_path["/huge"]["WARC-Truncated"] == "length"
    assert int(by_path["/huge"]["Content-Length"]) < MAX_BYTES + 4096
    assert by_path["/stall-body"]["WARC-Truncated"] == "time"
    assert "/missing" in by_path and "/stall" not in by_path
    assert not list((tmp_path / "warc").glob(".*.tmp"))

    # the WARC files go through the same reader as Common Crawl's
    stage = WarcTextStage()
    ctx = StageContext(stage.name, "crawl")
    docs = []
    for name in report["warc_files"]:
        uri = str(tmp_path / "warc" / name)
        batch = pa.RecordBatch.from_pylist([{"uri": uri}])
        for out in stage.process(iter([batch]), ctx):
            docs += out.to_pylist()
    urls = {d["url"] for d in docs}
    assert all(d["fetched_at"] is not None for d in docs)  # WARC-Date parses
    damaged = [
        k for k in ctx.counters if k.startswith(("quarantined.truncated", "quarantined.corrupt"))
    ]
    assert damaged == [], "the reader found damaged WARC records"
    assert {f"{site.url}/news/{p.name}" for p in PAGES.glob("*.html")} <= urls
    assert ctx.counters["quarantined.http_status"] >= 5  # 404 and the redirects
    cnn = next(d for d in docs if d["url"].endswith("/news/cnn_article.html"))
    reference = (PAGES / "cnn_article.txt").read_text()
    assert reference.split("\n")[0][:60] in cnn["text"]


def test_page_budget(tmp_path):
    with SiteServer(make_app(0.0)) as site:
        cfg = CrawlConfig(seeds=(site.url + "/",), max_pages=4, min_delay=0.0)
        report = crawl(cfg, str(tmp_path))
        served = sum(n for path, n in site.app[COUNTS].items() if path != "/robots.txt")
    assert report.stopped_by == "page_budget"
    assert report.fetched == 4 and served == 4
    assert report.states["queued"] > 0  # the rest waits for a larger budget


def _signal_when(proc: subprocess.Popen, ready, sig: int) -> None:
    """Send ``sig`` to the crawler once ``ready()`` is true; wait for it to exit."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the crawl did not get there in 60 s"
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.communicate(timeout=60)


def test_resume_after_kill_fetches_nothing_twice(tmp_path):
    warc = tmp_path / "warc"
    options = ["--max-depth", str(DEEP_PAGES), "--min-delay", "0"]
    options += ["--warc-max-bytes", str(1 << 20), "--max-bytes", str(MAX_BYTES)]
    with SiteServer(make_app(0.1)) as site:
        counts = site.app[COUNTS]
        seed = site.url + "/"
        first = _crawl_cli(tmp_path, seed, *options)
        _signal_when(first, lambda: len(list(warc.glob("crawl-*.warc.gz"))) >= 2, signal.SIGKILL)
        committed = {urlsplit(h["WARC-Target-URI"]).path for h in _warc_responses(warc)}
        committed.discard("/robots.txt")
        killed_at = Counter(counts)
        assert 0 < len(committed) < N_PAGES

        second = _crawl_cli(tmp_path, seed, *options)
        _signal_when(second, lambda: counts.total() >= killed_at.total() + 4, signal.SIGTERM)
        assert second.returncode == 0, second.stderr.read().decode()[-3000:]
        assert not list(warc.glob(".*.tmp")), "SIGTERM must finish the open WARC file"
        stopped = json.loads((tmp_path / "crawl_report.json").read_text())
        assert stopped["stopped_by"] == "signal" and stopped["states"]["queued"] > 0

        report = _finish(_crawl_cli(tmp_path, seed, *options), tmp_path)
        assert report["stopped_by"] == "frontier_empty"

    pages = [urlsplit(h["WARC-Target-URI"]).path for h in _warc_responses(warc)]
    pages = [p for p in pages if p != "/robots.txt"]
    expected = {"/"} | {f"/news/{p.name}" for p in PAGES.glob("*.html")}
    expected |= {f"/deep/{n}" for n in range(1, DEEP_PAGES + 1)}
    assert len(pages) == len(set(pages)), "a page is in two WARC files"
    assert set(pages) == expected
    for path in committed:
        assert counts[path] == 1, f"{path} was committed before the kill and fetched again"
    refetched = [p for p in expected if counts[p] > 1]
    assert all(counts[p] == 2 and killed_at[p] == 1 for p in refetched)
    assert report["states"] == {"fetched": len(expected)}


def test_normalize_url():
    assert (
        normalize_url("HTTP://Example.COM:80/a/./b/../c?b=2&a=1&a=0#frag")
        == "http://example.com/a/c?a=1&a=0&b=2"
    )
    assert normalize_url("https://x.org:443") == "https://x.org/"
    assert normalize_url("http://x.org/%7euser/%3a") == "http://x.org/~user/%3A"
    assert normalize_url("http://bücher.de/ü") == "http://xn--bcher-kva.de/%C3%BC"
    assert normalize_url("../g", "http://a.com/b/c/d") == "http://a.com/b/g"
    assert normalize_url("mailto:someone@example.com") is None
    assert normalize_url("javascript:void(0)") is None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
