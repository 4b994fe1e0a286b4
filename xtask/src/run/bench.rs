//! `cargo xtask bench`: builds what is stale, then runs `eryx-tools bench` from the release
//! build of the host every command uses (timings of an unoptimised host would measure the
//! host, not the sandboxes). The measurements and the JSON shape are described in the host's `bench.rs`.

use std::path::PathBuf;

use anyhow::Result;

use crate::build::build_runtime;
use crate::host::{self, HOST_PACKAGE};
use crate::inputs::cache::Cache;
use crate::inputs::lock::Lock;
use crate::inputs::npm;
use crate::inputs::sources::Sources;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Only this variant (default: all of them)
    #[arg(long, value_name = "NAME")]
    pub variant: Option<String>,
    /// Also write the results as JSON here
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// How many times each measurement runs
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// A package lock (repeatable): also bench `<variant>+<set>` (import times baked in and
    /// from the mounted tree, sizes, RSS)
    #[arg(long = "packages", value_name = "FILE")]
    pub packages: Vec<PathBuf>,
}

pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<()> {
    let manifest = build_runtime::run(workspace, cache, sources, &build_runtime::Args { variant: args.variant.clone(), packages: args.packages.clone(), ..Default::default() })?;
    let mut command = host::host_command(workspace, sources)?;
    command
        .args(["bench", "--manifest"])
        .arg(&manifest)
        .args(["--runs", &args.runs.to_string()]);
    if let Some(variant) = &args.variant {
        command.args(["--variant", variant]);
    }
    if let Some(json) = &args.json {
        command.arg("--json").arg(std::path::absolute(json)?);
    }
    command.arg("--workloads").arg(workspace.path("bench/compute.py"));
    // The Pyodide column: the pinned npm package, when npm can bring it (or the cache has it).
    let lock = Lock::load(&workspace.lock_path())?;
    match npm::package_dir(cache, sources, lock.npm_package("pyodide")?)? {
        npm::Package::Ready(directory) => {
            command.arg("--pyodide").arg(directory);
        }
        npm::Package::Unavailable(why) => eprintln!("note: no Pyodide column in this run: {why}"),
    }
    host::exec(command, &format!("{HOST_PACKAGE} bench"))
}
