"""Heuristic text signals as an attribute stage, so recipes can filter on them.

The signals are the ones the Gopher rules (Rae et al. 2021, MassiveText) and their
descendants (C4, FineWeb, datatrove's GopherQualityFilter) threshold on; this stage
only measures, thresholds live in recipes:

    length       n_chars, n_words, n_lines, mean_word_len
    symbols      symbol_ratio (# and ellipses per word), digit_frac, upper_frac
                 (uppercase share of letters), alpha_word_frac, bullet_line_frac,
                 ellipsis_line_frac
    repetition   dup_line_frac, dup_line_char_frac, dup_para_frac, dup_para_char_frac,
                 top_{2,3,4}gram_char_frac, dup_{5..10}gram_char_frac
    stopwords    stop_lang (the stopwords-iso language whose stopwords cover most
                 words), stop_frac (that share), en_stop_count (Gopher's eight)

Design choices:
- Words are whitespace-separated tokens, as in Gopher; texts without spaces
  (Chinese, Japanese, Thai) get low word counts and stopword fractions, which a
  recipe must read per language.
- Lengths are exact; the n-gram, repetition and stopword measures look at the first
  ``max_chars`` characters only, so a 10 MB document costs a bounded time.
- Stopword lists are stopwords-iso (MIT), shipped in classifiers/resources/: 58 languages.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipelines.stage import Stage, StageContext, Task
from storage.fs import Filesystem
from storage.schema import attribute_schema
from storage.shards import iter_batches

STOPWORDS_PATH = Path(__file__).resolve().parent / "resources" / "stopwords-iso.json"
GOPHER_EN_STOPWORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·")
_PRIME = np.uint64(1_000_003)
_LETTER = re.compile(r"[^\W\d_]")
_PUNCT_STRIP = "\"'“”‘’«»()[]{}.,;:!?¡¿…"

INT_FIELDS = ["n_chars", "n_words", "n_lines", "en_stop_count"]
FLOAT_FIELDS = [
    "mean_word_len",
    "symbol_ratio",
    "digit_frac",
    "upper_frac",
    "alpha_word_frac",
    "bullet_line_frac",
    "ellipsis_line_frac",
    "dup_line_frac",
    "dup_line_char_frac",
    "dup_para_frac",
    "dup_para_char_frac",
    *(f"top_{n}gram_char_frac" for n in (2, 3, 4)),
    *(f"dup_{n}gram_char_frac" for n in range(5, 11)),
    "stop_frac",
]


@cache
def stopword_index() -> dict[str, tuple[str, ...]]:
    """word -> languages whose stopword list holds it."""
    lists = json.loads(STOPWORDS_PATH.read_text(encoding="utf-8"))
    index: dict[str, list[str]] = {}
    for lang, words in lists.items():
        for w in words:
            index.setdefault(w.lower(), []).append(lang)
    return {w: tuple(langs) for w, langs in index.items()}


def _dup_frac(items: list[str]) -> tuple[float, float]:
    """Share of items that repeat an earlier one, and share of their characters."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = 0
    for it in items:
        if it in seen:
            dup += 1
            dup_chars += len(it)
        seen.add(it)
    total_chars = sum(len(it) for it in items) or 1
    return dup / len(items), dup_chars / total_chars


def _ngram_signals(words: list[str], sig: dict[str, Any]) -> None:
    """top_{2,3,4}gram_char_frac and dup_{5..10}gram_char_frac (Gopher), over word chars.

    Words become integer ids, n-grams a rolling 64-bit polynomial hash of the ids
    (collisions are negligible at document sizes), counted with ``np.unique``; the
    coverage of duplicated n-grams is a convolution of their starts with n ones.
    """
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    total = int(lens.sum())
    _, ids = np.unique(np.array(words, dtype=str), return_inverse=True)
    hashes = ids.astype(np.uint64) + np.uint64(1)
    for n in range(2, 11):
        key = f"top_{n}gram_char_frac" if n <= 4 else f"dup_{n}gram_char_frac"
        if len(words) < n or not total:
            sig[key] = 0.0
            continue
        hashes = hashes[:-1] * _PRIME + (ids[n - 1 :].astype(np.uint64) + np.uint64(1))
        _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        freq = counts[inverse]
        if n <= 4:  # characters of the most frequent n-gram, once per occurrence
            start = int(np.argmax(freq))
            top = int(freq[start])
            sig[key] = top * int(lens[start : start + n].sum()) / total if top > 1 else 0.0
            continue
        covered = np.convolve((freq > 1).astype(np.int64), np.ones(n, dtype=np.int64)) > 0
        sig[key] = int(lens[covered].sum()) / total


def text_signals(text: str | None, max_chars: int = 100_000) -> dict[str, Any]:
    """All signals of one text; empty or None text gives zeros and no stopword language."""
    text = text or ""
    sample = text[:max_chars]
    words = sample.split()
    n_words = max(len(words), 1)
    letters = sum(map(str.isalpha, sample))
    paras = [p.strip() for p in re.split(r"\n\s*\n", sample) if p.strip()]
    sample_lines = [ln.strip() for ln in sample.splitlines() if ln.strip()]
    n_lines = max(len(sample_lines), 1)
    sig: dict[str, Any] = {
        "n_chars": len(text),
        "n_words": len(text.split()),
        "n_lines": sum(1 for ln in text.splitlines() if ln.strip()),
        "mean_word_len": sum(map(len, words)) / n_words,
        "symbol_ratio": (sample.count("#") + sample.count("...") + sample.count("…")) / n_words,
        "digit_frac": sum(map(str.isdigit, sample)) / max(len(sample), 1),
        "upper_frac": sum(map(str.isupper, sample)) / max(letters, 1),
        "alpha_word_frac": sum(map(bool, map(_LETTER.search, words))) / n_words,
        "bullet_line_frac": sum(ln.startswith(BULLETS) for ln in sample_lines) / n_lines,
        "ellipsis_line_frac": sum(ln.endswith(("...", "…")) for ln in sample_lines) / n_lines,
    }
    sig["dup_line_frac"], sig["dup_line_char_frac"] = _dup_frac(sample_lines)
    sig["dup_para_frac"], sig["dup_para_char_frac"] = _dup_frac(paras)
    lowered = [w.strip(_PUNCT_STRIP) for w in sample.lower().split()]
    _ngram_signals(lowered, sig)
    index = stopword_index()
    per_lang: Counter = Counter()
    word_counts = Counter(lowered)
    for w, c in word_counts.items():
        for lang in index.get(w, ()):
            per_lang[lang] += c
    best = min(per_lang.items(), key=lambda kv: (-kv[1], kv[0]), default=None)
    sig["stop_lang"] = best[0] if best else None
    sig["stop_frac"] = best[1] / len(lowered) if best else 0.0
    sig["en_stop_count"] = sum(word_counts[w] for w in GOPHER_EN_STOPWORDS)
    return sig


@dataclass
class SignalsTagger(Stage):
    """Attribute stage: one row of signals per document, keyed by doc_id."""

    max_chars: int = 100_000

    name: ClassVar[str] = "signals"
    version: ClassVar[str] = "1"
    output_kind: ClassVar[str] = "attributes"
    output_schema: ClassVar[pa.Schema] = attribute_schema(
        [
            *(pa.field(f, pa.int64(), nullable=False) for f in INT_FIELDS),
            *(pa.field(f, pa.float32(), nullable=False) for f in FLOAT_FIELDS),
            pa.field("stop_lang", pa.string()),
        ],
        "signals",
    )

    def open_input(self, fs: Filesystem, task: Task) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(fs, task.input, columns=["doc_id", "text"], batch_rows=256)

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = [text_signals(t, self.max_chars) for t in batch.column("text").to_pylist()]
            ctx.counters["records_in"] += len(rows)
            cols = {name: [r[name] for r in rows] for name in self.output_schema.names[1:]}
            yield pa.RecordBatch.from_pydict(
                {"doc_id": batch.column("doc_id"), **cols}, schema=self.output_schema
            )
