//! `eryx-host`: run Python in a sandbox built by `cargo xtask build-runtime`, or run the
//! conformance suite. Normally started through `cargo xtask run` / `cargo xtask conformance`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use eryx_host::{conformance, Callbacks, Limits, Manifest, Runtime};

#[derive(Parser)]
#[command(name = "eryx-host", about = "Run eryx sandbox guests with wasmtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run code; each -c is one `execute` on the same sandbox
    Run {
        /// The manifest written by `cargo xtask build-runtime`
        #[arg(long, default_value = "target/eryx/manifest.json")]
        manifest: PathBuf,
        #[arg(long, default_value = "cpython")]
        variant: String,
        #[arg(short = 'c', long = "code", required = true)]
        code: Vec<String>,
    },
    /// Run conformance case files against variants
    Conformance(conformance::Args),
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Run { manifest, variant, code } => {
            let manifest = Manifest::load(&manifest)?;
            let entry = manifest.variant(&variant)?.clone();
            let runtime = Runtime::new(entry, Limits::default(), &manifest.compile_cache_dir())?;
            let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard()))?;
            for code in code {
                match sandbox.execute(&code) {
                    Ok(output) => {
                        print!("{}", output.stdout);
                        eprint!("{}", output.stderr);
                    }
                    Err(error) => {
                        eprintln!("{error}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Conformance(args) => conformance::run(&args),
    }
}
