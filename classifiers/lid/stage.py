"""The LID stage: a document shard in, a row-aligned language attribute shard out.

    stage = LidStage.from_recipe("recipes/lid.yaml")
    manifest = LocalRunner().run_over(stage, docs_out, attr_out)  # same part names
    counts = lid_distribution(attr_out)    # {"eng_Latn": 812, "zho_Hans": 97, ...}

Design choices:
- Reads only ``doc_id`` and ``text`` of the document shard, in batches of ``batch_rows``,
  and writes one attribute row per document in the same order (``attribute_schema``):
  ``lang`` (one of the 119 canonical codes or ``other``), ``score``, ``raw_label`` (what the
  deciding model said), ``model``, ``script`` (ISO 15924, from the characters) and
  ``second_stage`` (the second-stage model decided). Nothing is quarantined: an empty,
  binary or huge document still gets a row (``other``, score 0, or a label from a bounded
  sample of its text; see ``fasttext_lid.py``), so the shard stays row-aligned.
- The stage's fields are its config (the runner hashes them for resume); ``config()`` adds
  the size and SHA-256 of each model file, so swapping a model file in place reruns.
- Models are loaded once per worker process (``_identifier`` is cached on the config) and
  never pickled: the stage object carries paths only.
- Counters: ``records_in`` and ``lang.<code>`` per language, summed into the manifest.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from classifiers.lid.fasttext_lid import (
    BUILTIN,
    MAX_CHARS,
    FastTextLid,
    LanguageIdentifier,
    builtin_model_path,
)
from classifiers.lid.second_stage import BUILTIN_SECOND_STAGE, SecondStage
from pipelines.stage import Stage, StageContext, Task
from storage.fs import Filesystem, open_fs
from storage.layout import OutputDir
from storage.schema import attribute_schema
from storage.shards import iter_batches, read_shard

LID_SCHEMA = attribute_schema(
    [
        pa.field("lang", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("raw_label", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("script", pa.string(), nullable=False),
        pa.field("second_stage", pa.bool_(), nullable=False),
    ],
    "lid",
)


def _file_id(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stat().st_size}:{digest.hexdigest()}"


@dataclass
class LidStage(Stage):
    """Language ID over document shards (see the module docstring)."""

    name: ClassVar[str] = "attributes/lang"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = LID_SCHEMA
    output_kind: ClassVar[str] = "attributes"

    model: str = BUILTIN  # "builtin" (lid.176.ftz) or a fastText model path
    labelmap: str = "lid176"  # a shipped map name (classifiers/lid/labelmaps) or a TSV path
    model_name: str = "lid176"
    second_stage: str = BUILTIN  # "builtin" (the shipped UDHR model), a path, or "" (off)
    thresholds: dict[str, float] = field(default_factory=dict)
    default_threshold: float = 0.0
    max_chars: int = MAX_CHARS
    batch_rows: int = 1024

    @classmethod
    def from_recipe(cls, path: str | Path) -> LidStage:
        """Build the stage from a recipe such as ``recipes/lid.yaml``."""
        recipe = yaml.safe_load(Path(path).read_text("utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown = set(recipe) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**recipe)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        model = builtin_model_path() if self.model == BUILTIN else Path(self.model)
        cfg["model_file"] = _file_id(model)
        if self.second_stage:
            second = (
                BUILTIN_SECOND_STAGE if self.second_stage == BUILTIN else Path(self.second_stage)
            )
            cfg["second_stage_file"] = _file_id(second)
        return cfg

    def identifier(self) -> LanguageIdentifier:
        return _identifier(
            self.model,
            self.labelmap,
            self.model_name,
            self.second_stage,
            tuple(sorted(self.thresholds.items())),
            self.default_threshold,
            self.max_chars,
        )

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(
            fs, task.input, columns=["doc_id", "text"], batch_rows=self.batch_rows
        )

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        lid = self.identifier()
        for batch in batches:
            ctx.counters["records_in"] += batch.num_rows
            texts = [t or "" for t in batch.column("text").to_pylist()]
            out = lid.identify(texts)
            ctx.counters.update(Counter(f"lang.{lang}" for lang in out.lang))
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column("doc_id"),
                    pa.array(out.lang, pa.string()),
                    pa.array(out.score, pa.float32()),
                    pa.array(out.raw_label, pa.string()),
                    pa.array(out.model, pa.string()),
                    pa.array(out.script, pa.string()),
                    pa.array(out.second_stage, pa.bool_()),
                ],
                schema=LID_SCHEMA,
            )


@cache
def _identifier(
    model: str,
    labelmap: str,
    model_name: str,
    second_stage: str,
    thresholds: tuple[tuple[str, float], ...],
    default_threshold: float,
    max_chars: int,
) -> LanguageIdentifier:
    second = None
    if second_stage:
        second = SecondStage(BUILTIN_SECOND_STAGE if second_stage == BUILTIN else second_stage)
    return LanguageIdentifier(
        FastTextLid(model, labelmap, model_name),
        second,
        thresholds=dict(thresholds),
        default_threshold=default_threshold,
        max_chars=max_chars,
    )


def lid_distribution(attr_out_dir: OutputDir | str) -> dict[str, int]:
    """Documents per language in a finished ``attributes/lang`` output, most frequent first."""
    out = attr_out_dir
    if isinstance(out, str):
        fs = open_fs(out)
        out = OutputDir(fs, fs.root)
    counts: Counter = Counter()
    for path, _ in out.shard_infos():
        table = read_shard(out.fs, path, columns=["lang"])
        for row in pc.value_counts(table.column("lang")).to_pylist():
            counts[row["values"]] += row["counts"]
    return dict(counts.most_common())
