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
- It replaces the first-stage label only with a *target* language and only when its own
  probability is at least ``threshold``; when it says "a parent", the first stage stands.
- The model's metadata (targets, triggers, threshold, classes, training arguments and its
  held-out evaluation) sits beside it in a JSON file of the same stem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from classifiers.lid.fasttext_lid import LidColumns

MODEL_DIR = Path(__file__).parent / "models"
BUILTIN_SECOND_STAGE = MODEL_DIR / "udhr_second_stage.ftz"


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

    def predict(self, lines: list[str]) -> tuple[list[str], list[float]]:
        try:
            labels, probs = self.model.predict(lines, k=1)
        except (UnicodeEncodeError, TypeError):  # lone surrogates, as in predict_raw
            lines = [ln.encode("utf-8", "replace").decode("utf-8") for ln in lines]
            labels, probs = self.model.predict(lines, k=1)
        return (
            [lab[0].removeprefix("__label__") for lab in labels],
            [min(float(p[0]), 1.0) for p in probs],
        )

    def refine(self, lines: list[str], idx: list[int], out: LidColumns) -> None:
        """Replace first-stage labels in ``out`` where the second stage is confident.

        ``lines[j]`` is the model input of document ``idx[j]``.
        """
        triggers = self.triggers
        chosen = [
            j
            for j, i in enumerate(idx)
            if out.score[i] <= triggers.get(out.lang[i], -1.0) and out.lang[i] in triggers
        ]
        if not chosen:
            return
        labels, probs = self.predict([lines[j] for j in chosen])
        for j, lab, p in zip(chosen, labels, probs, strict=True):
            if lab in self.targets and p >= self.threshold:
                i = idx[j]
                out.lang[i], out.score[i], out.raw_label[i] = lab, p, lab
                out.model[i] = self.name
                out.second_stage[i] = True
