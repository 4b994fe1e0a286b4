//! `cargo xtask run` and `cargo xtask conformance`: build whatever is stale, then hand over
//! to the host binary (`eryx-tools`, through `host.rs`), which owns wasmtime. Keeping wasmtime
//! out of the xtask keeps every other command quick to compile.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::build::{build_runtime, cpython_source};
use crate::host::{exec, host_command, HOST_PACKAGE};
use crate::inputs::cache::Cache;
use crate::inputs::sources::Sources;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The variant to run: `cpython` or `rustpython`
    #[arg(long, default_value = "cpython")]
    pub variant: String,
    /// Python code; each -c is one `execute` on the same sandbox, in order
    #[arg(short = 'c', long = "code", value_name = "CODE", required_unless_present = "file", conflicts_with = "file")]
    pub code: Vec<String>,
    /// A Python file to run as one `execute` instead; `-` reads the code from stdin
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub flags: eryx_interface::flags::SandboxFlags,
}

#[derive(clap::Args)]
pub struct PythonArgs {
    /// The variant to run: `cpython` or `rustpython`
    #[arg(long, default_value = "cpython")]
    pub variant: String,
    /// A host directory the program may read and write: HOST or HOST::GUEST
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dirs: Vec<String>,
    /// An environment variable for the program (it sees no other)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Wall-clock limit in milliseconds
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Memory limit in MiB
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<usize>,
    /// The program's arguments, as for `python3` (after `--`)
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(clap::Args, Default)]
pub struct ConformanceArgs {
    /// `cpython`, `rustpython` or `all` (default: every built variant)
    #[arg(long)]
    pub variant: Option<String>,
    /// Case files or directories of them (default: tests/conformance)
    #[arg(long = "cases", value_name = "DIR_OR_FILE")]
    pub cases: Vec<PathBuf>,
    /// Also write the results as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Fail when a variant passes fewer than this share of the cases (host default: 90)
    #[arg(long, value_name = "PERCENT")]
    pub min_pass_percent: Option<f64>,
    /// Run the plain components (as linked, not pre-initialised) instead of the default ones
    #[arg(long)]
    pub plain: bool,
}

pub fn run_code(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &RunArgs) -> Result<()> {
    let manifest = build_runtime::run(workspace, cache, sources, &build_runtime::Args { variant: Some(args.variant.clone()), ..Default::default() })?;
    let mut command = host_command(workspace, sources)?;
    command.arg("run").arg("--manifest").arg(&manifest).args(["--variant", &args.variant]).args(args.flags.to_args());
    for code in &args.code {
        command.arg("-c").arg(code);
    }
    if let Some(file) = &args.file {
        // The host runs from the workspace root; a relative path names the caller's file.
        let path = if file.as_os_str() == "-" { file.clone() } else { std::path::absolute(file)? };
        command.arg(path);
    }
    let status = command.status().with_context(|| format!("start {HOST_PACKAGE}"))?;
    // The host already printed the error; pass its exit code on without another message.
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// `cargo xtask python`: the variant's command form, run like `python3`; the exit status is
/// the program's.
pub fn run_python(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &PythonArgs) -> Result<()> {
    let manifest = build_runtime::run(workspace, cache, sources, &build_runtime::Args { variant: Some(args.variant.clone()), ..Default::default() })?;
    let mut command = host_command(workspace, sources)?;
    command.arg("python").arg("--manifest").arg(&manifest).args(["--variant", &args.variant]);
    for dir in &args.dirs {
        command.arg("--dir").arg(dir);
    }
    for env in &args.env {
        command.arg("--env").arg(env);
    }
    if let Some(timeout) = args.timeout_ms {
        command.arg("--timeout-ms").arg(timeout.to_string());
    }
    if let Some(memory) = args.memory_mib {
        command.arg("--memory-mib").arg(memory.to_string());
    }
    command.arg("--").args(&args.args);
    let status = command.status().with_context(|| format!("start {HOST_PACKAGE}"))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// The command suite (`tests/cli`) on every variant's command form of `manifest`.
/// Runs the command suite under this host, and under the wasmtime CLI `wasmtime` (a host we
/// did not write) when there is one.
/// The command suite under our host, and under the wasmtime CLI and Node when given (hosts we
/// did not write).
pub fn run_cli_suite(
    workspace: &Workspace,
    sources: &Sources,
    manifest: &std::path::Path,
    wasmtime: Option<&std::path::Path>,
    node: Option<&std::path::Path>,
) -> Result<()> {
    let mut command = host_command(workspace, sources)?;
    command.arg("cli-cases").arg("--manifest").arg(manifest).arg("--cases").arg(workspace.path("tests/cli"));
    match wasmtime {
        Some(wasmtime) => {
            command.arg("--wasmtime").arg(wasmtime);
        }
        None => eprintln!("note: the command components run under this host only, not the wasmtime CLI"),
    }
    if let Some(node) = node {
        command.arg("--node").arg(node);
    }
    // CPython built from pinned source, when the build made it.
    let artifacts = workspace.artifacts_dir();
    let (module, stdlib) = (artifacts.join(cpython_source::CORE_MODULE), artifacts.join(cpython_source::STDLIB_DIR));
    if module.is_file() && stdlib.is_dir() {
        command.arg("--core-module").arg(module).arg("--core-stdlib").arg(stdlib);
    }
    exec(command, "the command suite")
}

/// Builds what is stale and runs the conformance suite; returns the manifest it ran against.
pub fn run_suite(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &ConformanceArgs) -> Result<PathBuf> {
    let build_variant = match args.variant.as_deref() {
        Some("all") | None => None,
        Some(name) => Some(name.to_owned()),
    };
    let manifest = build_runtime::run(workspace, cache, sources, &build_runtime::Args { variant: build_variant, ..Default::default() })?;
    let mut command = host_command(workspace, sources)?;
    command.arg("conformance").arg("--manifest").arg(&manifest);
    if let Some(variant) = &args.variant {
        command.args(["--variant", variant]);
    }
    let cases = if args.cases.is_empty() { vec![workspace.path("tests/conformance")] } else { args.cases.clone() };
    for case in cases {
        command.arg("--cases").arg(case);
    }
    if let Some(json) = &args.json {
        command.arg("--json").arg(json);
    }
    if let Some(percent) = args.min_pass_percent {
        command.arg("--min-pass-percent").arg(percent.to_string());
    }
    if args.plain {
        command.arg("--plain");
    }
    exec(command, "the conformance suite")?;
    Ok(manifest)
}
