//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// mote runs int4/int8-quantized Mixture-of-Experts language models on edge
/// devices, paging experts from storage under a fixed memory budget.
#[derive(Debug, Parser)]
#[command(name = "mote", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The commands as `mote --help` lists them, by what they are for.
pub const COMMAND_GROUPS: &[(&str, &[&str])] = &[
    ("Convert", &["quantize"]),
    ("Run text", &["run", "chat", "tokenize", "detokenize"]),
    ("Run tokens", &["logits", "generate"]),
    ("Inspect and plan", &["inspect", "plan"]),
    ("Measure", &["bench", "eval"]),
];

/// The command line with its top-level help: what mote is, then the
/// commands by group, each with its own one-line description.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let mut groups = String::new();
    for (title, names) in COMMAND_GROUPS {
        groups.push_str(&format!("{title}:\n"));
        for name in *names {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            groups.push_str(&format!("  {name:<11} {about}\n"));
        }
        groups.push('\n');
    }
    cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}Options:\n{{options}}\n\n\
         `mote COMMAND --help` tells a command's options; with no model file, the\n\
         commands that load one use the small model built into this binary.\n"
    ))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a Hugging Face checkpoint folder into a .mote file.
    Quantize(QuantizeArgs),
    /// Print the logits for a token sequence as JSON.
    Logits(LogitsArgs),
    /// Generate tokens greedily and print their ids as JSON.
    Generate(GenerateArgs),
    /// Print a file's config, tensor directory and memory plan.
    Inspect(InspectArgs),
    /// Measure load time, prefill and decode speed, and peak memory.
    Bench(BenchArgs),
    /// Say whether a model fits a board, with which expert cache, and its decode ceiling.
    Plan(PlanArgs),
    /// Print the token ids of a text as JSON (no special tokens added).
    Tokenize(TokenizeArgs),
    /// Print the text of token ids as JSON.
    Detokenize(DetokenizeArgs),
    /// Generate text from a prompt, streaming it as it comes.
    Run(RunArgs),
    /// Talk with a model in its chat format; Ctrl-D ends.
    Chat(ChatArgs),
    /// Perplexity of a model on a text file (and KL divergence against another file).
    Eval(EvalArgs),
}

/// Weight types for `mote quantize`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WeightType {
    F32,
    F16,
    Int8,
    Int4,
    /// OCP MXFP4 (gpt-oss's expert format).
    Mxfp4,
}

impl From<WeightType> for mote::DType {
    fn from(t: WeightType) -> Self {
        match t {
            WeightType::F32 => mote::DType::F32,
            WeightType::F16 => mote::DType::F16,
            WeightType::Int8 => mote::DType::Q8,
            WeightType::Int4 => mote::DType::Q4,
            WeightType::Mxfp4 => mote::DType::Mxfp4,
        }
    }
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Folder with config.json and model.safetensors (or a sharded index).
    pub input: PathBuf,
    /// Output .mote file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Type of the weight matrices; norms and routers stay f32 (default:
    /// the board's with --target, else int4).
    #[arg(long, value_enum)]
    pub dtype: Option<WeightType>,
    /// Board profile (name in targets/boards or a .toml path): picks the
    /// weight type and layout and reports whether the result fits the board.
    #[arg(long)]
    pub target: Option<String>,
    /// Byte order of the int4/int8 matrices: planar (every kernel's
    /// fast path), or rows4 (four rows side by side, for aarch64 with
    /// dotprod; other CPUs run it with the scalar kernels). Default: the
    /// board's with --target, else planar.
    #[arg(long, value_parser = parse_layout)]
    pub layout: Option<mote::Layout>,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Leave the tokenizer out (token ids only), e.g. for a pre-tokenizer
    /// mote cannot reproduce exactly yet.
    #[arg(long)]
    pub no_tokenizer: bool,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options shared by the commands that load a model.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The .mote file, or a .gguf (converted once into the cache directory)
    /// (default: the small model built into this binary).
    pub model: Option<PathBuf>,
    /// Most bytes the session may use (e.g. 64MiB, 1.5GiB, 300000). The
    /// file is then read with pread (not mapped; expert reads bypass the
    /// page cache with O_DIRECT where the filesystem allows) and experts
    /// are paged into the slots the budget leaves.
    #[arg(long, value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Skip checking the tensors' CRC32s at load.
    #[arg(long)]
    pub no_verify: bool,
    /// Which expert to evict when the budget's expert slots are full.
    #[arg(long, value_enum, default_value = "cycle")]
    pub eviction: Eviction,
    /// Check every expert's CRC32s each time it is paged in.
    #[arg(long)]
    pub paranoid: bool,
    /// Do not predict and read ahead the next layer's experts.
    #[arg(long)]
    pub no_prefetch: bool,
    /// How the KV cache stores keys and values.
    #[arg(long, value_enum, default_value = "f16")]
    pub kv_cache: KvCache,
}

/// KV cache types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvCache {
    /// 4 bytes a number: exact.
    F32,
    /// 2 bytes a number.
    F16,
    /// 1 byte a number plus an f16 scale per 32 of a head's row.
    Q8,
}

impl KvCache {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        mote::KvCacheType::from(self).name()
    }
}

impl From<KvCache> for mote::KvCacheType {
    fn from(k: KvCache) -> Self {
        match k {
            KvCache::F32 => mote::KvCacheType::F32,
            KvCache::F16 => mote::KvCacheType::F16,
            KvCache::Q8 => mote::KvCacheType::Q8,
        }
    }
}

/// Expert eviction policies.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Eviction {
    /// The one whose layer comes back last in the layer cycle (then least
    /// frequently, least recently used).
    Cycle,
    /// Least recently used.
    Lru,
    /// Least frequently used, with aging.
    Lfu,
}

impl From<Eviction> for mote::EvictionPolicy {
    fn from(e: Eviction) -> Self {
        match e {
            Eviction::Cycle => mote::EvictionPolicy::LayerCycle,
            Eviction::Lru => mote::EvictionPolicy::Lru,
            Eviction::Lfu => mote::EvictionPolicy::FrequencyAging,
        }
    }
}

#[derive(Debug, Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Comma-separated token ids.
    #[arg(long, value_parser = parse_tokens)]
    pub tokens: TokenList,
    /// One row of logits per position instead of only the last.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Comma-separated prompt token ids.
    #[arg(long, value_parser = parse_tokens)]
    pub tokens: TokenList,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Keep going past the model's end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print peak memory and expert-cache counters as JSON on stderr.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// How the next token is chosen (default: greedy).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// 0 is greedy; higher flattens the distribution.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Keep the most likely tokens up to this total probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalise the tokens of the last 64 positions (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> mote::SamplerConfig {
        mote::SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            seed: self.seed,
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Context length to plan for.
    #[arg(long, default_value_t = 2048)]
    pub max_context: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Prompt length processed as one prefill.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: u32,
    /// Tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The .mote file.
    pub model: PathBuf,
    /// Board profile: rpi4, rpi5, spacemit-k1, visionfive2, stm32h7, esp32c3, or a .toml path.
    #[arg(long)]
    pub board: String,
    /// Context length to plan for.
    #[arg(long, default_value_t = 512)]
    pub max_context: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The .mote file (default: the built-in model).
    pub model: Option<PathBuf>,
    /// The text.
    #[arg(long)]
    pub text: String,
    /// Add the tokenizer's special tokens (BOS) as when prompting.
    #[arg(long)]
    pub special: bool,
}

#[derive(Debug, Args)]
pub struct DetokenizeArgs {
    /// The .mote file (default: the built-in model).
    pub model: Option<PathBuf>,
    /// Comma-separated token ids.
    #[arg(long, value_parser = parse_tokens)]
    pub ids: TokenList,
    /// Keep special tokens (BOS, EOS, chat markers) in the text.
    #[arg(long)]
    pub keep_special: bool,
}

/// Options of the commands that generate text.
#[derive(Debug, Clone, Args)]
pub struct TextArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Most tokens to generate (per reply in `chat`).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Context length to plan for (default: the model's, at most 4096).
    #[arg(long)]
    pub context: Option<u32>,
    /// No statistics on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub text: TextArgs,
    /// The prompt.
    #[arg(long, short)]
    pub prompt: String,
    /// Keep going past the model's end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub text: TextArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// UTF-8 text to score.
    #[arg(long)]
    pub text: PathBuf,
    /// Another .mote file of the same model: also report the mean KL
    /// divergence of its next-token distributions from this model's.
    #[arg(long)]
    pub kl_vs: Option<PathBuf>,
    /// The KV cache type of the --kl-vs model (default: this one's);
    /// without --kl-vs, this model with that cache is the comparison.
    #[arg(long, value_enum)]
    pub kl_kv_cache: Option<KvCache>,
    /// Tokens per window; the text is scored in consecutive windows.
    #[arg(long, default_value_t = 256)]
    pub window: u32,
    /// Score at most this many tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_tokens: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Token ids from the command line.
#[derive(Debug, Clone)]
pub struct TokenList(pub Vec<u32>);

fn parse_tokens(s: &str) -> Result<TokenList, String> {
    let ids: Result<Vec<u32>, String> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| format!("invalid token id {t:?}"))
        })
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err("no token ids given".into());
    }
    Ok(TokenList(ids))
}

/// Parses a byte count: a plain number or one with a KiB/MiB/GiB (or K/M/G,
/// KB/MB/GB as powers of 1000) suffix.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    let bytes = value * mult;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("invalid size {s:?}"));
    }
    Ok(bytes as u64)
}

/// `--layout`: a layout by name.
fn parse_layout(s: &str) -> Result<mote::Layout, String> {
    mote::Layout::from_name(s).ok_or_else(|| format!("unknown layout {s:?} (planar or rows4)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("300000"), Ok(300000));
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn top_level_help_lists_every_command_once_in_its_group() {
        let cmd = command();
        let listed: Vec<&str> = COMMAND_GROUPS
            .iter()
            .flat_map(|g| g.1.iter().copied())
            .collect();
        let mut names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        names.sort_unstable();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, names, "every subcommand in exactly one group");
        let help = command().render_help().to_string();
        assert!(
            help.starts_with("mote runs int4/int8-quantized Mixture-of-Experts"),
            "{help}"
        );
        for name in listed {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .unwrap();
            assert!(
                help.contains(&format!("  {name:<11} {about}")),
                "{name} in\n{help}"
            );
        }
        for (title, _) in COMMAND_GROUPS {
            assert!(help.contains(&format!("{title}:\n")), "{title}");
        }
    }

    #[test]
    fn token_lists_reject_junk() {
        assert_eq!(parse_tokens("1, 2,3").unwrap().0, vec![1, 2, 3]);
        assert!(parse_tokens("1,x").is_err());
        assert!(parse_tokens("").is_err());
    }
}
