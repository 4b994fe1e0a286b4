//! `toolchains.lock`: the pins of every outside input, parsed strictly (an unknown or
//! missing field is an error that names it).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    #[serde(rename = "wasi-sdk")]
    pub wasi_sdk: WasiSdkPin,
    #[serde(rename = "rust-guest")]
    pub rust_guest: RustGuestPin,
    pub cpython: CPythonPin,
    #[serde(rename = "command-adapter")]
    pub command_adapter: CommandAdapterPin,
    #[serde(rename = "debian-debs")]
    pub debian_debs: Vec<DebianDeb>,
    #[serde(rename = "patched-crates")]
    pub patched_crates: Vec<PatchedCrate>,
    /// Debian packages used as files (unpacked into the cache), never installed.
    #[serde(rename = "unpacked-debs", default)]
    pub unpacked_debs: Vec<UnpackedDeb>,
    /// npm packages used as files (the bench's Pyodide), never installed.
    #[serde(rename = "npm-packages", default)]
    pub npm_packages: Vec<NpmPackage>,
    /// Upstream source tarballs the build compiles (CPython and its C libraries).
    #[serde(rename = "source-tarballs", default)]
    pub source_tarballs: Vec<SourceTarball>,
    /// The trust anchor of offline builds (absent until `cargo xtask vendor --update-pin`).
    #[serde(rename = "vendor-bundle", default)]
    pub vendor_bundle: Option<VendorBundlePin>,
}

/// The vendor bundle a commit pins: the sha256 of its file list (`SHA256SUMS`), which names
/// every file's sha256, so every byte of the bundle is anchored in the repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorBundlePin {
    #[serde(rename = "sums-sha256")]
    pub sums_sha256: String,
}

/// The preview1 command adapter, as shipped by a registry crate the xtask depends on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAdapterPin {
    #[serde(rename = "crate")]
    pub crate_name: String,
    pub version: String,
    pub sha256: String,
}

/// One `.deb` file: a pinned package or one apt installs with the pinned ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianDeb {
    pub package: String,
    pub version: String,
    /// The file name `apt-get download` writes.
    pub file: String,
    pub sha256: String,
}

/// A `.deb` of any suite of the machine's Debian archive, used as files: fetched with
/// `apt-get download` through a private apt configuration for `suite`, checked against
/// `sha256` and unpacked into the cache (`inputs/unpacked.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpackedDeb {
    pub package: String,
    pub version: String,
    pub suite: String,
    /// The file name `apt-get download` writes.
    pub file: String,
    pub sha256: String,
}

/// An npm package used as files: its tarball fetched with `npm pack PACKAGE@VERSION`, checked
/// against `sha256` and unpacked into the cache (`inputs/npm.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpmPackage {
    pub package: String,
    pub version: String,
    /// The file name `npm pack` writes.
    pub file: String,
    pub sha256: String,
}

/// An upstream source tarball the build compiles: Debian's `.orig` copy of upstream's release
/// (the same bytes), fetched from `directory` of the machine's own Debian archive, checked
/// against `sha256` (`inputs/tarballs.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTarball {
    /// What the build calls it (`cpython`, `zlib`, …).
    pub name: String,
    /// Upstream's version.
    pub version: String,
    /// Its folder inside the archive (`pool/main/…`).
    pub directory: String,
    pub file: String,
    pub sha256: String,
    /// The SPDX license expression the SBOM names.
    pub license: String,
}

impl Lock {
    /// The `[[source-tarballs]]` pin named `name`.
    pub fn source_tarball(&self, name: &str) -> Result<&SourceTarball> {
        self.source_tarballs
            .iter()
            .find(|pin| pin.name == name)
            .with_context(|| format!("toolchains.lock pins no source tarball `{name}` ([[source-tarballs]])"))
    }

    /// The pin of the npm package `name`.
    pub fn npm_package(&self, name: &str) -> Result<&NpmPackage> {
        self.npm_packages
            .iter()
            .find(|pin| pin.package == name)
            .with_context(|| format!("toolchains.lock pins no npm package `{name}` ([[npm-packages]])"))
    }
}

/// A registry crate the guest build uses in a patched form (see `patch.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchedCrate {
    pub name: String,
    pub version: String,
    #[serde(rename = "crate-sha256")]
    pub crate_sha256: String,
    pub files: Vec<PatchedFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchedFile {
    pub path: String,
    #[serde(rename = "original-sha256")]
    pub original_sha256: String,
    #[serde(rename = "patched-sha256")]
    pub patched_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasiSdkPin {
    pub version: String,
    /// Keyed by host platform, e.g. `x86_64-linux`.
    pub platforms: BTreeMap<String, Download>,
    pub system: SystemWasiPin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemWasiPin {
    pub clang: String,
    #[serde(rename = "debian-packages")]
    pub debian_packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RustGuestPin {
    pub target: String,
    #[serde(rename = "rustup-nightly")]
    pub rustup_nightly: String,
    pub system: SystemRustPin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRustPin {
    pub version: String,
    pub rustc: String,
    pub cargo: String,
    #[serde(rename = "debian-packages")]
    pub debian_packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CPythonPin {
    #[serde(rename = "python-version")]
    pub python_version: String,
    #[serde(rename = "wheel-project")]
    pub wheel_project: String,
    #[serde(rename = "wheel-version")]
    pub wheel_version: String,
    pub wheels: BTreeMap<String, Wheel>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wheel {
    pub filename: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// A `Cargo.lock`, as far as the build reads it.
#[derive(Debug, Deserialize)]
pub struct CargoLock {
    pub package: Vec<LockedPackage>,
}

#[derive(Debug, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub source: Option<String>,
    pub checksum: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
}

impl CargoLock {
    pub fn parse(text: &str, what: &str) -> Result<CargoLock> {
        toml::from_str(text).with_context(|| format!("parse {what}"))
    }

    pub fn load(path: &Path) -> Result<CargoLock> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        CargoLock::parse(&text, &path.display().to_string())
    }

    /// The locked version of `package` (versions joined by `+` when several are locked).
    pub fn version_of(&self, package: &str) -> Result<String> {
        let versions: Vec<&str> =
            self.package.iter().filter(|locked| locked.name == package).map(|locked| locked.version.as_str()).collect();
        if versions.is_empty() {
            bail!("the lock file does not lock {package}");
        }
        Ok(versions.join("+"))
    }
}

/// The lock's name for the platform this xtask runs on.
pub fn host_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

impl Lock {
    pub fn load(path: &Path) -> Result<Lock> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read {}", path.display()))?;
        Lock::parse(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Lock> {
        let lock: Lock = toml::from_str(text)?;
        lock.validate()?;
        Ok(lock)
    }

    fn validate(&self) -> Result<()> {
        let mut digests = vec![("cpython wheel", &self.cpython.wheels)]
            .into_iter()
            .flat_map(|(what, wheels)| {
                wheels.iter().map(move |(platform, wheel)| (format!("{what} for {platform}"), &wheel.sha256))
            })
            .collect::<Vec<_>>();
        for (platform, download) in &self.wasi_sdk.platforms {
            digests.push((format!("wasi-sdk for {platform}"), &download.sha256));
        }
        for member in &self.cpython.members {
            digests.push((format!("cpython member {}", member.name), &member.sha256));
        }
        digests.push(("the command adapter".to_owned(), &self.command_adapter.sha256));
        if let Some(bundle) = &self.vendor_bundle {
            digests.push(("the vendor bundle's SHA256SUMS".to_owned(), &bundle.sums_sha256));
        }
        for deb in &self.debian_debs {
            digests.push((format!("debian package {}", deb.file), &deb.sha256));
        }
        for deb in &self.unpacked_debs {
            digests.push((format!("unpacked debian package {}", deb.file), &deb.sha256));
            if !deb.file.ends_with(".deb") || deb.file.contains('/') || deb.file.starts_with('.') {
                bail!("unpacked debian package `{}`: `file` must be a plain .deb file name", deb.file);
            }
            if deb.suite.is_empty() || !deb.suite.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-') {
                bail!("unpacked debian package {}: suite `{}` is not a Debian suite name", deb.file, deb.suite);
            }
        }
        for tarball in &self.source_tarballs {
            digests.push((format!("source tarball {}", tarball.file), &tarball.sha256));
            // Letters, digits and `._+~-` only (no `/`, no `%` that a URL would decode), not
            // starting with a dot.
            let plain = |text: &str| {
                !text.is_empty() && !text.starts_with('.') && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._+~-".contains(&byte))
            };
            if !plain(&tarball.file) || !(tarball.file.ends_with(".tar.gz") || tarball.file.ends_with(".tar.xz")) {
                bail!("source tarball `{}`: `file` must be a plain .tar.gz or .tar.xz file name", tarball.file);
            }
            if !tarball.directory.starts_with("pool/") || !tarball.directory.split('/').all(plain) {
                bail!("source tarball {}: `directory` `{}` is not a folder of the archive's pool", tarball.file, tarball.directory);
            }
        }
        for (index, tarball) in self.source_tarballs.iter().enumerate() {
            if self.source_tarballs[..index].iter().any(|other| other.name == tarball.name || other.file == tarball.file) {
                bail!("source tarball `{}` ({}) is pinned twice", tarball.name, tarball.file);
            }
        }
        for patched in &self.patched_crates {
            digests.push((format!("patched crate {}", patched.name), &patched.crate_sha256));
            for file in &patched.files {
                digests.push((format!("patched crate {} file {} (original)", patched.name, file.path), &file.original_sha256));
                digests.push((format!("patched crate {} file {} (patched)", patched.name, file.path), &file.patched_sha256));
            }
        }
        // Every pinned package must have its .deb, or an offline install could not find it.
        for pin in self.wasi_sdk.system.debian_packages.iter().chain(&self.rust_guest.system.debian_packages) {
            let (name, version) = pin.split_once('=').unwrap_or((pin, ""));
            if !self.debian_debs.iter().any(|deb| deb.package == name && deb.version == version) {
                bail!("the Debian pin `{pin}` has no `[[debian-debs]]` entry with that version");
            }
        }
        for (what, digest) in digests {
            if digest.len() != 64 || !digest.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()) {
                bail!("{what}: sha256 `{digest}` is not 64 lowercase hex digits");
            }
        }
        Ok(())
    }

    /// The `[[unpacked-debs]]` entry of `package`.
    pub fn unpacked_deb(&self, package: &str) -> Result<&UnpackedDeb> {
        self.unpacked_debs
            .iter()
            .find(|deb| deb.package == package)
            .with_context(|| format!("toolchains.lock has no `[[unpacked-debs]]` entry for {package}"))
    }

    /// The pinned wheel for this host, or an error naming the platforms that are pinned.
    pub fn wheel_for_host(&self) -> Result<&Wheel> {
        let platform = host_platform();
        self.cpython.wheels.get(&platform).with_context(|| {
            format!(
                "toolchains.lock pins no {} wheel for {platform} (pinned: {})",
                self.cpython.wheel_project,
                self.cpython.wheels.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository_lock() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../toolchains.lock")).unwrap()
    }

    #[test]
    fn the_repository_lock_parses() {
        let lock = Lock::parse(&repository_lock()).unwrap();
        assert_eq!(lock.cpython.wheel_version, "0.25.1");
        assert!(lock.cpython.members.iter().any(|member| member.name == "libc.so"));
        assert_eq!(
            lock.wasi_sdk.platforms["x86_64-linux"].sha256,
            "52640dde13599bf127a95499e61d6d640256119456d1af8897ab6725bcf3d89c"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let text = repository_lock().replacen(
            "sha256 = \"52640dde13599bf127a95499e61d6d640256119456d1af8897ab6725bcf3d89c\"\n",
            "",
            1,
        );
        let error = format!("{:#}", Lock::parse(&text).unwrap_err());
        assert!(error.contains("missing field `sha256`"), "{error}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let text = repository_lock().replacen("[wasi-sdk]\n", "[wasi-sdk]\nmirror = \"x\"\n", 1);
        let error = format!("{:#}", Lock::parse(&text).unwrap_err());
        assert!(error.contains("unknown field `mirror`"), "{error}");
    }

    #[test]
    fn a_pinned_package_without_its_deb_is_refused() {
        let text = repository_lock().replacen("\"clang-19=1:19.1.7-3~deb12u1\"", "\"clang-19=1:19.1.8\"", 1);
        let error = format!("{:#}", Lock::parse(&text).unwrap_err());
        assert!(error.contains("`clang-19=1:19.1.8` has no `[[debian-debs]]` entry"), "{error}");
    }

    #[test]
    fn a_malformed_digest_is_refused() {
        let text = repository_lock().replacen("sha256 = \"f1b113", "sha256 = \"zzb113", 1);
        let error = format!("{:#}", Lock::parse(&text).unwrap_err());
        assert!(error.contains("libc.so"), "{error}");
    }

    #[test]
    fn a_source_tarball_stays_inside_the_archive_pool() {
        let lock = Lock::parse(&repository_lock()).unwrap();
        assert_eq!(lock.source_tarball("cpython").unwrap().version, "3.14.7");
        for (from, to, named) in [
            ("directory = \"pool/main/p/python3.14\"", "directory = \"pool/../../etc\"", "is not a folder of the archive's pool"),
            ("directory = \"pool/main/p/python3.14\"", "directory = \"dists/sid\"", "is not a folder of the archive's pool"),
            ("directory = \"pool/main/p/python3.14\"", "directory = \"pool/%2e%2e/x\"", "is not a folder of the archive's pool"),
            ("name = \"zlib\"", "name = \"cpython\"", "is pinned twice"),
            ("file = \"python3.14_3.14.7.orig.tar.xz\"", "file = \"../python3.14_3.14.7.orig.tar.xz\"", "must be a plain"),
            ("file = \"python3.14_3.14.7.orig.tar.xz\"", "file = \"python3.14_3.14.7.dsc\"", "must be a plain"),
        ] {
            let text = repository_lock().replacen(from, to, 1);
            assert_ne!(text, repository_lock());
            let error = format!("{:#}", Lock::parse(&text).unwrap_err());
            assert!(error.contains(named), "{to}: {error}");
        }
    }
}
