"""The label sets of the domain, quality and safety taggers, read from recipes/taxonomy.yaml.

One YAML file is the single source of truth: the training command rejects labels
outside it, the LLM annotator shows its descriptions as the rubric, and the taggers
emit only its labels. Four fastText tasks hang off it:

    domain   one of ~25 fields (``other`` for empty input)        softmax
    edu      FineWeb-Edu educational value "0".."5"                softmax
    dclm     DCLM-style "hq" (curated-looking) vs "lq" (raw web)   softmax
    safety   independent flags toxic / adult / spam, or "ok"      one-vs-all
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

TAXONOMY_PATH = Path(__file__).resolve().parent.parent / "recipes" / "taxonomy.yaml"
TASKS = ("domain", "edu", "dclm", "safety")
MULTI_LABEL_TASKS = frozenset({"safety"})


@dataclass(frozen=True)
class Taxonomy:
    domain: dict[str, str]  # label -> description
    edu: dict[str, str]  # "0".."5" -> rubric line
    dclm: dict[str, str]
    safety: dict[str, str]

    def labels(self, task: str) -> list[str]:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        return list(getattr(self, task))

    def describe(self, task: str) -> dict[str, str]:
        self.labels(task)
        return dict(getattr(self, task))


@cache
def load_taxonomy(path: Path = TAXONOMY_PATH) -> Taxonomy:
    """Parse the taxonomy file; raises with the file name if a section is missing."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    try:
        quality = doc["quality"]
        return Taxonomy(
            domain={str(k): str(v) for k, v in doc["domain"].items()},
            edu={str(k): str(v) for k, v in quality["edu"].items()},
            dclm={str(k): str(v) for k, v in quality["dclm"].items()},
            safety={str(k): str(v) for k, v in doc["safety"].items()},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: taxonomy needs domain, quality.edu, quality.dclm and "
            f"safety sections ({exc!r})"
        ) from exc
