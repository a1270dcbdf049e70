//! Board profiles (`targets/boards/*.toml`, built into the binary) and the
//! question they answer: does this model fit this board, with which expert
//! cache, and how fast can it decode at best.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use mote::{FileStorage, Limits, MmapStorage, Model, Plan, Storage};
use serde::Deserialize;

/// One board: what it runs and the figures the estimate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Board {
    pub name: String,
    pub target: String,
    pub cpu: String,
    pub features: Vec<String>,
    pub kernels: String,
    pub cores: u32,
    pub ram_mib: f64,
    /// Memory a model may take: RAM less the OS and the application.
    pub budget_mib: f64,
    pub memory_bandwidth_gb_s: f64,
    pub storage: String,
    pub storage_read_mb_s: f64,
    /// The model is memory-mapped flash, used in place.
    pub xip: bool,
    /// Weight type `mote quantize --target` picks.
    pub dtype: String,
    /// Layout `mote quantize --target` picks (`planar` when absent).
    #[serde(default = "planar")]
    pub layout: String,
}

fn planar() -> String {
    mote::Layout::Planar.name().to_string()
}

const BUILTIN: &[(&str, &str)] = &[
    ("rpi4", include_str!("../../targets/boards/rpi4.toml")),
    ("rpi5", include_str!("../../targets/boards/rpi5.toml")),
    (
        "spacemit-k1",
        include_str!("../../targets/boards/spacemit-k1.toml"),
    ),
    (
        "visionfive2",
        include_str!("../../targets/boards/visionfive2.toml"),
    ),
    ("stm32h7", include_str!("../../targets/boards/stm32h7.toml")),
    ("esp32c3", include_str!("../../targets/boards/esp32c3.toml")),
];

/// A built-in board by name, or a profile file by path.
pub fn load(name: &str) -> Result<Board> {
    let (source, text) = match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, t)) => (format!("board {n}"), t.to_string()),
        None if Path::new(name).exists() => (
            name.to_string(),
            std::fs::read_to_string(name).with_context(|| name.to_string())?,
        ),
        None => {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown board {name:?}; built in: {} (or give a path to a .toml profile)",
                names.join(", ")
            )
        }
    };
    toml::from_str(&text).with_context(|| source)
}

/// Bytes of weights one decoded token reads: every non-expert tensor, the
/// routed experts' matrices (average expert × top-k per layer), one
/// embedding row.
pub fn bytes_per_token<S: Storage>(model: &Model<S>) -> Result<u64> {
    let c = model.config();
    let (mut dense, mut experts) = (0u64, 0u64);
    for i in 0..model.tensor_count() {
        let r = model.record(i)?;
        match r.id.kind {
            k if k.is_expert() => experts += r.length,
            mote::TensorKind::TokenEmbedding if !c.tied_embeddings => {
                dense += r.length / r.rows as u64
            }
            _ => dense += r.length,
        }
    }
    let layers = c.expert_layers() as u64;
    let per_expert = experts / (layers * c.n_experts as u64).max(1);
    Ok(dense + per_expert * layers * c.n_experts_per_token as u64)
}

/// What `mote plan --board` reports.
#[derive(Debug, serde::Serialize)]
pub struct Verdict {
    pub board: String,
    pub target: String,
    pub cpu: String,
    pub features: Vec<String>,
    pub cores: u32,
    pub ram_mib: f64,
    pub fits: bool,
    pub why: String,
    pub budget_bytes: u64,
    pub arena_bytes: Option<usize>,
    pub expert_slots: Option<usize>,
    pub experts: usize,
    pub weights_in_place: bool,
    pub weight_bytes_per_token: u64,
    pub storage_bytes_per_token: f64,
    pub decode_ceiling_tok_s: Option<f64>,
    pub kernels: String,
}

/// Plans `model` on `board` with a context of `max_context` tokens.
pub fn verdict(path: &Path, board: &Board, max_context: u32) -> Result<Verdict> {
    let budget_bytes = (board.budget_mib * (1u64 << 20) as f64) as u64;
    let limits = Limits {
        memory_budget_bytes: Some(budget_bytes),
        max_context,
        threads: board.cores,
        prefill_batch: if board.xip { 1 } else { 64 },
        ..Limits::default()
    };
    let display = || path.display().to_string();
    // XIP flash is addressable like a map; otherwise experts are paged.
    let (plan, model_info) = if board.xip {
        let model =
            Model::open(MmapStorage::open(path).with_context(display)?).with_context(display)?;
        (
            Plan::new(&model, &limits),
            (bytes_per_token(&model)?, model.config().clone()),
        )
    } else {
        let model =
            Model::open(FileStorage::open(path).with_context(display)?).with_context(display)?;
        (
            Plan::new(&model, &limits),
            (bytes_per_token(&model)?, model.config().clone()),
        )
    };
    let (per_token, config) = model_info;
    let experts = (config.expert_layers() * config.n_experts) as usize;
    let mem_bw = board.memory_bandwidth_gb_s * 1e9;
    let storage_bw = board.storage_read_mb_s * 1e6;
    let mut v = Verdict {
        board: board.name.clone(),
        target: board.target.clone(),
        cpu: board.cpu.clone(),
        features: board.features.clone(),
        cores: board.cores,
        ram_mib: board.ram_mib,
        fits: false,
        why: String::new(),
        budget_bytes,
        arena_bytes: None,
        expert_slots: None,
        experts,
        weights_in_place: board.xip,
        weight_bytes_per_token: per_token,
        storage_bytes_per_token: 0.0,
        decode_ceiling_tok_s: None,
        kernels: board.kernels.clone(),
    };
    match plan {
        Err(e) => v.why = e.to_string(),
        Ok(plan) => {
            v.fits = true;
            v.arena_bytes = Some(plan.arena_bytes());
            let seconds = if board.xip {
                v.why = "weights used in place from flash; arena in RAM".into();
                v.storage_bytes_per_token = per_token as f64;
                per_token as f64 / storage_bw
            } else {
                let e = plan.experts.expect("a pread plan pages experts");
                v.expert_slots = Some(e.slots);
                // Uniform routing: a routed expert is cached with odds slots/experts.
                let miss = 1.0 - e.slots as f64 / experts as f64;
                let routed = (config.expert_layers() * config.n_experts_per_token) as f64;
                v.storage_bytes_per_token = miss * routed * e.slot_bytes as f64;
                v.why = if e.slots == experts {
                    "every expert resident".into()
                } else {
                    format!(
                        "{} of {} experts in slots, the rest paged from {}",
                        e.slots, experts, board.storage
                    )
                };
                per_token as f64 / mem_bw + v.storage_bytes_per_token / storage_bw
            };
            v.decode_ceiling_tok_s = Some(1.0 / seconds);
        }
    }
    Ok(v)
}

/// Prints a verdict as text: fits or not, the board, why, and the figures.
pub fn print_verdict(v: &Verdict) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_board_parses() {
        for (name, _) in BUILTIN {
            let b = load(name).unwrap();
            assert!(b.budget_mib <= b.ram_mib && b.cores >= 1, "{name}");
        }
        assert!(load("no-such-board")
            .unwrap_err()
            .to_string()
            .contains("rpi5"));
    }
}
