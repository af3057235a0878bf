"""MinHash dedup on one core: corpusmill's fingerprint/bucket/cluster vs datatrove's.

Corpus (deterministic, seed 0): ``--docs`` synthetic documents of ~2 KB, each a run
of words drawn from the word-frequency distribution of the bundled news articles
(samples/html/newspaper4k/*.txt, all languages together, so most documents take the
non-ASCII path). ``--dup-rate`` of them are near copies of an earlier document: a
copy with each word replaced with probability r ~ U(0, 0.12) (r = 0: exact copy),
which spreads their shingle Jaccard over ~0.4..1, across the threshold. Written once
as four Parquet document shards; both sides read the same texts.

Each side runs in a child process of this script pinned to one core
(``os.sched_setaffinity``), the two sides interleaved ``--repeats`` times (medians
reported; other work on the machine makes single runs noisy). Peak memory is the
child's peak RSS (VmHWM; see ``peak_rss_mb``).

  ours  the runner passes ``minhash_dedup`` makes, with ``LocalRunner(processes=1)``:
        FingerprintStage over the 4 shards (reads Parquet, writes band-grouped bucket
        shards), BucketStage over the 14 bands (writes pairs), then build_clusters.
  peer  datatrove 0.10.1 MinhashDedupSignature (rank 0, all documents) ->
        MinhashDedupBuckets (14 ranks, one per band) -> MinhashDedupCluster, with
        MinhashConfig() (5-grams, 14 x 8, 64-bit xxhash): its fastest configuration,
        a whitespace word tokenizer (``str.split``; its default spaCy tokenizer runs
        about 10x slower). Documents are handed over in memory (not timed). Shim:
        xxhash 4 refuses ``str``, so datatrove's xxhash64 gets the UTF-8 bytes, which
        is what xxhash 3 did internally.

docs/s = documents / (signature + bucket + cluster wall seconds); cpu docs/s uses the
child's CPU seconds over the same span (less sensitive to other load). Quality: exact shingle
Jaccard (our shingles; their word segmentation equals datatrove's) on a sample of the
injected (original, copy) pairs and of the pairs each side reported. Recall = sampled
injected pairs with J >= threshold that ended in one cluster; precision = sampled
reported pairs with J >= threshold.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ must not shadow the standard library (there is a bench/tokenize.py)
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import posixpath
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "samples" / "html" / "newspaper4k"
N_SHARDS = 4


# corpus ---------------------------------------------------------------------------
def build_corpus(folder: Path, n_docs: int, dup_rate: float) -> dict:
    import pyarrow as pa

    from storage import DOC_SCHEMA, Manifest, OutputDir, make_doc_id, open_fs, write_shard

    rng = np.random.default_rng(0)
    counts = Counter(w for p in sorted(PAGES.glob("*.txt")) for w in p.read_text().split())
    vocab = np.array(sorted(counts), dtype=object)
    cdf = np.cumsum([counts[w] for w in vocab], dtype=float)
    cdf /= cdf[-1]
    lengths = rng.integers(250, 420, n_docs)  # ~2 KB of text on average
    is_copy = rng.random(n_docs) < dup_rate
    is_copy[0] = False
    words: list[np.ndarray] = []
    pairs = []
    for i in range(n_docs):
        if is_copy[i]:
            src = int(rng.integers(0, i))
            w = words[src].copy()
            swap = rng.random(w.size) < rng.uniform(0, 0.12) * (rng.random() > 0.1)
            w[swap] = vocab[np.searchsorted(cdf, rng.random(int(swap.sum())))]
            pairs.append((src, i))
        else:
            w = vocab[np.searchsorted(cdf, rng.random(int(lengths[i])))]
        words.append(w)
    texts = [" ".join(w) for w in words]
    fs = open_fs(str(folder / "source"))
    out = OutputDir(fs, fs.root)
    per = -(-n_docs // N_SHARDS)
    infos = []
    for s in range(N_SHARDS):
        rows = [
            {
                "doc_id": make_doc_id("bench", str(i)),
                "source": "bench",
                "native_id": str(i),
                "url": f"https://bench.example/{i}",
                "text": texts[i],
            }  # fmt: skip
            for i in range(s * per, min(n_docs, (s + 1) * per))
        ]
        table = pa.Table.from_pylist(rows, schema=DOC_SCHEMA)
        infos.append(write_shard(fs, out.shard_path(f"part-{s:05d}"), table, DOC_SCHEMA))
    out.write_manifest(Manifest(stage="bench/source", version="1", config={}, shards=infos))
    return {"pairs": pairs, "bytes": sum(len(t.encode()) for t in texts)}


def load_texts(folder: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [
        t
        for p in sorted((folder / "source").glob("part-*.parquet"))
        for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()
    ]


# the two sides (child processes) --------------------------------------------------
def run_ours(folder: Path, work: Path) -> dict:
    from pipelines.dedup.fingerprint import tables
    from pipelines.dedup.minhash import BucketStage, FingerprintStage, build_clusters
    from pipelines.runner import LocalRunner
    from pipelines.stage import Task, shard_tasks
    from storage import OutputDir, open_fs, read_shard

    tables()  # per-process Unicode tables (~0.5 s), like the peer's imports: not timed
    source = OutputDir(open_fs(str(folder / "source")), str(folder / "source"))
    src = source.manifest()
    runner, fs = LocalRunner(processes=1), open_fs(str(work))
    tasks = shard_tasks(source)
    t0, c0 = time.perf_counter(), time.process_time()
    buckets = OutputDir(fs, str(work / "buckets"))
    fp = runner.run(FingerprintStage(), tasks, buckets)
    t1 = time.perf_counter()
    pairs_out = OutputDir(fs, str(work / "pairs"))
    bands = [Task(f"band-{b:03d}", buckets.folder, fp.digest()) for b in range(14)]
    pairs = runner.run(BucketStage(), bands, pairs_out)
    t2 = time.perf_counter()
    import pyarrow as pa

    table = pa.concat_tables(
        [read_shard(fs, posixpath.join(pairs_out.folder, s.name)) for s in pairs.shards]
    )
    build_clusters(table, source, src)
    t3, c3 = time.perf_counter(), time.process_time()
    per = -(-src.rows // N_SHARDS)  # doc key (shard << 32 | row) -> global index
    a, b = (table.column(c).to_numpy() for c in ("a", "b"))
    glob = [(k >> 32) * per + (k & 0xFFFFFFFF) for k in (a, b)]
    return {"signature_s": t1 - t0, "bucket_s": t2 - t1, "cluster_s": t3 - t2, "cpu_s": c3 - c0,
            "pairs": np.stack(glob, 1).tolist()}  # fmt: skip


def run_peer(folder: Path, work: Path) -> dict:
    import datatrove.utils.hashes.xxhash as dt_xxhash
    import xxhash
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.logging import logger
    from datatrove.utils.word_tokenizers import WordTokenizer

    logger.remove()  # its per-band log lines would bury the table

    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(
        data.encode("utf-8") if isinstance(data, str) else data
    )

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    docs = [Document(text=t, id=str(i)) for i, t in enumerate(load_texts(folder))]
    config = MinhashConfig()
    sig = MinhashDedupSignature(str(work / "sigs"), config=config, language=Whitespace())
    t0, c0 = time.perf_counter(), time.process_time()
    sig.run(iter(docs), rank=0, world_size=1)
    t1 = time.perf_counter()
    for band in range(config.num_buckets):
        MinhashDedupBuckets(str(work / "sigs"), str(work / "dups"), config=config).run(
            rank=band, world_size=config.num_buckets
        )
    t2 = time.perf_counter()
    MinhashDedupCluster(str(work / "dups"), str(work / "remove"), config=config).run()
    t3, c3 = time.perf_counter(), time.process_time()
    pairs = [
        np.fromfile(p, dtype="<u4").reshape(-1, 4)[:, [1, 3]]
        for p in sorted((work / "dups").glob("*.dups"))
    ]
    return {"signature_s": t1 - t0, "bucket_s": t2 - t1, "cluster_s": t3 - t2, "cpu_s": c3 - c0,
            "pairs": np.concatenate(pairs).astype(np.int64).tolist()}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak RSS. ``getrusage``'s ru_maxrss is not used: Linux carries it
    over from the parent through fork + exec, so every child would report at least the
    parent's peak (the corpus builder's); VmHWM belongs to the new address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child(side: str, folder: Path, out: Path, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    work = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=folder))
    result = (run_ours if side == "ours" else run_peer)(folder, work)
    result["peak_rss_mb"] = peak_rss_mb()
    shutil.rmtree(work)
    out.write_text(json.dumps(result))


def spawn(side: str, folder: Path, cpu: int) -> dict:
    out = folder / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--dir", str(folder), "--cpu", str(cpu)]
    subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.read_text())


# quality --------------------------------------------------------------------------
def quality(texts: list[str], injected: list, found: list, sample: int) -> dict:
    from pipelines.dedup.cluster import connected_components
    from pipelines.dedup.fingerprint import MinhashConfig, shingle_set

    config = MinhashConfig()
    rng = np.random.default_rng(1)

    def jaccard(i: int, j: int) -> float:
        a, b = shingle_set(texts[i], config), shingle_set(texts[j], config)
        return len(a & b) / max(1, len(a | b))

    found_arr = np.unique(np.sort(np.array(found, np.int64).reshape(-1, 2), axis=1), axis=0)
    root = {}
    if found_arr.size:
        nodes, roots = connected_components(found_arr[:, 0], found_arr[:, 1])
        root = dict(zip(nodes.tolist(), roots.tolist(), strict=True))
    picks = rng.choice(len(injected), min(sample, len(injected)), replace=False)
    true = [injected[k] for k in picks if jaccard(*injected[k]) >= config.threshold]
    hit = sum(1 for i, j in true if i in root and root.get(i) == root.get(j))
    picks = rng.choice(len(found_arr), min(sample, len(found_arr)), replace=False)
    good = sum(1 for k in picks if jaccard(*found_arr[k]) >= config.threshold)
    return {"recall": hit / max(1, len(true)), "precision": good / max(1, len(picks)),
            "true_pairs_sampled": len(true), "found_pairs_sampled": len(picks),
            "distinct_pairs": len(found_arr)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dup-rate", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=1000, help="pairs checked by exact Jaccard")
    ap.add_argument("--quick", action="store_true", help="20k documents, 2 repeats")
    ap.add_argument("--side", choices=["ours", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, default=0, help="core both sides are pinned to")
    args = ap.parse_args()
    if args.side:
        child(args.side, Path(args.dir), Path(args.dir) / f"{args.side}.json", args.cpu)
        return
    if args.quick:
        args.docs, args.repeats, args.sample = 20_000, 2, 500

    folder = Path(tempfile.mkdtemp(prefix="bench-minhash-"))
    try:
        t = time.perf_counter()
        corpus = build_corpus(folder, args.docs, args.dup_rate)
        print(f"corpus: {args.docs} docs, {corpus['bytes'] / args.docs:.0f} B/doc avg, "
              f"{len(corpus['pairs'])} injected near copies ({time.perf_counter() - t:.0f} s)")  # fmt: skip
        runs: dict[str, list[dict]] = {"ours": [], "peer": []}
        for r in range(args.repeats):
            for side in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                res = spawn(side, folder, args.cpu)
                total = res["signature_s"] + res["bucket_s"] + res["cluster_s"]
                print(f"  run {r + 1} {side}: {args.docs / total:8.0f} docs/s "
                      f"(signature {res['signature_s']:.1f} s, bucket {res['bucket_s']:.1f} s, "
                      f"cluster {res['cluster_s']:.1f} s; cpu {args.docs / res['cpu_s']:.0f} docs/s), "
                      f"peak {res['peak_rss_mb']:.0f} MB")  # fmt: skip
                runs[side].append(res)
        texts = load_texts(folder)
        med = {}
        print(f"\n{'':6} {'docs/s':>9} {'sig docs/s':>11} {'cpu docs/s':>11} {'peak MB':>8} {'pairs':>8} "
              f"{'precision':>9} {'recall':>7}   (threshold J >= 0.719, exact shingle Jaccard)")  # fmt: skip
        for side, rs in runs.items():
            total = statistics.median(r["signature_s"] + r["bucket_s"] + r["cluster_s"] for r in rs)
            sig = statistics.median(r["signature_s"] for r in rs)
            cpu = statistics.median(r["cpu_s"] for r in rs)
            q = quality(texts, corpus["pairs"], rs[0]["pairs"], args.sample)
            n_pairs = q["distinct_pairs"]
            med[side] = args.docs / total
            print(f"{side:6} {med[side]:9.0f} {args.docs / sig:11.0f} {args.docs / cpu:11.0f} "
                  f"{max(r['peak_rss_mb'] for r in rs):8.0f} {n_pairs:8d} "
                  f"{q['precision']:9.3f} {q['recall']:7.3f}   "
                  f"(sampled {q['found_pairs_sampled']} found, {q['true_pairs_sampled']} true)")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"minhash: ratio={med['ours'] / med['peer']:.2f} ours={med['ours']:.0f} "
          f"peer={med['peer']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
