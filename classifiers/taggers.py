"""Domain, quality and safety taggers: document shard in, attribute shard out.

Each tagger is a Stage (pipelines/stage.py) the LocalRunner can spread over shards.
Output rows are aligned with the input rows and keyed by ``doc_id``
(storage.schema.attribute_schema); the text is never rewritten.

    DomainTagger   domain, domain_score, domain_top3 [{label, score}]
    QualityTagger  edu_score (expected value of the 0-5 classes), edu_label, dclm_prob
    SafetyTagger   toxic_score, adult_score, spam_score, flags

Design choices:
- The model path is a config field; empty means the shipped default
  (classifiers/models/<task>.ftz). The model file's sha256 is part of ``config()``,
  so a retrained model changes the config hash and the runner re-tags instead of
  resuming on stale labels.
- Empty, whitespace-only and binary-looking documents are not shown to the model:
  they get ``other`` / zero scores and a ``note`` saying why (never an error).
- Long documents are tagged from a bounded sample (``max_chars``), so a 10 MB page
  costs the same as a short one.
- A safety label the model was not trained on is null, not 0: "not assessed" is
  different from "assessed clean" (the shipped model knows toxic/ok only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import pyarrow as pa

from classifiers.fasttext_model import (
    MAX_CHARS,
    default_model,
    fasttext_line,
    load_model,
    model_labels,
    predict_probs,
    require_model,
    unreadable,
)
from pipelines.stage import Stage, StageContext, Task
from storage.fs import Filesystem
from storage.schema import attribute_schema
from storage.shards import iter_batches

NOTE = pa.field("note", pa.string())  # null, "empty" or "binary"
SCORED = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
SAFETY_LABELS = ("toxic", "adult", "spam")


def _sha256(path: str) -> str:
    file = require_model(path)
    return _sha256_of(str(file), file.stat().st_mtime_ns)


@cache
def _sha256_of(path: str, mtime_ns: int) -> str:  # mtime in the key: a rebuilt model re-hashes
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class FastTextTagger(Stage):
    """Shared loop: read doc_id + text, predict the readable rows, assemble columns."""

    output_kind: ClassVar[str] = "attributes"
    max_chars: int

    def models(self) -> dict[str, str]:
        """Role -> model path, after defaults are filled in."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "model_sha256": {role: _sha256(p) for role, p in self.models().items()},
        }

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(fs, task.input, columns=["doc_id", "text"], batch_rows=256)

    def columns(self, probs: dict[str, list[dict[str, float] | None]]) -> dict[str, list]:
        """Output columns (without doc_id, note) from per-role probabilities (None: unreadable)."""
        raise NotImplementedError

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        models = {role: load_model(path) for role, path in self.models().items()}
        for batch in batches:
            ctx.counters["records_in"] += batch.num_rows
            texts = batch.column("text").to_pylist()
            notes = [unreadable(t) for t in texts]
            readable = [i for i, n in enumerate(notes) if n is None]
            lines = [fasttext_line(texts[i], self.max_chars) for i in readable]
            probs: dict[str, list[dict[str, float] | None]] = {}
            for role, model in models.items():
                out: list[dict[str, float] | None] = [None] * len(texts)
                for i, p in zip(readable, predict_probs(model, lines), strict=True):
                    out[i] = p
                probs[role] = out
            for note in notes:
                ctx.counters[f"docs.{note or 'tagged'}"] += 1
            cols = {"doc_id": batch.column("doc_id"), **self.columns(probs), "note": notes}
            yield pa.RecordBatch.from_pydict(cols, schema=self.output_schema)


@dataclass
class DomainTagger(FastTextTagger):
    """Field of the document (recipes/taxonomy.yaml ``domain``), with the top 3."""

    model: str = ""
    max_chars: int = MAX_CHARS

    name: ClassVar[str] = "domain"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = attribute_schema(
        [
            pa.field("domain", pa.string(), nullable=False),
            pa.field("domain_score", pa.float32(), nullable=False),
            pa.field("domain_top3", pa.list_(SCORED)),
            NOTE,
        ],
        "domain",
    )

    def models(self) -> dict[str, str]:
        return {"domain": self.model or default_model("domain")}

    def columns(self, probs: dict[str, list[dict[str, float] | None]]) -> dict[str, list]:
        domain, score, top3 = [], [], []
        for p in probs["domain"]:
            ranked = sorted(p.items(), key=lambda kv: -kv[1])[:3] if p else [("other", 0.0)]
            domain.append(ranked[0][0])
            score.append(ranked[0][1])
            top3.append([{"label": lab, "score": s} for lab, s in ranked])
        return {"domain": domain, "domain_score": score, "domain_top3": top3}


@dataclass
class QualityTagger(FastTextTagger):
    """FineWeb-Edu style educational value (0-5) and a DCLM-style quality probability."""

    edu_model: str = ""
    dclm_model: str = ""
    max_chars: int = MAX_CHARS

    name: ClassVar[str] = "quality"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = attribute_schema(
        [
            pa.field("edu_score", pa.float32(), nullable=False),  # expected value, 0..5
            pa.field("edu_label", pa.int8(), nullable=False),  # most likely class
            pa.field("dclm_prob", pa.float32(), nullable=False),  # P(hq)
            NOTE,
        ],
        "quality",
    )

    def models(self) -> dict[str, str]:
        return {
            "edu": self.edu_model or default_model("edu"),
            "dclm": self.dclm_model or default_model("dclm"),
        }

    def columns(self, probs: dict[str, list[dict[str, float] | None]]) -> dict[str, list]:
        edu_score, edu_label, dclm = [], [], []
        for pe, pd in zip(probs["edu"], probs["dclm"], strict=True):
            if pe is None:
                edu_score.append(0.0)
                edu_label.append(0)
            else:
                total = sum(pe.values()) or 1.0
                edu_score.append(sum(int(k) * v for k, v in pe.items()) / total)
                edu_label.append(int(max(pe, key=pe.get)))
            dclm.append(pd.get("hq", 0.0) if pd else 0.0)
        return {"edu_score": edu_score, "edu_label": edu_label, "dclm_prob": dclm}


@dataclass
class SafetyTagger(FastTextTagger):
    """Independent toxic / adult / spam scores; ``flags`` lists those at or over threshold."""

    model: str = ""
    threshold: float = 0.5
    max_chars: int = MAX_CHARS

    name: ClassVar[str] = "safety"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = attribute_schema(
        [
            *(pa.field(f"{lab}_score", pa.float32()) for lab in SAFETY_LABELS),
            pa.field("flags", pa.list_(pa.string()), nullable=False),
            NOTE,
        ],
        "safety",
    )

    def models(self) -> dict[str, str]:
        return {"safety": self.model or default_model("safety")}

    def columns(self, probs: dict[str, list[dict[str, float] | None]]) -> dict[str, list]:
        known = set(model_labels(load_model(self.models()["safety"])))
        cols: dict[str, list] = {f"{lab}_score": [] for lab in SAFETY_LABELS}
        cols["flags"] = []
        for p in probs["safety"]:
            flags = []
            for lab in SAFETY_LABELS:
                score = None if lab not in known else (p or {}).get(lab, 0.0)
                cols[f"{lab}_score"].append(score)
                if score is not None and score >= self.threshold:
                    flags.append(lab)
            cols["flags"].append(flags)
        return cols
