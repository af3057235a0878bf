"""A Qwen3 decoder (dense and MoE) in plain PyTorch, readable in one sitting.

Design choices:
- Architecture as the Qwen3 report and the transformers implementation have it: token
  embedding -> N x [RMSNorm -> GQA attention with QK-Norm and RoPE -> residual,
  RMSNorm -> SwiGLU MLP (or a top-k MoE of SwiGLU experts) -> residual] -> RMSNorm ->
  LM head, no biases anywhere, embeddings optionally tied to the LM head.
- Parameter names and layouts match transformers' ``Qwen3ForCausalLM`` /
  ``Qwen3MoeForCausalLM`` (``model.layers.0.self_attn.q_proj.weight``, experts as 3-D
  ``gate_up_proj`` / ``down_proj`` tensors), so a state dict moves between the two with
  ``load_state_dict`` and the parity test needs no renaming.
- Document masking: ``doc_ids_BT`` (one id per packed document, from the shards'
  segment lengths) turns causal attention into block-diagonal causal attention. With
  ``attention="auto"`` that is a compiled flex_attention BlockMask on CUDA (skips
  masked blocks, no [T,T] mask in memory) and an SDPA boolean mask elsewhere; with
  ``doc_ids_BT=None`` SDPA runs its plain causal kernel.
  Position ids come from the caller (they restart at 0 in each document).
- RoPE frequencies live in a non-persistent buffer rebuilt by ``set_rope`` (the
  curriculum raises the base at S3; YaRN stretches it for long inference).
- MoE routing as Qwen3-MoE: softmax over experts in float32, top-k, renormalise the
  k weights (``norm_topk_prob``), no shared expert. The load-balancing loss
  ``N * sum_i f_i * P_i`` (f_i: share of routed slots, P_i: mean router probability)
  is 1 for a perfectly balanced router. With ``global_batch=True`` and a process group
  the counts f_i are summed over data-parallel ranks first (global-batch balance,
  Qiu et al. 2025, as Qwen3 trains).
- Shapes in names: B batch, T time, D model width, H query heads, K kv heads,
  E head dim, X experts, W expert width, V vocab, N tokens (B*T), C a chunk of N.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention


@dataclass
class ModelConfig:
    vocab_size: int = 151936
    dim: int = 1024
    n_layers: int = 28
    n_heads: int = 16
    n_kv_heads: int = 8
    head_dim: int = 128
    ffn_dim: int = 3072  # SwiGLU hidden width of the dense MLP
    tie_embeddings: bool = True
    rope_theta: float = 10_000.0
    rms_eps: float = 1e-6
    max_seq_len: int = 32768
    init_std: float = 0.02
    # MoE: n_experts == 0 means dense
    n_experts: int = 0
    top_k: int = 0
    expert_dim: int = 0
    norm_topk_prob: bool = True
    attention: str = "auto"  # document mask kernel: auto (flex on CUDA, else sdpa) | sdpa | flex

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0


def rope_inv_freq(
    head_dim: int, theta: float, yarn: dict[str, float] | None = None
) -> tuple[torch.Tensor, float]:
    """Inverse RoPE frequencies [E/2] and the cos/sin scale; YaRN if ``yarn`` is given.

    ``yarn`` = {"factor", "original_max_position_embeddings", optional "beta_fast" (32),
    "beta_slow" (1)}: dimensions that rotate fewer than beta_slow times over the
    original length are interpolated by ``factor``, those rotating more than beta_fast
    times are kept, a linear ramp blends between; attention is scaled by
    0.1 * ln(factor) + 1 (Peng et al. 2023, as transformers' "yarn" rope init).
    """
    pos_freqs = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if yarn is None:
        return 1.0 / pos_freqs, 1.0
    factor, orig = float(yarn["factor"]), float(yarn["original_max_position_embeddings"])
    beta_fast, beta_slow = yarn.get("beta_fast", 32), yarn.get("beta_slow", 1)

    def correction_dim(n_rot: float) -> float:  # dimension that rotates n_rot times in orig
        return head_dim * math.log(orig / (n_rot * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), head_dim - 1)
    ramp = torch.arange(head_dim // 2, dtype=torch.float32) - low
    ramp = torch.clamp(ramp / (high - low if high != low else 0.001), 0, 1)
    extrapolate = 1 - ramp  # 1: keep the original frequency, 0: interpolate
    inv_freq = (1.0 / (factor * pos_freqs)) * ramp + (1.0 / pos_freqs) * extrapolate
    scale = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return inv_freq, scale


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@functools.cache
def compiled_flex_attention():  # compiled once, on first use (GPU)
    return torch.compile(flex_attention, dynamic=False)


def document_mask(doc_ids_BT: torch.Tensor, kind: str) -> torch.Tensor | BlockMask:
    """Causal attention within each document: a flex BlockMask or an SDPA bool mask."""
    B, T = doc_ids_BT.shape
    if kind == "flex" or (kind == "auto" and doc_ids_BT.device.type == "cuda"):

        def same_doc_causal(b, h, q, kv):
            return (doc_ids_BT[b, q] == doc_ids_BT[b, kv]) & (q >= kv)

        return create_block_mask(same_doc_causal, B, None, T, T, device=doc_ids_BT.device)
    causal_TT = torch.ones(T, T, dtype=torch.bool, device=doc_ids_BT.device).tril()
    return ((doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :]) & causal_TT).unsqueeze(1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)  # QK-Norm, per head
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTE: torch.Tensor,
        sin_BTE: torch.Tensor,
        mask_B1TT: torch.Tensor | BlockMask | None,
    ) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q_BHTE = self.q_norm(self.q_proj(x_BTD).view(B, T, -1, self.head_dim)).transpose(1, 2)
        k_BKTE = self.k_norm(self.k_proj(x_BTD).view(B, T, -1, self.head_dim)).transpose(1, 2)
        v_BKTE = self.v_proj(x_BTD).view(B, T, -1, self.head_dim).transpose(1, 2)
        cos_B1TE, sin_B1TE = cos_BTE.unsqueeze(1), sin_BTE.unsqueeze(1)
        q_BHTE = q_BHTE * cos_B1TE + rotate_half(q_BHTE) * sin_B1TE
        k_BKTE = k_BKTE * cos_B1TE + rotate_half(k_BKTE) * sin_B1TE
        gqa = self.n_kv_heads != self.n_heads
        if isinstance(mask_B1TT, BlockMask):
            flex = flex_attention if q_BHTE.device.type == "cpu" else compiled_flex_attention()
            y_BHTE = flex(q_BHTE, k_BKTE, v_BKTE, block_mask=mask_B1TT, enable_gqa=gqa)
        else:
            y_BHTE = F.scaled_dot_product_attention(
                q_BHTE,
                k_BKTE,
                v_BKTE,
                attn_mask=mask_B1TT,
                is_causal=mask_B1TT is None,
                enable_gqa=gqa,
            )
        return self.o_proj(y_BHTE.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cfg.n_experts, cfg.dim))


class Experts(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        X, W, D = cfg.n_experts, cfg.expert_dim, cfg.dim
        self.gate_up_proj = nn.Parameter(torch.empty(X, 2 * W, D))  # [gate; up] rows
        self.down_proj = nn.Parameter(torch.empty(X, D, W))


class MoE(nn.Module):
    """Top-k routed SwiGLU experts; returns the output, router probabilities and choices.

    A plain loop over experts (one gather, two matmuls, one scatter-add each): readable,
    exact, and what the CPU debug runs need; grouped-GEMM kernels are a GPU upgrade.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob = cfg.top_k, cfg.norm_topk_prob
        self.gate = Router(cfg)
        self.experts = Experts(cfg)

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
        probs_NX = F.softmax(F.linear(x_ND, self.gate.weight), dim=-1, dtype=torch.float32)
        w_NK, idx_NK = torch.topk(probs_NX, self.top_k, dim=-1)
        if self.norm_topk_prob:
            w_NK = w_NK / w_NK.sum(dim=-1, keepdim=True)
        w_NK = w_NK.to(x_ND.dtype)
        # Sort the N*k (token, expert) slots by expert; each expert runs on its contiguous run.
        order = idx_NK.flatten().argsort(stable=True)
        token_of_slot = order // self.top_k
        counts = torch.bincount(idx_NK.flatten(), minlength=probs_NX.shape[-1]).tolist()
        out_ND = torch.zeros_like(x_ND)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            tok = token_of_slot[start : start + n]
            gate, up = F.linear(x_ND[tok], self.experts.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.experts.down_proj[e])
            out_ND.index_add_(0, tok, y * w_NK.flatten()[order[start : start + n], None])
            start += n
        return out_ND.view_as(x_BTD), probs_NX, idx_NK


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.rms_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.rms_eps)
        self.mlp = MoE(cfg) if cfg.is_moe else MLP(cfg.dim, cfg.ffn_dim)
        self.is_moe = cfg.is_moe

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTE: torch.Tensor,
        sin_BTE: torch.Tensor,
        mask_B1TT: torch.Tensor | BlockMask | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x_BTD = x_BTD + self.self_attn(self.input_layernorm(x_BTD), cos_BTE, sin_BTE, mask_B1TT)
        h_BTD = self.post_attention_layernorm(x_BTD)
        if not self.is_moe:
            return x_BTD + self.mlp(h_BTD), None, None
        h_BTD, probs_NX, idx_NK = self.mlp(h_BTD)
        return x_BTD + h_BTD, probs_NX, idx_NK


class Body(nn.Module):
    """Holds the layers under the name ``model`` as transformers does."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.rms_eps)


def load_balancing_loss(
    probs_LNX: list[torch.Tensor], idx_LNK: list[torch.Tensor], global_batch: bool = True
) -> torch.Tensor:
    """Mean over layers of ``X * sum_i f_i * P_i``; equals 1 when routing is balanced.

    f_i = share of the N*k routed slots that went to expert i (no gradient),
    P_i = mean router probability of expert i over the N tokens. With
    ``global_batch`` and an initialised process group, slot counts are summed over
    ranks so balance is asked of the global batch, not of each micro-batch.
    """
    losses = []
    for probs_NX, idx_NK in zip(probs_LNX, idx_LNK, strict=True):
        X = probs_NX.shape[-1]
        counts_X = torch.bincount(idx_NK.flatten(), minlength=X).float()
        if global_batch and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts_X)
        f_X = counts_X / counts_X.sum()
        losses.append(X * (f_X * probs_NX.mean(0)).sum())
    return torch.stack(losses).mean()


class LinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropy of ``h_ND @ w_VD.T`` over labels != -100, chunk by chunk.

    Only rows with a label are computed (padding and boundaries cost nothing), and the
    [N,V] logits never exist at once: each chunk of C rows computes its logits, loss and
    at once its gradients (softmax - onehot) in place, which backward only scales. Same
    matmuls as lm_head + F.cross_entropy, far fewer passes over [*,V] memory.
    """

    @staticmethod
    def forward(ctx, h_ND, w_VD, labels_N, chunk: int):
        rows = (labels_N != -100).nonzero().squeeze(1)
        grad_h_ND = torch.zeros_like(h_ND)
        grad_w_VD = torch.zeros(w_VD.shape, dtype=torch.float32, device=w_VD.device)
        total = torch.zeros((), dtype=torch.float32, device=h_ND.device)
        for start in range(0, len(rows), chunk):
            rows_C = rows[start : start + chunk]
            h_CD, y_C = h_ND[rows_C], labels_N[rows_C]
            logits_CV = (h_CD @ w_VD.T).float()
            max_C1 = logits_CV.amax(-1, keepdim=True)
            target_C1 = logits_CV.gather(1, y_C[:, None])
            p_CV = logits_CV.sub_(max_C1).exp_()
            sum_C1 = p_CV.sum(-1, keepdim=True)
            total += (sum_C1.log() + max_C1 - target_C1).sum()
            p_CV.div_(sum_C1)[torch.arange(len(y_C), device=y_C.device), y_C] -= 1
            g_CV = p_CV.to(h_CD.dtype)  # d(loss)/d(logits)
            grad_h_ND[rows_C] = g_CV @ w_VD
            if g_CV.dtype == torch.float32:
                grad_w_VD.addmm_(g_CV.T, h_CD)
            else:  # bf16 under autocast: accumulate in float32
                grad_w_VD += (g_CV.T @ h_CD).float()
        ctx.save_for_backward(grad_h_ND, grad_w_VD.to(w_VD.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h_ND, grad_w_VD = ctx.saved_tensors
        return grad_h_ND * grad_out, grad_w_VD * grad_out, None, None


class Qwen3(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rope_scale = 1.0
        self.register_buffer("inv_freq", torch.empty(cfg.head_dim // 2), persistent=False)
        self.set_rope(cfg.rope_theta)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        std = self.cfg.init_std
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, Experts):
            nn.init.normal_(m.gate_up_proj, std=std)
            nn.init.normal_(m.down_proj, std=std)
        elif isinstance(m, Router):
            nn.init.normal_(m.weight, std=std)

    @torch.no_grad()
    def set_rope(self, theta: float, yarn: dict[str, float] | None = None) -> None:
        """Rebuild the RoPE frequencies (ABF: a larger ``theta``; YaRN: ``yarn`` params)."""
        inv_freq, self.rope_scale = rope_inv_freq(self.cfg.head_dim, theta, yarn)
        self.inv_freq = inv_freq.to(self.inv_freq.device)
        self.rope_theta = theta

    def forward(
        self,
        input_ids_BT: torch.Tensor,
        position_ids_BT: torch.Tensor | None = None,
        doc_ids_BT: torch.Tensor | None = None,
        labels_BT: torch.Tensor | None = None,
        loss_chunk: int = 256,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits [B,T,V] (or, given ``labels_BT``, the summed cross-entropy over labels
        != -100, computed in chunks of ``loss_chunk`` tokens) and, for MoE, per-layer
        router probs [N,X] and choices [N,k]."""
        B, T = input_ids_BT.shape
        if position_ids_BT is None:
            position_ids_BT = torch.arange(T, device=input_ids_BT.device).expand(B, T)
        freqs_BTE = position_ids_BT[..., None].float() * self.inv_freq.float()
        freqs_BTE = torch.cat((freqs_BTE, freqs_BTE), dim=-1)
        x_BTD = self.model.embed_tokens(input_ids_BT)
        cos_BTE = (freqs_BTE.cos() * self.rope_scale).to(x_BTD.dtype)
        sin_BTE = (freqs_BTE.sin() * self.rope_scale).to(x_BTD.dtype)
        mask_B1TT = None if doc_ids_BT is None else document_mask(doc_ids_BT, self.cfg.attention)
        probs, choices = [], []
        for layer in self.model.layers:
            x_BTD, probs_NX, idx_NK = layer(x_BTD, cos_BTE, sin_BTE, mask_B1TT)
            if probs_NX is not None:
                probs.append(probs_NX)
                choices.append(idx_NK)
        x_BTD = self.model.norm(x_BTD)
        if labels_BT is None:
            return self.lm_head(x_BTD), probs, choices
        ce = LinearCrossEntropy.apply(
            x_BTD.flatten(0, 1), self.lm_head.weight, labels_BT.flatten(), loss_chunk
        )
        return ce, probs, choices

    def num_params(self, active: bool = False, embedding: bool = True) -> int:
        """Parameter count; ``active`` counts k of the X experts, as the A in 30B-A3B."""
        n = sum(p.numel() for p in self.parameters())
        if not embedding and not self.cfg.tie_embeddings:  # a tied table is the LM head too
            n -= self.model.embed_tokens.weight.numel()
        if active and self.cfg.is_moe:
            per_expert = 3 * self.cfg.dim * self.cfg.expert_dim
            n -= self.cfg.n_layers * (self.cfg.n_experts - self.cfg.top_k) * per_expert
        return n
