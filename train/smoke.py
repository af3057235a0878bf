"""The smoke run the Dagster asset ``model/smoke`` calls: does the corpus train a model?

``smoke_train`` trains the ``qwen3_debug`` preset on CPU through every stage folder
(s1/, s2/, s3/) a tokens root holds, for a few hundred steps, and returns the loss
curve, throughput, final loss and checkpoint path; ``plot_loss_curve`` renders the
curve to a PNG for the asset's metadata. Micro-batches are sized to about
``tokens_per_micro`` tokens (at least one sequence): the debug model keeps the
151,936-row vocabulary, so the LM head dominates (about 58 MFLOP per token, forward and backward).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from storage.fs import Filesystem
from train.curriculum import debug_curriculum
from train.data import StageShards
from train.loop import TrainConfig, train


def smoke_train(
    tokens_root: str | Path,
    out_dir: str | Path,
    steps: int = 200,
    tokens_per_micro: int = 512,
    window: int = 256,
) -> dict[str, Any]:
    """Train the debug preset for ``steps`` steps from scratch (a checkpoint or log left
    in ``out_dir`` by an earlier run is replaced); returns losses, records, tokens/s,
    final loss, checkpoint path and the loss-curve PNG path. ``window`` > 0 trains on the
    first ``window`` tokens of each sequence, so a few hundred steps through 4,096- and
    32,768-token shards fit in minutes on a CPU (RoPE base and stage order unchanged)."""
    for stale in ("checkpoint.pt", "log.jsonl"):
        (Path(out_dir) / stale).unlink(missing_ok=True)
    stages = []
    for stage in debug_curriculum(tokens_root):
        n_seqs = len(StageShards(Path(tokens_root) / stage.name))
        length = min(window, stage.seq_len) if window > 0 else stage.seq_len
        micro = max(1, min(tokens_per_micro // length, n_seqs))
        stages.append(replace(stage, micro_batch=micro, window=length if window > 0 else 0))
    cfg = TrainConfig(
        data=str(tokens_root), out=str(out_dir), stages=stages, steps=steps, device="cpu"
    )
    result = train(cfg)
    result["plot"] = plot_loss_curve(result["losses"], Path(out_dir) / "loss.png")
    return result


def plot_loss_curve(losses: list[float], path: str | Path) -> str:
    """Write the per-step training loss as a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("qwen3_debug smoke run")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    path = Path(path)
    Filesystem(str(path.parent)).write_bytes(str(path.resolve()), png.getvalue())
    return str(path)
