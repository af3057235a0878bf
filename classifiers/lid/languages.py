"""The canonical language label set: the 119 Qwen3 languages as FLORES-200 codes, plus ``other``.

The list ships in ``qwen3_languages.tsv`` (code, English name, family), copied from the
project's reference data; every LID model's raw labels are mapped onto these codes by a
per-model label map (``labelmap.py``), so attribute shards from different models agree.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources

OTHER = "other"


@cache
def languages() -> dict[str, str]:
    """Canonical code -> English name, in the file's order (119 entries)."""
    text = resources.files("classifiers.lid").joinpath("qwen3_languages.tsv").read_text("utf-8")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return {row["code"]: row["name"] for row in rows}


def canonical_labels() -> frozenset[str]:
    """The 119 codes plus ``other``: every value the ``lang`` attribute can take."""
    return frozenset(languages()) | {OTHER}
