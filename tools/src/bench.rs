//! `mote bench`: load time, prefill and decode speed, weight bytes per
//! token, the expert cache's hit rate and reads, and peak RSS, as text or
//! one JSON object (the side-by-side scripts read it).

use std::io::Write;

use anyhow::Result;
use mote::{Limits, Plan, Session};
use serde_json::json;

use crate::args::{BenchArgs, LoadArgs};
use crate::boards;
use crate::load::{limits, model_name, open};
use crate::report::{peak_rss_mib, print_json};

pub fn bench(a: BenchArgs) -> Result<()> {
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
    let start = session.cache_stats();
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
    let prefill_bytes_read = before.bytes_read - start.bytes_read;
    let read_per_token = (after.bytes_read - before.bytes_read) as f64 / a.gen_tokens.max(1) as f64;
    let decode = Decode::between(&before, &after, a.gen_tokens);

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
            "prefill_storage_bytes_read": prefill_bytes_read,
            "cache": {"hits": after.hits, "misses": after.misses, "bytes_read": after.bytes_read},
            "prefetch_accuracy": prediction_accuracy(&after),
            "decode_blocked_ms_per_token": decode.blocked_ms_per_token,
            "decode_mean_reads_in_flight": decode.mean_in_flight,
            "max_reads_in_flight": after.max_in_flight,
            "prefetches": decode.prefetches, "prefetches_used": decode.used,
            "prefetches_wasted": decode.wasted, "predictions_skipped": decode.skipped,
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
        writeln!(
            o,
            "  prefill read    {:.1} MiB from storage ({} tokens)",
            prefill_bytes_read as f64 / (1 << 20) as f64,
            a.prompt_tokens
        )?;
        writeln!(
            o,
            "  storage         {:.2} ms blocked per decoded token, {:.2} reads in flight (mean as one starts, most {})",
            decode.blocked_ms_per_token, decode.mean_in_flight, after.max_in_flight
        )?;
        if let Some(acc) = prediction_accuracy(&after) {
            writeln!(
                o,
                "  prefetch        {:.1}% of predicted experts chosen; decode: {} read ahead, {} used, {} wasted, {} skipped (device busy)",
                100.0 * acc,
                decode.prefetches,
                decode.used,
                decode.wasted,
                decode.skipped
            )?;
        }
    }
    if let Some(rss) = rss {
        writeln!(o, "  peak RSS        {rss:.1} MiB")?;
    }
    Ok(())
}

/// What the expert reader did while decoding.
struct Decode {
    blocked_ms_per_token: f64,
    mean_in_flight: f64,
    prefetches: u64,
    used: u64,
    wasted: u64,
    skipped: u64,
}

impl Decode {
    fn between(before: &mote::CacheStats, after: &mote::CacheStats, tokens: u32) -> Self {
        let started = after.reads_started - before.reads_started;
        Decode {
            blocked_ms_per_token: (after.blocked_ns - before.blocked_ns) as f64
                / 1e6
                / tokens.max(1) as f64,
            mean_in_flight: match started {
                0 => 0.0,
                n => (after.depth_sum - before.depth_sum) as f64 / n as f64,
            },
            prefetches: after.prefetches - before.prefetches,
            used: after.prefetches_used - before.prefetches_used,
            wasted: after.prefetches_wasted - before.prefetches_wasted,
            skipped: after.predictions_skipped - before.predictions_skipped,
        }
    }
}

/// Share of predicted next-layer experts that the layer then chose.
pub(crate) fn prediction_accuracy(s: &mote::CacheStats) -> Option<f64> {
    (s.predicted > 0).then(|| s.predicted_used as f64 / s.predicted as f64)
}
