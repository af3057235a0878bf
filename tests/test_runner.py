"""LocalRunner: resume after a killed run, failed tasks, quarantine and stale parts.

Real processes throughout: the killed run is a child ``python`` whose whole process
group (runner and its spawned pool workers) gets SIGKILL while shards are being
written; the rerun must finish exactly the missing tasks and end up byte for byte
equal to a clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from stages_for_tests import (
    SlowUpperStage,
    WorkerPidStage,
    doc_row,
    output_dir,
    shard_tasks,
    source_rows,
    subprocess_env,
    write_doc_output,
)

from pipelines.runner import LocalRunner, StageFailed
from storage import QUARANTINE_SCHEMA, OutputDir, read_shard
from storage.fs import TMP_PREFIX

N_SHARDS = 8
ROWS = 10


def _read_all(out: OutputDir) -> dict[str, pa.Table]:
    """part name -> table, for every shard the manifest lists (checksums verified)."""
    manifest = out.manifest()
    manifest.verify(out.fs, out.folder, checksums=True)
    return {
        s.name: read_shard(out.fs, os.path.join(out.folder, s.name), expect=s)
        for s in manifest.shards
    }


def _mtimes(folder: Path, parts: list[str]) -> dict[str, int]:
    files = {}
    for part in parts:
        files[f"{part}.parquet"] = folder / f"{part}.parquet"
        files[f"_done/{part}.json"] = folder / "_done" / f"{part}.json"
    return {name: p.stat().st_mtime_ns for name, p in files.items()}


def _temp_files(folder: Path) -> list[str]:
    # os.walk, not Path.rglob: it tolerates files renamed away while it looks
    return [n for _, _, names in os.walk(folder) for n in names if n.startswith(TMP_PREFIX)]


def _markers(folder: Path) -> list[str]:
    """Parts with a completion marker (not counting markers still being written)."""
    names = os.listdir(folder / "_done") if (folder / "_done").is_dir() else []
    return sorted(
        n.removesuffix(".json") for n in names if n.endswith(".json") and not n.startswith(".")
    )


def _done_parts(msgs: list[str]) -> list[str]:
    """Parts a run actually executed, from its progress messages."""
    return sorted(m.split("(")[1].split(":")[0] for m in msgs if " done (" in m)


def test_killed_run_resumes_to_the_same_output_as_a_clean_run(tmp_path):
    source = output_dir(tmp_path / "source")
    write_doc_output(source, source_rows(N_SHARDS, ROWS, spam_every=4))
    tasks = shard_tasks(source)
    killed_dir = tmp_path / "killed"

    code = (
        "import stages_for_tests as s; "
        f"s.run_slow({str(source.folder)!r}, {str(killed_dir)!r}, delay=0.8, processes=2)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        start_new_session=True,  # its own process group: the pool workers die with it
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    try:
        # kill once two tasks are done and later ones are half-way through their shards
        while len(_markers(killed_dir)) < 2 or not _temp_files(killed_dir):
            if proc.poll() is not None:
                pytest.fail(f"runner exited early:\n{proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("no task finished within 60 s")
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

    finished = _markers(killed_dir)
    assert 2 <= len(finished) < N_SHARDS
    assert not (killed_dir / "_manifest.json").exists()
    assert _temp_files(killed_dir)  # the killed writers' half-written shards
    killed = output_dir(killed_dir)
    # what a reader lists is only ever whole shards; half-written ones are hidden temp files
    for path in killed.shard_files():
        read_shard(killed.fs, path)
    before = _mtimes(killed_dir, finished)

    msgs: list[str] = []
    resumed = LocalRunner(processes=2).run(
        SlowUpperStage(), tasks, killed, in_fs=source.fs, progress=msgs.append
    )
    assert msgs[0] == f"test/slow_upper: {len(finished)} of {N_SHARDS} tasks already done, resuming"
    unfinished = sorted({t.part for t in tasks} - set(finished))
    assert _done_parts(msgs) == unfinished
    assert _mtimes(killed_dir, finished) == before  # finished tasks were not redone
    assert _temp_files(killed_dir) == []  # the killed writers' temp files are gone

    clean = output_dir(tmp_path / "clean")
    reference = LocalRunner(processes=1).run(SlowUpperStage(), tasks, clean, in_fs=source.fs)

    assert resumed.shards == reference.shards  # names, rows, bytes and sha256
    assert resumed.quarantine == reference.quarantine
    assert resumed.counters == reference.counters
    assert resumed.digest() == reference.digest()

    got, want = _read_all(killed), _read_all(clean)
    assert list(got) == list(want) == [f"{t.part}.parquet" for t in tasks]
    for name in want:
        assert got[name].column("doc_id").to_pylist() == want[name].column("doc_id").to_pylist()
        assert got[name].column("text").to_pylist() == want[name].column("text").to_pylist()

    ids = [i for t in got.values() for i in t.column("doc_id").to_pylist()]
    spam = [
        r["doc_id"] for rows in source_rows(N_SHARDS, ROWS, 4) for r in rows if "SPAM" in r["text"]
    ]
    all_ids = [r["doc_id"] for rows in source_rows(N_SHARDS, ROWS, 4) for r in rows]
    assert len(ids) == len(set(ids))  # no duplicates
    assert set(ids) == set(all_ids) - set(spam)  # no gaps
    assert resumed.counters["records_in"] == N_SHARDS * ROWS
    assert resumed.counters["records_out"] == len(ids)
    assert resumed.counters["quarantined.spam"] == len(spam)


def test_failed_task_names_its_input_and_rerun_retries_only_it(tmp_path):
    source = output_dir(tmp_path / "source")
    rows = source_rows(4, 6)
    poisoned = [list(s) for s in rows]
    poisoned[2][3] = doc_row("doc-poison", "POISON pill", i=99)
    write_doc_output(source, poisoned)
    tasks = shard_tasks(source)
    out_dir = tmp_path / "out"
    out = output_dir(out_dir)
    runner = LocalRunner(processes=2)

    with pytest.raises(StageFailed) as err:
        runner.run(SlowUpperStage(), tasks, out, in_fs=source.fs)
    message = str(err.value)
    assert "1 of 4 tasks failed" in message
    assert tasks[2].input in message
    assert "poison document doc-poison" in message  # the error and its traceback
    assert "Traceback" in message

    assert not (out_dir / "_manifest.json").exists()
    assert _markers(out_dir) == [
        "part-00000",
        "part-00001",
        "part-00003",
    ]
    assert sorted(Path(p).name for p in out.shard_files()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00003.parquet",
    ]
    assert _temp_files(out_dir) == []
    kept = ["part-00000", "part-00001", "part-00003"]
    before = _mtimes(out_dir, kept)

    write_doc_output(source, rows)  # fix the input: same path, poison row replaced
    msgs: list[str] = []
    manifest = runner.run(SlowUpperStage(), tasks, out, in_fs=source.fs, progress=msgs.append)
    assert msgs[0] == "test/slow_upper: 3 of 4 tasks already done, resuming"
    assert _done_parts(msgs) == ["part-00002"]
    assert _mtimes(out_dir, kept) == before
    assert manifest.rows == 4 * 6
    text = _read_all(out)["part-00002.parquet"].column("text").to_pylist()
    assert text == [r["text"].upper() for r in rows[2]]


def test_quarantine_records_are_written_with_reasons(tmp_path):
    source = output_dir(tmp_path / "source")
    rows = source_rows(3, 9, spam_every=3)
    write_doc_output(source, rows)
    tasks = shard_tasks(source)
    out = output_dir(tmp_path / "out")

    manifest = LocalRunner(processes=1).run(SlowUpperStage(), tasks, out, in_fs=source.fs)
    manifest.verify(out.fs, out.folder, checksums=True)  # quarantine shards included
    assert [q.name for q in manifest.quarantine] == [f"_quarantine/{t.part}.parquet" for t in tasks]
    assert manifest.counters["quarantined.spam"] == 9 == manifest.quarantined
    assert manifest.rows == 18

    for task, q, shard_rows in zip(tasks, manifest.quarantine, rows, strict=True):
        table = read_shard(out.fs, os.path.join(out.folder, q.name), expect=q)
        assert table.schema.equals(QUARANTINE_SCHEMA, check_metadata=True)
        recs = table.to_pylist()
        spam = [(i, r) for i, r in enumerate(shard_rows) if "SPAM" in r["text"]]
        assert [r["offset"] for r in recs] == [i for i, _ in spam]
        assert [r["native_id"] for r in recs] == [r["native_id"] for _, r in spam]
        assert [r["excerpt"] for r in recs] == [r["text"].encode() for _, r in spam]
        for r in recs:
            assert r["stage"] == "test/slow_upper"
            assert r["input"] == task.input
            assert r["reason"] == "spam"
            assert r["detail"] == "text advertises"
            assert r["url"].startswith("https://example.org/")


def test_changed_config_or_inputs_rerun_every_task_and_stale_parts_go(tmp_path):
    source = output_dir(tmp_path / "source")
    write_doc_output(source, source_rows(4, 5))
    tasks = shard_tasks(source)
    out_dir = tmp_path / "out"
    out = output_dir(out_dir)
    runner = LocalRunner(processes=1)
    inputs = [{"path": str(source.folder), "digest": source.manifest().digest()}]
    first = runner.run(SlowUpperStage(), tasks, out, in_fs=source.fs, inputs=inputs)

    msgs: list[str] = []
    again = runner.run(
        SlowUpperStage(), tasks, out, in_fs=source.fs, inputs=inputs, progress=msgs.append
    )
    assert _done_parts(msgs) == []  # same config, same inputs: nothing to do
    assert again.digest() == first.digest()

    msgs.clear()
    runner.run(
        SlowUpperStage(batch_rows=2),
        tasks,
        out,
        in_fs=source.fs,
        inputs=inputs,
        progress=msgs.append,
    )
    assert _done_parts(msgs) == [t.part for t in tasks]  # new config: every task again

    # the same input paths with new content (new shard sha256s, so new task versions)
    # must not be served from the completion markers of the old content
    write_doc_output(source, source_rows(4, 6))
    tasks = shard_tasks(source)
    new_inputs = [{"path": str(source.folder), "digest": source.manifest().digest()}]
    msgs.clear()
    manifest = runner.run(
        SlowUpperStage(batch_rows=2),
        tasks,
        out,
        in_fs=source.fs,
        inputs=new_inputs,
        progress=msgs.append,
    )
    assert _done_parts(msgs) == [t.part for t in tasks]
    assert manifest.rows == 4 * 6

    # fewer tasks: the parts that are gone lose their shards and markers
    runner.run(SlowUpperStage(batch_rows=2), tasks[:2], out, in_fs=source.fs, inputs=new_inputs)
    assert sorted(p.name for p in out_dir.glob("*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert sorted(p.name for p in (out_dir / "_done").glob("*.json")) == [
        "part-00000.json",
        "part-00001.json",
    ]
    out.manifest().verify(out.fs, out.folder, checksums=True)


def test_a_new_input_runs_alone_finished_parts_are_reused(tmp_path):
    """Incremental: adding an input (a new WARC file, a new shard) runs only that task."""
    source = output_dir(tmp_path / "source")
    write_doc_output(source, source_rows(4, 3))
    tasks = shard_tasks(source)
    out = output_dir(tmp_path / "out")
    runner = LocalRunner(processes=1)
    runner.run(SlowUpperStage(), tasks[:3], out, in_fs=source.fs)
    msgs: list[str] = []
    manifest = runner.run(SlowUpperStage(), tasks, out, in_fs=source.fs, progress=msgs.append)
    assert _done_parts(msgs) == [tasks[3].part]
    assert manifest.rows == 4 * 3


def _pids(manifest) -> set[str]:
    return {k for k in manifest.counters if k.startswith("pid.")}


def test_runner_in_a_with_block_shares_one_pool_and_replaces_a_broken_one(tmp_path):
    source = output_dir(tmp_path / "source")
    rows = source_rows(4, 5)
    write_doc_output(source, rows)
    tasks = shard_tasks(source)
    one = LocalRunner(processes=2)
    apart = [
        _pids(one.run(WorkerPidStage(), tasks, output_dir(tmp_path / f"apart{i}"), source.fs))
        for i in range(2)
    ]
    assert one.pool() is None  # outside a with block: every run has a pool of its own
    assert not apart[0] & apart[1]
    with LocalRunner(processes=2) as runner:
        shared = [
            runner.run(WorkerPidStage(), tasks, output_dir(tmp_path / f"shared{i}"), source.fs)
            for i in range(2)
        ]
        pool = runner.pool()
        assert pool is not None and runner.pool() is pool
        assert len(_pids(shared[0]) | _pids(shared[1])) <= 2  # the same two workers
        assert shared[0].digest() == shared[1].digest()
        for i, m in enumerate(shared):  # same shards as separate pools wrote
            plain = output_dir(tmp_path / f"apart{i}").manifest()
            assert m.shards == plain.shards

        dying = output_dir(tmp_path / "dying")
        poisoned = [list(s) for s in rows]
        poisoned[1][2] = doc_row("doc-die", "DIE here", i=99)
        write_doc_output(dying, poisoned)
        with pytest.raises(StageFailed, match="worker died"):
            runner.run(WorkerPidStage(), shard_tasks(dying), output_dir(tmp_path / "d"), dying.fs)
        assert runner.pool() is not pool  # the broken pool was let go, a new one started
        again = runner.run(WorkerPidStage(), tasks, output_dir(tmp_path / "again"), source.fs)
        assert again.shards == shared[0].shards
    assert runner.pool() is None
