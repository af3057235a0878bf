"""What training and tagging share: text normalisation, model loading, batch prediction.

Design choices:
- One normalisation for both sides (``fasttext_line``): a bounded sample of the text
  (the first ``max_chars`` characters; a 10 MB page costs the same as a 10 kB one),
  lower-cased, split into word and punctuation tokens, on one line. Punctuation is kept
  as tokens because it is what tells code and math from prose.
- Unreadable input (empty, whitespace-only, mostly control characters) is recognised
  before the model is asked (``unreadable``), so taggers give it a low-confidence
  answer instead of a guess.
- Models are loaded once per process and kept in a dict keyed by path: stage objects
  stay picklable for the spawn-based runner, and a worker loads each model once.
- Shipped default models live in ``classifiers/models/<task>.ftz``.
"""

from __future__ import annotations

import re
from pathlib import Path

import fasttext
import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
LABEL_PREFIX = "__label__"
MAX_CHARS = 20_000  # bounded sample per document
_TOKEN = re.compile(r"\w+|[^\w\s]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_CACHE: dict[str, fasttext.FastText._FastText] = {}

fasttext.FastText.eprint = lambda *_: None  # silence the load-time deprecation warning


def default_model(task: str) -> str:
    """Path of the shipped model for a task (``classifiers/models/<task>.ftz``)."""
    return str(MODELS_DIR / f"{task}.ftz")


def fasttext_line(text: str, max_chars: int = MAX_CHARS) -> str:
    """The one-line token sequence fastText sees for a document."""
    return " ".join(_TOKEN.findall(text[:max_chars].lower()))


def unreadable(text: str | None) -> str | None:
    """``"empty"`` or ``"binary"`` when a text cannot be classified, else None."""
    if text is None or not text.strip():
        return "empty"
    head = text[:4096]
    if len(_CONTROL.findall(head)) > 0.1 * len(head):
        return "binary"
    return None


def require_model(path: str) -> Path:
    """The model file's path; raises saying what to do if it is missing."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"fastText model {path} does not exist; build the defaults with "
            "`python -m classifiers.build_defaults` or pass the path of a trained model"
        )
    return Path(path)


def load_model(path: str) -> fasttext.FastText._FastText:
    """Load (once per process) a fastText model."""
    model = _CACHE.get(path)
    if model is None:
        model = _CACHE[path] = fasttext.load_model(str(require_model(path)))
    return model


def model_labels(model: fasttext.FastText._FastText) -> list[str]:
    return [label.removeprefix(LABEL_PREFIX) for label in model.get_labels()]


def predict_probs(model: fasttext.FastText._FastText, lines: list[str]) -> list[dict[str, float]]:
    """Probability of every label the model knows, for each line."""
    if not lines:
        return []
    labels, probs = model.predict(lines, k=-1, threshold=0.0)
    return [
        {
            lab.removeprefix(LABEL_PREFIX): float(p)
            for lab, p in zip(ls, np.asarray(ps), strict=True)
        }
        for ls, ps in zip(labels, probs, strict=True)
    ]
