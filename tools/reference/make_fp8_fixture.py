#!/usr/bin/env python3
"""Write a block-FP8 copy of deepseekv3-tiny in the DeepSeek-V3 hub layout and its reference logits.

Run from the repo root, after make_family_fixtures.py (which rewrites
reference.json without the key added here):

    python3 tools/reference/make_fp8_fixture.py [--out tests/fixtures]

Reads <out>/deepseekv3-tiny/f32/ and writes:

  fp8/            like deepseek-ai/DeepSeek-V3 on the hub (whose safetensors
                  headers list these dtypes; DeepSeek-R1 and Kimi K2 use the
                  same scheme): every nn.Linear weight inside the decoder layers,
                    self_attn.q_a_proj / q_b_proj (q_proj without q_lora) /
                    kv_a_proj_with_mqa / kv_b_proj / o_proj,
                    mlp.gate_proj / up_proj / down_proj (dense layers),
                    mlp.experts.E.{gate,up,down}_proj, mlp.shared_experts.*,
                  MTP layer 3 (= num_hidden_layers) included, as
                    <name>                float8_e4m3fn [rows, cols]
                    <name>_scale_inv      float32 [ceil(rows/B), ceil(cols/B)]
                  (<name> ends in ".weight", so the scale is "...weight_scale_inv"),
                  B = weight_block_size = 32 (the hub's is 128; 32 gives several
                  blocks per matrix here, and partial edge blocks: e.g.
                  kv_a_proj_with_mqa [40, 64] -> scale [2, 2], the second block
                  row 8 rows high; experts [48, 64] -> [2, 2]). Not FP8, as on
                  the hub: model.embed_tokens, lm_head, every norm, the router
                  mlp.gate.weight, and the MTP layer's embed_tokens, eh_proj and
                  shared_head.head -- all bfloat16 -- and
                  mlp.gate.e_score_correction_bias, float32.
                  Dequantization: W[r, c] = float(q[r, c]) * scale_inv[r // B, c // B].
                  Quantization (DeepSeek's weight_quant): per B x B block (edge
                  blocks as far as the matrix goes, i.e. zero-padded), s =
                  max|w| / 448 in float32, q = e4m3fn(w / s) (round to nearest
                  even; |w / s| <= 448 up to float rounding, clamped to +-448),
                  scale_inv = s.
                  Single model.safetensors (metadata {"format": "pt"});
                  config.json = the f32 one plus "quantization_config":
                  {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method":
                  "fp8", "weight_block_size": [32, 32]} and "torch_dtype":
                  "bfloat16".
  reference.json  one key added, every other key and byte kept: "logits_fp8",
                  per-position logits (for "tokens") of the weights in fp8/
                  dequantized in float32 (the bf16 tensors at their bf16 values,
                  the bias f32), computed in float32 by DeepseekV3ForCausalLM
                  (not through transformers' FP8 path).

Also checked: the e4m3fn decoding of all 256 codes (sign, 4 exponent bits with
bias 7, 3 mantissa bits, subnormals below 2^-6, no infinities, 0x7f / 0xff
NaN, max 448), that torch's float32 -> float8_e4m3fn cast rounds every value
quantized here to the nearest e4m3fn value with ties to the even code, that the
f32 model and our tensor bookkeeping reproduce reference.json's logits_f32 and
logits_bf16 exactly, and (when accelerate is importable, which transformers'
FP8 quantizer requires even to dequantize) what transformers' own loader makes
of fp8/: transformers 5.24 on CPU (FineGrainedFP8Config(dequantize=True), also
forced without a GPU) does NOT reproduce logits_fp8. Its Fp8Dequantize infers
the block as (rows // scale_rows, cols // scale_cols) instead of using
weight_block_size, so every matrix with a dimension that is not a multiple of
32 (kv_a_proj_with_mqa [40, 64] -> block rows 20; experts and shared experts
[48, 64] / [64, 48] -> 24) is dequantized wrongly (reported, and checked to be
exactly that); on the real checkpoint (kv_a_proj_with_mqa [576, 7168], scale
[5, 56]) the same code raises ValueError. Not an error in fp8/.
Deterministic: no random numbers; single-threaded CPU float32.
"""

import argparse
import json
import os
import re
import shutil
import sys

sys.dont_write_bytecode = True  # keep tools/reference/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import make_family_fixtures as mff  # noqa: E402  (family table, loader; unchanged)
import make_fixtures as mf  # noqa: E402  (logits_of, with_weights, kl_top1; unchanged)

NAME = "deepseekv3-tiny"
BLOCK = 32
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [BLOCK, BLOCK],
}

# The hub's FP8 tensors: the decoder layers' (and the MTP layer's) linear
# weights. Everything else keeps a float dtype.
FP8_RE = re.compile(
    r"^model\.layers\.\d+\."
    r"(self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
    r"|mlp\.(experts\.\d+\.|shared_experts\.)?(gate_proj|up_proj|down_proj))\.weight$"
)
# ... and what stays unquantized (the skip list of DeepSeek's bf16_cast_fp8.py,
# which matches the hub checkpoint): checked to be exactly the complement.
NOT_FP8_RE = re.compile(
    r"^(model\.embed_tokens\.weight|lm_head\.weight|model\.norm\.weight"
    r"|model\.layers\.\d+\.(input_layernorm|post_attention_layernorm|self_attn\.q_a_layernorm"
    r"|self_attn\.kv_a_layernorm|enorm|hnorm|shared_head\.norm|embed_tokens|eh_proj"
    r"|shared_head\.head|mlp\.gate)\.weight"
    r"|model\.layers\.\d+\.mlp\.gate\.e_score_correction_bias)$"
)
F32_SUFFIXES = ("mlp.gate.e_score_correction_bias",)  # f32 on the hub; the rest bf16


def is_fp8(name):
    fp8, other = bool(FP8_RE.match(name)), bool(NOT_FP8_RE.match(name))
    assert fp8 != other, name
    return fp8


# ------------------------------------------------------------- e4m3fn ----

def e4m3fn_decode(code):
    """Value of an e4m3fn byte, from the format's definition."""
    sign = -1.0 if code & 0x80 else 1.0
    e, m = (code >> 3) & 0xF, code & 0x7
    if e == 0xF and m == 0x7:
        return float("nan")  # 0x7f, 0xff; no infinities
    if e == 0:
        return sign * m / 8 * 2.0 ** -6  # subnormal
    return sign * (1 + m / 8) * 2.0 ** (e - 7)


def check_e4m3fn_codec():
    codes = torch.arange(256, dtype=torch.uint8)
    got = codes.view(FP8).float()
    want = torch.tensor([e4m3fn_decode(c) for c in range(256)], dtype=torch.float32)
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan) and torch.equal(got[~nan], want[~nan])
    assert [c for c in range(256) if nan[c]] == [0x7F, 0xFF]
    assert want[~nan].abs().max().item() == FP8_MAX == torch.finfo(FP8).max
    assert torch.equal(want[~nan].to(FP8).view(torch.uint8), codes[~nan])  # exact values round-trip


def rne_e4m3fn(x):
    """Independent float32 -> e4m3fn rounding (|x| <= 448): nearest value,
    ties to the even code. Returns float32 values."""
    grid = torch.tensor([e4m3fn_decode(c) for c in range(0x7F)], dtype=torch.float64)  # 0 .. 448
    a = x.double().abs().flatten()
    hi = torch.searchsorted(grid, a).clamp(max=len(grid) - 1)
    lo = (hi - 1).clamp(min=0)
    dlo, dhi = a - grid[lo], grid[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = torch.where(pick_hi, hi, lo)
    return (grid[code] * torch.sign(x.double().flatten())).float().reshape(x.shape)


# ----------------------------------------------------------- quantize ----

def blocks_of(w, b=BLOCK):
    """[rows, cols] -> zero-padded [rows/b, b, cols/b, b] (ceil)."""
    r, c = w.shape
    rb, cb = -(-r // b), -(-c // b)
    p = torch.zeros(rb * b, cb * b, dtype=w.dtype)
    p[:r, :c] = w
    return p.reshape(rb, b, cb, b)


def expand_scale(s, shape, b=BLOCK):
    """[ceil(rows/b), ceil(cols/b)] -> [rows, cols]: element (r, c) = s[r // b, c // b]."""
    return s.repeat_interleave(b, 0).repeat_interleave(b, 1)[: shape[0], : shape[1]]


def fp8_quantize(w):
    """DeepSeek's weight_quant in float32: (q float8_e4m3fn [r, c], scale_inv f32 [ceil(r/B), ceil(c/B)])."""
    assert w.dtype == torch.float32 and w.dim() == 2
    s = blocks_of(w).abs().amax(dim=(1, 3)) / FP8_MAX
    assert (s > 0).all()  # an all-zero block would give 0/0 (DeepSeek's kernel too)
    x = w / expand_scale(s, w.shape)
    assert x.abs().max().item() <= FP8_MAX * (1 + 2 ** -20), x.abs().max()
    x = x.clamp(-FP8_MAX, FP8_MAX)
    q = x.to(FP8)
    assert torch.equal(q.float(), rne_e4m3fn(x)), "torch's e4m3fn cast is not round-to-nearest-even"
    return q, s


def fp8_dequantize(q, s):
    return q.float() * expand_scale(s, q.shape)


def fp8_tensors(f32):
    """Hub-layout tensors (fp8 + scale_inv, bf16, f32 bias) and the float32
    values they stand for."""
    out, deq = {}, {}
    for k in sorted(f32):
        w = f32[k]
        if is_fp8(k):
            q, s = fp8_quantize(w)
            out[k], out[k + "_scale_inv"] = q, s
            deq[k] = fp8_dequantize(q, s)
        elif k.endswith(F32_SUFFIXES):
            out[k] = w.clone()
            deq[k] = w.clone()
        else:
            out[k] = w.to(torch.bfloat16)
            deq[k] = out[k].float()
    return out, deq


# --------------------------------------------------------------- model ----

def model_layout(model, ckpt):
    """Checkpoint tensors (per-expert names) -> the model's state dict (fused
    experts: gate_up_proj[e] = [gate_e; up_e], down_proj[e] = down_e). The MTP
    layer's tensors are not used."""
    sd = {}
    for k, ref in model.state_dict().items():
        if k.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            pre = k[: k.rindex(".") + 1]
            e = ref.shape[0]
            if k.endswith("gate_up_proj"):
                v = torch.stack([torch.cat([ckpt[f"{pre}{i}.gate_proj.weight"],
                                            ckpt[f"{pre}{i}.up_proj.weight"]]) for i in range(e)])
            else:
                v = torch.stack([ckpt[f"{pre}{i}.down_proj.weight"] for i in range(e)])
        else:
            v = ckpt[k]
        assert v.shape == ref.shape and v.dtype == torch.float32, (k, v.shape, v.dtype)
        sd[k] = v
    return sd


def inferred_block_dequantize(q, s):
    """transformers 5.24's Fp8Dequantize._dequantize_one: the block size is
    not read from weight_block_size but inferred as (rows // scale_rows,
    cols // scale_cols) -- wrong (or a ValueError when not divisible) for a
    dimension that is not a multiple of the block."""
    (r, c), (sr, sc) = q.shape, s.shape
    if r % sr or c % sc:
        return None
    return (q.float().reshape(sr, r // sr, sc, c // sc) * s[:, None, :, None]).reshape(r, c)


def transformers_fp8_check(fam, model, fp8_dir, tensors, deq, sd_fp8, tokens, logits_fp8):
    """What transformers' own FP8 loader (FineGrainedFP8HfQuantizer with
    dequantize=True -> Fp8Dequantize) makes of fp8/. Reports, never fails."""
    try:
        import accelerate  # noqa: F401  (FineGrainedFP8HfQuantizer.validate_environment needs it)
    except ImportError:
        print("transformers FP8 load: not possible here: FineGrainedFP8HfQuantizer.validate_environment "
              "raises ImportError without accelerate, even with dequantize=True")
        return
    from transformers import FineGrainedFP8Config

    try:
        m = mff.load(fam, fp8_dir, dtype=torch.float32,
                     quantization_config=FineGrainedFP8Config(dequantize=True, weight_block_size=[BLOCK, BLOCK]))
    except Exception as e:  # noqa: BLE001
        print(f"transformers FP8 load (dequantize=True): failed: {type(e).__name__}: {e}")
        return
    loaded = m.state_dict()
    assert sorted(loaded) == sorted(sd_fp8), sorted(set(loaded) ^ set(sd_fp8))
    bad = []
    for k, v in sd_fp8.items():
        if not torch.equal(loaded[k].float(), v):
            bad.append((k, (loaded[k].float() - v).abs().max().item(), str(loaded[k].dtype)))
    got = mf.logits_of(m, tokens)
    print(f"transformers FP8 load (dequantize=True, CPU): {len(sd_fp8) - len(bad)}/{len(sd_fp8)} model "
          f"tensors identical to ours; logits max|diff| vs logits_fp8 {(got - logits_fp8).abs().max().item():.3e}")
    for k, d, dt in bad:
        print(f"  differs: {k} ({dt}) max|diff| {d:.3e}")
    inferred = {k: (inferred_block_dequantize(v, tensors[k + "_scale_inv"]) if v.dtype == FP8 else deq[k])
                for k, v in tensors.items() if k in deq}
    if bad and all(v is not None for v in inferred.values()):
        sd_inf = model_layout(model, inferred)
        same = all(torch.equal(loaded[k].float(), v) for k, v in sd_inf.items())
        print(f"  {'all' if same else 'NOT all'} of transformers' tensors equal a dequantization with the block "
              f"inferred as (rows // scale_rows, cols // scale_cols) instead of weight_block_size; the ones "
              f"that differ have a dimension that is not a multiple of {BLOCK}")


# ---------------------------------------------------------------- main ----

def write_fp8(f32_dir, tensors, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(f32_dir, "config.json")) as f:
        cfg = json.load(f)
    assert "quantization_config" not in cfg and cfg["torch_dtype"] == "float32", cfg
    cfg["quantization_config"] = QUANTIZATION_CONFIG
    cfg["torch_dtype"] = "bfloat16"
    with open(os.path.join(d, "config.json"), "w") as f:  # as make_family_fixtures.write_f32
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    check_e4m3fn_codec()

    fam = next(f for f in mff.FAMILIES if f["name"] == NAME)
    root = os.path.join(args.out, NAME)
    f32_dir, fp8_dir = os.path.join(root, "f32"), os.path.join(root, "fp8")
    ref_path = os.path.join(root, "reference.json")
    with open(ref_path) as f:
        ref_text = f.read()
    ref = json.loads(ref_text)
    # Same writer as make_fixtures / make_family_fixtures (json.dump(ref) +
    # "\n"): the text re-serializes byte for byte, so only the new key changes.
    assert json.dumps(ref) + "\n" == ref_text
    tokens = ref["tokens"]

    f32 = load_file(os.path.join(f32_dir, "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in f32.values())
    tensors, deq = fp8_tensors(f32)
    n_fp8 = sum(v.dtype == FP8 for v in tensors.values())
    n_scale = sum(k.endswith("_scale_inv") for k in tensors)
    assert n_fp8 == n_scale and len(tensors) == len(f32) + n_fp8
    for k, v in tensors.items():
        if v.dtype == FP8:
            s = tensors[k + "_scale_inv"]
            assert s.dtype == torch.float32
            assert tuple(s.shape) == tuple(-(-n // BLOCK) for n in v.shape), (k, v.shape, s.shape)
    assert tuple(tensors["model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"].shape) == (2, 2)

    # The f32 model reproduces reference.json; our layout conversion is exact.
    model = mff.load(fam, f32_dir, dtype=torch.float32)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(a, b) for a, b in zip(model_layout(model, f32).values(), sd.values()))
    logits_f32 = mf.logits_of(model, tokens)
    assert torch.equal(logits_f32, torch.tensor(ref["logits_f32"], dtype=torch.float32))
    sd_bf16 = {k: v.to(torch.bfloat16).float() for k, v in sd.items()}
    assert torch.equal(mf.logits_of(mf.with_weights(model, sd_bf16), tokens),
                       torch.tensor(ref["logits_bf16"], dtype=torch.float32))

    sd_fp8 = model_layout(model, deq)
    logits_fp8 = mf.logits_of(mf.with_weights(model, sd_fp8), tokens)

    write_fp8(f32_dir, tensors, fp8_dir)
    with safe_open(os.path.join(fp8_dir, "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(tensors)
        for k in f.keys():
            t = f.get_tensor(k)
            assert t.dtype == tensors[k].dtype and torch.equal(t.view(torch.uint8), tensors[k].view(torch.uint8)), k

    ref["logits_fp8"] = logits_fp8.tolist()  # appended (a re-run replaces it in place)
    with open(ref_path, "w") as f:
        json.dump(ref, f)
        f.write("\n")
    with open(ref_path) as f:
        again = json.load(f)
    assert torch.equal(torch.tensor(again["logits_fp8"], dtype=torch.float32), logits_fp8)

    # Summary.
    print(f"== {NAME} fp8 (weight_block_size [{BLOCK}, {BLOCK}])")
    print(f"fp8 tensors       {n_fp8} (+ {n_scale} *_scale_inv f32), "
          f"{sum(v.dtype == torch.bfloat16 for v in tensors.values())} bf16, "
          f"{sum(v.dtype == torch.float32 and not k.endswith('_scale_inv') for k, v in tensors.items())} f32 "
          f"({', '.join(F32_SUFFIXES)})")
    print("  not fp8:", ", ".join(sorted({re.sub(r"\.\d+\.", ".N.", k) for k in f32 if not is_fp8(k)})))
    err = {k: (deq[k] - f32[k]).abs() for k in f32 if is_fp8(k)}
    worst = max(err, key=lambda k: err[k].max().item())
    rel = max((blocks_of(err[k]).amax(dim=(1, 3)) / (tensors[k + "_scale_inv"] * FP8_MAX)).max().item()
              for k in err)
    print(f"dequantized fp8 vs f32 weights: max|diff| {err[worst].max().item():.3e} ({worst}); "
          f"max|diff| / block max|w| {rel:.4f} (bound 1/28 = {1 / 28:.4f})")
    bf = max((deq[k] - f32[k]).abs().max().item() for k in f32 if tensors[k].dtype == torch.bfloat16)
    print(f"bf16 tensors vs f32: max|diff| {bf:.3e}")
    for what, lq in (("fp8", logits_fp8), ("bf16", torch.tensor(ref["logits_bf16"]))):
        kl, t1 = mf.kl_top1(logits_f32, lq)
        print(f"{what:4s} vs f32       kl={kl:.3e} top1={t1:.3f}")
    d = (logits_fp8 - logits_f32).abs().max().item()
    print(f"logits_fp8 vs logits_f32 max|diff| {d:.4f}; greedy argmax positions changed: "
          f"{(logits_fp8.argmax(-1) != logits_f32.argmax(-1)).sum().item()}/{len(tokens)}")
    m = mf.with_weights(model, sd_fp8)
    gg, eg = mff.routing_gaps(m, mff.router_records(m, tokens)[0])
    print(f"fp8 weights: smallest group-selection margin {gg:.2e}, expert-selection margin {eg:.2e}")
    transformers_fp8_check(fam, model, fp8_dir, tensors, deq, sd_fp8, tokens, logits_fp8)
    for fn in sorted(os.listdir(fp8_dir)):
        p = os.path.join(fp8_dir, fn)
        print(f"{os.path.getsize(p):>10d}  {os.path.relpath(p, args.out)}")


if __name__ == "__main__":
    main()
