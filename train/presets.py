"""Model presets as functions: debug flavours for CPU tests and the Qwen3 report's shapes.

Layer counts, heads and tying follow the Qwen3 report (shared docs, qwen3-data-facts);
widths (hidden, SwiGLU, expert width) are the values published in the transformers
configs of the Qwen3 releases. All Qwen3 models use head_dim 128, RMSNorm eps 1e-6
and the 151,936-row embedding (151,669 tokens padded). ``rope_theta`` is the S1/S2
base (10,000); the curriculum raises it to 1,000,000 at S3 (the released checkpoints
carry the final 1,000,000). The debug flavours keep the real vocabulary so they read
the real shards (the pad id 151643 must embed) and still train in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from train.model import ModelConfig


def _dense(layers: int, heads: int, kv: int, dim: int, ffn: int, tied: bool) -> ModelConfig:
    return ModelConfig(
        dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv, ffn_dim=ffn, tie_embeddings=tied
    )


def _moe(layers: int, heads: int, kv: int, dim: int, expert: int) -> ModelConfig:
    return ModelConfig(
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv,
        ffn_dim=0,
        tie_embeddings=False,
        n_experts=128,
        top_k=8,
        expert_dim=expert,
    )


def qwen3_debug(**overrides: Any) -> ModelConfig:
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=192)
    return replace(cfg, **overrides)


def qwen3_moe_debug(**overrides: Any) -> ModelConfig:
    cfg = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=0,
        tie_embeddings=False, n_experts=8, top_k=2, expert_dim=32,
    )  # fmt: skip
    return replace(cfg, **overrides)


def qwen3_0_6b() -> ModelConfig:
    return _dense(28, 16, 8, 1024, 3072, tied=True)


def qwen3_1_7b() -> ModelConfig:
    return _dense(28, 16, 8, 2048, 6144, tied=True)


def qwen3_4b() -> ModelConfig:
    return _dense(36, 32, 8, 2560, 9728, tied=True)


def qwen3_8b() -> ModelConfig:
    return _dense(36, 32, 8, 4096, 12288, tied=False)


def qwen3_14b() -> ModelConfig:
    return _dense(40, 40, 8, 5120, 17408, tied=False)


def qwen3_32b() -> ModelConfig:
    return _dense(64, 64, 8, 5120, 25600, tied=False)


def qwen3_30b_a3b() -> ModelConfig:
    return _moe(48, 32, 4, 2048, 768)


def qwen3_235b_a22b() -> ModelConfig:
    return _moe(94, 64, 4, 4096, 1536)


PRESETS: dict[str, Callable[..., ModelConfig]] = {
    f.__name__: f
    for f in (
        qwen3_debug, qwen3_moe_debug, qwen3_0_6b, qwen3_1_7b, qwen3_4b, qwen3_8b,
        qwen3_14b, qwen3_32b, qwen3_30b_a3b, qwen3_235b_a22b,
    )
}  # fmt: skip


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
