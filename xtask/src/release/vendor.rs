//! `cargo xtask vendor`: gather every input the build takes from outside into one bundle
//! (layout in `inputs/bundle.rs`), and pack it as one deterministic `.tar.zst` beside it.
//!
//! The bundle is assembled under a temporary name and renamed into place only when all of
//! it was fetched and verified, so an interrupted run never leaves a bundle that looks whole.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::inputs::archive;
use crate::inputs::bundle::{self, CARGO_CONFIG, CRATES_DIR, DEBS_DIR, SOURCES_DIR, WASI_SDK_DIR, WHEELS_DIR};
use crate::inputs::cache::{self, sha256_file, write_atomic, Cache};
use crate::inputs::fetch;
use crate::inputs::lock::{host_platform, Lock};
use crate::inputs::patch;
use crate::inputs::sources::Sources;
use crate::inputs::toolchain::{self, RustGuestToolchain};
use crate::inputs::tarballs;
use crate::inputs::unpacked;
use crate::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the bundle [default: target/vendor]; `DIR.tar.zst` is written beside it
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write this bundle's anchor (the sha256 of its SHA256SUMS) into toolchains.lock
    /// `[vendor-bundle] sums-sha256`: after a change of what the bundle holds (a Cargo.lock,
    /// a pin), so offline builds of the commit accept exactly this bundle
    #[arg(long)]
    pub update_pin: bool,
    /// A package lock (repeatable) whose wheels the bundle also carries, besides those of the
    /// repository's own sets (a bundle with more than those no longer matches the pin)
    #[arg(long = "packages", value_name = "FILE")]
    pub packages: Vec<PathBuf>,
}

pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<()> {
    let started = Instant::now();
    if sources.offline {
        bail!("`cargo xtask vendor` gathers the inputs from their registries and needs the network; run it without --offline/--vendor");
    }
    let out = std::path::absolute(args.out.clone().unwrap_or_else(|| workspace.path("target/vendor")))?;
    let name = out
        .file_name()
        .and_then(|name| name.to_str())
        .context("the bundle directory needs a UTF-8 name (cargo finds the crates through it)")?
        .to_owned();
    bundle::check_bundle_name(&name)?;
    let fetched = fetch::resolve(workspace, cache, sources, false)?;
    let lock = &fetched.lock;

    let mut sums = None;
    cache::replace_output_dir(&out, "vendor", |staging| {
        eprintln!("[1/6] crates of the host workspace, the guest workspace and Rust's standard library");
        vendor_crates(workspace, &fetched.rust, &staging.join(CRATES_DIR))?;

        eprintln!("[2/6] the pinned CPython wheel");
        let wheel_pin = lock.wheel_for_host()?;
        let wheel = fetch::wheel(lock, cache, sources)?;
        copy_into(&wheel, &staging.join(WHEELS_DIR).join(&wheel_pin.filename))?;

        eprintln!("[3/6] the pinned Debian packages ({} .deb files, {} used unpacked)", lock.debian_debs.len(), lock.unpacked_debs.len());
        download_debs(lock, &staging.join(DEBS_DIR))?;
        for pin in &lock.unpacked_debs {
            copy_into(&unpacked::deb_file(cache, sources, pin)?, &staging.join(DEBS_DIR).join(&pin.file))?;
        }

        eprintln!("[4/6] the originals of the patched crates and the source tarballs ({})", lock.source_tarballs.len());
        for pin in &lock.patched_crates {
            let original = patch::original_crate(cache, sources, pin)?;
            copy_into(&original, &staging.join(SOURCES_DIR).join(patch::crate_file_name(pin)))?;
        }
        for pin in &lock.source_tarballs {
            copy_into(&tarballs::tarball(cache, sources, pin)?, &staging.join(SOURCES_DIR).join(&pin.file))?;
        }

        let mut locks: Vec<PathBuf> = crate::build::packages::REPOSITORY_SETS.iter().map(|lock| workspace.path(lock)).collect();
        locks.extend(args.packages.iter().cloned());
        eprintln!("[5/6] the wheels of {} package set(s)", locks.len());
        for lock in &locks {
            for wheel in crate::inputs::packages::fetch_wheels(cache, sources, lock)? {
                copy_into(&wheel.path, &staging.join(bundle::PACKAGES_DIR).join(&wheel.pin.sha256).join(&wheel.file_name))?;
            }
        }

        eprintln!("[6/6] the WASI SDK tarball, when it is cached");
        match lock.wasi_sdk.platforms.get(&host_platform()) {
            Some(pin) => match cache.get(&pin.sha256)? {
                Some(tarball) => copy_into(&tarball, &staging.join(WASI_SDK_DIR).join(toolchain::sdk_file_name(&pin.url)))?,
                None => eprintln!("      not cached (the build falls back to the pinned system packages, which are in the bundle)"),
            },
            None => eprintln!("      no WASI SDK is pinned for {}", host_platform()),
        }

        fs::write(staging.join(CARGO_CONFIG), bundle::cargo_config(&name))?;
        bundle::write_manifest(staging, workspace)?;
        sums = Some(bundle::write_sums(staging)?);
        Ok(())
    })?;

    let packed = out.with_file_name(format!("{name}.tar.zst"));
    eprintln!("packing {}", packed.display());
    archive::pack_deterministic(&out, &name, &packed)?;

    let sums = sums.context("the bundle's SHA256SUMS was written")?;
    eprintln!(
        "vendor bundle: {} ({} files, {:.0} MiB) in {:.0}s",
        out.display(),
        sums.files,
        sums.bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "packed: {} ({:.0} MiB, sha256 {})",
        packed.display(),
        fs::metadata(&packed)?.len() as f64 / 1048576.0,
        sha256_file(&packed)?
    );
    check_pin(workspace, &sums.sha256, args.update_pin)?;
    eprintln!(
        "check the bundle, then build offline with:\n  sh xtask/verify-bundle {0} &&\n  cargo --config {0}/{CARGO_CONFIG} xtask build-runtime --offline --vendor {0}",
        out.display()
    );
    Ok(())
}

/// `cargo vendor --versioned-dirs` of the host workspace, the guest workspace and the
/// standard library's workspace (what `-Z build-std` compiles), with the guest toolchain's
/// cargo, which reads all three.
fn vendor_crates(workspace: &Workspace, rust: &RustGuestToolchain, destination: &Path) -> Result<()> {
    let library = rust.sysroot.join("lib/rustlib/src/rust/library/Cargo.toml");
    let mut command = Command::new(&rust.cargo);
    if let Some(toolchain) = &rust.toolchain_arg {
        command.arg(toolchain);
    }
    command
        .current_dir(&workspace.root)
        .args(["vendor", "--versioned-dirs", "--locked", "--quiet", "--manifest-path"])
        .arg(workspace.path("Cargo.toml"))
        .arg("--sync")
        .arg(workspace.path(crate::build::variant::GUEST_WORKSPACE_MANIFEST))
        .arg("--sync")
        .arg(&library)
        .arg(destination)
        .env("RUSTC", &rust.rustc)
        .stdout(std::process::Stdio::null());
    for (key, value) in &rust.env {
        command.env(key, value);
    }
    let status = command.status().context("run cargo vendor")?;
    if !status.success() {
        bail!("`cargo vendor` failed ({status}); see cargo's message above");
    }
    Ok(())
}

fn copy_into(source: &Path, destination: &Path) -> Result<()> {
    fs::create_dir_all(destination.parent().context("a destination has a parent")?)?;
    fs::copy(source, destination).with_context(|| format!("copy {} to {}", source.display(), destination.display()))?;
    Ok(())
}

/// `apt-get download` of every pinned `.deb`, each checked against its pin.
fn download_debs(lock: &crate::inputs::lock::Lock, destination: &Path) -> Result<()> {
    fs::create_dir_all(destination)?;
    let requests: Vec<String> = lock.debian_debs.iter().map(|deb| format!("{}={}", deb.package, deb.version)).collect();
    let download = || {
        Command::new("apt-get")
            .arg("download")
            .args(&requests)
            .current_dir(destination)
            .stdout(std::process::Stdio::null())
            .status()
    };
    let mut status = download().context("run apt-get download (is this a Debian-like machine?)")?;
    if !status.success() {
        // The package lists may be missing or stale on a fresh machine.
        eprintln!("      apt-get download failed ({status}); updating the package lists and trying again");
        let _ = Command::new("apt-get").arg("update").stdout(std::process::Stdio::null()).status();
        status = download().context("run apt-get download")?;
        if !status.success() {
            bail!(
                "`apt-get download` of the pinned packages failed ({status}); if a pinned version left the \
                 archive, update `[[debian-debs]]` in toolchains.lock"
            );
        }
    }
    for deb in &lock.debian_debs {
        let path = destination.join(&deb.file);
        if !path.is_file() {
            bail!("apt-get download did not write {} for {}={}", deb.file, deb.package, deb.version);
        }
        let digest = sha256_file(&path)?;
        if digest != deb.sha256 {
            bail!("{} has sha256 {digest}, toolchains.lock pins {}", deb.file, deb.sha256);
        }
    }
    let expected: std::collections::BTreeSet<&str> = lock.debian_debs.iter().map(|deb| deb.file.as_str()).collect();
    for entry in fs::read_dir(destination)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !expected.contains(name.as_str()) {
            bail!("apt-get download wrote {name}, which toolchains.lock does not pin");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_config_names_the_crates_through_the_bundle_name() {
        let config: toml::Value = toml::from_str(&bundle::cargo_config("vendor")).unwrap();
        assert_eq!(config["source"]["crates-io"]["replace-with"].as_str(), Some("eryx-vendored"));
        assert_eq!(config["source"]["eryx-vendored"]["directory"].as_str(), Some("vendor/crates"));
        assert_eq!(config["net"]["offline"].as_bool(), Some(true));
    }
}

/// Compares the bundle's anchor with the one toolchains.lock pins, and rewrites the pin when
/// asked to. A stale pin is said, not fixed silently: the pin is what a packager trusts.
fn check_pin(workspace: &Workspace, sums_sha256: &str, update: bool) -> Result<()> {
    let path = workspace.lock_path();
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let pinned = Lock::parse(&text)?.vendor_bundle.map(|pin| pin.sums_sha256);
    if pinned.as_deref() == Some(sums_sha256) {
        eprintln!("the bundle is the one toolchains.lock pins (SHA256SUMS sha256 {sums_sha256})");
        return Ok(());
    }
    if !update {
        eprintln!(
            "warning: toolchains.lock pins {} as the bundle's anchor, this bundle's SHA256SUMS has sha256 {sums_sha256}: \
             offline builds of this commit will refuse it. If what the bundle holds was meant to change (a Cargo.lock, \
             a pin), run `cargo xtask vendor --update-pin` and commit toolchains.lock",
            pinned.as_deref().unwrap_or("nothing")
        );
        return Ok(());
    }
    let updated = with_pin(&text, sums_sha256);
    Lock::parse(&updated).context("the rewritten toolchains.lock does not parse")?;
    write_atomic(&path, updated.as_bytes())?;
    eprintln!("toolchains.lock now pins this bundle (SHA256SUMS sha256 {sums_sha256}); commit it");
    Ok(())
}

/// `text` (toolchains.lock) with its `[vendor-bundle]` anchor set to `sums_sha256`: the line
/// replaced when there is one, else the table appended with its comment.
fn with_pin(text: &str, sums_sha256: &str) -> String {
    let line = format!("sums-sha256 = \"{sums_sha256}\"");
    let mut in_table = false;
    let mut replaced = false;
    let mut lines: Vec<String> = Vec::new();
    for current in text.lines() {
        if current.starts_with('[') {
            in_table = current.trim() == "[vendor-bundle]";
        }
        if in_table && current.starts_with("sums-sha256") {
            lines.push(line.clone());
            replaced = true;
        } else {
            lines.push(current.to_owned());
        }
    }
    let mut updated = lines.join("\n");
    updated.push('\n');
    if !replaced {
        updated.push_str(&format!("\n{VENDOR_BUNDLE_COMMENT}[vendor-bundle]\n{line}\n"));
    }
    updated
}

const VENDOR_BUNDLE_COMMENT: &str = "\
# The trust anchor of offline builds: the sha256 of the SHA256SUMS of the vendor bundle
# `cargo xtask vendor` makes at this commit, which lists every file of the bundle with its
# sha256 (but the generated cargo-config.toml, checked byte for byte, and a cached WASI SDK
# tarball, checked against its pin above). `xtask/verify-bundle DIR` and `--vendor DIR` refuse
# any other bundle. `cargo xtask vendor` says when this pin is stale; `--update-pin` rewrites it.
";

#[cfg(test)]
mod pin_tests {
    use super::*;

    #[test]
    fn the_pin_is_appended_then_replaced_and_the_lock_still_parses() {
        let lock = fs::read_to_string(Workspace { root: Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned(), target_dir: PathBuf::new() }.lock_path()).unwrap();
        let without: String = {
            // The lock as it was before any pin.
            match lock.find("\n# The trust anchor of offline builds") {
                Some(index) => format!("{}\n", &lock[..index]),
                None => lock.clone(),
            }
        };
        let first = with_pin(&without, &"a".repeat(64));
        assert_eq!(Lock::parse(&first).unwrap().vendor_bundle.unwrap().sums_sha256, "a".repeat(64));
        let second = with_pin(&first, &"b".repeat(64));
        assert_eq!(Lock::parse(&second).unwrap().vendor_bundle.unwrap().sums_sha256, "b".repeat(64));
        assert_eq!(second.matches("[vendor-bundle]").count(), 1);
        assert_eq!(second.replace(&"b".repeat(64), &"a".repeat(64)), first);
    }
}
