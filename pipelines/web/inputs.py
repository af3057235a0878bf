"""Finding the raw WARC files of a crawl and indexing them (asset ``raw/warc_files``).

An input is a folder (local or ``s3://``), a single WARC file, or a paths list
(``*.paths``, ``*.paths.gz``, ``*.txt``: one path or URL per line, the way Common
Crawl publishes ``warc.paths.gz``; relative lines resolve against the list's folder).
The index is a one-shard output (uri, bytes, version) whose manifest digest changes
whenever a file is added, removed or rewritten: that is the data version downstream
assets key on.
"""

from __future__ import annotations

import gzip
import hashlib
import posixpath
import time

import pyarrow as pa

from storage.fs import Filesystem, open_fs
from storage.layout import OutputDir
from storage.manifest import Manifest
from storage.shards import read_shard, write_shard

WARC_SUFFIXES = (".warc", ".warc.gz")
LIST_SUFFIXES = (".paths", ".paths.gz", ".txt")
FILES_SCHEMA = pa.schema(
    [pa.field("uri", pa.string()), pa.field("bytes", pa.int64()), pa.field("version", pa.string())]
)


def list_warc_files(url: str, storage_options: dict | None = None) -> list[dict]:
    fs = open_fs(url, storage_options)
    if not fs.exists(fs.root):
        raise FileNotFoundError(
            f"WARC input {url!r} does not exist; set CORPUSMILL_WARC_INPUT to a folder, file or paths list"
        )
    if fs.root.endswith(LIST_SUFFIXES) and fs.fs.isfile(fs.root):
        paths = _read_paths_list(fs)
    else:
        paths = [fs.uri(p) for p in fs.find(fs.root, WARC_SUFFIXES)]
    files = []
    for uri in sorted(set(paths)):
        ffs = open_fs(uri, storage_options)
        info = ffs.fs.info(ffs.root)
        version = str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")
        files.append(
            {
                "uri": uri,
                "bytes": int(info.get("size") or 0),
                "version": f"{info.get('size')}:{version}",
            }
        )
    if not files:
        raise FileNotFoundError(f"no *.warc or *.warc.gz files under {url!r}")
    return files


def _read_paths_list(fs: Filesystem) -> list[str]:
    blob = fs.read_bytes(fs.root)
    if fs.root.endswith(".gz"):
        blob = gzip.decompress(blob)
    base = fs.uri(posixpath.dirname(fs.root))
    out = []
    for line in blob.decode().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line if "://" in line or line.startswith("/") else posixpath.join(base, line))
    return out


def write_file_index(
    out: OutputDir, source_url: str, files: list[dict], stage: str = "raw/warc_files"
) -> Manifest:
    t0 = time.perf_counter()
    out.fs.clean_temp(out.folder)
    info = write_shard(
        out.fs,
        out.shard_path("part-00000"),
        pa.Table.from_pylist(files, FILES_SCHEMA),
        FILES_SCHEMA,
    )
    digest = hashlib.sha256(
        "\n".join(f"{f['uri']} {f['version']}" for f in files).encode()
    ).hexdigest()
    manifest = Manifest(
        stage=stage,
        version="1",
        config={"input": source_url},
        kind="files",
        inputs=[{"path": source_url, "digest": digest}],
        shards=[info],
        counters={"files": len(files), "bytes_raw": sum(f["bytes"] for f in files)},
        seconds=round(time.perf_counter() - t0, 3),
    )
    out.write_manifest(manifest)
    return manifest


def read_file_index(out: OutputDir) -> list[dict]:
    ((path, info),) = out.shard_infos()
    return read_shard(out.fs, path, expect=info).to_pylist()
