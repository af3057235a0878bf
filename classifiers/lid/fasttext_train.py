"""Train a fastText supervised model in a fresh process, so the result is reproducible.

fasttext-numpy2 0.10.4 carries state from one ``train_supervised`` call to the next inside a
process: the same data and arguments (``thread=1``, fixed ``seed``) give a different model,
or ``RuntimeError: Encountered NaN``, on the second or third call, while the first call in a
fresh interpreter always gives the same bytes (measured: 8 calls in one process gave 5
different models and 3 NaN failures; fresh processes gave identical files). So every
training run here happens in a new ``python`` process that trains once and exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
_CHILD = (
    "import json, sys; from classifiers.lid.fasttext_train import train_here; "
    "train_here(**json.loads(sys.argv[1]))"
)


def train_here(data: str, out: str, train_args: dict, quantize_args: dict | None) -> None:
    """Train and save in this process (the child side of ``train_supervised_isolated``)."""
    import fasttext

    model = fasttext.train_supervised(input=data, **train_args)
    if quantize_args is not None:
        model.quantize(input=data, **quantize_args)
    model.save_model(out)


def train_supervised_isolated(
    data: str | Path,
    out: str | Path,
    train_args: dict[str, Any],
    quantize_args: dict[str, Any] | None = None,
) -> Path:
    """Train on ``data`` (fastText ``__label__`` lines) and save the model to ``out``."""
    args = {"data": str(data), "out": str(out), "train_args": train_args}
    args["quantize_args"] = quantize_args
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"fastText training on {data} failed (exit {proc.returncode}); arguments "
            f"{train_args}: {proc.stderr.strip().splitlines()[-1:]}"
        )
    return Path(out)
