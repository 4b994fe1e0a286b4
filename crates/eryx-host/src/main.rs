//! `eryx-host`: run Python in a sandbox built by `cargo xtask build-runtime`, run a variant's
//! command form like `python3`, or run the conformance and command suites. Normally started
//! through `cargo xtask run` / `python` / `conformance` / `test`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::time::Duration;

use eryx_host::command::{CommandRuntime, Invocation, Streams};
use eryx_host::{cli_cases, conformance, Callbacks, Limits, Manifest, Runtime};

#[derive(Parser)]
#[command(name = "eryx-host", about = "Run eryx sandbox guests with wasmtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run code in one sandbox: each -c is one `execute`; or a file (`-`: stdin) as one
    Run {
        /// The manifest written by `cargo xtask build-runtime`
        #[arg(long, default_value = "target/eryx/manifest.json")]
        manifest: PathBuf,
        #[arg(long, default_value = "cpython")]
        variant: String,
        #[arg(short = 'c', long = "code", required_unless_present = "file", conflicts_with = "file")]
        code: Vec<String>,
        /// A Python file to run as one `execute`; `-` reads the code from stdin
        file: Option<PathBuf>,
    },
    /// Run conformance case files against variants
    Conformance(conformance::Args),
    /// Run a variant's command form (`python-<variant>.wasm`) like `python3`
    Python(PythonArgs),
    /// Run command case files (`tests/cli/*.toml`) against every variant's command form
    CliCases(cli_cases::Args),
}

#[derive(clap::Args)]
struct PythonArgs {
    /// The manifest written by `cargo xtask build-runtime`
    #[arg(long, default_value = "target/eryx/manifest.json")]
    manifest: PathBuf,
    #[arg(long, default_value = "cpython")]
    variant: String,
    /// A host directory the program may read and write: HOST or HOST::GUEST (default GUEST: HOST)
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// An environment variable for the program (it sees no other)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Wall-clock limit in milliseconds
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Memory limit in MiB
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
    /// The program's arguments, as for `python3`
    #[arg(last = true)]
    args: Vec<String>,
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
        Command::Run { manifest, variant, code, file } => {
            let code = match file {
                Some(path) if path.as_os_str() == "-" => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("read the code from stdin")?;
                    vec![text]
                }
                Some(path) => vec![std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?],
                None => code,
            };
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
                        // What the code printed before it failed, then why it failed.
                        if let Some(output) = error.partial_output() {
                            print!("{}", output.stdout);
                            eprint!("{}", output.stderr);
                        }
                        eprintln!("{error}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Conformance(args) => conformance::run(&args),
        Command::CliCases(args) => cli_cases::run(&args),
        Command::Python(args) => {
            let manifest = Manifest::load(&args.manifest)?;
            let entry = manifest.variant(&args.variant)?.clone();
            let runtime = CommandRuntime::new(entry, &manifest.compile_cache_dir())?;
            let mut dirs = Vec::new();
            for dir in &args.dirs {
                let (host, guest) = dir.split_once("::").unwrap_or((dir, dir));
                dirs.push((PathBuf::from(host), guest.to_owned()));
            }
            let mut env = Vec::new();
            for pair in &args.env {
                let (key, value) =
                    pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--env {pair}: expected KEY=VALUE"))?;
                env.push((key.to_owned(), value.to_owned()));
            }
            let invocation = Invocation {
                args: args.args,
                env,
                dirs,
                timeout: Duration::from_millis(args.timeout_ms),
                memory_bytes: args.memory_mib << 20,
            };
            let finished = runtime.run(&invocation, Streams::Inherit)?;
            Ok(ExitCode::from(u8::try_from(finished.exit_status).unwrap_or(1)))
        }
    }
}
