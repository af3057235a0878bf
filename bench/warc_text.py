"""WARC -> text on one core: corpusmill's ``text/web`` vs datatrove WarcReader + Trafilatura.

Speed. A corpus is built in a temp dir from the bundled samples: the WARCs in
samples/warc/ (news pages; warcbench captures with images, PDFs, 404s, redirects,
br/zstd/gzip encodings) plus ``synthetic-news.warc.gz``, written with warcio in the
Common Crawl layout (a gzip member per record, a request before each HTTP 200
text/html response with ``WARC-Identified-Payload-Type``), repeating the pages of
samples/html/newspaper4k under distinct URLs and record ids until the corpus holds
``--records`` response records. Each side then runs in a child process of this
script, one after the other, pinned to the same core (``os.sched_setaffinity``; the
processes a child forks inherit the pin; cpu/wall in the table shows it held):

  ours  ``WarcTextStage.process(open_input(fs, Task(..)), ctx)`` per file, counting
        the rows of the document batches (fastwarc + resiliparse main content).
  peer  ``Trafilatura().run(WarcReader(folder).run())``, the steps' generators chained
        in one process as a 1-task LocalPipelineExecutor runs them, with defaults
        (favour_precision, deduplicate, timeout=1 s): trafilatura runs in ONE forked
        sandbox process fed through a pipe, respawned only after a timeout or crash.
        Two adjustments, both reported: trafilatura's process-wide dedup cache is
        cleared per page (the corpus repeats 23 pages; ``--keep-dedup-cache`` keeps
        it), and warcio's brotli decoder is shimmed (it crashes with Brotli 1.2).

Timed: reading + extracting only (imports, corpus building excluded). records/s =
WARC response records in the corpus / wall s (both sides see all of them; docs out
differ: ours keeps HTTP 200 HTML, datatrove any status). WARC MB/s = compressed
bytes / wall s; HTML MB/s = HTTP body bytes of text/html responses / wall s.
rec/cpu_s divides by CPU seconds (self + reaped children) instead: on a busy box,
where cpu/wall drops below 1, it is the figure that other load does not move.

Quality. Each samples/html/newspaper4k/<stem>.html against its reference main text
<stem>.txt (newspaper4k's test expectations): ours = ``html_to_text(bytes, None)``,
peer = datatrove's ``Trafilatura().extract`` on the HTML decoded as its WarcReader
does (UTF-8, else cchardet). Tokens: NFKC + casefold runs of word characters (i.e.
whitespace tokens minus punctuation); runs in scripts written without spaces (Thai,
Lao, Burmese, Khmer, kana, CJK) become overlapping character bigrams. Recall /
precision = multiset overlap / reference tokens / extracted tokens.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Python puts bench/ first on sys.path, where scripts named like stdlib modules (e.g.
# bench/tokenize.py) would shadow them in the lazy imports below: swap it for the root.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
PAGES = ROOT / "samples" / "html" / "newspaper4k"
BUNDLED = sorted((ROOT / "samples" / "warc").glob("*/*.warc*"))
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Thai+Lao, Myanmar, Khmer, kana, CJK ideographs (+ext A, compat): no spaces between words
NOSPACE = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
)
TOKEN = re.compile(f"([{NOSPACE}]+)|[^\\W{NOSPACE}]+")


# corpus ---------------------------------------------------------------------------
def corpus_stats(folder: Path) -> dict[str, int]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    st = Counter(files=0, warc_bytes=0, responses=0, html_bytes=0)
    for p in sorted(folder.iterdir()):
        st["files"] += 1
        st["warc_bytes"] += p.stat().st_size
        with open(p, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                st["responses"] += 1
                ctype = (rec.http_headers.get("Content-Type") or "") if rec.http_headers else ""
                if ctype.split(";")[0].strip().lower() in HTML_TYPES:
                    st["html_bytes"] += rec.content_length  # body bytes after the HTTP headers
    return dict(st)


def write_synthetic(path: Path, n: int) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = [(p.stem, p.read_bytes()) for p in sorted(PAGES.glob("*.html"))]
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i in range(n):
            stem, body = pages[i % len(pages)]
            url = f"https://bench.corpusmill.invalid/{i // len(pages)}/{stem}.html"
            date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1715673600 + i))
            req = StatusAndHeaders(f"GET {url} HTTP/1.1", [], is_http_request=True)
            writer.write_record(
                writer.create_warc_record(
                    url, "request", http_headers=req, warc_headers_dict={"WARC-Date": date}
                )
            )
            hdrs = [("Content-Type", "text/html"), ("Content-Length", str(len(body)))]
            http = StatusAndHeaders("200 OK", hdrs, protocol="HTTP/1.1")
            warc = {"WARC-Date": date, "WARC-Identified-Payload-Type": "text/html"}
            writer.write_record(
                writer.create_warc_record(
                    url,
                    "response",
                    payload=io.BytesIO(body),
                    http_headers=http,
                    warc_headers_dict=warc,
                )
            )


def build_corpus(folder: Path, n_records: int) -> dict[str, int]:
    folder.mkdir(parents=True)
    for p in BUNDLED:
        shutil.copyfile(p, folder / p.name)
    missing = n_records - corpus_stats(folder)["responses"]
    if missing > 0:
        write_synthetic(folder / "synthetic-news.warc.gz", missing)
    return corpus_stats(folder)


# the two sides (run in child processes) -------------------------------------------
def cpu_seconds() -> float:
    rus = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(r.ru_utime + r.ru_stime for r in rus)


def run_ours(folder: Path) -> dict[str, Any]:
    from pipelines.stage import StageContext, Task
    from pipelines.web.warc_text import WarcTextStage
    from storage.fs import open_fs

    stage, fs = WarcTextStage(), open_fs(str(folder))
    files = sorted(str(p) for p in folder.iterdir())
    docs, counters = 0, Counter()
    c0, t0 = cpu_seconds(), time.perf_counter()
    for path in files:
        ctx = StageContext(stage.name, path)
        for batch in stage.process(stage.open_input(fs, Task("x", path)), ctx):
            docs += batch.num_rows
        counters.update(ctx.counters)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "docs_out": docs,
        "records_in": counters["records_in"],
        "counters": dict(counters),
    }


def patch_warcio_brotli() -> bool:
    """warcio 1.8.1 sets ``unused_data`` on brotli.Decompressor and calls brotlipy's
    ``decompress``/``flush``: with Brotli 1.2 WarcReader dies (AttributeError) on the
    first br-encoded response. Supply that API; returns True if it was needed."""
    import brotli
    from warcio.bufferedreaders import BufferedReader

    try:
        BufferedReader.DECOMPRESSORS["br"]().decompress(b"")
        return False
    except AttributeError:
        pass

    class Br:
        unused_data = None

        def __init__(self) -> None:
            self._d = brotli.Decompressor()

        def decompress(self, data: bytes) -> bytes:
            return self._d.process(data)

        def flush(self) -> bytes:
            return b""

    BufferedReader.DECOMPRESSORS["br"] = Br
    return True


def peer_extractor(keep_dedup_cache: bool):  # type: ignore[no-untyped-def]
    """datatrove's Trafilatura, defaults. Unless ``keep_dedup_cache``, trafilatura's global
    dedup LRU is cleared before each page: kept, every repeat of a page after the 3rd comes
    back empty (and slower, via the fallbacks), which distinct real pages would not."""
    from datatrove.pipeline.extractors import Trafilatura
    from trafilatura.deduplication import LRU_TEST

    class FreshTrafilatura(Trafilatura):
        def extract(self, text: str) -> str:
            LRU_TEST.clear()
            return super().extract(text)

    return Trafilatura() if keep_dedup_cache else FreshTrafilatura()


def run_peer(folder: Path, keep_dedup_cache: bool = False) -> dict[str, Any]:
    import trafilatura  # noqa: F401  (imported before the clock, like resiliparse on our side)
    from datatrove.pipeline.readers import WarcReader
    from datatrove.utils.logging import logger

    logger.remove()  # no per-file log lines on stderr; stats are read below
    patched = patch_warcio_brotli()
    reader, extractor = WarcReader(str(folder)), peer_extractor(keep_dedup_cache)
    docs = 0
    c0, t0 = cpu_seconds(), time.perf_counter()
    for _doc in extractor.run(reader.run(None, 0, 1), 0, 1):
        docs += 1
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    stats = {k: v.total for k, v in extractor.stats.stats.items()}
    respawns = stats.get("timeout", 0) + stats.get("broken_process", 0)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "docs_out": docs,
        "extractor_stats": stats,
        "html_docs_read": stats.get("total", 0),
        "sandbox_processes": 1 + respawns,
        "warcio_brotli_patched": patched,
    }


def child(side: str, folder: Path, cpu: int | None, out: Path, keep_dedup_cache: bool) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    res = run_ours(folder) if side == "ours" else run_peer(folder, keep_dedup_cache)
    res["cpu_pinned"] = cpu
    out.write_text(json.dumps(res))


def run_side(side: str, folder: Path, cpu: int | None, tmp: Path, keep: bool) -> dict[str, Any]:
    out = tmp / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--dir", str(folder), "--out", str(out)]
    cmd += (["--keep-dedup-cache"] if keep else []) + ([] if cpu is None else ["--cpu", str(cpu)])
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{side} side failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


# quality --------------------------------------------------------------------------
def tokens(text: str) -> list[str]:
    out: list[str] = []
    for m in TOKEN.finditer(unicodedata.normalize("NFKC", text).casefold()):
        run = m.group(1)
        if run:
            out.extend(run[i : i + 2] for i in range(max(1, len(run) - 1)))
        else:
            out.append(m.group(0))
    return out


def score(extracted: str, reference: str) -> tuple[float, float, float]:
    ext, ref = Counter(tokens(extracted)), Counter(tokens(reference))
    hit = sum((ext & ref).values())
    r = hit / max(1, sum(ref.values()))
    p = hit / sum(ext.values()) if ext else 0.0
    return r, p, (2 * r * p / (r + p) if r + p else 0.0)


def datatrove_decode(body: bytes) -> str | None:
    """The decoding of datatrove's WarcReader.process_record (UTF-8, else cchardet)."""
    import cchardet

    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        enc = cchardet.detect(body)["encoding"]
    try:
        return body.decode(enc) if enc and enc != "UTF-8" else None
    except (UnicodeDecodeError, LookupError):
        return None


def quality() -> dict[str, Any]:
    from pipelines.web.html import html_to_text

    peer = peer_extractor(keep_dedup_cache=False)
    rows = []
    for ref_path in sorted(PAGES.glob("*.txt")):
        html_path = ref_path.with_suffix(".html")
        if not html_path.exists():
            continue
        body, ref = html_path.read_bytes(), ref_path.read_text(encoding="utf-8")
        ours = html_to_text(body, None).text
        html = datatrove_decode(body)
        theirs = (peer.extract(html) or "") if html is not None else ""
        rows.append(
            {
                "page": html_path.stem,
                "ref_tokens": len(tokens(ref)),
                "ours": score(ours, ref),
                "peer": score(theirs, ref),
            }
        )
    mean = {s: [sum(r[s][k] for r in rows) / len(rows) for k in range(3)] for s in ("ours", "peer")}
    return {"pages": rows, "mean": mean}


# report ---------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="400 records instead of 2000")
    ap.add_argument("--records", type=int, help="response records in the corpus (default 2000)")
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument(
        "--keep-dedup-cache",
        action="store_true",
        help="peer: keep trafilatura's cross-page dedup cache (see peer_extractor)",
    )
    ap.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        child(args.side, args.dir, args.cpu, args.out, args.keep_dedup_cache)
        return

    n = args.records or (400 if args.quick else 2000)
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    with tempfile.TemporaryDirectory(prefix="bench-warc-text-") as td:
        tmp = Path(td)
        corpus = build_corpus(tmp / "warc", n)
        print(
            f"corpus: {corpus['files']} WARC files, {corpus['responses']} response records, "
            f"{corpus['warc_bytes'] / 1e6:.1f} MB compressed, "
            f"{corpus['html_bytes'] / 1e6:.1f} MB HTML; one core (cpu {cpu})",
            flush=True,
        )
        sides = {
            s: run_side(s, tmp / "warc", cpu, tmp, args.keep_dedup_cache) for s in ("ours", "peer")
        }
    n_rec, mb = corpus["responses"], 1e6
    print(
        f"{'side':<5} {'records':>8} {'docs_out':>8} {'wall_s':>7} {'cpu/wall':>8} "
        f"{'records/s':>10} {'WARC MB/s':>10} {'HTML MB/s':>10} {'rec/cpu_s':>10}"
    )
    for s, r in sides.items():
        w = r["wall_s"]
        r["records_per_s"], r["records_per_cpu_s"] = n_rec / w, n_rec / r["cpu_s"]
        r["warc_mb_per_s"] = corpus["warc_bytes"] / mb / w
        r["html_mb_per_s"] = corpus["html_bytes"] / mb / w
        print(
            f"{s:<5} {n_rec:>8} {r['docs_out']:>8} {w:>7.2f} {r['cpu_s'] / w:>8.2f} "
            f"{r['records_per_s']:>10.1f} {r['warc_mb_per_s']:>10.2f} "
            f"{r['html_mb_per_s']:>10.2f} {r['records_per_cpu_s']:>10.1f}"
        )
    peer = sides["peer"]
    print(
        f"peer: {peer['html_docs_read']} HTML docs read, extractor stats "
        f"{peer['extractor_stats']}, {peer['sandbox_processes']} sandbox process(es) spawned"
        + (", warcio brotli shim applied" if peer["warcio_brotli_patched"] else "")
    )
    quarantined = {
        k[12:]: v for k, v in sides["ours"]["counters"].items() if k.startswith("quarantined.")
    }
    print(f"ours: {sides['ours']['records_in']} responses read, quarantined {quarantined}")

    q = quality()
    print(f"\nquality vs newspaper4k reference text ({len(q['pages'])} pages; R/P/F1 of tokens)")
    print(
        f"{'page':<22} {'ref_tok':>7}  {'ours R':>6} {'P':>5} {'F1':>5}  "
        f"{'traf R':>6} {'P':>5} {'F1':>5}"
    )
    for row in q["pages"]:
        o, p = row["ours"], row["peer"]
        print(
            f"{row['page']:<22} {row['ref_tokens']:>7}  {o[0]:>6.3f} {o[1]:>5.3f} {o[2]:>5.3f}  "
            f"{p[0]:>6.3f} {p[1]:>5.3f} {p[2]:>5.3f}"
        )
    for side, name in (("ours", "ours (resiliparse)"), ("peer", "peer (trafilatura)")):
        r, p, f = q["mean"][side]
        print(f"mean {name:<20} recall={r:.3f} precision={p:.3f} f1={f:.3f}")

    ours_rps, peer_rps = sides["ours"]["records_per_s"], peer["records_per_s"]
    ratio = ours_rps / peer_rps
    cpu_ratio = sides["ours"]["records_per_cpu_s"] / peer["records_per_cpu_s"]
    print(f"cpu-time ratio (rec/cpu_s, insensitive to other load on the core): {cpu_ratio:.2f}")
    if args.json:
        figures = {
            "corpus": corpus,
            "sides": sides,
            "quality": q,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
        }
        args.json.write_text(json.dumps(figures, indent=2))
    print(f"warc_text: ratio={ratio:.2f} ours={ours_rps:.1f} peer={peer_rps:.1f}")


if __name__ == "__main__":
    main()
