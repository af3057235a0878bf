"""train/model.py against transformers' Qwen3 and Qwen3-MoE, plus routing and RoPE checks.

Both sides are built from configs with random weights (nothing is downloaded); our
parameter names match transformers', so one state dict loads into both.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from train.model import ModelConfig, Qwen3, load_balancing_loss, rope_inv_freq
from train.presets import preset, qwen3_debug, qwen3_moe_debug

VOCAB = 512


def hf_config(c: ModelConfig, **extra) -> Qwen3Config | Qwen3MoeConfig:
    common = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim,
        tie_word_embeddings=c.tie_embeddings,
        rms_norm_eps=c.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        attn_implementation="sdpa",
        **extra,
    )
    if not c.is_moe:
        return Qwen3Config(intermediate_size=c.ffn_dim, **common)
    return Qwen3MoeConfig(
        intermediate_size=4 * c.dim,
        moe_intermediate_size=c.expert_dim,
        num_experts=c.n_experts,
        num_experts_per_tok=c.top_k,
        norm_topk_prob=c.norm_topk_prob,
        output_router_logits=True,
        **common,
    )


def pair(c: ModelConfig, seed: int = 0) -> tuple[Qwen3, torch.nn.Module]:
    torch.manual_seed(seed)
    hf_cls = Qwen3MoeForCausalLM if c.is_moe else Qwen3ForCausalLM
    hf = hf_cls(hf_config(c)).eval()
    ours = Qwen3(c).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return ours, hf


@pytest.mark.parametrize("tied", [True, False])
def test_dense_logits_match_transformers(tied: bool) -> None:
    ours, hf = pair(qwen3_debug(vocab_size=VOCAB, tie_embeddings=tied, rope_theta=1e6))
    x = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits, atol=1e-5, rtol=0)


def test_moe_logits_and_balance_loss_match_transformers() -> None:
    c = qwen3_moe_debug(vocab_size=VOCAB, n_layers=1)
    ours, hf = pair(c)
    x = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, probs, choices = ours(x)
        ref = hf(x)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)
    # transformers counts routed slots per token (sum k), ours per slot (sum 1): a factor k.
    ours_lbl = load_balancing_loss(probs, choices)
    torch.testing.assert_close(ours_lbl * c.top_k, ref.aux_loss, atol=1e-6, rtol=0)


def test_packed_documents_match_separate_forward_passes() -> None:
    """Block-diagonal attention + per-document positions == each document run alone."""
    ours, hf = pair(qwen3_debug(vocab_size=VOCAB))
    g = torch.Generator().manual_seed(3)
    docs = [torch.randint(0, VOCAB, (n,), generator=g) for n in (7, 20, 5)]
    packed = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        got = ours(packed, pos, doc_ids)[0][0]
        want = torch.cat([hf(d[None]).logits[0] for d in docs])
        unmasked = ours(packed)[0][0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (unmasked[7:] - want[7:]).abs().max() > 1e-3  # the mask is what makes them agree
    ours.cfg.attention = "flex"  # the GPU kernel's BlockMask, run eagerly on the CPU
    with torch.no_grad():
        torch.testing.assert_close(ours(packed, pos, doc_ids)[0][0], want, atol=1e-5, rtol=0)


def test_yarn_matches_transformers_rope_init() -> None:
    c = qwen3_debug(head_dim=64)
    yarn = {"factor": 4.0, "original_max_position_embeddings": 4096}
    hc = hf_config(c, max_position_embeddings=16384)
    hc.rope_parameters = {"rope_type": "yarn", "rope_theta": 1e6, **yarn}
    want_freq, want_scale = ROPE_INIT_FUNCTIONS["yarn"](hc, "cpu")
    got_freq, got_scale = rope_inv_freq(c.head_dim, 1e6, yarn)
    torch.testing.assert_close(got_freq, want_freq, atol=0, rtol=1e-6)
    assert got_scale == pytest.approx(want_scale)
    plain, _ = rope_inv_freq(c.head_dim, 1e6)
    assert got_freq[0] == plain[0] and got_freq[-1] == pytest.approx(plain[-1] / 4)


def test_balance_loss_is_one_for_uniform_routing_and_grows_with_concentration() -> None:
    X, k, N = 8, 2, 64
    values = []
    for used in (8, 4, 2):  # tokens spread evenly over `used` experts, router agrees
        probs = torch.zeros(N, X)
        probs[:, :used] = 1 / used
        idx = torch.stack([torch.arange(N) * k % used, (torch.arange(N) * k + 1) % used], 1)
        values.append(float(load_balancing_loss([probs], [idx])))
    assert values[0] == pytest.approx(1.0)  # perfect balance: X * sum (1/X)(1/X)
    assert values == pytest.approx([X / 8, X / 4, X / 2])
    soft = torch.softmax(torch.randn(N, X), -1)  # a uniform choice of experts pins f_i = 1/X
    balanced_idx = torch.arange(N * k).view(N, k) % X
    assert float(load_balancing_loss([soft], [balanced_idx])) == pytest.approx(1.0)


def test_report_presets_have_published_sizes() -> None:
    sizes = {}
    for name in ("qwen3_0_6b", "qwen3_8b", "qwen3_32b", "qwen3_30b_a3b", "qwen3_235b_a22b"):
        with torch.device("meta"):
            m = Qwen3(preset(name))
        sizes[name] = (m.num_params() / 1e9, m.num_params(active=True) / 1e9)
    assert sizes["qwen3_0_6b"][0] == pytest.approx(0.6, abs=0.05)
    assert sizes["qwen3_8b"][0] == pytest.approx(8.2, abs=0.1)
    assert sizes["qwen3_32b"][0] == pytest.approx(32.8, abs=0.2)
    assert sizes["qwen3_30b_a3b"] == pytest.approx((30.5, 3.3), abs=0.1)
    assert sizes["qwen3_235b_a22b"] == pytest.approx((235.1, 22.2), abs=0.2)


def test_chunked_loss_matches_logits_cross_entropy() -> None:
    """The training path (labels given: chunked linear + cross-entropy) == lm_head + F.ce."""
    torch.manual_seed(0)
    model = Qwen3(qwen3_debug(vocab_size=VOCAB))
    x = torch.randint(0, VOCAB, (3, 50), generator=torch.Generator().manual_seed(4))
    y = x.roll(-1, 1)
    y[:, -1] = -100
    y[0, 5:9] = -100
    want = torch.nn.functional.cross_entropy(
        model(x)[0].flatten(0, 1), y.flatten(), reduction="sum"
    )
    want.backward()
    want_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = model(x, labels_BT=y, loss_chunk=37)[0]
    got.backward()
    torch.testing.assert_close(got, want, atol=0, rtol=1e-5)
    for p, g in zip(model.parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)
