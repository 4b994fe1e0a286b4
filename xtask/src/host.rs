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
pub(crate) const BYTECODE_SOURCES: &[&str] = &["crates/eryx-tools/src/bytecode.rs", "crates/eryx-tools/src/bytecode.py"];

/// `cargo run --release -p eryx-tools -- ARGS`, with the host workspace's own cargo. One
/// (release) build of the host serves the build's steps, the tests (`cargo test --release`)
/// and the bench, whose timings must not measure an unoptimised host: wasmtime is compiled
/// once on a fresh machine, not once per profile.
pub(crate) fn host_command(workspace: &Workspace, sources: &Sources) -> Command {
    join_prebuild();
    let mut command = crate::workspace::host_cargo();
    command
        .current_dir(&workspace.root)
        .args(["run", "--quiet", "--release", "--package", HOST_PACKAGE])
        .args(sources.cargo_args())
        .arg("--");
    command
}

/// The background build of the host tools ([`prebuild`]) and the log it writes.
struct Prebuild {
    child: std::process::Child,
    log: std::path::PathBuf,
}

static PREBUILD: std::sync::Mutex<Option<Prebuild>> = std::sync::Mutex::new(None);

/// Starts building the host tools (`cargo build --release -p eryx-tools`, what every later
/// [`host_command`] runs) in the background, its output in `target/eryx/build/host-build.log`:
/// on a fresh machine the guests' build leaves one core idle for minutes (RustPython's
/// largest crate compiles on one thread), and wasmtime compiles there meanwhile. The first
/// [`host_command`] waits for it. Dropping the answer stops a build still running (the
/// xtask failed before it needed the tools); [`PrebuildGuard::finish`] waits for it instead.
pub(crate) fn prebuild(workspace: &Workspace, sources: &Sources) -> Result<PrebuildGuard> {
    let log = workspace.artifacts_dir().join("build").join("host-build.log");
    std::fs::create_dir_all(log.parent().context("the log has a parent")?)?;
    let output = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut command = crate::workspace::host_cargo();
    command
        .current_dir(&workspace.root)
        .args(["build", "--release", "--package", HOST_PACKAGE])
        .args(sources.cargo_args())
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
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
        Ok(status) if status.success() => {}
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
            let _ = prebuild.child.kill();
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
