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

/// `cargo run -p eryx-tools -- ARGS`, with the host workspace's own cargo.
pub(crate) fn host_command(workspace: &Workspace, sources: &Sources) -> Command {
    cargo_run(workspace, sources, "--quiet")
}

/// `cargo run --release -p eryx-tools -- ARGS`: a release build of the host, for timings.
pub(crate) fn release_host_command(workspace: &Workspace, sources: &Sources) -> Command {
    cargo_run(workspace, sources, "--release")
}

fn cargo_run(workspace: &Workspace, sources: &Sources, mode: &str) -> Command {
    let mut command = crate::workspace::host_cargo();
    command
        .current_dir(&workspace.root)
        .args(["run", mode, "--package", HOST_PACKAGE])
        .args(sources.cargo_args())
        .arg("--");
    command
}

pub(crate) fn exec(mut command: Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
