"""Rebuild the shipped default models from the shipped text pool, reproducibly.

    python -m classifiers.build_defaults            # all four: domain edu dclm safety
    python -m classifiers.build_defaults edu dclm   # some of them

Each model is trained in a fresh process: fastText (fasttext-numpy2 0.10) can hit
"Encountered NaN" when a process trains a second model after loading or training
another one, so nothing here trains twice in one process.

Reads ``classifiers/resources/pool.jsonl.gz`` (built once by ``classifiers/collect_pool.py``;
provenance in ``classifiers/resources/MANIFEST.tsv``) and writes
``classifiers/models/<task>.ftz`` plus ``<task>.ftz.eval.json``.

The labels are derived here, in plain rules anyone can read:
- domain: the pool's ``domain`` field, known by construction from the source file.
- edu (0-5): WEAK labels from a per-source rubric (``EDU_BY_SOURCE``), capped at 1
  for texts under 150 characters. No source in the pool earns 4 or 5, so the
  default edu model never predicts them; its score ranks text but is not a
  FineWeb-Edu score. Use ``classifiers.annotate`` with an LLM for real labels.
- dclm: ``hq`` for curated reference/instruction text, ``lq`` for whole-page web text
  (menus and footers included) and one-liner fortunes - a DCLM-style contrast
  between curated and random pages, on a few thousand records only.
- safety: ``toxic`` for the fortunes Debian's maintainers moved to the
  offensive packages (fortunes-es-off, fortunes-it-off), ``ok`` for the rest, incl.
  the ordinary Spanish/Italian fortunes of the same genre. There is no shippable
  adult or spam text in the pool, so the default safety model knows neither label.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from classifiers.fasttext_model import MODELS_DIR
from classifiers.train import Row, TrainParams, report, train

POOL = Path(__file__).resolve().parent / "resources" / "pool.jsonl.gz"

EDU_BY_SOURCE = {  # source prefix -> weak educational-value label
    "pypi:dolma/gsm8k": 3,  # grade-school word problems with worked solutions
    "deb:dict-foldoc": 3,  # explanatory computing encyclopedia entries
    "deb:dict-gcide": 2,  # dictionary definitions
    "pypi:click,attrs,numpy,pyarrow,PyYAML source": 2,  # code, some docstrings
    "deb:base-files/common-licenses": 1,  # legal boilerplate
    "deb:bible-kjv-text": 1,
    "pypi:newspaper4k/tests/data/txt": 1,  # news reporting
    "deb:fortunes": 0,  # jokes and one-liners (also -es, -it, -off)
    "pypi:newspaper4k/tests/data/html": 0,  # whole-page text with navigation
}
DCLM_HQ = (
    "pypi:dolma/gsm8k",
    "deb:dict-foldoc",
    "deb:dict-gcide",
    "pypi:click,attrs,numpy,pyarrow,PyYAML source",
    "deb:base-files/common-licenses",
    "deb:bible-kjv-text",
    "pypi:newspaper4k/tests/data/txt",
)
PARAMS = {
    "domain": TrainParams(dim=32, lr=0.5),
    "edu": TrainParams(),
    "dclm": TrainParams(),
    "safety": TrainParams(),
}


def pool(path: Path = POOL) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def edu_label(rec: dict) -> str:
    score = next(v for k, v in EDU_BY_SOURCE.items() if rec["source"].startswith(k))
    return str(min(score, 1) if len(rec["text"]) < 150 else score)


def labelled(task: str, records: list[dict] | None = None) -> list[Row]:
    """The (text, labels) rows a default model is trained and evaluated on."""
    records = pool() if records is None else records
    if task == "domain":
        return [(r["text"], [r["domain"]]) for r in records if r["domain"]]
    if task == "edu":
        return [(r["text"], [edu_label(r)]) for r in records]
    if task == "dclm":
        return [(r["text"], ["hq" if r["source"] in DCLM_HQ else "lq"]) for r in records]
    if task == "safety":
        return [(r["text"], ["toxic" if r["offensive"] else "ok"]) for r in records]
    raise ValueError(f"unknown task {task!r}; expected domain, edu, dclm or safety")


def main(argv: list[str] | None = None) -> int:
    tasks = (argv if argv is not None else sys.argv[1:]) or list(PARAMS)
    if len(tasks) > 1:  # one fresh process per model, exactly as `classifiers.train` runs
        for task in tasks:
            subprocess.run([sys.executable, "-m", "classifiers.build_defaults", task], check=True)
        return 0
    [task] = tasks
    out = MODELS_DIR / f"{task}.ftz"
    evaluation = train(labelled(task), task, out, PARAMS[task])
    print(f"== {task}: {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print(report(evaluation["heldout"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
