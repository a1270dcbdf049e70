//! `mote inspect` (a file's config, tensor directory and memory plan) and
//! `mote plan` (whether a model fits a board).

use std::io::Write;

use anyhow::Result;
use mote::{Model, Plan};
use serde_json::json;

use crate::args::{InspectArgs, PlanArgs};
use crate::boards;
use crate::load::{limits, model_name, open, AnyStorage};
use crate::report::print_json;

pub fn inspect(a: InspectArgs) -> Result<()> {
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
                    "dtype": r.dtype.name(), "layout": r.layout.name(), "shape": [r.rows, r.cols],
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
                "kv_cache_bytes": plan.kv_cache_bytes(), "kv_cache_type": plan.buffers.kv_type.name(),
                "scratch_bytes": plan.scratch_bytes(),
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
        "  {:<34} {:>6} {:>6} {:>13} {:>12} {:>10}  crc32",
        "name", "dtype", "layout", "shape", "offset", "bytes"
    )?;
    for r in &tensors {
        writeln!(
            o,
            "  {:<34} {:>6} {:>6} {:>13} {:>12} {:>10}  {:08x}",
            r.id.to_string(),
            r.dtype.name(),
            r.layout.name(),
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
    writeln!(
        o,
        "  kv cache          {} bytes ({})",
        plan.kv_cache_bytes(),
        plan.buffers.kv_type.name()
    )?;
    writeln!(o, "  scratch           {} bytes", plan.scratch_bytes())?;
    writeln!(o, "  arena total       {} bytes", plan.arena_bytes())?;
    writeln!(o, "  kernels           {}", kernels.name)?;
    Ok(())
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

pub fn plan(a: PlanArgs) -> Result<()> {
    let board = boards::load(&a.board)?;
    let v = boards::verdict(&a.model, &board, a.max_context)?;
    if a.json {
        return print_json(&serde_json::to_value(&v)?);
    }
    boards::print_verdict(&v)
}
