"""One filesystem layer for local paths and S3-compatible URLs.

fsspec does the work; this module adds the one thing every writer here needs, an
atomic write: on a local disk the bytes go to a hidden temporary file in the target
folder, are fsynced and renamed over the target (readers never see a partial
file); on an object store a PUT only becomes visible once complete, so the object is
written in one piece under its final key.

S3-compatible stores: use ``s3://bucket/prefix`` and set the endpoint with
``AWS_ENDPOINT_URL`` (MinIO, Ceph, R2 ...) or pass ``storage_options``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_PREFIX = ".tmp-"


@dataclass
class Filesystem:
    """A filesystem rooted anywhere fsspec reaches, with atomic writes."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self.root = os.path.abspath(self.root)

    # paths ---------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *[p.strip("/") for p in parts if p])

    def uri(self, path: str) -> str:
        """Full URL of a path, as a user would type it (s3://..., /abs/path)."""
        return self.fs.unstrip_protocol(path) if not self.is_local else path

    # queries -------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def ls(self, path: str, suffix: str = "") -> list[str]:
        """Sorted file paths directly under ``path`` (hidden temp files excluded)."""
        if not self.fs.exists(path):
            return []
        out = []
        for info in self.fs.ls(path, detail=True):
            name = posixpath.basename(info["name"].rstrip("/"))
            if info["type"] == "file" and not name.startswith(".") and name.endswith(suffix):
                out.append(info["name"])
        return sorted(out)

    def find(self, path: str, suffixes: tuple[str, ...]) -> list[str]:
        """All files below ``path`` ending with one of ``suffixes``, sorted."""
        if self.fs.isfile(path):
            return [path]
        found = self.fs.find(path)
        return sorted(
            p for p in found if p.endswith(suffixes) and not posixpath.basename(p).startswith(".")
        )

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    # reads ---------------------------------------------------------------
    def open(self, path: str, mode: str = "rb") -> IO[bytes]:
        return self.fs.open(path, mode)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    # writes --------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    @contextlib.contextmanager
    def atomic_writer(self, path: str, durable: bool = True) -> Iterator[IO[bytes]]:
        """Open ``path`` for writing so that it appears whole or not at all.

        ``durable=False`` (scratch files a reader verifies anyway) skips the fsync: the
        rename is still atomic for a killed process, but not across a power loss."""
        parent = posixpath.dirname(path)
        self.makedirs(parent)
        if not self.is_local:
            with self.fs.open(path, "wb") as f:
                yield f
            return
        tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_bytes(self, path: str, data: bytes, durable: bool = True) -> None:
        with self.atomic_writer(path, durable) as f:
            f.write(data)

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def clean_temp(self, path: str) -> int:
        """Remove temp files a killed writer left under ``path``; returns how many."""
        if not self.is_local or not os.path.isdir(path):
            return 0
        n = 0
        for dirpath, _, files in os.walk(path):
            for name in files:
                if name.startswith(TMP_PREFIX):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
        return n


def open_fs(url: str, storage_options: dict[str, Any] | None = None) -> Filesystem:
    return Filesystem(url, dict(storage_options or {}))
