"""Train a fastText tagger from labelled JSONL and evaluate it on a held-out split.

    python -m classifiers.train --task domain --data labelled.jsonl --out model.ftz

Each input line is ``{"text": ..., "label": "math"}`` (``label`` may be a list for the
multi-label ``safety`` task); labels come from people, from rules, or from the LLM
annotator (``python -m classifiers.annotate``). The command writes the model and
``<model>.eval.json`` beside it, and prints the confusion matrix and per-class F1.

Design choices:
- The held-out split is stratified and hash-based (xxhash of the text, salted with
  the seed): the same data always gives the same split, whatever the line order.
- Training is deterministic: ``thread=1`` and a fixed seed, so the same data and
  parameters give the same model file byte for byte.
- ``.ftz`` output is quantised after training (no retraining) and the evaluation is
  run on the quantised model, the one that ships.
- A label outside recipes/taxonomy.yaml is an error naming the line, so every model's
  attribute shards use the same vocabulary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fasttext
import xxhash

from classifiers.fasttext_model import LABEL_PREFIX, fasttext_line, predict_probs
from classifiers.taxonomy import MULTI_LABEL_TASKS, load_taxonomy

Row = tuple[str, list[str]]  # (text, labels)


@dataclass(frozen=True)
class TrainParams:
    dim: int = 16
    epoch: int = 25
    lr: float = 0.2
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int = 50_000
    seed: int = 7
    test_fraction: float = 0.2


def read_labelled(path: str | Path, task: str) -> list[Row]:
    """Read ``{"text", "label"}`` lines; raises with the line number on a bad line."""
    allowed = set(load_taxonomy().labels(task))
    rows: list[Row] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                text, label = rec["text"], rec["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: expected JSON with text and label ({exc})") from exc
            labels = [str(x) for x in label] if isinstance(label, list) else [str(label)]
            bad = [x for x in labels if x not in allowed]
            if bad or not labels:
                raise ValueError(
                    f"{path}:{n}: label {bad or labels} is not a {task} label of "
                    f"recipes/taxonomy.yaml ({', '.join(sorted(allowed))})"
                )
            rows.append((str(text), labels))
    return rows


def split(rows: list[Row], test_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Stratified hash split: per first label, the lowest-hash share goes to test."""
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_label[row[1][0]].append(row)
    train: list[Row] = []
    test: list[Row] = []
    for label in sorted(by_label):
        group = sorted(
            by_label[label], key=lambda r: xxhash.xxh64_hexdigest(r[0].encode(), seed=seed)
        )
        n_test = round(len(group) * test_fraction) if len(group) > 1 else 0
        test += group[:n_test]
        train += group[n_test:]
    train.sort(key=lambda r: xxhash.xxh64_hexdigest(r[0].encode(), seed=seed + 1))
    return train, test


def evaluate(model: Any, rows: list[Row], task: str) -> dict[str, Any]:
    """Accuracy, confusion matrix (true first label x top-1), per-class P/R/F1."""
    probs = predict_probs(model, [fasttext_line(t) for t, _ in rows])
    labels = sorted({lab for _, ls in rows for lab in ls} | {lab for p in probs for lab in p})
    confusion: dict[str, Counter] = {lab: Counter() for lab in labels}
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for (_, truth), p in zip(rows, probs, strict=True):
        top = max(p, key=p.get)
        confusion[truth[0]][top] += 1
        if task in MULTI_LABEL_TASKS:  # independent flags at 0.5
            predicted = {lab for lab, v in p.items() if v >= 0.5} or {top}
        else:
            predicted = {top}
        for lab in labels:
            tp[lab] += lab in predicted and lab in truth
            fp[lab] += lab in predicted and lab not in truth
            fn[lab] += lab not in predicted and lab in truth
    per_class = {}
    for lab in labels:
        prec = tp[lab] / (tp[lab] + fp[lab]) if tp[lab] + fp[lab] else 0.0
        rec = tp[lab] / (tp[lab] + fn[lab]) if tp[lab] + fn[lab] else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        support = tp[lab] + fn[lab]
        per_class[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": support}
    supported = [v["f1"] for v in per_class.values() if v["support"]]
    correct = sum(confusion[lab][lab] for lab in labels)
    return {
        "n": len(rows),
        "accuracy": correct / len(rows) if rows else 0.0,
        "macro_f1": sum(supported) / len(supported) if supported else 0.0,
        "per_class": per_class,
        "confusion": {lab: dict(sorted(confusion[lab].items())) for lab in labels},
    }


def report(metrics: dict[str, Any]) -> str:
    """The confusion matrix and per-class table as fixed-width text."""
    labels = list(metrics["per_class"])
    w = max(8, *(len(x) for x in labels)) + 1
    lines = [
        f"held-out n={metrics['n']} accuracy={metrics['accuracy']:.3f} "
        f"macro_f1={metrics['macro_f1']:.3f}",
        "confusion (rows: true, columns: predicted top-1)",
        " " * w + "".join(f"{x[:6]:>7}" for x in labels),
    ]
    for lab in labels:
        row = metrics["confusion"][lab]
        lines.append(f"{lab:<{w}}" + "".join(f"{row.get(x, 0):>7}" for x in labels))
    lines.append(f"{'class':<{w}}{'prec':>7}{'recall':>7}{'f1':>7}{'n':>7}")
    for lab, m in metrics["per_class"].items():
        lines.append(
            f"{lab:<{w}}{m['precision']:>7.3f}{m['recall']:>7.3f}{m['f1']:>7.3f}{m['support']:>7}"
        )
    return "\n".join(lines)


def _write_fasttext_file(rows: Iterable[Row], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for text, labels in rows:
            tags = " ".join(LABEL_PREFIX + lab for lab in labels)
            f.write(f"{tags} {fasttext_line(text)}\n")


def train(rows: list[Row], task: str, out: str | Path, params: TrainParams = TrainParams()) -> dict:
    """Train, quantise (for ``.ftz``), evaluate on the held-out split, write model + eval."""
    out = Path(out)
    if len({r[1][0] for r in rows}) < 2:
        raise ValueError(
            f"{task}: training needs at least two distinct labels, got {len(rows)} rows"
        )
    train_rows, test_rows = split(rows, params.test_fraction, params.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        _write_fasttext_file(train_rows, train_file)
        model = fasttext.train_supervised(
            input=str(train_file),
            dim=params.dim,
            epoch=params.epoch,
            lr=params.lr,
            wordNgrams=params.word_ngrams,
            minCount=params.min_count,
            bucket=params.bucket,
            loss="ova" if task in MULTI_LABEL_TASKS else "softmax",
            seed=params.seed,
            thread=1,
            verbose=0,
        )
        if out.suffix == ".ftz":
            model.quantize(input=str(train_file), retrain=False, qnorm=True, cutoff=0)
        tmp_model = Path(tmp) / out.name
        model.save_model(str(tmp_model))
        tmp_model.replace(out)
    metrics = evaluate(model, test_rows, task)
    evaluation = {
        "task": task,
        "model": out.name,
        "model_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "params": asdict(params),
        "train_counts": dict(sorted(Counter(r[1][0] for r in train_rows).items())),
        "test_counts": dict(sorted(Counter(r[1][0] for r in test_rows).items())),
        "heldout": metrics,
    }
    eval_path = eval_path_for(out)
    tmp_eval = eval_path.with_suffix(".tmp")
    tmp_eval.write_text(json.dumps(evaluation, indent=1, sort_keys=True) + "\n")
    tmp_eval.replace(eval_path)
    return evaluation


def eval_path_for(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".eval.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train a fastText domain/quality/safety tagger.")
    ap.add_argument("--task", required=True, choices=["domain", "edu", "dclm", "safety"])
    ap.add_argument("--data", required=True, help='JSONL with {"text": ..., "label": ...}')
    ap.add_argument("--out", required=True, help="model path (.ftz: quantised, .bin: full)")
    defaults = TrainParams()
    for name, value in asdict(defaults).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args(argv)
    params = TrainParams(**{k: getattr(args, k) for k in asdict(defaults)})
    try:
        rows = read_labelled(args.data, args.task)
        evaluation = train(rows, args.task, args.out, params)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # fastText's "Encountered NaN"
        print(
            f"error: fastText training failed on {args.data}: {exc}; try another --lr "
            "or a larger --bucket",
            file=sys.stderr,
        )
        return 2
    print(report(evaluation["heldout"]))
    print(f"model: {args.out}\nevaluation: {eval_path_for(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
