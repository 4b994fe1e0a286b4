//! `cargo xtask verify-reproducible`: the release bundle of this checkout, built again from
//! a fresh clone of HEAD in another directory, with another target directory, an empty
//! cargo home, an empty input cache, another time zone and a later clock, offline from the
//! vendor bundle (inside a network namespace with no network when the machine allows one),
//! must be byte-identical, file by file.
//!
//! It rebuilds everything once more (16 to 20 minutes on 2 cores), so it is its own command
//! and not part of `cargo xtask test`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::inputs::bundle::{self, Bundle};
use crate::inputs::cache::{sha256_file, Cache};
use crate::inputs::sources::Sources;
use crate::release::{dist, vendor};
use crate::workspace::{host_cargo, Workspace};

#[derive(clap::Args)]
pub struct Args {
    /// The vendor bundle the second build uses [default: target/vendor, made or remade when
    /// missing or made for other lock files]
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Keep the second build's clone, target directory and caches (they are kept anyway
    /// when the builds differ)
    #[arg(long)]
    pub keep: bool,
    /// A package lock (repeatable): both builds also make and ship its set (`dist --packages`);
    /// the bundle must carry its wheels (`vendor --packages`, or a repository set)
    #[arg(long = "packages", value_name = "FILE")]
    pub packages: Vec<PathBuf>,
}

pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<()> {
    let started = Instant::now();
    let dirty = git_output(&workspace.root, &["status", "--porcelain", "--untracked-files=no"])?;
    if !dirty.trim().is_empty() {
        bail!("the checkout has uncommitted changes, and the second build clones HEAD: commit them first\n{dirty}");
    }
    let commit = git_output(&workspace.root, &["rev-parse", "HEAD"])?.trim().to_owned();

    eprintln!("== first build: this checkout ({})", workspace.root.display());
    let packages: Vec<PathBuf> = args.packages.iter().map(std::path::absolute).collect::<std::io::Result<_>>()?;
    let first = dist::run(workspace, cache, sources, &dist::Args { packages: packages.clone(), ..Default::default() })?;

    let bundle_dir = std::path::absolute(args.bundle.clone().unwrap_or_else(|| workspace.path("target/vendor")))?;
    let bundle = match Bundle::open(&bundle_dir, workspace) {
        Ok(bundle) => bundle,
        Err(error) => {
            eprintln!("the vendor bundle is not usable ({error:#}); making it");
            vendor::run(workspace, cache, sources, &vendor::Args { out: Some(bundle_dir.clone()), update_pin: false, packages: packages.clone() })?;
            Bundle::open(&bundle_dir, workspace)?
        }
    };

    let scratch = std::env::temp_dir().join(format!("eryx-reproduce-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let clone = scratch.join("clone");
    eprintln!("== second build: a fresh clone of {commit} in {}", clone.display());
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&workspace.root)
        .arg(&clone)
        .status()
        .context("run git clone")?;
    if !status.success() {
        bail!("git clone of {} failed ({status})", workspace.root.display());
    }
    // What a packager runs first: the shell check of the bundle against the clone's anchor.
    let status = Command::new("sh").arg(clone.join("xtask/verify-bundle")).arg(&bundle.root).status().context("run xtask/verify-bundle")?;
    if !status.success() {
        bail!("xtask/verify-bundle refused {} ({status})", bundle.root.display());
    }
    let second_dist = clone.join("target/dist");
    let second_started = Instant::now();
    let mut command = isolated_build(&bundle, &clone, &scratch, &second_dist);
    for lock in &packages {
        // A lock of this repository is read from the clone, as a packager would.
        command.arg("--packages").arg(lock.strip_prefix(&workspace.root).map(|relative| clone.join(relative)).unwrap_or_else(|_| lock.clone()));
    }
    let status = command.status().context("start the second build")?;
    let second_seconds = second_started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the second build failed ({status}); its clone and target directory are kept in {}", scratch.display());
    }

    let differences = compare(&first, &second_dist)?;
    eprintln!(
        "second build: {second_seconds:.0}s; verify-reproducible in all: {:.0}s",
        started.elapsed().as_secs_f64()
    );
    if differences > 0 {
        bail!("{differences} file(s) differ between the two builds; the second build is kept in {}", scratch.display());
    }
    if args.keep {
        eprintln!("kept the second build in {}", scratch.display());
    } else {
        fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))?;
    }
    println!("reproducible: every file of the release bundle is identical");
    Ok(())
}

/// `cargo --config BUNDLE/cargo-config.toml xtask dist --offline --vendor BUNDLE` in the
/// clone, with nothing shared with the first build but the installed toolchains, and no
/// network when `unshare --net` works here.
fn isolated_build(bundle: &Bundle, clone: &Path, scratch: &Path, out: &Path) -> Command {
    let no_network = Command::new("unshare").args(["--net", "true"]).status().is_ok_and(|status| status.success());
    let cargo = host_cargo().get_program().to_owned();
    let mut command = if no_network {
        eprintln!("   (inside a network namespace with no network: `unshare --net`)");
        let mut command = Command::new("unshare");
        command.arg("--net").arg("--").arg(&cargo);
        command
    } else {
        eprintln!("   (`unshare --net` is not available here: the second build only promises --offline)");
        Command::new(&cargo)
    };
    command
        .current_dir(clone)
        .arg("--config")
        .arg(bundle.cargo_config())
        .args(["xtask", "dist", "--offline", "--vendor"])
        .arg(&bundle.root)
        .arg("--out")
        .arg(out);
    // Nothing inherited from this build's cargo, and fresh homes and caches.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO") && key != "CARGO_HOME") || key.starts_with("RUSTFLAGS") || key == "RUSTC" {
            command.env_remove(key);
        }
    }
    command
        .env("CARGO_HOME", scratch.join("cargo-home"))
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .env("ERYX_CACHE_DIR", scratch.join("eryx-cache"))
        // Another time zone (the clock itself is later than the first build's).
        .env("TZ", "Pacific/Kiritimati");
    command
}

/// Prints a table of both bundles' files and returns how many differ.
fn compare(first: &Path, second: &Path) -> Result<usize> {
    let mut names: Vec<String> = bundle::list_files(first)?;
    for name in bundle::list_files(second)? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.sort();
    let digest = |directory: &Path, name: &str| -> Result<Option<String>> {
        let path = directory.join(name);
        if path.is_file() {
            Ok(Some(sha256_file(&path)?))
        } else {
            Ok(None)
        }
    };
    let mut differences = 0;
    println!("| file | first sha256 | second sha256 | same? |");
    println!("| --- | --- | --- | --- |");
    for name in &names {
        let (one, two) = (digest(first, name)?, digest(second, name)?);
        let same = one.is_some() && one == two;
        if !same {
            differences += 1;
        }
        let show = |digest: &Option<String>| digest.as_deref().map(|text| text[..16].to_owned()).unwrap_or_else(|| "(missing)".into());
        println!("| {name} | {} | {} | {} |", show(&one), show(&two), if same { "yes" } else { "NO" });
    }
    Ok(differences)
}

fn git_output(directory: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git").args(args).current_dir(directory).output().context("run git")?;
    if !output.status.success() {
        bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
