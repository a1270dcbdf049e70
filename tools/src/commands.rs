//! The commands: thin shells over `mote` and `mote-quantize` that turn
//! results into JSON or text and errors into context.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use mote::{FileStorage, Limits, MmapStorage, Model, Plan, Session, SliceStorage, Storage};
use serde_json::json;

use crate::args::{
    BenchArgs, Cli, Command, GenerateArgs, InspectArgs, LoadArgs, LogitsArgs, PlanArgs,
    QuantizeArgs, WeightType,
};
use crate::boards;
use crate::text;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Quantize(a) => quantize(a),
        Command::Logits(a) => logits(a),
        Command::Generate(a) => generate(a),
        Command::Inspect(a) => inspect(a),
        Command::Bench(a) => bench(a),
        Command::Plan(a) => plan(a),
        Command::Tokenize(a) => text::tokenize(a),
        Command::Detokenize(a) => text::detokenize(a),
        Command::Run(a) => text::run(a),
        Command::Chat(a) => text::chat(a),
        Command::Eval(a) => text::eval(a),
    }
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    let board = a.target.as_deref().map(boards::load).transpose()?;
    let dtype = match (a.dtype, &board) {
        (Some(d), _) => d,
        (None, Some(b)) => match b.dtype.as_str() {
            "f32" => WeightType::F32,
            "f16" => WeightType::F16,
            "int8" => WeightType::Int8,
            "int4" => WeightType::Int4,
            other => anyhow::bail!("board {}: unknown dtype {other:?}", b.name),
        },
        (None, None) => WeightType::Int4,
    };
    let options = mote_quantize::Options {
        dtype: dtype.into(),
        threads: a.threads,
        no_tokenizer: a.no_tokenizer,
    };
    let tty = std::io::stderr().is_terminal();
    let report = mote_quantize::quantize(&a.input, &a.output, &options, |p| {
        if !a.quiet && tty {
            eprint!("\r\x1b[2K[{}/{}] {}", p.done, p.total, p.source);
        }
    })
    .with_context(|| format!("quantize {}", a.input.display()))?;
    if !a.quiet {
        if tty {
            eprintln!();
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        // Padding is per tensor; say it once per distinct row length.
        let mut shapes: Vec<(usize, usize)> = report.padded.iter().map(|p| (p.1, p.2)).collect();
        shapes.sort_unstable();
        shapes.dedup();
        for (cols, padded) in shapes {
            let names: Vec<&str> = report
                .padded
                .iter()
                .filter(|p| (p.1, p.2) == (cols, padded))
                .map(|p| p.0.as_str())
                .collect();
            eprintln!(
                "note: {} tensor(s) with rows of {cols} values padded to {padded} (whole 32-value blocks), e.g. {}",
                names.len(),
                names[0]
            );
        }
        eprintln!(
            "wrote {} ({} tensors, {:.1} MiB from {:.1} MiB of weights) in {:.2} s",
            a.output.display(),
            report.tensors,
            report.output_bytes as f64 / (1 << 20) as f64,
            report.source_bytes as f64 / (1 << 20) as f64,
            report.seconds
        );
    }
    if let Some(board) = board {
        print_verdict(&boards::verdict(&a.output, &board, 512)?)?;
    }
    Ok(())
}

fn print_verdict(v: &boards::Verdict) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{}: {}",
        v.board,
        if v.fits { "fits" } else { "does not fit" }
    )?;
    writeln!(
        o,
        "  board             {} ({}, {} cores, features [{}]), {} MiB RAM",
        v.target,
        v.cpu,
        v.cores,
        v.features.join(", "),
        v.ram_mib
    )?;
    writeln!(o, "  {}", v.why)?;
    writeln!(o, "  budget            {} bytes", v.budget_bytes)?;
    if let Some(a) = v.arena_bytes {
        writeln!(o, "  arena             {a} bytes")?;
    }
    writeln!(o, "  kernels           {}", v.kernels)?;
    writeln!(
        o,
        "  weights/token     {:.2} MiB",
        v.weight_bytes_per_token as f64 / (1 << 20) as f64
    )?;
    if let Some(t) = v.decode_ceiling_tok_s {
        writeln!(
            o,
            "  decode ceiling    {t:.1} tok/s ({:.2} MiB/token from storage; uniform routing assumed)",
            v.storage_bytes_per_token / (1 << 20) as f64
        )?;
    }
    Ok(())
}

fn plan(a: PlanArgs) -> Result<()> {
    let board = boards::load(&a.board)?;
    let v = boards::verdict(&a.model, &board, a.max_context)?;
    if a.json {
        return print_json(&serde_json::to_value(&v)?);
    }
    print_verdict(&v)
}

/// The storage a command reads: a populated memory map, or positional
/// reads when a memory budget is set (mapped pages would count against it).
pub type AnyStorage = Box<dyn Storage + Sync>;

/// Opens the model `load` names, or the built-in one.
pub fn open(load: &LoadArgs) -> Result<Model<AnyStorage>> {
    let Some(path) = &load.model else {
        if crate::builtin::MODEL.is_empty() {
            anyhow::bail!("this build has no built-in model (feature builtin-model is off): name a .mote file");
        }
        let bytes = SliceStorage::new(crate::builtin::MODEL);
        let storage: AnyStorage = match load.memory_budget {
            Some(_) => Box::new(crate::builtin::Unmapped(bytes)),
            None => Box::new(bytes),
        };
        let model = Model::open(storage).context("built-in model")?;
        if !load.no_verify {
            model.verify_checksums().context("built-in model")?;
        }
        return Ok(model);
    };
    let storage: AnyStorage = if load.memory_budget.is_some() {
        Box::new(FileStorage::open(path).with_context(|| format!("{}", path.display()))?)
    } else {
        Box::new(MmapStorage::open_populated(path).with_context(|| format!("{}", path.display()))?)
    };
    let model = Model::open(storage).with_context(|| format!("{}", path.display()))?;
    if !load.no_verify {
        model
            .verify_checksums()
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok(model)
}

/// The model's path as given, or "built-in".
pub fn model_name(load: &LoadArgs) -> String {
    load.model
        .as_ref()
        .map_or_else(|| "built-in".into(), |p| p.display().to_string())
}

pub fn limits(load: &LoadArgs, max_context: u32) -> Limits {
    Limits {
        memory_budget_bytes: load.memory_budget,
        max_context,
        eviction: load.eviction.into(),
        verify_experts: load.paranoid,
        prefetch: !load.no_prefetch,
        ..Limits::default()
    }
}

pub fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn logits(a: LogitsArgs) -> Result<()> {
    let model = open(&a.load)?;
    let tokens = &a.tokens.0;
    let plan = Plan::new(&model, &limits(&a.load, tokens.len() as u32))?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena)?;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    if a.all {
        for &t in tokens {
            rows.push(session.step(t)?.to_vec());
        }
    } else {
        rows.push(session.prefill(tokens)?.to_vec());
    }
    print_json(&json!({ "logits": rows }))
}

fn generate(a: GenerateArgs) -> Result<()> {
    let model = open(&a.load)?;
    let prompt = &a.tokens.0;
    let context = prompt.len() as u32 + a.max_tokens;
    let plan = Plan::new(&model, &limits(&a.load, context))?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena)?;
    let mut candidates = vec![0u32; model.config().vocab_size as usize];
    let mut sampler = mote::Sampler::new(a.sampling.config(), &mut candidates);
    let mut logits = session.prefill(prompt)?.to_vec();
    let mut history: Vec<u32> = prompt.clone();
    let mut out = Vec::new();
    for i in 0..a.max_tokens {
        let recent = &history[history.len().saturating_sub(64)..];
        let next = sampler.sample(&mut logits, recent);
        out.push(next);
        history.push(next);
        if (!a.ignore_eos && model.config().is_eos(next)) || i + 1 == a.max_tokens {
            break;
        }
        logits.copy_from_slice(session.step(next)?);
    }
    if a.stats {
        let s = session.cache_stats();
        eprintln!(
            "{}",
            json!({
                "peak_rss_mib": peak_rss_mib(), "arena_bytes": plan.arena_bytes(),
                "expert_slots": session.expert_slots(), "hits": s.hits, "misses": s.misses,
                "bytes_read": s.bytes_read,
            })
        );
    }
    print_json(&json!({ "tokens": out }))
}

/// What `inspect` says about the tokenizer: kind, vocabulary, chat format.
fn tokenizer_summary(model: &Model<AnyStorage>) -> Result<Option<serde_json::Value>> {
    if model.tokenizer_len() == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; model.tokenizer_len()];
    let tok = model.tokenizer(&mut buf)?;
    Ok(Some(json!({
        "kind": match tok.kind() {
            mote::format::tokenizer::TokenizerKind::ByteLevel => "byte-level BPE",
            mote::format::tokenizer::TokenizerKind::SentencePiece => "SentencePiece BPE",
        },
        "tokens": tok.vocab_size(),
        "bytes": model.tokenizer_len(),
        "chat_format": tok.chat_template().name(),
        "adds": tok.prefix().collect::<Vec<_>>(),
    })))
}

fn inspect(a: InspectArgs) -> Result<()> {
    let model = open(&a.load)?;
    let tokenizer = tokenizer_summary(&model)?;
    let c = model.config();
    let plan = Plan::new(&model, &limits(&a.load, a.max_context))?;
    let kernels = mote::kernels::Kernels::detect();
    let mut tensors = Vec::new();
    for i in 0..model.tensor_count() {
        tensors.push(model.record(i)?);
    }
    if a.json {
        let dir: Vec<_> = tensors
            .iter()
            .map(|r| {
                json!({
                    "name": r.id.to_string(), "kind": r.id.kind.name(),
                    "layer": (r.id.layer != mote::format::tensor::NONE).then_some(r.id.layer),
                    "expert": (r.id.expert != mote::format::tensor::NONE).then_some(r.id.expert),
                    "dtype": r.dtype.name(), "shape": [r.rows, r.cols],
                    "offset": r.offset, "bytes": r.length, "crc32": r.crc32,
                })
            })
            .collect();
        return print_json(&json!({
            "config": {
                "architecture": c.architecture.name(), "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
                "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim,
                "expert_ffn_size": c.expert_ffn_size, "n_experts": c.n_experts,
                "n_experts_per_token": c.n_experts_per_token, "norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
                "rope_scaling": format!("{:?}", c.rope_scaling), "max_position": c.max_position,
                "bos_token_id": c.bos_token_id, "eos_token_ids": &c.eos_token_ids[..],
                "tied_embeddings": c.tied_embeddings,
                "norm_topk_prob": c.norm_topk_prob, "clip_qkv": c.clip_qkv,
                "shared_expert_ffn_size": c.shared_expert_ffn_size,
                "latent_attention": c.mla.map(|m| json!({
                    "q_lora_rank": m.q_lora_rank, "kv_lora_rank": m.kv_lora_rank,
                    "qk_nope_dim": m.qk_nope_dim, "qk_rope_dim": m.qk_rope_dim, "v_head_dim": m.v_head_dim,
                })),
                "expert_groups": c.expert_groups, "topk_groups": c.topk_groups,
                "routed_scaling_factor": c.routed_scaling_factor,
                "first_dense_layers": c.first_dense_layers, "dense_ffn_size": c.dense_ffn_size,
                "sliding_window": c.sliding_window, "sliding_period": c.sliding_period,
                "swiglu_limit": c.swiglu_limit,
            },
            "file_bytes": mote::Storage::len(model.storage()),
            "tokenizer": tokenizer,
            "weight_bytes": model.weight_bytes(),
            "tensors": dir,
            "plan": {
                "max_context": a.max_context, "memory_budget_bytes": a.load.memory_budget,
                "weights_in_place": plan.weights_in_place, "resident_weight_bytes": plan.resident_weight_bytes,
                "kv_cache_bytes": plan.kv_cache_bytes(), "scratch_bytes": plan.scratch_bytes(),
                "expert_slots": plan.experts.map(|e| e.slots), "expert_slot_bytes": plan.experts.map(|e| e.slot_bytes),
                "expert_cache_bytes": plan.expert_cache_bytes(), "embedding_row_bytes": plan.embedding_row_bytes,
                "arena_bytes": plan.arena_bytes(),
            },
            "kernels": kernels.name,
        }));
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}", model_name(&a.load))?;
    writeln!(o, "  architecture      {}", c.architecture.name())?;
    writeln!(o, "  layers            {}", c.n_layers)?;
    writeln!(o, "  hidden            {}", c.hidden_size)?;
    writeln!(
        o,
        "  heads (kv)        {} ({}) x {}",
        c.n_heads, c.n_kv_heads, c.head_dim
    )?;
    writeln!(
        o,
        "  experts           {} x ffn {}, top {}",
        c.n_experts, c.expert_ffn_size, c.n_experts_per_token
    )?;
    if c.shared_expert_ffn_size > 0 {
        writeln!(o, "  shared expert     ffn {}", c.shared_expert_ffn_size)?;
    }
    if c.expert_groups > 1 || c.routed_scaling_factor != 1.0 {
        writeln!(
            o,
            "  routing           {} groups, best {} kept; weights x {}",
            c.expert_groups, c.topk_groups, c.routed_scaling_factor
        )?;
    }
    if c.first_dense_layers > 0 {
        writeln!(
            o,
            "  dense layers      first {} (ffn {})",
            c.first_dense_layers, c.dense_ffn_size
        )?;
    }
    if let Some(m) = c.mla {
        writeln!(
            o,
            "  latent attention  q_lora {}, kv_lora {}, nope {} + rope {}, v {}: caches {} floats a position and layer",
            m.q_lora_rank, m.kv_lora_rank, m.qk_nope_dim, m.qk_rope_dim, m.v_head_dim, m.cache_width()
        )?;
    }
    if c.sliding_window > 0 {
        writeln!(
            o,
            "  sliding window    {} (every {}th layer attends fully; 0: none)",
            c.sliding_window, c.sliding_period
        )?;
    }
    writeln!(o, "  vocab             {}", c.vocab_size)?;
    writeln!(
        o,
        "  rope              theta {} {:?}",
        c.rope_theta, c.rope_scaling
    )?;
    writeln!(o, "  norm eps          {}", c.norm_eps)?;
    writeln!(
        o,
        "  bos / eos         {:?} / {:?}",
        c.bos_token_id,
        &c.eos_token_ids[..]
    )?;
    writeln!(o, "  tied embeddings   {}", c.tied_embeddings)?;
    match &tokenizer {
        Some(t) => writeln!(
            o,
            "  tokenizer         {}, {} tokens, {} chat format",
            t["kind"].as_str().unwrap_or(""),
            t["tokens"],
            t["chat_format"].as_str().unwrap_or("")
        )?,
        None => writeln!(o, "  tokenizer         none (token ids only)")?,
    }
    writeln!(
        o,
        "\ntensors ({}, {:.2} MiB)",
        tensors.len(),
        model.weight_bytes() as f64 / (1 << 20) as f64
    )?;
    writeln!(
        o,
        "  {:<34} {:>6} {:>13} {:>12} {:>10}  crc32",
        "name", "dtype", "shape", "offset", "bytes"
    )?;
    for r in &tensors {
        writeln!(
            o,
            "  {:<34} {:>6} {:>13} {:>12} {:>10}  {:08x}",
            r.id.to_string(),
            r.dtype.name(),
            format!("{}x{}", r.rows, r.cols),
            r.offset,
            r.length,
            r.crc32
        )?;
    }
    writeln!(o, "\nmemory plan (max context {})", a.max_context)?;
    let weights = if plan.weights_in_place {
        "in place (memory-mapped)"
    } else {
        "read with pread: non-expert weights resident, experts paged into slots"
    };
    writeln!(o, "  weights           {weights}")?;
    if !plan.weights_in_place {
        writeln!(
            o,
            "  resident weights  {} bytes",
            plan.resident_weight_bytes
        )?;
    }
    if let Some(e) = plan.experts {
        writeln!(
            o,
            "  expert slots      {} of {} experts, {} bytes each ({} bytes with bookkeeping)",
            e.slots,
            e.experts,
            e.slot_bytes,
            plan.expert_cache_bytes()
        )?;
    }
    writeln!(o, "  kv cache          {} bytes", plan.kv_cache_bytes())?;
    writeln!(o, "  scratch           {} bytes", plan.scratch_bytes())?;
    writeln!(o, "  arena total       {} bytes", plan.arena_bytes())?;
    writeln!(o, "  kernels           {}", kernels.name)?;
    Ok(())
}

/// Share of predicted next-layer experts that the layer then chose.
fn prediction_accuracy(s: &mote::CacheStats) -> Option<f64> {
    (s.predicted > 0).then(|| s.predicted_used as f64 / s.predicted as f64)
}

/// Peak resident set size of this process in MiB (Linux: VmHWM).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn bench(a: BenchArgs) -> Result<()> {
    use std::time::Instant;
    let t0 = Instant::now();
    let model = open(&LoadArgs {
        no_verify: true,
        ..a.load.clone()
    })?;
    let vocab = model.config().vocab_size;
    let context = a.prompt_tokens + a.gen_tokens;
    let limits = Limits {
        threads: a.threads,
        ..limits(&a.load, context.max(1))
    };
    let plan = Plan::new(&model, &limits)?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena)?;
    let load_s = t0.elapsed().as_secs_f64();

    // The same token sequences as ../shared/bench/bench_llamacpp.py.
    let prompt: Vec<u32> = std::iter::once(1)
        .chain((0..a.prompt_tokens.saturating_sub(1)).map(|i| 300 + (i * 7919) % 20000))
        .map(|t| t % vocab)
        .collect();
    let t = Instant::now();
    if !prompt.is_empty() {
        session.prefill(&prompt)?;
    }
    let prefill_s = t.elapsed().as_secs_f64();
    let before = session.cache_stats();
    let t = Instant::now();
    for i in 0..a.gen_tokens {
        session.step((400 + (i as u64 * 104729 % 20000) as u32) % vocab)?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    let after = session.cache_stats();
    let uses = (after.hits + after.misses) - (before.hits + before.misses);
    let decode_hit_rate = if uses == 0 {
        1.0
    } else {
        (after.hits - before.hits) as f64 / uses as f64
    };
    let read_per_token = (after.bytes_read - before.bytes_read) as f64 / a.gen_tokens.max(1) as f64;

    let prefill_tok_s = a.prompt_tokens as f64 / prefill_s;
    let decode_tok_s = a.gen_tokens as f64 / decode_s;
    let bytes = boards::bytes_per_token(&model)?;
    let gb_s = bytes as f64 * decode_tok_s / 1e9;
    let kernels = session.kernels().name;
    let rss = peak_rss_mib();
    if a.json {
        return print_json(&json!({
            "tool": "mote", "model": model_name(&a.load), "threads": a.threads,
            "load_s": load_s, "prefill_tok_s": prefill_tok_s, "decode_tok_s": decode_tok_s,
            "peak_rss_mib": rss, "weight_bytes_per_token": bytes, "decode_weight_gb_s": gb_s,
            "kernels": kernels, "arena_bytes": plan.arena_bytes(),
            "memory_budget_bytes": a.load.memory_budget, "expert_slots": session.expert_slots(),
            "decode_hit_rate": decode_hit_rate, "storage_bytes_read_per_token": read_per_token,
            "cache": {"hits": after.hits, "misses": after.misses, "bytes_read": after.bytes_read},
            "prefetch_accuracy": prediction_accuracy(&after), "prefetch_hints": after.prefetch_hints,
        }));
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{}  (threads {}, kernels {kernels})",
        model_name(&a.load),
        a.threads
    )?;
    writeln!(o, "  load            {load_s:.3} s")?;
    writeln!(
        o,
        "  prefill         {prefill_tok_s:.1} tok/s ({} tokens)",
        a.prompt_tokens
    )?;
    writeln!(
        o,
        "  decode          {decode_tok_s:.1} tok/s ({} tokens)",
        a.gen_tokens
    )?;
    writeln!(
        o,
        "  weights/token   {:.1} MiB, {gb_s:.1} GB/s",
        bytes as f64 / (1 << 20) as f64
    )?;
    if session.expert_slots() > 0 {
        writeln!(
            o,
            "  expert cache    {} slots, decode hit rate {:.1}%, {:.2} MiB read per token",
            session.expert_slots(),
            100.0 * decode_hit_rate,
            read_per_token / (1 << 20) as f64
        )?;
        if let Some(acc) = prediction_accuracy(&after) {
            writeln!(
                o,
                "  prefetch        {:.1}% of predicted experts used, {} read-ahead hints",
                100.0 * acc,
                after.prefetch_hints
            )?;
        }
    }
    if let Some(rss) = rss {
        writeln!(o, "  peak RSS        {rss:.1} MiB")?;
    }
    Ok(())
}
