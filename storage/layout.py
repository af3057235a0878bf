"""Where outputs live in the corpus store.

    <root>/<layer>/<name>/part-00000.parquet      shards
    <root>/<layer>/<name>/_quarantine/<part>.parquet  rejected records, with reasons
    <root>/<layer>/<name>/_done/<part>.json       per-shard completion markers (resume)
    <root>/<layer>/<name>/_manifest.json          written last: the output is complete

The key ``layer/name`` is the Dagster asset key (``text/web``, ``dedup/web_exact``).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from storage.fs import Filesystem, open_fs
from storage.manifest import MANIFEST_NAME, Manifest, ShardInfo

SHARD_SUFFIX = ".parquet"


@dataclass
class OutputDir:
    fs: Filesystem
    folder: str

    @property
    def uri(self) -> str:
        return self.fs.uri(self.folder)

    def shard_path(self, part: str) -> str:
        return posixpath.join(self.folder, part + SHARD_SUFFIX)

    def quarantine_path(self, part: str) -> str:
        return posixpath.join(self.folder, "_quarantine", part + SHARD_SUFFIX)

    def done_path(self, part: str) -> str:
        return posixpath.join(self.folder, "_done", part + ".json")

    # completion markers --------------------------------------------------
    def mark_done(self, part: str, record: dict[str, Any]) -> None:
        self.fs.write_bytes(self.done_path(part), json.dumps(record, sort_keys=True).encode())

    def done(self, part: str) -> dict[str, Any] | None:
        path = self.done_path(part)
        if not self.fs.exists(path):
            return None
        return json.loads(self.fs.read_bytes(path))

    # manifest --------------------------------------------------------------
    def has_manifest(self) -> bool:
        return self.fs.exists(posixpath.join(self.folder, MANIFEST_NAME))

    def manifest(self) -> Manifest:
        return Manifest.read(self.fs, self.folder)

    def write_manifest(self, manifest: Manifest) -> None:
        manifest.write(self.fs, self.folder)

    def shard_files(self) -> list[str]:
        return self.fs.ls(self.folder, SHARD_SUFFIX)

    def shard_infos(self, verify: bool = True) -> list[tuple[str, ShardInfo]]:
        """(path, info) of every shard the manifest lists, after checking the folder."""
        manifest = self.manifest()
        if verify:
            manifest.verify(self.fs, self.folder, checksums=False)
        return [(posixpath.join(self.folder, s.name), s) for s in manifest.shards]

    def clear(self) -> None:
        self.fs.remove(self.folder)


@dataclass
class CorpusStore:
    """The root every output hangs from: a local folder or an S3-compatible URL."""

    root: str
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.fs = open_fs(self.root, self.storage_options)

    def output(self, key: str) -> OutputDir:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"output key must look like 'layer/name', got {key!r}")
        return OutputDir(self.fs, self.fs.path(key))
