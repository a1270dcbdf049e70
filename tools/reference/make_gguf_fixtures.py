#!/usr/bin/env python3
"""GGUF fixtures: the tiny transformers fixtures written as llama.cpp writes
them, quantized by llama.cpp, and llama.cpp's logits and tokens on each file.

Run from the repo root (needs numpy, safetensors, gguf and llama-cpp-python;
see tools/reference/requirements.txt):

    python3 tools/reference/make_gguf_fixtures.py [--out tests/fixtures/gguf]

For each family in FAMILIES it builds an f32 GGUF (used, then deleted: it
would only double the fixtures' size) and keeps what llama.cpp's quantizer
makes of it:

  - f32: the f32 fixture's weights under llama.cpp's names and metadata
    keys, as convert_hf_to_gguf.py writes them: experts stacked in
    ffn_{gate,up,down}_exps, Q and K rows permuted for interleaved rope
    (`llama`, Mixtral included, and `granitemoe`), Llama 3 rope scaling as
    a `rope_freqs` tensor of divisors, DeepSeek's kv_b split into
    attn_k_b / attn_v_b, and a tokenizer trained here on a short text to
    fill the fixtures' 256-token vocabulary: SentencePiece-style (`llama`
    model, scores) for Mixtral, byte-level BPE (`gpt2` model, `qwen2`
    pre-tokenizer) for the others;
  - <out>/<family>-q4_0.gguf (and -q8_0.gguf for Q8_FAMILIES): that file
    through llama.cpp's own quantizer (`llama_model_quantize`; tensors
    whose rows are not whole blocks fall back as llama.cpp decides);
  - llama-tiny also as q4_1, q5_0 and q5_1 (types mote re-quantizes).

Also <out>/llama-tiny-q4_0-split-0000{1,2,3}-of-00003.gguf (the q4_0
file's tensors as a split set), <out>/mixtral-tiny-q4_0-unstacked.gguf (one
tensor an expert, as Mixtral GGUFs were before llama.cpp stacked them), <out>/blocks.json (random blocks of every
type mote decodes, with gguf-py's values for them) and <out>/reference.json:
per file, llama.cpp's logits at every position of the family's prompt (its
reference.json prompt), the ggml type of every tensor, and llama.cpp's
tokens for a few texts.
"""
import argparse
import ctypes
import json
import os
from collections import Counter

import numpy as np
from safetensors.numpy import load_file
import gguf
import llama_cpp

from make_tokenizer_fixtures import bytes_to_unicode  # GPT-2's byte alphabet

FAMILIES = ["llama-tiny", "mixtral-tiny", "qwen3moe-tiny", "qwen2moe-tiny", "granitemoe-tiny",
            "granitemoeshared-tiny", "olmoe-tiny", "deepseekv3-tiny", "hunyuanmoe-tiny", "gptoss-tiny"]
# deepseekv2-tiny has no query compression (q_lora_rank null), which
# llama.cpp's deepseek2 loader takes only from 27-layer files (V2-Lite).
# Q8_0 files for a few families only (the type's copy is the same for all;
# the fixtures stay small).
Q8_FAMILIES = ["llama-tiny", "qwen3moe-tiny", "deepseekv3-tiny"]
ARCH = {"LlamaForCausalLM": "llama", "MixtralForCausalLM": "llama", "Qwen3MoeForCausalLM": "qwen3moe",
        "OlmoeForCausalLM": "olmoe", "Qwen2MoeForCausalLM": "qwen2moe", "GraniteMoeForCausalLM": "granitemoe",
        "GraniteMoeSharedForCausalLM": "granitemoe", "DeepseekV2ForCausalLM": "deepseek2",
        "DeepseekV3ForCausalLM": "deepseek2", "HunYuanMoEV1ForCausalLM": "hunyuan-moe",
        "GptOssForCausalLM": "gpt-oss"}
TEXTS = ["In the beginning God created the heaven and the earth.",
         "And the earth was without form, and void; 1234 and 56.\n\nAmen  !"]
TRAIN = (TEXTS[0] + " And God said, Let there be light: and there was light. And God saw the light, "
         "that it was good: and God divided the light from the darkness. ") * 4


def learn_merges(words, budget):
    """Up to `budget` BPE merges learned on `words` (lists of symbols, merged
    in place): the most frequent adjacent pair each time."""
    merges = []
    while len(merges) < budget:
        pairs = Counter()
        for w in words:
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    return merges


def tokenizer(vocab_size):
    """Byte-level BPE: printable ASCII + newline, then merges learned on
    TRAIN, then unused tokens up to the vocabulary size."""
    bc = bytes_to_unicode()
    tokens = [bc[b] for b in [10] + list(range(32, 127))]
    tokens.insert(0, "<|endoftext|>")
    words = [[bc[b] for b in w.encode()] for w in TRAIN.replace(" ", "\0 ").split("\0")]
    pairs = learn_merges(words, vocab_size - len(tokens))
    merges = [f"{a} {b}" for a, b in pairs]
    tokens += [a + b for a, b in pairs]
    types = [3] + [1] * (len(tokens) - 1)
    # llama.cpp wants one token an embedding row: the rest are unused (type 5).
    while len(tokens) < vocab_size:
        tokens.append(f"[UNUSED_{len(tokens)}]")
        types.append(5)
    return tokens, types, merges


def spm_tokenizer(vocab_size):
    """SentencePiece-style (`llama` model): <unk> <s> </s>, a <0x0A> byte
    token, `▁` and printable ASCII, then pieces merged on TRAIN (spaces as
    `▁`), scored so that earlier merges win, then unused tokens."""
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581"] + [chr(b) for b in range(33, 127)]
    types = [2, 3, 3, 6] + [1] * (len(tokens) - 4)
    scores = [0.0] * 4 + [-1000.0] * (len(tokens) - 4)
    words = [list(w) for w in ("\u2581" + TRAIN.replace(" ", "\0\u2581")).split("\0")]
    for a, b in learn_merges(words, vocab_size - len(tokens)):
        tokens.append(a + b)
        types.append(1)
        scores.append(-float(len(tokens)))
    while len(tokens) < vocab_size:
        tokens.append(f"[UNUSED_{len(tokens)}]")
        types.append(5)
        scores.append(-1e9)
    return tokens, types, scores


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_factors(c):
    rs = c["rope_scaling"]
    base, dim = c.get("rope_theta", 10000.0), c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    factor, low, high, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in freqs:
        wavelen = 2 * np.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_f32(family, path):
    src = f"tests/fixtures/{family}/f32"
    c = json.load(open(f"{src}/config.json"))
    t = load_file(f"{src}/model.safetensors")
    cls = c["architectures"][0]
    arch = ARCH[cls]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    if arch == "olmoe" and kv != heads:
        # llama.cpp's olmoe graph takes one key/value head a query head (its
        # k_norm is hidden_size wide): the same model with each key/value
        # head repeated for the query heads that share it (the RMS over the
        # whole k projection is unchanged by the repetition).
        rep = heads // kv
        for l in range(c["num_hidden_layers"]):
            p = f"model.layers.{l}.self_attn."
            for n in ["k_proj.weight", "v_proj.weight", "k_norm.weight"]:
                w0 = t[p + n]
                t[p + n] = np.repeat(w0.reshape(kv, head_dim, *w0.shape[1:]), rep, axis=0).reshape(heads * head_dim, *w0.shape[1:])
        kv = heads
    experts = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts") or 0
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(heads)
    if arch == "deepseek2":
        # As llama.cpp's converter writes DeepSeek: MLA as one key/value
        # head of the latent, kv_b split into attn_k_b / attn_v_b.
        nope, rope, vdim, lora = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
        w.add_head_count_kv(1)
        w.add_key_length(lora + rope)
        w.add_value_length(lora)
        w.add_key_length_mla(nope + rope)
        w.add_value_length_mla(vdim)
        w.add_rope_dimension_count(rope)
        w.add_kv_lora_rank(lora)
        if c.get("q_lora_rank"):
            w.add_q_lora_rank(c["q_lora_rank"])
        w.add_leading_dense_block_count(c["first_k_dense_replace"])
        w.add_expert_shared_count(c["n_shared_experts"])
        w.add_expert_weights_scale(c["routed_scaling_factor"])
        w.add_expert_weights_norm(bool(c["norm_topk_prob"]))
        sig = c.get("scoring_func") == "sigmoid"
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if sig else gguf.ExpertGatingFuncType.SOFTMAX)
        if c.get("topk_method") in ("group_limited_greedy", "noaux_tc"):
            w.add_uint32(f"{arch}.expert_group_count", c["n_group"])
            w.add_uint32(f"{arch}.expert_group_used_count", c["topk_group"])
        rs = c["rope_scaling"]
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rs["factor"])
        w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
        w.add_rope_scaling_yarn_log_mul(0.1 * rs["mscale_all_dim"])
        experts = c["n_routed_experts"]
    else:
        w.add_head_count_kv(kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_freq_base(c.get("rope_theta", 10000.0))
    w.add_file_type(0)
    if experts:
        w.add_expert_count(experts)
        w.add_expert_used_count(c.get("num_experts_per_tok") or c.get("moe_topk"))
        if c.get("moe_intermediate_size"):
            w.add_expert_feed_forward_length(c["moe_intermediate_size"])
        shared = c.get("shared_expert_intermediate_size") or c.get("shared_intermediate_size")
        if shared:
            w.add_expert_shared_feed_forward_length(shared)
    if arch == "gpt-oss":
        w.add_expert_feed_forward_length(c["intermediate_size"])
        w.add_sliding_window(c["sliding_window"])
        rs = c["rope_scaling"]
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rs["factor"])
        w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
    if arch == "hunyuan-moe":
        w.add_expert_feed_forward_length(c["intermediate_size"])
        w.add_expert_shared_feed_forward_length(c["intermediate_size"])
        w.add_expert_shared_count(1)
    if arch == "granitemoe":
        w.add_embedding_scale(c["embedding_multiplier"])
        w.add_residual_scale(c["residual_multiplier"])
        w.add_logit_scale(c["logits_scaling"])
        w.add_attention_scale(c["attention_multiplier"])
    if family == "mixtral-tiny":
        # Mixtral's own kind of tokenizer.
        tokens, types, scores = spm_tokenizer(c["vocab_size"])
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    else:
        tokens, types, merges = tokenizer(c["vocab_size"])
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(0)
        w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    def add(name, a):
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))

    if (c.get("rope_scaling") or {}).get("rope_type") == "llama3":
        add("rope_freqs.weight", llama3_factors(c))
    add("token_embd.weight", t["model.embed_tokens.weight"])
    add("output_norm.weight", t["model.norm.weight"])
    if "lm_head.weight" in t:
        add("output.weight", t["lm_head.weight"])
    for l in range(c["num_hidden_layers"]):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        if arch == "gpt-oss":
            write_gpt_oss_layer(add, t, p, b)
            continue
        if arch == "deepseek2":
            write_mla_layer(add, t, c, p, b)
            continue
        q, k = t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"]
        if arch in ("llama", "granitemoe"):
            q, k = permute(q, heads), permute(k, kv)
        add(b + "attn_norm.weight", t[p + "input_layernorm.weight"])
        add(b + "attn_q.weight", q)
        add(b + "attn_k.weight", k)
        add(b + "attn_v.weight", t[p + "self_attn.v_proj.weight"])
        add(b + "attn_output.weight", t[p + "self_attn.o_proj.weight"])
        for x in "qkv":
            if p + f"self_attn.{x}_proj.bias" in t:
                add(b + f"attn_{x}.bias", t[p + f"self_attn.{x}_proj.bias"])
        for x, hy in [("q", "query"), ("k", "key")]:
            for n in [f"self_attn.{x}_norm.weight", f"self_attn.{hy}_layernorm.weight"]:
                if p + n in t:
                    add(b + f"attn_{x}_norm.weight", t[p + n])
        add(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        if not experts:
            for x in ["gate", "up", "down"]:
                add(b + f"ffn_{x}.weight", t[p + f"mlp.{x}_proj.weight"])
            continue
        if p + "block_sparse_moe.input_linear.weight" in t:
            # Granite: gate and up fused in input_linear (gate first).
            gu = t[p + "block_sparse_moe.input_linear.weight"]
            ff = gu.shape[1] // 2
            add(b + "ffn_gate_inp.weight", t[p + "block_sparse_moe.router.layer.weight"])
            add(b + "ffn_gate_exps.weight", gu[:, :ff])
            add(b + "ffn_up_exps.weight", gu[:, ff:])
            add(b + "ffn_down_exps.weight", t[p + "block_sparse_moe.output_linear.weight"])
            if p + "shared_mlp.input_linear.weight" in t:
                sgu = t[p + "shared_mlp.input_linear.weight"]
                sf = sgu.shape[0] // 2
                add(b + "ffn_gate_shexp.weight", sgu[:sf])
                add(b + "ffn_up_shexp.weight", sgu[sf:])
                add(b + "ffn_down_shexp.weight", t[p + "shared_mlp.output_linear.weight"])
            continue
        moe = "block_sparse_moe." if p + "block_sparse_moe.gate.weight" in t else "mlp."
        router = p + moe + "gate.weight"
        add(b + "ffn_gate_inp.weight", t[router] if router in t else t[p + "mlp.gate.wg.weight"])
        for x, wx in [("gate", "w1"), ("up", "w3"), ("down", "w2")]:
            names = [p + moe + f"experts.{e}.{x}_proj.weight" for e in range(experts)]
            if names[0] not in t:
                names = [p + moe + f"experts.{e}.{wx}.weight" for e in range(experts)]
            add(b + f"ffn_{x}_exps.weight", np.stack([t[n] for n in names]))
        if p + "mlp.shared_mlp.gate_proj.weight" in t:
            for x in ["gate", "up", "down"]:
                add(b + f"ffn_{x}_shexp.weight", t[p + f"mlp.shared_mlp.{x}_proj.weight"])
        if p + "mlp.shared_expert.gate_proj.weight" in t:
            for x in ["gate", "up", "down"]:
                add(b + f"ffn_{x}_shexp.weight", t[p + f"mlp.shared_expert.{x}_proj.weight"])
            add(b + "ffn_gate_inp_shexp.weight", t[p + "mlp.shared_expert_gate.weight"].reshape(-1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gpt_oss_layer(add, t, p, b):
    """One gpt-oss layer: biased attention with sinks, then experts whose
    gate and up are interleaved along gate_up_proj's last axis (input-major)."""
    a = p + "self_attn."
    add(b + "attn_norm.weight", t[p + "input_layernorm.weight"])
    for x, o in [("q", "q"), ("k", "k"), ("v", "v"), ("o", "output")]:
        add(b + f"attn_{o}.weight", t[a + f"{x}_proj.weight"])
        add(b + f"attn_{o}.bias", t[a + f"{x}_proj.bias"])
    add(b + "attn_sinks.weight", t[a + "sinks"])
    add(b + "post_attention_norm.weight", t[p + "post_attention_layernorm.weight"])
    m = p + "mlp."
    add(b + "ffn_gate_inp.weight", t[m + "router.weight"])
    add(b + "ffn_gate_inp.bias", t[m + "router.bias"])
    gu, gub = t[m + "experts.gate_up_proj"], t[m + "experts.gate_up_proj_bias"]
    add(b + "ffn_gate_exps.weight", gu[:, :, 0::2].transpose(0, 2, 1))
    add(b + "ffn_up_exps.weight", gu[:, :, 1::2].transpose(0, 2, 1))
    add(b + "ffn_down_exps.weight", t[m + "experts.down_proj"].transpose(0, 2, 1))
    add(b + "ffn_gate_exps.bias", gub[:, 0::2])
    add(b + "ffn_up_exps.bias", gub[:, 1::2])
    add(b + "ffn_down_exps.bias", t[m + "experts.down_proj_bias"])


def write_mla_layer(add, t, c, p, b):
    """One DeepSeek layer: latent attention, then a dense MLP (the first
    `first_k_dense_replace` layers) or routed + shared experts."""
    a = p + "self_attn."
    add(b + "attn_norm.weight", t[p + "input_layernorm.weight"])
    if a + "q_a_proj.weight" in t:
        add(b + "attn_q_a.weight", t[a + "q_a_proj.weight"])
        add(b + "attn_q_a_norm.weight", t[a + "q_a_layernorm.weight"])
        add(b + "attn_q_b.weight", t[a + "q_b_proj.weight"])
    else:
        add(b + "attn_q.weight", t[a + "q_proj.weight"])
    add(b + "attn_kv_a_mqa.weight", t[a + "kv_a_proj_with_mqa.weight"])
    add(b + "attn_kv_a_norm.weight", t[a + "kv_a_layernorm.weight"])
    heads, nope, vdim = c["num_attention_heads"], c["qk_nope_head_dim"], c["v_head_dim"]
    kv_b = t[a + "kv_b_proj.weight"].reshape(heads, nope + vdim, -1)
    add(b + "attn_k_b.weight", kv_b[:, :nope].transpose(0, 2, 1))
    add(b + "attn_v_b.weight", kv_b[:, nope:])
    add(b + "attn_output.weight", t[a + "o_proj.weight"])
    add(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
    m = p + "mlp."
    if m + "gate.weight" not in t:
        for x in ["gate", "up", "down"]:
            add(b + f"ffn_{x}.weight", t[m + f"{x}_proj.weight"])
        return
    add(b + "ffn_gate_inp.weight", t[m + "gate.weight"])
    if m + "gate.e_score_correction_bias" in t:
        add(b + "exp_probs_b.bias", t[m + "gate.e_score_correction_bias"])
    n = c["n_routed_experts"]
    for x in ["gate", "up", "down"]:
        add(b + f"ffn_{x}_exps.weight", np.stack([t[m + f"experts.{e}.{x}_proj.weight"] for e in range(n)]))
        add(b + f"ffn_{x}_shexp.weight", t[m + f"shared_experts.{x}_proj.weight"])


def quantize(src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.nthread = 1
    p.ftype = ftype
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize {dst}: {rc}"


def split(src, dst, parts):
    """Rewrites `src` as a split set `dst-0000k-of-0000n.gguf` (gguf-py's
    splitting, as llama-gguf-split writes them: split.* keys, metadata in
    the first file)."""
    r = gguf.GGUFReader(src)
    rewrite(src, dst + ".gguf", split_max_tensors=-(-len(r.tensors) // parts))


def rewrite(src, dst, unstack=False, **writer_args):
    """Copies `src`'s metadata and tensors to `dst`; with `unstack`, each
    stacked `ffn_*_exps` tensor as one `ffn_*.E` tensor an expert."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch, **writer_args)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
    for t in r.tensors:
        if unstack and "_exps." in t.name:
            for e in range(t.data.shape[0]):
                w.add_tensor(t.name.replace("_exps.", f".{e}."), t.data[e], raw_dtype=t.tensor_type)
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def logits(path, prompt):
    m = llama_cpp.Llama(path, logits_all=True, n_ctx=64, n_batch=64, n_threads=1, n_threads_batch=1, verbose=False)
    m.reset()
    m.eval(prompt)
    out = np.array(m.scores[: m.n_tokens], dtype=np.float64)
    toks = [m.tokenize(s.encode(), add_bos=False, special=False) for s in TEXTS]
    return out, toks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/gguf")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    llama_cpp.llama_backend_init()
    ref = {"texts": TEXTS, "files": {}}
    for family in FAMILIES:
        prompt = json.load(open(f"tests/fixtures/{family}/reference.json"))["prompt"]
        f32 = f"{a.out}/{family}-f32.gguf"
        write_f32(family, f32)
        kinds = [("q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)]
        if family in Q8_FAMILIES:
            kinds.append(("q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0))
        if family == "gptoss-tiny":
            # gpt-oss's own kind of file: MXFP4 experts (llama.cpp's MXFP4_MOE).
            kinds.append(("mxfp4", llama_cpp.LLAMA_FTYPE_MOSTLY_MXFP4_MOE))
        if family == "llama-tiny":
            # Types mote re-quantizes (--dtype): ggml's dequantizers checked end to end.
            kinds += [("q4_1", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1), ("q5_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0),
                      ("q5_1", llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1)]
        for kind, ftype in kinds:
            quantize(f32, f"{a.out}/{family}-{kind}.gguf", ftype)
        for kind, _ in kinds:
            path = f"{a.out}/{family}-{kind}.gguf"
            lg, toks = logits(path, prompt)
            r = gguf.GGUFReader(path)
            ref["files"][os.path.basename(path)] = {
                "prompt": prompt,
                "logits": lg.round(6).tolist(),
                "types": {t.name: t.tensor_type.name for t in r.tensors},
                "tokens": toks,
            }
            print(path, os.path.getsize(path), "bytes", Counter(t.tensor_type.name for t in r.tensors))
        os.remove(f32)
    # One split set: the same tensors as llama-tiny-q4_0.gguf in three files.
    split(f"{a.out}/llama-tiny-q4_0.gguf", f"{a.out}/llama-tiny-q4_0-split", 3)
    # Mixtral as GGUFs from before llama.cpp stacked the experts.
    legacy = f"{a.out}/mixtral-tiny-q4_0-unstacked.gguf"
    # (llama.cpp 0.3.36 no longer loads these: the test checks that mote
    # imports it to the same .mote as the stacked file.)
    rewrite(f"{a.out}/mixtral-tiny-q4_0.gguf", legacy, unstack=True)
    json.dump(ref, open(f"{a.out}/reference.json", "w"))
    blocks(f"{a.out}/blocks.json")


def blocks(path):
    """Random blocks of the super-block types (their rows need 256 values,
    wider than the tiny models) with gguf-py's dequantized values."""
    rng = np.random.default_rng(0)
    out = {}
    T = gguf.GGMLQuantizationType
    for t in [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS, T.Q4_1, T.Q5_0, T.Q5_1, T.MXFP4]:
        n, size = gguf.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(3, size), dtype=np.uint8)
        # f16 scales: small and finite wherever the layout keeps them.
        scale_at = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
                    T.IQ4_NL: [0], T.IQ4_XS: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.MXFP4: []}[t]
        for at in scale_at:
            raw[:, at:at + 2] = np.frombuffer(np.float16(rng.uniform(0.001, 0.1, 3)).tobytes(), np.uint8).reshape(3, 2)
        if t == T.MXFP4:
            raw[:, 0] = rng.integers(110, 140, 3)
        values = gguf.quants.dequantize(raw.reshape(1, -1), t).reshape(-1)
        out[t.name] = {"bytes": raw.tobytes().hex(), "values": [float(v) for v in values]}
    json.dump(out, open(path, "w"))


if __name__ == "__main__":
    main()
