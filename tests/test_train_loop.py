"""The training loop and its data path: shard reader, overfit, curriculum switch, resume.

Token shards are written by tests/train_shards_for_tests.py from the tokens-stage
contract (Megatron .bin/.idx plus the .seg sidecar). The loop tests use a shrunken
debug model that keeps the real vocabulary (the pad id 151643 must embed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_shards_for_tests import PAD_ID, pack, random_docs, unpadded_docs, write_stage

from train.curriculum import StageConfig, debug_curriculum, lr_at
from train.data import IGNORE, Loader, ShardError, StageShards, make_example
from train.loop import TrainConfig, train
from train.model import Qwen3
from train.presets import qwen3_debug
from train.smoke import smoke_train

TINY = qwen3_debug(vocab_size=512)  # the loop tests' shards hold no padding


def test_reader_follows_the_contract(tmp_path: Path) -> None:
    docs = random_docs(60, 150000, seed=0, hi=90)
    seqs, segs = pack(docs, 64)
    n = write_stage(tmp_path / "s1", docs, 64, parts=3, dtype=np.int64)
    shards = StageShards(tmp_path / "s1")
    assert len(shards) == n == len(seqs) and shards.seq_len == 64
    for i in (0, n // 2, n - 1):
        tokens, seg = shards.sequence(i)
        assert tokens.tolist() == seqs[i].tolist() and seg.tolist() == segs[i].tolist()
    assert sum((shards.sequence(i)[1] < 0).any() for i in range(n)) > 1  # padding occurs
    # the non-padding tokens, sequence after sequence, are the documents in order
    real = []
    for i in range(n):
        tokens, seg = shards.sequence(i)
        real += tokens[np.repeat(seg > 0, np.abs(seg))].tolist()
        assert set(tokens[np.repeat(seg < 0, np.abs(seg))].tolist()) <= {PAD_ID}
    assert real == np.concatenate(docs).tolist()


def test_window_serves_a_prefix_with_consistent_segments(tmp_path: Path) -> None:
    """The smoke run's window: the first W tokens, segments cut to sum to W, signs kept."""
    docs = random_docs(60, 150000, seed=1, hi=90)
    n = write_stage(tmp_path / "s1", docs, 64, parts=2)
    full, windowed = StageShards(tmp_path / "s1"), StageShards(tmp_path / "s1", window=20)
    for i in range(n):
        tokens, seg = full.sequence(i)
        wtok, wseg = windowed.sequence(i)
        assert wtok.tolist() == tokens[:20].tolist()
        assert int(np.abs(wseg).sum()) == 20 and (wseg != 0).all()
        kinds = np.repeat(np.sign(seg), np.abs(seg))[:20]
        assert np.repeat(np.sign(wseg), np.abs(wseg)).tolist() == kinds.tolist()
        ends = np.cumsum(np.abs(seg))
        cut = [*ends[ends < 20].tolist(), 20]
        assert np.cumsum(np.abs(wseg)).tolist() == cut  # document boundaries kept


def test_reader_takes_uint16_shards(tmp_path: Path) -> None:
    docs = unpadded_docs(30, 60000, seed=5, seq_len=64)
    write_stage(tmp_path / "s1", docs, 64, parts=1, dtype=np.uint16)
    tokens, seg = StageShards(tmp_path / "s1").sequence(0)
    assert tokens.dtype == np.int64 and tokens.tolist() == np.concatenate(docs)[:64].tolist()


def test_example_resets_positions_and_masks_padding_and_boundaries() -> None:
    tokens = np.arange(10, 20)
    segs = np.array([3, 4, -3])  # doc A (3), doc B (4), padding (3)
    ex = make_example(tokens, segs)
    assert ex["position_ids"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2]
    assert ex["doc_ids"].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    I = IGNORE  # noqa: E741
    assert ex["labels"].tolist() == [11, 12, I, 14, 15, 16, I, I, I, I]
    loose = make_example(tokens, segs, mask_boundary=False)
    assert loose["labels"].tolist() == [11, 12, 13, 14, 15, 16, I, I, I, I]


def test_bad_shards_raise_clear_errors(tmp_path: Path) -> None:
    write_stage(tmp_path / "s1", random_docs(20, 1000, seed=1), 32)
    (tmp_path / "s1" / "part-00001.idx").write_bytes(b"NOTANIDX" + bytes(40))
    with pytest.raises(ShardError, match="part-00001.idx: not a Megatron index"):
        StageShards(tmp_path / "s1")
    with pytest.raises(ShardError, match="no _manifest.json"):
        StageShards(tmp_path)


def test_loader_splits_ranks_evenly_and_resumes_mid_epoch(tmp_path: Path) -> None:
    n = write_stage(tmp_path / "s1", random_docs(80, 1000, seed=2), 32)
    shards = StageShards(tmp_path / "s1")
    ranks = [Loader(shards, 3, rank=r, world=2, seed=7) for r in range(2)]
    seen = [np.concatenate([lo.next_indices() for _ in range(n // 6)]) for lo in ranks]
    assert len(seen[0]) == len(seen[1]) == (n // 6) * 3
    assert not set(seen[0]) & set(seen[1])  # disjoint shares of the epoch
    assert len(set(seen[0]) | set(seen[1])) == (n // 6) * 6
    # resume: a fresh loader given the saved (epoch, index) yields the same next batches
    a = Loader(shards, 4, seed=7)
    for _ in range(n // 4 + 2):  # crosses into epoch 1
        a.next_batch()
    b = Loader(shards, 4, seed=7)
    b.load_state_dict(a.state_dict())
    assert a.state.epoch == 1
    for _ in range(3):
        x, y = a.next_batch(), b.next_batch()
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_debug_model_overfits_a_repeated_batch() -> None:
    torch.manual_seed(0)
    model = Qwen3(qwen3_debug(vocab_size=256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x[:, :-1])[0].flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def stages() -> list[StageConfig]:
    return [
        StageConfig("s1", 10**6, 32, 2, 10_000.0, 3e-3, 3e-4, 2),
        StageConfig("s3", 10**6, 64, 1, 1_000_000.0, 1e-3, 1e-4, 1),
    ]


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "tokens"
    write_stage(root / "s1", unpadded_docs(60, 512, seed=3, seq_len=32), 32)
    write_stage(root / "s3", unpadded_docs(30, 512, seed=4, seq_len=64), 64)
    return root


def test_s1_to_s3_switch_changes_sequence_length_and_rope_base(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), model=TINY, steps=6)
    cfg.stages, cfg.log_every, cfg.grad_accum = stages(), 1, 2
    recs = train(cfg)["records"]
    assert [(r["stage"], r["seq_len"], r["rope_theta"]) for r in (recs[0], recs[-1])] == [
        ("s1", 32, 10_000.0),
        ("s3", 64, 1_000_000.0),
    ]
    assert [r["step"] for r in recs] == list(range(1, 7))


def test_resume_from_checkpoint_is_bit_exact(tmp_path: Path) -> None:
    root, k = make_root(tmp_path), 2

    def run(out: str, stop_after: int | None) -> list[float]:
        cfg = TrainConfig(data=str(root), out=str(tmp_path / out), model=TINY, steps=k + 10)
        cfg.stages, cfg.stop_after = stages(), stop_after
        return train(cfg)["losses"]

    whole = run("whole", None)
    first = run("split", stop_after=k)
    rest = run("split", None)  # finds split/checkpoint.pt at step k
    assert len(whole) == k + 10 and len(first) == k and len(rest) == 10
    assert first == whole[:k]
    assert rest[-1] == whole[k + 9]  # exactly equal, not approximately
    assert rest == whole[k:]


def test_wsd_schedule_warms_up_holds_and_decays() -> None:
    s = StageConfig("s1", 1, 32, 1, peak_lr=1.0, min_lr=0.1, warmup_steps=4, decay_frac=0.2)
    lrs = [lr_at(s, i, 20) for i in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and set(lrs[4:16]) == {1.0}
    assert lrs[16:] == sorted(lrs[16:], reverse=True) and lrs[-1] == pytest.approx(0.1)


def test_smoke_train_returns_curve_checkpoint_and_png(tmp_path: Path) -> None:
    root = tmp_path / "tokens"
    write_stage(root / "s1", random_docs(40, 150000, seed=6, hi=80), 32)
    out = smoke_train(root, tmp_path / "smoke", steps=3, tokens_per_micro=64)
    assert len(out["losses"]) == 3 and out["final_loss"] == out["losses"][-1]
    assert out["tokens_per_s"] > 0 and Path(out["checkpoint"]).stat().st_size > 0
    assert Path(out["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_rank_fsdp2_equals_one_rank_with_accumulation(tmp_path: Path) -> None:
    """torchrun, 2 CPU ranks (gloo, FSDP2) == 1 process accumulating the same 2 slices."""
    root = make_root(tmp_path)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "train.loop", "--data", str(root), "--out", str(out), "--steps", "2"]
    cmd += ["--micro-batch", "1", "--log-every", "1"]
    subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, check=True, timeout=300)
    ranks2 = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "one"), steps=2, grad_accum=2)
    cfg.stages = debug_curriculum(root, micro_batch=1)
    ranks1 = train(cfg)["losses"]
    assert len(ranks2) == 2 and ranks2 == pytest.approx(ranks1, rel=1e-5)
