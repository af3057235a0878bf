"""Corpus storage: Arrow schemas, shard files, manifests and the filesystem layer.

Nothing here imports dagster or pyspark: every stage and runner builds on it.
"""

from storage.fs import Filesystem, open_fs
from storage.layout import CorpusStore, OutputDir
from storage.manifest import Manifest, ManifestError, ShardInfo
from storage.schema import (
    DOC_SCHEMA,
    QUARANTINE_SCHEMA,
    attribute_schema,
    make_doc_id,
)
from storage.shards import read_shard, write_shard

__all__ = [
    "DOC_SCHEMA",
    "QUARANTINE_SCHEMA",
    "CorpusStore",
    "Filesystem",
    "Manifest",
    "ManifestError",
    "OutputDir",
    "ShardInfo",
    "attribute_schema",
    "make_doc_id",
    "open_fs",
    "read_shard",
    "write_shard",
]
