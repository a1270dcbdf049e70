//! The commands that take and give token ids as JSON: `logits` and
//! `generate` (the contract tools and the conformance tests use).

use anyhow::Result;
use mote::{Plan, Session};
use serde_json::json;

use crate::args::{GenerateArgs, LogitsArgs};
use crate::load::{limits, open};
use crate::report::{peak_rss_mib, print_json};

pub fn logits(a: LogitsArgs) -> Result<()> {
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

pub fn generate(a: GenerateArgs) -> Result<()> {
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
