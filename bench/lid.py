"""Language ID docs/s on one core: corpusmill's LID vs bare fastText predict vs datatrove.

Input: documents built from the shipped UDHR translations (``UDHR_FILES`` in
classifiers/lid/udhr.py: samples/multilingual/udhr plus classifiers/lid/udhr_extra; 101
languages), each 1 to 6 consecutive paragraphs of one translation (about 150 B to 4 kB,
web-paragraph to short-page sized), repeated to ``--docs`` documents in a fixed shuffled
order. Every side gets the same list of Python strings, already in memory.

Sides, all in this process, pinned to one core (``os.sched_setaffinity``):

  raw       ``model.predict([t.replace("\\n", " ") for t in texts], k=1)`` on lid.176.ftz
            (the limit: fastText refuses newlines, so the replace is part of the floor).
  ours      ``LidStage.from_recipe("recipes/lid.yaml").identifier().identify(texts)``: the
            same model plus script detection, label map, Simplified/Traditional split, the
            second stage (on the documents it triggers on) and thresholds.
  ours-1    the same without the second stage (first stage + script + label map only).
  datatrove ``LanguageFilter(backend="ft176", label_only=True).run(docs)``: its documented
            per-document path (``predict(text, k=-1)``: all 176 scores per document). Its
            model property would download lid.176.bin; instead its ``_model`` is set to the
            same lid.176.ftz loaded with fastText's ``_FastText`` (the class it loads with),
            so both sides run the same weights and nothing is downloaded. datatrove also
            insists on the pip distribution *named* ``fasttext-numpy2-wheel``; this project
            has ``fasttext-numpy2``, which provides the same ``fasttext`` module, so that
            name check (``datatrove.pipeline.base.check_required_dependencies``) is skipped
            here. It needs ``fasteners`` installed.

The documents are cut into chunks of ``--chunk``; for each chunk the four sides run back
to back, and ``--repeats`` passes are made. Other work may share the machine, so each
side's docs/s is from its median chunk time, and the ratio to raw fastText is the median
of per-chunk ratios (paired: both sides of a pair ran within a second of each other). The
last line is ``lid: ratio=<ours/raw> ours=<docs/s> peer=<raw fastText docs/s>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, bench/ would be sys.path[0], and bench/tokenize.py would shadow the
# standard library's tokenize module (which numpy imports through inspect)
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from classifiers.lid.fasttext_lid import builtin_model_path, load_fasttext  # noqa: E402
from classifiers.lid.stage import LidStage  # noqa: E402
from classifiers.lid.udhr import UDHR_FILES, read_declaration  # noqa: E402


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = []
    for stem in UDHR_FILES:
        paragraphs = [p.text for p in read_declaration(stem)]
        i = 0
        while i < len(paragraphs):
            k = rng.randint(1, 6)
            pool.append("\n".join(paragraphs[i : i + k]))
            i += k
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=30_000)
    parser.add_argument("--chunk", type=int, default=1_000, help="docs per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="passes over all chunks")
    parser.add_argument("--quick", action="store_true", help="8000 docs, 2 passes")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.repeats = 8_000, 2
    os.sched_setaffinity(0, {args.core})

    import datatrove.pipeline.base as datatrove_base
    from datatrove.data import Document
    from datatrove.pipeline.filters import LanguageFilter
    from fasttext.FastText import _FastText

    texts = make_docs(args.docs)
    model = load_fasttext("builtin")
    recipe = LidStage.from_recipe(ROOT / "recipes" / "lid.yaml")
    ours = recipe.identifier()
    first_only = LidStage(**{**recipe.__dict__, "second_stage": ""}).identifier()
    datatrove_base.check_required_dependencies = lambda *_: None  # see the docstring
    lf = LanguageFilter(backend="ft176", label_only=True)
    lf.model._model = _FastText(str(builtin_model_path()))

    out = ours.identify(texts)
    replaced = sum(out.second_stage)
    sides = {
        "raw fastText": lambda ts: model.predict([t.replace("\n", " ") for t in ts], k=1),
        "ours": ours.identify,
        "ours-1 (no 2nd stage)": first_only.identify,
        "datatrove": lambda ts: list(lf.run(Document(text=t, id=str(i)) for i, t in enumerate(ts))),
    }
    chunks = [texts[i : i + args.chunk] for i in range(0, len(texts), args.chunk)]
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for chunk in chunks:
            for name, run in sides.items():
                t0 = time.perf_counter()
                run(chunk)
                seconds[name].append(time.perf_counter() - t0)

    chars = sum(len(t) for t in texts)
    raw = seconds["raw fastText"]
    print(f"{len(texts)} docs, {chars / len(texts):.0f} chars/doc on average, core {args.core}")
    print(f"{args.repeats} passes x {len(chunks)} chunks of {args.chunk} docs, sides interleaved")
    print(f"the second stage replaced {replaced} of {len(texts)} first-stage labels")
    print(f"{'side':24} {'docs/s':>9} {'Mchar/s':>8} {'vs raw':>7}")
    rate, ratio = {}, {}
    for name, ts in seconds.items():
        rate[name] = args.chunk / statistics.median(ts)
        ratio[name] = statistics.median(r / t for r, t in zip(raw, ts, strict=True))
        mcs = rate[name] * chars / len(texts) / 1e6
        print(f"{name:24} {rate[name]:9.0f} {mcs:8.2f} {ratio[name]:7.2f}")
    print("docs/s = chunk / median chunk time; vs raw = median of per-chunk time ratios")
    print(f"datatrove LanguageFilter: {rate['datatrove']:.0f} docs/s")
    r = ratio["ours"]
    print(f"lid: ratio={r:.2f} ours={rate['ours']:.0f} peer={rate['raw fastText']:.0f}")


if __name__ == "__main__":
    main()
