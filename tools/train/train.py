#!/usr/bin/env python3
"""Train mote's default model: a small Mixtral-layout MoE and its own BPE.

Run from the repo root (CPU only; about an hour on 2 cores):

    apt-get install bible-kjv            # the text: the King James Bible
    pip install -r tools/reference/requirements.txt
    python3 tools/train/train.py --out /tmp/mote-train --minutes 35

Writes, under <out>/:

  train.txt, heldout.txt   the corpus split by chapter (every 25th chapter
                           is held out; heldout.txt is what `mote eval` reads)
  hf/                      the trained model (the weights of the step with the
                           lowest held-out loss) as a Hugging Face folder
                           (MixtralForCausalLM, config.json, model.safetensors,
                           tokenizer.json, tokenizer_config.json)
  log.json                 loss curve, wall time, parameter counts

then `mote quantize <out>/hf -o runtime/models/default.mote --dtype int4`.

The many-expert model (routing like OLMoE's or Qwen3-MoE's: many small
experts, top-4; what docs/performance.md reports paging hit rates on, since
random routers route uniformly and trained ones do not):

    python3 tools/train/train.py --out /tmp/mote-train-32 --minutes 25 \
        --experts 32 --top-k 4 --ffn 96

The text: the King James Version (1611) as Debian's `bible-kjv-text` ships
it, dumped by its `bible` program. The translation's copyright has long
expired (public domain; see /usr/share/doc/bible-kjv-text/copyright). It is
about 790k words of one consistent English register, enough for a model of
a few million parameters to learn its words and phrases on two CPU cores.

Why this shape: 4 experts, top-2, so routing and paging are really
exercised; hidden 192 and 4 layers keep the int4 file small (a few MiB)
while the experts hold most of the parameters, as in real MoE models. The
tokenizer is byte-level BPE (GPT-2 split rules), one of the two kinds mote
reads, with `<|endoftext|>` between chapters and before every prompt.
"""

import argparse
import copy
import json
import math
import os
import random
import re
import subprocess
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import MixtralConfig, MixtralForCausalLM

EOT = "<|endoftext|>"


def chapters():
    """The KJV as a list of chapters, each one paragraph of verses."""
    raw = subprocess.run(["bible", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    out, cur = [], []
    heading = re.compile(r"^\S.* \d+$")  # "Genesis 1"
    for line in raw.splitlines():
        if heading.match(line):
            if cur:
                out.append(" ".join(cur))
            cur = []
        elif line.strip():
            cur.append(line.strip())
    if cur:
        out.append(" ".join(cur))
    # Drop verse numbers ("  12 And ..."); they are not prose.
    return [re.sub(r"(^| )\d+ ", r"\1", c).strip() for c in out]


def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tok.train_from_iterator(texts, trainer)
    eot = tok.token_to_id(EOT)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, eot)]
    )
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=35.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=192)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--experts", type=int, default=4, help="routed experts per layer")
    ap.add_argument("--top-k", type=int, default=2, help="experts chosen per token")
    ap.add_argument("--ffn", type=int, default=384, help="an expert's intermediate size")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.join(args.out, "hf"), exist_ok=True)

    chaps = chapters()
    held = [c for i, c in enumerate(chaps) if i % 25 == 12]
    train = [c for i, c in enumerate(chaps) if i % 25 != 12]
    with open(os.path.join(args.out, "train.txt"), "w") as f:
        f.write("\n".join(train) + "\n")
    with open(os.path.join(args.out, "heldout.txt"), "w") as f:
        f.write("\n".join(held) + "\n")

    tok = train_tokenizer(train, args.vocab)
    eot = tok.token_to_id(EOT)
    tok.save(os.path.join(args.out, "hf", "tokenizer.json"))
    with open(os.path.join(args.out, "hf", "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": EOT,
                "eos_token": EOT,
                "add_bos_token": True,
                "model_max_length": 1024,
            },
            f,
            indent=2,
        )

    ids = []
    for c in train:
        ids.append(eot)
        ids.extend(tok.encode(c, add_special_tokens=False).ids)
    data = torch.tensor(ids, dtype=torch.long)
    held_ids = []
    for c in held:
        held_ids.append(eot)
        held_ids.extend(tok.encode(c, add_special_tokens=False).ids)
    held_data = torch.tensor(held_ids, dtype=torch.long)
    print(f"corpus: {len(train)} chapters, {len(ids)} tokens; held out {len(held)} chapters, {len(held_ids)} tokens")

    cfg = MixtralConfig(
        vocab_size=args.vocab,
        hidden_size=192,
        intermediate_size=args.ffn,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=32,
        num_local_experts=args.experts,
        num_experts_per_tok=args.top_k,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        bos_token_id=eot,
        eos_token_id=eot,
        tie_word_embeddings=False,
        router_aux_loss_coef=0.02,
        output_router_logits=True,
        sliding_window=None,
    )
    model = MixtralForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    per_expert = 3 * cfg.hidden_size * cfg.intermediate_size
    n_active = n_params - cfg.num_hidden_layers * (cfg.num_local_experts - cfg.num_experts_per_tok) * per_expert
    print(f"parameters: {n_params} total, {n_active} active per token")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    budget = args.minutes * 60.0
    warmup = 100
    start = time.time()
    log = {"loss": [], "held_loss": []}
    step = 0
    best = (float("inf"), 0, None)
    model.train()
    while True:
        elapsed = time.time() - start
        if elapsed > budget:
            break
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(data) - args.seq - 1, (args.batch,))
        x = torch.stack([data[s : s + args.seq] for s in starts])
        out = model(input_ids=x)
        ce = next_token_loss(out.logits, x)
        loss = ce + cfg.router_aux_loss_coef * out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            log["loss"].append([step, round(elapsed, 1), round(ce.item(), 4)])
            print(f"step {step} t={elapsed:.0f}s lr={lr:.2e} loss={ce.item():.3f} aux={out.aux_loss.item():.3f}", flush=True)
        if step % 100 == 0:
            loss = held_loss(model, held_data, args.seq)
            log["held_loss"].append([step, round(elapsed, 1), loss])
            print(f"  held-out loss {loss:.3f}", flush=True)
            if loss < best[0]:
                best = (loss, step, copy.deepcopy(model.state_dict()))
        step += 1

    loss = held_loss(model, held_data, args.seq)
    log["held_loss"].append([step, round(time.time() - start, 1), loss])
    if loss < best[0]:
        best = (loss, step, copy.deepcopy(model.state_dict()))
    # A few million parameters memorise one book: keep the weights that
    # did best on the held-out chapters, not the last ones.
    model.load_state_dict(best[2])
    log.update(best_held_loss=best[0], best_step=best[1])
    log.update(steps=step, seconds=round(time.time() - start, 1), parameters=n_params, active=n_active,
               train_tokens=len(ids), heldout_tokens=len(held_ids), tokens_seen=step * args.batch * args.seq)
    print(f"done: {step} steps; kept step {best[1]} (held-out loss {best[0]:.3f})")
    model.config.output_router_logits = False
    model.save_pretrained(os.path.join(args.out, "hf"), safe_serialization=True)
    with open(os.path.join(args.out, "log.json"), "w") as f:
        json.dump(log, f, indent=1)
    model.eval()
    with torch.no_grad():
        prompt = tok.encode("And God said").ids
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)
    print("sample:", tok.decode(gen[0].tolist()))


def next_token_loss(logits, x):
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


def held_loss(model, data, seq):
    """Mean next-token loss over (up to) 64 windows of the held-out text."""
    model.eval()
    with torch.no_grad():
        n = min(64, (len(data) - 1) // seq)
        x = torch.stack([data[i * seq : (i + 1) * seq] for i in range(n)])
        loss = next_token_loss(model(input_ids=x, output_router_logits=False).logits, x).item()
    model.train()
    return round(loss, 4)


if __name__ == "__main__":
    main()
