//! The one place the xtask hands over to the host tools binary (`eryx-tools`, of the crate of
//! the same name), which owns
//! wasmtime: `run`, `python`, `conformance`, `test` and `bench` run it, and so do the build's
//! pre-initialisation and precompiling steps. Keeping wasmtime out of the xtask keeps every
//! other command quick to compile.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::inputs::sources::Sources;
use crate::workspace::Workspace;

/// The package of the host workspace whose binary every handover runs.
pub(crate) const HOST_PACKAGE: &str = "eryx-tools";
/// The host code that pre-initialises (a change rebuilds what it made): the tool's step and
/// the host library's instance it snapshots.
pub(crate) const PREINIT_SOURCES: &[&str] = &["crates/eryx-tools/src/preinit.rs", "crates/eryx-host/src/preinit_host.rs"];
/// The host code that precompiles: the tool's step and the engine settings it shares with
/// the host library.
pub(crate) const PRECOMPILE_SOURCES: &[&str] = &["crates/eryx-tools/src/precompile.rs", "crates/eryx-host/src/engine.rs"];

/// The host code that compiles the stdlib's bytecode (a change compiles it again): the tool's
/// step and the script it runs in the command form.
pub(crate) const BYTECODE_SOURCES: &[&str] =
    &["crates/eryx-tools/src/bytecode.rs", "crates/eryx-tools/src/bytecode.py", "crates/eryx-host/src/command.rs"];

/// The host tools binary, `eryx-tools ARGS`, built first if it is stale. It is built with
/// `cargo build --release --workspace --all-targets` (see [`tools_build`]): the features of
/// that build are the ones `cargo test --workspace --release` unifies, so the build's steps,
/// the tests and the bench share one compile of wasmtime on a fresh machine (a build of one
/// package, `cargo run -p`, resolves other features and compiles wasmtime again), and the
/// bench's timings measure an optimised host.
pub(crate) fn host_command(workspace: &Workspace, sources: &Sources) -> Result<Command> {
    join_prebuild();
    if BUILT.get().is_none() {
        let mut build = tools_build(workspace, sources);
        build.arg("--quiet");
        exec(build, "cargo build --release --workspace --all-targets (the host tools)")?;
        let _ = BUILT.set(());
    }
    let mut command = Command::new(workspace.target_dir.join("release").join(HOST_PACKAGE));
    command.current_dir(&workspace.root);
    Ok(command)
}

/// The one build of the host workspace every handover and `cargo test --workspace --release`
/// share.
pub(crate) fn tools_build(workspace: &Workspace, sources: &Sources) -> Command {
    let mut command = crate::workspace::host_cargo();
    command
        .current_dir(&workspace.root)
        .args(["build", "--release", "--locked", "--workspace", "--all-targets"])
        .args(sources.cargo_args());
    command
}

/// Set once this process built the host tools (in the foreground, or in the background with
/// success): later handovers run the binary without asking cargo again.
static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// The background build of the host tools ([`prebuild`]) and the log it writes.
struct Prebuild {
    child: std::process::Child,
    log: std::path::PathBuf,
}

static PREBUILD: std::sync::Mutex<Option<Prebuild>> = std::sync::Mutex::new(None);

/// Starts building the host tools ([`tools_build`], what every later [`host_command`] runs)
/// in the background, its output in `target/eryx/build/host-build.log`:
/// on a fresh machine the guests' build leaves one core idle for minutes (RustPython's
/// largest crate compiles on one thread), and wasmtime compiles there meanwhile. The first
/// [`host_command`] waits for it. Dropping the answer stops a build still running (the
/// xtask failed before it needed the tools); [`PrebuildGuard::finish`] waits for it instead.
pub(crate) fn prebuild(workspace: &Workspace, sources: &Sources) -> Result<PrebuildGuard> {
    let log = workspace.artifacts_dir().join("build").join("host-build.log");
    std::fs::create_dir_all(log.parent().context("the log has a parent")?)?;
    let output = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut command = tools_build(workspace, sources);
    command
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    // A process group of its own, so stopping it stops the compilers cargo started too.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().context("start cargo build for the host tools")?;
    *PREBUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Prebuild { child, log });
    Ok(PrebuildGuard)
}

/// Waits for the background build of [`prebuild`], if one runs. A failed one is only noted:
/// the [`host_command`] that follows builds in the foreground, where its errors are shown.
fn join_prebuild() {
    let Some(mut prebuild) = PREBUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() else { return };
    match prebuild.child.try_wait() {
        Ok(Some(_)) => {}
        _ => eprintln!("waiting for the background build of the host tools (log: {})", prebuild.log.display()),
    }
    match prebuild.child.wait() {
        Ok(status) if status.success() => {
            let _ = BUILT.set(());
        }
        Ok(status) => eprintln!(
            "note: the background build of the host tools failed ({status}; log: {}); building them in the foreground",
            prebuild.log.display()
        ),
        Err(error) => eprintln!("note: could not wait for the background build of the host tools: {error}"),
    }
}

/// Ends the background build of [`prebuild`] when dropped.
pub(crate) struct PrebuildGuard;

impl PrebuildGuard {
    /// Waits for the background build to end.
    pub(crate) fn finish(self) {
        join_prebuild();
    }
}

impl Drop for PrebuildGuard {
    fn drop(&mut self) {
        if let Some(mut prebuild) = PREBUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            // The whole group: cargo and the compilers it runs, none left writing into the
            // target directory without cargo's lock.
            let _ = Command::new("kill").arg("-TERM").arg("--").arg(format!("-{}", prebuild.child.id())).status();
            let _ = prebuild.child.wait();
        }
    }
}

pub(crate) fn exec(mut command: Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
