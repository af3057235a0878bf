"""HTML bytes -> main text, with the charset decided the way browsers decide it.

Charset: a BOM wins, then the HTTP header's charset, then the <meta> charset, then
uchardet's guess; labels are mapped through the WHATWG table (``latin1`` means
windows-1252 on the web). Bytes that do not fit the chosen charset fall back to
UTF-8 / windows-1252 instead of becoming mojibake or an exception.

Extraction: resiliparse's ``extract_plain_text(main_content=True)``. Measured by
bench/warc_text.py on the bundled news pages (one core, same files): about 8x the
records per CPU-second of datatrove's WarcReader + Trafilatura (about 200 vs 25),
with recall of the reference main text 0.997 vs 0.985 but precision 0.82 vs 0.95:
resiliparse keeps more boilerplate around the article (captions, related links).
At 36T tokens extraction speed decides the cluster size, and the later filters and
dedup remove much of that boilerplate, so resiliparse is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5
from resiliparse.parse.html import HTMLTree

EXTRACTOR = "resiliparse-2/main_content"
BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


@dataclass
class Extracted:
    text: str
    title: str | None
    lang: str | None
    charset: str


def choose_charset(body: bytes, http_charset: str | None) -> str:
    for bom, name in BOMS:
        if body.startswith(bom):
            return name
    if http_charset:
        mapped = map_encoding_to_html5(http_charset, fallback_utf8=False)
        if mapped:
            return mapped
    return detect_encoding(body, from_html_meta=True)


def looks_binary(body: bytes, charset: str) -> bool:
    """True for payloads that are not text whatever the headers say (NULs, control bytes)."""
    if charset.startswith("utf-16"):
        return False
    sample = body[:4096]
    if not sample:
        return False
    bad = sample.count(0) + sum(sample.count(b) for b in (1, 2, 3, 4, 5, 6, 14, 15, 16, 17, 26, 28))
    return bad / len(sample) > 0.01


def html_to_text(body: bytes, http_charset: str | None) -> Extracted:
    charset = choose_charset(body, http_charset)
    html = bytes_to_str(body, charset, fallback_encodings=("utf-8", "cp1252"))
    tree = HTMLTree.parse(html)
    text = extract_plain_text(
        tree, main_content=True, alt_texts=False, links=False, form_fields=False, noscript=False
    )
    lang = None
    root = tree.document.query_selector("html") if tree.document is not None else None
    if root is not None:
        lang = root.getattr("lang") or None
    title = (tree.title or "").strip() or None
    return Extracted(text=text.strip(), title=title, lang=lang, charset=charset)
