"""The S1 -> S2 -> S3 pre-training curriculum: stages, LR schedules, RoPE base, YaRN.

Design choices:
- A stage is a small dataclass: its shard folder name under the tokens root, token
  budget, sequence length, micro-batch, RoPE base and its own warmup-stable-decay
  (WSD) learning-rate schedule. Stages run in order; the loop turns a budget into
  steps with ``stage_steps``.
- ``qwen3_curriculum()`` is the report's plan (S1 over 30T tokens at 4,096, S2 about
  5T at 4,096, S3 hundreds of billions at 32,768 with the RoPE base raised from
  10,000 to 1,000,000: ABF). ``debug_curriculum(root)`` takes whatever stage folders
  a tokens root holds, with their manifests' sequence lengths, for CPU runs.
- WSD: linear warmup to the peak, flat, then a linear decay to ``min_lr`` over the
  last ``decay_frac`` of the stage's steps. Linear keeps the formula checkable.
- YaRN is for inference beyond the trained length, not training: ``yarn_params``
  gives the parameters ``Qwen3.set_rope`` takes (factor 4 over 32,768 as the report's
  4x context extension).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

ROPE_BASE = 10_000.0
ROPE_BASE_ABF = 1_000_000.0


@dataclass
class StageConfig:
    name: str  # folder under the tokens root: s1, s2, s3
    tokens: int  # token budget of the stage
    seq_len: int
    micro_batch: int
    rope_theta: float = ROPE_BASE
    peak_lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 2000
    decay_frac: float = 0.1
    window: int = 0  # train on the first `window` tokens of each sequence (0: all of it);
    # a CPU smoke run's shortcut through 4,096/32,768-token shards, never for real training


def stage_steps(stage: StageConfig, tokens_per_step: int) -> int:
    return max(1, math.ceil(stage.tokens / tokens_per_step))


def lr_at(stage: StageConfig, step: int, total: int) -> float:
    """WSD learning rate at 0-based ``step`` of a stage that lasts ``total`` steps."""
    warmup = min(stage.warmup_steps, total)
    if step < warmup:
        return stage.peak_lr * (step + 1) / warmup
    decay = max(1, round(total * stage.decay_frac))
    decay_start = max(warmup, total - decay)
    if step < decay_start:
        return stage.peak_lr
    frac = (step - decay_start + 1) / max(1, total - decay_start)
    return stage.peak_lr + (stage.min_lr - stage.peak_lr) * min(frac, 1.0)


def qwen3_curriculum(micro_batch: int = 4) -> list[StageConfig]:
    """The Qwen3 report's three stages (budgets as published; LRs are our defaults)."""
    return [
        StageConfig("s1", 30 * 10**12, 4096, micro_batch, ROPE_BASE, 3e-4, 3e-4),
        StageConfig("s2", 5 * 10**12, 4096, micro_batch, ROPE_BASE, 3e-4, 3e-5),
        StageConfig(
            "s3", 300 * 10**9, 32768, max(1, micro_batch // 8), ROPE_BASE_ABF, 3e-5, 3e-6, 200
        ),
    ]


def debug_curriculum(
    tokens_root: str | Path, tokens_per_stage: int = 200_000, micro_batch: int = 4
) -> list[StageConfig]:
    """One stage per s1/s2/s3 folder found under ``tokens_root``, sized for a CPU run."""
    stages = []
    for name in ("s1", "s2", "s3"):
        manifest = Path(tokens_root) / name / "_manifest.json"
        if not manifest.exists():
            continue
        seq_len = int(json.loads(manifest.read_text())["config"]["seq_len"])
        theta = ROPE_BASE_ABF if name == "s3" else ROPE_BASE
        stages.append(
            StageConfig(name, tokens_per_stage, seq_len, micro_batch, theta, 3e-3, 3e-4, 10)
        )
    if not stages:
        raise FileNotFoundError(
            f"{tokens_root}: no s1/, s2/ or s3/ folder with a _manifest.json; "
            "pass the tokens root the shards stage wrote"
        )
    return stages


def yarn_params(factor: float = 4.0, trained_len: int = 32768) -> dict[str, float]:
    """YaRN parameters to run a model trained at ``trained_len`` at ``factor`` x that."""
    return {"factor": factor, "original_max_position_embeddings": trained_len}
