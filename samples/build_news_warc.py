"""Builds samples/warc/news/newspaper4k-pages.warc.gz from the bundled news pages.

The HTML pages in samples/html/newspaper4k (MIT, from the newspaper4k 0.9.6 sdist,
see samples/README.md) become HTTP 200 response records, each with a request
record, at the URL their metadata names. To give the exact-dedup stage real work,
three articles are recorded a second time a week later, byte for byte, the way a
recrawl stores them. Re-run after changing the pages:

    .venv/bin/python samples/build_news_warc.py
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

HERE = Path(__file__).parent
PAGES = HERE / "html" / "newspaper4k"
OUT = HERE / "warc" / "news" / "newspaper4k-pages.warc.gz"
CRAWL = datetime(2024, 5, 14, 8, 0, tzinfo=UTC)
RECRAWLED = ("cnn_001", "spanish_article", "thai_article")


def url_of(stem: str) -> str:
    meta = PAGES / f"{stem}.json"
    if meta.exists():
        url = json.loads(meta.read_text()).get("url")
        if url:
            return url
    return f"https://samples.corpusmill.invalid/newspaper4k/{stem}.html"


def write_page(writer: WARCWriter, url: str, body: bytes, when: datetime) -> None:
    date = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    http = StatusAndHeaders(
        "200 OK",
        [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
        protocol="HTTP/1.1",
    )
    rec = writer.create_warc_record(
        url,
        "response",
        payload=io.BytesIO(body),
        http_headers=http,
        warc_headers_dict={"WARC-Date": date},
    )
    writer.write_record(rec)
    req = StatusAndHeaders(
        f"GET {url} HTTP/1.1", [("User-Agent", "corpusmill-samples")], is_http_request=True
    )
    writer.write_record(
        writer.create_warc_record(
            url, "request", http_headers=req, warc_headers_dict={"WARC-Date": date}
        )
    )


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    stems = sorted(p.stem for p in PAGES.glob("*.html"))
    with open(OUT, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i, stem in enumerate(stems):
            write_page(
                writer,
                url_of(stem),
                (PAGES / f"{stem}.html").read_bytes(),
                CRAWL + timedelta(minutes=i),
            )
        for i, stem in enumerate(RECRAWLED):
            later = CRAWL + timedelta(days=7, minutes=i)
            write_page(writer, url_of(stem), (PAGES / f"{stem}.html").read_bytes(), later)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(stems) + len(RECRAWLED)} responses)")


if __name__ == "__main__":
    main()
