//! `cargo xtask`: fetch pinned inputs, check the machine, build the sandbox guests, and run
//! them. This file only parses the command line and dispatches; each subcommand has its
//! own module.

mod archive;
mod build_runtime;
mod cache;
mod conformance;
mod doctor;
mod download;
mod fetch;
mod lock;
mod members;
mod stamp;
mod steps;
mod system;
mod test;
mod toolchain;
mod variant;
mod workspace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, fetch, check and test the eryx Python sandbox guests",
    long_about = "Build, fetch, check and test the eryx Python sandbox guests.\n\n\
        Every outside input is pinned in toolchains.lock and verified by sha256 before use.\n\
        Start with `cargo xtask build-runtime`, then `cargo xtask test`."
)]
struct Cli {
    /// Where verified downloads are kept [env: ERYX_CACHE_DIR; default: the user cache
    /// directory, e.g. ~/.cache/eryx]
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve every pin of toolchains.lock into the verified cache (no network when cached)
    Fetch(fetch::Args),
    /// Show every input and tool: where it was found, its version, whether it matches the pin
    Doctor,
    /// Build the sandbox guests into target/eryx/ (steps whose inputs did not change are skipped)
    BuildRuntime(build_runtime::Args),
    /// Run Python code in a sandbox: each -c is one `execute` on the same sandbox
    Run(conformance::RunArgs),
    /// Run the conformance suite (tests/conformance/*.toml) against built variants
    Conformance(conformance::ConformanceArgs),
    /// Build what is stale, run the workspace's cargo tests and the conformance suite
    Test(test::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workspace = workspace::Workspace::discover()?;
    let cache = cache::Cache::open(cli.cache_dir)?;
    match cli.command {
        Command::Fetch(args) => fetch::run(&workspace, &cache, &args).map(|_| ()),
        Command::Doctor => doctor::run(&workspace, &cache),
        Command::BuildRuntime(args) => build_runtime::run(&workspace, &cache, &args).map(|_| ()),
        Command::Run(args) => conformance::run_code(&workspace, &cache, &args),
        Command::Conformance(args) => conformance::run_suite(&workspace, &cache, &args),
        Command::Test(args) => test::run(&workspace, &cache, &args),
    }
}
