"""MinHash dedup end to end: Spark local[1] / local[2] vs the local runner with 1 / 2 processes.

Corpus: bench/minhash.py's generator (``--docs`` synthetic ~2 KB documents drawn from
the bundled news articles' word distribution, ``--dup-rate`` of them near copies of
an earlier one), written once as four Parquet document shards.

Each measurement runs in a child process of this script (a SparkContext's master is
fixed for the life of its JVM): the whole dedup, from the source shards to the kept
documents, the quarantine and the cluster attributes:

  local runner  ``minhash_dedup(LocalRunner(processes=N))``: fingerprint, bucket, cluster
                in the driver, attributes, removal (process-pool start included).
  spark         ``spark_minhash_dedup`` on ``local[N]``: signatures in mapInArrow, band
                buckets, large-star/small-star component rounds, cluster files, removal
                (pipelines/spark/minhash.py: six Spark jobs for two component rounds).
                The SparkSession is started (JVM, ~5-15 s) and one trivial mapInArrow
                job per core run (Python workers up, ~3 s) before the clock starts: an
                application pays that once, not per dataset. (The local runner pays
                its process-pool start in every pass; it is included.)

docs/s = input documents / wall seconds. The four runs are interleaved ``--repeats``
times and medians reported (other work shares this machine's cores). Both sides
must keep the same documents: the kept doc_ids are compared after every Spark run.

    ratio = Spark local[2] docs/s / local runner 2 processes docs/s
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ must not shadow the standard library (there is a bench/tokenize.py)
if str(Path(__file__).resolve().parent) in sys.path:  # not again in spawned workers
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import hashlib
import importlib.util
import json
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent


def build(folder: Path, docs: int, dup_rate: float) -> None:
    spec = importlib.util.spec_from_file_location("bench_minhash", ROOT / "bench" / "minhash.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))  # bench/minhash.py takes it off sys.path itself
    spec.loader.exec_module(module)
    module.build_corpus(folder, docs, dup_rate)


def kept_ids(out) -> list[str]:
    from storage import read_shard

    return sorted(
        d
        for s in out.manifest().shards
        for d in read_shard(out.fs, f"{out.folder}/{s.name}", columns=["doc_id"])
        .column("doc_id")
        .to_pylist()
    )


def warm_up_python_workers(spark, cores: int) -> None:
    """One trivial mapInArrow job per core: starts the Python workers (and their imports)
    that an application starts once and then reuses for every job."""
    from pipelines.spark.runner import tasks_frame
    from pipelines.stage import Task

    def touch(batches):
        from pipelines.dedup.fingerprint import tables

        tables()
        yield from batches

    tasks = [Task(f"warm-{i}", "") for i in range(cores)]
    tasks_frame(spark, tasks).mapInArrow(
        touch, "shard int, part string, input string, version string"
    ).count()


def run_side(side: str, cores: int, folder: Path) -> dict:
    from pipelines.dedup.fingerprint import tables
    from storage import OutputDir, open_fs

    tables()  # per-process Unicode tables (~0.5 s); the local runner's workers build their own
    fs = open_fs(str(folder))
    source = OutputDir(fs, str(folder / "source"))
    work = folder / f"{side}{cores}"
    shutil.rmtree(work, ignore_errors=True)
    out, attrs = OutputDir(fs, str(work / "out")), OutputDir(fs, str(work / "attrs"))
    if side == "local":
        from pipelines.dedup.minhash import minhash_dedup
        from pipelines.runner import LocalRunner

        t0 = time.perf_counter()
        manifest = minhash_dedup(LocalRunner(processes=cores), source, out, attrs, progress=str)
        seconds = time.perf_counter() - t0
    else:
        from pipelines.spark.minhash import spark_minhash_dedup
        from pipelines.spark.session import SparkSettings, spark_session

        settings = SparkSettings(master=f"local[{cores}]", input_url=str(folder))
        t0 = time.perf_counter()
        spark = spark_session(settings)
        warm_up_python_workers(spark, cores)  # JVM, scheduler and Python workers: not timed
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        manifest = spark_minhash_dedup(spark, source, out, attrs, progress=str)
        seconds = time.perf_counter() - t0
        spark.stop()
    c = manifest.counters
    return {
        "side": side,
        "cores": cores,
        "seconds": seconds,
        "docs_per_s": c["documents_in"] / seconds,
        "removed": c["near_duplicates_removed"],
        "kept_digest": hashlib.sha256("\n".join(kept_ids(out)).encode()).hexdigest(),
        **({"session_start_s": start} if side == "spark" else {}),
    }


def child(side: str, cores: int, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--cores", str(cores), "--dir", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} {cores} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=150_000)
    ap.add_argument("--dup-rate", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100k documents, 1 repeat (< 5 min)")
    ap.add_argument("--side", choices=["local", "spark"], help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.cores, Path(args.dir))))
        return
    if args.quick:
        args.docs, args.repeats = 100_000, 1

    folder = Path(tempfile.mkdtemp(prefix="spark_scaling-"))
    try:
        t0 = time.perf_counter()
        build(folder, args.docs, args.dup_rate)
        print(f"corpus: {args.docs} docs, 4 shards ({time.perf_counter() - t0:.1f} s)")
        runs: dict[tuple[str, int], list[dict]] = {}
        for rep in range(args.repeats):
            for side, cores in (("local", 1), ("spark", 1), ("local", 2), ("spark", 2)):
                r = child(side, cores, folder)
                runs.setdefault((side, cores), []).append(r)
                extra = f", session start {r['session_start_s']:.1f} s" if side == "spark" else ""
                print(
                    f"  rep {rep} {side:5s} {cores} core(s): {r['seconds']:.1f} s, "
                    f"{r['docs_per_s']:.0f} docs/s, {r['removed']} removed{extra}"
                )
        kept = {r["kept_digest"] for rs in runs.values() for r in rs}
        removed = {r["removed"] for rs in runs.values() for r in rs}
        if len(kept) != 1 or len(removed) != 1:
            raise SystemExit(f"the runs kept different documents: removed {sorted(removed)}")
        med = {k: statistics.median(r["docs_per_s"] for r in rs) for k, rs in runs.items()}
        print(f"same kept set in every run ({removed.pop()} near duplicates removed)")
        for (side, cores), v in sorted(med.items()):
            name = "Spark local" if side == "spark" else "local runner"
            print(f"{name} {cores} core(s): {v:.0f} docs/s (median of {args.repeats})")
        print(
            f"scaling 1 -> 2 cores: local runner x{med[('local', 2)] / med[('local', 1)]:.2f}, "
            f"Spark x{med[('spark', 2)] / med[('spark', 1)]:.2f}"
        )
        ours, peer = med[("spark", 2)], med[("local", 2)]
        print(f"spark_scaling: ratio={ours / peer:.3f} ours={ours:.0f} peer={peer:.0f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
