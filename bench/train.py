"""Training throughput: corpusmill's Qwen3 (train/) vs transformers' Qwen3ForCausalLM.

CPU (default). Both sides get the ``qwen3_debug`` shape (2 layers, width 64, the real
151,936-row vocabulary, tied embeddings), the same random weights (ours loads the
transformers state dict), the same batch (``--batch`` x ``--seq`` random token ids,
one document per row, so both run plain causal SDPA) and the same optimizer
(AdamW lr 1e-3, betas 0.9/0.95, weight decay 0.1, gradient clipping at 1.0). A step is
forward, token-mean cross-entropy, backward, clip, optimizer step: ours as
train/loop.py does it (labels shifted once by the loader), the peer as a transformers
user does (``model(input_ids, labels=input_ids).loss``). The sides alternate for
``--rounds`` rounds of ``--steps`` timed steps (after one untimed warm-up step each);
tokens/s per round = batch * seq * steps / wall s; the medians are reported.
Both sides run in this one process with the same torch thread count.

GPU (``--gpu``; UNMEASURED in the session that wrote it, no GPU was lent): the
``qwen3_0_6b`` preset in bf16 autocast with torch.compile on one CUDA device,
reporting tokens/s and MFU (6 * N_active * tokens/s plus the attention term over the
device's bf16 peak) next to transformers' Qwen3 of the same config, also compiled.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is bench/train.py: drop bench/ from the path so ``train`` is the package.
ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402

from train.loop import PEAK_BF16_TFLOPS, flops_per_token  # noqa: E402
from train.model import ModelConfig, Qwen3  # noqa: E402
from train.presets import qwen3_0_6b, qwen3_debug  # noqa: E402


def hf_model(c: ModelConfig) -> Qwen3ForCausalLM:
    hc = Qwen3Config(
        vocab_size=c.vocab_size,
        hidden_size=c.dim,
        intermediate_size=c.ffn_dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim,
        tie_word_embeddings=c.tie_embeddings,
        rms_norm_eps=c.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        attn_implementation="sdpa",
        use_cache=False,
    )
    return Qwen3ForCausalLM(hc)


def optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)


def ours_step(model, fwd, opt, ids_BT, labels_BT, autocast) -> float:
    with autocast:  # the loop's loss: summed cross-entropy (chunked) / label count
        loss = fwd(ids_BT, labels_BT=labels_BT)[0] / (labels_BT != -100).sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def peer_step(model, fwd, opt, ids_BT, labels_BT, autocast) -> float:
    with autocast:
        loss = fwd(input_ids=ids_BT, labels=ids_BT).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="3 rounds of 2 steps, batch 2 x 128")
    p.add_argument("--gpu", action="store_true", help="0.6B preset, bf16, torch.compile, CUDA")
    a = p.parse_args()
    if a.quick:
        a.rounds, a.steps, a.batch, a.seq = 3, 2, 2, 128
    device = torch.device("cuda" if a.gpu else "cpu")
    cfg = qwen3_0_6b() if a.gpu else qwen3_debug()
    if a.gpu:
        a.seq = max(a.seq, 4096)
    torch.manual_seed(0)
    peer = hf_model(cfg).to(device)
    ours = Qwen3(cfg).to(device)
    ours.load_state_dict(peer.state_dict())
    sides = {
        "ours": (ours, ours_step),
        "peer": (peer, peer_step),
    }
    fwds = {k: (torch.compile(m) if a.gpu else m) for k, (m, _) in sides.items()}
    opts = {k: optimizer(m) for k, (m, _) in sides.items()}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if a.gpu else contextlib.nullcontext()
    g = torch.Generator().manual_seed(1)
    ids_BT = torch.randint(0, 151643, (a.batch, a.seq), generator=g).to(device)
    labels_BT = torch.cat([ids_BT[:, 1:], torch.full_like(ids_BT[:, :1], -100)], 1)

    rates: dict[str, list[float]] = {"ours": [], "peer": []}
    first_loss = {}
    for name, (model, step) in sides.items():  # warm-up (and compile) step, untimed
        first_loss[name] = step(model, fwds[name], opts[name], ids_BT, labels_BT, autocast)
    for r in range(a.rounds):
        for name in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
            model, step = sides[name]
            if a.gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step(model, fwds[name], opts[name], ids_BT, labels_BT, autocast)
            if a.gpu:
                torch.cuda.synchronize()
            rates[name].append(a.batch * a.seq * a.steps / (time.perf_counter() - t0))
    print(f"first-step loss: ours={first_loss['ours']:.6f} peer={first_loss['peer']:.6f}")
    print(f"threads={torch.get_num_threads()} batch={a.batch} seq={a.seq} steps={a.steps}")
    for name in rates:
        print(f"{name}: tokens/s per round " + " ".join(f"{x:.0f}" for x in rates[name]))
    med = {k: statistics.median(v) for k, v in rates.items()}
    if a.gpu:
        name = torch.cuda.get_device_name()
        peak = next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        for side in ("ours", "peer"):
            mfu = med[side] * flops_per_token(ours, a.seq) / peak if peak else float("nan")
            print(f"{side}: MFU {mfu:.3f} on {name}")
    print(
        f"train: ratio={med['ours'] / med['peer']:.3f} ours={med['ours']:.0f} peer={med['peer']:.0f}"
    )


if __name__ == "__main__":
    main()
