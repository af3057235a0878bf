"""Mixture recipes (recipes/mix.yaml): which documents each curriculum stage takes, how often.

A recipe names the document sources (each a document output with its attribute
outputs) and, per stage, thresholds, weights over labels, upsampling by MinHash
cluster size and, for long-context stages, token shares per length bucket. The mixer
(pipelines/mix/select.py) turns it into a per-document repeat count.

Design choices:
- Weights are multipliers, applied per document (instance level): a document's weight
  is the product of the weights of its source, synth family, language, domain, edu
  bucket and cluster-size bucket; a label a group does not list gets the group's
  ``default`` (1.0 unless set). Multipliers compose across groups, where target
  shares per group would conflict; the mixer reports the resulting shares.
- Length-bucket shares are absolute targets (S3's 75/25) and are solved exactly.
- Everything is validated on load against the label sets the taggers emit
  (recipes/taxonomy.yaml, the 119 FLORES codes), so a typo fails with the file, the
  stage and the key instead of silently weighting nothing.
- The hash of one stage covers the seed, the sources and that stage only, so editing
  S3 does not invalidate S1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from classifiers.lid.languages import OTHER, canonical_labels
from classifiers.taxonomy import load_taxonomy
from storage.manifest import config_hash

RECIPE_PATH = Path(__file__).resolve().parents[2] / "recipes" / "mix.yaml"
UNKNOWN = "unknown"  # label of a document whose source has no attribute of that kind
ATTRIBUTE_KINDS = ("lang", "domain", "quality", "safety", "cluster")
WEIGHT_GROUPS = ("source", "family", "lang", "domain", "edu")
EDU_BUCKETS = tuple(str(i) for i in range(6))
FAMILIES = ("none", "math", "code", "reasoning")  # synth families (synth/ outputs), none: natural


class RecipeError(ValueError):
    """The recipe file is malformed; the message names the file, stage and key."""


@dataclass(frozen=True)
class Source:
    name: str  # label used in weights and reports, e.g. web, pdf, synth_math
    documents: str  # document output key, e.g. dedup/web_minhash
    family: str = "none"  # synth family (math, code, reasoning ...); none for natural text
    attributes: dict[str, str] = field(default_factory=dict)  # kind -> output key


@dataclass(frozen=True)
class LengthBucket:
    name: str
    min: int  # tokens (with the closing <|endoftext|>), inclusive
    max: int  # inclusive
    share: float  # target share of the stage's tokens


@dataclass(frozen=True)
class Filters:
    drop_flags: tuple[str, ...] = ()  # drop a document carrying any of these safety flags
    min_edu_score: float = 0.0
    min_lang_score: float = 0.0
    min_tokens: int = 0

    def needs(self) -> set[str]:
        """Attribute kinds these thresholds read."""
        need = {"safety"} if self.drop_flags else set()
        if self.min_edu_score > 0:
            need.add("quality")
        if self.min_lang_score > 0:
            need.add("lang")
        return need


@dataclass(frozen=True)
class StageRecipe:
    name: str
    seq_len: int
    filters: Filters
    weights: dict[str, dict[str, float]]  # group -> label -> weight ("default" included)
    cluster_size: tuple[tuple[int, float], ...]  # (min size, weight), ascending from 1
    length_buckets: tuple[LengthBucket, ...] = ()

    def weight(self, group: str, label: str) -> float:
        table = self.weights.get(group, {})
        return table.get(label, table.get("default", 1.0))

    def cluster_weight(self, size: int) -> float:
        w = 1.0
        for lo, weight in self.cluster_size:
            if size >= lo:
                w = weight
        return w


@dataclass(frozen=True)
class Recipe:
    path: str
    seed: int
    sources: tuple[Source, ...]
    stages: dict[str, StageRecipe]

    def stage(self, name: str) -> StageRecipe:
        if name not in self.stages:
            raise RecipeError(
                f"{self.path}: no stage {name!r}; stages are {', '.join(self.stages)}"
            )
        return self.stages[name]

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise RecipeError(f"{self.path}: no source {name!r}")

    def stage_config(self, name: str) -> dict[str, Any]:
        """What defines one stage's selection: seed, sources and that stage's recipe."""
        return {
            "seed": self.seed,
            "sources": [asdict(s) for s in self.sources],
            "stage": asdict(self.stage(name)),
        }

    def stage_hash(self, name: str) -> str:
        return config_hash(self.stage_config(name))


def load_recipe(path: str | Path = RECIPE_PATH) -> Recipe:
    """Parse and validate a mixture recipe; raises RecipeError saying what to fix."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc}") from exc
    return parse_recipe(doc, str(path))


def parse_recipe(doc: Any, where: str = "<recipe>") -> Recipe:
    """Validate an already-parsed recipe mapping (see recipes/mix.yaml for the shape)."""
    top = _mapping(doc, where, {"version", "seed", "sources", "stages"}, {"sources", "stages"})
    if top.get("version", 1) != 1:
        raise RecipeError(f"{where}: version {top['version']!r} is not supported (expected 1)")
    seed = _int(top.get("seed", 0), f"{where}: seed", 0)
    if not isinstance(top["sources"], list) or not top["sources"]:
        raise RecipeError(f"{where}: sources must be a non-empty list")
    sources = tuple(_source(s, f"{where}: sources[{i}]") for i, s in enumerate(top["sources"]))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: source names must be unique, got {names}")
    stages_doc = _mapping(top["stages"], f"{where}: stages", None, set())
    if not stages_doc:
        raise RecipeError(f"{where}: stages is empty; define at least one stage")
    labels = _labels(sources)
    stages = {
        str(n): _stage(str(n), s, f"{where}: stages.{n}", labels) for n, s in stages_doc.items()
    }
    return Recipe(where, seed, sources, stages)


# parsing helpers ----------------------------------------------------------------
def _mapping(doc: Any, where: str, allowed: set[str] | None, required: set[str]) -> dict:
    if not isinstance(doc, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(doc).__name__}")
    if allowed is not None:
        unknown = set(map(str, doc)) - allowed
        if unknown:
            raise RecipeError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
    missing = required - set(doc)
    if missing:
        raise RecipeError(f"{where}: missing key(s) {sorted(missing)}")
    return doc


def _number(v: Any, where: str, lo: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < lo:
        raise RecipeError(f"{where}: expected a number >= {lo}, got {v!r}")
    return float(v)


def _int(v: Any, where: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise RecipeError(f"{where}: expected an integer >= {lo}, got {v!r}")
    return v


def _source(doc: Any, where: str) -> Source:
    d = _mapping(doc, where, {"name", "documents", "family", "attributes"}, {"name", "documents"})
    attrs = _mapping(d.get("attributes") or {}, f"{where}.attributes", set(ATTRIBUTE_KINDS), set())
    for kind, key in attrs.items():
        if not isinstance(key, str) or "/" not in key:
            raise RecipeError(f"{where}.attributes.{kind}: expected an output key, got {key!r}")
    if not isinstance(d["documents"], str) or "/" not in d["documents"]:
        raise RecipeError(f"{where}.documents: expected an output key like dedup/web_minhash")
    family = str(d.get("family", "none"))
    if family not in FAMILIES:
        raise RecipeError(f"{where}.family: {family!r} is not one of {', '.join(FAMILIES)}")
    return Source(str(d["name"]), d["documents"], family, dict(attrs))


def _labels(sources: tuple[Source, ...]) -> dict[str, set[str]]:
    tax = load_taxonomy()
    return {
        "source": {s.name for s in sources},
        "family": set(FAMILIES),
        "lang": set(canonical_labels()) | {OTHER, UNKNOWN},
        "domain": set(tax.labels("domain")) | {UNKNOWN},
        "edu": set(EDU_BUCKETS) | {UNKNOWN},
        "flags": set(tax.labels("safety")) - {"ok"},
    }


def _stage(name: str, doc: Any, where: str, labels: dict[str, set[str]]) -> StageRecipe:
    keys = {"seq_len", "filters", "weights", "cluster_size", "length_buckets"}
    d = _mapping(doc, where, keys, {"seq_len"})
    seq_len = _int(d["seq_len"], f"{where}.seq_len", 16)
    f = _mapping(
        d.get("filters") or {},
        f"{where}.filters",
        {"drop_flags", "min_edu_score", "min_lang_score", "min_tokens"},
        set(),
    )
    if not isinstance(f.get("drop_flags") or [], list):
        raise RecipeError(f"{where}.filters.drop_flags: expected a list of safety flags")
    flags = tuple(f.get("drop_flags") or ())
    bad = set(flags) - labels["flags"]
    if bad:
        raise RecipeError(
            f"{where}.filters.drop_flags: unknown flag(s) {sorted(bad)}; "
            f"flags are {sorted(labels['flags'])}"
        )
    filters = Filters(
        drop_flags=flags,
        min_edu_score=_number(f.get("min_edu_score", 0.0), f"{where}.filters.min_edu_score"),
        min_lang_score=_number(f.get("min_lang_score", 0.0), f"{where}.filters.min_lang_score"),
        min_tokens=_int(f.get("min_tokens", 0), f"{where}.filters.min_tokens", 0),
    )
    if filters.min_edu_score > 5 or filters.min_lang_score > 1:
        raise RecipeError(f"{where}.filters: min_edu_score is 0-5 and min_lang_score 0-1")
    weights: dict[str, dict[str, float]] = {}
    for group, table in _mapping(
        d.get("weights") or {}, f"{where}.weights", set(WEIGHT_GROUPS), set()
    ).items():
        table = _mapping(table or {}, f"{where}.weights.{group}", None, set())
        out = {}
        for label, w in table.items():
            label = str(label)
            if label != "default" and label not in labels[group]:
                known = sorted(labels[group])
                shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
                raise RecipeError(
                    f"{where}.weights.{group}: unknown label {label!r}; labels are {shown}"
                )
            out[label] = _number(w, f"{where}.weights.{group}.{label}")
        weights[group] = out
    return StageRecipe(
        name,
        seq_len,
        filters,
        weights,
        _cluster_sizes(d.get("cluster_size") or [[1, 1.0]], f"{where}.cluster_size"),
        _length_buckets(d.get("length_buckets") or [], f"{where}.length_buckets", seq_len),
    )


def _cluster_sizes(doc: Any, where: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(doc, list) or not all(isinstance(x, list) and len(x) == 2 for x in doc):
        raise RecipeError(f"{where}: expected a list of [min cluster size, weight] pairs")
    pairs = tuple(
        (_int(lo, f"{where}[{i}] size", 1), _number(w, f"{where}[{i}] weight"))
        for i, (lo, w) in enumerate(doc)
    )
    sizes = [lo for lo, _ in pairs]
    if sizes[0] != 1 or sizes != sorted(set(sizes)):
        raise RecipeError(f"{where}: sizes must start at 1 and increase strictly, got {sizes}")
    return pairs


def _length_buckets(doc: Any, where: str, seq_len: int) -> tuple[LengthBucket, ...]:
    if not isinstance(doc, list):
        raise RecipeError(f"{where}: expected a list of {{name, min, max, share}}")
    buckets = []
    for i, b in enumerate(doc):
        b = _mapping(
            b, f"{where}[{i}]", {"name", "min", "max", "share"}, {"name", "min", "max", "share"}
        )
        lo, hi = _int(b["min"], f"{where}[{i}].min", 1), _int(b["max"], f"{where}[{i}].max", 1)
        if hi < lo or hi > seq_len:
            raise RecipeError(
                f"{where}[{i}]: need min <= max <= seq_len ({seq_len}), got {lo}-{hi}"
            )
        buckets.append(
            LengthBucket(str(b["name"]), lo, hi, _number(b["share"], f"{where}[{i}].share"))
        )
    if buckets:
        if abs(sum(b.share for b in buckets) - 1.0) > 1e-9:
            raise RecipeError(
                f"{where}: shares must add up to 1, got {sum(b.share for b in buckets)}"
            )
        spans = sorted((b.min, b.max) for b in buckets)
        for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
            if lo <= hi:
                raise RecipeError(f"{where}: buckets overlap ({spans})")
    return tuple(buckets)
