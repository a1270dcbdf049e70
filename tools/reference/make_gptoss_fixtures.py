#!/usr/bin/env python3
"""Build a tiny random gpt-oss (GptOssForCausalLM) and write conformance fixtures, including an MXFP4 checkpoint.

Run from the repo root:

    python3 tools/reference/make_gptoss_fixtures.py [--out tests/fixtures]

Companion of make_fixtures.py / make_family_fixtures.py: same reference.json
keys and meanings (prompt, greedy, eos_token_id, greedy_until_eos, tokens,
logits_f32, logits_bf16, sim_kl, sim_top1), same prompt / greedy / eos rule,
same fake-quantization spec and rounding (the helpers are imported), torch
seeded with 0, single-threaded CPU float32. Writes <out>/gptoss-tiny/:

  f32/            save_pretrained output in float32, one model.safetensors, with
                  the names the hub checkpoint openai/gpt-oss-20b uses (which
                  are also transformers 5.24's in-memory names; save_pretrained
                  renames nothing for gpt_oss), the experts dequantized:
                    model.layers.L.self_attn.{q,k,v,o}_proj.{weight,bias}
                    model.layers.L.self_attn.sinks                 [heads]
                    model.layers.L.mlp.router.weight               [E, H]
                    model.layers.L.mlp.router.bias                 [E]
                    model.layers.L.mlp.experts.gate_up_proj        [E, H, 2F]
                    model.layers.L.mlp.experts.gate_up_proj_bias   [E, 2F]
                    model.layers.L.mlp.experts.down_proj           [E, F, H]
                    model.layers.L.mlp.experts.down_proj_bias      [E, H]
                    model.layers.L.{input,post_attention}_layernorm.weight,
                    model.embed_tokens.weight, model.norm.weight, lm_head.weight
                  The expert matrices are stored [E, in, out] (x @ W), i.e.
                  TRANSPOSED compared with the other families' fused
                  gate_up_proj [E, 2F, H] / down_proj [E, H, F], and the last
                  dim of gate_up_proj / gate_up_proj_bias INTERLEAVES gate and
                  up: column 2j is gate unit j, column 2j+1 is up unit j.
                  config.json in the hub's layout (top-level "rope_theta" as the
                  int 150000, "rope_scaling" {"rope_type": "yarn", "factor",
                  "beta_fast", "beta_slow", "truncate": false,
                  "original_max_position_embeddings"}, "torch_dtype", no
                  "rope_parameters", no "swiglu_alpha" (transformers 5 adds it,
                  default 1.702), plus the hub's "experts_per_token" and
                  "initial_context_length"; no quantization_config).
  bf16/           the same weights rounded to bf16, same names and shapes, 3
                  shards + model.safetensors.index.json, transformers-5 config
                  ("rope_parameters", "dtype": "bfloat16", "swiglu_alpha").
  mxfp4/          like the hub checkpoint: experts as
                    model.layers.L.mlp.experts.gate_up_proj_blocks  uint8 [E, 2F, H/32, 16]
                    model.layers.L.mlp.experts.gate_up_proj_scales  uint8 [E, 2F, H/32]
                    model.layers.L.mlp.experts.down_proj_blocks     uint8 [E, H, F/32, 16]
                    model.layers.L.mlp.experts.down_proj_scales     uint8 [E, H, F/32]
                  (rows = output units in [out, in] orientation, gate/up rows
                  interleaved as above; 32-element blocks along the input /
                  contraction dim; byte j of a block holds element 2j in its
                  low nibble and element 2j+1 in its high nibble; nibble = FP4
                  E2M1 code, value table FP4_VALUES; scale byte = e8m0,
                  exponent + 127), every other tensor bf16 (expert biases,
                  router, sinks, norms, attention, embeddings, lm_head). Sharded
                  like the hub with its off-by-one file names:
                  model-00000-of-00002 .. model-00002-of-00002.safetensors +
                  model.safetensors.index.json ({"metadata": {"total_size"}}).
                  config.json = the f32 one without "torch_dtype" (the hub has
                  none) plus "quantization_config": {"quant_method": "mxfp4",
                  "modules_to_not_convert": [the hub's list]}.
                  Blocks/scales quantize the f32 expert weights: per block of
                  32, e = smallest integer with max|x| <= 6 * 2^e, q = x / 2^e
                  rounded to the nearest E2M1 value (ties to the even code).
                  Loading mxfp4/ with GptOssForCausalLM.from_pretrained(dtype=
                  float32, quantization_config=Mxfp4Config(dequantize=True)) --
                  transformers' own Mxfp4Dequantize / convert_moe_packed_tensors;
                  on CPU without use_kernels it dequantizes anyway, the explicit
                  flag only skips validate_environment's accelerate requirement
                  -- is checked to give exactly these weights and logits_mxfp4,
                  and convert_moe_packed_tensors to equal the independent
                  decoder mxfp4_dequantize bit for bit.
  reference.json  the usual keys, plus "logits_mxfp4": per-position logits of
                  the weights in mxfp4/ (bf16 non-expert tensors, MXFP4
                  dequantized expert matrices), computed in float32.

Model: hidden 64, 4 layers, layer_types [sliding, full, sliding, full],
sliding_window 4 (the 23-token test sequence is longer: key j is visible from
query p iff p - 4 < j <= p on sliding layers; checked), 4 heads / 2 kv heads,
head_dim 16, q/k/v/o biases, per-head attention sinks, 8 experts, top-2
(softmax over the 2 top router logits; router with bias), expert width 32,
expert biases, swiglu_limit 7 (the clamp is hit; counted), YaRN rope (factor 4,
beta_fast 32, beta_slow 1, truncate false, original_max_position_embeddings 256
so that at head_dim 16 the ramp has one pure-extrapolation frequency, two
blended ones and five pure interpolation ones; max_position_embeddings 1024 =
factor * original), rope_theta 150000, untied lm_head. Every feature is
checked to change the logits, and an independent float64 re-implementation of
the forward pass (see manual_logits) is checked against transformers.

Fake quantization (sim_kl / sim_top1): make_fixtures' f16 / int8 / int4 of
embed_tokens, q/k/v/o_proj.weight, the expert matrices and lm_head. The
expert matrices are quantized in [out, in] orientation (rows = output units,
32-blocks along the contraction dim, like every other family's weights and
like the MXFP4 blocks), i.e. gate_up_proj.transpose(1, 2) and
down_proj.transpose(1, 2). NOT quantized: norms, router weight and bias,
sinks, every bias.
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import GptOssConfig, GptOssForCausalLM, Mxfp4Config
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors
from transformers.models.gpt_oss import modeling_gpt_oss

sys.dont_write_bytecode = True  # keep tools/reference/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_family_fixtures as mff  # noqa: E402
import make_fixtures as mf  # noqa: E402

PROMPT = mf.PROMPT
N_NEW = mf.N_NEW
NAME = "gptoss-tiny"

N_LAYERS = 4
SLIDING_WINDOW = 4
YARN = {
    "rope_type": "yarn",
    "factor": 4.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 256,
}
ROPE_THETA = 150000
ROPE_PARAMETERS = {"rope_theta": float(ROPE_THETA), **YARN}
# openai/gpt-oss-20b config.json "quantization_config"
HUB_QUANT = {
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
    "quant_method": "mxfp4",
}

# Init scales (see gptoss_init).
EMBED_STD = 0.5
GATE_UP_STD = 0.4  # pre-activations std ~3: some gate / up values pass +-7
GATE_UP_BIAS_STD = 0.5
DOWN_STD = 0.02
SINK_STD = 1.0
ROUTER_STD = 0.3  # wide router logits: smallest 2nd-3rd gap stays well above float noise
ROUTER_BIAS_STD = 0.5
BIAS_STD = 0.1


def gptoss_config(**over):
    kw = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=32,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention", "full_attention"] * (N_LAYERS // 2),
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        rope_parameters=dict(ROPE_PARAMETERS),
        swiglu_limit=7.0,
        attention_bias=True,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=None,  # the chosen eos is set later
        pad_token_id=None,
    )
    kw.update(over)
    return GptOssConfig(**kw)


def new_model(cfg):
    cfg._attn_implementation = "eager"
    m = GptOssForCausalLM(cfg).to(torch.float32)
    m.config._attn_implementation = "eager"
    m.eval()
    return m


def gptoss_init(name, p):
    if name == "model.embed_tokens.weight":
        p.copy_(EMBED_STD * torch.randn_like(p))
    elif name.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
    elif name.endswith("self_attn.sinks"):
        p.copy_(SINK_STD * torch.randn_like(p))
    elif name.endswith("mlp.router.weight"):
        p.copy_(ROUTER_STD * torch.randn_like(p))
    elif name.endswith("mlp.router.bias"):
        p.copy_(ROUTER_BIAS_STD * torch.randn_like(p))
    elif name.endswith("experts.gate_up_proj"):
        p.copy_(GATE_UP_STD * torch.randn_like(p))
    elif name.endswith("experts.gate_up_proj_bias"):
        p.copy_(GATE_UP_BIAS_STD * torch.randn_like(p))
    elif name.endswith("experts.down_proj"):
        p.copy_(DOWN_STD * torch.randn_like(p))
    elif name.endswith("bias"):  # q/k/v/o_proj.bias, experts.down_proj_bias
        p.copy_(BIAS_STD * torch.randn_like(p))
    else:  # q/k/v/o_proj.weight, lm_head
        p.copy_(0.08 * torch.randn_like(p))


def build_model():
    torch.manual_seed(0)
    model = new_model(gptoss_config())
    assert model.config.rope_parameters == ROPE_PARAMETERS, model.config.rope_parameters
    with torch.no_grad():
        for name, p in model.named_parameters():
            gptoss_init(name, p)
    model.eval()
    return model


SHAPES = {
    "model.embed_tokens.weight": (256, 64),
    "model.layers.0.self_attn.q_proj.weight": (64, 64),
    "model.layers.0.self_attn.q_proj.bias": (64,),
    "model.layers.0.self_attn.k_proj.weight": (32, 64),
    "model.layers.0.self_attn.k_proj.bias": (32,),
    "model.layers.0.self_attn.v_proj.weight": (32, 64),
    "model.layers.0.self_attn.v_proj.bias": (32,),
    "model.layers.0.self_attn.o_proj.weight": (64, 64),
    "model.layers.0.self_attn.o_proj.bias": (64,),
    "model.layers.0.self_attn.sinks": (4,),
    "model.layers.0.input_layernorm.weight": (64,),
    "model.layers.0.post_attention_layernorm.weight": (64,),
    "model.layers.0.mlp.router.weight": (8, 64),
    "model.layers.0.mlp.router.bias": (8,),
    "model.layers.0.mlp.experts.gate_up_proj": (8, 64, 64),  # [E, H, 2F]
    "model.layers.0.mlp.experts.gate_up_proj_bias": (8, 64),  # [E, 2F]
    "model.layers.0.mlp.experts.down_proj": (8, 32, 64),  # [E, F, H]
    "model.layers.0.mlp.experts.down_proj_bias": (8, 64),  # [E, H]
    "model.norm.weight": (64,),
    "lm_head.weight": (256, 64),
}
# per layer: q/k/v/o weight+bias, sinks, 2 norms, router weight+bias, 4 expert tensors
N_TENSORS = 2 + N_LAYERS * 17 + 1
EXPERT_MATS = ("experts.gate_up_proj", "experts.down_proj")


def is_expert_mat(name):
    return name.endswith(EXPERT_MATS)


# ------------------------------------------------------- fake quantize ----

def is_quantized(name):
    if is_expert_mat(name):
        return True
    if "norm" in name or name.endswith(("mlp.router.weight", "self_attn.sinks", "bias")):
        return False
    assert name == "model.embed_tokens.weight" or name == "lm_head.weight" or name.endswith(
        ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")), name
    return True


def fake_quant_state(sd, kind):
    """mff.fake_quant_state, expert matrices in [E, out, in] orientation."""
    t = {k: (v.transpose(1, 2).contiguous() if is_expert_mat(k) else v) for k, v in sd.items()}
    q = mff.fake_quant_state(t, kind, is_quantized)
    return {k: (v.transpose(1, 2).contiguous() if is_expert_mat(k) else v) for k, v in q.items()}


# --------------------------------------------------------------- MXFP4 ----

FP4_GRID = np.array(FP4_VALUES[:8], dtype=np.float64)  # codes 0..7; code | 8 = negative


def mxfp4_quantize(w):
    """w: float32 [..., rows, cols] ([out, in]); cols % 32 == 0.
    Returns (blocks uint8 [..., rows, cols/32, 16], scales uint8 [..., rows, cols/32])."""
    x = np.asarray(w, dtype=np.float64)
    *pre, rows, cols = x.shape
    assert cols % 32 == 0, cols
    x = x.reshape(*pre, rows, cols // 32, 32)
    amax = np.abs(x).max(-1)
    # e = smallest integer with amax <= 6 * 2^e (amax == 0: e = 0)
    e = np.zeros(amax.shape, dtype=np.int64)
    nz = amax > 0
    e[nz] = np.ceil(np.log2(amax[nz] / 6.0)).astype(np.int64)
    for _ in range(2):  # guard against log2 rounding at exact powers of two
        too_small = nz & (amax > 6.0 * np.exp2(e.astype(np.float64)))
        e[too_small] += 1
        too_big = nz & (amax <= 6.0 * np.exp2(e.astype(np.float64) - 1))
        e[too_big] -= 1
    assert (amax <= 6.0 * np.exp2(e.astype(np.float64))).all()
    assert (e + 127 >= 0).all() and (e + 127 <= 254).all()
    scaled = x / np.exp2(e.astype(np.float64))[..., None]  # exact (power of two)
    a = np.abs(scaled)
    d = np.abs(a[..., None] - FP4_GRID)  # [..., 32, 8]
    dmin = d.min(-1, keepdims=True)
    cand = d == dmin
    even = (np.arange(8) % 2 == 0)
    # nearest; on a tie (two adjacent codes) the even code
    pick_even = (cand & even).any(-1, keepdims=True)
    chosen = np.where(pick_even, cand & even, cand)
    idx = chosen.argmax(-1)
    code = (idx | np.where((scaled < 0) & (idx > 0), 8, 0)).astype(np.uint8)
    blocks = (code[..., 0::2] | (code[..., 1::2] << 4)).astype(np.uint8)
    scales = (e + 127).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(blocks)), torch.from_numpy(np.ascontiguousarray(scales))


def mxfp4_dequantize(blocks, scales):
    """The layout written by mxfp4_quantize, decoded independently of
    transformers: float32 [..., rows, cols]."""
    b = blocks.numpy().astype(np.int64)
    lo, hi = b & 0xF, b >> 4
    codes = np.stack((lo, hi), -1).reshape(*b.shape[:-1], 32)
    lut = np.array(FP4_VALUES, dtype=np.float64)
    v = lut[codes] * np.exp2(scales.numpy().astype(np.float64) - 127)[..., None]
    out = v.reshape(*b.shape[:-2], b.shape[-2] * 32).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(out))


def mxfp4_tensors(sd):
    """hub-layout expert tensors for the in-memory [E, in, out] matrices of sd,
    and the dequantized [E, in, out] float32 matrices."""
    packed, deq = {}, {}
    for k, v in sd.items():
        if not is_expert_mat(k):
            continue
        w = v.detach().float().transpose(1, 2).contiguous()  # [E, out, in]
        blocks, scales = mxfp4_quantize(w.numpy())
        e, rows, cols = w.shape
        assert tuple(blocks.shape) == (e, rows, cols // 32, 16), blocks.shape
        assert tuple(scales.shape) == (e, rows, cols // 32), scales.shape
        packed[k + "_blocks"], packed[k + "_scales"] = blocks, scales
        mine = mxfp4_dequantize(blocks, scales).transpose(1, 2).contiguous()
        theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
        assert theirs.dtype == torch.float32 and theirs.shape == v.shape, (theirs.shape, v.shape)
        assert torch.equal(mine, theirs), (k, (mine - theirs).abs().max())
        deq[k] = theirs
        # no saturation: every element is within 2^e (half the widest E2M1 step, 4 -> 6) of the original
        step = torch.from_numpy(np.exp2(scales.numpy().astype(np.float64) - 127)).float()
        err = (mine.transpose(1, 2) - w).abs().reshape(e, rows, cols // 32, 32)
        assert (err <= step[..., None]).all(), k
    return packed, deq


# ------------------------------------------------------------- checks ----

def expected_yarn(cfg):
    """YaRN inv_freq / attention_factor, written out from modeling_rope_utils
    (_compute_yarn_parameters, truncate=False)."""
    rp = cfg.rope_parameters
    base, dim, factor = rp["rope_theta"], cfg.head_dim, rp["factor"]
    omp = rp["original_max_position_embeddings"]

    def corr_dim(n_rot):
        return dim * math.log(omp / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr_dim(rp["beta_fast"]), corr_dim(rp["beta_slow"])
    if rp.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    extrap = 1.0 / pos_freqs
    interp = 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    inv = interp * ramp + extrap * (1 - ramp)
    attn = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return inv, attn, ramp, (low, high), extrap


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


@torch.no_grad()
def manual_logits(sd, cfg, tokens, window=None, inv_freq=None, attn_factor=None):
    """Independent float64 forward pass of GptOssForCausalLM (the formulas of
    the report); returns float32 logits [T, vocab]."""
    w = {k: v.double() for k, v in sd.items()}
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    eps, limit, alpha, topk = cfg.rms_norm_eps, cfg.swiglu_limit, cfg.swiglu_alpha, cfg.num_experts_per_tok
    window = cfg.sliding_window if window is None else window
    if inv_freq is None:
        inv_freq, attn_factor, *_ = expected_yarn(cfg)
    t = len(tokens)
    pos = torch.arange(t, dtype=torch.float64)
    ang = pos[:, None] * inv_freq.double()[None, :]  # [T, hd/2]
    cos, sin = ang.cos() * attn_factor, ang.sin() * attn_factor

    def rope(x):  # [T, heads, hd]; rotate halves (not interleaved pairs)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1)

    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
    p_idx = torch.arange(t)[:, None]
    j_idx = torch.arange(t)[None, :]
    for li in range(cfg.num_hidden_layers):
        pre = f"model.layers.{li}."
        h = rms(x, w[pre + "input_layernorm.weight"], eps)

        def lin(name, inp):
            return inp @ w[pre + name + ".weight"].T + w[pre + name + ".bias"]

        q = rope(lin("self_attn.q_proj", h).view(t, nh, hd))
        k = rope(lin("self_attn.k_proj", h).view(t, nkv, hd))
        v = lin("self_attn.v_proj", h).view(t, nkv, hd)
        visible = j_idx <= p_idx
        if cfg.layer_types[li] == "sliding_attention":
            visible = visible & (j_idx > p_idx - window)
        sinks = w[pre + "self_attn.sinks"]
        out = torch.empty(t, nh, hd, dtype=torch.float64)
        for hh in range(nh):
            kv = hh // (nh // nkv)
            s = (q[:, hh] @ k[:, kv].T) * hd ** -0.5
            s = s.masked_fill(~visible, float("-inf"))
            s = torch.cat((s, sinks[hh].expand(t, 1)), -1)  # one extra logit per query row
            p = torch.softmax(s, -1)[:, :-1]  # the sink's probability is dropped
            out[:, hh] = p @ v[:, kv]
        x = x + lin("self_attn.o_proj", out.reshape(t, nh * hd))

        h = rms(x, w[pre + "post_attention_layernorm.weight"], eps)
        logits_r = h @ w[pre + "mlp.router.weight"].T + w[pre + "mlp.router.bias"]
        top_v, top_i = logits_r.topk(topk, -1)
        top_w = torch.softmax(top_v, -1)  # softmax over the k kept logits
        gu_w, gu_b = w[pre + "mlp.experts.gate_up_proj"], w[pre + "mlp.experts.gate_up_proj_bias"]
        dn_w, dn_b = w[pre + "mlp.experts.down_proj"], w[pre + "mlp.experts.down_proj_bias"]
        moe = torch.zeros_like(x)
        for ti in range(t):
            for kk in range(topk):
                e = int(top_i[ti, kk])
                gu = h[ti] @ gu_w[e] + gu_b[e]  # [2F], gate/up interleaved
                gate = gu[0::2].clamp(max=limit)
                up = gu[1::2].clamp(-limit, limit)
                act = (up + 1) * (gate * torch.sigmoid(alpha * gate))
                moe[ti] += top_w[ti, kk] * (act @ dn_w[e] + dn_b[e])
        x = x + moe
    x = rms(x, w["model.norm.weight"], eps)
    return (x @ w["lm_head.weight"].T).float()


def report_diff(what, ref, other, min_diff=1e-2):
    return mff.report_diff(what, ref, other, min_diff)


@torch.no_grad()
def count_clamps(model, tokens):
    cls = modeling_gpt_oss.GptOssExperts
    orig = cls._apply_gate
    stats = {"n": 0, "gate_hi": 0, "up_hi": 0, "up_lo": 0, "gate_max": -1e9, "up_min": 1e9, "up_max": -1e9}

    def counting(self, gate_up):
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        stats["n"] += gate.numel()
        stats["gate_hi"] += int((gate > self.limit).sum())
        stats["up_hi"] += int((up > self.limit).sum())
        stats["up_lo"] += int((up < -self.limit).sum())
        stats["gate_max"] = max(stats["gate_max"], gate.max().item())
        stats["up_min"] = min(stats["up_min"], up.min().item())
        stats["up_max"] = max(stats["up_max"], up.max().item())
        return orig(self, gate_up)

    cls._apply_gate = counting
    try:
        lo = mf.logits_of(model, tokens)
    finally:
        cls._apply_gate = orig
    return stats, lo


@torch.no_grad()
def router_logits_of(model, tokens):
    """Router logits (with bias) of every layer: [layers, T, E]."""
    logs = []
    hooks = [layer.mlp.router.register_forward_hook(
        lambda mod, args, out: logs.append(out[0].detach().clone())) for layer in model.model.layers]
    try:
        mf.logits_of(model, tokens)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(logs)


def routing_margins(model, states, tokens):
    """Smallest gap between the 2nd and 3rd router logit (a top-2 decision a
    float-rounding difference could flip) for each weight set, and how many
    (layer, position) decisions differ from the f32 weights'."""
    sel0 = None
    for name, st in states.items():
        r = router_logits_of(mf.with_weights(model, st), tokens)
        top = r.topk(3, -1)
        gap = (top.values[..., 1] - top.values[..., 2]).min().item()
        sel = top.indices[..., :2].sort(-1).values
        if sel0 is None:
            sel0 = sel
        flips = (sel != sel0).any(-1).sum().item()
        print(f"  routing ({name:5s} weights): smallest 2nd-3rd router logit gap {gap:.2e}, "
              f"top-2 sets differing from f32: {flips}/{sel.shape[0] * sel.shape[1]}")
        assert gap > 1e-4, (name, gap)


def variant(sd, tokens, **cfg_over):
    m = new_model(gptoss_config(**cfg_over))
    m.load_state_dict(sd, strict=True)
    return m, mf.logits_of(m, tokens)


def run_checks(model, sd, tokens, logits_f32):
    cfg = model.config
    t = len(tokens)
    print("checks:")
    # --- independent re-implementation ---------------------------------------
    man = manual_logits(sd, cfg, tokens)
    d = (man - logits_f32).abs().max().item()
    print(f"  float64 manual forward vs transformers f32: max|diff|={d:.2e} "
          f"(max|logit| {logits_f32.abs().max().item():.2f})")
    assert d < 1e-4, d
    # eager experts loop vs the default grouped_mm implementation
    me = copy.deepcopy(model)
    me.set_experts_implementation("eager")
    assert me.config._experts_implementation == "eager"
    le = mf.logits_of(me, tokens)
    print(f"  experts_implementation {model.config._experts_implementation} (default) vs eager: "
          f"max|diff|={(le - logits_f32).abs().max().item():.2e}")
    assert (le - logits_f32).abs().max().item() < 1e-4

    # --- YaRN ------------------------------------------------------------------
    rot = model.model.rotary_emb
    inv, attn, ramp, (low, high), extrap = expected_yarn(cfg)
    assert torch.allclose(rot.inv_freq, inv, rtol=1e-6, atol=0), (rot.inv_freq, inv)
    assert rot.attention_scaling == attn, (rot.attention_scaling, attn)
    pos = torch.arange(t)[None]
    cos, sin = rot(torch.zeros(1, t, cfg.hidden_size), pos)
    assert cos.shape == (1, t, cfg.head_dim // 2), cos.shape  # half width: rotate-halves rope
    ang = pos[0, :, None].float() * rot.inv_freq
    assert torch.equal(cos[0], ang.cos() * attn) and torch.equal(sin[0], ang.sin() * attn)
    print(f"  yarn: correction range low={low:.4f} high={high:.4f} (truncate false), "
          f"ramp {[round(x, 4) for x in ramp.tolist()]}, attention_factor {attn:.6f} (cos/sin multiplied)")
    print(f"    inv_freq yarn  {[f'{x:.6g}' for x in rot.inv_freq.tolist()]}")
    print(f"    inv_freq plain {[f'{x:.6g}' for x in extrap.tolist()]}")
    assert ((ramp > 0) & (ramp < 1)).sum() == 2 and (ramp == 0).sum() == 1, ramp
    mt, _ = variant(sd, tokens, rope_parameters={**ROPE_PARAMETERS, "truncate": True})
    changed = (mt.model.rotary_emb.inv_freq != rot.inv_freq).sum().item()
    print(f"    truncate true would change {changed}/{inv.numel()} inv_freq "
          f"{[f'{x:.6g}' for x in mt.model.rotary_emb.inv_freq.tolist()]}")
    assert changed > 0
    _, lp = variant(sd, tokens, rope_parameters={"rope_type": "default", "rope_theta": float(ROPE_THETA)})
    report_diff("plain rope (no yarn) instead of yarn", logits_f32, lp)
    lp = manual_logits(sd, cfg, tokens, inv_freq=rot.inv_freq, attn_factor=1.0)
    report_diff("yarn inv_freq without attention_factor (manual)", logits_f32, lp)

    # --- sliding window ----------------------------------------------------------
    mw, lw = variant(sd, tokens, sliding_window=10 ** 6)
    w = cfg.sliding_window
    same = [(lw[p] == logits_f32[p]).all().item() for p in range(t)]
    print(f"  sliding_window {w} vs 10**6: positions with identical logits {[p for p in range(t) if same[p]]}")
    assert all(same[:w]) and not any(same[w:]), same  # query p sees p-w < j <= p
    report_diff("window 10**6 instead of 4", logits_f32, lw)
    lm = manual_logits(sd, cfg, tokens, window=w + 1)  # p - w <= j <= p
    report_diff("window rule p-4 <= j (manual) instead of p-4 < j", logits_f32, lm)
    lf = manual_logits(sd, gptoss_config(layer_types=["full_attention", "sliding_attention"] * (N_LAYERS // 2)),
                       tokens)
    report_diff("layer_types swapped (full, sliding, ...) (manual)", logits_f32, lf)

    # --- sinks -------------------------------------------------------------------
    no_sink = {k: (torch.full_like(v, float("-inf")) if k.endswith("sinks") else v) for k, v in sd.items()}
    report_diff("sinks dropped (-inf)", logits_f32, mf.logits_of(mf.with_weights(model, no_sink), tokens))
    zero_sink = {k: (torch.zeros_like(v) if k.endswith("sinks") else v) for k, v in sd.items()}
    report_diff("sinks 0", logits_f32, mf.logits_of(mf.with_weights(model, zero_sink), tokens))

    # --- biases ------------------------------------------------------------------
    for what, suffix in (("attention biases", ("q_proj.bias", "k_proj.bias", "v_proj.bias", "o_proj.bias")),
                         ("router bias", ("router.bias",)),
                         ("expert biases", ("gate_up_proj_bias", "down_proj_bias"))):
        z = {k: (torch.zeros_like(v) if k.endswith(suffix) else v) for k, v in sd.items()}
        report_diff(f"{what} zeroed", logits_f32, mf.logits_of(mf.with_weights(model, z), tokens))

    # --- clamp ---------------------------------------------------------------------
    st, lo = count_clamps(model, tokens)
    assert torch.equal(lo, logits_f32)
    print(f"  swiglu clamp (limit {cfg.swiglu_limit}) over {st['n']} gate/up pairs "
          f"(tokens x top-k x F, {cfg.num_hidden_layers} layers): gate > 7: {st['gate_hi']}, up > 7: "
          f"{st['up_hi']}, up < -7: {st['up_lo']}; max gate {st['gate_max']:.2f}, up in "
          f"[{st['up_min']:.2f}, {st['up_max']:.2f}]")
    assert st["gate_hi"] > 0 and st["up_hi"] > 0 and st["up_lo"] > 0, st
    mc = copy.deepcopy(model)
    for layer in mc.model.layers:
        layer.mlp.experts.limit = 1e9
    report_diff("no swiglu clamp", logits_f32, mf.logits_of(mc, tokens))
    # gate/up de-interleaved the other way (rows [0, F) gate, [F, 2F) up) must differ
    sw = {}
    for k, v in sd.items():
        if k.endswith("experts.gate_up_proj") or k.endswith("experts.gate_up_proj_bias"):
            f = v.shape[-1] // 2
            g, u = v[..., :f], v[..., f:]
            v = torch.stack((g, u), -1).reshape(v.shape)  # reinterpret halves as interleaved
        sw[k] = v
    report_diff("gate/up read as halves instead of interleaved", logits_f32,
                mf.logits_of(mf.with_weights(model, sw), tokens))


# ---------------------------------------------------------------- write ----

def hub_config(saved, torch_dtype, quant):
    """transformers-5 config dict -> openai/gpt-oss-20b config.json layout."""
    c = dict(saved)
    rp = dict(c.pop("rope_parameters"))
    assert rp == ROPE_PARAMETERS, rp
    theta = rp.pop("rope_theta")
    assert theta == ROPE_THETA
    c["rope_theta"] = ROPE_THETA  # int, like the hub
    c["rope_scaling"] = dict(sorted(rp.items()))
    assert c.pop("swiglu_alpha") == 1.702  # transformers 5 only; hub configs predate it
    dtype = c.pop("dtype")
    if torch_dtype is not None:
        assert dtype == torch_dtype, (dtype, torch_dtype)
        c["torch_dtype"] = dtype
    c["experts_per_token"] = c["num_experts_per_tok"]  # hub extras (unused by transformers)
    c["initial_context_length"] = rp["original_max_position_embeddings"]
    if quant:
        c["quantization_config"] = copy.deepcopy(HUB_QUANT)
    return dict(sorted(c.items()))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_f32(model, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    files = sorted(os.listdir(d))
    assert files == ["config.json", "model.safetensors"], files
    saved = load_file(os.path.join(d, "model.safetensors"))
    sd = model.state_dict()
    assert sorted(saved) == sorted(sd), sorted(set(saved) ^ set(sd))
    for k, v in sd.items():
        assert saved[k].dtype == torch.float32 and torch.equal(saved[k], v), k
    for k, shp in SHAPES.items():
        assert tuple(saved[k].shape) == shp, (k, tuple(saved[k].shape))
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    write_json(path, hub_config(cfg, "float32", quant=False))


def shard_of(name):
    return mf.shard_of(name, N_LAYERS)


def write_mxfp4(model, sd_bf16, packed, d):
    """hub layout: bf16 everything but the expert matrices (uint8 blocks /
    scales), 3 shards named like openai/gpt-oss-20b (model-0000{0,1,2}-of-00002)."""
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    tensors = {k: v for k, v in sd_bf16.items() if not is_expert_mat(k)}
    tensors.update(packed)
    assert all(v.dtype == torch.bfloat16 for k, v in tensors.items() if k not in packed)
    assert all(v.dtype == torch.uint8 for v in packed.values())
    nshards = 3
    shards = [dict() for _ in range(nshards)]
    for name in sorted(tensors):
        shards[shard_of(name)][name] = tensors[name].contiguous()
    weight_map, total = {}, 0
    for i, sh in enumerate(shards):
        fname = f"model-{i:05d}-of-{nshards - 1:05d}.safetensors"
        save_file(sh, os.path.join(d, fname), metadata={"format": "pt"})
        for k, v in sh.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    cfg = copy.deepcopy(model.config)
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(d)
    path = os.path.join(d, "config.json")
    with open(path) as f:
        c = json.load(f)
    write_json(path, hub_config(c, None, quant=True))


def load(d, **kw):
    return GptOssForCausalLM.from_pretrained(d, attn_implementation="eager", **kw).eval()


def check_loaded(m, eos):
    assert isinstance(m, GptOssForCausalLM)
    assert m.config.eos_token_id == eos
    rp = m.config.rope_parameters
    assert {k: rp[k] for k in ROPE_PARAMETERS} == ROPE_PARAMETERS, rp
    assert m.config.layer_types == ["sliding_attention", "full_attention"] * (N_LAYERS // 2)
    assert m.config.sliding_window == SLIDING_WINDOW and m.config.swiglu_limit == 7.0
    assert m.config.swiglu_alpha == 1.702 and m.config.num_local_experts == 8
    assert m.model.rotary_emb.attention_scaling == 0.1 * math.log(4.0) + 1.0


# ----------------------------------------------------------------- main ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    root = os.path.join(args.out, NAME)
    os.makedirs(root, exist_ok=True)

    model = build_model()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert len(sd) == N_TENSORS, len(sd)
    for k, shp in SHAPES.items():
        assert tuple(sd[k].shape) == shp, (k, tuple(sd[k].shape))
    quantized = sorted(k for k in sd if is_quantized(k))
    assert len(quantized) == 2 + N_LAYERS * 6, quantized

    greedy, eos, greedy_until_eos = mf.greedy_and_eos(model)

    tokens = PROMPT + greedy[: N_NEW - 1]
    assert len(tokens) > SLIDING_WINDOW
    logits_f32 = mf.logits_of(model, tokens)
    assert logits_f32.argmax(-1)[len(PROMPT) - 1:].tolist() == greedy

    # bf16-rounded weights, computed in f32.
    bf16 = mf.fused_bf16_tensors(sd)
    sd_bf16_up = {k: v.float() for k, v in bf16.items()}
    logits_bf16 = mf.logits_of(mf.with_weights(model, sd_bf16_up), tokens)

    # MXFP4 experts (from the f32 weights), everything else bf16.
    packed, deq = mxfp4_tensors(sd)
    sd_mxfp4 = {k: (deq[k] if k in deq else v) for k, v in sd_bf16_up.items()}
    logits_mxfp4 = mf.logits_of(mf.with_weights(model, sd_mxfp4), tokens)

    sim_kl, sim_top1 = {}, {}
    for kind in ("f16", "int8", "int4"):
        lq = mf.logits_of(mf.with_weights(model, fake_quant_state(sd, kind)), tokens)
        sim_kl[kind], sim_top1[kind] = mf.kl_top1(logits_f32, lq)

    # f32 checkpoint, then reload check.
    f32_dir = os.path.join(root, "f32")
    write_f32(model, f32_dir)
    m = load(f32_dir, dtype=torch.float32)
    check_loaded(m, eos)
    loaded = m.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    got = mf.logits_of(m, tokens)
    assert torch.equal(got, logits_f32), (got - logits_f32).abs().max()

    # bf16 checkpoint (sharded, transformers-5 config), then reload check.
    bf16_dir = os.path.join(root, "bf16")
    mff.write_bf16(model, {"rope_parameters": ROPE_PARAMETERS, "rope_theta": float(ROPE_THETA)}, bf16, bf16_dir)
    m = load(bf16_dir, dtype=torch.float32)
    check_loaded(m, eos)
    loaded = m.state_dict()
    for k, v in sd_bf16_up.items():
        assert torch.equal(loaded[k], v), k
    got = mf.logits_of(m, tokens)
    assert torch.equal(got, logits_bf16), (got - logits_bf16).abs().max()
    m = load(bf16_dir)
    assert m.dtype == torch.bfloat16, m.dtype
    del m

    # mxfp4 checkpoint (hub layout), then reload check with transformers' own
    # dequantization (Mxfp4Dequantize -> convert_moe_packed_tensors). On CPU
    # without use_kernels the quantizer dequantizes anyway; dequantize=True is
    # passed explicitly so that validate_environment does not require
    # accelerate / triton / kernels.
    mx_dir = os.path.join(root, "mxfp4")
    write_mxfp4(model, bf16, packed, mx_dir)
    m = load(mx_dir, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True))
    check_loaded(m, eos)
    qc = GptOssConfig.from_pretrained(mx_dir).quantization_config
    assert qc == HUB_QUANT, qc
    assert not hasattr(m.config, "quantization_config")  # dropped: the model is dequantized
    assert type(m.model.layers[0].mlp).__name__ == "GptOssMLP"  # not the triton Mxfp4GptOssMLP
    loaded = m.state_dict()
    assert sorted(loaded) == sorted(sd_mxfp4), sorted(set(loaded) ^ set(sd_mxfp4))
    for k, v in sd_mxfp4.items():
        assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v), k
    got = mf.logits_of(m, tokens)
    assert torch.equal(got, logits_mxfp4), (got - logits_mxfp4).abs().max()
    del m

    mf.write_reference(root, greedy, eos, greedy_until_eos, tokens, logits_f32, logits_bf16,
                       sim_kl, sim_top1, logits_mxfp4=logits_mxfp4.tolist())

    # Summary.
    print(f"== {NAME}")
    print(f"greedy            {greedy}")
    print(f"eos_token_id      {eos}  (greedy_until_eos has {len(greedy_until_eos)} tokens)")
    kl_b, t1_b = mf.kl_top1(logits_f32, logits_bf16)
    print(f"bf16 vs f32       kl={kl_b:.3e} top1={t1_b:.3f}")
    kl_m, t1_m = mf.kl_top1(logits_f32, logits_mxfp4)
    print(f"mxfp4 vs f32      kl={kl_m:.3e} top1={t1_m:.3f}")
    for kind in ("f16", "int8", "int4"):
        print(f"sim {kind:5s}         kl={sim_kl[kind]:.3e} top1={sim_top1[kind]:.3f}")
    for k in ("model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"):
        rel = ((deq[k] - sd[k]).norm() / sd[k].norm()).item()
        sc = packed[k + "_scales"].int() - 127
        print(f"mxfp4 {k.split('.')[-1]:13s} rel. error {rel:.3f}, scale exponents "
              f"[{sc.min().item()}, {sc.max().item()}], blocks {tuple(packed[k + '_blocks'].shape)}")
    run_checks(model, sd, tokens, logits_f32)
    routing_margins(model, {"f32": sd, "bf16": sd_bf16_up, "mxfp4": sd_mxfp4}, tokens)
    total = 0
    for dirpath, _, files in sorted(os.walk(root)):
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            sz = os.path.getsize(p)
            total += sz
            print(f"{sz:>10d}  {os.path.relpath(p, args.out)}")
    print(f"{total:>10d}  total")


if __name__ == "__main__":
    main()
