//! `cargo xtask`: fetch pinned inputs, check the machine, build the sandbox guests, and run
//! them. This file only parses the command line and dispatches; each subcommand has its
//! own module, in the folder of its stage: `inputs/`, `build/`, `release/` and `run/`.

mod build;
mod host;
mod inputs;
#[cfg(test)]
mod layout_tests;
mod release;
mod run;
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

    /// Use no network: nothing is downloaded, nested cargo runs with --offline, and a
    /// missing input is an error that says where to get it
    #[arg(long, global = true)]
    offline: bool,

    /// Take every outside input from this vendor bundle (made by `cargo xtask vendor`),
    /// verified file by file first; implies --offline. Run cargo itself with
    /// `--config DIR/cargo-config.toml` so the xtask compiles from the bundle too
    #[arg(long, global = true, value_name = "DIR")]
    vendor: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve every pin of toolchains.lock into the verified cache (no network when cached)
    Fetch(inputs::fetch::Args),
    /// Show every input and tool: where it was found, its version, whether it matches the pin
    Doctor,
    /// Resolve a loose list of Python requirements (pip lines) with pip into a lock file in
    /// pip's hash-checking format, for the sandboxes' Python 3.14 and pure-Python wheels only
    LockPackages(inputs::packages::Args),
    /// Build the sandbox guests into target/eryx/ (steps whose inputs did not change are skipped)
    BuildRuntime(build::build_runtime::Args),
    /// Run Python code in a sandbox: each -c is one `execute` on the same sandbox; or FILE
    /// (`-`: stdin) as one; stdout is the code's only, exit status 1 after a Python error
    Run(run::conformance::RunArgs),
    /// Run a variant's command form (python-<variant>.wasm) like `python3`: arguments after
    /// `--`, stdin passed through, the program's exit status
    Python(run::conformance::PythonArgs),
    /// Run the conformance suite (tests/conformance/*.toml) against built variants
    Conformance(run::conformance::ConformanceArgs),
    /// Build what is stale, run the workspace's cargo tests and the conformance suite
    Test(run::test::Args),
    /// Gather every outside input into one bundle (and a deterministic .tar.zst of it) for
    /// offline builds
    Vendor(release::vendor::Args),
    /// Build what is stale and assemble the release bundle: components, stdlib, manifest,
    /// SBOM, SHA256SUMS and one deterministic .tar.zst
    Dist(release::dist::Args),
    /// Measure start-up, latency, compute speed and memory of every variant beside native
    /// python3 (a release build of the host); a markdown table on stdout
    Bench(run::bench::Args),
    /// Build everything again in a fresh clone, offline from the vendor bundle, and compare
    /// the release bundles file by file
    VerifyReproducible(release::verify_reproducible::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workspace = workspace::Workspace::discover()?;
    let cache = inputs::cache::Cache::open(cli.cache_dir)?;
    let vendor = cli.vendor.as_deref().map(|root| inputs::bundle::Bundle::open(root, &workspace)).transpose()?;
    let sources = inputs::sources::Sources { offline: cli.offline || vendor.is_some(), vendor };
    match cli.command {
        Command::Fetch(args) => inputs::fetch::run(&workspace, &cache, &sources, &args).map(|_| ()),
        Command::Doctor => inputs::doctor::run(&workspace, &cache),
        Command::LockPackages(args) => inputs::packages::run(&workspace, &args),
        Command::BuildRuntime(args) => build::build_runtime::run(&workspace, &cache, &sources, &args).map(|_| ()),
        Command::Run(args) => run::conformance::run_code(&workspace, &cache, &sources, &args),
        Command::Conformance(args) => run::conformance::run_suite(&workspace, &cache, &sources, &args).map(|_| ()),
        Command::Python(args) => run::conformance::run_python(&workspace, &cache, &sources, &args),
        Command::Test(args) => run::test::run(&workspace, &cache, &sources, &args),
        Command::Vendor(args) => release::vendor::run(&workspace, &cache, &sources, &args),
        Command::Dist(args) => release::dist::run(&workspace, &cache, &sources, &args).map(|_| ()),
        Command::Bench(args) => run::bench::run(&workspace, &cache, &sources, &args),
        Command::VerifyReproducible(args) => release::verify_reproducible::run(&workspace, &cache, &sources, &args),
    }
}
