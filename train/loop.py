"""The training loop: Qwen3 (dense or MoE) through the S1 -> S2 -> S3 curriculum.

Read top to bottom: config, distributed setup, model, checkpoint, train. Design choices:
- One process per device. ``torch.distributed`` starts only when torchrun sets
  WORLD_SIZE > 1; then every block and the root are wrapped with FSDP2
  ``fully_shard`` (parameters stay float32, bf16 comes from autocast).
- Each optimizer step takes ``grad_accum`` micro-batches per rank. The loss is the
  cross-entropy summed over the step's valid labels divided by their count over all
  micro-batches and ranks, so accumulation and data parallelism change nothing about
  the objective (times ``world``, because FSDP averages gradients over ranks).
  MoE adds ``aux_loss_coef`` x the load-balancing loss.
- AdamW (betas 0.9/0.95, weight decay on matrices only), gradient-norm clipping,
  per-stage WSD learning rate; bf16 autocast on CUDA only; torch.compile on request.
- At a stage switch the loader moves to the next stage folder (its own sequence
  length) and the RoPE base changes (ABF at S3).
- Checkpoints (``<out>/checkpoint.pt``, written atomically) hold model, optimizer,
  RNG states, stage, step and the loader's (epoch, index): a resumed run continues
  bit-exactly (on the same hardware and thread count).
- Logged per ``log_every`` steps: loss, lr, grad norm, tokens/s and MFU =
  6 * N_active * tokens/s (+ the attention term 6 * layers * T * heads * head_dim)
  / peak FLOP/s; the peak is known for a few GPUs or given with ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storage.fs import Filesystem
from train.curriculum import StageConfig, debug_curriculum, lr_at, stage_steps
from train.data import IGNORE, Loader, StageShards
from train.model import ModelConfig, Qwen3, load_balancing_loss
from train.presets import preset

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass
class TrainConfig:
    data: str  # tokens root holding s1/, s2/, s3/
    out: str
    preset: str = "qwen3_debug"
    model: ModelConfig | None = None  # overrides the preset (tests shrink the debug model)
    stages: list[StageConfig] = field(default_factory=list)  # empty: debug_curriculum(data)
    steps: int | None = None  # total steps, split over stages by token budget
    stop_after: int | None = None  # leave after this global step (checkpoint, then exit)
    grad_accum: int = 1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    aux_loss_coef: float = 1e-3
    mask_boundary: bool = True
    seed: int = 0
    compile: bool = False
    ckpt_every: int = 0  # 0: only at the end
    log_every: int = 10
    peak_tflops: float | None = None
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device)
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
    return rank, world, torch.device(device, local) if device == "cuda" else torch.device(device)


def shard_fsdp2(model: Qwen3) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def plan(cfg: TrainConfig, world: int) -> list[tuple[StageConfig, int]]:
    """(stage, steps) for each stage: from token budgets, or ``cfg.steps`` split by them."""
    per_step = [
        s.micro_batch * (s.window or s.seq_len) * cfg.grad_accum * world for s in cfg.stages
    ]
    steps = [stage_steps(s, n) for s, n in zip(cfg.stages, per_step, strict=True)]
    if cfg.steps is not None:
        budget = sum(s.tokens for s in cfg.stages)
        steps = [max(1, round(cfg.steps * s.tokens / budget)) for s in cfg.stages]
        steps[-1] = max(1, cfg.steps - sum(steps[:-1]))
    return list(zip(cfg.stages, steps, strict=True))


def make_optimizer(model: Qwen3, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.95), eps=1e-8)


def flops_per_token(model: Qwen3, seq_len: int) -> float:
    c = model.cfg
    return 6 * model.num_params(active=True, embedding=False) + 6 * c.n_layers * seq_len * (
        c.n_heads * c.head_dim
    )


def peak_flops(cfg: TrainConfig) -> float | None:
    if cfg.peak_tflops is not None:
        return cfg.peak_tflops * 1e12
    if cfg.device == "cuda":
        name = torch.cuda.get_device_name()
        return next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return None


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "py": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["py"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_optim_state(model: Qwen3, opt: torch.optim.Optimizer, world: int) -> tuple[dict, dict]:
    if world == 1:
        return model.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, opt, options=opts)


def load_model_optim(model: Qwen3, opt: torch.optim.Optimizer, ck: dict, world: int) -> None:
    if world == 1:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_state_dict(model, opt, model_state_dict=ck["model"], optim_state_dict=ck["optimizer"], options=opts)  # fmt: skip


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    fs = Filesystem(str(path.parent))
    with fs.atomic_writer(fs.path(path.name)) as f:
        torch.save(state, f)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) the curriculum; returns the loss curve, throughput and checkpoint."""
    rank, world, device = setup_distributed(cfg.device)
    cfg.stages = cfg.stages or debug_curriculum(cfg.data)
    schedule = plan(cfg, world)
    out, ckpt_path = Path(cfg.out), Path(cfg.out) / "checkpoint.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = Qwen3(cfg.model or preset(cfg.preset)).to(device)
    if world > 1:
        shard_fsdp2(model)
    opt = make_optimizer(model, cfg)
    fwd = torch.compile(model) if cfg.compile else model
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    # Resume: everything that decides the next step comes back from the checkpoint.
    step, stage_idx, data_state = 0, 0, None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        load_model_optim(model, opt, ck, world)
        step, stage_idx, data_state = ck["step"], ck["stage_idx"], ck["data"]
        set_rng_state(ck["rng"])

    stage_first_step = [sum(n for _, n in schedule[:i]) for i in range(len(schedule))]
    total_steps = sum(n for _, n in schedule)
    peak = peak_flops(cfg)
    losses: list[float] = []
    records: list[dict[str, Any]] = []
    tokens_seen, t_start = 0, time.perf_counter()
    t_log, tokens_log = t_start, 0  # throughput is measured over each log interval
    log_file = open(out / "log.jsonl", "a") if rank == 0 else None

    while stage_idx < len(schedule):
        stage, n_steps = schedule[stage_idx]
        shards = StageShards(Path(cfg.data) / stage.name, window=stage.window)
        if shards.seq_len != stage.seq_len:
            raise ValueError(
                f"{shards.folder}: shards hold seq_len={shards.seq_len}, stage {stage.name} "
                f"is configured for {stage.seq_len}; fix the stage config or re-export"
            )
        loader = Loader(shards, stage.micro_batch, rank, world, cfg.seed, cfg.mask_boundary)
        if data_state is not None:
            loader.load_state_dict(data_state)
            data_state = None
        model.set_rope(stage.rope_theta)  # ABF: S3 raises the base
        step_tokens = stage.micro_batch * (stage.window or stage.seq_len) * cfg.grad_accum * world

        while step < stage_first_step[stage_idx] + n_steps:
            lr = lr_at(stage, step - stage_first_step[stage_idx], n_steps)
            for group in opt.param_groups:
                group["lr"] = lr

            # Fetch the step's micro-batches first: the loss normaliser is their label count.
            micro = [loader.next_batch() for _ in range(cfg.grad_accum)]
            n_valid = torch.tensor(
                float(sum(int((b["labels"] != IGNORE).sum()) for b in micro)), device=device
            )
            if world > 1:
                torch.distributed.all_reduce(n_valid)
            n_valid.clamp_(min=1.0)  # an all-padding step contributes nothing, not NaN
            loss_sum = torch.zeros((), device=device)
            for batch in micro:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with autocast:  # ce: summed over the valid labels, logits never whole
                    ce, probs, choices = fwd(
                        batch["input_ids"], batch["position_ids"], batch["doc_ids"], batch["labels"]
                    )
                    loss = ce / n_valid
                    if probs:
                        loss = loss + cfg.aux_loss_coef * load_balancing_loss(probs, choices) / (
                            cfg.grad_accum * world
                        )
                (loss * world).backward()
                loss_sum += ce.detach() / n_valid
            if world > 1:
                torch.distributed.all_reduce(loss_sum)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += step_tokens
            tokens_log += step_tokens

            loss_value = loss_sum.item()
            losses.append(loss_value)
            if step % cfg.log_every == 0 or step == total_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                tps = tokens_log / (time.perf_counter() - t_log)
                rec = {
                    "step": step,
                    "stage": stage.name,
                    "seq_len": stage.seq_len,
                    "rope_theta": model.rope_theta,
                    "lr": lr,
                    "loss": loss_value,
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": tps,
                    "mfu": tps * flops_per_token(model, stage.seq_len) / peak / world
                    if peak
                    else None,
                }
                records.append(rec)
                if log_file:
                    log_file.write(json.dumps(rec) + "\n")
                    log_file.flush()
                    print(json.dumps(rec), flush=True)
                t_log, tokens_log = time.perf_counter(), 0

            last = step == total_steps or step == cfg.stop_after
            at_stage_end = step == stage_first_step[stage_idx] + n_steps
            next_stage = stage_idx + 1 if at_stage_end else stage_idx
            if last or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
                model_sd, optim_sd = model_optim_state(model, opt, world)
                if rank == 0:
                    save_checkpoint(
                        ckpt_path,
                        {
                            "model": model_sd,
                            "optimizer": optim_sd,
                            "step": step,
                            "stage_idx": next_stage,
                            "data": None if at_stage_end else loader.state_dict(),
                            "rng": rng_state(),
                            "config": asdict(cfg),
                        },
                    )
            if step == cfg.stop_after:
                stage_idx = len(schedule)  # leave both loops
                break
        else:
            stage_idx += 1

    elapsed = time.perf_counter() - t_start
    if log_file:
        log_file.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return {
        "losses": losses,
        "records": records,
        "final_loss": losses[-1] if losses else None,
        "tokens_per_s": tokens_seen / elapsed if elapsed > 0 else 0.0,
        "steps": step,
        "checkpoint": str(ckpt_path),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a Qwen3 preset on the S1/S2/S3 shards.")
    p.add_argument("--data", required=True, help="tokens root holding s1/, s2/, s3/")
    p.add_argument("--out", required=True, help="folder for checkpoint.pt and log.jsonl")
    p.add_argument("--preset", default="qwen3_debug")
    p.add_argument("--steps", type=int, default=None, help="total steps over all stages")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=None, help="per device, for MFU")
    a = p.parse_args(argv)
    cfg = TrainConfig(
        data=a.data,
        out=a.out,
        preset=a.preset,
        stages=debug_curriculum(a.data, micro_batch=a.micro_batch),
        steps=a.steps,
        grad_accum=a.grad_accum,
        compile=a.compile,
        ckpt_every=a.ckpt_every,
        log_every=a.log_every,
        peak_tflops=a.peak_tflops,
    )
    result = train(cfg)
    print(json.dumps({k: v for k, v in result.items() if k not in ("losses", "records")}))


if __name__ == "__main__":
    main()
