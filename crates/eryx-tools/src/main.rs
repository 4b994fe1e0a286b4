//! `eryx-tools`: run Python in a sandbox built by `cargo xtask build-runtime`, run a variant's
//! command form like `python3`, or run the conformance and command suites. Normally started
//! through `cargo xtask run` / `python` / `conformance` / `test`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::time::Duration;

use eryx_host::command::{CommandRuntime, Invocation, Streams};
use eryx_host::{Callbacks, Journal, Limits, Manifest, Runtime};
use eryx_tools::{cli_cases, conformance};
use eryx_interface::flags::SandboxFlags;

#[derive(Parser)]
#[command(name = "eryx-tools", about = "Run eryx sandbox guests with wasmtime: code, commands, suites, benchmarks and build steps")]
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
        #[command(flatten)]
        flags: SandboxFlags,
    },
    /// Run conformance case files against variants
    Conformance(conformance::Args),
    /// Run a variant's command form (`python-<variant>.wasm`) like `python3`
    Python(PythonArgs),
    /// Run command case files (`tests/cli/*.toml`) against every variant's command form
    CliCases(cli_cases::Args),
    /// Measure sandbox start-up, execute and callback latency, compute speed and memory,
    /// side by side with native python3 (run by `cargo xtask bench`)
    Bench(eryx_tools::bench::Args),
    /// Build step: pre-initialise a sandbox component (run by `cargo xtask build-runtime`)
    Preinit(PreinitArgs),
    /// Build step: compile a stdlib tree's modules into bytecode beside them, with the CPython
    /// command form (run by `cargo xtask build-runtime`)
    Bytecode {
        /// The command component (`python-cpython.wasm`)
        #[arg(long)]
        command: PathBuf,
        /// The stdlib tree, written in place
        #[arg(long)]
        stdlib: PathBuf,
        /// Where the compiled command component is cached
        #[arg(long)]
        compile_cache: PathBuf,
    },
    /// Build step: precompile a sandbox component for the portable CPU baseline into OUT,
    /// and what it was compiled for (JSON) into INFO (run by `cargo xtask build-runtime`)
    Precompile {
        #[arg(long)]
        component: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        info: PathBuf,
    },
}

#[derive(clap::Args)]
struct PreinitArgs {
    /// The plain sandbox component
    #[arg(long)]
    component: PathBuf,
    /// A read-only mount the sandbox has, as HOST::GUEST (the variant's stdlib)
    #[arg(long = "mount", value_name = "HOST::GUEST")]
    mounts: Vec<String>,
    /// An environment variable the sandbox has
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A module to import before the snapshot
    #[arg(long = "import", value_name = "MODULE")]
    imports: Vec<String>,
    /// A package set's tree, as HOST::GUEST: mounted read-only and put on `sys.path` (after the
    /// stdlib) before the imports
    #[arg(long, value_name = "HOST::GUEST")]
    packages: Option<String>,
    #[arg(long)]
    out: PathBuf,
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

/// `--env KEY=VALUE` flags as pairs.
fn env_pairs(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
            None => anyhow::bail!("--env {pair}: expected KEY=VALUE"),
        })
        .collect()
}

/// The limits `flags` ask for, over the defaults.
fn limits_of(flags: &SandboxFlags) -> Limits {
    let defaults = Limits::default();
    Limits {
        timeout: flags.timeout_ms.map(Duration::from_millis).unwrap_or(defaults.timeout),
        memory_bytes: flags.memory_mib.map(|mib| mib << 20).unwrap_or(defaults.memory_bytes),
        fuel: flags.fuel,
        max_output_bytes: flags.max_output_bytes.unwrap_or(defaults.max_output_bytes),
        max_callbacks: flags.max_callbacks.unwrap_or(defaults.max_callbacks),
        callback_timeout: flags.callback_timeout_ms.map(Duration::from_millis).unwrap_or(defaults.callback_timeout),
        max_callback_argument_bytes: flags.max_callback_argument_bytes.unwrap_or(defaults.max_callback_argument_bytes),
        max_pending_callback_bytes: flags.max_pending_callback_bytes.unwrap_or(defaults.max_pending_callback_bytes),
    }
}

/// `run`: each piece of code is one execute on one sandbox. The sandbox's stdout goes to
/// stdout and nothing else does; with `--json`, one JSON object per execute instead.
fn run_code(manifest: &std::path::Path, variant: &str, code: &[String], flags: &SandboxFlags) -> Result<ExitCode> {
    let manifest = Manifest::load(manifest)?;
    let entry = manifest.variant(variant)?.clone();
    let runtime = Runtime::new(entry, limits_of(flags), &manifest.compile_cache_dir())?;
    let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard()))?;
    sandbox.set_trace(flags.trace);
    if let Some(path) = &flags.replay {
        sandbox.replay_callbacks(Journal::load(path)?);
    }
    if flags.record.is_some() {
        sandbox.record_callbacks();
    }
    let status = run_each(&mut sandbox, code, flags)?;
    if let (Some(path), Some(journal)) = (&flags.record, sandbox.recorded_callbacks()) {
        journal.save(path)?;
        eprintln!("recorded {} callback call(s) into {}", journal.calls.len(), path.display());
    }
    if let Some(mismatch) = sandbox.replay_mismatch() {
        eprintln!("error: the run did not match the callback journal: {mismatch}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(status)
}

/// Writes a sandbox's output to this process's stdout and stderr as it is written.
fn print_live(stream: eryx_host::Stream, bytes: &[u8]) {
    use std::io::Write;
    // A closed pipe on our side must not stop the sandbox: write errors are dropped.
    let _ = match stream {
        eryx_host::Stream::Stdout => std::io::stdout().lock().write_all(bytes).and_then(|()| std::io::stdout().flush()),
        eryx_host::Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

/// Runs each piece of code as one execute; stops at the first that fails. Without `--json`
/// the output is printed as it is written (the bytes the sandbox wrote), and the mark of a
/// cut stream after it.
fn run_each(sandbox: &mut eryx_host::Sandbox, code: &[String], flags: &SandboxFlags) -> Result<ExitCode> {
    if !flags.json {
        sandbox.set_output_listener(Some(Arc::new(print_live)));
    }
    for code in code {
        let result = sandbox.execute(code);
        let trace: Vec<serde_json::Value> = sandbox
            .traces()
            .iter()
            .map(|event| {
                let mut value: serde_json::Value =
                    serde_json::from_str(&event.event_json).unwrap_or_else(|_| serde_json::json!({"raw": event.event_json}));
                value["line"] = serde_json::json!(event.lineno);
                value
            })
            .collect();
        let output = match &result {
            Ok(output) => output.clone(),
            Err(error) => error.partial_output().or(sandbox.interrupted_output()).cloned().unwrap_or_default(),
        };
        if flags.json {
            let error = result.as_ref().err().map(ToString::to_string);
            println!(
                "{}",
                serde_json::json!({
                    "stdout": output.stdout,
                    "stderr": output.stderr,
                    "error": error,
                    "truncated": output.truncated,
                    "trace": trace,
                })
            );
        } else {
            // The output was printed as it was written; what is left is the mark of a cut.
            if output.stdout_dropped > 0 {
                print!("{}", eryx_host::output::cut_mark(output.stdout_dropped));
            }
            if output.stderr_dropped > 0 {
                eprint!("{}", eryx_host::output::cut_mark(output.stderr_dropped));
            }
            for event in &trace {
                eprintln!("trace: {event}");
            }
            // What the code printed before it failed, then why it failed.
            if let Err(error) = &result {
                eprintln!("{error}");
            }
        }
        if result.is_err() {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Run { manifest, variant, code, file, flags } => {
            let code = match file {
                Some(path) if path.as_os_str() == "-" => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("read the code from stdin")?;
                    vec![text]
                }
                Some(path) => vec![std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?],
                None => code,
            };
            run_code(&manifest, &variant, &code, &flags)
        }
        Command::Preinit(args) => {
            let mut variant = eryx_host::VariantEntry::for_component(&args.component);
            for mount in &args.mounts {
                let (host, guest) = mount.split_once("::").with_context(|| format!("--mount {mount}: expected HOST::GUEST"))?;
                variant.stdlib = Some(eryx_host::manifest::StdlibMount { host_directory: host.into(), guest_path: guest.to_owned() });
            }
            if let Some(packages) = &args.packages {
                let (host, guest) = packages.split_once("::").with_context(|| format!("--packages {packages}: expected HOST::GUEST"))?;
                variant.packages = Some(eryx_host::manifest::StdlibMount { host_directory: host.into(), guest_path: guest.to_owned() });
            }
            variant.env.extend(env_pairs(&args.env)?);
            let plain = std::fs::read(&args.component).with_context(|| format!("read {}", args.component.display()))?;
            let started = std::time::Instant::now();
            let bytes = eryx_tools::preinit::preinitialize(&plain, &variant, &args.imports)?;
            eryx_host::write_atomic(&args.out, &bytes)?;
            eprintln!(
                "pre-initialised {} in {:.1}s ({:.1} → {:.1} MiB)",
                args.component.display(),
                started.elapsed().as_secs_f64(),
                plain.len() as f64 / 1048576.0,
                bytes.len() as f64 / 1048576.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bytecode { command, stdlib, compile_cache } => {
            let started = std::time::Instant::now();
            let count = eryx_tools::bytecode::compile_stdlib(&command, &stdlib, &compile_cache)?;
            eprintln!("compiled the bytecode of {count} modules in {:.1}s", started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Precompile { component, out, info } => {
            eryx_tools::precompile::precompile(&component, &out, &info)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            eryx_tools::bench::run(&args)?;
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
            let invocation = Invocation {
                args: args.args,
                env: env_pairs(&args.env)?,
                dirs,
                timeout: Duration::from_millis(args.timeout_ms),
                memory_bytes: args.memory_mib << 20,
            };
            let finished = runtime.run(&invocation, Streams::Inherit)?;
            Ok(ExitCode::from(u8::try_from(finished.exit_status).unwrap_or(1)))
        }
    }
}
