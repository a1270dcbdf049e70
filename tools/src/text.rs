//! The commands that speak text: `tokenize`, `detokenize`, `run`, `chat`
//! and `eval`. Buffers are sized once before generating; each step decodes
//! one token into a fixed buffer and writes it out at once.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mote::{Limits, Model, Plan, Sampler, Session, TextDecoder, Tokenizer};
use serde_json::json;

use crate::args::{ChatArgs, DetokenizeArgs, EvalArgs, LoadArgs, RunArgs, TextArgs, TokenizeArgs};
use crate::load::{limits, model_name, open, AnyStorage};
use crate::report::print_json;

/// Load options for commands that only read the tokenizer.
fn tokenizer_only(model: Option<std::path::PathBuf>) -> LoadArgs {
    LoadArgs {
        model,
        memory_budget: None,
        no_verify: true,
        eviction: crate::args::Eviction::Cycle,
        paranoid: false,
        no_prefetch: false,
        kv_cache: crate::args::KvCache::F16,
    }
}

/// The model's tokenizer, in place or read into `buf`.
fn tokenizer<'m>(
    model: &'m Model<AnyStorage>,
    load: &LoadArgs,
    buf: &'m mut Vec<u8>,
) -> Result<Tokenizer<'m>> {
    buf.resize(model.tokenizer_len(), 0);
    model.tokenizer(buf).with_context(|| model_name(load))
}

fn encode(tok: &Tokenizer<'_>, text: &str, special: bool) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; tok.max_tokens(text.len())];
    let n = tok.encode(text, special, &mut ids)?;
    ids.truncate(n);
    Ok(ids)
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let load = tokenizer_only(a.model);
    let model = open(&load)?;
    let mut buf = Vec::new();
    let tok = tokenizer(&model, &load, &mut buf)?;
    print_json(&json!({ "ids": encode(&tok, &a.text, a.special)? }))
}

pub fn detokenize(a: DetokenizeArgs) -> Result<()> {
    let load = tokenizer_only(a.model);
    let model = open(&load)?;
    let mut buf = Vec::new();
    let tok = tokenizer(&model, &load, &mut buf)?;
    let ids = &a.ids.0;
    let mut out = vec![0u8; tok.max_decoded_bytes() * (ids.len() + 1)];
    let text = tok.decode(ids, !a.keep_special, &mut out)?;
    print_json(&json!({ "text": text }))
}

/// Everything a text generation needs, set up once.
struct Generator<'m> {
    session: Session<'m, AnyStorage>,
    sampler: Sampler<'m>,
    logits: Vec<f32>,
    /// Tokens of the context, for the repetition penalty.
    history: Vec<u32>,
    text: Vec<u8>,
}

impl<'m> Generator<'m> {
    fn new(
        model: &'m Model<AnyStorage>,
        plan: &Plan,
        arena: &'m mut [u8],
        candidates: &'m mut [u32],
        a: &TextArgs,
        context: u32,
        piece_bytes: usize,
    ) -> Result<Self> {
        Ok(Generator {
            session: Session::new(model, plan, arena)?,
            sampler: Sampler::new(a.sampling.config(), candidates),
            logits: vec![0.0; model.config().vocab_size as usize],
            history: Vec::with_capacity(context as usize),
            text: vec![0u8; piece_bytes],
        })
    }

    fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        self.logits.copy_from_slice(self.session.prefill(ids)?);
        self.history.extend_from_slice(ids);
        Ok(())
    }

    fn sample(&mut self) -> u32 {
        let recent = &self.history[self.history.len().saturating_sub(64)..];
        self.sampler.sample(&mut self.logits, recent)
    }

    fn step(&mut self, id: u32) -> Result<()> {
        self.logits.copy_from_slice(self.session.step(id)?);
        self.history.push(id);
        Ok(())
    }
}

/// Context to plan for: asked, else the prompt plus the tokens to generate
/// (chat: the model's trained context, at most 4096).
fn context_len(a: &TextArgs, model: &Model<AnyStorage>, needed: Option<usize>) -> u32 {
    a.context.unwrap_or_else(|| match needed {
        Some(n) => n as u32,
        None => match model.config().max_position {
            0 => 2048,
            p => p.min(4096),
        },
    })
}

fn text_limits(a: &TextArgs, context: u32) -> Limits {
    Limits {
        threads: a.threads,
        ..limits(&a.load, context.max(1))
    }
}

/// "hit rate 93.1% (1234 of 1325 expert uses)", or that experts are in place.
fn cache_summary(session: &Session<'_, AnyStorage>) -> String {
    let s = session.cache_stats();
    let uses = s.hits + s.misses;
    if session.expert_slots() == 0 || uses == 0 {
        return "experts in place (no paging)".into();
    }
    format!(
        "expert cache hit rate {:.1}% ({} of {uses} expert uses, {} slots)",
        100.0 * s.hits as f64 / uses as f64,
        s.hits,
        session.expert_slots()
    )
}

pub fn run(a: RunArgs) -> Result<()> {
    let t = &a.text;
    let model = open(&t.load)?;
    let mut buf = Vec::new();
    let tok = tokenizer(&model, &t.load, &mut buf)?;
    let prompt = encode(&tok, &a.prompt, true)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let context = context_len(t, &model, Some(prompt.len() + t.max_tokens as usize));
    let plan = Plan::new(&model, &text_limits(t, context))?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut candidates = vec![0u32; model.config().vocab_size as usize];
    let mut g = Generator::new(
        &model,
        &plan,
        &mut arena,
        &mut candidates,
        t,
        context,
        tok.max_decoded_bytes(),
    )?;
    let mut out = std::io::stdout().lock();
    out.write_all(a.prompt.as_bytes())?;
    out.flush()?;

    let start = Instant::now();
    g.prefill(&prompt)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut dec = TextDecoder::continuing(true);
    let mut generated = 0u32;
    let room = context.saturating_sub(prompt.len() as u32);
    for i in 0..t.max_tokens.min(room) {
        let next = g.sample();
        generated += 1;
        if !a.ignore_eos && model.config().is_eos(next) {
            break;
        }
        out.write_all(dec.push(&tok, next, &mut g.text)?.as_bytes())?;
        out.flush()?;
        if i + 1 < t.max_tokens.min(room) {
            g.step(next)?;
        }
    }
    out.write_all(dec.finish(&mut g.text)?.as_bytes())?;
    writeln!(out)?;
    let decode_s = start.elapsed().as_secs_f64();
    if !t.quiet {
        eprintln!(
            "[prompt {} tokens at {:.1} tok/s; generated {generated} tokens at {:.1} tok/s; {}]",
            prompt.len(),
            prompt.len() as f64 / prefill_s,
            generated as f64 / decode_s,
            cache_summary(&g.session)
        );
    }
    Ok(())
}

pub fn chat(a: ChatArgs) -> Result<()> {
    let t = &a.text;
    let model = open(&t.load)?;
    let mut buf = Vec::new();
    let tok = tokenizer(&model, &t.load, &mut buf)?;
    let template = tok.chat_template();
    let end_of_turn = template.end_of_turn().and_then(|s| tok.token_id(s));
    let context = context_len(t, &model, None);
    let plan = Plan::new(&model, &text_limits(t, context))?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut candidates = vec![0u32; model.config().vocab_size as usize];
    let mut g = Generator::new(
        &model,
        &plan,
        &mut arena,
        &mut candidates,
        t,
        context,
        tok.max_decoded_bytes(),
    )?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if !t.quiet {
        eprintln!(
            "chat with {} ({} format, context {context}); Ctrl-D ends",
            model_name(&t.load),
            template.name()
        );
    }
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    let mut turn_buf = Vec::new();
    // The reply's last token, sampled but not yet run through the model.
    let mut pending: Option<u32> = None;
    let mut first = true;
    loop {
        if interactive {
            write!(out, "> ")?;
            out.flush()?;
        }
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let message = line.trim_end_matches(['\n', '\r']);
        if message.trim().is_empty() {
            continue;
        }
        turn_buf.resize(message.len() + 256, 0);
        let mut ids: Vec<u32> = pending.take().into_iter().collect();
        ids.extend(encode(
            &tok,
            template.user_turn(message, first, &mut turn_buf)?,
            first,
        )?);
        if g.session.position() as usize + ids.len() + t.max_tokens as usize > context as usize {
            if !t.quiet {
                eprintln!("[context of {context} tokens full: starting a new conversation]");
            }
            g.session.reset();
            g.history.clear();
            ids = encode(
                &tok,
                template.user_turn(message, true, &mut turn_buf)?,
                true,
            )?;
            if ids.len() + t.max_tokens as usize > context as usize {
                bail!(
                    "the message needs {} tokens; the context holds {context}",
                    ids.len()
                );
            }
        }
        first = false;
        let start = Instant::now();
        g.prefill(&ids)?;
        let mut dec = TextDecoder::new(true);
        let mut generated = 0;
        for _ in 0..t.max_tokens {
            let next = g.sample();
            generated += 1;
            pending = Some(next);
            if model.config().is_eos(next) || Some(next) == end_of_turn {
                break;
            }
            out.write_all(dec.push(&tok, next, &mut g.text)?.as_bytes())?;
            out.flush()?;
            g.step(next)?;
            pending = None;
        }
        out.write_all(dec.finish(&mut g.text)?.as_bytes())?;
        writeln!(out)?;
        if !t.quiet {
            eprintln!(
                "[{generated} tokens, {:.1} tok/s; {}]",
                generated as f64 / start.elapsed().as_secs_f64(),
                cache_summary(&g.session)
            );
        }
    }
    Ok(())
}

/// Log-softmax of `logits` at `id`, and the softmax into `p`.
fn log_prob(logits: &[f32], id: u32, p: &mut [f64]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut sum = 0.0;
    for (q, &l) in p.iter_mut().zip(logits) {
        *q = (l as f64 - max).exp();
        sum += *q;
    }
    for q in p.iter_mut() {
        *q /= sum;
    }
    logits[id as usize] as f64 - max - sum.ln()
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let model = open(&a.load)?;
    let mut buf = Vec::new();
    let tok = tokenizer(&model, &a.load, &mut buf)?;
    let text = std::fs::read_to_string(&a.text).with_context(|| a.text.display().to_string())?;
    let mut ids = encode(&tok, &text, false)?;
    if a.max_tokens > 0 {
        ids.truncate(a.max_tokens);
    }
    if a.window < 2 {
        bail!("--window must be at least 2");
    }
    if ids.len() < 2 {
        bail!("{}: fewer than two tokens to score", a.text.display());
    }
    let vocab = model.config().vocab_size as usize;
    let limits = Limits {
        threads: a.threads,
        ..limits(&a.load, a.window)
    };
    let plan = Plan::new(&model, &limits)?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut session = Session::new(&model, &plan, &mut arena)?;

    let compare = a.kl_vs.is_some() || a.kl_kv_cache.is_some();
    let other_load = LoadArgs {
        model: a.kl_vs.clone().or(a.load.model.clone()),
        kv_cache: a.kl_kv_cache.unwrap_or(a.load.kv_cache),
        ..a.load.clone()
    };
    let other = compare.then(|| open(&other_load)).transpose()?;
    if let Some(o) = &other {
        if o.config().vocab_size as usize != vocab {
            bail!(
                "{} has {} tokens, {} has {vocab}: not the same model",
                model_name(&other_load),
                o.config().vocab_size,
                model_name(&a.load)
            );
        }
    }
    let other_limits = Limits {
        kv_cache: other_load.kv_cache.into(),
        ..limits
    };
    let other_plan = other
        .as_ref()
        .map(|o| Plan::new(o, &other_limits))
        .transpose()?;
    let mut other_arena = vec![0u8; other_plan.as_ref().map_or(0, Plan::arena_bytes)];
    let mut other_session = match (&other, &other_plan) {
        (Some(o), Some(p)) => Some(Session::new(o, p, &mut other_arena)?),
        _ => None,
    };

    let (mut nll, mut kl, mut agree, mut scored) = (0.0f64, 0.0f64, 0usize, 0usize);
    let mut p = vec![0.0f64; vocab];
    let mut q = vec![0.0f64; vocab];
    let start = Instant::now();
    for window in ids.chunks(a.window as usize) {
        session.reset();
        if let Some(s) = other_session.as_mut() {
            s.reset();
        }
        for (i, &id) in window.iter().enumerate().take(window.len() - 1) {
            let next = window[i + 1];
            let logits = session.step(id)?;
            nll -= log_prob(logits, next, &mut p);
            if let Some(s) = other_session.as_mut() {
                let other_logits = s.step(id)?;
                log_prob(other_logits, next, &mut q);
                kl += p
                    .iter()
                    .zip(&q)
                    .filter(|(pi, _)| **pi > 0.0)
                    .map(|(pi, qi)| pi * (pi / qi.max(1e-300)).ln())
                    .sum::<f64>();
                agree +=
                    (mote::sample::argmax(logits) == mote::sample::argmax(other_logits)) as usize;
            }
            scored += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let ppl = (nll / scored as f64).exp();
    let kl_mean = other.as_ref().map(|_| kl / scored as f64);
    let top1 = other.as_ref().map(|_| agree as f64 / scored as f64);
    // Under a budget: how the cache did on the text's own routing.
    let stats = session.cache_stats();
    let uses = stats.hits + stats.misses;
    let paging = (session.expert_slots() > 0 && uses > 0).then(|| {
        json!({
            "expert_slots": session.expert_slots(), "hits": stats.hits, "misses": stats.misses,
            "hit_rate": stats.hits as f64 / uses as f64,
            "prefetch_accuracy": crate::bench::prediction_accuracy(&stats),
            "prefetches_used": stats.prefetches_used, "prefetches_wasted": stats.prefetches_wasted,
            "storage_bytes_read_per_token": stats.bytes_read as f64 / scored as f64,
        })
    });
    if a.json {
        return print_json(&json!({
            "model": model_name(&a.load), "text": a.text.display().to_string(),
            "tokens_scored": scored, "window": a.window, "perplexity": ppl,
            "mean_nll": nll / scored as f64, "kl_vs": other.as_ref().map(|_| model_name(&other_load)),
            "kv_cache": a.load.kv_cache.name(), "kl_kv_cache": other.as_ref().map(|_| other_load.kv_cache.name()),
            "mean_kl": kl_mean, "top1_agreement": top1, "seconds": seconds, "paging": paging,
        }));
    }
    println!(
        "{}: perplexity {ppl:.3} over {scored} tokens (windows of {}) in {seconds:.1} s",
        model_name(&a.load),
        a.window
    );
    if paging.is_some() {
        println!("{}", cache_summary(&session));
    }
    if let (Some(k), Some(t)) = (kl_mean, top1) {
        println!(
            "vs {} (kv cache {}): mean KL {k:.5} nats/token, top-1 agreement {:.1}%",
            model_name(&other_load),
            other_load.kv_cache.name(),
            100.0 * t
        );
    }
    Ok(())
}
