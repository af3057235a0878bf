"""A small real web site on 127.0.0.1, served from the bundled news pages (aiohttp.web).

It lets the crawler run end to end without the internet: the main job's default
``raw/crawl`` and the crawler tests crawl it. Layout:

    /robots.txt            Disallow: /private/, Crawl-delay: <crawl_delay>
    /                      links to every page, to /deep/1 and to ``extra_links``
    /news/<name>.html      a page of samples/html/newspaper4k; its own links are
                           disabled (href -> data-href) and links to the next page
                           and to / are injected before </body>
    /deep/<n>              a chain of small pages, n links to n+1 (depth limits)
    /private/secret.html   exists, but robots.txt forbids it

Every request is counted per path with its arrival time (``app[COUNTS]``,
``app[ARRIVALS]``), so a test can check what the crawler asked for and when.
:class:`SiteServer` runs the app in a background thread on a free port.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from aiohttp import web

PAGES = Path(__file__).resolve().parents[2] / "samples" / "html" / "newspaper4k"
COUNTS = web.AppKey("counts", Counter)
ARRIVALS = web.AppKey("arrivals", defaultdict)
_HREF = re.compile(rb"\bhref\s*=", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)
DEEP_PAGES = 10


def make_app(crawl_delay: float, extra_links: tuple[str, ...] = ()) -> web.Application:
    names = sorted(p.name for p in PAGES.glob("*.html"))
    app = web.Application(middlewares=[_count])
    app[COUNTS] = Counter()
    app[ARRIVALS] = defaultdict(list)

    def html(body: str) -> web.Response:
        return web.Response(body=body.encode(), content_type="text/html", charset="utf-8")

    async def robots(request: web.Request) -> web.Response:
        return web.Response(
            text=f"User-agent: *\nDisallow: /private/\nCrawl-delay: {crawl_delay}\n"
        )

    async def index(request: web.Request) -> web.Response:
        links = [f"/news/{n}" for n in names] + ["/deep/1", *extra_links]
        items = "".join(f'<li><a href="{u}">{u}</a></li>' for u in links)
        return html(
            f"<html><head><title>Sample news</title></head><body><ul>{items}</ul></body></html>"
        )

    async def page(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in names:
            raise web.HTTPNotFound()
        raw = _HREF.sub(b"data-href=", (PAGES / name).read_bytes())
        nxt = names[(names.index(name) + 1) % len(names)]
        inject = f'<a href="/news/{nxt}">next</a> <a href="/">home</a>'.encode()
        body, n = _BODY_END.subn(inject + b"</body>", raw, count=1)
        return web.Response(body=body if n else raw + inject, content_type="text/html")

    async def deep(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if not 1 <= n <= DEEP_PAGES:
            raise web.HTTPNotFound()
        text = f"Deep page {n} of a chain that tests the crawl depth limit."
        return html(f'<html><body><p>{text}</p><a href="/deep/{n + 1}">deeper</a></body></html>')

    async def secret(request: web.Request) -> web.Response:
        return html("<html><body><p>robots.txt forbids this page.</p></body></html>")

    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/", index)
    app.router.add_get("/news/{name}", page)
    app.router.add_get(r"/deep/{n:\d+}", deep)
    app.router.add_get("/private/secret.html", secret)
    return app


@web.middleware
async def _count(request: web.Request, handler):
    request.app[COUNTS][request.path_qs] += 1
    request.app[ARRIVALS][request.path_qs].append(time.monotonic())
    return await handler(request)


class SiteServer:
    """Serve an aiohttp app on 127.0.0.1 from a background thread (a context manager)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SiteServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
