//! `brain-ldm`: the brain LDM command-line tool.
//!
//! Subcommands live in [`commands`], one module each. Errors surface as the library's typed
//! messages (naming the file and the cause) and a non-zero exit status.
#![warn(missing_docs)]

mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Freed full-size slab buffers are reused instead of faulted in again (`LargeBlockCache`).
#[global_allocator]
static ALLOCATOR: brain_ldm::nn::LargeBlockCache = brain_ldm::nn::LargeBlockCache::new();

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
