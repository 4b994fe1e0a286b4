//! The command suite: case files (`tests/cli/*.toml`) run against every variant's command
//! form (`python-<variant>.wasm`). This module is the only code that knows the format, and
//! it rejects keys it does not know.
//!
//! ```toml
//! [[case]]
//! name = "script-with-arguments"
//! files = { "script.py" = "import sys\nprint(sys.argv[1:])\n" }   # placed in a fresh
//! args = ["/work/script.py", "a", "b"]                            # directory, mounted at /work
//! stdin = ""
//! env = { GREETING = "hi" }
//! exit = 0                     # the expected exit status (default 0)
//! stdout = "['a', 'b']\n"      # exact; or stdout_contains = [...]
//! stderr = ""                  # exact; or stderr_contains = [...]
//! files_after = { "out.txt" = "written\n" }                       # exact contents after the run
//! skip = { rustpython = "why this variant differs" }          # per variant, under our host;
//!                                                             # `"rustpython@wasmtime"` under
//!                                                             # the wasmtime CLI,
//!                                                             # `"rustpython@node"` (the core
//!                                                             # module under `node:wasi`)
//! not_on = { "rustpython@node" = "why" }  # not run at all on that host: for a host we did
//!                                          # not write that crashes on the case itself
//! ```
//!
//! A skipped case still runs: if it passes, that is reported as a failure ("remove the
//! skip"), so a fixed divergence cannot go unnoticed. `not_on` is for what cannot be run to a
//! verdict (the host itself crashes, sometimes): it is reported on every run, never counted as
//! passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use eryx_host::command::{CommandRuntime, Finished, Invocation, Streams};
use eryx_host::Manifest;

/// Where a case's files are mounted inside the program.
pub const WORK_DIR: &str = "/work";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub suite: crate::conformance::SuiteArgs,
    /// Also run every case under this wasmtime CLI (a host we did not write), as
    /// `wasmtime run` with the same arguments, directories, environment and stdin
    #[arg(long, value_name = "PROGRAM")]
    pub wasmtime: Option<PathBuf>,
    /// Also run every case, for variants with a core module, under this Node's own WASI
    /// (`node:wasi`), with the same arguments, directories, environment and stdin
    #[arg(long, value_name = "PROGRAM")]
    pub node: Option<PathBuf>,
    /// Also run every case on this preview1 core module (CPython built from pinned source) as
    /// the variant `cpython-source`, under the wasmtime CLI and Node (those given)
    #[arg(long, value_name = "FILE", requires = "core_stdlib")]
    pub core_module: Option<PathBuf>,
    /// The standard library of --core-module, preopened read-only at `/lib/python3.14`, where
    /// that interpreter (prefix `/`) looks for it
    #[arg(long, value_name = "DIR", requires = "core_module")]
    pub core_stdlib: Option<PathBuf>,
}

/// The name the command suite gives the core module of CPython built from source.
pub const SOURCE_VARIANT: &str = "cpython-source";
/// Where that interpreter looks for its standard library.
const SOURCE_STDLIB: &str = "/lib/python3.14";

/// Where a case runs.
pub enum Host<'a> {
    /// This host's command runner.
    Ours(&'a CommandRuntime),
    /// `wasmtime run` of the variant's command component.
    WasmtimeCli { program: &'a Path, variant: &'a eryx_host::VariantEntry },
    /// The variant's core module under Node's `node:wasi`.
    NodeWasi { program: &'a Path, variant: &'a eryx_host::VariantEntry },
}

impl Host<'_> {
    /// The name a case's `skip` uses for this host and `variant`: the variant's name under our
    /// host, `<variant>@wasmtime` under the wasmtime CLI, `<variant>@node` under Node.
    fn label(&self, variant: &str) -> String {
        match self {
            Host::Ours(_) => variant.to_owned(),
            Host::WasmtimeCli { .. } => format!("{variant}@wasmtime"),
            Host::NodeWasi { .. } => format!("{variant}@node"),
        }
    }
}


#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub exit: i32,
    pub stdout: Option<String>,
    #[serde(default)]
    pub stdout_contains: Vec<String>,
    pub stderr: Option<String>,
    #[serde(default)]
    pub stderr_contains: Vec<String>,
    #[serde(default)]
    pub files_after: BTreeMap<String, String>,
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    #[serde(default)]
    pub not_on: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    #[serde(skip)]
    pub file: PathBuf,
}

/// The cases of every `*.toml` under the given files and directories.
pub fn load_cases(paths: &[PathBuf]) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for file in crate::conformance::case_files(paths)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let parsed: CaseFile = toml::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
        for mut case in parsed.case {
            for relative in case.files.keys().chain(case.files_after.keys()) {
                if Path::new(relative).is_absolute() || relative.split('/').any(|part| part == "..") {
                    bail!("{}: case `{}`: file `{relative}` must stay inside the mounted directory", file.display(), case.name);
                }
            }
            case.file = file.clone();
            cases.push(case);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        if !names.insert(&case.name) {
            bail!("two command cases are named `{}`", case.name);
        }
    }
    Ok(cases)
}

/// Runs one case under `host`; `Err` is why it failed.
pub fn run_case(host: &Host, case: &Case) -> Result<(), String> {
    let directory = tempfile::tempdir().map_err(|error| format!("create a temporary directory: {error}"))?;
    for (relative, contents) in &case.files {
        let path = directory.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
        }
        std::fs::write(&path, contents).map_err(|error| format!("write {relative}: {error}"))?;
    }
    let invocation = Invocation {
        args: case.args.clone(),
        env: case.env.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
        dirs: vec![(directory.path().to_path_buf(), WORK_DIR.to_owned())],
        timeout: Duration::from_millis(case.timeout_ms.unwrap_or(30_000)),
        memory_bytes: 256 << 20,
    };
    let finished = match host {
        Host::Ours(runtime) => runtime
            .run(&invocation, Streams::Capture { stdin: case.stdin.clone().into_bytes() })
            .map_err(|error| format!("{error:#}"))?,
        Host::WasmtimeCli { program, variant } => run_wasmtime(program, variant, &invocation, case.stdin.as_bytes())?,
        Host::NodeWasi { program, variant } => run_node(program, variant, &invocation, case.stdin.as_bytes())?,
    };
    let stdout = String::from_utf8_lossy(&finished.stdout);
    let stderr = String::from_utf8_lossy(&finished.stderr);
    let context = || format!("\n  stdout: {:?}\n  stderr: {:?}", excerpt(&stdout), excerpt(&stderr));
    if finished.exit_status != case.exit {
        return Err(format!("exit status {}, expected {}{}", finished.exit_status, case.exit, context()));
    }
    if let Some(expected) = &case.stdout {
        if *expected != stdout {
            return Err(format!("stdout is {:?}, expected {expected:?}{}", excerpt(&stdout), context()));
        }
    }
    for needle in &case.stdout_contains {
        if !stdout.contains(needle.as_str()) {
            return Err(format!("stdout lacks {needle:?}{}", context()));
        }
    }
    if let Some(expected) = &case.stderr {
        if *expected != stderr {
            return Err(format!("stderr is {:?}, expected {expected:?}{}", excerpt(&stderr), context()));
        }
    }
    for needle in &case.stderr_contains {
        if !stderr.contains(needle.as_str()) {
            return Err(format!("stderr lacks {needle:?}{}", context()));
        }
    }
    for (relative, expected) in &case.files_after {
        match std::fs::read_to_string(directory.path().join(relative)) {
            Ok(actual) if actual == *expected => {}
            Ok(actual) => return Err(format!("{WORK_DIR}/{relative} holds {:?}, expected {expected:?}", excerpt(&actual))),
            Err(error) => return Err(format!("{WORK_DIR}/{relative} after the run: {error}")),
        }
    }
    Ok(())
}

/// `wasmtime run` of `variant`'s command component, as our runner would run it: the same
/// directories, environment (`command::environment`), wasm stack and stdin; the timeout kills it.
fn run_wasmtime(program: &Path, variant: &eryx_host::VariantEntry, invocation: &Invocation, stdin: &[u8]) -> Result<Finished, String> {
    let component = variant.command_path.as_ref().ok_or("the manifest has no command form of this variant")?;
    let mut command = std::process::Command::new(program);
    command.args(["run", "--argv0", "python"]).args([
        "-W",
        &format!("max-wasm-stack={}", eryx_host::engine::MAX_WASM_STACK),
        "-W",
        &format!("max-memory-size={}", invocation.memory_bytes),
    ]);
    if let Some(stdlib) = &variant.stdlib {
        command.arg("--dir").arg(format!("{}::{}", stdlib.host_directory.display(), stdlib.guest_path));
    }
    for (host, guest) in &invocation.dirs {
        command.arg("--dir").arg(format!("{}::{guest}", host.display()));
    }
    for (key, value) in eryx_host::command::environment(&variant.env, &invocation.env) {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command.arg(component).args(&invocation.args);
    run_program(command, stdin, invocation.timeout)
}

/// Node's `node:wasi` running `variant`'s core module (`node/run_core_module.mjs`), as our
/// runner would run the command: the same arguments (after `python` as the program name),
/// directories, environment and wasm stack; the timeout kills it. Node sets no memory limit
/// of its own.
fn run_node(program: &Path, variant: &eryx_host::VariantEntry, invocation: &Invocation, stdin: &[u8]) -> Result<Finished, String> {
    let module = variant.core_module_path.as_ref().ok_or("the manifest has no core module of this variant")?;
    let mut preopens = serde_json::Map::new();
    if let Some(stdlib) = &variant.stdlib {
        preopens.insert(stdlib.guest_path.clone(), stdlib.host_directory.display().to_string().into());
    }
    for (host, guest) in &invocation.dirs {
        preopens.insert(guest.clone(), host.display().to_string().into());
    }
    let spec = serde_json::json!({
        "module": module,
        "args": std::iter::once("python").chain(invocation.args.iter().map(String::as_str)).collect::<Vec<_>>(),
        "env": eryx_host::command::environment(&variant.env, &invocation.env).into_iter().collect::<BTreeMap<_, _>>(),
        "preopens": preopens,
        "stackMiB": eryx_host::engine::MAX_WASM_STACK >> 20,
    });
    let mut command = std::process::Command::new(program);
    // `node:wasi` still says it is experimental on every start. V8's background threads off
    // (`--single-threaded`): Node 20 crashed (SIGSEGV, after the program's output was complete)
    // in 9 of 12 runs of a program that grew its memory past ~150 MB in CPython's core module
    // with OpenSSL linked in, and in none of 24 with them off; the JS worker still runs.
    command.args(["--single-threaded", "--no-warnings", "--input-type=module", "-e", NODE_RUNNER, "--"]).arg(spec.to_string());
    run_program(command, stdin, invocation.timeout)
}

/// The script [`run_node`] gives Node.
const NODE_RUNNER: &str = include_str!("node/run_core_module.mjs");

/// Runs a host program with `stdin`, collecting its output; the timeout kills it.
fn run_program(mut command: std::process::Command, stdin: &[u8], timeout: Duration) -> Result<Finished, String> {
    use std::io::Write;
    let program = command.get_program().to_string_lossy().into_owned();
    command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().map_err(|error| format!("start {program}: {error}"))?;
    // Fed and drained on threads of their own: a program that writes more than a pipe holds
    // must not wait on us while we wait on it.
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let started = std::time::Instant::now();
    let status = loop {
        let state = child.try_wait();
        if state.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        match state.map_err(|error| error.to_string())? {
            Some(status) => break status,
            None if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} ran longer than the timeout of {} ms", timeout.as_millis()));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let _ = feeder.join();
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let Some(exit_status) = status.code() else {
        use std::os::unix::process::ExitStatusExt;
        return Err(format!(
            "{program} was killed by signal {}; stderr: {:?}",
            status.signal().unwrap_or_default(),
            excerpt(&String::from_utf8_lossy(&stderr))
        ));
    };
    Ok(Finished { exit_status, stdout, stderr })
}

fn excerpt(text: &str) -> String {
    let mut excerpt: String = text.chars().take(400).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let manifest = Manifest::load(&args.suite.manifest)?;
    let cases = load_cases(&args.suite.cases)?;
    let variants: Vec<String> = match args.suite.variant.as_deref() {
        None | Some("all") => manifest.variants.keys().cloned().collect(),
        Some(name) => vec![manifest.variant(name)?.name.clone()],
    };
    let mut failures = 0;
    for name in &variants {
        let entry = manifest.variant(name)?.clone();
        if entry.packages.is_some() {
            // A package variant (`<variant>+<set>`): its command forms are the variant's.
            continue;
        }
        let runtime = CommandRuntime::new(entry.clone(), &manifest.compile_cache_dir())?;
        failures += run_suite_on(&Host::Ours(&runtime), name, &cases);
        if let Some(program) = &args.wasmtime {
            failures += run_suite_on(&Host::WasmtimeCli { program, variant: &entry }, name, &cases);
        }
        if let (Some(program), Some(_)) = (&args.node, &entry.core_module_path) {
            failures += run_suite_on(&Host::NodeWasi { program, variant: &entry }, name, &cases);
        }
    }
    if let (Some(module), Some(stdlib)) = (&args.core_module, &args.core_stdlib) {
        let mut entry = eryx_host::VariantEntry::for_component(module);
        entry.name = SOURCE_VARIANT.to_owned();
        // The wasmtime CLI runs a core module as it runs a command component.
        entry.command_path = Some(module.clone());
        entry.core_module_path = Some(module.clone());
        entry.stdlib = Some(eryx_host::manifest::StdlibMount { host_directory: stdlib.clone(), guest_path: SOURCE_STDLIB.to_owned() });
        // The wasmtime CLI mounts directories writable: no bytecode is written into the build.
        entry.env.insert("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned());
        if let Some(program) = &args.wasmtime {
            failures += run_suite_on(&Host::WasmtimeCli { program, variant: &entry }, SOURCE_VARIANT, &cases);
        }
        if let Some(program) = &args.node {
            failures += run_suite_on(&Host::NodeWasi { program, variant: &entry }, SOURCE_VARIANT, &cases);
        }
        if args.wasmtime.is_none() && args.node.is_none() {
            println!("not run {SOURCE_VARIANT}: neither the wasmtime CLI nor Node was given, and our host runs components only");
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs every case on one host and variant, printing a line per case that is not a plain
/// pass and a summary; answers how many failed.
fn run_suite_on(host: &Host, variant: &str, cases: &[Case]) -> usize {
    let label = host.label(variant);
    let started = std::time::Instant::now();
    let (mut passed, mut skipped, mut failures, mut not_run) = (0, 0, 0, 0);
    for case in cases {
        if let Some(reason) = case.not_on.get(&label) {
            not_run += 1;
            println!("not run {label} {}: {reason}", case.name);
            continue;
        }
        match (run_case(host, case), case.skip.get(&label)) {
            (Ok(()), None) => passed += 1,
            (Ok(()), Some(reason)) => {
                failures += 1;
                println!("FAIL {label} {}: passes although it is skipped ({reason}); remove the skip", case.name);
            }
            (Err(_), Some(reason)) => {
                skipped += 1;
                println!("skip {label} {}: {reason}", case.name);
            }
            (Err(message), None) => {
                failures += 1;
                println!("FAIL {label} {} ({}): {message}", case.name, case.file.display());
            }
        }
    }
    println!(
        "command suite, {label}: {passed} passed, {skipped} skipped, {not_run} not run, {failures} failed of {} in {:.1}s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_escaping_files_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("cases.toml");
        std::fs::write(&file, "[[case]]\nname = \"x\"\nargs = []\nstdot = \"typo\"\n").unwrap();
        let error = format!("{:#}", load_cases(std::slice::from_ref(&file)).unwrap_err());
        assert!(error.contains("unknown field `stdot`"), "{error}");
        std::fs::write(&file, "[[case]]\nname = \"x\"\nargs = []\nfiles = { \"../escape\" = \"\" }\n").unwrap();
        let error = format!("{:#}", load_cases(&[file]).unwrap_err());
        assert!(error.contains("must stay inside the mounted directory"), "{error}");
    }

    #[test]
    fn the_repository_cases_parse() {
        let cases = load_cases(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cli")]).unwrap();
        assert!(cases.len() >= 10, "{} cases", cases.len());
    }
}
