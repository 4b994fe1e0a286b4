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

/// An npm package as [`package_dir`] found it.
pub enum Package {
    /// The directory of the unpacked, verified package.
    Ready(PathBuf),
    /// It could not be brought (no npm, offline, npm failed): why.
    Unavailable(String),
}

/// The directory of the unpacked package (its `package.json` at the top), fetched and
/// unpacked if missing or changed since; [`Package::Unavailable`] when it cannot be fetched.
/// A tarball that does not match its pin is an error, never a package.
pub fn package_dir(cache: &Cache, sources: &Sources, pin: &NpmPackage) -> Result<Package> {
    let tarball = match cache.get(&pin.sha256)? {
        Some(path) => path,
        None => match fetch(cache, sources, pin)? {
            Ok(path) => path,
            Err(why) => return Ok(Package::Unavailable(why)),
        },
    };
    let tree = unpacked::verified_tree(cache, &pin.sha256, &pin.file, |staging_root| {
        archive::extract(&tarball, Compression::Gzip, staging_root)
    })?;
    // npm's tarballs hold one top directory, `package/`.
    let package = tree.root.join("package");
    if !package.join("package.json").is_file() {
        bail!("{} has no package/package.json; is the pin in toolchains.lock an npm package?", pin.file);
    }
    Ok(Package::Ready(package))
}

/// Brings the pinned tarball into the verified cache with `npm pack`: its path, or why it
/// could not be brought (the outer error: it came, and is not the pinned file).
fn fetch(cache: &Cache, sources: &Sources, pin: &NpmPackage) -> Result<std::result::Result<PathBuf, String>> {
    if let Some(reason) = sources.refuse_network(&format!("the pinned npm package {}", pin.file)) {
        return Ok(Err(reason));
    }
    // One flat directory name, whatever the package's name (`@scope/name` has a slash).
    let scratch = cache.partial_dir()?.join(format!("npm-{}-{}", pin.package.replace(['/', '@'], "_"), std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = match pack(&scratch, pin) {
        Ok(packed) => cache.insert_file(&packed, &pin.sha256, &pin.file).map(Ok),
        Err(why) => Ok(Err(format!("{why:#}"))),
    };
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
