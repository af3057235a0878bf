"""Second-stage LID: resolve languages the first-stage model cannot emit (or always confuses).

lid.176 has no label for Faroese, Friulian, Ligurian, Balinese, Papiamento, Kabuverdianu,
Tok Pisin or Magahi, and in practice never emits Maithili, Bhojpuri, Sardinian,
Minangkabau or Cantonese on this text: it says Icelandic, Italian, Indonesian, Spanish,
Portuguese, English, Hindi or Chinese instead. The second stage is a small fastText model trained by
``train_second_stage.py`` on shipped UDHR text, whose classes are those target languages
plus the first-stage languages they are mistaken for ("parents").

Design choices:
- It runs only on documents whose first-stage label is a parent *and* whose first-stage
  score is at most that parent's trigger score (the 90th percentile of the scores the
  first stage gave target-language paragraphs it mislabelled as that parent in the
  training split, plus a margin). Confident English, Spanish or Italian documents never
  reach it, so its cost is paid on a small share of a web corpus.
- It replaces the first-stage label only with a *target* language, only when its own
  probability is at least ``threshold`` and only when the target's script is the script
  detected in the document (Hans, Hant or Hani for a Han target): when it says "a parent",
  or Bhojpuri of a Latin-script quote, the first stage stands. So a document whose script
  fits no target (Japanese with kana, Cyrillic ...) is not sent to the model at all.
- The model's metadata (targets, triggers, threshold, classes, training arguments and its
  held-out evaluation) sits beside it in a JSON file of the same stem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).parent / "models"
BUILTIN_SECOND_STAGE = MODEL_DIR / "udhr_second_stage.bin"
_PREFIX = "__label__"
_HAN = frozenset({"Hans", "Hant", "Hani"})  # not Jpan: kana rule Cantonese out


def fitting_scripts(code: str) -> frozenset[str]:
    """Detected scripts (``script.py``) a document in language ``code`` can have."""
    want = code.rpartition("_")[2]
    return _HAN if want in _HAN else frozenset({want})


def metadata_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


@dataclass
class SecondStage:
    """A second-stage fastText model with its trigger table (see the module docstring)."""

    model_path: str | Path = BUILTIN_SECOND_STAGE
    threshold: float | None = None  # None: the threshold stored with the model

    def __post_init__(self) -> None:
        from classifiers.lid.fasttext_lid import load_fasttext

        meta_file = metadata_path(self.model_path)
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"second-stage model {self.model_path} has no metadata file {meta_file}; "
                "rebuild both with python -m classifiers.lid.train_second_stage"
            )
        self.meta = json.loads(meta_file.read_text("utf-8"))
        self.model = load_fasttext(self.model_path)
        self.name = self.meta["name"]
        self.targets = frozenset(self.meta["targets"])
        self.triggers: dict[str, float] = self.meta["triggers"]
        if self.threshold is None:
            self.threshold = float(self.meta["threshold"])
        self._tables: dict[tuple[str, ...], tuple[np.ndarray, dict[str, int]]] = {}
        self._fit = {t: fitting_scripts(t) for t in self.targets}
        self._any_fit = frozenset().union(*self._fit.values())

    def predict(self, lines: list[str]) -> tuple[list[str], np.ndarray]:
        """Top label (no ``__label__``) and probability of each line of ``model_lines``."""
        from classifiers.lid.fasttext_lid import predict_top1

        top, probs = predict_top1(self.model, lines)
        return [lab[len(_PREFIX) :] for lab in top], probs

    def tables(self, codes: list[str]) -> tuple[np.ndarray, dict[str, int]]:
        """Trigger score per code index (-1: never triggers) and target -> code index."""
        key = tuple(codes)
        if key not in self._tables:
            index = {c: i for i, c in enumerate(codes)}
            unknown = sorted(self.targets - set(index))
            if unknown:
                raise ValueError(f"second-stage targets {unknown} are not canonical codes")
            trig = np.array([self.triggers.get(c, -1.0) for c in codes], dtype=np.float64)
            self._tables[key] = trig, {t: index[t] for t in self.targets}
        return self._tables[key]

    def refine(
        self,
        lines: list[str],
        scripts: list[str],
        lang: np.ndarray,
        score: np.ndarray,
        raw_label: np.ndarray,
        codes: list[str],
    ) -> np.ndarray:
        """Replace first-stage labels where the second stage is confident, in place.

        Row ``j``: ``lines[j]`` is the model line, ``scripts[j]`` the detected script,
        ``lang[j]`` the first-stage code (an index into ``codes``), ``score[j]`` its score,
        ``raw_label[j]`` the raw label. Returns the rows replaced.
        """
        trigger, target_code = self.tables(codes)
        fit, any_fit = self._fit, self._any_fit
        triggered = np.flatnonzero(score <= trigger[lang]).tolist()
        chosen = [j for j in triggered if scripts[j] in any_fit]
        if not chosen:
            return np.zeros(0, dtype=np.intp)
        labels, probs = self.predict([lines[j] for j in chosen])
        ok = [
            k
            for k, lab in enumerate(labels)
            if lab in fit and probs[k] >= self.threshold and scripts[chosen[k]] in fit[lab]
        ]
        rows = np.array([chosen[k] for k in ok], dtype=np.intp)
        lang[rows] = [target_code[labels[k]] for k in ok]
        score[rows] = probs[ok]
        raw_label[rows] = [labels[k] for k in ok]
        return rows
