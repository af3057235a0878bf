"""The training command and the shipped default models.

The shipped models must reload and reproduce, on the held-out split re-derived from
the shipped pool, exactly the evaluation stored beside them; the training command
must work end to end on a tiny JSONL (split, train, quantise, evaluate, print the
confusion matrix and per-class F1) and be deterministic.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from stages_for_tests import REPO, subprocess_env

from classifiers.build_defaults import labelled, pool
from classifiers.fasttext_model import default_model, load_model
from classifiers.train import TrainParams, eval_path_for, evaluate, main, split

TASKS = ("domain", "edu", "dclm", "safety")


@pytest.fixture(scope="module")
def records():
    return pool()


@pytest.mark.parametrize("task", TASKS)
def test_shipped_model_reproduces_its_stored_evaluation(task, records):
    path = Path(default_model(task))
    stored = json.loads(eval_path_for(path).read_text())
    assert path.stat().st_size < 5_000_000
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stored["model_sha256"]
    params = TrainParams(**stored["params"])
    _, test = split(labelled(task, records), params.test_fraction, params.seed)
    metrics = evaluate(load_model(str(path)), test, task)
    assert metrics["n"] == stored["heldout"]["n"]
    assert metrics["confusion"] == stored["heldout"]["confusion"]
    assert metrics["accuracy"] == pytest.approx(stored["heldout"]["accuracy"])
    for label, m in stored["heldout"]["per_class"].items():
        assert metrics["per_class"][label]["f1"] == pytest.approx(m["f1"]), label


def _tiny_jsonl(path: Path, records) -> None:
    want = {"math": 0, "code": 0, "law": 0}
    with open(path, "w") as f:
        for r in records:
            if r["domain"] in want and want[r["domain"]] < 25:
                want[r["domain"]] += 1
                f.write(json.dumps({"text": r["text"], "label": r["domain"]}) + "\n")


def test_train_command_end_to_end_prints_confusion_and_f1(tmp_path, records):
    data = tmp_path / "labelled.jsonl"
    _tiny_jsonl(data, records)
    out = tmp_path / "m" / "tiny.ftz"
    cmd = [
        sys.executable,
        "-m",
        "classifiers.train",
        "--task",
        "domain",
        "--data",
        str(data),
        "--out",
        str(out),
        "--bucket",
        "5000",
        "--epoch",
        "10",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "confusion (rows: true, columns: predicted top-1)" in proc.stdout
    f1_rows = [
        ln.split()
        for ln in proc.stdout.splitlines()
        if ln.split()[:1] in (["math"], ["code"], ["law"]) and len(ln.split()) == 5
    ]
    assert {r[0] for r in f1_rows} == {"math", "code", "law"}
    evaluation = json.loads(eval_path_for(out).read_text())
    assert evaluation["test_counts"] == {"code": 5, "law": 5, "math": 5}
    for name, _prec, _rec, f1, _n in f1_rows:
        assert float(f1) == pytest.approx(evaluation["heldout"]["per_class"][name]["f1"], abs=1e-3)
    first = out.read_bytes()
    again = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == first, "same data and seed must give the same model bytes"


def test_labels_outside_the_taxonomy_are_rejected_with_the_line(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a b c", "label": "math"}\n{"text": "x", "label": "poetry"}\n')
    assert main(["--task", "domain", "--data", str(data), "--out", str(tmp_path / "m.ftz")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "poetry" in err
