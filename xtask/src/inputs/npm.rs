//! npm packages used as files (`[[npm-packages]]` in toolchains.lock), never installed: only
//! the bench's Pyodide column uses one, and no artifact depends on it. A package's tarball
//! comes through `npm pack NAME@VERSION` with the machine's own npm configuration (no registry
//! is named here), is checked against its pin before it enters the cache, and is unpacked, with
//! every entry checked, like an unpacked Debian package (`unpacked::verified_tree`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::inputs::archive::{self, Compression};
use crate::inputs::cache::Cache;
use crate::inputs::lock::NpmPackage;
use crate::inputs::sources::Sources;
use crate::inputs::unpacked;

/// The directory of the unpacked package (its `package.json` at the top), fetched and
/// unpacked if missing or changed since.
pub fn package_dir(cache: &Cache, sources: &Sources, pin: &NpmPackage) -> Result<PathBuf> {
    let tree = unpacked::verified_tree(cache, &pin.sha256, &pin.file, |staging_root| {
        let tarball = tarball(cache, sources, pin)?;
        archive::extract(&tarball, Compression::Gzip, staging_root)
    })?;
    // npm's tarballs hold one top directory, `package/`.
    let package = tree.root.join("package");
    if !package.join("package.json").is_file() {
        bail!("{} has no package/package.json; is the pin in toolchains.lock an npm package?", pin.file);
    }
    Ok(package)
}

/// The pinned tarball in the verified cache, brought by `npm pack` when missing.
fn tarball(cache: &Cache, sources: &Sources, pin: &NpmPackage) -> Result<PathBuf> {
    if let Some(path) = cache.get(&pin.sha256)? {
        return Ok(path);
    }
    if let Some(reason) = sources.refuse_network(&format!("the pinned npm package {}", pin.file)) {
        bail!(reason);
    }
    let scratch = cache.partial_dir()?.join(format!("npm-{}-{}", pin.package, std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = pack(&scratch, pin).and_then(|packed| cache.insert_file(&packed, &pin.sha256, &pin.file));
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// `npm pack NAME@VERSION` into `scratch` (it fetches the published tarball and runs none of
/// the package's scripts).
fn pack(scratch: &Path, pin: &NpmPackage) -> Result<PathBuf> {
    let spec = format!("{}@{}", pin.package, pin.version);
    eprintln!("fetching {spec} with npm pack");
    let output = Command::new("npm")
        .args(["pack", &spec, "--ignore-scripts", "--silent", "--pack-destination"])
        .arg(scratch)
        .current_dir(scratch)
        .output()
        .context("run npm (install Node.js and npm, or skip what needs this package)")?;
    if !output.status.success() {
        bail!("npm pack {spec} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    let packed = scratch.join(&pin.file);
    if !packed.is_file() {
        bail!("npm pack {spec} did not write {} (it said {:?}); correct `file` in toolchains.lock", pin.file, String::from_utf8_lossy(&output.stdout).trim());
    }
    Ok(packed)
}
