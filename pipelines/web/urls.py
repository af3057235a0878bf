"""URL normalisation, the domain allow-list, and link extraction for the crawler.

Normalisation makes two spellings of one resource one frontier key: scheme and host
lower case (IDNA for non-ASCII hosts), the default port dropped, the fragment
dropped, an empty path made ``/``, ``.``/``..`` segments resolved, percent-encoding
made canonical (unreserved characters decoded, the rest upper-case ``%XX``, raw
non-ASCII encoded as UTF-8), and query parameters sorted (stable, so repeated keys
keep their order). Only http and https URLs are crawlable; anything else gives None.

A host is allowed when it equals an allowed domain or is a subdomain of one
(``news.example.com`` under ``example.com``); ports do not matter.

Links come from ``<a href>`` and ``<area href>`` resolved against ``<base href>``
when the page has one, parsed with resiliparse (the same parser the text extractor
uses); ``rel=nofollow`` links are skipped.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

from resiliparse.parse.encoding import bytes_to_str
from resiliparse.parse.html import HTMLTree

from pipelines.web.html import choose_charset

DEFAULT_PORTS = {"http": 80, "https": 443}
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def _normalise_percent(part: str, safe: str) -> str:
    """Decode %XX of unreserved characters, upper-case the others, encode what must be."""

    def fix(m: re.Match) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in UNRESERVED else "%" + m.group(1).upper()

    part = _PCT.sub(fix, part)
    out = []
    for ch in part:
        if ch in UNRESERVED or ch in safe or ch == "%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path; repeated slashes are kept (they can matter)."""
    if not path:
        return "/"
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Canonical form of an http(s) URL (resolved against ``base``), or None if not crawlable."""
    try:
        if base is not None:
            url = urljoin(base, url.strip())
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return None
        host = parts.hostname.lower().rstrip(".")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port
    except (ValueError, UnicodeError):
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_normalise_percent(parts.path, "/:@!$&'()*+,;="))
    query = ""
    if parts.query:
        pairs = [p for p in parts.query.split("&") if p]
        keyed = []
        for p in pairs:
            k, sep, v = p.partition("=")
            keyed.append(
                (
                    _normalise_percent(k, "!$'()*+,;:@/?"),
                    sep,
                    _normalise_percent(v, "!$'()*+,;=:@/?"),
                )
            )
        keyed.sort(key=lambda kv: kv[0])
        query = "&".join(k + sep + v for k, sep, v in keyed)
    return urlunsplit((scheme, netloc, path, query, ""))


def host_of(url: str) -> str:
    """Lower-case host name of a normalised URL, without port or brackets."""
    return (urlsplit(url).hostname or "").lower()


def origin_of(url: str) -> str:
    """scheme://host[:port] of a normalised URL: the unit of robots.txt and politeness."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def is_allowed(url: str, allowed_domains: tuple[str, ...]) -> bool:
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in allowed_domains)


def extract_links(body: bytes, base_url: str, http_charset: str | None) -> list[str]:
    """Normalised absolute http(s) links of an HTML page, in document order, deduplicated."""
    html = bytes_to_str(body, choose_charset(body, http_charset), fallback_encodings=("utf-8",))
    tree = HTMLTree.parse(html)
    if tree.document is None:
        return []
    base = base_url
    base_el = tree.document.query_selector("base[href]")
    if base_el is not None:
        base = normalize_url(base_el.getattr("href") or "", base_url) or base_url
    seen: dict[str, None] = {}
    for el in tree.document.query_selector_all("a[href], area[href]"):
        if "nofollow" in (el.getattr("rel") or "").lower().split():
            continue
        url = normalize_url(el.getattr("href") or "", base)
        if url is not None:
            seen.setdefault(url, None)
    return list(seen)
