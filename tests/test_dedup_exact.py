"""Exact dedup: normalised-text duplicates removed, first copy kept, resumable.

The source is a real document output (Parquet shards + manifest) with exact copies,
copies that differ only in whitespace, punctuation, case or Unicode form (all
removed), and near misses that are different texts (all kept). A last test runs the
real chain samples/warc/news -> text/web -> dedup, where three pages were recrawled
byte for byte a week later.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
from stages_for_tests import REPO, doc_row, output_dir, write_doc_output

from pipelines.dedup.exact import exact_dedup, normalise
from pipelines.runner import LocalRunner
from pipelines.web.warc_text import WarcTextStage, warc_tasks
from storage import read_shard

FOX = "The quick brown fox jumps over the lazy dog."
BOX = "Pack my box with five dozen liquor jugs."
SPHINX = "Sphinx of black quartz, judge my vow."

# (native_id, text, duplicate of native_id or None)
SHARDS = [
    [
        ("a", FOX, None),
        ("b", BOX, None),
        ("a-copy", FOX, "a"),  # exact copy in the same shard
        ("chapter-1", "Chapter 1. It was a bright cold day in April.", None),
    ],
    [
        ("c", SPHINX, None),
        ("a-spaces", "  The quick   brown fox\n\tjumps over the lazy dog ", "a"),  # whitespace
        ("b-shout", "PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS!!!", "b"),  # case, punctuation
        ("dogs", "The quick brown fox jumps over the lazy dogs.", None),  # one letter more
        ("chapter-2", "Chapter 2. It was a bright cold day in April.", None),  # one digit
    ],
    [
        ("c-dashes", "Sphinx -- of black quartz: judge my vow?", "c"),  # punctuation
        ("fish-ligature", "ﬁve ﬁne ﬁsh", None),  # NFKC: the ligature is "fi"
        ("fish", "Five fine fish", "fish-ligature"),
        ("strasse", "Die Straße", None),
        ("strasse-caps", "DIE STRASSE", "strasse"),  # casefold: ß == ss
        ("fullwidth", "ＦＵＬＬ　ＷＩＤＴＨ　１２３", None),
        ("fullwidth-ascii", "full width 123", "fullwidth"),  # NFKC
        ("word-order", "The quick brown fox jumps over the dog lazy.", None),
        ("a-last", FOX, "a"),  # the third copy points at the first too
    ],
]


def _ids() -> dict[str, str]:
    return {nid: doc_row(nid, "x")["doc_id"] for shard in SHARDS for nid, _, _ in shard}


def _source(tmp_path: Path, shards=SHARDS):
    source = output_dir(tmp_path / "text")
    rows = [
        [doc_row(nid, text, i=10 * s + r) for r, (nid, text, _) in enumerate(shard)]
        for s, shard in enumerate(shards)
    ]
    write_doc_output(source, rows)
    return source


def _shard_tables(out):
    manifest = out.manifest()
    manifest.verify(out.fs, out.folder, checksums=True)
    return {
        s.name: read_shard(out.fs, os.path.join(out.folder, s.name), expect=s)
        for s in manifest.shards
    }


def _quarantine(out):
    return [
        r
        for q in out.manifest().quarantine
        for r in read_shard(out.fs, os.path.join(out.folder, q.name), expect=q).to_pylist()
    ]


def test_normalisation():
    assert normalise("  The quick   brown fox\n\tjumps!! ") == "the quick brown fox jumps"
    assert normalise("ﬁve ＦＵＬＬ Straße") == normalise("five full STRASSE")
    assert normalise("snake_case-and.dots") == "snake case and dots"
    assert normalise("Chapter 1") != normalise("Chapter 2")


def test_duplicates_removed_first_copy_kept(tmp_path):
    source = _source(tmp_path)
    out = output_dir(tmp_path / "dedup")
    manifest = exact_dedup(LocalRunner(processes=1), source, out)
    ids = _ids()

    tables = _shard_tables(out)
    assert list(tables) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for (name, table), shard in zip(tables.items(), SHARDS, strict=True):
        kept = [(nid, text) for nid, text, dup in shard if dup is None]
        assert table.column("native_id").to_pylist() == [nid for nid, _ in kept], name
        assert table.column("text").to_pylist() == [text for _, text in kept]  # text untouched
        assert table.column("doc_id").to_pylist() == [ids[nid] for nid, _ in kept]

    dropped = [
        (s, r, nid, dup)
        for s, shard in enumerate(SHARDS)
        for r, (nid, _, dup) in enumerate(shard)
        if dup
    ]
    quarantine = _quarantine(out)
    assert [(q["native_id"], q["offset"]) for q in quarantine] == [
        (nid, r) for _, r, nid, _ in dropped
    ]
    for q, (s, _, nid, dup) in zip(quarantine, dropped, strict=True):
        assert q["reason"] == "duplicate"
        assert q["detail"] == f"same normalised text as {ids[dup]}"  # names the keeper
        assert q["stage"] == "dedup/web_exact"
        assert q["input"] == os.path.join(source.folder, f"part-{s:05d}.parquet")
        assert q["url"] == f"https://example.org/{nid}"

    n_docs = sum(len(s) for s in SHARDS)
    c = manifest.counters
    assert c["duplicates_removed"] == c["quarantined.duplicate"] == len(dropped) == 8
    assert c["unique_texts"] == n_docs - len(dropped) == manifest.rows
    assert c["records_in"] == n_docs
    assert manifest.inputs == [{"path": source.uri, "digest": source.manifest().digest()}]
    out_ids = [i for t in tables.values() for i in t.column("doc_id").to_pylist()]
    assert len(out_ids) == len(set(out_ids))
    texts = [normalise(t) for tb in tables.values() for t in tb.column("text").to_pylist()]
    assert len(texts) == len(set(texts))


def test_rerun_resumes(tmp_path):
    source = _source(tmp_path)
    out_dir = tmp_path / "dedup"
    out = output_dir(out_dir)
    runner = LocalRunner(processes=1)
    first = exact_dedup(runner, source, out)
    shards = sorted(out_dir.glob("*.parquet")) + sorted((out_dir / "_done").glob("*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}

    msgs: list[str] = []
    again = exact_dedup(runner, source, out, progress=msgs.append)
    assert msgs == [
        "dedup/exact_fingerprint: 3 of 3 tasks already done, resuming",
        "dedup/web_exact: 3 of 3 tasks already done, resuming",
    ]
    assert {p: p.stat().st_mtime_ns for p in shards} == mtimes
    assert again.digest() == first.digest()
    assert again.counters == first.counters

    # a run killed after the fingerprints and part of the filtering: one part to redo
    (out_dir / "part-00001.parquet").unlink()
    (out_dir / "_done" / "part-00001.json").unlink()
    (out_dir / "_manifest.json").unlink()
    msgs.clear()
    resumed = exact_dedup(runner, source, out, progress=msgs.append)
    assert msgs[0] == "dedup/exact_fingerprint: 3 of 3 tasks already done, resuming"
    assert msgs[1] == "dedup/web_exact: 2 of 3 tasks already done, resuming"
    assert [m.split("(")[1].split(":")[0] for m in msgs[2:]] == ["part-00001"]
    assert resumed.digest() == first.digest()
    _shard_tables(out)


def test_changed_source_is_deduplicated_anew(tmp_path):
    """Same part names, new content: stale fingerprints or filters must not be reused."""
    source = _source(tmp_path)
    out = output_dir(tmp_path / "dedup")
    runner = LocalRunner(processes=1)
    exact_dedup(runner, source, out)

    # re-extraction changed two documents: "dogs" now equals "a", "b-shout" is new text
    changed = [list(s) for s in SHARDS]
    changed[1][2] = ("b-shout", "Pack my box with six dozen liquor jugs.", None)
    changed[1][3] = ("dogs", "the QUICK brown fox jumps over the lazy dog", "a")
    source = _source(tmp_path, changed)
    manifest = exact_dedup(runner, source, out)

    ids = _ids()
    kept = [nid for shard in changed for nid, _, dup in shard if dup is None]
    out_ids = [i for t in _shard_tables(out).values() for i in t.column("doc_id").to_pylist()]
    assert out_ids == [ids[nid] for nid in kept]
    table = _shard_tables(out)["part-00001.parquet"]
    assert "Pack my box with six dozen liquor jugs." in table.column("text").to_pylist()
    dropped = [nid for shard in changed for nid, _, dup in shard if dup]
    assert [q["native_id"] for q in _quarantine(out)] == dropped
    assert manifest.counters["duplicates_removed"] == len(dropped)


def test_recrawled_news_pages_are_removed(tmp_path):
    runner = LocalRunner(processes=1)
    text = output_dir(tmp_path / "text")
    warc = REPO / "samples" / "warc" / "news" / "newspaper4k-pages.warc.gz"
    pages = runner.run(WarcTextStage(), warc_tasks(text.fs, [str(warc)]), text)
    out = output_dir(tmp_path / "dedup")
    manifest = exact_dedup(runner, text, out)

    # three pages were recrawled byte for byte; two sample pages are one page saved twice
    html = [p.read_bytes() for p in sorted((REPO / "samples/html/newspaper4k").glob("*.html"))]
    same_bytes = len(html) - len({hashlib.sha256(b).digest() for b in html})
    assert same_bytes == 1
    assert manifest.counters["duplicates_removed"] == 3 + same_bytes
    assert manifest.rows == pages.rows - 3 - same_bytes

    docs = pa.concat_tables(_shard_tables(text).values()).to_pylist()
    by_id = {d["doc_id"]: d for d in docs}
    quarantine = _quarantine(out)
    assert len(quarantine) == 3 + same_bytes
    recrawls = 0
    for q in quarantine:
        keeper = by_id[q["detail"].rsplit(" ", 1)[1]]
        copy = next(d for d in docs if d["native_id"] == q["native_id"])
        assert copy["url"] == q["url"]
        assert keeper["meta"]["input_offset"] < copy["meta"]["input_offset"]  # first kept
        assert keeper["text"] == copy["text"]
        if keeper["url"] == copy["url"]:
            assert keeper["fetched_at"] < copy["fetched_at"]  # the first crawl is kept
            recrawls += 1
    assert recrawls == 3
    kept_ids = [i for t in _shard_tables(out).values() for i in t.column("doc_id").to_pylist()]
    assert sorted(kept_ids) == sorted(
        set(by_id)
        - {d["doc_id"] for d in docs if d["native_id"] in {q["native_id"] for q in quarantine}}
    )
