//! `cargo xtask test`: build what is stale, run every cargo test (the host workspace, with
//! `ERYX_MANIFEST` naming the built components, and the guest ABI crate's host-side tests), lint the CI workflow when actionlint is there,
//! then run the conformance suite and the command suite (`tests/cli`) on every variant, and
//! the README's `wasmtime run` lines when a wasmtime CLI is installed.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::inputs::cache::Cache;
use crate::inputs::sources::Sources;
use crate::run::conformance::{self, ConformanceArgs};
use crate::workspace::{host_cargo, Workspace};

/// The package set `cargo xtask test` builds both variants with, and its cases.
const TEST_PACKAGE_SET: &str = crate::build::packages::REPOSITORY_SETS[0];
const TEST_PACKAGE_CASES: &str = "tests/packages/cases";

#[derive(clap::Args)]
pub struct Args {
    /// Skip the conformance suite (cargo tests only)
    #[arg(long)]
    pub no_conformance: bool,
}

fn run_checked(mut command: Command, what: &str) -> Result<()> {
    eprintln!("$ {what}");
    let status = command.status().with_context(|| format!("start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<()> {
    // Fetch first so the tests that use the real wheel find it in the cache (and the
    // patched crates the guest workspace points at exist).
    crate::inputs::fetch::run(workspace, cache, sources, &crate::inputs::fetch::Args::default())?;
    // The host's tests of the built components (pre-initialisation, the fast path) need them.
    let build = crate::build::build_runtime::Args { packages: vec![workspace.path(TEST_PACKAGE_SET)], ..Default::default() };
    let manifest = crate::build::build_runtime::run(workspace, cache, sources, &build)?;
    let mut workspace_tests = host_cargo();
    workspace_tests
        .current_dir(&workspace.root)
        .args(["test", "--workspace", "--locked", "--release"])
        .args(sources.cargo_args())
        .env("ERYX_MANIFEST", &manifest);
    // Release, as the build's steps and the bench: the host is compiled once.
    run_checked(workspace_tests, "cargo test --workspace --locked --release (ERYX_MANIFEST: the built components)")?;

    // The guest ABI crate's value-stack and dispatch tests run on the host target too.
    let mut abi_tests = host_cargo();
    abi_tests
        .current_dir(&workspace.root)
        .args(["test", "--locked", "--manifest-path", "crates/Cargo.toml", "-p", "eryx-guest-abi"])
        .args(sources.cargo_args())
        .arg("--target-dir")
        .arg(workspace.target_dir.join("guest-abi-host-tests"));
    run_checked(abi_tests, "cargo test -p eryx-guest-abi (guest workspace, host target)")?;

    if let Some(actionlint) = crate::inputs::system::which("actionlint") {
        let mut lint = Command::new(actionlint);
        lint.current_dir(&workspace.root);
        run_checked(lint, "actionlint")?;
    } else {
        eprintln!("note: actionlint is not installed; .ci/run installs it to lint .github/workflows");
    }

    if args.no_conformance {
        return Ok(());
    }
    let args = ConformanceArgs { variant: Some("all".into()), ..ConformanceArgs::default() };
    let manifest = conformance::run_suite(workspace, cache, sources, &args)?;
    // The package set's own cases, on both variants built with it.
    let set = std::path::Path::new(TEST_PACKAGE_SET).file_stem().and_then(|stem| stem.to_str()).unwrap_or_default();
    for variant in crate::build::variant::ALL {
        let with_set = ConformanceArgs {
            variant: Some(format!("{}+{set}", variant.name)),
            cases: vec![workspace.path(TEST_PACKAGE_CASES)],
            ..ConformanceArgs::default()
        };
        conformance::run_suite(workspace, cache, sources, &with_set)?;
    }
    let wasmtime = crate::inputs::system::wasmtime_cli();
    let node = crate::inputs::system::node_cli();
    conformance::run_cli_suite(workspace, sources, &manifest, wasmtime.as_deref(), node.as_deref())?;
    match wasmtime {
        Some(_) => run_readme_wasmtime_lines(workspace),
        None => {
            eprintln!("note: the README's `wasmtime run` lines were not run");
            Ok(())
        }
    }
}

/// The README's `wasmtime run …` lines, each with the output it promises after `   # `; a line
/// without that promise is an error (it would go untested).
fn readme_wasmtime_lines(readme: &str) -> Result<Vec<(String, String)>> {
    readme
        .lines()
        .filter(|line| line.starts_with("wasmtime run "))
        .map(|line| match line.rsplit_once("   # ") {
            Some((command, output)) => Ok((command.trim().to_owned(), output.trim().to_owned())),
            None => bail!("README.md: `{line}` says nothing of what it prints (end it with `   # OUTPUT`)"),
        })
        .collect()
}

/// Runs the README's `wasmtime run` lines as written (the `wasmtime` on the PATH, .ci/run
/// installs one) and checks what each prints.
fn run_readme_wasmtime_lines(workspace: &Workspace) -> Result<()> {
    let readme = std::fs::read_to_string(workspace.root.join("README.md")).context("read README.md")?;
    for (command, expected) in readme_wasmtime_lines(&readme)? {
        eprintln!("$ {command}");
        let output = Command::new("sh")
            .args(["-c", &command])
            .current_dir(&workspace.root)
            .stdin(std::process::Stdio::null())
            .output()
            .context("run sh")?;
        let printed = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || printed.trim() != expected {
            bail!(
                "the README's line `{command}` does not work as written under the wasmtime CLI: {} \
                 printed {printed:?} (expected {expected:?}); stderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_promises_what_its_wasmtime_lines_print() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let lines = readme_wasmtime_lines(&readme).unwrap();
        assert!(lines.len() >= 2, "the README has a `wasmtime run` line with its output per command component: {lines:?}");
        for (command, expected) in &lines {
            assert!(command.contains("-W max-wasm-stack="), "{command}: the sandbox's stack, or deep nesting traps");
            assert!(
                !command.contains("python-stdlib::") || command.contains("--env PYTHONDONTWRITEBYTECODE=1"),
                "{command}: wasmtime mounts the stdlib writable; CPython would write .pyc files into the build's tree"
            );
            assert!(!expected.is_empty(), "{command}");
        }
        assert_eq!(readme_wasmtime_lines("wasmtime run x.wasm -c 'print(1)'   # 1\n").unwrap(), [("wasmtime run x.wasm -c 'print(1)'".to_owned(), "1".to_owned())]);
        assert!(readme_wasmtime_lines("wasmtime run y.wasm\n").is_err(), "a line that promises nothing is refused");
    }
}
