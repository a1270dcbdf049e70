//! `mote`: the command line. `main` parses the arguments (`args`) and hands
//! each command to the module of its group: `convert` (quantize), `text`
//! (run, chat, tokenize, detokenize, eval), `tokens` (logits, generate),
//! `inspect` (inspect, plan), `bench`. They share `load` (opening a model)
//! and `report` (JSON out, peak RSS); none of them imports another command
//! module.
//!
//! Output for tools is JSON on stdout; errors are one line on stderr,
//! `mote: <what>: <why>`, with exit status 1.
#![forbid(unsafe_code)]

mod args;
mod bench;
mod boards;
mod builtin;
mod convert;
mod inspect;
mod load;
mod report;
mod text;
mod tokens;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use args::{Cli, Command};
use clap::FromArgMatches;

/// Runs one command; each lives in the module of its group.
fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Quantize(a) => convert::quantize(a),
        Command::Run(a) => text::run(a),
        Command::Chat(a) => text::chat(a),
        Command::Tokenize(a) => text::tokenize(a),
        Command::Detokenize(a) => text::detokenize(a),
        Command::Logits(a) => tokens::logits(a),
        Command::Generate(a) => tokens::generate(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Plan(a) => inspect::plan(a),
        Command::Bench(a) => bench::bench(a),
        Command::Eval(a) => text::eval(a),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::from_arg_matches(&args::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (e.g. `| head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "mote: {e:#}");
            ExitCode::FAILURE
        }
    }
}
