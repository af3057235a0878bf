"""WARC reading and the ``text/web`` stage on damaged and unusual input.

The WARC files are built in tmp_path with warcio (one gzip member per record, the
Common Crawl layout) from the real news pages in samples/html/newspaper4k, then
damaged the way real crawls get damaged: a gzip member cut in half in the middle of
the file, a final record cut short, records without Content-Type, pages in legacy
charsets, a 20 MB page, images, error statuses and binary junk declared as HTML.
Every bad record must be quarantined with its reason while everything else in the
file still comes out, byte for byte what the extractor makes of the page on its own.
The real sample WARCs in samples/warc run through the stage as well.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from stages_for_tests import REPO, output_dir
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipelines.runner import LocalRunner
from pipelines.web.html import EXTRACTOR, html_to_text
from pipelines.web.warc import Problem, iter_warc
from pipelines.web.warc_text import WarcTextStage, warc_tasks
from storage import make_doc_id, read_shard

PAGES = REPO / "samples" / "html" / "newspaper4k"
SAMPLE_WARCS = sorted((REPO / "samples" / "warc" / "warcbench").glob("*.warc*")) + [
    REPO / "samples" / "warc" / "news" / "newspaper4k-pages.warc.gz"
]
DATE = "2024-05-14T08:00:00Z"

# Anna Karenina (1878, public domain), the opening lines
RUSSIAN = (
    "Все счастливые семьи похожи друг на друга, каждая несчастливая семья "
    "несчастлива по-своему. Всё смешалось в доме Облонских. Жена узнала, что муж "
    "был в связи с бывшею в их доме француженкою-гувернанткой, и объявила мужу, что "
    "не может жить с ним в одном доме."
)
RUSSIAN_HTML = (
    "<!DOCTYPE html><html lang='ru'><head>{meta}<title>Анна Каренина</title></head>"
    "<body><nav><a href='/'>Главная</a></nav><article><h1>Часть первая</h1>"
    "<p>{text}</p></article></body></html>"
)


def page(stem: str) -> bytes:
    return (PAGES / f"{stem}.html").read_bytes()


def expected_text(body: bytes, charset: str | None = "utf-8") -> str:
    """What the extractor makes of the page on its own, outside any WARC."""
    return html_to_text(body, charset).text


def japanese(meta_charset: str | None) -> bytes:
    """The real Japanese news page, re-encoded to Shift_JIS (Windows-31J, as on the web)."""
    html = page("japanese_article2").decode("utf-8")
    meta = f'<meta charset="{meta_charset}">' if meta_charset else ""
    assert html.count('<meta charset="utf-8">') == 1
    return html.replace('<meta charset="utf-8">', meta).encode("cp932")


JAPANESE_FIRST_LINE = (PAGES / "japanese_article2.txt").read_text("utf-8").splitlines()[0]


def russian(meta_charset: str | None) -> bytes:
    meta = f'<meta charset="{meta_charset}">' if meta_charset else ""
    return RUSSIAN_HTML.format(meta=meta, text=RUSSIAN).encode("cp1251")


def tiny_png(width: int = 16, height: int = 16) -> bytes:
    """A real (valid) PNG image: an RGB gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 16, y * 16, 128))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class Rec:
    name: str
    data: bytes
    url: str
    record_id: str


@dataclass
class WarcFile:
    """A WARC built record by record, so that single records can be damaged."""

    gz: bool
    records: list[Rec] = field(default_factory=list)

    def response(
        self,
        name: str,
        body: bytes,
        content_type: str | None = "text/html; charset=utf-8",
        status: str = "200 OK",
    ) -> Rec:
        url = f"https://news.example.org/{name}.html"
        record_id = f"<urn:uuid:00000000-0000-4000-8000-{len(self.records):012d}>"
        headers = [("Content-Type", content_type)] if content_type else []
        headers.append(("Content-Length", str(len(body))))
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=self.gz)
        http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                http_headers=http,
                warc_headers_dict={"WARC-Record-ID": record_id, "WARC-Date": DATE},
            )
        )
        rec = Rec(name, buf.getvalue(), url, record_id)
        self.records.append(rec)
        return rec

    def request(self, of: Rec) -> None:
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=self.gz)
        req = StatusAndHeaders(
            f"GET {of.url} HTTP/1.1", [("User-Agent", "test")], is_http_request=True
        )
        writer.write_record(
            writer.create_warc_record(
                of.url, "request", http_headers=req, warc_headers_dict={"WARC-Date": DATE}
            )
        )
        self.records.append(Rec(f"{of.name}/request", buf.getvalue(), of.url, ""))

    def damage(self, name: str, how) -> None:
        for rec in self.records:
            if rec.name == name:
                rec.data = how(rec.data)
                return
        raise KeyError(name)

    def write(self, path: Path) -> dict[str, int]:
        """Write the file; returns each record's byte offset in it."""
        offsets, pos = {}, 0
        with open(path, "wb") as f:
            for rec in self.records:
                offsets[rec.name] = pos
                f.write(rec.data)
                pos += len(rec.data)
        return offsets


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def run_stage(tmp_path: Path, files: list[Path], name: str = "out"):
    """WarcTextStage through the real runner; returns manifest, docs and quarantine rows."""
    out = output_dir(tmp_path / name)
    tasks = warc_tasks(out.fs, [str(f) for f in files])
    manifest = LocalRunner(processes=1).run(WarcTextStage(), tasks, out)
    manifest.verify(out.fs, out.folder, checksums=True)
    docs = pa.concat_tables(
        read_shard(out.fs, f"{out.folder}/{s.name}", expect=s) for s in manifest.shards
    ).to_pylist()
    quarantine = [
        r
        for q in manifest.quarantine
        for r in read_shard(out.fs, f"{out.folder}/{q.name}", expect=q).to_pylist()
    ]
    return manifest, docs, quarantine


# ---------------------------------------------------------------------------
# one WARC.gz with every kind of trouble


@pytest.fixture(scope="module")
def troubled_warc(tmp_path_factory):
    w = WarcFile(gz=True)
    good: dict[str, tuple[bytes, str | None]] = {}  # name -> (body, charset to expect with)

    def keep(
        name: str, body: bytes, content_type: str = "text/html; charset=utf-8", charset="utf-8"
    ):
        rec = w.response(name, body, content_type)
        w.request(rec)
        good[name] = (body, charset)

    keep("cnn_article", page("cnn_article"))
    keep("spanish_article", page("spanish_article"))
    w.response("thai_article", page("thai_article"))  # its gzip member gets cut in half
    keep("latvian_article", page("latvian_article"))
    keep("arabic_article", page("arabic_article"))
    w.response("no_content_type", page("chinese_article_002"), content_type=None)
    keep("ru_header", russian(None), "text/html; charset=windows-1251", "windows-1251")
    keep("ru_meta", russian("windows-1251"), "text/html", None)
    keep("ja_header", japanese(None), "text/html; charset=Shift_JIS", "shift_jis")
    keep("ja_meta", japanese("shift_jis"), "text/html", None)
    paragraph = (
        b"<p>" + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20 + b"</p>\n"
    )
    huge = (
        b"<html><body><article>"
        + paragraph * (20_000_000 // len(paragraph))
        + b"</article></body></html>"
    )
    assert len(huge) > 19_900_000
    w.response("huge", huge)
    w.response("image", tiny_png(), "image/png")
    w.response("not_found", b"<html><body><h1>Not Found</h1></body></html>", status="404 Not Found")
    w.response("binary", random.Random(7).randbytes(6000), "text/html")
    keep("wired_001", page("wired_001"))
    w.response("time_001", page("time_001"))  # the last record, cut short

    w.damage("thai_article", cut_in_half)
    w.damage("time_001", lambda d: d[: len(d) * 2 // 3])
    folder = tmp_path_factory.mktemp("troubled")
    path = folder / "troubled.warc.gz"
    offsets = w.write(path)
    manifest, docs, quarantine = run_stage(folder, [path])
    return {
        "w": w,
        "good": good,
        "offsets": offsets,
        "manifest": manifest,
        "docs": docs,
        "quarantine": quarantine,
    }


def test_every_good_page_comes_out_whole(troubled_warc):
    docs = {d["url"].rsplit("/", 1)[1].removesuffix(".html"): d for d in troubled_warc["docs"]}
    assert sorted(docs) == sorted(troubled_warc["good"])
    for name, (body, charset) in troubled_warc["good"].items():
        doc = docs[name]
        # exactly the page's own text: no bytes of a damaged neighbour leaked in
        assert doc["text"] == expected_text(body, charset), name
        assert "WARC/1.0" not in doc["text"] and "WARC-Record-ID" not in doc["text"]


def test_records_after_a_cut_gzip_member_keep_their_offsets_and_ids(troubled_warc):
    offsets = troubled_warc["offsets"]
    by_url = {r.url: r for r in troubled_warc["w"].records if not r.name.endswith("/request")}
    for doc in troubled_warc["docs"]:
        rec = by_url[doc["url"]]
        assert doc["native_id"] == rec.record_id
        assert doc["doc_id"] == make_doc_id("web", rec.record_id)
        assert doc["source"] == "web"
        assert doc["meta"]["input_offset"] == offsets[rec.name]  # before and after the damage
        assert doc["meta"]["input_file"] == "troubled.warc.gz"
        assert doc["meta"]["http_status"] == 200
        assert doc["meta"]["content_type"] == "text/html"
        assert doc["meta"]["extractor"] == EXTRACTOR
        assert doc["fetched_at"] == datetime(2024, 5, 14, 8, 0, tzinfo=UTC)
    ids = [d["doc_id"] for d in troubled_warc["docs"]]
    assert len(ids) == len(set(ids))


def test_each_bad_record_is_quarantined_with_its_reason(troubled_warc):
    quarantine = troubled_warc["quarantine"]
    offsets = troubled_warc["offsets"]
    reasons = Counter(q["reason"] for q in quarantine)
    assert reasons == {
        "corrupt_gzip_member": 1,
        "truncated_record": 1,
        "no_content_type": 1,
        "too_large": 1,
        "not_html": 1,
        "http_status": 1,
        "binary_payload": 1,
    }
    by_reason = {q["reason"]: q for q in quarantine}
    expected_record = {
        "corrupt_gzip_member": "thai_article",
        "truncated_record": "time_001",
        "no_content_type": "no_content_type",
        "too_large": "huge",
        "not_html": "image",
        "http_status": "not_found",
        "binary_payload": "binary",
    }
    for reason, name in expected_record.items():
        q = by_reason[reason]
        assert q["url"] == f"https://news.example.org/{name}.html", reason
        assert q["offset"] == offsets[name], reason
        assert q["stage"] == "text/web"
        assert q["input"].endswith("troubled.warc.gz")
        assert q["detail"]
    assert by_reason["not_html"]["detail"] == "image/png"
    assert by_reason["http_status"]["detail"] == "HTTP 404"
    assert by_reason["binary_payload"]["excerpt"] == random.Random(7).randbytes(6000)[:1024]

    manifest = troubled_warc["manifest"]
    for reason, n in reasons.items():
        assert manifest.counters[f"quarantined.{reason}"] == n
    assert manifest.rows == manifest.counters["records_out"] == len(troubled_warc["good"])


def test_legacy_charsets_are_decoded(troubled_warc):
    docs = {d["url"].rsplit("/", 1)[1].removesuffix(".html"): d for d in troubled_warc["docs"]}
    for name in ("ru_header", "ru_meta"):  # windows-1251, declared in HTTP or in <meta> only
        assert RUSSIAN in docs[name]["text"], name
        assert docs[name]["meta"]["title"] == "Анна Каренина"
        assert docs[name]["meta"]["html_lang"] == "ru"
        assert docs[name]["meta"]["charset"] in ("cp1251", "windows-1251")
    for name in ("ja_header", "ja_meta"):  # Shift_JIS, declared in HTTP or in <meta> only
        assert JAPANESE_FIRST_LINE in docs[name]["text"], name
        assert "ボコ・ハラム" in docs[name]["text"]
        assert docs[name]["meta"]["charset"].replace("-", "_").lower() in (
            "shift_jis",
            "cp932",
            "windows_31j",
        )


# ---------------------------------------------------------------------------
# damage of one record in the middle, compressed and not


GOOD = ["cnn_article", "spanish_article", "thai_article", "latvian_article", "arabic_article"]


def _damaged_file(tmp_path: Path, gz: bool, victim: str, how, suffix: str):
    w = WarcFile(gz=gz)
    for name in GOOD:
        w.response(name, page(name))
    if how is not None:
        w.damage(victim, how)
    path = tmp_path / f"damaged{suffix}"
    offsets = w.write(path)
    return w, path, offsets


def _garble_magic(data: bytes) -> bytes:
    assert data.startswith(b"WARC/1.0\r\n")
    return b"XXXX/9.9\r\n" + data[10:]


def _content_length_too_large(data: bytes) -> bytes:
    head, sep, rest = data.partition(b"\r\n\r\n")
    lines = [
        (b"Content-Length: " + str(int(line.split(b":")[1]) + 50_000).encode())
        if line.startswith(b"Content-Length:")
        else line
        for line in head.split(b"\r\n")
    ]
    return b"\r\n".join(lines) + sep + rest


def _flip_bytes(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x55 for b in data[mid : mid + 64]) + data[mid + 64 :]


@pytest.mark.parametrize(
    "gz, how, reason, lost",
    [
        (False, _garble_magic, "corrupt_record", True),
        (False, cut_in_half, "truncated_record", True),
        (False, _content_length_too_large, "truncated_record", True),
        (True, cut_in_half, "corrupt_gzip_member", True),
        (True, _flip_bytes, "corrupt_gzip_member", True),
        (True, lambda d: random.Random(3).randbytes(3000) + d, "corrupt_gzip_member", False),
    ],
    ids=[
        "warc-magic-garbled",
        "warc-record-cut-in-half",
        "warc-content-length-too-large",
        "gz-member-cut-in-half",
        "gz-member-bytes-flipped",
        "gz-junk-before-member",
    ],
)
def test_one_damaged_record_in_the_middle(tmp_path, gz, how, reason, lost):
    suffix = ".warc.gz" if gz else ".warc"
    w, path, offsets = _damaged_file(tmp_path, gz, "spanish_article", how, suffix)
    _, docs, quarantine = run_stage(tmp_path, [path])

    assert [q["reason"] for q in quarantine] == [reason]
    got = {d["url"]: d for d in docs}
    survivors = [n for n in GOOD if not (lost and n == "spanish_article")]
    assert [d["url"] for d in docs] == [f"https://news.example.org/{n}.html" for n in survivors]
    junk = 3000 if not lost else 0  # junk inserted before the member shifts it
    for name in survivors:
        doc = got[f"https://news.example.org/{name}.html"]
        assert doc["text"] == expected_text(page(name)), name
        assert doc["meta"]["input_offset"] == offsets[name] + (
            junk if name == "spanish_article" else 0
        )
    if lost:  # the damaged record is named when its headers could still be read
        assert quarantine[0]["offset"] == offsets["spanish_article"]
        if how is not _garble_magic:
            assert quarantine[0]["url"] == "https://news.example.org/spanish_article.html"


def test_reader_yields_problems_in_file_order(tmp_path):
    w, path, offsets = _damaged_file(tmp_path, True, "thai_article", cut_in_half, ".warc.gz")
    with open(path, "rb") as f:
        items = list(iter_warc(f, max_payload=8 << 20))
    assert [type(i).__name__ for i in items] == [
        "WarcResponse",
        "WarcResponse",
        "Problem",
        "WarcResponse",
        "WarcResponse",
    ]
    assert [i.offset for i in items] == [offsets[n] for n in GOOD]
    problem = items[2]
    assert isinstance(problem, Problem)
    assert problem.record_id == w.records[2].record_id
    assert f"{offsets['latvian_article']}" in problem.detail  # where reading resumed


# ---------------------------------------------------------------------------
# the real sample WARCs


def test_sample_warcs(tmp_path):
    assert all(p.exists() for p in SAMPLE_WARCS)
    manifest, docs, quarantine = run_stage(tmp_path, SAMPLE_WARCS)
    assert len(docs) > 0 and manifest.rows == len(docs)
    ids = [d["doc_id"] for d in docs]
    assert len(ids) == len(set(ids))
    for d in docs:
        assert d["text"].strip(), d["url"]
        assert d["source"] == "web"
        assert d["native_id"].startswith("<urn:") and d["doc_id"] == make_doc_id(
            "web", d["native_id"]
        )
        assert d["url"] and not d["url"].startswith("<")  # WARC/1.0 (wget) writes <uri>
        assert d["fetched_at"] is not None
        meta = d["meta"]
        assert meta["input_file"] in {p.name for p in SAMPLE_WARCS}
        assert meta["input_offset"] >= 0
        assert meta["content_type"] in ("text/html", "application/xhtml+xml")
        assert meta["http_status"] == 200
        assert meta["charset"]
        assert meta["raw_bytes"] > 0
        assert meta["extractor"] == EXTRACTOR

    per_file = Counter(d["meta"]["input_file"] for d in docs)
    # every news page, plus the three recrawled copies, is a document of its own
    n_pages = len(list(PAGES.glob("*.html")))
    assert per_file["newspaper4k-pages.warc.gz"] == n_pages + 3
    news = [d for d in docs if d["meta"]["input_file"] == "newspaper4k-pages.warc.gz"]
    titles = {d["meta"]["title"] for d in news}
    assert len(titles) >= n_pages - 2  # real titles, not empty
    cnn = next(d for d in news if "Thanksgiving" in (d["meta"]["title"] or ""))
    assert "forecasters" in cnn["text"]
    # records that are not HTML 200 responses were quarantined, none lost silently
    c = manifest.counters
    assert c["records_in"] == manifest.rows + sum(
        v for k, v in c.items() if k.startswith("quarantined.")
    )
    assert {q["reason"] for q in quarantine} <= {
        "not_html",
        "http_status",
        "no_content_type",
        "empty_text",
    }
