#!/usr/bin/env python3
"""Build a tiny random Mixtral and write conformance fixtures for `mote`.

Run from the repo root:

    python3 tools/reference/make_fixtures.py [--out tests/fixtures]

Writes, under <out>/mixtral-tiny/:

  f32/            `save_pretrained` output in float32, single model.safetensors,
                  per-expert tensor names as transformers saves them
                  (model.layers.L.block_sparse_moe.experts.E.w1/w2/w3.weight,
                  block_sparse_moe.gate.weight); config.json rewritten to the
                  hub's older style (top-level "rope_theta", "rope_scaling": null,
                  no "rope_parameters", "torch_dtype" instead of "dtype").
  bf16/           the same weights rounded to bfloat16 in the fused
                  transformers-5 layout (model.layers.L.mlp.experts.gate_up_proj
                  (E, 2F, H), .down_proj (E, H, F), .mlp.gate.weight), sharded
                  into 3 safetensors files + model.safetensors.index.json, with a
                  transformers-5 config.json ("rope_parameters", dtype bfloat16).
                  Loading it with MixtralForCausalLM.from_pretrained is checked to
                  reproduce the bf16 reference logits.
  reference.json  prompt, greedy continuation (eos ignored), chosen eos id,
                  greedy truncated at eos, per-position logits of the f32 model
                  and of the bf16-rounded weights (computed in f32), and the
                  KL / top-1 agreement of fake-quantized (f16/int8/int4) models
                  against f32.

Why: the Rust runtime must load both checkpoint layouts (old per-expert names
and new fused experts, single file and sharded, old and new rope config), match
transformers' logits, stop at eos like `generate`, and its quantizers must
reproduce the fake-quantization numbers below bit-for-bit in spirit (same block
layout, same rounding), so that sim_kl/sim_top1 are comparable.

Fake quantization (must match the Rust quantizer): embed_tokens, q/k/v/o_proj,
expert w1/w2/w3 and lm_head are quantized; router and norms stay f32. Each 2-D
weight [rows, cols] is quantized row by row in blocks of 32 (last block
zero-padded), round = half away from zero, arithmetic in float32:
  f16:  w.half().float()
  int8: d16 = f16(amax/127); q = clamp(round(x/d16), -127, 127); w' = d16*q
  int4: m = signed value of max |x| (first on ties); d16 = f16(m/-8);
        q = clamp(round(x/d16), -8, 7); w' = d16*q
(d16 == 0 -> q = 0).

Deterministic: torch seeded with 0, single-threaded CPU float32.
"""

import argparse
import copy
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import MixtralConfig, MixtralForCausalLM

PROMPT = [1, 17, 42, 99, 7, 200, 31, 64]
N_NEW = 16
BLOCK = 32


# ---------------------------------------------------------------- model ----

def build_model():
    torch.manual_seed(0)
    cfg = MixtralConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
    )
    cfg._attn_implementation = "eager"
    model = MixtralForCausalLM(cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    assert model.config.rope_parameters["rope_theta"] == 1e6, model.config.rope_parameters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # input/post_attention_layernorm, final norm
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:  # embeddings, linears, router, fused experts
                p.copy_(0.08 * torch.randn_like(p))
    model.eval()
    return model


@torch.no_grad()
def logits_of(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float()


@torch.no_grad()
def greedy_ignore_eos(model, prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(logits_of(model, seq)[-1].argmax()))
    return seq[len(prompt):]


def write_reference(root, greedy, eos, greedy_until_eos, tokens, logits_f32,
                    logits_bf16, sim_kl, sim_top1, **extra):
    """Writes root/reference.json: the keys every family's fixture has
    (see the module docstring), then any `extra` ones (e.g. logits_mxfp4)."""
    ref = {
        "prompt": PROMPT,
        "greedy": greedy,
        "eos_token_id": eos,
        "greedy_until_eos": greedy_until_eos,
        "tokens": tokens,
        "logits_f32": logits_f32.tolist(),
        "logits_bf16": logits_bf16.tolist(),
        "sim_kl": sim_kl,
        "sim_top1": sim_top1,
        **extra,
    }
    with open(os.path.join(root, "reference.json"), "w") as f:
        json.dump(ref, f)
        f.write("\n")


def greedy_and_eos(model):
    """The greedy continuation of PROMPT (N_NEW tokens, eos ignored), the
    eos chosen from it and the continuation cut after it; sets that eos
    (and bos 1) in the model's configs and checks that generate() (the
    KV-cache path) stops there too."""
    greedy = greedy_ignore_eos(model, PROMPT, N_NEW)
    eos = choose_eos(greedy)
    cut = greedy.index(eos) + 1
    greedy_until_eos = greedy[:cut]
    model.config.eos_token_id = eos
    model.config.bos_token_id = 1
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = 1
    model.generation_config.pad_token_id = eos
    with torch.no_grad():
        gen = model.generate(
            torch.tensor([PROMPT]), max_new_tokens=N_NEW, do_sample=False,
            eos_token_id=eos, pad_token_id=eos,
        )[0, len(PROMPT):].tolist()
    assert gen == greedy_until_eos, (gen, greedy_until_eos)
    return greedy, eos, greedy_until_eos


def choose_eos(greedy):
    if greedy[9] not in greedy[:9]:
        return greedy[9]
    for i in range(4, len(greedy)):
        if greedy[i] not in greedy[:i]:
            return greedy[i]
    raise RuntimeError(f"no suitable eos in {greedy}")


def with_weights(model, sd):
    m = copy.deepcopy(model)
    m.load_state_dict(sd, strict=True)
    m.eval()
    return m


# -------------------------------------------------------- fake quantize ----

def round_away(v):
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def fake_quant_2d(w, kind):
    """w: float32 ndarray [rows, cols]; returns dequantized float32 ndarray."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if kind == "f16":
        return w.astype(np.float16).astype(np.float32)
    rows, cols = w.shape
    nb = -(-cols // BLOCK)
    x = np.zeros((rows, nb * BLOCK), dtype=np.float32)
    x[:, :cols] = w
    x = x.reshape(rows, nb, BLOCK)
    if kind == "int8":
        d = np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)
        lo, hi = -127, 127
    elif kind == "int4":
        idx = np.abs(x).argmax(axis=-1)[..., None]  # first max on ties
        m = np.take_along_axis(x, idx, axis=-1)
        d = m / np.float32(-8)
        lo, hi = -8, 7
    else:
        raise ValueError(kind)
    d16 = d.astype(np.float32).astype(np.float16).astype(np.float32)
    safe = np.where(d16 == 0, np.float32(1), d16)
    q = np.clip(round_away(x / safe), lo, hi).astype(np.float32)
    q = np.where(d16 == 0, np.float32(0), q)
    deq = (d16 * q).astype(np.float32).reshape(rows, nb * BLOCK)[:, :cols]
    assert deq.dtype == np.float32
    return np.ascontiguousarray(deq)


def is_quantized(name):
    if "norm" in name or name.endswith("mlp.gate.weight"):
        return False
    return True


def fake_quant_state(sd, kind):
    out = {}
    for name, t in sd.items():
        if not is_quantized(name):
            out[name] = t.clone()
            continue
        a = t.detach().float().numpy()
        shp = a.shape  # 2-D [rows, cols] or fused experts [E, rows, cols]
        deq = fake_quant_2d(a.reshape(-1, shp[-1]), kind).reshape(shp)
        out[name] = torch.from_numpy(deq)
    return out


def kl_top1(ref_logits, q_logits):
    lp = torch.log_softmax(ref_logits.double(), -1)
    lq = torch.log_softmax(q_logits.double(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
    top1 = (ref_logits.argmax(-1) == q_logits.argmax(-1)).double().mean().item()
    return kl, top1


# ---------------------------------------------------------------- write ----

def write_f32(model, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    files = sorted(os.listdir(d))
    assert files == ["config.json", "model.safetensors"], files
    keys = set(load_file(os.path.join(d, "model.safetensors")).keys())
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in keys, sorted(keys)[:20]
    assert "model.layers.0.block_sparse_moe.gate.weight" in keys
    assert not any("gate_up_proj" in k for k in keys)
    # Rewrite config to the hub's older style.
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    assert rp == {"rope_theta": 1e6, "rope_type": "default"}, rp
    new = {}
    for k, v in cfg.items():
        if k == "dtype":
            new["torch_dtype"] = v
        else:
            new[k] = v
        if k == "rms_norm_eps":
            new["rope_theta"] = 1000000.0
            new["rope_scaling"] = None
    assert "rope_theta" in new
    with open(path, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
        f.write("\n")


def fused_bf16_tensors(sd_fused):
    """transformers-5 layout (already what the model holds in memory), bf16."""
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in sd_fused.items()}


def write_shards(tensors, d, n_layers, nshards=3):
    """Writes `tensors` into `d` as `nshards` safetensors files split by layer
    (see shard_of) plus model.safetensors.index.json, as transformers does."""
    shards = [dict() for _ in range(nshards)]
    for name in sorted(tensors):
        shards[shard_of(name, n_layers)][name] = tensors[name]
    weight_map = {}
    total_size = 0
    total_params = 0
    for i, sh in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{nshards:05d}.safetensors"
        save_file(sh, os.path.join(d, fname), metadata={"format": "pt"})
        for k, v in sh.items():
            weight_map[k] = fname
            total_size += v.numel() * v.element_size()
            total_params += v.numel()
    index = {
        "metadata": {"total_parameters": total_params, "total_size": total_size},
        "weight_map": dict(sorted(weight_map.items())),
    }
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def shard_of(name, n_layers):
    # 3 shards: [embed, layer 0], [layer 1 .. n-2], [layer n-1, norm, lm_head]
    if name.startswith("model.layers."):
        li = int(name.split(".")[2])
        return 0 if li == 0 else (2 if li == n_layers - 1 else 1)
    return 0 if "embed_tokens" in name else 2


def write_bf16(model, tensors, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    n_layers = model.config.num_hidden_layers
    write_shards(tensors, d, n_layers)
    cfg = copy.deepcopy(model.config)
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(d)
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    assert c["rope_parameters"] == {"rope_theta": 1e6, "rope_type": "default"}, c
    assert c["dtype"] == "bfloat16", c.get("dtype")
    assert "rope_theta" not in c


# ----------------------------------------------------------------- main ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    root = os.path.join(args.out, "mixtral-tiny")
    os.makedirs(root, exist_ok=True)

    model = build_model()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in sd:
        assert k.endswith(".weight") or k.endswith("_proj"), k

    greedy, eos, greedy_until_eos = greedy_and_eos(model)

    tokens = PROMPT + greedy[: N_NEW - 1]
    logits_f32 = logits_of(model, tokens)
    assert logits_f32.argmax(-1)[len(PROMPT) - 1:].tolist() == greedy

    # bf16-rounded weights, computed in f32.
    bf16 = fused_bf16_tensors(sd)
    sd_bf16_up = {k: v.float() for k, v in bf16.items()}
    logits_bf16 = logits_of(with_weights(model, sd_bf16_up), tokens)

    sim_kl, sim_top1 = {}, {}
    for kind in ("f16", "int8", "int4"):
        lq = logits_of(with_weights(model, fake_quant_state(sd, kind)), tokens)
        sim_kl[kind], sim_top1[kind] = kl_top1(logits_f32, lq)

    # f32 checkpoint (per-expert names, old-style config), then reload check.
    f32_dir = os.path.join(root, "f32")
    write_f32(model, f32_dir)
    m = MixtralForCausalLM.from_pretrained(f32_dir, dtype=torch.float32, attn_implementation="eager").eval()
    assert m.config.rope_parameters["rope_theta"] == 1e6
    assert m.config.eos_token_id == eos
    got = logits_of(m, tokens)
    assert torch.equal(got, logits_f32), (got - logits_f32).abs().max()

    # bf16 checkpoint (fused layout, sharded), then reload check.
    bf16_dir = os.path.join(root, "bf16")
    write_bf16(model, bf16, bf16_dir)
    m = MixtralForCausalLM.from_pretrained(bf16_dir, dtype=torch.float32, attn_implementation="eager").eval()
    assert m.config.eos_token_id == eos
    loaded = m.state_dict()
    for k, v in sd_bf16_up.items():
        assert torch.equal(loaded[k], v), k
    got = logits_of(m, tokens)
    assert torch.equal(got, logits_bf16), (got - logits_bf16).abs().max()
    m = MixtralForCausalLM.from_pretrained(bf16_dir, attn_implementation="eager").eval()
    assert m.dtype == torch.bfloat16, m.dtype
    del m

    write_reference(root, greedy, eos, greedy_until_eos, tokens, logits_f32, logits_bf16,
                    sim_kl, sim_top1)

    # Summary.
    print(f"greedy            {greedy}")
    print(f"eos_token_id      {eos}  (greedy_until_eos has {len(greedy_until_eos)} tokens)")
    kl_b, t1_b = kl_top1(logits_f32, logits_bf16)
    print(f"bf16 vs f32       kl={kl_b:.3e} top1={t1_b:.3f}")
    for kind in ("f16", "int8", "int4"):
        print(f"sim {kind:5s}         kl={sim_kl[kind]:.3e} top1={sim_top1[kind]:.3f}")
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
