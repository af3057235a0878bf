"""Packing and stage export: every token of every kept document exactly once (or exactly
``repeats`` times), boundaries consistent, deterministic, even over ranks, and a killed
export resumes to the same bytes.

Inputs are real: the bundled news pages and UDHR paragraphs, tokenized with the real
Qwen3 tokenizer. Files are read back with the independent reader of test_indexed.py.
Kills are real SIGKILLs of a child process running the export, at fixed points.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stages_for_tests import output_dir, subprocess_env
from test_indexed import read_megatron

from pipelines.runner import LocalRunner
from pipelines.tokens.export import export_stage
from pipelines.tokens.pack import pack, rank_slices
from pipelines.tokens.token_batch import TokenBatch
from pipelines.tokens.tokenizer import Tokenizer, qwen3

ROOT = Path(__file__).resolve().parent.parent
SEQ = 256
EXPORT = dict(parts=5, batch_chars=60_000, seed=11)


def stage_docs() -> list[tuple[str, str, int, dict[str, str]]]:
    """(doc_id, text, repeats, labels): repeats 0 (dropped), 1, 2 or 3."""
    rows = [
        (p.stem, p.read_text(encoding="utf-8"), "news")
        for p in sorted(ROOT.glob("samples/html/newspaper4k/*.txt"))
    ]
    for line in (
        (ROOT / "samples/text/udhr_paragraphs.jsonl").read_text(encoding="utf-8").splitlines()
    ):
        d = json.loads(line)
        rows.append((f"udhr-{d['file']}", d["text"], "udhr"))
    out = []
    for i, (doc_id, text, source) in enumerate(rows):
        repeats = 0 if i % 7 == 0 else 3 if i % 5 == 0 else 2 if i % 3 == 0 else 1
        out.append((doc_id, text, repeats, {"source": source}))
    return out


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return qwen3()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tok: Tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    export_stage(stage_docs(), output_dir(folder), SEQ, tok, processes=1, **EXPORT)
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*"))}


def test_pack_keeps_documents_whole_unless_too_long(tok: Tokenizer):
    docs = [tok.encode_doc(t) for _, t, _, _ in stage_docs()]
    seqs = list(pack(docs, SEQ, tok.eot_id, open_sequences=16))
    pieces = defaultdict(list)
    for s in seqs:
        assert len(s.tokens) == SEQ and np.abs(s.segments).sum() == SEQ
        assert (s.segments[:-1] > 0).all()  # padding only at the end
        pos = 0
        for piece, seg in zip(s.pieces, s.segments, strict=False):
            assert seg == piece.length
            pieces[piece.doc].append((piece.offset, s.tokens[pos : pos + seg]))
            pos += seg
        assert (s.tokens[pos:] == tok.eot_id).all() and s.padding == SEQ - pos
    for d, ids in enumerate(docs):
        parts = sorted(pieces[d], key=lambda x: x[0])
        assert len(parts) == math.ceil(len(ids) / SEQ)  # split only into seq_len chunks
        assert np.array_equal(np.concatenate([p for _, p in parts]), ids)
    greedy = sum(s.padding for s in pack(docs, SEQ, tok.eot_id, open_sequences=1))
    assert sum(s.padding for s in seqs) < greedy


def test_every_token_exactly_repeats_times(clean: Path, tok: Tokenizer):
    manifest = json.loads((clean / "_manifest.json").read_text())
    want = {doc_id: (text, r) for doc_id, text, r, _ in stage_docs()}
    got: dict[tuple[str, int], list] = defaultdict(list)
    total_tokens = 0
    for p in range(EXPORT["parts"]):
        name = f"part-{p:05d}"
        seqs, doc_idx = read_megatron(str(clean / name))
        segs, _ = read_megatron(str(clean / f"{name}.seg"))
        prov = pq.read_table(clean / f"{name}.docs.parquet").to_pylist()
        assert len(seqs) == len(segs) == manifest["counters"][f"part.{name}.sequences"]
        assert doc_idx == list(range(len(seqs) + 1))
        by_seq = defaultdict(list)
        for row in prov:
            by_seq[row["sequence"]].append(row)
            start = row["start"]
            piece = seqs[row["sequence"]][start : start + row["length"]]
            got[(row["doc_id"], row["copy"])].append((row["doc_offset"], piece))
        for s, (ids, seg) in enumerate(zip(seqs, segs, strict=True)):
            assert len(ids) == SEQ and sum(abs(x) for x in seg) == SEQ
            lengths = [r["length"] for r in by_seq[s]]
            pad = SEQ - sum(lengths)
            assert seg == lengths + ([-pad] if pad else [])
            assert ids[SEQ - pad :] == [tok.eot_id] * pad
            total_tokens += sum(lengths)
    expected = {(d, c) for d, (_, r) in want.items() for c in range(r)}
    assert set(got) == expected
    for (doc_id, _), pieces in got.items():
        ids = [t for _, piece in sorted(pieces) for t in piece]
        assert ids == tok.encode_doc(want[doc_id][0]).tolist()
    counters = manifest["counters"]
    assert (
        total_tokens
        == counters["tokens"]
        == sum(len(tok.encode_doc(t)) * r for t, r in want.values())
    )
    assert counters["tokens.source=news"] + counters["tokens.source=udhr"] == counters["tokens"]
    assert manifest["config"]["tokenizer_sha256"] == tok.sha256
    assert manifest["kind"] == "tokens" and not (clean / "_work").exists()
    output_dir(clean).manifest().verify(output_dir(clean).fs, str(clean))  # sizes + sha256


def test_ranks_get_equal_disjoint_runs(clean: Path):
    counters = json.loads((clean / "_manifest.json").read_text())["counters"]
    parts = [(f"part-{p:05d}", counters[f"part.part-{p:05d}.sequences"]) for p in range(5)]
    total = sum(n for _, n in parts)
    order = [(name, i) for name, n in parts for i in range(n)]
    for world in (1, 2, 3, 8):
        taken = []
        for rank in range(world):
            mine = [
                (s.part, i) for s in rank_slices(parts, world, rank) for i in range(s.start, s.stop)
            ]
            assert len(mine) == total // world
            taken += mine
        assert taken == order[: world * (total // world)]


def test_seed_changes_order_not_content(clean: Path, tmp_path: Path, tok: Tokenizer):
    export_stage(
        stage_docs(), output_dir(tmp_path), SEQ, tok, processes=1, **{**EXPORT, "seed": 12}
    )
    other = json.loads((tmp_path / "_manifest.json").read_text())["counters"]
    base = json.loads((clean / "_manifest.json").read_text())["counters"]
    assert other["tokens"] == base["tokens"]
    assert files(tmp_path)["part-00000.bin"] != files(clean)["part-00000.bin"]


KILLER = """
import os, signal, sys
from pipelines.tokens.export import export_stage
from pipelines.tokens.tokenizer import qwen3
from stages_for_tests import output_dir
from test_pack import EXPORT, SEQ, stage_docs

mode, folder = sys.argv[1], sys.argv[2]

def docs():
    for i, row in enumerate(stage_docs()):
        if mode == "tokenise" and i == 300:
            os.kill(os.getpid(), signal.SIGKILL)
        yield row

def progress(msg):
    if mode == "pack" and "packed part-00001" in msg:
        os.kill(os.getpid(), signal.SIGKILL)

export_stage(docs(), output_dir(folder), SEQ, qwen3(), processes=1, progress=progress, **EXPORT)
"""


@pytest.mark.parametrize("mode", ["tokenise", "pack", "torn-spill"])
def test_killed_export_resumes_to_the_same_bytes(mode, clean: Path, tmp_path: Path, tok):
    kill_at = "tokenise" if mode == "torn-spill" else mode
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, kill_at, str(tmp_path)], env=subprocess_env(), cwd=ROOT
    )
    assert proc.returncode == -9
    assert not (tmp_path / "_manifest.json").exists()
    finished = len(list((tmp_path / "_work").glob("*/b*.done.json")))
    if mode == "torn-spill":  # scratch written without fsync, as a power cut may leave it:
        spill = sorted((tmp_path / "_work").glob("*/b000000.tokens.npy"))[0]
        spill.write_bytes(spill.read_bytes()[:-100])  # a spill without its tail
        marker = sorted((tmp_path / "_work").glob("*/b000001.done.json"))[0]
        marker.write_bytes(b"")  # and an empty batch marker
    if mode != "pack":
        assert list((tmp_path / "_work").glob("*/b*.done.json"))
    else:
        assert sorted(p.name for p in (tmp_path / "_done").iterdir()) == [
            "part-00000.json",
            "part-00001.json",
        ]
    said = []
    export_stage(
        stage_docs(), output_dir(tmp_path), SEQ, tok, processes=2, progress=said.append, **EXPORT
    )
    packed = [m for m in said if "packed" in m]
    if mode == "pack":
        assert len(packed) == 3 and "(0 done before)" not in said[0]
    elif mode == "torn-spill":  # the two torn batches are tokenised again, the others reused
        assert len(packed) == 5 and f"({finished - 2} done before)" in said[0], said[0]
    else:
        assert len(packed) == 5 and "(0 done before)" not in said[0]
    assert files(tmp_path) == files(clean)
    assert (
        json.loads((tmp_path / "_manifest.json").read_text())["shards"]
        == json.loads((clean / "_manifest.json").read_text())["shards"]
    )


def test_bad_input_row_is_a_clear_error(tmp_path: Path, tok: Tokenizer):
    rows = [("ok", "fine text", 1), ("bad-doc", "text", -1)]
    with pytest.raises(ValueError, match="row 1 .*'bad-doc'.*repeats -1"):
        export_stage(rows, output_dir(tmp_path), SEQ, tok, processes=1, parts=1)
    assert not (tmp_path / "_manifest.json").exists()
    with pytest.raises(ValueError, match="rank 3 is not in 0..2"):
        rank_slices([("part-00000", 9)], 3, 3)


def test_pretokenised_input_gives_the_same_bytes(clean: Path, tmp_path: Path, tok: Tokenizer):
    """What mix/scan feeds (TokenBatch columns, not text) exports to the text path's bytes."""
    rows = stage_docs()
    encoded = [tok.encode_doc(t) for _, t, _, _ in rows]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in encoded])])
    batches = []
    for lo in range(0, len(rows), 100):  # other batch boundaries than the text path's
        hi = min(len(rows), lo + 100)
        batches.append(
            TokenBatch(
                doc_ids=[r[0] for r in rows[lo:hi]],
                offsets=offsets[lo : hi + 1],  # absolute positions in values
                values=np.concatenate(encoded),
                repeats=np.array([r[2] for r in rows[lo:hi]]),
                labels={"source": pa.array([r[3]["source"] for r in rows[lo:hi]])},
            )
        )
    assert [r for tb in batches for r in tb.rows()][5][1].tolist() == encoded[5].tolist()
    export_stage(batches, output_dir(tmp_path), SEQ, tok, processes=2, **EXPORT)
    assert files(tmp_path) == files(clean)
    done = json.loads((tmp_path / "_manifest.json").read_text())
    assert done["counters"] == json.loads((clean / "_manifest.json").read_text())["counters"]
    no_eot = TokenBatch(["d0"], np.array([0, 2]), tok.encode_doc("some text")[:-1], np.array([1]))
    with pytest.raises(ValueError, match=r"'d0': pre-tokenised ids must end with <\|endoftext\|>"):
        export_stage([no_eot], output_dir(tmp_path / "x"), SEQ, tok, processes=1, parts=1)
    one_id = TokenBatch(["d1"], np.array([0, 1]), np.array([5], np.int32), np.array([1]))
    with pytest.raises(ValueError, match=r"'d1': pre-tokenised ids must end with"):  # not "empty"
        export_stage([one_id], output_dir(tmp_path / "y"), SEQ, tok, processes=1, parts=1)


def test_parts_built_in_small_chunks_give_the_same_bytes(
    clean: Path, tmp_path: Path, tok, monkeypatch
):
    """A part's sequences are materialised a chunk at a time (``PACK_CHUNK_TOKENS``):
    3 sequences per chunk, so chunk edges fall everywhere, must not change a byte."""
    import pipelines.tokens.export as export

    monkeypatch.setattr(export, "PACK_CHUNK_TOKENS", 3 * SEQ)
    export_stage(stage_docs(), output_dir(tmp_path), SEQ, tok, processes=1, **EXPORT)
    assert files(tmp_path) == files(clean)
    sequences = json.loads((tmp_path / "_manifest.json").read_text())["counters"]["sequences"]
    assert sequences > 3 * EXPORT["parts"]  # more than one chunk per part


def test_export_runs_on_a_runners_shared_pool(clean: Path, tmp_path: Path, tok: Tokenizer):
    """``pool=runner.pool()``: the batches are tokenised in the runner's workers (the
    tokenizer travels with each batch) and the pool is left running for the next user."""
    with LocalRunner(processes=2) as runner:
        pool = runner.pool()
        export_stage(stage_docs(), output_dir(tmp_path), SEQ, tok, processes=2, pool=pool, **EXPORT)
        assert pool.submit(math.sqrt, 16.0).result() == 4.0  # not shut down by the export
    assert files(tmp_path) == files(clean)
