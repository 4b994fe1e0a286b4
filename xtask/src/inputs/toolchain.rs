//! Choosing the toolchains the guest build uses, each with a line saying which one and why:
//!
//! - the WASI C toolchain: `$WASI_SDK_PATH` → the cache → the pinned download → the system
//!   packages (clang-19 and friends);
//! - the Rust toolchain for `-Z build-std` on wasm32-wasip1: the pinned rustup nightly when
//!   it has `rust-src`, else Debian's rustc-web whose sysroot carries the library sources.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::inputs::archive::{self, Compression};
use crate::inputs::bundle;
use crate::inputs::cache::{self, Cache};
use crate::inputs::download;
use crate::inputs::lock::{host_platform, Lock};
use crate::inputs::sources::Sources;
use crate::inputs::system;

/// A clang that compiles C for wasm32-wasip1 and links wasm shared libraries.
#[derive(Debug, Clone)]
pub struct WasiToolchain {
    pub clang: PathBuf,
    /// `--target` and `--sysroot` for compiling C.
    pub compile_flags: Vec<String>,
    /// Where it came from: `WASI_SDK_PATH`, `cache`, `download` or `system`.
    pub provider: &'static str,
    pub reason: String,
}

impl WasiToolchain {
    fn from_sdk(root: &Path, provider: &'static str, reason: String) -> Result<WasiToolchain> {
        let clang = root.join("bin").join("clang");
        let sysroot = root.join("share").join("wasi-sysroot");
        if !clang.is_file() || !sysroot.is_dir() {
            bail!(
                "{} is not a WASI SDK (expected bin/clang and share/wasi-sysroot)",
                root.display()
            );
        }
        Ok(WasiToolchain {
            clang,
            compile_flags: vec!["--target=wasm32-wasip1".into(), format!("--sysroot={}", sysroot.display())],
            provider,
            reason,
        })
    }

    fn system(clang: PathBuf, reason: String) -> WasiToolchain {
        // Debian keeps wasi-libc's headers under /usr/include/wasm32-wasi, which clang finds
        // for the `wasm32-wasi` triple with `--sysroot=/usr`.
        WasiToolchain {
            clang,
            compile_flags: vec!["--target=wasm32-wasi".into(), "--sysroot=/usr".into()],
            provider: "system",
            reason,
        }
    }

    pub fn version(&self) -> String {
        system::tool_version(&self.clang).unwrap_or_else(|| "unknown".into())
    }
}

/// The outcome of each provider, in order; factored out so the order itself is testable.
pub struct WasiProviders<'a> {
    pub env_path: Option<PathBuf>,
    pub cached: &'a mut dyn FnMut() -> Result<Option<PathBuf>>,
    pub download: &'a mut dyn FnMut() -> Result<PathBuf>,
    pub system: &'a mut dyn FnMut() -> Result<PathBuf>,
}

pub fn choose_wasi(providers: WasiProviders<'_>) -> Result<WasiToolchain> {
    if let Some(root) = providers.env_path {
        return WasiToolchain::from_sdk(&root, "WASI_SDK_PATH", format!("WASI_SDK_PATH is set to {}", root.display()))
            .context("WASI_SDK_PATH does not point at a usable WASI SDK; fix or unset it");
    }
    if let Some(root) = (providers.cached)()? {
        return WasiToolchain::from_sdk(&root, "cache", format!("the pinned WASI SDK is in the cache at {}", root.display()));
    }
    let download_failure = match (providers.download)() {
        Ok(root) => {
            return WasiToolchain::from_sdk(&root, "download", format!("downloaded the pinned WASI SDK to {}", root.display()))
        }
        Err(error) => format!("{error:#}"),
    };
    match (providers.system)() {
        Ok(clang) => Ok(WasiToolchain::system(
            clang,
            format!("the pinned WASI SDK is unavailable ({download_failure}); using the system clang"),
        )),
        Err(system_failure) => bail!(
            "no WASI toolchain: the pinned WASI SDK is unavailable ({download_failure}) and the system \
             fallback failed ({system_failure:#}); set WASI_SDK_PATH to an extracted WASI SDK"
        ),
    }
}

fn sdk_directory(cache: &Cache, sha256: &str) -> PathBuf {
    cache.root.join("wasi-sdk").join(sha256)
}

/// A note that the pinned download failed, so later runs go straight to the fallback
/// without touching the network. `cargo xtask fetch --retry-downloads` removes it.
fn failure_note(cache: &Cache, sha256: &str) -> PathBuf {
    cache.root.join("notes").join(format!("wasi-sdk-{sha256}.download-failed"))
}

/// Resolves the WASI toolchain for this machine, installing the system fallback if needed.
pub fn wasi(lock: &Lock, cache: &Cache, sources: &Sources, retry_downloads: bool) -> Result<WasiToolchain> {
    let pin = lock.wasi_sdk.platforms.get(&host_platform()).cloned();
    let env_path = std::env::var_os("WASI_SDK_PATH").filter(|value| !value.is_empty()).map(PathBuf::from);
    let mut cached = || -> Result<Option<PathBuf>> {
        let Some(pin) = &pin else { return Ok(None) };
        let directory = sdk_directory(cache, &pin.sha256);
        if directory.join(".complete").exists() {
            return Ok(Some(directory.join("sdk")));
        }
        // A bundle made on a machine that had the SDK carries its tarball.
        let in_bundle = sources.vendor.as_ref().map(|bundle| bundle.root.join(bundle::WASI_SDK_DIR).join(sdk_file_name(&pin.url)));
        match in_bundle {
            Some(tarball) if tarball.is_file() => {
                let what = format!("wasi-sdk {}", lock.wasi_sdk.version);
                cache.insert_copy(&tarball, &pin.sha256, &what)?;
                extract_sdk(cache, &pin.sha256).map(Some)
            }
            _ => Ok(None),
        }
    };
    let mut download = || -> Result<PathBuf> {
        let Some(pin) = &pin else {
            bail!(
                "toolchains.lock pins no WASI SDK for {} (set WASI_SDK_PATH to use your own)",
                host_platform()
            );
        };
        let note = failure_note(cache, &pin.sha256);
        if retry_downloads {
            let _ = fs::remove_file(&note);
        }
        if let Some(reason) = sources.refuse_network(&format!("the pinned WASI SDK {}", lock.wasi_sdk.version)) {
            bail!(reason);
        }
        if let Ok(reason) = fs::read_to_string(&note) {
            bail!("{} (recorded earlier; `cargo xtask fetch --retry-downloads` tries again)", reason.trim());
        }
        let result = download_sdk(cache, &pin.url, &pin.sha256, &lock.wasi_sdk.version);
        if let Err(error) = &result {
            cache::write_atomic(&note, format!("{error:#}").as_bytes())?;
        }
        result
    };
    let mut system_clang = || -> Result<PathBuf> {
        system::ensure_packages(&lock.wasi_sdk.system.debian_packages, "the system WASI toolchain", &lock.debian_debs, sources)?;
        system::which(&lock.wasi_sdk.system.clang)
            .with_context(|| format!("{} is not on PATH after installing its package", lock.wasi_sdk.system.clang))
    };
    choose_wasi(WasiProviders {
        env_path,
        cached: &mut cached,
        download: &mut download,
        system: &mut system_clang,
    })
}

/// The SDK tarball's file name: the last segment of its URL.
pub fn sdk_file_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or("wasi-sdk.tar.gz").to_owned()
}

fn download_sdk(cache: &Cache, url: &str, sha256: &str, version: &str) -> Result<PathBuf> {
    download::fetch_verified(cache, url, sha256, &format!("wasi-sdk {version}"))?;
    extract_sdk(cache, sha256)
}

/// Extracts the verified tarball in the cache into the SDK directory.
fn extract_sdk(cache: &Cache, sha256: &str) -> Result<PathBuf> {
    let tarball = cache.get(sha256)?.context("the WASI SDK tarball left the cache")?;
    let directory = sdk_directory(cache, sha256);
    let staging = directory.join("extracted");
    archive::extract(&tarball, Compression::Gzip, &staging)?;
    // The tarball holds one top-level directory, `wasi-sdk-<version>-<platform>`.
    let top = fs::read_dir(&staging)?
        .next()
        .context("the WASI SDK tarball is empty")??
        .path();
    let sdk = directory.join("sdk");
    if sdk.exists() {
        fs::remove_dir_all(&sdk)?;
    }
    fs::rename(&top, &sdk)?;
    fs::remove_dir_all(&staging)?;
    cache::write_atomic(&directory.join(".complete"), sha256.as_bytes())?;
    Ok(sdk)
}

/// The Rust toolchain that builds guests: `cargo`/`rustc` paths and the environment a
/// nested build needs.
#[derive(Debug, Clone)]
pub struct RustGuestToolchain {
    pub cargo: PathBuf,
    pub rustc: PathBuf,
    /// Extra environment for the nested build (`RUSTC_BOOTSTRAP=1` for a stable rustc).
    pub env: Vec<(String, String)>,
    /// `+nightly-…` for rustup's cargo, empty otherwise.
    pub toolchain_arg: Option<String>,
    /// The sysroot, which holds the standard library's sources (`lib/rustlib/src/rust`).
    pub sysroot: PathBuf,
    pub version: String,
    pub reason: String,
}

fn sysroot_has_sources(rustc: &Path, toolchain: Option<&str>) -> Option<PathBuf> {
    let mut command = Command::new(rustc);
    if let Some(toolchain) = toolchain {
        command.arg(format!("+{toolchain}"));
    }
    let output = command.args(["--print", "sysroot"]).env_remove("RUSTC").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    sysroot.join("lib/rustlib/src/rust/library").is_dir().then_some(sysroot)
}

/// Asks rustup whether `toolchain` is installed (never letting it install one).
fn rustup_has_toolchain(rustup: &Path, toolchain: &str) -> bool {
    Command::new(rustup)
        .args(["toolchain", "list"])
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout).lines().any(|line| line.starts_with(toolchain))
        })
        .unwrap_or(false)
}

pub fn rust_guest(lock: &Lock, sources: &Sources) -> Result<RustGuestToolchain> {
    let nightly = &lock.rust_guest.rustup_nightly;
    if let Some(rustup) = system::which("rustup").filter(|rustup| rustup_has_toolchain(rustup, nightly)) {
        let rustc = rustup.with_file_name("rustc");
        if let Some(sysroot) = sysroot_has_sources(&rustc, Some(nightly)) {
            let version = Command::new(&rustc)
                .args([format!("+{nightly}"), "--version".into()])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
                .unwrap_or_default();
            return Ok(RustGuestToolchain {
                cargo: rustup.with_file_name("cargo"),
                rustc: sysroot.join("bin/rustc"),
                env: Vec::new(),
                toolchain_arg: Some(format!("+{nightly}")),
                sysroot,
                version,
                reason: format!("rustup's {nightly} has rust-src"),
            });
        }
    }
    let pin = &lock.rust_guest.system;
    system::ensure_packages(&pin.debian_packages, "the guest Rust toolchain", &lock.debian_debs, sources)?;
    let rustc = PathBuf::from(&pin.rustc);
    let sysroot = sysroot_has_sources(&rustc, None).with_context(|| {
        format!("{} has no library sources in its sysroot (package rust-web-src)", rustc.display())
    })?;
    let version = system::tool_version(&rustc).unwrap_or_default();
    Ok(RustGuestToolchain {
        cargo: PathBuf::from(&pin.cargo),
        rustc,
        env: vec![("RUSTC_BOOTSTRAP".into(), "1".into())],
        toolchain_arg: None,
        sysroot,
        version,
        reason: format!(
            "rustup's {nightly} with rust-src is not installed; Debian's rustc {} carries the library sources",
            pin.version
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sdk(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/clang"), "").unwrap();
        fs::create_dir_all(root.join("share/wasi-sysroot")).unwrap();
    }

    struct Calls(Vec<&'static str>);

    fn choose(
        env_path: Option<PathBuf>,
        cached: Option<PathBuf>,
        download: Result<PathBuf, &'static str>,
        system: Result<PathBuf, &'static str>,
    ) -> (Result<WasiToolchain>, Vec<&'static str>) {
        let calls = std::cell::RefCell::new(Calls(Vec::new()));
        let result = choose_wasi(WasiProviders {
            env_path,
            cached: &mut || {
                calls.borrow_mut().0.push("cache");
                Ok(cached.clone())
            },
            download: &mut || {
                calls.borrow_mut().0.push("download");
                download.clone().map_err(|error| anyhow::anyhow!(error))
            },
            system: &mut || {
                calls.borrow_mut().0.push("system");
                system.clone().map_err(|error| anyhow::anyhow!(error))
            },
        });
        (result, calls.into_inner().0)
    }

    #[test]
    fn the_environment_variable_wins_and_nothing_else_is_asked() {
        let directory = tempfile::tempdir().unwrap();
        fake_sdk(directory.path());
        let (result, calls) = choose(Some(directory.path().into()), None, Err("no"), Err("no"));
        assert_eq!(result.unwrap().provider, "WASI_SDK_PATH");
        assert!(calls.is_empty());
    }

    #[test]
    fn a_bad_environment_variable_is_an_error_naming_it() {
        let directory = tempfile::tempdir().unwrap();
        let (result, _) = choose(Some(directory.path().into()), None, Err("no"), Ok("/usr/bin/clang-19".into()));
        assert!(format!("{:#}", result.unwrap_err()).contains("WASI_SDK_PATH"));
    }

    #[test]
    fn the_cache_comes_before_the_download() {
        let directory = tempfile::tempdir().unwrap();
        fake_sdk(directory.path());
        let (result, calls) = choose(None, Some(directory.path().into()), Err("no"), Err("no"));
        assert_eq!(result.unwrap().provider, "cache");
        assert_eq!(calls, ["cache"]);
    }

    #[test]
    fn the_download_comes_before_the_system() {
        let directory = tempfile::tempdir().unwrap();
        fake_sdk(directory.path());
        let (result, calls) = choose(None, None, Ok(directory.path().into()), Ok("/usr/bin/clang-19".into()));
        assert_eq!(result.unwrap().provider, "download");
        assert_eq!(calls, ["cache", "download"]);
    }

    #[test]
    fn the_system_is_last_and_says_why() {
        let (result, calls) = choose(None, None, Err("could not resolve host"), Ok("/usr/bin/clang-19".into()));
        let toolchain = result.unwrap();
        assert_eq!(toolchain.provider, "system");
        assert!(toolchain.reason.contains("could not resolve host"), "{}", toolchain.reason);
        assert_eq!(calls, ["cache", "download", "system"]);
    }

    #[test]
    fn nothing_available_names_wasi_sdk_path() {
        let (result, _) = choose(None, None, Err("unpinned platform"), Err("not debian"));
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("WASI_SDK_PATH"), "{error}");
        assert!(error.contains("unpinned platform") && error.contains("not debian"), "{error}");
    }
}
