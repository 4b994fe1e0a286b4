//! The machine: Debian packages (checked with dpkg-query, installed with apt-get when we
//! are root on a Debian-like system, otherwise the exact command is printed), and a helper
//! to read a tool's version.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::inputs::bundle::Bundle;
use crate::inputs::lock::DebianDeb;
use crate::inputs::sources::Sources;

/// A package pin `name=version` from toolchains.lock.
pub struct PackagePin<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

pub fn parse_pin(pin: &str) -> PackagePin<'_> {
    match pin.split_once('=') {
        Some((name, version)) => PackagePin { name, version },
        None => PackagePin { name: pin, version: "" },
    }
}

/// The installed version of a Debian package, if it is installed.
pub fn installed_version(package: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}|${Version}", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (status, version) = text.split_once('|')?;
    (output.status.success() && status.ends_with(" installed")).then(|| version.to_owned())
}

fn is_debian_like() -> bool {
    Path::new("/etc/debian_version").exists()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The command that installs the missing pins.
pub fn install_command(pins: &[&str]) -> String {
    format!("apt-get install -y {}", pins.join(" "))
}

/// Makes sure every pinned package is installed. Missing ones are installed when this is a
/// Debian-like machine and we are root; otherwise this fails with the command to run. A
/// package installed at another version than pinned is reported, not replaced.
pub fn ensure_packages(pins: &[String], purpose: &str, debs: &[DebianDeb], sources: &Sources) -> Result<()> {
    let mut missing = Vec::new();
    for pin in pins {
        let parsed = parse_pin(pin);
        match installed_version(parsed.name) {
            Some(version) if version == parsed.version || parsed.version.is_empty() => {}
            Some(version) => eprintln!(
                "note: {} is installed at {version}, toolchains.lock pins {}",
                parsed.name, parsed.version
            ),
            None => missing.push(pin.as_str()),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if let Some(bundle) = &sources.vendor {
        return install_from_bundle(&missing, purpose, debs, bundle);
    }
    let command = install_command(&missing);
    if sources.offline {
        bail!(
            "{purpose} needs packages that are not installed, and this build is offline: pass --vendor DIR \
             (a bundle from `cargo xtask vendor` holds their .deb files), or run as root with the network:\n  \
             apt-get update && {command}"
        );
    }
    if !(is_debian_like() && is_root()) {
        bail!(
            "{purpose} needs packages that are not installed; run as root:\n  apt-get update && {command}"
        );
    }
    eprintln!("{purpose}: installing missing packages\n  $ apt-get update && {command}");
    let install = |pins: &[&str]| {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pins)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let update = Command::new("apt-get").arg("update").status().context("run apt-get update")?;
    if !update.success() {
        eprintln!("warning: apt-get update failed ({update}); trying the install anyway");
    }
    let status = install(&missing).context("run apt-get install")?;
    if !status.success() {
        bail!(
            "`{command}` failed ({status}); if the pinned versions are no longer in the archive, \
             update them in toolchains.lock (see `apt-cache policy {}`)",
            missing.iter().map(|pin| parse_pin(pin).name).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// Installs the missing pins from the bundle's `.deb` files, together with every other
/// pinned `.deb` whose package is not installed (the dependencies apt would have fetched).
/// No `apt-get update`: nothing is asked of the network.
fn install_from_bundle(missing: &[&str], purpose: &str, debs: &[DebianDeb], bundle: &Bundle) -> Result<()> {
    if !(is_debian_like() && is_root()) {
        bail!(
            "{purpose} needs packages that are not installed ({}); run as root on a Debian-like machine, \
             or install the .deb files of {}/{} yourself",
            missing.join(" "),
            bundle.root.display(),
            crate::inputs::bundle::DEBS_DIR
        );
    }
    let mut files = Vec::new();
    for pin in missing {
        let parsed = parse_pin(pin);
        if !debs.iter().any(|deb| deb.package == parsed.name && deb.version == parsed.version) {
            bail!("toolchains.lock has no `[[debian-debs]]` entry for {pin}");
        }
    }
    for deb in debs {
        if installed_version(&deb.package).as_deref() == Some(deb.version.as_str()) {
            continue;
        }
        let path = bundle.file(&format!("{}/{}", crate::inputs::bundle::DEBS_DIR, deb.file))?;
        // The bundle was verified against its manifest; the pin is the stronger check.
        let digest = crate::inputs::cache::sha256_file(&path)?;
        if digest != deb.sha256 {
            bail!("{} has sha256 {digest}, toolchains.lock pins {}; refusing to install it", path.display(), deb.sha256);
        }
        files.push(path);
    }
    eprintln!("{purpose}: installing {} packages from the vendor bundle (offline)", files.len());
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "--no-download"])
        .args(&files)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("run apt-get install")?;
    if !status.success() {
        bail!("`apt-get install` of the bundle's .deb files failed ({status}); see apt's message above");
    }
    Ok(())
}

/// The first line a tool prints for `--version`, or `None` when it cannot run.
pub fn tool_version(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_owned)
}

/// Finds `program` on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// The oldest wasmtime CLI that offers what the command components import (WASI 0.2.12's
/// `exit-with-code`, unasked).
const OLDEST_WASMTIME: u32 = 46;

/// The wasmtime CLI on the PATH, when there is one new enough to run the command components;
/// says on stderr why not otherwise.
pub fn wasmtime_cli() -> Option<std::path::PathBuf> {
    let Some(program) = which("wasmtime") else {
        eprintln!("note: the wasmtime CLI is not installed (.ci/run installs it)");
        return None;
    };
    let version = std::process::Command::new(&program).arg("--version").output().ok().map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
    match version.as_deref().and_then(wasmtime_major) {
        Some(major) if major >= OLDEST_WASMTIME => Some(program),
        _ => {
            eprintln!(
                "note: {} answers {:?}: the command components need wasmtime {OLDEST_WASMTIME} or later; not using it",
                program.display(),
                version.unwrap_or_default().trim()
            );
            None
        }
    }
}

/// The major version in what `wasmtime --version` prints (`wasmtime 49.0.3 (f96eabaa1
/// 2026-10-14)`).
fn wasmtime_major(version: &str) -> Option<u32> {
    let mut words = version.split_whitespace();
    if words.next() != Some("wasmtime") {
        return None;
    }
    words.next()?.split('.').next()?.parse().ok()
}

/// The oldest Node whose `node:wasi` takes `version: 'preview1'` (the runner asks for it).
const OLDEST_NODE: u32 = 20;

/// The Node on the PATH, when there is one whose `node:wasi` runs the core module; says on
/// stderr why not otherwise.
pub fn node_cli() -> Option<std::path::PathBuf> {
    let Some(program) = which("node") else {
        eprintln!("note: Node is not installed: the core module's command suite under node:wasi is skipped");
        return None;
    };
    let version = tool_version(&program);
    match version.as_deref().and_then(node_major) {
        Some(major) if major >= OLDEST_NODE => Some(program),
        _ => {
            eprintln!(
                "note: {} answers {:?}: the core module's runner needs Node {OLDEST_NODE} or later; not using it",
                program.display(),
                version.unwrap_or_default()
            );
            None
        }
    }
}

/// The major version in what `node --version` prints (`v20.20.2`).
fn node_major(version: &str) -> Option<u32> {
    version.trim().strip_prefix('v')?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_node_new_enough_is_used() {
        assert_eq!(node_major("v20.20.2\n"), Some(20));
        assert!(node_major("v18.19.0").unwrap() < OLDEST_NODE, "18's node:wasi has no `version`");
        assert_eq!(node_major("20.1.0"), None, "not what node prints");
    }

    #[test]
    fn only_a_wasmtime_new_enough_is_used() {
        assert_eq!(wasmtime_major("wasmtime 49.0.3 (f96eabaa1 2026-10-14)\n"), Some(49));
        assert_eq!(wasmtime_major("wasmtime 36.0.9"), Some(36));
        assert!(wasmtime_major("wasmtime 36.0.9").unwrap() < OLDEST_WASMTIME, "36 lacks exit-with-code");
        assert_eq!(wasmtime_major("wasmer 4.0.0"), None, "another program under the name");
        assert_eq!(wasmtime_major(""), None);
    }
}
