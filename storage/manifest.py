"""``_manifest.json``: the contract between stages.

Every output folder gets one, written last and atomically, so its presence means the
output is complete. It records the stage name and version, the config and its hash,
the digests of the input manifests, each shard's rows, bytes and sha256, the
quarantine shards and the stage's counters. ``digest()`` covers everything that
defines the data (not timings), so it serves as the data version in Dagster.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.fs import Filesystem

MANIFEST_NAME = "_manifest.json"


class ManifestError(RuntimeError):
    """An output folder does not match its manifest (missing, truncated or altered shard)."""


def config_hash(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardInfo:
    name: str  # file name relative to the output folder
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardInfo:
        return cls(name=d["name"], rows=int(d["rows"]), bytes=int(d["bytes"]), sha256=d["sha256"])


@dataclass
class Manifest:
    stage: str
    version: str
    config: dict[str, Any]
    kind: str = "document"  # document | attributes | files | tokens
    inputs: list[dict[str, str]] = field(default_factory=list)  # [{"path", "digest"}]
    shards: list[ShardInfo] = field(default_factory=list)
    quarantine: list[ShardInfo] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    created_at: float = field(default_factory=time.time)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def quarantined(self) -> int:
        return sum(s.rows for s in self.quarantine)

    def digest(self) -> str:
        """Hash of what defines the data: stage, version, config, inputs, shard checksums."""
        core = {
            "stage": self.stage,
            "version": self.version,
            "config_hash": self.config_hash,
            "inputs": self.inputs,
            "shards": [asdict(s) for s in self.shards],
        }
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()

    # io ------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        d["config_hash"] = self.config_hash
        d["digest"] = self.digest()
        return json.dumps(d, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        return cls(
            stage=d["stage"],
            version=d["version"],
            config=d["config"],
            kind=d.get("kind", "document"),
            inputs=d.get("inputs", []),
            shards=[ShardInfo.from_dict(s) for s in d.get("shards", [])],
            quarantine=[ShardInfo.from_dict(s) for s in d.get("quarantine", [])],
            counters=d.get("counters", {}),
            seconds=d.get("seconds", 0.0),
            created_at=d.get("created_at", 0.0),
        )

    def write(self, fs: Filesystem, folder: str) -> str:
        path = posixpath.join(folder, MANIFEST_NAME)
        fs.write_bytes(path, self.to_json().encode())
        return path

    @classmethod
    def read(cls, fs: Filesystem, folder: str) -> Manifest:
        path = posixpath.join(folder, MANIFEST_NAME)
        if not fs.exists(path):
            raise ManifestError(
                f"no {MANIFEST_NAME} in {fs.uri(folder)}: the output is missing or was not "
                "completed; run the stage that produces it"
            )
        return cls.from_json(fs.read_bytes(path).decode())

    def verify(self, fs: Filesystem, folder: str, checksums: bool = True) -> None:
        """Raise ManifestError if any shard is missing, resized or (with checksums) altered."""
        for info in [*self.shards, *self.quarantine]:
            path = posixpath.join(folder, info.name)
            if not fs.exists(path):
                raise ManifestError(f"{fs.uri(path)}: listed in the manifest but missing")
            size = fs.size(path)
            if size != info.bytes:
                raise ManifestError(
                    f"{fs.uri(path)}: {size} bytes on disk, manifest says {info.bytes}"
                )
            if checksums:
                digest = sha256_file(fs, path)
                if digest != info.sha256:
                    raise ManifestError(
                        f"{fs.uri(path)}: sha256 {digest[:12]}... does not match the "
                        f"manifest's {info.sha256[:12]}...; the shard was altered or corrupted"
                    )


def sha256_file(fs: Filesystem, path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
