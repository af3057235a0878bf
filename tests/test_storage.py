"""storage/: schemas, shard files, manifests, atomic writes, and an S3-compatible store.

Shards are real Parquet files on disk (or in a moto S3 server on 127.0.0.1); the
atomic-write test SIGKILLs a real writer process in the middle of a shard.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from stages_for_tests import doc_row, output_dir, subprocess_env, write_doc_output

from storage import (
    DOC_SCHEMA,
    CorpusStore,
    Manifest,
    ManifestError,
    attribute_schema,
    make_doc_id,
    open_fs,
    read_shard,
    write_shard,
)
from storage.fs import TMP_PREFIX
from storage.schema import check_aligned
from storage.shards import iter_batches

UNICODE_TEXTS = [
    "Grüße aus Köln – „Anführungszeichen“ und ß",
    "日本語のテキスト、漢字とかな。",
    "العربية من اليمين إلى اليسار",
    "emoji 🧪🚀 and combining e\u0301 and zero\u200bwidth",
    "line\nbreaks\r\nand\ttabs and a NUL \x00 inside",
    "",
]


def _rows() -> list[dict]:
    rows = []
    for i, text in enumerate(UNICODE_TEXTS):
        rows.append(doc_row(f"rec-{i}", text, i=i))
    # nulls everywhere a field is nullable, including the whole meta struct
    rows.append(
        {
            "doc_id": make_doc_id("test", "rec-null"),
            "source": "test",
            "native_id": "rec-null",
            "url": None,
            "text": "no metadata at all",
            "fetched_at": None,
            "modified_at": None,
            "meta": None,
        }
    )
    # a struct whose fields are partly null, and timestamps with microseconds / other zones
    rows.append(
        {
            **doc_row("rec-partial", "partial metadata"),
            "fetched_at": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            "modified_at": datetime(2024, 2, 29, 12, 0, tzinfo=timezone(timedelta(hours=9))),
            "meta": {"input_file": "x.warc.gz", "http_status": 404, "raw_bytes": 2**40},
        }
    )
    return rows


def test_document_shard_round_trip(tmp_path):
    fs = open_fs(str(tmp_path))
    rows = _rows()
    path = fs.path("docs", "part-00000.parquet")
    info = write_shard(fs, path, pa.Table.from_pylist(rows, schema=DOC_SCHEMA), DOC_SCHEMA)

    blob = Path(path).read_bytes()
    assert info.name == "part-00000.parquet"
    assert info.rows == len(rows)
    assert info.bytes == len(blob) == fs.size(path)
    assert info.sha256 == hashlib.sha256(blob).hexdigest()

    table = read_shard(fs, path, expect=info)
    assert table.schema.equals(DOC_SCHEMA, check_metadata=True)  # nullability and metadata kept
    assert table.schema.metadata[b"corpusmill.schema"] == b"document"
    got = table.to_pylist()
    assert [r["text"] for r in got] == [r["text"] for r in rows]
    assert got[len(UNICODE_TEXTS)] == rows[len(UNICODE_TEXTS)]  # the all-null row
    partial = got[-1]
    assert partial["fetched_at"] == datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert partial["modified_at"] == datetime(2024, 2, 29, 3, 0, tzinfo=UTC)  # stored in UTC
    assert partial["modified_at"].tzinfo is not None
    assert partial["meta"] == {
        "input_file": "x.warc.gz",
        "input_offset": None,
        "content_type": None,
        "charset": None,
        "http_status": 404,
        "title": None,
        "html_lang": None,
        "raw_bytes": 2**40,
        "extractor": None,
    }
    n = len(UNICODE_TEXTS)
    for want, have in zip(rows[:n], got[:n], strict=True):
        assert have == want

    # columns can be read on their own, and streamed
    assert read_shard(fs, path, columns=["doc_id"]).column_names == ["doc_id"]
    streamed = pa.Table.from_batches(list(iter_batches(fs, path, batch_rows=3)))
    assert streamed.equals(table)


def test_write_shard_casts_batches_streams_and_handles_empty(tmp_path):
    fs = open_fs(str(tmp_path))
    # batches from a generator, typed loosely (int64 status, naive timestamps): cast on write
    loose = pa.schema(
        [
            ("doc_id", pa.string()),
            ("source", pa.string()),
            ("native_id", pa.string()),
            ("url", pa.string()),
            ("text", pa.string()),
            ("fetched_at", pa.timestamp("us")),
            ("modified_at", pa.timestamp("us")),
            (
                "meta",
                pa.struct(
                    [
                        (f.name, f.type if f.name != "http_status" else pa.int64())
                        for f in DOC_SCHEMA.field("meta").type
                    ]
                ),
            ),
        ]
    )

    def batches():
        for b in range(3):
            rows = [
                {**doc_row(f"b{b}-{i}", f"text {b} {i}"), "fetched_at": datetime(2024, 1, 1, b, i)}
                for i in range(4)
            ]
            yield pa.RecordBatch.from_pylist(rows, schema=loose)
        yield pa.RecordBatch.from_pylist([], schema=loose)  # empty batches are skipped

    path = fs.path("part-00001.parquet")
    info = write_shard(fs, path, batches(), DOC_SCHEMA)
    table = read_shard(fs, path, expect=info)
    assert info.rows == table.num_rows == 12
    assert table.schema.equals(DOC_SCHEMA, check_metadata=True)
    assert table.column("fetched_at").to_pylist()[5] == datetime(2024, 1, 1, 1, 1, tzinfo=UTC)

    empty_path = fs.path("part-00002.parquet")
    empty = write_shard(fs, empty_path, iter(()), DOC_SCHEMA)
    assert empty.rows == 0 and empty.bytes == os.path.getsize(empty_path)
    assert read_shard(fs, empty_path, expect=empty).schema.equals(DOC_SCHEMA)


def test_doc_id_depends_on_source_and_native_id_only():
    rid = "<urn:uuid:0b3f1c4e-3a55-4c8e-8a50-0d5a1f6f2c11>"
    a = make_doc_id("web", rid)
    assert a == make_doc_id("web", rid)  # stable within a run
    # pinned: ids are stored in every attribute shard, so they must never change
    # between versions (xxh3-128 of "source\x1fnative_id")
    assert a == "efe57532fe951c2de4144b72db8db747"
    assert make_doc_id("pdf", rid) != a  # differs by source
    assert make_doc_id("web", rid.replace("11>", "12>")) != a  # and by native id
    # the separator keeps (source, id) pairs apart even when the concatenation matches
    assert make_doc_id("we", "b" + rid) != a
    # the text is not an input at all: re-extracting a page keeps its id
    old = doc_row(rid, "old extraction", source="web")
    new = doc_row(rid, "a much better extraction of the same page", source="web")
    assert old["doc_id"] == new["doc_id"] == a
    for bad in [("", rid), ("web", ""), ("web", None)]:
        with pytest.raises(ValueError):
            make_doc_id(*bad)


def test_doc_id_is_stable_across_processes():
    rid = "<urn:uuid:1e3a>"
    code = f"from storage import make_doc_id; print(make_doc_id('web', {rid!r}))"
    child = subprocess.run(
        [sys.executable, "-c", code],
        env={**subprocess_env(), "PYTHONHASHSEED": "12345"},
        check=True,
        capture_output=True,
        text=True,
    )
    assert child.stdout.strip() == make_doc_id("web", rid)


def test_attribute_shards_align_with_their_documents(tmp_path):
    fs = open_fs(str(tmp_path))
    docs = pa.Table.from_pylist(
        [doc_row(f"d{i}", f"text {i}") for i in range(10)], schema=DOC_SCHEMA
    )
    schema = attribute_schema(
        [pa.field("quality", pa.float32()), pa.field("lang", pa.string())], "quality-v1"
    )
    assert schema.names == ["doc_id", "quality", "lang"]
    assert not schema.field("doc_id").nullable
    assert schema.metadata[b"corpusmill.schema"] == b"attributes"
    assert schema.metadata[b"corpusmill.tagger"] == b"quality-v1"

    ids = docs.column("doc_id").to_pylist()
    rows = [{"doc_id": d, "quality": i / 10, "lang": "en"} for i, d in enumerate(ids)]
    # written in two batches: the chunking differs from the document shard's
    batches = [
        pa.RecordBatch.from_pylist(rows[:3], schema=schema),
        pa.RecordBatch.from_pylist(rows[3:], schema=schema),
    ]
    info = write_shard(fs, fs.path("attrs.parquet"), iter(batches), schema)
    attrs = read_shard(fs, fs.path("attrs.parquet"), expect=info)
    assert attrs.schema.equals(schema, check_metadata=True)
    check_aligned(docs, attrs)  # aligned: no error

    with pytest.raises(ValueError, match="not in document order"):
        check_aligned(docs, attrs.take(list(reversed(range(10)))))
    with pytest.raises(ValueError, match="rows"):
        check_aligned(docs, attrs.slice(0, 9))
    swapped = pa.Table.from_pylist(
        [
            {**r, "doc_id": make_doc_id("test", "other")} if i == 4 else r
            for i, r in enumerate(rows)
        ],
        schema=schema,
    )
    with pytest.raises(ValueError, match="not in document order"):
        check_aligned(docs, swapped)


def _output_with_manifest(tmp_path):
    out = output_dir(tmp_path / "out")
    shards = [
        [doc_row(f"s{s}-{i}", f"shard {s} row {i} " * 20) for i in range(50)] for s in range(3)
    ]
    manifest = write_doc_output(out, shards)
    return out, manifest


def test_manifest_round_trip_and_digest(tmp_path):
    out, manifest = _output_with_manifest(tmp_path)
    back = out.manifest()
    assert back.shards == manifest.shards
    assert back.digest() == manifest.digest()
    assert back.rows == 150
    back.verify(out.fs, out.folder, checksums=True)
    assert [p for p, _ in out.shard_infos()] == out.shard_files()

    later = Manifest.from_json(manifest.to_json())
    later.seconds, later.created_at = 99.0, 0.0
    assert later.digest() == manifest.digest()  # timings are not part of the data version
    later.config = {"shards": 4}
    assert later.digest() != manifest.digest()


def test_flipped_byte_is_caught_by_checksums(tmp_path):
    out, manifest = _output_with_manifest(tmp_path)
    info = manifest.shards[1]
    path = Path(out.folder) / info.name
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))

    manifest.verify(out.fs, out.folder, checksums=False)  # same size: the quick check passes
    with pytest.raises(ManifestError, match="sha256"):
        out.manifest().verify(out.fs, out.folder, checksums=True)
    with pytest.raises(ManifestError, match="checksum mismatch"):
        read_shard(out.fs, str(path), expect=info)
    # the other shards are still fine
    read_shard(out.fs, os.path.join(out.folder, manifest.shards[0].name), expect=manifest.shards[0])


def test_truncated_or_missing_shard_is_caught_by_size(tmp_path):
    out, manifest = _output_with_manifest(tmp_path)
    info = manifest.shards[2]
    path = Path(out.folder) / info.name
    path.write_bytes(path.read_bytes()[: info.bytes - 100])
    with pytest.raises(
        ManifestError, match=f"{info.bytes - 100} bytes on disk, manifest says {info.bytes}"
    ):
        out.manifest().verify(out.fs, out.folder, checksums=False)
    with pytest.raises(ManifestError):
        out.shard_infos()  # verifies sizes before handing out paths
    with pytest.raises(ManifestError):
        read_shard(out.fs, str(path), expect=info)

    path.unlink()
    with pytest.raises(ManifestError, match="missing"):
        out.manifest().verify(out.fs, out.folder, checksums=False)

    (Path(out.folder) / "_manifest.json").unlink()
    with pytest.raises(ManifestError, match="no _manifest.json"):
        out.manifest()


WRITER = """
import sys, time
import pyarrow as pa
from storage import DOC_SCHEMA, open_fs, write_shard
from stages_for_tests import doc_row

fs = open_fs(sys.argv[1])

def batches():
    for b in range(10_000):
        rows = [doc_row(f"b{b}-{i}", f"batch {b} row {i} " * 40) for i in range(200)]
        yield pa.RecordBatch.from_pylist(rows, schema=DOC_SCHEMA)
        time.sleep(0.02)

write_shard(fs, fs.path("part-00000.parquet"), batches(), DOC_SCHEMA)
print("finished", flush=True)
"""


def test_writer_killed_mid_shard_leaves_no_visible_file(tmp_path):
    folder = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    try:
        while True:  # wait until the shard is well under way, then kill the writer
            temps = list(folder.glob(TMP_PREFIX + "*")) if folder.exists() else []
            if temps and temps[0].stat().st_size > 200_000:
                break
            if proc.poll() is not None:
                pytest.fail(f"writer exited: {proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("the writer wrote nothing within 30 s")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    fs = open_fs(str(folder))
    assert not (folder / "part-00000.parquet").exists()  # nothing under the final name
    assert fs.ls(fs.root) == [] == fs.ls(fs.root, ".parquet")  # the temp file is hidden
    assert fs.find(fs.root, (".parquet",)) == []
    assert len(list(folder.glob(TMP_PREFIX + "*"))) == 1  # ... but it is there
    assert fs.clean_temp(fs.root) == 1
    assert os.listdir(folder) == []

    # a writer that raises (in-process) leaves nothing behind either
    def failing():
        yield pa.RecordBatch.from_pylist([doc_row("x", "x")], schema=DOC_SCHEMA)
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        write_shard(fs, fs.path("part-00000.parquet"), failing(), DOC_SCHEMA)
    assert os.listdir(folder) == []


def test_s3_compatible_store(s3_endpoint):
    options = {"endpoint_url": s3_endpoint, "key": "x", "secret": "y"}
    store = CorpusStore("s3://corpus/runs/one", options)
    assert not store.fs.is_local
    store.fs.fs.mkdir("corpus")  # the bucket
    out = store.output("text/web")
    assert out.uri == "s3://corpus/runs/one/text/web"

    rows = [doc_row(f"d{i}", f"document {i} – ünïcödé") for i in range(20)]
    info = write_shard(
        out.fs,
        out.shard_path("part-00000"),
        pa.Table.from_pylist(rows, schema=DOC_SCHEMA),
        DOC_SCHEMA,
    )
    manifest = Manifest(stage="test/source", version="1", config={}, shards=[info])
    out.write_manifest(manifest)

    # a fresh client (no cached instance or listings) sees exactly the shard and the manifest
    fresh = {**options, "skip_instance_cache": True}
    again = CorpusStore("s3://corpus/runs/one", fresh).output("text/web")
    assert again.has_manifest()
    assert [p.rsplit("/", 1)[1] for p in again.shard_files()] == ["part-00000.parquet"]
    back = again.manifest()
    assert back.digest() == manifest.digest()
    back.verify(again.fs, again.folder, checksums=True)
    [(path, shard)] = again.shard_infos()
    table = read_shard(again.fs, path, expect=shard)
    assert table.to_pylist() == pa.Table.from_pylist(rows, schema=DOC_SCHEMA).to_pylist()
    blob = again.fs.read_bytes(path)
    assert hashlib.sha256(blob).hexdigest() == info.sha256 and len(blob) == info.bytes

    # a corrupted object is caught, as on a local disk
    bad = bytearray(blob)
    bad[100] ^= 0xFF
    again.fs.write_bytes(path, bytes(bad))
    with pytest.raises(ManifestError):
        third = CorpusStore("s3://corpus/runs/one", fresh).output("text/web")
        third.manifest().verify(third.fs, third.folder, checksums=True)


def test_s3_endpoint_from_environment(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    fs = open_fs("s3://envbucket/prefix", {"skip_instance_cache": True})  # no endpoint here
    fs.fs.mkdir("envbucket")
    info = write_shard(
        fs,
        fs.path("part-00000.parquet"),
        pa.Table.from_pylist([doc_row("a", "b")], schema=DOC_SCHEMA),
        DOC_SCHEMA,
    )
    assert read_shard(fs, fs.path("part-00000.parquet"), expect=info).num_rows == 1
    assert fs.uri(fs.path("part-00000.parquet")) == "s3://envbucket/prefix/part-00000.parquet"
