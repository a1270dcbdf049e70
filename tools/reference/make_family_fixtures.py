#!/usr/bin/env python3
"""Build tiny random Qwen3-MoE, OLMoE, Llama, GraniteMoE(-Shared), Qwen2-MoE, HunYuan-MoE, Phi-MoE and DeepSeek-V2/V3 models and write conformance fixtures.

Run from the repo root:

    python3 tools/reference/make_family_fixtures.py [--out tests/fixtures] [--family NAME ...]

(--family is repeatable, e.g. --family hunyuanmoe-tiny --family
granitemoeshared-tiny; default: every family. Every family re-seeds torch
with 0, so its files do not depend on which other families are built.)

Companion of make_fixtures.py (Mixtral): same outputs, same meanings, same
fake-quantization spec and rounding (its helpers are imported, not copied),
same prompt / greedy / eos rule. Writes, for each family, under
<out>/<family>-tiny/ (the f32/bf16 descriptions below are for the MoE
families with per-expert names; llama-tiny, granitemoe-tiny and
granitemoeshared-tiny differ as described under "Families"):

  f32/            `save_pretrained` output in float32, single model.safetensors,
                  per-expert tensor names as transformers 5 saves them
                  (model.layers.L.mlp.experts.E.gate_proj/up_proj/down_proj.weight,
                  router model.layers.L.mlp.gate.weight).
                  qwen3moe: config.json rewritten to the hub's older style
                  (top-level "rope_theta", "rope_scaling": null, no
                  "rope_parameters", "torch_dtype" instead of "dtype"), like the
                  Mixtral f32 folder, and "num_experts" instead of the
                  "num_local_experts" that transformers 5.24 writes (bf16/ keeps
                  "num_local_experts").
                  olmoe: config.json kept exactly as transformers saves it
                  ("rope_parameters", "dtype").
  bf16/           the same weights rounded to bfloat16 in the fused
                  transformers-5 layout (model.layers.L.mlp.experts.gate_up_proj
                  (E, 2F, H), .down_proj (E, H, F), .mlp.gate.weight (E, H)),
                  sharded into 3 safetensors files + model.safetensors.index.json,
                  transformers-5 config.json ("rope_parameters", dtype bfloat16).
                  Loading it with from_pretrained(dtype=float32) is checked to
                  reproduce the bf16 reference logits exactly.
  reference.json  prompt, greedy continuation (eos ignored), chosen eos id,
                  greedy truncated at eos, per-position logits of the f32 model
                  and of the bf16-rounded weights (computed in f32), and the
                  KL / top-1 agreement of fake-quantized (f16/int8/int4) models
                  against f32.

Families:
  qwen3moe-tiny   Qwen3MoeForCausalLM: head_dim 24 (!= hidden/heads = 16),
                  per-head q_norm/k_norm (weights [head_dim]) applied before rope,
                  8 experts, top-2, moe_intermediate_size 80, norm_topk_prob=True,
                  rope_theta 1e6 (set explicitly; transformers 5.24's default is 1e4).
  olmoe-tiny      OlmoeForCausalLM: GQA 4/2 heads, head_dim 16, q_norm over the
                  whole q projection (weight [hidden]) and k_norm over the whole k
                  projection (weight [kv_heads*head_dim]) applied before the
                  per-head reshape and rope, 16 experts, top-4, intermediate 48
                  (not a multiple of 32: down_proj rows end in a zero-padded
                  block), norm_topk_prob=False, rope_theta 1e4 (default).

  llama-tiny      LlamaForCausalLM (dense, Llama 3.1 style): GQA 4/2 heads,
                  head_dim 16, intermediate 80 (mlp.gate_proj/up_proj/down_proj),
                  rope_theta 5e5 with "llama3" rope scaling (factor 8,
                  low_freq_factor 1, high_freq_factor 4,
                  original_max_position_embeddings 16 -- deliberately small so
                  that at head_dim 16 one frequency is smoothed and the other
                  seven are divided by 8; checked against an unscaled copy).
                  f32/: single model.safetensors (dense names, as saved by
                  transformers), config.json in the hub's older layout
                  (top-level "rope_theta", "rope_scaling": {"rope_type":
                  "llama3", ...}, "torch_dtype"). bf16/: same names, 3 shards,
                  transformers-5 config ("rope_parameters", dtype bfloat16).
  granitemoe-tiny GraniteMoeForCausalLM: GQA 4/2 heads, head_dim 16, 8 experts,
                  top-2 (top-k of router logits, softmax over the k kept),
                  intermediate 80, embedding_multiplier 3, residual_multiplier
                  0.5, attention_multiplier 0.2 (the attention scale, replacing
                  1/sqrt(head_dim)), logits_scaling 4 (logits divided by it),
                  rope_theta 1e4 (transformers 5.24's default).
                  f32/: single model.safetensors with the hub (pre-transformers-5)
                  names save_pretrained writes: block_sparse_moe.router.layer.weight
                  (E, H), block_sparse_moe.input_linear.weight (E, 2F, H; rows
                  [0, F) gate, [F, 2F) up), block_sparse_moe.output_linear.weight
                  (E, H, F); config.json in the hub's older layout (top-level
                  "rope_theta", "rope_scaling": null, "torch_dtype").
                  bf16/: transformers-5 in-memory names
                  block_sparse_moe.router.weight, block_sparse_moe.experts.gate_up_proj,
                  block_sparse_moe.experts.down_proj (same shapes), 3 shards,
                  transformers-5 config ("rope_parameters", dtype bfloat16).
  qwen2moe-tiny   Qwen2MoeForCausalLM (Qwen1.5-MoE / Qwen2-57B-A14B style): GQA 4/2
                  heads, head_dim 16, q/k/v_proj WITH biases (config "qkv_bias";
                  o_proj has none), 8 routed experts, top-2 of the softmax over all
                  experts, norm_topk_prob=False (weights not renormalised),
                  moe_intermediate_size 48 (down_proj rows end in a zero-padded
                  block), plus a shared expert (mlp.shared_expert.gate_proj/up_proj/
                  down_proj, shared_expert_intermediate_size 96) whose output is
                  scaled by sigmoid(mlp.shared_expert_gate (1, H) . x) and added to
                  the routed sum; rope_theta 1e6 (set explicitly).
                  f32/: per-expert names like qwen3moe (mlp.experts.E.gate_proj/
                  up_proj/down_proj.weight, router mlp.gate.weight), config.json in
                  the hub's older layout (top-level "rope_theta", "rope_scaling":
                  null, "torch_dtype") and, like the hub's Qwen1.5-MoE configs,
                  without "qkv_bias" (transformers defaults it to true; checked on
                  reload). bf16/: fused experts, 3 shards, transformers-5 config
                  ("rope_parameters", dtype bfloat16, "qkv_bias": true).
  hunyuanmoe-tiny HunYuanMoEV1ForCausalLM (Hunyuan-A13B style): GQA 4/2 heads,
                  head_dim 24 (!= hidden/heads = 16), no biases, per-head
                  self_attn.query_layernorm/key_layernorm (weights [head_dim])
                  applied AFTER rope (the opposite of Qwen3-MoE; checked to
                  matter), 8 experts, top-2 of the softmax over all experts,
                  renormalised (router mlp.gate.wg.weight (E, H), kept and run in
                  f32 by transformers even in a bf16 model), intermediate_size 48
                  for the routed experts AND the always-on shared MLP
                  (mlp.shared_mlp.gate_proj/up_proj/down_proj; added to the routed
                  sum unscaled, no gate), rope_theta 1e4 default rope (set
                  explicitly; the hub's A13B uses "dynamic" alpha scaling).
                  config: "num_experts" 8 and "moe_topk" 2 as ints (the hub
                  also allows per-layer lists).
                  f32/: per-expert names as transformers 5 saves them (the
                  Tencent checkpoints' layout): mlp.experts.E.gate_proj/up_proj/
                  down_proj.weight; config.json in the hub's older layout
                  (top-level "rope_theta", "rope_scaling": null, "torch_dtype").
                  bf16/: fused experts, 3 shards, transformers-5 config.
  granitemoeshared-tiny
                  GraniteMoeSharedForCausalLM: granitemoe-tiny (same multipliers,
                  names, f32/ and bf16/ layouts) plus a per-layer shared MLP,
                  shared_intermediate_size 40 (!= the experts' 80):
                  model.layers.L.shared_mlp.input_linear.weight (2S, H; rows
                  [0, S) gate, [S, 2S) up, like the experts' input_linear) and
                  shared_mlp.output_linear.weight (H, S), same names in f32/ and
                  bf16/. It sees the same post_attention_layernorm output as the
                  routed experts and is added to their sum before the
                  residual_multiplier.
  phimoe-tiny     PhimoeForCausalLM (Phi-3.5-MoE style): GQA 4/2 heads, head_dim
                  16, biases on q/k/v/o_proj, LayerNorm (weight AND bias, eps =
                  "rms_norm_eps" 1e-5) for input_layernorm,
                  post_attention_layernorm and the final norm, lm_head with a
                  bias ("lm_head_bias"), all biases 0.1 * randn (a runtime
                  ignoring any of them fails; checked). 8 experts,
                  intermediate_size 48, sparsemixer routing (always top-2; see
                  sparsemixer_inference: per stage the experts more than
                  2 * router_jitter_noise = 0.02 (relative) below the stage's best
                  are masked and the weight is the softmax over the rest, taken
                  at the best; the two weights are not renormalised). The router
                  rows share a common direction so that the masking keeps between 1
                  and 5 candidates per stage (counts are printed), embed_tokens
                  is 0.5 * randn (see PHIMOE_EMBED_STD). Rope: rope_theta 1e4,
                  "longrope" with original_max_position_embeddings 64 (above every
                  fixture position), so inv_freq[i] = 1 / (short_factor[i] *
                  theta^(2i/16)) and cos/sin are multiplied by short_mscale 1.1;
                  long_factor / long_mscale 1.2 are present but unused.
                  Checked to matter each: the LayerNorm biases, the lm_head bias,
                  sparsemixer vs plain top-2 renormalised, longrope vs plain rope.
                  f32/: the hub's (Mixtral-style) names, as save_pretrained writes
                  them: block_sparse_moe.experts.E.w1/w3/w2.weight (gate (F, H), up
                  (F, H), down (H, F)), router block_sparse_moe.gate.weight (E, H);
                  config.json in the hub's older layout (top-level "rope_theta",
                  "rope_scaling" {"type": "longrope", short_factor, long_factor,
                  short_mscale, long_mscale, original_max_position_embeddings},
                  "torch_dtype"; top-level "original_max_position_embeddings"
                  as transformers writes it). bf16/: transformers-5 names
                  mlp.router.weight, mlp.experts.gate_up_proj (E, 2F, H),
                  mlp.experts.down_proj (E, H, F), 3 shards, transformers-5 config
                  ("rope_parameters" with "rope_type": "longrope", dtype bfloat16).
  deepseekv2-tiny DeepseekV2ForCausalLM: MLA attention, 4 heads, q_lora_rank None
                  (self_attn.q_proj (4 * (16 + 8), H)), kv_lora_rank 32,
                  qk_nope_head_dim 16, qk_rope_head_dim 8, v_head_dim 24 (!= nope):
                  kv_a_proj_with_mqa (32 + 8, H) -> [latent | k_pe],
                  kv_a_layernorm (32) on the latent, kv_b_proj (4 * (16 + 24), 32),
                  per head rows [k_nope | v]; o_proj (H, 4 * 24). q_pe/k_pe are
                  rotated as interleaved pairs (x[2i], x[2i+1]) (complex multiply).
                  Layer 0 dense (first_k_dense_replace 1: mlp.gate_proj/up_proj/
                  down_proj, intermediate_size 96), layers 1-2 MoE: 8 routed experts
                  (moe_intermediate_size 48), softmax over all, topk_method
                  "group_limited_greedy" (n_group 4, topk_group 2: group score =
                  max probability in the group, other groups' probabilities set to
                  0), top-3, norm_topk_prob False (transformers' V2 router ignores
                  it anyway; checked), weights * routed_scaling_factor 2.0; plus
                  mlp.shared_experts (n_shared_experts 2 -> one MLP of width 96),
                  added unscaled. YaRN: rope_theta 20 (see DSV2_ROPE for why not
                  1e4), factor 4, original_max_position_embeddings 32, beta_fast 32,
                  beta_slow 1, mscale = mscale_all_dim = 0.707: of the 4 rope
                  frequencies 1 kept, 2 blended, 1 divided by 4; attention_factor
                  1.0; softmax scale (16 + 8)^-0.5 * (1 + 0.0707 ln 4)^2.
                  Checked: the group limit changes routing decisions vs plain top-3
                  (counts printed), and the group limit, yarn inv_freq, the mscale^2
                  softmax scale and the shared experts each change the logits.
                  f32/: per-expert names (mlp.experts.E.gate_proj/up_proj/
                  down_proj.weight, router mlp.gate.weight), config.json in the
                  hub's older layout (top-level "rope_theta", "rope_scaling"
                  {"type": "yarn", factor, original_max_position_embeddings,
                  mscale, mscale_all_dim, beta_fast, beta_slow}, "torch_dtype"),
                  without the derived "head_dim" (= qk_rope_head_dim) and
                  "qk_head_dim" transformers writes, plus the hub's "scoring_func":
                  "softmax" and "moe_layer_freq": 1. bf16/: fused experts, 3
                  shards, transformers-5 config ("rope_parameters", "head_dim": 8,
                  "qk_head_dim": 24, dtype bfloat16).
  deepseekv3-tiny DeepseekV3ForCausalLM: MLA as deepseekv2-tiny but q_lora_rank 24
                  (q_a_proj (24, H) -> q_a_layernorm (24) -> q_b_proj (4 * (16 + 8),
                  24)) and v_head_dim 16 (kv_b_proj (4 * (16 + 16), 32), o_proj (H,
                  64)); rope_interleave True (transformers' default: q_pe/k_pe taken
                  as interleaved pairs, the rotated result written as halves, the
                  same for q and k, so q.k equals the pairwise rotation; False
                  checked to differ). Layer 0 dense (intermediate_size 96), layers
                  1-2 MoE: 16 routed experts (48), noaux_tc routing: s =
                  sigmoid(router logits), choice = s + mlp.gate.e_score_correction_bias
                  (0.1 * randn here; transformers initialises it to 0),
                  group score = sum of the 2 best choice values (n_group 4,
                  topk_group 2, other groups -inf), top-4 of choice, weights = the
                  unbiased s, renormalised (norm_topk_prob True, + 1e-20), *
                  routed_scaling_factor 2.5; one shared expert (48) added unscaled.
                  YaRN: rope_theta 100, factor 4, original_max_position_embeddings
                  32, mscale = mscale_all_dim = 1.0 (the hub's): 1 frequency kept, 1
                  blended, 2 divided by 4; softmax scale (16 + 8)^-0.5 * (1 + 0.1 ln
                  4)^2. Checked: the group limit and the bias each change routing
                  decisions (counts printed) and the logits, as do
                  norm_topk_prob, rope_interleave, yarn, mscale^2, shared expert.
                  f32/: per-expert names as deepseekv2-tiny plus
                  mlp.gate.e_score_correction_bias (E), and, like the hub
                  checkpoint, a multi-token-prediction layer model.layers.3.*
                  (layer index num_hidden_layers: enorm, hnorm, eh_proj (H, 2H),
                  embed_tokens, shared_head.norm/head, and a MoE layer's attention,
                  norms, router, bias and shared expert, no routed experts; random)
                  that transformers does not load and a converter must ignore.
                  config.json in the hub's (deepseek-ai/DeepSeek-V3) layout:
                  top-level "rope_theta", "rope_scaling" {"type": "yarn", ...},
                  "torch_dtype", "num_nextn_predict_layers": 1, "scoring_func":
                  "sigmoid", "topk_method": "noaux_tc", "moe_layer_freq": 1; no
                  "head_dim", "qk_head_dim" or "rope_interleave" (defaults to true;
                  checked on reload). bf16/: fused experts, bias in bf16 like every
                  tensor, 3 shards, no MTP layer, transformers-5 config
                  ("rope_parameters", "rope_interleave": true, "head_dim": 8,
                  "qk_head_dim": 24, dtype bfloat16).

Fake quantization: exactly make_fixtures.py's (quantized: embed_tokens,
q/k/v/o_proj, every expert / dense MLP matrix, lm_head; NOT quantized: the
router (mlp.gate.weight; GraniteMoE block_sparse_moe.router.weight) and every
norm, including q_norm/k_norm). Qwen2-MoE additionally quantizes the shared
expert's gate_proj/up_proj/down_proj and leaves mlp.shared_expert_gate.weight and
the q/k/v biases unquantized. HunYuan-MoE leaves its router
mlp.gate.wg.weight unquantized and quantizes the shared MLP's gate_proj/up_proj/
down_proj; GraniteMoeShared quantizes shared_mlp.input_linear/output_linear.
Phi-MoE leaves its router mlp.router.weight and every bias (q/k/v/o_proj,
LayerNorm, lm_head) unquantized. DeepSeek-V2/V3 leave the router
mlp.gate.weight, mlp.gate.e_score_correction_bias (V3) and every norm
(kv_a_layernorm, q_a_layernorm, ...) unquantized and quantize every other
weight: q_proj / q_a_proj / q_b_proj, kv_a_proj_with_mqa, kv_b_proj (in its HF
layout [heads * (nope + v), kv_lora]), o_proj, routed, shared and dense MLP
matrices, embed_tokens, lm_head.

Deterministic: torch seeded with 0, single-threaded CPU float32.
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    GraniteMoeConfig,
    GraniteMoeForCausalLM,
    GraniteMoeSharedConfig,
    GraniteMoeSharedForCausalLM,
    HunYuanMoEV1Config,
    HunYuanMoEV1ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    PhimoeConfig,
    PhimoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

sys.dont_write_bytecode = True  # keep tools/reference/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (shared Mixtral helpers; unchanged)

PROMPT = mf.PROMPT
N_NEW = mf.N_NEW


# ------------------------------------------------------------- families ----

def qwen3moe_config():
    return Qwen3MoeConfig(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=80,
        intermediate_size=160,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=1,
    )


def olmoe_config():
    return OlmoeConfig(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=16,
        num_experts_per_tok=4,
        intermediate_size=48,
        norm_topk_prob=False,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        clip_qkv=None,
        bos_token_id=1,
        pad_token_id=None,  # OlmoeConfig defaults to 1 (== our bos); keep it unset like Mixtral
        eos_token_id=None,  # default 50279 is out of vocab; the chosen eos is set later
    )


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


def llama_config(rope_parameters=None):
    if rope_parameters is None:
        rope_parameters = {"rope_theta": 500000.0, **LLAMA3_ROPE}
    return LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters=rope_parameters,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=None,  # the chosen eos is set later
    )


def granitemoe_config(config_cls=GraniteMoeConfig, **extra):
    return config_cls(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
        embedding_multiplier=3.0,
        residual_multiplier=0.5,
        attention_multiplier=0.2,
        logits_scaling=4.0,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=1,
        eos_token_id=None,  # default 2; the chosen eos is set later
        **extra,
    )


def granitemoeshared_config():
    # granitemoe-tiny plus a shared MLP narrower than the routed experts (40 vs
    # 80; 40 is not a multiple of 32 either).
    return granitemoe_config(GraniteMoeSharedConfig, shared_intermediate_size=40)


def hunyuanmoe_config():
    return HunYuanMoEV1Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=48,  # routed experts AND the shared MLP
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        num_experts=8,  # int, not the hub's per-layer list form
        moe_topk=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4},
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=1,
        pad_token_id=None,  # default 0 (a real token here); keep it unset like Mixtral
        eos_token_id=None,  # default 2; the chosen eos is set later
    )


def qwen2moe_config():
    return Qwen2MoeConfig(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=48,
        shared_expert_intermediate_size=96,
        intermediate_size=96,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        qkv_bias=True,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=1,
        eos_token_id=None,  # the chosen eos is set later
    )


# Phi-3.5-MoE style "longrope": short_factor / short_mscale apply while
# max(position_ids) + 1 <= original_max_position_embeddings (64 here, above
# every fixture sequence); the long_* values are only there to be ignored.
PHIMOE_ROPE = {
    "rope_type": "longrope",
    "short_factor": [1.0, 1.05, 1.12, 1.18, 1.25, 1.33, 1.41, 1.5],
    "long_factor": [1.0, 1.3, 1.8, 2.5, 3.4, 4.6, 6.2, 8.0],
    "short_mscale": 1.1,
    "long_mscale": 1.2,
    "original_max_position_embeddings": 64,
}
# Router rows: a direction shared by all experts (scale PHIMOE_ROUTER_SHARED)
# plus per-expert noise (PHIMOE_ROUTER_SPREAD), so the router logits are
# large (|max| ~ 10) with a relative spread of a few percent -- the same order
# as sparsemixer's relative threshold 2 * router_jitter_noise = 0.02. With the
# usual 0.08 * randn rows (|logits| < 1, spread ~0.6) nearly every expert but
# the selected one is masked at nearly every position (all weights 1.0), which
# would not tell a correct sparsemixer from "weights = 1".
PHIMOE_ROUTER_SHARED = 2.0
PHIMOE_ROUTER_SPREAD = 0.08
# embed_tokens 0.5 * randn instead of 0.08: with 0.08 the (nonzero) attention
# and LayerNorm biases add a position-independent part to the residual stream
# that swamps the token signal, and greedy decoding collapses onto one token
# (no usable eos).
PHIMOE_EMBED_STD = 0.5


def phimoe_config(rope_parameters=None):
    if rope_parameters is None:
        rope_parameters = {"rope_theta": 1e4, **PHIMOE_ROPE}
    return PhimoeConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,  # the LayerNorm eps
        rope_parameters=rope_parameters,  # theta 1e4 like the hub (5.24's default is 1e6)
        router_jitter_noise=0.01,  # sparsemixer's jitter_eps (Phi-3.5-MoE's value)
        input_jitter_noise=0.0,
        attention_bias=True,
        lm_head_bias=True,
        tie_word_embeddings=False,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=None,  # default 2; the chosen eos is set later
    )


def phimoe_init(name, p):
    """Phi-MoE parameters that build_model's default init does not cover:
    every bias (q/k/v/o_proj, the three LayerNorms, lm_head) 0.1 * randn, so a
    runtime ignoring any of them fails, the router (see
    PHIMOE_ROUTER_SHARED) and the embeddings (PHIMOE_EMBED_STD). Returns False
    for the rest (default init)."""
    if name == "model.embed_tokens.weight":
        p.copy_(PHIMOE_EMBED_STD * torch.randn_like(p))
        return True
    if name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
        return True
    if name.endswith("mlp.router.weight"):
        shared = torch.randn(1, p.shape[1])
        p.copy_(PHIMOE_ROUTER_SHARED * shared + PHIMOE_ROUTER_SPREAD * torch.randn_like(p))
        return True
    return False


def phimoe_is_quantized(name):
    # make_fixtures.is_quantized, with Phi-MoE's router name; every bias
    # (attention, LayerNorm, lm_head) stays f32.
    if "norm" in name or name.endswith(("mlp.router.weight", ".bias")):
        return False
    return True


def qwen2moe_is_quantized(name):
    # make_fixtures.is_quantized, plus: the shared expert's scalar gate and the
    # q/k/v biases stay f32 (the shared expert's gate/up/down_proj are quantized).
    if name.endswith(("mlp.shared_expert_gate.weight", ".bias")):
        return False
    return mf.is_quantized(name)


def hunyuanmoe_is_quantized(name):
    # make_fixtures.is_quantized, with HunYuan's router name (the shared MLP's
    # gate/up/down_proj are quantized; query/key_layernorm are norms).
    if "norm" in name or name.endswith("mlp.gate.wg.weight"):
        return False
    return True


def granitemoe_is_quantized(name):
    # make_fixtures.is_quantized, with GraniteMoE's router name.
    if "norm" in name or name.endswith("block_sparse_moe.router.weight"):
        return False
    return True


# transformers-5 in-memory name -> name save_pretrained writes (hub layout)
GRANITE_F32_RENAMES = [
    ("block_sparse_moe.router.weight", "block_sparse_moe.router.layer.weight"),
    ("block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.input_linear.weight"),
    ("block_sparse_moe.experts.down_proj", "block_sparse_moe.output_linear.weight"),
]

FAMILIES = [
    {
        "name": "qwen3moe-tiny",
        "cls": Qwen3MoeForCausalLM,
        "config": qwen3moe_config,
        "rope_theta": 1e6,
        "old_style_f32_config": True,
        # transformers 5.24 serialises Qwen3MoeConfig.num_experts as
        # "num_local_experts" (attribute_map); hub Qwen3-MoE configs say
        # "num_experts". f32 gets the hub spelling, bf16 keeps 5.24's.
        "f32_config_renames": {"num_local_experts": "num_experts"},
        # name -> shape, checked in the in-memory (fused) state dict
        "shapes": {
            "model.embed_tokens.weight": (256, 64),
            "model.layers.0.self_attn.q_proj.weight": (96, 64),
            "model.layers.0.self_attn.k_proj.weight": (48, 64),
            "model.layers.0.self_attn.v_proj.weight": (48, 64),
            "model.layers.0.self_attn.o_proj.weight": (64, 96),
            "model.layers.0.self_attn.q_norm.weight": (24,),
            "model.layers.0.self_attn.k_norm.weight": (24,),
            "model.layers.0.mlp.gate.weight": (8, 64),
            "model.layers.0.mlp.experts.gate_up_proj": (8, 160, 64),
            "model.layers.0.mlp.experts.down_proj": (8, 64, 80),
            "lm_head.weight": (256, 64),
        },
        "f32_shapes": {
            "model.layers.0.mlp.experts.0.gate_proj.weight": (80, 64),
            "model.layers.0.mlp.experts.0.up_proj.weight": (80, 64),
            "model.layers.0.mlp.experts.0.down_proj.weight": (64, 80),
            "model.layers.2.mlp.experts.7.down_proj.weight": (64, 80),
        },
        "n_experts": 8,
        "f32_layout": "per_expert",
    },
    {
        "name": "olmoe-tiny",
        "cls": OlmoeForCausalLM,
        "config": olmoe_config,
        "rope_theta": 1e4,
        "old_style_f32_config": False,
        "shapes": {
            "model.embed_tokens.weight": (256, 64),
            "model.layers.0.self_attn.q_proj.weight": (64, 64),
            "model.layers.0.self_attn.k_proj.weight": (32, 64),
            "model.layers.0.self_attn.v_proj.weight": (32, 64),
            "model.layers.0.self_attn.o_proj.weight": (64, 64),
            "model.layers.0.self_attn.q_norm.weight": (64,),
            "model.layers.0.self_attn.k_norm.weight": (32,),
            "model.layers.0.mlp.gate.weight": (16, 64),
            "model.layers.0.mlp.experts.gate_up_proj": (16, 96, 64),
            "model.layers.0.mlp.experts.down_proj": (16, 64, 48),
            "lm_head.weight": (256, 64),
        },
        "f32_shapes": {
            "model.layers.0.mlp.experts.0.gate_proj.weight": (48, 64),
            "model.layers.0.mlp.experts.0.up_proj.weight": (48, 64),
            "model.layers.0.mlp.experts.0.down_proj.weight": (64, 48),
            "model.layers.2.mlp.experts.15.down_proj.weight": (64, 48),
        },
        "n_experts": 16,
        "f32_layout": "per_expert",
    },
    {
        "name": "llama-tiny",
        "cls": LlamaForCausalLM,
        "config": llama_config,
        "rope_theta": 500000.0,
        "rope_parameters": {"rope_theta": 500000.0, **LLAMA3_ROPE},
        # f32 config.json "rope_scaling" (hub Llama 3.1 layout)
        "f32_rope_scaling": dict(LLAMA3_ROPE),
        "old_style_f32_config": True,
        "shapes": {
            "model.embed_tokens.weight": (256, 64),
            "model.layers.0.self_attn.q_proj.weight": (64, 64),
            "model.layers.0.self_attn.k_proj.weight": (32, 64),
            "model.layers.0.self_attn.v_proj.weight": (32, 64),
            "model.layers.0.self_attn.o_proj.weight": (64, 64),
            "model.layers.0.mlp.gate_proj.weight": (80, 64),
            "model.layers.0.mlp.up_proj.weight": (80, 64),
            "model.layers.0.mlp.down_proj.weight": (64, 80),
            "model.layers.0.input_layernorm.weight": (64,),
            "model.layers.0.post_attention_layernorm.weight": (64,),
            "model.norm.weight": (64,),
            "lm_head.weight": (256, 64),
        },
        "n_tensors": 2 + 3 * 9 + 1,
        "quantized_suffixes": ("mlp.gate_proj.weight", "mlp.up_proj.weight",
                               "mlp.down_proj.weight"),
        "f32_layout": "same",
        "n_experts": None,
    },
    {
        "name": "granitemoe-tiny",
        "cls": GraniteMoeForCausalLM,
        "config": granitemoe_config,
        "rope_theta": 1e4,
        "old_style_f32_config": True,
        "is_quantized": granitemoe_is_quantized,
        "router_suffix": "block_sparse_moe.router.weight",
        "shapes": {
            "model.embed_tokens.weight": (256, 64),
            "model.layers.0.self_attn.q_proj.weight": (64, 64),
            "model.layers.0.self_attn.k_proj.weight": (32, 64),
            "model.layers.0.self_attn.v_proj.weight": (32, 64),
            "model.layers.0.self_attn.o_proj.weight": (64, 64),
            "model.layers.0.input_layernorm.weight": (64,),
            "model.layers.0.post_attention_layernorm.weight": (64,),
            "model.layers.0.block_sparse_moe.router.weight": (8, 64),
            "model.layers.0.block_sparse_moe.experts.gate_up_proj": (8, 160, 64),
            "model.layers.0.block_sparse_moe.experts.down_proj": (8, 64, 80),
            "model.norm.weight": (64,),
            "lm_head.weight": (256, 64),
        },
        "n_tensors": 2 + 3 * 9 + 1,
        "quantized_suffixes": ("block_sparse_moe.experts.gate_up_proj",
                               "block_sparse_moe.experts.down_proj"),
        "f32_layout": "renamed",
        "f32_renames": GRANITE_F32_RENAMES,
        "n_experts": 8,
        "n_experts_attr": "num_local_experts",
    },
    {
        "name": "qwen2moe-tiny",
        "cls": Qwen2MoeForCausalLM,
        "config": qwen2moe_config,
        "rope_theta": 1e6,
        "old_style_f32_config": True,
        # Hub Qwen1.5-MoE / Qwen2-MoE configs have no "qkv_bias" (older
        # transformers hard-wired q/k/v biases); drop it from f32 like the hub.
        "f32_config_drop": ["qkv_bias"],
        "is_quantized": qwen2moe_is_quantized,
        "biases": ("q_proj.bias", "k_proj.bias", "v_proj.bias"),
        "not_quantized_suffixes": ("mlp.shared_expert_gate.weight",
                                   "q_proj.bias", "k_proj.bias", "v_proj.bias"),
        "quantized_suffixes": ("experts.gate_up_proj", "experts.down_proj",
                               "mlp.shared_expert.gate_proj.weight",
                               "mlp.shared_expert.up_proj.weight",
                               "mlp.shared_expert.down_proj.weight"),
        "shapes": {
            "model.embed_tokens.weight": (256, 64),
            "model.layers.0.self_attn.q_proj.weight": (64, 64),
            "model.layers.0.self_attn.q_proj.bias": (64,),
            "model.layers.0.self_attn.k_proj.weight": (32, 64),
            "model.layers.0.self_attn.k_proj.bias": (32,),
            "model.layers.0.self_attn.v_proj.weight": (32, 64),
            "model.layers.0.self_attn.v_proj.bias": (32,),
            "model.layers.0.self_attn.o_proj.weight": (64, 64),
            "model.layers.0.input_layernorm.weight": (64,),
            "model.layers.0.post_attention_layernorm.weight": (64,),
            "model.layers.0.mlp.gate.weight": (8, 64),
            "model.layers.0.mlp.experts.gate_up_proj": (8, 96, 64),
            "model.layers.0.mlp.experts.down_proj": (8, 64, 48),
            "model.layers.0.mlp.shared_expert.gate_proj.weight": (96, 64),
            "model.layers.0.mlp.shared_expert.up_proj.weight": (96, 64),
            "model.layers.0.mlp.shared_expert.down_proj.weight": (64, 96),
            "model.layers.0.mlp.shared_expert_gate.weight": (1, 64),
            "model.norm.weight": (64,),
            "lm_head.weight": (256, 64),
        },
        # per layer: 4 attn weights + 3 biases + 2 norms + router + 2 fused
        # experts + 3 shared expert + shared_expert_gate
        "n_tensors": 2 + 3 * 16 + 1,
        "f32_shapes": {
            "model.layers.0.mlp.experts.0.gate_proj.weight": (48, 64),
            "model.layers.0.mlp.experts.0.up_proj.weight": (48, 64),
            "model.layers.0.mlp.experts.0.down_proj.weight": (64, 48),
            "model.layers.2.mlp.experts.7.down_proj.weight": (64, 48),
        },
        "n_experts": 8,
        "f32_layout": "per_expert",
    },
    {
        "name": "hunyuanmoe-tiny",
        "cls": HunYuanMoEV1ForCausalLM,
        "config": hunyuanmoe_config,
        "rope_theta": 1e4,
        "old_style_f32_config": True,
        "is_quantized": hunyuanmoe_is_quantized,
        "router_suffix": "mlp.gate.wg.weight",
        "quantized_suffixes": ("experts.gate_up_proj", "experts.down_proj",
                               "mlp.shared_mlp.gate_proj.weight",
                               "mlp.shared_mlp.up_proj.weight",
                               "mlp.shared_mlp.down_proj.weight"),
        "shapes": {
            "model.embed_tokens.weight": (256, 64),
            "model.layers.0.self_attn.q_proj.weight": (96, 64),
            "model.layers.0.self_attn.k_proj.weight": (48, 64),
            "model.layers.0.self_attn.v_proj.weight": (48, 64),
            "model.layers.0.self_attn.o_proj.weight": (64, 96),
            "model.layers.0.self_attn.query_layernorm.weight": (24,),
            "model.layers.0.self_attn.key_layernorm.weight": (24,),
            "model.layers.0.input_layernorm.weight": (64,),
            "model.layers.0.post_attention_layernorm.weight": (64,),
            "model.layers.0.mlp.gate.wg.weight": (8, 64),
            "model.layers.0.mlp.experts.gate_up_proj": (8, 96, 64),
            "model.layers.0.mlp.experts.down_proj": (8, 64, 48),
            "model.layers.0.mlp.shared_mlp.gate_proj.weight": (48, 64),
            "model.layers.0.mlp.shared_mlp.up_proj.weight": (48, 64),
            "model.layers.0.mlp.shared_mlp.down_proj.weight": (64, 48),
            "model.norm.weight": (64,),
            "lm_head.weight": (256, 64),
        },
        # per layer: 4 attn weights + query/key_layernorm + 2 norms + router +
        # 2 fused experts + 3 shared MLP
        "n_tensors": 2 + 3 * 14 + 1,
        "f32_shapes": {
            "model.layers.0.mlp.experts.0.gate_proj.weight": (48, 64),
            "model.layers.0.mlp.experts.0.up_proj.weight": (48, 64),
            "model.layers.0.mlp.experts.0.down_proj.weight": (64, 48),
            "model.layers.2.mlp.experts.7.down_proj.weight": (64, 48),
        },
        "n_experts": 8,
        "f32_layout": "per_expert",
    },
]

# granitemoeshared-tiny: granitemoe-tiny plus the per-layer shared MLP
# (outside block_sparse_moe; no renaming between the hub and transformers 5).
_GRANITEMOE = next(f for f in FAMILIES if f["name"] == "granitemoe-tiny")
FAMILIES.append({
    **_GRANITEMOE,
    "name": "granitemoeshared-tiny",
    "cls": GraniteMoeSharedForCausalLM,
    "config": granitemoeshared_config,
    "shapes": {
        **_GRANITEMOE["shapes"],
        "model.layers.0.shared_mlp.input_linear.weight": (80, 64),  # rows [0, 40) gate, [40, 80) up
        "model.layers.0.shared_mlp.output_linear.weight": (64, 40),
    },
    "n_tensors": _GRANITEMOE["n_tensors"] + 3 * 2,
    "quantized_suffixes": _GRANITEMOE["quantized_suffixes"] + (
        "shared_mlp.input_linear.weight", "shared_mlp.output_linear.weight"),
})

FAMILIES.append({
    "name": "phimoe-tiny",
    "cls": PhimoeForCausalLM,
    "config": phimoe_config,
    "rope_theta": 1e4,
    "rope_parameters": {"rope_theta": 1e4, **PHIMOE_ROPE},
    # f32 config.json "rope_scaling", spelled like the hub's Phi-3.5-MoE
    # ("type", not "rope_type"); transformers 5 keeps the "type" key next to
    # the "rope_type" it derives from it when it reloads the f32 folder.
    "f32_rope_scaling": {"type": "longrope",
                         **{k: v for k, v in PHIMOE_ROPE.items() if k != "rope_type"}},
    "f32_reloaded_rope": {"rope_theta": 1e4, "type": "longrope", **PHIMOE_ROPE},
    "old_style_f32_config": True,
    "init": phimoe_init,
    "is_quantized": phimoe_is_quantized,
    "router_suffix": "mlp.router.weight",
    "biases": (".bias",),
    "not_quantized_suffixes": (".bias",),
    "shapes": {
        "model.embed_tokens.weight": (256, 64),
        "model.layers.0.self_attn.q_proj.weight": (64, 64),
        "model.layers.0.self_attn.q_proj.bias": (64,),
        "model.layers.0.self_attn.k_proj.weight": (32, 64),
        "model.layers.0.self_attn.k_proj.bias": (32,),
        "model.layers.0.self_attn.v_proj.weight": (32, 64),
        "model.layers.0.self_attn.v_proj.bias": (32,),
        "model.layers.0.self_attn.o_proj.weight": (64, 64),
        "model.layers.0.self_attn.o_proj.bias": (64,),
        "model.layers.0.input_layernorm.weight": (64,),
        "model.layers.0.input_layernorm.bias": (64,),
        "model.layers.0.post_attention_layernorm.weight": (64,),
        "model.layers.0.post_attention_layernorm.bias": (64,),
        "model.layers.0.mlp.router.weight": (8, 64),
        "model.layers.0.mlp.experts.gate_up_proj": (8, 96, 64),
        "model.layers.0.mlp.experts.down_proj": (8, 64, 48),
        "model.norm.weight": (64,),
        "model.norm.bias": (64,),
        "lm_head.weight": (256, 64),
        "lm_head.bias": (256,),
    },
    # per layer: 4 attn weights + 4 attn biases + 2 LayerNorms (weight, bias)
    # + router + 2 fused experts; final LayerNorm and lm_head with biases
    "n_tensors": 1 + 3 * 15 + 4,
    # the hub's (Mixtral-style) names, written by save_pretrained
    "f32_renames": [("mlp.router.weight", "block_sparse_moe.gate.weight")],
    # per-expert hub names: <prefix>.E.<gate>/<up>/<down>.weight
    "f32_experts": ("block_sparse_moe.experts", "w1", "w3", "w2"),
    "f32_shapes": {
        "model.layers.0.block_sparse_moe.experts.0.w1.weight": (48, 64),
        "model.layers.0.block_sparse_moe.experts.0.w3.weight": (48, 64),
        "model.layers.0.block_sparse_moe.experts.0.w2.weight": (64, 48),
        "model.layers.2.block_sparse_moe.experts.7.w2.weight": (64, 48),
        "model.layers.0.block_sparse_moe.gate.weight": (8, 64),
    },
    "n_experts": 8,
    "n_experts_attr": "num_local_experts",
    "f32_layout": "per_expert",
})


# ----------------------------------------------------------- deepseek ----

# YaRN, spelled as in the hub configs (DeepSeek-V2: mscale = mscale_all_dim =
# 0.707; DeepSeek-V3: 1.0), factor 4 = max_position_embeddings 128 /
# original_max_position_embeddings 32 (so transformers' "implicit factor"
# check is quiet). The rope dimension is qk_rope_head_dim = 8 (4 frequencies).
# With the hub's rope_theta 1e4 and such a small original context every
# frequency but the first makes < 1 rotation in it, so YaRN would just keep
# frequency 0 and divide the other three by 4 (no blend). With theta 20
# (V2) the correction range is [0, 3]: frequency 0 kept, 1 and 2 blended
# (ramp 1/3, 2/3), 3 interpolated; with theta 100 (V3) it is [0, 2]: 0 kept,
# 1 blended (1/2), 2 and 3 interpolated. check_yarn prints and checks both.
DSV2_ROPE = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 32,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
    "beta_fast": 32,
    "beta_slow": 1,
}
DSV2_THETA = 20.0
DSV3_ROPE = {**DSV2_ROPE, "mscale": 1.0, "mscale_all_dim": 1.0}
DSV3_THETA = 100.0
# DeepSeek-V3 e_score_correction_bias: transformers initialises it to zeros
# (a runtime ignoring it would pass); here it is DSV3_BIAS_STD * randn. The
# sigmoid scores of these routers spread by ~0.16 (std over the experts), so
# with 0.1 both the scores and the bias decide (the bias changes nearly every
# decision, and the chosen sets still vary from token to token); with 0.5 the
# bias alone would mostly decide (about half as many distinct expert sets).
DSV3_BIAS_STD = 0.1


def deepseekv2_config(rope_parameters=None, **overrides):
    if rope_parameters is None:
        rope_parameters = {"rope_theta": DSV2_THETA, **DSV2_ROPE}
    kw = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,  # dense layer 0 MLP
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=None,  # q_proj directly
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=24,  # != qk_nope_head_dim
        n_routed_experts=8,
        n_shared_experts=2,  # one shared MLP of width 2 * 48
        moe_intermediate_size=48,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
        topk_method="group_limited_greedy",
        num_experts_per_tok=3,
        routed_scaling_factor=2.0,
        norm_topk_prob=False,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters=rope_parameters,
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=1,
        pad_token_id=None,
        eos_token_id=None,  # default 2; the chosen eos is set later
    )
    kw.update(overrides)
    return DeepseekV2Config(**kw)


def deepseekv3_config(rope_parameters=None, **overrides):
    if rope_parameters is None:
        rope_parameters = {"rope_theta": DSV3_THETA, **DSV3_ROPE}
    kw = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,  # dense layer 0 MLP
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,  # DeepseekV3Config defaults to 128
        q_lora_rank=24,  # q_a_proj -> q_a_layernorm -> q_b_proj
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        n_routed_experts=16,
        n_shared_experts=1,
        moe_intermediate_size=48,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
        num_experts_per_tok=4,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        rope_interleave=True,
        num_mtp_layers=1,  # saved as "num_nextn_predict_layers"; no MTP module is built
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters=rope_parameters,
        tie_word_embeddings=False,
        attention_bias=False,
        bos_token_id=1,
        pad_token_id=None,
        eos_token_id=None,  # default 1 (== our bos); the chosen eos is set later
    )
    kw.update(overrides)
    return DeepseekV3Config(**kw)


def deepseekv3_init_buffers(model):
    """e_score_correction_bias is a buffer (not a parameter), zeros in
    transformers; make it nonzero so that it changes the routing."""
    for layer in model.model.layers:
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None:
            gate.e_score_correction_bias.copy_(DSV3_BIAS_STD * torch.randn_like(gate.e_score_correction_bias))


def deepseek_is_quantized(name):
    # make_fixtures.is_quantized plus DeepSeek-V3's correction bias: norms
    # (kv_a_layernorm, q_a_layernorm, ...), the router mlp.gate.weight and
    # mlp.gate.e_score_correction_bias stay f32; every other (2-D) weight --
    # q_proj / q_a_proj / q_b_proj, kv_a_proj_with_mqa, kv_b_proj (HF layout
    # [heads * (nope + v), kv_lora]), o_proj, routed / shared / dense MLP,
    # embed_tokens, lm_head -- is block-quantized along its last dim.
    if "norm" in name or name.endswith(("mlp.gate.weight", "mlp.gate.e_score_correction_bias")):
        return False
    return True


def deepseekv3_mtp_tensors(model, saved):
    """DeepSeek-V3's multi-token-prediction layer as the hub names it: layer
    index num_hidden_layers (61 on the hub, 3 here) holding the tensors of a
    MoE decoder layer (names and shapes of the last MoE layer: input/
    post_attention_layernorm, self_attn.*, mlp.gate.weight,
    mlp.gate.e_score_correction_bias, mlp.shared_experts.*; the routed experts
    the hub also has there are left out to keep the fixture small) plus
    embed_tokens, enorm, hnorm, eh_proj (H, 2H), shared_head.norm and
    shared_head.head. Random values; transformers does not load them (it
    reports them as unexpected) and a converter must ignore them."""
    cfg = model.config
    n, h, v = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    g = torch.Generator().manual_seed(1)
    shapes = {}
    src = f"model.layers.{n - 1}."
    for k, t in saved.items():
        if k.startswith(src) and ".mlp.experts." not in k:
            shapes[f"model.layers.{n}." + k[len(src):]] = tuple(t.shape)
    shapes.update({
        f"model.layers.{n}.embed_tokens.weight": (v, h),
        f"model.layers.{n}.enorm.weight": (h,),
        f"model.layers.{n}.hnorm.weight": (h,),
        f"model.layers.{n}.eh_proj.weight": (h, 2 * h),
        f"model.layers.{n}.shared_head.norm.weight": (h,),
        f"model.layers.{n}.shared_head.head.weight": (v, h),
    })
    out = {}
    for k in sorted(shapes):
        r = torch.randn(shapes[k], generator=g)
        out[k] = (1.0 + 0.1 * r) if k.endswith("norm.weight") else 0.08 * r
    assert f"model.layers.{n}.self_attn.kv_a_proj_with_mqa.weight" in out
    assert f"model.layers.{n}.mlp.shared_experts.down_proj.weight" in out
    return out


# Quantized tensors other than embed_tokens / lm_head / q,k,v,o_proj.
DEEPSEEK_QUANTIZED = (
    "self_attn.q_a_proj.weight", "self_attn.q_b_proj.weight",
    "self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_b_proj.weight",
    "experts.gate_up_proj", "experts.down_proj",
    "mlp.shared_experts.gate_proj.weight", "mlp.shared_experts.up_proj.weight",
    "mlp.shared_experts.down_proj.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
)
# Keys transformers 5 writes that the hub's DeepSeek configs do not have
# (head_dim = qk_rope_head_dim and qk_head_dim = nope + rope are derived in
# __post_init__; checked on reload).
DEEPSEEK_F32_DROP = ["head_dim", "qk_head_dim"]

FAMILIES.append({
    "name": "deepseekv2-tiny",
    "cls": DeepseekV2ForCausalLM,
    "config": deepseekv2_config,
    "rope_theta": DSV2_THETA,
    "rope_parameters": {"rope_theta": DSV2_THETA, **DSV2_ROPE},
    # f32 config.json "rope_scaling", spelled like the hub ("type")
    "f32_rope_scaling": {"type": "yarn", **{k: v for k, v in DSV2_ROPE.items() if k != "rope_type"}},
    "f32_reloaded_rope": {"rope_theta": DSV2_THETA, "type": "yarn", **DSV2_ROPE},
    "old_style_f32_config": True,
    "f32_config_drop": DEEPSEEK_F32_DROP,
    # hub keys transformers has no field for (kept as extra attributes)
    "f32_config_add": {"scoring_func": "softmax", "moe_layer_freq": 1},
    "is_quantized": deepseek_is_quantized,
    "quantized_suffixes": DEEPSEEK_QUANTIZED,
    "shapes": {
        "model.embed_tokens.weight": (256, 64),
        "model.layers.0.self_attn.q_proj.weight": (96, 64),  # 4 * (16 + 8)
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": (40, 64),  # 32 + 8
        "model.layers.0.self_attn.kv_a_layernorm.weight": (32,),
        "model.layers.0.self_attn.kv_b_proj.weight": (160, 32),  # 4 * (16 + 24)
        "model.layers.0.self_attn.o_proj.weight": (64, 96),  # 4 * 24
        "model.layers.0.mlp.gate_proj.weight": (96, 64),
        "model.layers.0.mlp.up_proj.weight": (96, 64),
        "model.layers.0.mlp.down_proj.weight": (64, 96),
        "model.layers.0.input_layernorm.weight": (64,),
        "model.layers.0.post_attention_layernorm.weight": (64,),
        "model.layers.1.mlp.gate.weight": (8, 64),
        "model.layers.1.mlp.experts.gate_up_proj": (8, 96, 64),
        "model.layers.1.mlp.experts.down_proj": (8, 64, 48),
        "model.layers.1.mlp.shared_experts.gate_proj.weight": (96, 64),  # 2 * 48
        "model.layers.1.mlp.shared_experts.up_proj.weight": (96, 64),
        "model.layers.1.mlp.shared_experts.down_proj.weight": (64, 96),
        "model.norm.weight": (64,),
        "lm_head.weight": (256, 64),
    },
    # dense layer: 5 attn + 3 mlp + 2 norms; MoE layer: 5 attn + router + 2
    # fused experts + 3 shared + 2 norms
    "n_tensors": 3 + 10 + 2 * 13,
    "f32_experts": ("mlp.experts", "gate_proj", "up_proj", "down_proj"),
    "f32_shapes": {
        "model.layers.1.mlp.experts.0.gate_proj.weight": (48, 64),
        "model.layers.1.mlp.experts.0.up_proj.weight": (48, 64),
        "model.layers.1.mlp.experts.0.down_proj.weight": (64, 48),
        "model.layers.2.mlp.experts.7.down_proj.weight": (64, 48),
    },
    "n_experts": 8,
    "n_experts_attr": "n_routed_experts",
    "n_moe_layers": 2,
    "f32_layout": "per_expert",
})

FAMILIES.append({
    "name": "deepseekv3-tiny",
    "cls": DeepseekV3ForCausalLM,
    "config": deepseekv3_config,
    "init_buffers": deepseekv3_init_buffers,
    "rope_theta": DSV3_THETA,
    "rope_parameters": {"rope_theta": DSV3_THETA, **DSV3_ROPE},
    "f32_rope_scaling": {"type": "yarn", **{k: v for k, v in DSV3_ROPE.items() if k != "rope_type"}},
    "f32_reloaded_rope": {"rope_theta": DSV3_THETA, "type": "yarn", **DSV3_ROPE},
    "old_style_f32_config": True,
    # the hub's DeepSeek-V3 config has no "rope_interleave" (transformers'
    # default True; checked on reload)
    "f32_config_drop": DEEPSEEK_F32_DROP + ["rope_interleave"],
    "f32_config_add": {"scoring_func": "sigmoid", "topk_method": "noaux_tc", "moe_layer_freq": 1},
    "f32_extra_tensors": deepseekv3_mtp_tensors,
    "is_quantized": deepseek_is_quantized,
    "quantized_suffixes": DEEPSEEK_QUANTIZED,
    "biases": ("mlp.gate.e_score_correction_bias",),
    "not_quantized_suffixes": ("mlp.gate.e_score_correction_bias",),
    "shapes": {
        "model.embed_tokens.weight": (256, 64),
        "model.layers.0.self_attn.q_a_proj.weight": (24, 64),
        "model.layers.0.self_attn.q_a_layernorm.weight": (24,),
        "model.layers.0.self_attn.q_b_proj.weight": (96, 24),  # 4 * (16 + 8)
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": (40, 64),  # 32 + 8
        "model.layers.0.self_attn.kv_a_layernorm.weight": (32,),
        "model.layers.0.self_attn.kv_b_proj.weight": (128, 32),  # 4 * (16 + 16)
        "model.layers.0.self_attn.o_proj.weight": (64, 64),  # 4 * 16
        "model.layers.0.mlp.gate_proj.weight": (96, 64),
        "model.layers.0.mlp.up_proj.weight": (96, 64),
        "model.layers.0.mlp.down_proj.weight": (64, 96),
        "model.layers.0.input_layernorm.weight": (64,),
        "model.layers.0.post_attention_layernorm.weight": (64,),
        "model.layers.1.mlp.gate.weight": (16, 64),
        "model.layers.1.mlp.gate.e_score_correction_bias": (16,),
        "model.layers.1.mlp.experts.gate_up_proj": (16, 96, 64),
        "model.layers.1.mlp.experts.down_proj": (16, 64, 48),
        "model.layers.1.mlp.shared_experts.gate_proj.weight": (48, 64),  # 1 * 48
        "model.layers.1.mlp.shared_experts.up_proj.weight": (48, 64),
        "model.layers.1.mlp.shared_experts.down_proj.weight": (64, 48),
        "model.norm.weight": (64,),
        "lm_head.weight": (256, 64),
    },
    # dense layer: 7 attn + 3 mlp + 2 norms; MoE layer: 7 attn + router +
    # bias + 2 fused experts + 3 shared + 2 norms
    "n_tensors": 3 + 12 + 2 * 16,
    "f32_experts": ("mlp.experts", "gate_proj", "up_proj", "down_proj"),
    "f32_shapes": {
        "model.layers.1.mlp.experts.0.gate_proj.weight": (48, 64),
        "model.layers.1.mlp.experts.0.up_proj.weight": (48, 64),
        "model.layers.1.mlp.experts.0.down_proj.weight": (64, 48),
        "model.layers.2.mlp.experts.15.down_proj.weight": (64, 48),
        "model.layers.1.mlp.gate.e_score_correction_bias": (16,),
    },
    "n_experts": 16,
    "n_experts_attr": "n_routed_experts",
    "n_moe_layers": 2,
    "f32_layout": "per_expert",
})


def expected_rope(fam):
    return fam.get("rope_parameters", {"rope_theta": fam["rope_theta"], "rope_type": "default"})


def f32_name(fam, k):
    for a, b in fam.get("f32_renames", []):
        if k.endswith(a):
            return k[: -len(a)] + b
    return k


def fake_quant_state(sd, kind, is_quantized):
    """make_fixtures.fake_quant_state with the family's quantize predicate."""
    out = {}
    for name, t in sd.items():
        if not is_quantized(name):
            out[name] = t.clone()
            continue
        a = t.detach().float().numpy()
        shp = a.shape  # 2-D [rows, cols] or fused experts [E, rows, cols]
        deq = mf.fake_quant_2d(a.reshape(-1, shp[-1]), kind).reshape(shp)
        out[name] = torch.from_numpy(deq)
    return out


# ---------------------------------------------------------------- model ----

def build_model(fam):
    torch.manual_seed(0)
    cfg = fam["config"]()
    cfg._attn_implementation = "eager"
    model = fam["cls"](cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    rp = model.config.rope_parameters
    assert rp == expected_rope(fam), rp
    init = fam.get("init")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if init is not None and init(name, p):
                continue
            if name.endswith("norm.weight"):  # input/post_attention_layernorm, q/k_norm, final norm
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:  # embeddings, linears, router, fused experts
                p.copy_(0.08 * torch.randn_like(p))
        init_buffers = fam.get("init_buffers")
        if init_buffers is not None:  # after the parameters: same draws for them
            init_buffers(model)
    model.eval()
    return model


# ---------------------------------------------------------------- write ----

def write_f32(model, fam, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    files = sorted(os.listdir(d))
    assert files == ["config.json", "model.safetensors"], files
    saved = load_file(os.path.join(d, "model.safetensors"))
    if fam["f32_layout"] != "per_expert":
        # dense names (llama) or the hub's fused GraniteMoE names: every
        # in-memory tensor saved once, bit-identical, under f32_name().
        sd = model.state_dict()
        assert sorted(saved) == sorted(f32_name(fam, k) for k in sd), sorted(saved)
        assert len(saved) == fam["n_tensors"], len(saved)
        for k, v in sd.items():
            assert torch.equal(saved[f32_name(fam, k)], v), k
    else:
        check_per_expert_f32(model, fam, saved)
    assert all(v.dtype == torch.float32 for v in saved.values())
    extra = fam["f32_extra_tensors"](model, saved) if "f32_extra_tensors" in fam else {}
    if extra:
        # Tensors transformers does not load (DeepSeek-V3's MTP layer), added
        # to the same single file as the hub does.
        assert not set(extra) & set(saved), sorted(set(extra) & set(saved))
        assert all(v.dtype == torch.float32 for v in extra.values())
        save_file({**saved, **extra}, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    if not fam["old_style_f32_config"]:
        return
    # Rewrite config to the hub's older style (as make_fixtures.write_f32 does).
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    assert rp == expected_rope(fam), rp
    new = {}
    renames = {"dtype": "torch_dtype", **fam.get("f32_config_renames", {})}
    for k in fam.get("f32_config_drop", []):
        assert k in cfg, k
        cfg.pop(k)
    for k, v in cfg.items():
        new[renames.get(k, k)] = v
        if k == "rms_norm_eps":
            new["rope_theta"] = float(fam["rope_theta"])
            new["rope_scaling"] = fam.get("f32_rope_scaling")
    assert "rope_theta" in new
    for k in fam.get("f32_config_renames", {}):
        assert k in cfg, k
    for k, v in fam.get("f32_config_add", {}).items():
        assert k not in new, k
        new[k] = v
    with open(path, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
        f.write("\n")


def check_per_expert_f32(model, fam, saved):
    assert not any("gate_up_proj" in k for k in saved), sorted(saved)[:20]
    assert not any(k.endswith("experts.down_proj") for k in saved)
    for k, shp in fam["f32_shapes"].items():
        assert tuple(saved[k].shape) == shp, (k, tuple(saved[k].shape))
    for k, shp in fam["shapes"].items():
        if ".experts." not in k:
            assert tuple(saved[f32_name(fam, k)].shape) == shp, (k, tuple(saved[f32_name(fam, k)].shape))
    n_layers = fam.get("n_moe_layers", model.config.num_hidden_layers)
    experts, gate, up, down = fam.get("f32_experts", ("mlp.experts", None, None, None))
    per_expert = [k for k in saved if f".{experts}." in k]
    assert len(per_expert) == n_layers * fam["n_experts"] * 3, len(per_expert)
    if gate is None:
        return
    # Exact name set and values: fused gate_up_proj rows [0, F) are <gate>,
    # rows [F, 2F) <up>; down_proj[E] is <down>.
    sd = model.state_dict()
    expected = set()
    for k, v in sd.items():
        if not k.endswith(("experts.gate_up_proj", "experts.down_proj")):
            expected.add(f32_name(fam, k))
            assert torch.equal(saved[f32_name(fam, k)], v), k
            continue
        pre = k[: k.index(".mlp.experts.")] + "." + experts
        for e in range(fam["n_experts"]):
            if k.endswith("gate_up_proj"):
                f = v.shape[1] // 2
                pairs = [(gate, v[e, :f]), (up, v[e, f:])]
            else:
                pairs = [(down, v[e])]
            for n, t in pairs:
                expected.add(f"{pre}.{e}.{n}.weight")
                assert torch.equal(saved[f"{pre}.{e}.{n}.weight"], t), (k, e, n)
    assert sorted(saved) == sorted(expected), sorted(set(saved) ^ expected)


def write_bf16(model, fam, tensors, d):
    """Like make_fixtures.write_bf16, with the family's rope_theta."""
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    n_layers = model.config.num_hidden_layers
    mf.write_shards(tensors, d, n_layers)
    cfg = copy.deepcopy(model.config)
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(d)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    assert c["rope_parameters"] == expected_rope(fam), c
    assert c["dtype"] == "bfloat16", c.get("dtype")
    assert "rope_theta" not in c


def load(fam, d, **kw):
    return fam["cls"].from_pretrained(d, attn_implementation="eager", **kw).eval()


# ----------------------------------------------------------------- main ----

def make_family(fam, out):
    root = os.path.join(out, fam["name"])
    os.makedirs(root, exist_ok=True)
    cls = fam["cls"]

    model = build_model(fam)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in sd:
        assert k.endswith(".weight") or k.endswith("_proj") or k.endswith(fam.get("biases", ("\0",))), k
    if "n_tensors" in fam:
        assert len(sd) == fam["n_tensors"], len(sd)
    for k, shp in fam["shapes"].items():
        assert tuple(sd[k].shape) == shp, (k, tuple(sd[k].shape))
    is_q = fam.get("is_quantized", mf.is_quantized)
    router = fam.get("router_suffix", "mlp.gate.weight")
    quantized = sorted(k for k in sd if is_q(k))
    assert not any("norm" in k or k.endswith(router) for k in quantized)
    assert all(
        k in ("model.embed_tokens.weight", "lm_head.weight")
        or k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")
                      + fam.get("quantized_suffixes", ("experts.gate_up_proj", "experts.down_proj")))
        for k in quantized
    ), quantized
    not_quantized = sorted(k for k in sd if not is_q(k))
    assert all("norm" in k or k.endswith((router,) + fam.get("not_quantized_suffixes", ()))
               for k in not_quantized), not_quantized

    greedy, eos, greedy_until_eos = mf.greedy_and_eos(model)

    tokens = PROMPT + greedy[: N_NEW - 1]
    logits_f32 = mf.logits_of(model, tokens)
    assert logits_f32.argmax(-1)[len(PROMPT) - 1:].tolist() == greedy

    # bf16-rounded weights, computed in f32.
    bf16 = mf.fused_bf16_tensors(sd)
    sd_bf16_up = {k: v.float() for k, v in bf16.items()}
    logits_bf16 = mf.logits_of(mf.with_weights(model, sd_bf16_up), tokens)

    sim_kl, sim_top1 = {}, {}
    for kind in ("f16", "int8", "int4"):
        lq = mf.logits_of(mf.with_weights(model, fake_quant_state(sd, kind, is_q)), tokens)
        sim_kl[kind], sim_top1[kind] = mf.kl_top1(logits_f32, lq)

    # f32 checkpoint (per-expert names), then reload check.
    f32_dir = os.path.join(root, "f32")
    write_f32(model, fam, f32_dir)
    m = load(fam, f32_dir, dtype=torch.float32)
    assert m.config.rope_parameters["rope_theta"] == fam["rope_theta"], m.config.rope_parameters
    assert m.config.rope_parameters == fam.get("f32_reloaded_rope", expected_rope(fam)), \
        m.config.rope_parameters
    assert m.config.eos_token_id == eos
    for k in fam.get("f32_config_drop", []):
        assert getattr(m.config, k) == getattr(model.config, k), k
    for k, v in fam.get("f32_config_add", {}).items():
        assert getattr(m.config, k) == v, k
    if fam["n_experts"] is not None:
        n_exp = getattr(m.config, fam.get("n_experts_attr", "num_experts"))
        assert n_exp == fam["n_experts"], n_exp
    loaded = m.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    got = mf.logits_of(m, tokens)
    assert torch.equal(got, logits_f32), (got - logits_f32).abs().max()

    # bf16 checkpoint (fused layout, sharded), then reload check.
    bf16_dir = os.path.join(root, "bf16")
    write_bf16(model, fam, bf16, bf16_dir)
    m = load(fam, bf16_dir, dtype=torch.float32)
    assert m.config.eos_token_id == eos
    assert m.config.rope_parameters["rope_theta"] == fam["rope_theta"]
    assert m.config.rope_parameters == expected_rope(fam), m.config.rope_parameters
    loaded = m.state_dict()
    for k, v in sd_bf16_up.items():
        assert torch.equal(loaded[k], v), k
    got = mf.logits_of(m, tokens)
    assert torch.equal(got, logits_bf16), (got - logits_bf16).abs().max()
    m = load(fam, bf16_dir)
    assert m.dtype == torch.bfloat16, m.dtype
    assert isinstance(m, cls)
    del m

    mf.write_reference(root, greedy, eos, greedy_until_eos, tokens, logits_f32, logits_bf16,
                       sim_kl, sim_top1)

    # Summary.
    print(f"== {fam['name']}")
    print(f"greedy            {greedy}")
    print(f"eos_token_id      {eos}  (greedy_until_eos has {len(greedy_until_eos)} tokens)")
    kl_b, t1_b = mf.kl_top1(logits_f32, logits_bf16)
    print(f"bf16 vs f32       kl={kl_b:.3e} top1={t1_b:.3f}")
    for kind in ("f16", "int8", "int4"):
        print(f"sim {kind:5s}         kl={sim_kl[kind]:.3e} top1={sim_top1[kind]:.3f}")
    if fam["name"] == "llama-tiny":
        check_llama3_scaling_matters(model, sd, tokens, logits_f32)
    if fam["name"] == "hunyuanmoe-tiny":
        check_qk_norm_after_rope_matters(model, tokens, logits_f32)
    if fam["name"] == "phimoe-tiny":
        check_phimoe(model, sd, sd_bf16_up, tokens, logits_f32)
    if fam["name"] in ("deepseekv2-tiny", "deepseekv3-tiny"):
        check_deepseek(model, fam, sd, sd_bf16_up, tokens, logits_f32)
    total = 0
    for dirpath, _, files in sorted(os.walk(root)):
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            sz = os.path.getsize(p)
            total += sz
            print(f"{sz:>10d}  {os.path.relpath(p, out)}")
    print(f"{total:>10d}  total")


def check_llama3_scaling_matters(model, sd, tokens, logits_f32):
    """Same weights, plain rope (theta 5e5, no llama3 scaling): must differ."""
    cfg = llama_config({"rope_type": "default", "rope_theta": 500000.0})
    cfg._attn_implementation = "eager"
    plain = LlamaForCausalLM(cfg).to(torch.float32)
    plain.config._attn_implementation = "eager"
    plain.load_state_dict(sd, strict=True)
    plain.eval()
    inv_s = model.model.rotary_emb.inv_freq
    inv_p = plain.model.rotary_emb.inv_freq
    changed = (inv_s != inv_p).sum().item()
    assert changed > 0
    lp = mf.logits_of(plain, tokens)
    diff = (lp - logits_f32).abs().max().item()
    kl, t1 = mf.kl_top1(logits_f32, lp)
    print(f"llama3 rope scaling changes {changed}/{inv_s.numel()} inv_freq")
    print(f"  inv_freq scaled  {[f'{x:.6g}' for x in inv_s.tolist()]}")
    print(f"  inv_freq plain   {[f'{x:.6g}' for x in inv_p.tolist()]}")
    print(f"  unscaled vs scaled logits: max|diff|={diff:.4f} kl={kl:.3e} top1={t1:.3f}")
    assert diff > 1e-2, diff


def check_qk_norm_after_rope_matters(model, tokens, logits_f32):
    """Same weights, query/key_layernorm applied BEFORE rope (Qwen3-MoE's
    order) instead of after (HunYuan's): must differ."""
    mod = sys.modules[type(model).__module__]
    rope = mod.apply_rotary_pos_emb
    m = copy.deepcopy(model)
    cur, calls = {}, [0]
    for layer in m.model.layers:
        a = layer.self_attn
        a.register_forward_pre_hook(lambda attn, args: cur.__setitem__("attn", attn))
        a.q_norm_first, a.k_norm_first = a.query_layernorm, a.key_layernorm
        a.query_layernorm, a.key_layernorm = torch.nn.Identity(), torch.nn.Identity()

    def norm_then_rope(q, k, cos, sin, *args, **kw):
        calls[0] += 1
        attn = cur["attn"]
        return rope(attn.q_norm_first(q), attn.k_norm_first(k), cos, sin, *args, **kw)

    mod.apply_rotary_pos_emb = norm_then_rope
    try:
        lb = mf.logits_of(m, tokens)
    finally:
        mod.apply_rotary_pos_emb = rope
    assert calls[0] == len(m.model.layers), calls
    diff = (lb - logits_f32).abs().max().item()
    kl, t1 = mf.kl_top1(logits_f32, lb)
    print(f"q/k norm before rope instead of after: max|diff|={diff:.4f} kl={kl:.3e} top1={t1:.3f}")
    assert diff > 1e-2, diff


# ---------------------------------------------------------- phi-moe ----

def sparsemixer_inference(scores, jitter_eps):
    """transformers' Phi-MoE sparsemixer(scores, jitter_eps, training=False),
    written out step by step (always top-2, whatever num_experts_per_tok
    says); check_phimoe checks it is bit-identical inside the model.
    Returns (weights (T, 2), experts (T, 2), per-stage details)."""
    thr = 2 * jitter_eps
    # Stage 1: e1 = argmax s. Expert i stays a candidate unless
    # (s[e1] - s[i]) / max(|s[i]|, s[e1]) > 2 * jitter_eps; the weight of e1 is
    # the softmax over the remaining candidates, taken at e1.
    s1, e1 = scores.max(dim=-1, keepdim=True)
    ratio1 = (s1 - scores) / scores.abs().clamp(min=s1)
    masked1 = ratio1 > thr
    w1 = torch.softmax(scores.masked_fill(masked1, float("-inf")), dim=-1).gather(-1, e1)
    # Stage 2: the same with e1 removed: e2 = argmax of the others, threshold
    # (s[e2] - s[i]) / max(|s[i]|, s[e2]) > 2 * jitter_eps, softmax over the
    # candidates other than e1, taken at e2. w1 + w2 is NOT renormalised.
    rest = scores.scatter(-1, e1, float("-inf"))
    s2, e2 = rest.max(dim=-1, keepdim=True)
    ratio2 = (s2 - scores) / scores.abs().clamp(min=s2)
    masked2 = ratio2 > thr
    w2 = torch.softmax(rest.masked_fill(masked2, float("-inf")), dim=-1).gather(-1, e2)
    info = {"e1": e1, "e2": e2, "s1": s1, "s2": s2, "ratio1": ratio1, "ratio2": ratio2,
            "masked1": masked1, "masked2": masked2}
    return torch.cat((w1, w2), dim=-1), torch.cat((e1, e2), dim=-1), info


def plain_top2(scores):
    """Mixtral-style routing: top-2 of softmax over all experts, renormalised."""
    w, e = torch.softmax(scores, dim=-1).topk(2, dim=-1)
    return w / w.sum(-1, keepdim=True), e


def router_logits_of(model, tokens):
    """Router logits of every layer for `tokens`: (layers * positions, E)."""
    logs = []
    hooks = [layer.mlp.router.register_forward_hook(
        lambda mod, args, out: logs.append(out[0].detach().clone())) for layer in model.model.layers]
    try:
        lo = mf.logits_of(model, tokens)
    finally:
        for h in hooks:
            h.remove()
    assert len(logs) == len(model.model.layers)
    return torch.cat(logs), lo


def routing_stats(label, scores, eps):
    """Prints what sparsemixer does to these router logits compared with plain
    top-2 routing and with sparsemixer minus the masking; returns the stats."""
    w, e, info = sparsemixer_inference(scores, eps)
    t = scores.shape[0]
    # Selection is always plain top-2 at inference (no ties here).
    wp, ep = plain_top2(scores)
    assert torch.equal(e, ep), "sparsemixer picked other experts than top-2"
    # Sparsemixer without the threshold masks.
    p1 = torch.softmax(scores, -1).gather(-1, info["e1"])
    rest = scores.scatter(-1, info["e1"], float("-inf"))
    p2 = torch.softmax(rest, -1).gather(-1, info["e2"])
    w_nomask = torch.cat((p1, p2), -1)
    n1 = (~info["masked1"]).sum(-1)  # candidates in stage 1, e1 included
    cand2 = ~info["masked2"]
    cand2.scatter_(-1, info["e1"], False)
    n2 = cand2.sum(-1)  # candidates in stage 2, e2 included
    changed = ((w - w_nomask).abs() > 1e-6).any(-1)
    ones = (w == 1.0).all(-1)
    # Distance of every non-selected expert's ratio from the threshold, in
    # ratio units and in router-logit units (ratio * factor).
    others1 = torch.ones_like(info["masked1"]).scatter_(-1, info["e1"], False)
    others2 = others1.clone().scatter_(-1, info["e2"], False)
    f1 = scores.abs().clamp(min=info["s1"])
    f2 = scores.abs().clamp(min=info["s2"])
    m_ratio = torch.cat(((info["ratio1"] - 2 * eps).abs()[others1],
                         (info["ratio2"] - 2 * eps).abs()[others2]))
    m_logit = torch.cat((((info["ratio1"] - 2 * eps) * f1).abs()[others1],
                         (((info["ratio2"] - 2 * eps) * f2).abs())[others2]))
    top3 = scores.topk(3, -1).values
    sel_gap = (top3[:, 1] - top3[:, 2]).min().item()
    print(f"  {label}: {t} routing decisions (layers x positions), |max logit| "
          f"mean {info['s1'].abs().mean().item():.2f}")
    print(f"    stage-1 candidates (e1 incl.) histogram 1..8: "
          f"{torch.bincount(n1, minlength=9)[1:].tolist()}")
    print(f"    stage-2 candidates (e2 incl.) histogram 1..7: "
          f"{torch.bincount(n2, minlength=8)[1:].tolist()}")
    print(f"    masking changed the weights (vs no masking) in {changed.sum().item()}/{t}; "
          f"both weights exactly 1.0 in {ones.sum().item()}/{t}; "
          f"w1+w2 in [{w.sum(-1).min().item():.3f}, {w.sum(-1).max().item():.3f}]")
    print(f"    vs plain top-2 renormalised: same experts in {t}/{t}, "
          f"max|w diff| {(w - wp).abs().max().item():.3f}, mean {(w - wp).abs().mean().item():.3f}")
    print(f"    threshold margins: smallest |ratio - 0.02| "
          f"{[f'{x:.1e}' for x in m_ratio.sort().values[:4].tolist()]}, in logit units "
          f"{[f'{x:.1e}' for x in m_logit.sort().values[:4].tolist()]}; "
          f"smallest 2nd-3rd logit gap {sel_gap:.1e}")
    return {"n1": n1, "n2": n2, "changed": changed, "ones": ones, "margin_logit": m_logit.min().item()}


def phimoe_variant_logits(sd, tokens, rope_parameters):
    cfg = phimoe_config(rope_parameters)
    cfg._attn_implementation = "eager"
    m = PhimoeForCausalLM(cfg).to(torch.float32)
    m.config._attn_implementation = "eager"
    m.load_state_dict(sd, strict=True)
    m.eval()
    return m, mf.logits_of(m, tokens)


def report_diff(what, ref, other, min_diff=1e-2):
    diff = (other - ref).abs().max().item()
    kl, t1 = mf.kl_top1(ref, other)
    print(f"  {what}: max|diff|={diff:.4f} kl={kl:.3e} top1={t1:.3f}")
    assert diff > min_diff, (what, diff)
    return diff


def check_phimoe(model, sd, sd_bf16_up, tokens, logits_f32):
    """Phi-MoE checks: rope formula, sparsemixer (reimplemented, bit-identical),
    routing statistics, and that norm biases, lm_head bias, sparsemixer and
    longrope each change the logits."""
    mod = sys.modules[type(model).__module__]
    cfg = model.config
    eps = cfg.router_jitter_noise
    rp = cfg.rope_parameters
    hd = cfg.hidden_size // cfg.num_attention_heads

    # --- longrope, below original_max_position_embeddings -----------------
    i = torch.arange(0, hd, 2, dtype=torch.int64).float() / hd
    inv_short = 1.0 / (torch.tensor(rp["short_factor"], dtype=torch.float32) * rp["rope_theta"] ** i)
    inv_plain = 1.0 / (rp["rope_theta"] ** i)
    rot = model.model.rotary_emb
    assert torch.equal(rot.inv_freq, inv_short), (rot.inv_freq, inv_short)
    pos = torch.arange(len(tokens))[None]
    x = torch.zeros(1, len(tokens), cfg.hidden_size)
    cos, sin = rot(x, pos)
    emb = torch.cat((pos[0, :, None].float() * inv_short,) * 2, -1)
    assert torch.equal(cos[0], emb.cos() * rp["short_mscale"]), "cos formula"
    assert torch.equal(sin[0], emb.sin() * rp["short_mscale"]), "sin formula"
    print(f"longrope (seq {len(tokens)} <= original_max_position_embeddings "
          f"{rp['original_max_position_embeddings']}): inv_freq = 1/(short_factor * theta^(2i/d)), "
          f"cos/sin * short_mscale {rp['short_mscale']}")
    print(f"  inv_freq longrope {[f'{v:.6g}' for v in inv_short.tolist()]}")
    print(f"  inv_freq plain    {[f'{v:.6g}' for v in inv_plain.tolist()]}")

    # --- sparsemixer: the reimplementation is transformers' ----------------
    scores, lo = router_logits_of(model, tokens)
    assert torch.equal(lo, logits_f32)
    w_t, e_t = mod.sparsemixer(scores, jitter_eps=eps, training=False, top_k=2)
    w_r, e_r, _ = sparsemixer_inference(scores, eps)
    assert torch.equal(w_t, w_r) and torch.equal(e_t, e_r)
    sm = mod.sparsemixer
    mod.sparsemixer = lambda s, jitter_eps, training, top_k=2: sparsemixer_inference(s, jitter_eps)[:2]
    try:
        assert torch.equal(mf.logits_of(model, tokens), logits_f32), "sparsemixer_inference"
    finally:
        mod.sparsemixer = sm
    print(f"sparsemixer (jitter_eps {eps}, threshold {2 * eps}) reimplemented: bit-identical")

    # --- routing statistics -------------------------------------------------
    st = routing_stats("f32 weights", scores, eps)
    assert st["changed"].sum() > 0 and st["ones"].sum() > 0
    assert (st["n1"] == 1).any() and (st["n1"] > 2).any()
    assert (st["n2"] == 1).any() and (st["n2"] > 2).any()
    scores_b, _ = router_logits_of(mf.with_weights(model, sd_bf16_up), tokens)
    st_b = routing_stats("bf16-rounded weights", scores_b, eps)
    for stt in (st, st_b):
        assert stt["margin_logit"] > 1e-4, stt["margin_logit"]

    # --- each feature matters ------------------------------------------------
    print("phimoe feature checks (same weights, one feature removed):")
    no_norm_bias = {k: (torch.zeros_like(v) if k.endswith("norm.bias") else v) for k, v in sd.items()}
    assert sum(k.endswith("norm.bias") for k in sd) == 2 * cfg.num_hidden_layers + 1
    report_diff("(a) LayerNorm biases dropped", logits_f32,
                mf.logits_of(mf.with_weights(model, no_norm_bias), tokens))
    no_head_bias = {k: (torch.zeros_like(v) if k == "lm_head.bias" else v) for k, v in sd.items()}
    report_diff("(b) lm_head bias dropped", logits_f32,
                mf.logits_of(mf.with_weights(model, no_head_bias), tokens))
    mod.sparsemixer = lambda s, jitter_eps, training, top_k=2: plain_top2(s)
    try:
        lp = mf.logits_of(model, tokens)
    finally:
        mod.sparsemixer = sm
    report_diff("(c) plain softmax top-2 renormalised instead of sparsemixer", logits_f32, lp)
    theta = rp["rope_theta"]
    m, lp = phimoe_variant_logits(sd, tokens, {"rope_type": "default", "rope_theta": theta})
    assert torch.equal(m.model.rotary_emb.inv_freq, inv_plain)
    report_diff("(d) plain rope (no short_factor, no short_mscale)", logits_f32, lp)
    variants = [
        ("short_factor only (short_mscale 1)", {"short_mscale": 1.0}),
        ("short_mscale only (short_factor all 1)", {"short_factor": [1.0] * (hd // 2)}),
        ("long_factor/long_mscale instead of short", {"short_factor": rp["long_factor"],
                                                      "short_mscale": rp["long_mscale"]}),
    ]
    for what, change in variants:
        _, lp = phimoe_variant_logits(sd, tokens, {"rope_theta": theta, **PHIMOE_ROPE, **change})
        report_diff(f"    {what}", logits_f32, lp)


# ---------------------------------------------------------- deepseek ----

def yarn_reference(cfg):
    """transformers' _compute_yarn_parameters for these configs, written out:
    (inv_freq, attention_factor, ramp) at rope dim qk_rope_head_dim."""
    rp = cfg.rope_parameters
    dim, base, factor = cfg.qk_rope_head_dim, rp["rope_theta"], rp["factor"]
    orig = rp["original_max_position_embeddings"]

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if rp.get("mscale") and rp.get("mscale_all_dim"):
        attention_factor = float(get_mscale(factor, rp["mscale"]) / get_mscale(factor, rp["mscale_all_dim"]))
    else:
        attention_factor = get_mscale(factor)

    def correction_dim(rot):  # dimension index at which a frequency makes `rot` turns in `orig`
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(rp["beta_fast"])), 0)  # truncate (default True)
    high = min(math.ceil(correction_dim(rp["beta_slow"])), dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    extra = 1.0 - ramp  # weight of the unscaled frequency
    inv = (1.0 / (factor * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra
    return inv, attention_factor, ramp, 1.0 / pos_freqs, (low, high)


def deepseek_softmax_scale(cfg):
    """qk_head_dim^-0.5, times yarn_get_mscale(factor, mscale_all_dim)^2 when
    the rope type is not "default" and mscale_all_dim is nonzero."""
    scale = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** (-0.5)
    rp = cfg.rope_parameters
    if rp.get("rope_type", "default") != "default" and rp.get("mscale_all_dim", 0):
        f = rp["factor"]
        m = 1.0 if f <= 1 else 0.1 * rp["mscale_all_dim"] * math.log(f) + 1.0
        scale = scale * m * m
    return scale


def group_keep(group_scores, cfg):
    """(T, n_group) scores -> (T, E) bool: experts of the topk_group best groups."""
    e, g = cfg.n_routed_experts, cfg.n_group
    group_idx = torch.topk(group_scores, k=cfg.topk_group, dim=-1, sorted=False)[1]
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter(1, group_idx, True)
    return keep[:, :, None].expand(-1, g, e // g).reshape(-1, e)


def route_v2(cfg, logits, method=None):
    """transformers' DeepseekV2TopkRouter after the (f32) router matmul:
    softmax over all experts; "greedy": top-k; "group_limited_greedy": group
    score = max of its experts' probabilities, keep the topk_group best
    groups, others' probabilities set to 0.0, top-k. Weights are the chosen
    probabilities times routed_scaling_factor; norm_topk_prob is ignored."""
    method = method or cfg.topk_method
    scores = logits.softmax(dim=-1, dtype=torch.float32)
    if method == "group_limited_greedy":
        e, g = cfg.n_routed_experts, cfg.n_group
        keep = group_keep(scores.view(-1, g, e // g).max(dim=-1).values, cfg)
        scores = scores.masked_fill(~keep, 0.0)
    else:
        assert method == "greedy", method
    w, idx = torch.topk(scores, k=cfg.num_experts_per_tok, dim=-1, sorted=False)
    return w * cfg.routed_scaling_factor, idx


def route_v3(cfg, logits, bias, groups=True, mask_value=float("-inf"), norm=None):
    """transformers' DeepseekV3TopkRouter after the (f32) router matmul:
    s = sigmoid(logits); choice = s + e_score_correction_bias; group score =
    sum of the 2 largest choice values of its experts; keep the topk_group
    best groups, the other experts' choice set to -inf; top-k of choice; the
    weights are the UNbiased s of the chosen experts, divided by their sum +
    1e-20 if norm_topk_prob, then times routed_scaling_factor."""
    norm = cfg.norm_topk_prob if norm is None else norm
    scores = logits.sigmoid()
    choice = scores + bias
    if groups:
        e, g = cfg.n_routed_experts, cfg.n_group
        keep = group_keep(choice.view(-1, g, e // g).topk(2, dim=-1)[0].sum(dim=-1), cfg)
        choice = choice.masked_fill(~keep, mask_value)
    idx = torch.topk(choice, k=cfg.num_experts_per_tok, dim=-1, sorted=False)[1]
    w = scores.gather(1, idx)
    if norm:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return w * cfg.routed_scaling_factor, idx


def canonical_route(w, idx):
    """Sorted by expert index (topk(sorted=False) order is unspecified)."""
    idx_s, order = idx.sort(dim=-1)
    return w.gather(1, order), idx_s


def moe_gates(model):
    return [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "experts")]


def router_records(model, tokens):
    """Per MoE layer: (router logits (T, E), transformers' weights, indices)."""
    recs = []
    hooks = [g.register_forward_hook(lambda mod, args, out: recs.append(
        (mod, tuple(o.detach().clone() for o in out)))) for g in moe_gates(model)]
    try:
        lo = mf.logits_of(model, tokens)
    finally:
        for h in hooks:
            h.remove()
    assert len(recs) == len(moe_gates(model))
    return recs, lo


def deepseek_route(model, gate, logits, **kw):
    cfg = model.config
    if isinstance(model, DeepseekV3ForCausalLM):
        return route_v3(cfg, logits, gate.e_score_correction_bias, **kw)
    return route_v2(cfg, logits, **kw)


def patched_router_logits(model, tokens, **kw):
    """Model logits with every router replaced by deepseek_route(**kw)."""
    cls = type(moe_gates(model)[0])
    fwd = cls.forward

    def forward(gate, hidden_states):
        hs = hidden_states.view(-1, gate.hidden_dim)
        logits = torch.nn.functional.linear(hs.type(torch.float32), gate.weight.type(torch.float32))
        w, idx = deepseek_route(model, gate, logits, **kw)
        return logits, w, idx

    cls.forward = forward
    try:
        return mf.logits_of(model, tokens)
    finally:
        cls.forward = fwd


def n_changed(idx_a, idx_b):
    return (idx_a.sort(-1).values != idx_b.sort(-1).values).any(-1).sum().item()


def routing_gaps(model, recs):
    """Smallest margins of the actual routing decisions: between the
    topk_group-th and the next group score, and between the k-th and the
    (k+1)-th allowed expert's choice score."""
    cfg = model.config
    e, g, k = cfg.n_routed_experts, cfg.n_group, cfg.num_experts_per_tok
    gg, eg = [], []
    for gate, (logits, _, _) in recs:
        if isinstance(model, DeepseekV3ForCausalLM):
            choice = logits.sigmoid() + gate.e_score_correction_bias
            gs = choice.view(-1, g, e // g).topk(2, dim=-1)[0].sum(dim=-1)
            fill = float("-inf")
        else:
            choice = logits.softmax(dim=-1, dtype=torch.float32)
            gs = choice.view(-1, g, e // g).max(dim=-1).values
            fill = 0.0
        v = gs.sort(-1, descending=True).values
        gg.append(v[:, cfg.topk_group - 1] - v[:, cfg.topk_group])
        c = choice.masked_fill(~group_keep(gs, cfg), fill).sort(-1, descending=True).values
        eg.append(c[:, k - 1] - c[:, k])
    return torch.cat(gg).min().item(), torch.cat(eg).min().item()


def deepseek_variant_logits(fam, sd, tokens, **overrides):
    cfg = fam["config"](**overrides)
    cfg._attn_implementation = "eager"
    m = fam["cls"](cfg).to(torch.float32)
    m.config._attn_implementation = "eager"
    m.load_state_dict(sd, strict=True)
    m.eval()
    return mf.logits_of(m, tokens)


def check_deepseek(model, fam, sd, sd_bf16_up, tokens, logits_f32):
    """DeepSeek-V2/V3 checks: YaRN inv_freq / attention_factor / softmax
    scale reimplemented, routing reimplemented (bit-identical, also plugged
    into the model), routing statistics (decisions changed by the group
    limit and, V3, by the correction bias), and that each feature changes the
    logits."""
    cfg = model.config
    v3 = isinstance(model, DeepseekV3ForCausalLM)
    rp = cfg.rope_parameters

    # --- YaRN ----------------------------------------------------------------
    rot = model.model.rotary_emb
    inv, af, ramp, plain, (low, high) = yarn_reference(cfg)
    assert torch.equal(rot.inv_freq, inv), (rot.inv_freq, inv)
    assert rot.attention_scaling == af, (rot.attention_scaling, af)
    kept = (inv == plain).sum().item()
    interp = (ramp == 1).sum().item()
    blended = len(inv) - kept - interp
    assert kept > 0 and interp > 0 and blended > 0, (kept, interp, blended)
    print(f"yarn (theta {rp['rope_theta']}, factor {rp['factor']}, original_max_position_embeddings "
          f"{rp['original_max_position_embeddings']}, rope dim {cfg.qk_rope_head_dim}): correction range "
          f"[{low}, {high}], ramp {ramp.tolist()}")
    print(f"  {kept} kept, {blended} blended, {interp} interpolated (/factor); attention_factor {af}")
    print(f"  inv_freq yarn   {[f'{x:.6g}' for x in inv.tolist()]}")
    print(f"  inv_freq plain  {[f'{x:.6g}' for x in plain.tolist()]}")
    scale = deepseek_softmax_scale(cfg)
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    for layer in model.model.layers:
        assert layer.self_attn.scaling == scale, (layer.self_attn.scaling, scale)
    print(f"  softmax scale {scale:.9g} = {qk}^-0.5 ({qk ** -0.5:.9g}) * mscale(factor, mscale_all_dim)^2 "
          f"({scale / qk ** -0.5:.9g})")

    # --- routing: reimplementation == transformers ---------------------------
    recs, lo = router_records(model, tokens)
    assert torch.equal(lo, logits_f32)
    for gate, (logits, w_t, idx_t) in recs:
        w_r, idx_r = deepseek_route(model, gate, logits)
        a, b = canonical_route(w_t, idx_t), canonical_route(w_r, idx_r)
        assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert torch.equal(patched_router_logits(model, tokens), logits_f32)
    print(f"routing ({'sigmoid + correction bias, noaux_tc' if v3 else 'softmax, ' + cfg.topk_method}) "
          "reimplemented: bit-identical, also inside the model")

    # --- routing statistics ---------------------------------------------------
    t = sum(r[1][0].shape[0] for r in recs)
    nogroup = "greedy" if not v3 else None
    ch_group = sum(n_changed(r[1][2], deepseek_route(model, r[0], r[1][0], **(
        {"groups": False} if v3 else {"method": nogroup}))[1]) for r in recs)
    sets = {tuple(sorted(x)) for r in recs for x in r[1][2].tolist()}
    print(f"  {t} routing decisions (MoE layers x positions), {len(sets)} distinct expert sets")
    print(f"  group limit (top {cfg.topk_group} of {cfg.n_group} groups) changed {ch_group}/{t} "
          f"decisions vs plain top-{cfg.num_experts_per_tok}")
    assert ch_group > 0
    if v3:
        zero = torch.zeros(cfg.n_routed_experts)
        ch_bias = sum(n_changed(r[1][2], route_v3(cfg, r[1][0], zero)[1]) for r in recs)
        ch_mask0 = sum(n_changed(r[1][2], deepseek_route(model, r[0], r[1][0], mask_value=0.0)[1])
                       for r in recs)
        print(f"  e_score_correction_bias (std {DSV3_BIAS_STD}) changed {ch_bias}/{t} decisions vs bias 0")
        print(f"  masking dropped groups with 0.0 (the hub's remote-code modeling_deepseek.py) instead of "
              f"-inf (transformers) would change {ch_mask0}/{t}")
        assert ch_bias > 0
    for what, m in (("f32", model), ("bf16-rounded", mf.with_weights(model, sd_bf16_up))):
        gg, eg = routing_gaps(m, router_records(m, tokens)[0])
        print(f"  {what} weights: smallest group-selection margin {gg:.2e}, expert-selection margin {eg:.2e}")
        assert gg > 1e-4 and eg > 1e-4, (gg, eg)

    # --- each feature matters -------------------------------------------------
    print(f"{fam['name']} feature checks (same weights, one feature changed):")
    if v3:
        no_bias = {k: (torch.zeros_like(v) if k.endswith("e_score_correction_bias") else v)
                   for k, v in sd.items()}
        report_diff("(a) e_score_correction_bias zeroed", logits_f32,
                    mf.logits_of(mf.with_weights(model, no_bias), tokens))
        report_diff("(b) no group limit", logits_f32, patched_router_logits(model, tokens, groups=False))
        l0 = patched_router_logits(model, tokens, mask_value=0.0)
        print(f"  (c) dropped groups masked with 0.0 instead of -inf: max|diff|="
              f"{(l0 - logits_f32).abs().max().item():.4f}")
        report_diff("(d) norm_topk_prob False", logits_f32,
                    deepseek_variant_logits(fam, sd, tokens, norm_topk_prob=False))
        report_diff("(e) rope_interleave False (rotate_half on q_pe/k_pe as stored)", logits_f32,
                    deepseek_variant_logits(fam, sd, tokens, rope_interleave=False))
    else:
        report_diff("(a) topk_method greedy (no group limit)", logits_f32,
                    deepseek_variant_logits(fam, sd, tokens, topk_method="greedy"))
        same = deepseek_variant_logits(fam, sd, tokens, norm_topk_prob=True)
        assert torch.equal(same, logits_f32)
        print("  (b) norm_topk_prob True: identical logits (transformers' V2 router ignores it)")
    m = copy.deepcopy(model)
    m.model.rotary_emb.inv_freq = plain.clone()
    report_diff("(f) plain rope inv_freq instead of yarn's", logits_f32, mf.logits_of(m, tokens))
    m = copy.deepcopy(model)
    for layer in m.model.layers:
        layer.self_attn.scaling = qk ** -0.5
    report_diff("(g) softmax scale qk_head_dim^-0.5 without mscale^2", logits_f32, mf.logits_of(m, tokens))
    no_shared = {k: (torch.zeros_like(v) if ".shared_experts." in k else v) for k, v in sd.items()}
    report_diff("(h) shared experts dropped", logits_f32,
                mf.logits_of(mf.with_weights(model, no_shared), tokens))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--family", action="append", choices=[f["name"] for f in FAMILIES],
                    help="only this family (repeatable); default: all")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for fam in FAMILIES:
        if args.family and fam["name"] not in args.family:
            continue
        make_family(fam, args.out)


if __name__ == "__main__":
    main()
