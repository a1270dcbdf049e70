//! `mote`: convert checkpoints, inspect files, compute logits, generate
//! tokens and text.
//!
//! Output for tools is JSON on stdout; errors are one line on stderr,
//! `mote: <what>: <why>`, with exit status 1.
#![forbid(unsafe_code)]

mod args;
mod boards;
mod builtin;
mod commands;
mod text;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
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
