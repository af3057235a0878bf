"""Rebuild the second-stage LID model from the shipped UDHR text, reproducibly.

    .venv/bin/python -m classifiers.lid.train_second_stage [--out classifiers/lid/models]

Steps (each a named function below):
1. ``split``: UDHR paragraphs, articles 5, 10, ..., 30 held out (``udhr.py``).
2. ``first_stage_view``: run the built-in first stage (lid.176) on the training split.
3. ``plan``: the targets are ``TARGETS`` (languages lid.176 cannot emit, or never emits on
   this text); the parents of a target are the first-stage labels given to at least 5% of
   its training paragraphs; a parent's trigger score is the ``TRIGGER_QUANTILE`` quantile of
   the first-stage scores of all target paragraphs mislabelled as that parent, plus
   ``TRIGGER_MARGIN`` (capped at 1): confident parent-language documents skip the second
   stage, at the price of the most confidently mislabelled target paragraphs.
4. ``train``: fastText supervised on paragraphs and their sentences of targets + parents,
   one thread, fixed seed, not quantized (``TRAIN_ARGS`` says why), in a fresh process
   (``fasttext_train.py`` says why): the same inputs give the same bytes.
5. ``evaluate``: per-language accuracy on the held-out split, of the second-stage model alone
   and of the whole pipeline (first stage + second stage) for every shipped language, with
   the first stage alone beside it. Written into the metadata JSON, which
   ``tests/test_lid.py`` reproduces from the shipped model.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from classifiers.lid.fasttext_lid import (
    BUILTIN,
    FastTextLid,
    LanguageIdentifier,
    bounded,
    model_lines,
)
from classifiers.lid.fasttext_train import train_supervised_isolated
from classifiers.lid.languages import OTHER
from classifiers.lid.second_stage import MODEL_DIR, SecondStage, metadata_path
from classifiers.lid.udhr import Paragraph, read_all

NAME = "udhr_second_stage"
TARGETS = [
    "fao_Latn", "lij_Latn", "fur_Latn", "srd_Latn", "ban_Latn", "min_Latn", "pap_Latn",
    "kea_Latn", "tpi_Latn", "mag_Deva", "mai_Deva", "bho_Deva", "yue_Hant", "bjn_Latn",
]  # fmt: skip
PARENT_SHARE = 0.05
TRIGGER_QUANTILE = 0.9
TRIGGER_MARGIN = 0.05
THRESHOLD = 0.8
# Speed (the second stage runs on every triggered document): character 3-grams only
# (3- plus 4-grams were twice the n-grams to hash and add), 20k buckets, and not quantized
# (a quantized row is decoded from 8 product-quantizer codes, and with pruning every n-gram
# also went through a hash map). Per document it costs about 0.3x lid.176 (the earlier
# quantized 3-4-gram model: 0.8x), with the same or better held-out accuracy on every
# language; the price is size (2.4 MB instead of 0.4 MB).
TRAIN_ARGS = dict(
    dim=16, minn=3, maxn=3, wordNgrams=1, epoch=40, lr=0.5, bucket=20_000,
    loss="softmax", thread=1, seed=0, verbose=0,
)  # fmt: skip
QUANTIZE_ARGS: dict | None = None  # e.g. dict(qnorm=True, cutoff=0, dsub=2, ...): smaller, slower
_SENTENCE = re.compile(r"(?<=[.!?।۔。؟])\s+")


def split() -> tuple[list[Paragraph], list[Paragraph]]:
    paragraphs = [p for p in read_all() if p.lang != OTHER]
    return [p for p in paragraphs if not p.held_out], [p for p in paragraphs if p.held_out]


def first_stage_view(paragraphs: list[Paragraph]) -> tuple[list[str], list[float]]:
    lid = LanguageIdentifier(FastTextLid(BUILTIN, "lid176"))
    out = lid.identify([p.text for p in paragraphs])
    return out.lang, out.score


def plan(train: list[Paragraph], langs: list[str], scores: list[float]) -> dict:
    by_target: dict[str, Counter] = defaultdict(Counter)
    seen: dict[str, list[float]] = defaultdict(list)  # parent -> scores of mislabelled targets
    for p, lang, score in zip(train, langs, scores, strict=True):
        if p.lang in TARGETS and lang not in (p.lang, OTHER):
            by_target[p.lang][lang] += 1
            seen[lang].append(score)
    totals = Counter(p.lang for p in train)
    triggers: dict[str, float] = {}
    parents: dict[str, list[str]] = {}
    for target in TARGETS:
        parents[target] = sorted(
            lang for lang, n in by_target[target].items() if n >= PARENT_SHARE * totals[target]
        )
        for lang in parents[target]:
            q = float(np.quantile(seen[lang], TRIGGER_QUANTILE))
            triggers[lang] = min(1.0, round(q + TRIGGER_MARGIN, 4))
    return {"targets": TARGETS, "parents": parents, "triggers": dict(sorted(triggers.items()))}


def examples(paragraphs: list[Paragraph]) -> list[tuple[str, str]]:
    out = []
    for p in paragraphs:
        out.append((p.lang, p.text))
        sentences = [s for s in _SENTENCE.split(p.text) if len(s) >= 20]
        if len(sentences) > 1:
            out.extend((p.lang, s) for s in sentences)
    return out


def train(train_set: list[Paragraph], classes: set[str], out_path: Path) -> None:
    rows = examples([p for p in train_set if p.lang in classes])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text(
            "".join(f"__label__{lang} {bounded(text)}\n" for lang, text in rows), "utf-8"
        )
        train_supervised_isolated(data, out_path, TRAIN_ARGS, QUANTIZE_ARGS)


def accuracy(truth: list[str], pred: list[str]) -> dict[str, list[int]]:
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t, p in zip(truth, pred, strict=True):
        acc[t][0] += t == p
        acc[t][1] += 1
    return dict(sorted(acc.items()))


def evaluate(model_path: Path, held_out: list[Paragraph], classes: list[str]) -> dict:
    """Held-out accuracy as ``{lang: [correct, total]}`` for the three views."""
    second = SecondStage(model_path)
    own = [p for p in held_out if p.lang in classes]
    own_pred, _ = second.predict(model_lines([p.text for p in own]))
    texts = [p.text for p in held_out]
    truth = [p.lang for p in held_out]
    first = FastTextLid(BUILTIN, "lid176")
    return {
        "second_stage_alone": accuracy([p.lang for p in own], own_pred),
        "first_stage": accuracy(truth, LanguageIdentifier(first).identify(texts).lang),
        "pipeline": accuracy(truth, LanguageIdentifier(first, second).identify(texts).lang),
    }


def build(out_dir: Path = MODEL_DIR) -> dict:
    train_set, held_out = split()
    langs, scores = first_stage_view(train_set)
    meta = {"name": NAME, "threshold": THRESHOLD, **plan(train_set, langs, scores)}
    classes = sorted(set(TARGETS) | set(meta["triggers"]))
    meta |= {"classes": classes, "train_args": TRAIN_ARGS, "quantize_args": QUANTIZE_ARGS}
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{NAME}.bin"
    train(train_set, set(classes), model_path)
    metadata_path(model_path).write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
    meta["eval"] = evaluate(model_path, held_out, classes)
    metadata_path(model_path).write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="output folder")
    meta = build(parser.parse_args().out)
    ev = meta["eval"]
    print(f"{'lang':10} {'first':>7} {'pipeline':>8} {'2nd alone':>9}")
    for lang, (ok, n) in ev["pipeline"].items():
        f_ok, _ = ev["first_stage"][lang]
        s = ev["second_stage_alone"].get(lang)
        alone = f"{s[0] / s[1]:9.2f}" if s else " " * 9
        print(f"{lang:10} {f_ok / n:7.2f} {ok / n:8.2f} {alone}  (n={n})")
    print(f"triggers: {meta['triggers']}")


if __name__ == "__main__":
    main()
