"""A polite, resumable web crawler that writes Common Crawl-style WARC files (asset ``raw/crawl``).

    crawl(CrawlConfig(seeds=("https://example.com/",)), "out/") -> CrawlReport
    python -m pipelines.web.crawl --seeds https://example.com/ --out out/

Design:

- One asyncio loop, aiohttp, a dispatcher over per-origin queues (scheme://host:port,
  the unit robots.txt and politeness apply to). An origin gets at most
  ``per_host_concurrency`` requests at once and request *starts* at least
  ``max(min_delay, Crawl-delay)`` seconds apart; ``max_concurrency`` bounds the whole
  crawl. robots.txt is fetched first for every origin (robots.py) and recorded too.
- Breadth first within the limits: a link is queued if its host is in
  ``allowed_domains`` (the seeds' hosts when empty) and its depth is at most
  ``max_depth``; ``max_pages`` bounds page fetches (fetched + failed) over all sessions.
- Redirects are followed by queueing the ``Location`` (same depth, one more hop),
  so the target gets robots.txt and politeness like any page. A target off the
  allow-list is never requested; a target already in the redirect chain ends it as
  ``redirect_loop``; past ``max_redirects`` hops it ends as ``too_many_redirects``.
- Every response (also 404s, redirects, truncated bodies) becomes a WARC request +
  response pair (warc_sink.py) that ``pipelines.web.warc.iter_warc`` and
  ``WarcTextStage`` read like downloaded Common Crawl files.
- Stop and resume (frontier.py): URL states live in ``<out>/frontier.sqlite``; a
  page is marked fetched only after its WARC file is finished and renamed. SIGTERM /
  SIGINT stop dispatching, let the requests in flight end, finish the file and
  commit; after a SIGKILL the unfinished file is discarded and its pages refetched.
  Output folders are local (sqlite and fsync need a local disk); sync the finished
  ``warc/`` files to object storage afterwards if needed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from pipelines.web.fetch import Fetched, Limits, fetch, make_session
from pipelines.web.frontier import Entry, Frontier, Outcome
from pipelines.web.robots import MAX_ROBOTS_BYTES, RobotsPolicy, policy_from_fetch
from pipelines.web.urls import extract_links, host_of, is_allowed, normalize_url, origin_of
from pipelines.web.warc_sink import WarcSink, reconcile

REDIRECTS = (301, 302, 303, 307, 308)
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class CrawlConfig:
    seeds: tuple[str, ...]
    allowed_domains: tuple[str, ...] = ()  # empty: the hosts of the seeds
    max_depth: int = 2  # link hops from a seed; redirects do not add depth
    max_pages: int = 1000  # page fetches (fetched + failed), robots.txt not counted
    max_concurrency: int = 32
    per_host_concurrency: int = 2
    min_delay: float = 1.0  # seconds between request starts on one origin
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # longest silence while waiting for bytes
    total_timeout: float = 60.0  # whole request, headers and body
    max_bytes: int = 5 << 20  # body bytes kept; the rest is not read (WARC-Truncated)
    max_redirects: int = 5
    warc_max_bytes: int = 1 << 30  # a WARC file is finished once it is this large
    user_agent: str = "corpusmill-bot/0.1"

    def domains(self) -> tuple[str, ...]:
        if self.allowed_domains:
            return tuple(d.lower().strip(".") for d in self.allowed_domains)
        return tuple(sorted({host_of(u) for u in map(normalize_url, self.seeds) if u}))


@dataclass
class CrawlReport:
    out_folder: str
    warc_files: list[str]  # every finished WARC file in <out>/warc, sorted
    new_files: list[str]  # those finished in this session
    fetched: int  # pages committed in this session
    resumed_with: int  # pages already committed when this session started
    states: dict[str, int]  # URLs per state over the whole frontier
    reasons: dict[str, int]  # "<state>:<reason>" counts over the whole frontier
    robots: dict[str, str]  # origin -> how its robots.txt was read
    stopped_by: str  # frontier_empty, page_budget, signal, origins_unreachable (URLs wait)
    seconds: float


@dataclass
class _Origin:
    queue: deque = field(default_factory=deque)
    active: int = 0
    next_start: float = 0.0
    delay: float = 0.0
    robots: RobotsPolicy | None = None
    robots_pending: bool = False


class _Crawl:
    def __init__(self, cfg: CrawlConfig, out_folder: str) -> None:
        self.cfg = cfg
        self.domains = cfg.domains()
        os.makedirs(out_folder, exist_ok=True)
        self.warc_dir = os.path.join(out_folder, "warc")
        self.frontier = Frontier(os.path.join(out_folder, "frontier.sqlite"))
        reconcile(self.warc_dir, self.frontier)
        self.resumed_with = self.frontier.counts().get("fetched", 0)
        self.sink = WarcSink(
            self.warc_dir,
            cfg.warc_max_bytes,
            self._commit,
            {"software": "corpusmill-crawler", "robots": "obey", "user-agent": cfg.user_agent},
        )
        self.limits = Limits(
            cfg.connect_timeout, cfg.read_timeout, cfg.total_timeout, cfg.max_bytes
        )
        self.origins: dict[str, _Origin] = {}
        self.used = self.frontier.attempted()
        self.active = 0
        self.committed = 0
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.crash: Exception | None = None

    def _commit(self, name: str, outcomes: list[Outcome]) -> None:
        self.frontier.commit_file(name, outcomes)
        self.committed += len(outcomes)

    def _enqueue(self, entries: list[Entry]) -> None:
        for e in entries:
            self.origins.setdefault(origin_of(e.url), _Origin()).queue.append(e)

    async def run(self) -> str:
        seeds = [u for u in map(normalize_url, self.cfg.seeds) if u and is_allowed(u, self.domains)]
        self.frontier.add(Entry(u, 0) for u in seeds)
        self._enqueue(self.frontier.queued())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._request_stop)
            except (RuntimeError, ValueError):  # not the main thread: no signal handling
                pass
        async with make_session(self.limits, self.cfg.max_concurrency) as session:
            stopped_by = await self._dispatch(session)
            if self.tasks:
                await asyncio.gather(*self.tasks)
        self.sink.finish()
        if self.crash is not None:
            raise self.crash
        return stopped_by

    def _request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    async def _dispatch(self, session) -> str:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        while not self.stop.is_set():
            now = loop.time()
            wait_until = None
            for origin, o in self.origins.items():
                while o.queue and self.active < cfg.max_concurrency:
                    if o.robots is not None and not o.robots.reachable:
                        break
                    if o.active >= cfg.per_host_concurrency or o.robots_pending:
                        break
                    if o.next_start > now:
                        wait_until = min(wait_until or o.next_start, o.next_start)
                        break
                    if self.used >= cfg.max_pages:
                        break
                    if o.robots is None:
                        o.robots_pending = True
                        self._launch(self._robots(session, origin, o), o, now)
                        break
                    entry = o.queue.popleft()
                    if not o.robots.can_fetch(entry.url, cfg.user_agent):
                        self.frontier.finish(entry.url, "skipped", "robots_disallowed")
                        continue
                    self.used += 1
                    self._launch(self._page(session, entry), o, now)
            if self.active == 0 and not self._can_start():
                if self.used >= cfg.max_pages:
                    return "page_budget"
                waiting = any(o.queue for o in self.origins.values())
                return "origins_unreachable" if waiting else "frontier_empty"
            self.wake.clear()
            timeout = None if wait_until is None else max(0.0, wait_until - loop.time())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
        return "signal"

    def _can_start(self) -> bool:
        """Is there a queued URL that this session may still request?"""
        if self.used >= self.cfg.max_pages:
            return False
        return any(
            o.queue and (o.robots is None or o.robots.reachable) for o in self.origins.values()
        )

    def _launch(self, coro, o: _Origin, now: float) -> None:
        o.active += 1
        o.next_start = now + o.delay
        self.active += 1

        async def run() -> None:
            try:
                await coro
            except Exception as exc:  # a bug, not bad input: stop cleanly, then raise it
                self.crash = self.crash or exc
                self._request_stop()
            finally:
                o.active -= 1
                self.active -= 1
                self.wake.set()

        task = asyncio.ensure_future(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _robots(self, session, origin: str, o: _Origin) -> None:
        start = asyncio.get_running_loop().time()
        limits = dataclasses.replace(self.limits, max_bytes=MAX_ROBOTS_BYTES)
        f = await fetch(session, origin + "/robots.txt", self.cfg.user_agent, limits)
        if f.status is not None:
            self.sink.write(f, None)
        o.robots = policy_from_fetch(f)
        o.delay = max(self.cfg.min_delay, o.robots.delay(self.cfg.user_agent))
        o.next_start = max(o.next_start, start + o.delay)
        o.robots_pending = False

    async def _page(self, session, entry: Entry) -> None:
        f = await fetch(session, entry.url, self.cfg.user_agent, self.limits)
        if f.status is None:
            self.frontier.finish(entry.url, "failed", f.error or "error", f.detail)
            return
        reason = f"truncated:{f.truncated}" if f.truncated else None
        if f.status in REDIRECTS:
            reason = self._redirect(entry, f)
        elif f.status == 200 and entry.depth < self.cfg.max_depth:
            ctype = (f.header("Content-Type") or "").split(";")[0].strip().lower()
            if ctype in HTML_TYPES:
                links = extract_links(f.body, f.url, _charset(f.header("Content-Type")))
                new = [Entry(u, entry.depth + 1) for u in links if is_allowed(u, self.domains)]
                self._enqueue(self.frontier.add(new))
        self.sink.write(f, Outcome(entry.url, f.status, reason))

    def _redirect(self, entry: Entry, f: Fetched) -> str:
        target = normalize_url(f.header("Location") or "", entry.url)
        if target is None:
            return "redirect_invalid"
        if not is_allowed(target, self.domains):
            return "redirect_off_allowlist"
        chain, url = {entry.url}, entry.redirect_from
        while url is not None and url not in chain:
            chain.add(url)
            url = self.frontier.redirect_from(url)
        if target in chain:
            return "redirect_loop"
        if entry.hops + 1 > self.cfg.max_redirects:
            return "too_many_redirects"
        new = self.frontier.add([Entry(target, entry.depth, entry.hops + 1, entry.url)])
        self._enqueue(new)
        return "redirect" if new else "redirect_to_known"


def _charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "charset":
            return v.strip().strip("\"'") or None
    return None


def crawl(config: CrawlConfig, out_folder: str) -> CrawlReport:
    """Crawl from ``config.seeds`` into ``out_folder`` (resuming what is there)."""
    if not config.seeds:
        raise ValueError("crawl needs at least one seed URL (CrawlConfig.seeds is empty)")
    t0 = time.perf_counter()
    c = _Crawl(config, out_folder)
    try:
        stopped_by = asyncio.run(c.run())
        states = c.frontier.counts()
        reasons = c.frontier.reasons()
    finally:
        c.frontier.close()
    report = CrawlReport(
        out_folder=out_folder,
        warc_files=sorted(n for n in os.listdir(c.warc_dir) if n.endswith(".warc.gz")),
        new_files=c.sink.files,
        fetched=c.committed,
        resumed_with=c.resumed_with,
        states=states,
        reasons=reasons,
        robots={k: o.robots.note for k, o in c.origins.items() if o.robots is not None},
        stopped_by=stopped_by,
        seconds=round(time.perf_counter() - t0, 3),
    )
    with open(os.path.join(out_folder, "crawl_report.json"), "w") as fh:
        json.dump(dataclasses.asdict(report), fh, indent=1)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.web.crawl", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", required=True, help="output folder (WARC files, frontier)")
    p.add_argument(
        "--seeds", nargs="+", required=True, help="seed URLs, or @file with one per line"
    )
    p.add_argument("--allowed-domains", nargs="*", default=[])
    for f in dataclasses.fields(CrawlConfig):
        if f.name not in ("seeds", "allowed_domains"):
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = vars(p.parse_args(argv))
    seeds: list[str] = []
    for s in args.pop("seeds"):
        if s.startswith("@"):
            with open(s[1:]) as fh:
                seeds += [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        else:
            seeds.append(s)
    out = args.pop("out")
    cfg = CrawlConfig(
        seeds=tuple(seeds), **{**args, "allowed_domains": tuple(args["allowed_domains"])}
    )
    report = crawl(cfg, out)
    json.dump(dataclasses.asdict(report), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
