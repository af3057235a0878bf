"""robots.txt rules for one origin, from the fetch of its /robots.txt (RFC 9309, protego).

protego implements the current conventions (wildcards, ``$``, longest match wins,
``Allow``, ``Crawl-delay``, ``Request-rate``). What a fetch outcome means:

    2xx                the rules in the file (the first 500 KiB, as the RFC allows)
    3xx, 4xx but 429   no rules: everything is allowed (redirects are not followed)
    429, 5xx, no reply the origin is unreachable: nothing is fetched from it in this
                       session and its URLs stay queued for the next one

The delay between two requests to an origin is the larger of the configured
minimum and the file's ``Crawl-delay`` (or ``Request-rate`` seconds per request).
"""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego

from pipelines.web.fetch import Fetched

MAX_ROBOTS_BYTES = 500 << 10


@dataclass
class RobotsPolicy:
    rules: Protego | None  # None: no rules (allow all) or unreachable
    reachable: bool
    note: str  # how the policy was decided, for the report

    def can_fetch(self, url: str, user_agent: str) -> bool:
        return self.rules is None or self.rules.can_fetch(url, user_agent)

    def delay(self, user_agent: str) -> float:
        if self.rules is None:
            return 0.0
        delay = self.rules.crawl_delay(user_agent)
        if delay is not None:
            return float(delay)
        rate = self.rules.request_rate(user_agent)
        if rate is not None and rate.requests:
            return rate.seconds / rate.requests
        return 0.0


def policy_from_fetch(f: Fetched) -> RobotsPolicy:
    if f.status is None:
        return RobotsPolicy(None, False, f"unreachable: {f.error} {f.detail}".strip())
    if f.status == 429 or f.status >= 500:
        return RobotsPolicy(None, False, f"unreachable: HTTP {f.status}")
    if f.status >= 300:
        return RobotsPolicy(None, True, f"HTTP {f.status}: no rules, all allowed")
    text = f.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
    return RobotsPolicy(Protego.parse(text), True, "HTTP 200")
