"""Per-model label maps: raw fastText labels -> canonical codes (119 FLORES-200 codes + other).

A label map is a TSV under ``classifiers/lid/labelmaps/`` with columns ``raw``, ``canonical``
and ``note``; ``#`` starts a comment line. Rules:

- ``canonical`` is one code, ``other``, or several codes joined by ``|``: the one whose
  script suffix equals the script detected in the document wins, else the first. This is
  how ``zh`` becomes ``zho_Hans`` or ``zho_Hant`` (``script.py`` decides Hans/Hant from the
  characters) and ``sh`` (Serbo-Croatian) ``hrv_Latn`` or ``srp_Cyrl``.
- A raw label ``*`` with canonical ``=`` is the default for labels the file does not list:
  keep the raw label when it is already a canonical code, otherwise ``other``. GlotLID and
  OpenLID emit ``xxx_Scrp`` labels, so their maps only list the exceptions (macro-language
  codes, merged classes, spelling variants).
- Without ``*``, every label the model can emit must be listed; ``LabelMap.check(labels)``
  says which are missing, and the backend refuses to load a model with gaps.
- Macro-language labels map to a default member language, never to a dialect (``ar`` ->
  ``arb_Arab``, not one of the Arabic dialects).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from classifiers.lid.languages import OTHER, canonical_labels

LABELMAP_DIR = Path(__file__).parent / "labelmaps"
_IDENTITY = "="


@dataclass(frozen=True)
class LabelMap:
    """Raw label -> candidate canonical codes (first = default), from one TSV file."""

    name: str
    rules: dict[str, tuple[str, ...]]
    identity_default: bool  # the file has a ``*  =`` row

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        path = Path(path)
        if not path.is_file() and not path.suffix:
            path = LABELMAP_DIR / f"{path}.tsv"  # a bare name means a shipped map
        if not path.is_file():
            raise FileNotFoundError(
                f"label map {path} does not exist; pass a TSV path or one of "
                f"{sorted(p.stem for p in LABELMAP_DIR.glob('*.tsv'))}"
            )
        lines = [ln for ln in path.read_text("utf-8").splitlines() if ln and ln[0] != "#"]
        valid = canonical_labels()
        rules: dict[str, tuple[str, ...]] = {}
        identity = False
        for row in csv.DictReader(lines, delimiter="\t"):
            raw, target = row["raw"], row["canonical"]
            if raw == "*":
                if target != _IDENTITY:
                    raise ValueError(f"{path}: the '*' row must map to '=', got {target!r}")
                identity = True
                continue
            codes = tuple(target.split("|"))
            bad = [c for c in codes if c not in valid]
            if bad:
                raise ValueError(
                    f"{path}: raw label {raw!r} maps to {bad}, which are not canonical codes "
                    "(see classifiers/lid/qwen3_languages.tsv, or use 'other')"
                )
            if raw in rules:
                raise ValueError(f"{path}: raw label {raw!r} is listed twice")
            rules[raw] = codes
        return cls(name=path.stem, rules=rules, identity_default=identity)

    def check(self, raw_labels: list[str]) -> list[str]:
        """The labels of a model that this map cannot resolve (empty when it covers them)."""
        if self.identity_default:
            return []
        return [r for r in raw_labels if r not in self.rules]

    def resolve(self, raw: str, script: str) -> str:
        """Canonical code of one raw label given the document's detected script."""
        codes = self.rules.get(raw)
        if codes is None:
            if self.identity_default and raw in canonical_labels():
                return raw
            return OTHER
        if len(codes) > 1:
            for code in codes:
                if code.endswith("_" + script):
                    return code
        return codes[0]

    def emittable(self, raw_labels: list[str]) -> set[str]:
        """Canonical codes (without ``other``) that a model with these labels can produce."""
        out: set[str] = set()
        valid = canonical_labels()
        for raw in raw_labels:
            if raw in self.rules:
                out.update(self.rules[raw])
            elif self.identity_default and raw in valid:
                out.add(raw)
        out.discard(OTHER)
        return out
