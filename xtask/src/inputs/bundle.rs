//! The vendor bundle: one directory holding every input the build takes from outside, so a
//! build can run with no network at all. `cargo xtask vendor` writes it; `--vendor DIR`
//! reads it, after checking it against the trust anchor this repository commits.
//!
//! ```text
//! DIR/SHA256SUMS             every file below but the last three, with its sha256 (the
//!                            format `sha256sum -c` reads); its own sha256 is the anchor,
//!                            pinned in toolchains.lock `[vendor-bundle] sums-sha256`
//! DIR/vendor-manifest.json   the schema, and the Cargo.lock files the bundle was made for
//! DIR/crates/                `cargo vendor --versioned-dirs`: host, guests, Rust's std
//! DIR/wheels/                the pinned CPython wheel
//! DIR/debs/                  the pinned Debian packages (`[[debian-debs]]` and `[[unpacked-debs]]`)
//! DIR/sources/               the pinned `.crate`s the build patches (`[[patched-crates]]`)
//!                            and the source tarballs it compiles (`[[source-tarballs]]`)
//! DIR/packages/<sha256>/     the wheels of the repository's package sets (and those given to
//!                            `vendor --packages`), each under the sha256 its lock pins
//! DIR/cargo-config.toml      source replacement for every cargo build, `net.offline`:
//!                            generated from the directory's name, checked byte for byte
//! DIR/wasi-sdk/              the pinned WASI SDK tarball, when it was cached: checked
//!                            against its own pin in toolchains.lock
//! DIR/.eryx-output           the xtask's mark on a directory it writes whole
//! ```
//!
//! So every byte of a bundle is anchored in the repository, and nothing in the bundle vouches
//! for itself: `xtask/verify-bundle DIR` (a shell script, run before cargo compiles anything
//! from the bundle) and [`Bundle::open`] check the same anchor.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::inputs::cache::{sha256_file, write_atomic, OUTPUT_MARKER};
use crate::inputs::lock::Lock;
use crate::workspace::Workspace;

pub const CARGO_CONFIG: &str = "cargo-config.toml";
pub const MANIFEST: &str = "vendor-manifest.json";
pub const SUMS: &str = "SHA256SUMS";
pub const CRATES_DIR: &str = "crates";
pub const WHEELS_DIR: &str = "wheels";
pub const DEBS_DIR: &str = "debs";
pub const SOURCES_DIR: &str = "sources";
pub const WASI_SDK_DIR: &str = "wasi-sdk";
/// The wheels of package sets: `packages/<sha256>/<wheel file>`.
pub const PACKAGES_DIR: &str = "packages";
const SCHEMA: u32 = 2;
/// At most this many differing files are named in one error.
const NAMED_AT_MOST: usize = 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub schema: u32,
    /// The sha256 of the lock files the bundle was made for, by their path in the
    /// repository. (toolchains.lock pins the bundle itself, so it cannot be one of them.)
    pub made_for: BTreeMap<String, String>,
}

/// The lock files whose digests tie a release to a commit (the release manifest lists them).
pub const PINNING_FILES: &[&str] = &["toolchains.lock", "Cargo.lock", "crates/Cargo.lock"];
/// The lock files a vendor bundle names in its manifest.
const BUNDLE_LOCK_FILES: &[&str] = &["Cargo.lock", "crates/Cargo.lock"];

fn digests_of(workspace: &Workspace, names: &[&str]) -> Result<BTreeMap<String, String>> {
    names.iter().map(|name| Ok((name.to_string(), sha256_file(&workspace.path(name))?))).collect()
}

pub fn made_for(workspace: &Workspace) -> Result<BTreeMap<String, String>> {
    digests_of(workspace, PINNING_FILES)
}

/// What the repository says a bundle must be: the sha256 of its `SHA256SUMS`, and the
/// digests a WASI SDK tarball in it may have.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub sums_sha256: String,
    pub wasi_sdk_sha256: Vec<String>,
}

impl Anchor {
    pub fn of_lock(lock: &Lock) -> Result<Anchor> {
        let pin = lock.vendor_bundle.as_ref().context(
            "toolchains.lock pins no vendor bundle (no `[vendor-bundle] sums-sha256`): make one with \
             `cargo xtask vendor --update-pin` and commit toolchains.lock",
        )?;
        Ok(Anchor {
            sums_sha256: pin.sums_sha256.clone(),
            wasi_sdk_sha256: lock.wasi_sdk.platforms.values().map(|download| download.sha256.clone()).collect(),
        })
    }
}

/// The cargo configuration of the bundle named `bundle_name`. cargo resolves a relative path
/// in a `--config` file from the directory *above* the file's directory, so the crates are
/// named through the bundle's own directory name: the bundle can move, but keeps its name.
/// `xtask/verify-bundle` writes the same text (a test holds the two together).
/// Refuses a bundle directory name that could not be written into the cargo configuration
/// as it is (a TOML escape, a quote, `.`): letters, digits, `.`, `_` and `-`, starting with
/// a letter or digit.
pub fn check_bundle_name(name: &str) -> Result<()> {
    let plain = name.chars().next().is_some_and(|first| first.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        bail!("the bundle directory's name `{name}` must start with a letter or digit and hold only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

pub fn cargo_config(bundle_name: &str) -> String {
    format!(
        "# Written by `cargo xtask vendor`. Check the bundle, then build offline from it, with\n\
         #   sh xtask/verify-bundle {bundle_name} &&\n\
         #   cargo --config {bundle_name}/{CARGO_CONFIG} xtask build-runtime --offline --vendor {bundle_name}\n\
         # The path below is relative to the directory that holds the bundle.\n\
         [source.crates-io]\n\
         replace-with = \"eryx-vendored\"\n\n\
         [source.eryx-vendored]\n\
         directory = \"{bundle_name}/{CRATES_DIR}\"\n\n\
         [net]\n\
         offline = true\n"
    )
}

/// Whether a file of the bundle is left out of `SHA256SUMS` (checked another way).
fn unlisted(relative: &str) -> bool {
    relative == SUMS || relative == CARGO_CONFIG || relative == OUTPUT_MARKER || relative.starts_with(&format!("{WASI_SDK_DIR}/"))
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
}

impl Bundle {
    /// Opens the bundle at `root` after checking it against the anchor in this checkout's
    /// toolchains.lock: its `SHA256SUMS` is the pinned one, every file it lists has its
    /// sha256, no other file is there (but the generated cargo configuration, which must be
    /// exactly what it should be, and a WASI SDK tarball with a pinned digest), and it was
    /// made for this checkout's Cargo.lock files. The error names what differs.
    pub fn open(root: &Path, workspace: &Workspace) -> Result<Bundle> {
        let lock = Lock::load(&workspace.lock_path())?;
        let anchor = Anchor::of_lock(&lock)?;
        Bundle::open_anchored(root, &anchor, &digests_of(workspace, BUNDLE_LOCK_FILES)?)
    }

    fn open_anchored(root: &Path, anchor: &Anchor, made_for: &BTreeMap<String, String>) -> Result<Bundle> {
        let started = Instant::now();
        let root = std::path::absolute(root).with_context(|| format!("resolve {}", root.display()))?;
        let sums_path = root.join(SUMS);
        let sums = fs::read(&sums_path).with_context(|| {
            format!("read {} (is {} a bundle made by `cargo xtask vendor`?)", sums_path.display(), root.display())
        })?;
        let found = crate::inputs::cache::sha256_bytes(&sums);
        if found != anchor.sums_sha256 {
            bail!(
                "the vendor bundle {} is not the one this commit pins: its {SUMS} has sha256 {found}, \
                 toolchains.lock pins {} (a bundle of another commit, or one changed after it was made); \
                 make the bundle of this commit with `cargo xtask vendor`",
                root.display(),
                anchor.sums_sha256
            );
        }
        let listed = parse_sums(&String::from_utf8(sums).context("SHA256SUMS is not UTF-8")?)?;
        eprintln!("checking the vendor bundle {} ({} files)", root.display(), listed.len());
        verify_files(&root, &listed)?;
        check_cargo_config(&root)?;
        check_wasi_sdk(&root, anchor)?;
        let manifest_path = root.join(MANIFEST);
        let manifest: BundleManifest = serde_json::from_slice(&fs::read(&manifest_path)?)
            .with_context(|| format!("parse {}", manifest_path.display()))?;
        if manifest.schema != SCHEMA {
            bail!("{} has schema {}, this xtask reads {SCHEMA}; run `cargo xtask vendor` again", manifest_path.display(), manifest.schema);
        }
        for (name, digest) in made_for {
            if manifest.made_for.get(name) != Some(digest) {
                bail!(
                    "the vendor bundle {} was made for another {name} (this checkout's sha256 is {digest}); \
                     run `cargo xtask vendor` at this commit",
                    root.display()
                );
            }
        }
        eprintln!("vendor bundle verified in {:.1}s", started.elapsed().as_secs_f64());
        Ok(Bundle { root })
    }

    /// A file of the bundle (already verified by [`Bundle::open`]).
    pub fn file(&self, relative: &str) -> Result<PathBuf> {
        let path = self.root.join(relative);
        if !path.is_file() {
            bail!("the vendor bundle {} has no {relative}; run `cargo xtask vendor` again", self.root.display());
        }
        Ok(path)
    }

    pub fn cargo_config(&self) -> PathBuf {
        self.root.join(CARGO_CONFIG)
    }

    pub fn crates_dir(&self) -> PathBuf {
        self.root.join(CRATES_DIR)
    }
}

/// The entries of a `SHA256SUMS` text (`<sha256>  <path>` per line), by path.
fn parse_sums(text: &str) -> Result<BTreeMap<String, String>> {
    let mut listed = BTreeMap::new();
    for line in text.lines() {
        let (digest, path) = line.split_once("  ").with_context(|| format!("{SUMS}: unreadable line `{line}`"))?;
        listed.insert(path.to_owned(), digest.to_owned());
    }
    Ok(listed)
}

/// Every file under `root` but the vendor manifest, by its `/`-separated relative path,
/// sorted. Anything that is neither a file nor a directory (a symlink) is refused: a bundle
/// holds bytes, not pointers elsewhere.
pub fn list_files(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, relative: &str, files: &mut Vec<String>) -> Result<()> {
        let directory = if relative.is_empty() { root.to_path_buf() } else { root.join(relative) };
        for entry in fs::read_dir(&directory).with_context(|| format!("read {}", directory.display()))? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|name| anyhow::anyhow!("{name:?} is not UTF-8"))?;
            if name.chars().any(|c| !(' '..='~').contains(&c) || c == '\\') {
                bail!("{:?}: a file name that is not printable ASCII, or holds a backslash, is refused", directory.join(&name));
            }
            let path = if relative.is_empty() { name } else { format!("{relative}/{name}") };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &path, files)?;
            } else if kind.is_file() {
                files.push(path);
            } else {
                bail!("{} holds `{path}`, which is neither a file nor a directory; refusing it", root.display());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, "", &mut files)?;
    files.sort();
    Ok(files)
}

fn verify_files(root: &Path, listed: &BTreeMap<String, String>) -> Result<()> {
    let present = list_files(root)?;
    let mut problems = Vec::new();
    for relative in present.iter().filter(|relative| !unlisted(relative)) {
        match listed.get(relative) {
            None => problems.push(format!("`{relative}` is in the bundle but not in its {SUMS}")),
            Some(expected) => {
                let digest = sha256_file(&root.join(relative))?;
                if &digest != expected {
                    problems.push(format!("`{relative}` has sha256 {digest}, {SUMS} says {expected}"));
                }
            }
        }
    }
    for missing in listed.keys().filter(|relative| present.binary_search(relative).is_err()) {
        problems.push(format!("`{missing}` is listed in {SUMS} but missing"));
    }
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(NAMED_AT_MOST);
        problems.truncate(NAMED_AT_MOST);
        bail!(
            "the vendor bundle {} was changed after it was made, refusing it:\n  {}{}\n(make it again with `cargo xtask vendor`)",
            root.display(),
            problems.join("\n  "),
            if more > 0 { format!("\n  … and {more} more") } else { String::new() }
        );
    }
    Ok(())
}

/// The cargo configuration must be exactly the one generated for the bundle's name: cargo
/// reads it before any of the xtask's checks run (it could name a `rustc-wrapper`, `[env]`).
fn check_cargo_config(root: &Path) -> Result<()> {
    let name = root.file_name().and_then(|name| name.to_str()).context("the bundle directory needs a UTF-8 name")?;
    check_bundle_name(name)?;
    let found = fs::read(root.join(CARGO_CONFIG)).with_context(|| format!("read {}", root.join(CARGO_CONFIG).display()))?;
    if found != cargo_config(name).as_bytes() {
        bail!(
            "the vendor bundle's {CARGO_CONFIG} is not the one `cargo xtask vendor` writes for a bundle named `{name}`; \
             refusing it (cargo runs what it names); make the bundle again with `cargo xtask vendor`"
        );
    }
    Ok(())
}

/// A WASI SDK tarball in the bundle must be one toolchains.lock pins.
fn check_wasi_sdk(root: &Path, anchor: &Anchor) -> Result<()> {
    let directory = root.join(WASI_SDK_DIR);
    if !directory.exists() {
        return Ok(());
    }
    for relative in list_files(&directory)? {
        let digest = sha256_file(&directory.join(&relative))?;
        if !anchor.wasi_sdk_sha256.contains(&digest) {
            bail!("the vendor bundle's `{WASI_SDK_DIR}/{relative}` has sha256 {digest}, which toolchains.lock does not pin; refusing it");
        }
    }
    Ok(())
}

/// Writes the manifest of the bundle at `root`.
pub fn write_manifest(root: &Path, workspace: &Workspace) -> Result<()> {
    let manifest = BundleManifest { schema: SCHEMA, made_for: digests_of(workspace, BUNDLE_LOCK_FILES)? };
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    write_atomic(&root.join(MANIFEST), text.as_bytes())
}

/// What [`write_sums`] listed.
pub struct Sums {
    /// The sha256 of `SHA256SUMS`: the bundle's anchor.
    pub sha256: String,
    pub files: usize,
    pub bytes: u64,
}

/// Writes `SHA256SUMS` of the bundle at `root` (every file but those checked another way),
/// sorted by path, and answers its digest.
pub fn write_sums(root: &Path) -> Result<Sums> {
    let mut text = String::new();
    let (mut files, mut bytes) = (0, 0);
    for relative in list_files(root)?.into_iter().filter(|relative| !unlisted(relative)) {
        let path = root.join(&relative);
        text.push_str(&format!("{}  {relative}\n", sha256_file(&path)?));
        files += 1;
        bytes += fs::metadata(&path)?.len();
    }
    write_atomic(&root.join(SUMS), text.as_bytes())?;
    Ok(Sums { sha256: crate::inputs::cache::sha256_bytes(text.as_bytes()), files, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
        Workspace { target_dir: root.join("target"), root }
    }

    fn made_for() -> BTreeMap<String, String> {
        digests_of(&workspace(), BUNDLE_LOCK_FILES).unwrap()
    }

    /// A small bundle named `bundle` and the anchor that pins it.
    fn small_bundle(directory: &Path) -> (PathBuf, Anchor) {
        let root = directory.join("bundle");
        fs::create_dir_all(root.join("debs")).unwrap();
        fs::create_dir_all(root.join("crates/itoa-1.0.0/src")).unwrap();
        fs::write(root.join("debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb"), b"a package").unwrap();
        fs::write(root.join("crates/itoa-1.0.0/src/lib.rs"), b"pub fn f() {}").unwrap();
        fs::write(root.join("crates/itoa-1.0.0/.cargo-checksum.json"), b"{\"files\":{}}").unwrap();
        fs::write(root.join(CARGO_CONFIG), cargo_config("bundle")).unwrap();
        write_manifest(&root, &workspace()).unwrap();
        let sums = write_sums(&root).unwrap();
        (root, Anchor { sums_sha256: sums.sha256, wasi_sdk_sha256: vec![crate::inputs::cache::sha256_bytes(b"the sdk")] })
    }

    fn refusal(root: &Path, anchor: &Anchor) -> String {
        format!("{:#}", Bundle::open_anchored(root, anchor, &made_for()).unwrap_err())
    }

    #[test]
    fn an_intact_bundle_opens() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        Bundle::open_anchored(&root, &anchor, &made_for()).unwrap();
    }

    #[test]
    fn a_file_changed_with_its_crate_checksum_is_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        // What cargo's own check would accept: the source and its entry changed together.
        fs::write(root.join("crates/itoa-1.0.0/src/lib.rs"), b"pub fn f() { evil() }").unwrap();
        fs::write(root.join("crates/itoa-1.0.0/.cargo-checksum.json"), b"{\"files\":{\"src/lib.rs\":\"00\"}}").unwrap();
        let error = refusal(&root, &anchor);
        assert!(error.contains("`crates/itoa-1.0.0/src/lib.rs` has sha256"), "{error}");
        assert!(error.contains("`crates/itoa-1.0.0/.cargo-checksum.json` has sha256"), "{error}");
    }

    #[test]
    fn a_rewritten_file_list_is_refused_by_the_anchor() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        fs::write(root.join("crates/itoa-1.0.0/src/lib.rs"), b"pub fn f() { evil() }").unwrap();
        write_sums(&root).unwrap();
        let error = refusal(&root, &anchor);
        assert!(error.contains("is not the one this commit pins: its SHA256SUMS has sha256"), "{error}");
    }

    #[test]
    fn an_added_or_removed_file_is_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        fs::write(root.join("crates/itoa-1.0.0/build.rs"), b"fn main() {}").unwrap();
        let error = refusal(&root, &anchor);
        assert!(error.contains("`crates/itoa-1.0.0/build.rs` is in the bundle but not in its SHA256SUMS"), "{error}");
        fs::remove_file(root.join("crates/itoa-1.0.0/build.rs")).unwrap();
        fs::remove_file(root.join("crates/itoa-1.0.0/src/lib.rs")).unwrap();
        let error = refusal(&root, &anchor);
        assert!(error.contains("`crates/itoa-1.0.0/src/lib.rs` is listed in SHA256SUMS but missing"), "{error}");
    }

    #[test]
    fn a_cargo_config_with_a_wrapper_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        let mut text = cargo_config("bundle");
        text.push_str("\n[build]\nrustc-wrapper = \"/tmp/evil\"\n");
        fs::write(root.join(CARGO_CONFIG), text).unwrap();
        let error = refusal(&root, &anchor);
        assert!(error.contains("cargo-config.toml is not the one `cargo xtask vendor` writes"), "{error}");
    }

    #[test]
    fn a_symlink_or_an_unpinned_sdk_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        fs::create_dir_all(root.join(WASI_SDK_DIR)).unwrap();
        fs::write(root.join(WASI_SDK_DIR).join("wasi-sdk.tar.gz"), b"the sdk").unwrap();
        Bundle::open_anchored(&root, &anchor, &made_for()).expect("a pinned SDK is fine");
        fs::write(root.join(WASI_SDK_DIR).join("wasi-sdk.tar.gz"), b"another sdk").unwrap();
        assert!(refusal(&root, &anchor).contains("which toolchains.lock does not pin"));
        fs::remove_dir_all(root.join(WASI_SDK_DIR)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("crates/itoa-1.0.0/src/link.rs")).unwrap();
        assert!(refusal(&root, &anchor).contains("neither a file nor a directory"));
    }

    #[test]
    fn a_bundle_for_another_lock_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        let mut other = made_for();
        other.insert("crates/Cargo.lock".into(), "0".repeat(64));
        let error = format!("{:#}", Bundle::open_anchored(&root, &anchor, &other).unwrap_err());
        assert!(error.contains("made for another crates/Cargo.lock"), "{error}");
    }

    /// `xtask/verify-bundle`: the shell script a packager runs before cargo compiles anything
    /// of the bundle, on the same anchor (a lock file given as its second argument).
    #[test]
    fn the_shell_check_agrees_with_the_xtask() {
        let directory = tempfile::tempdir().unwrap();
        let (root, anchor) = small_bundle(directory.path());
        let lock = directory.path().join("toolchains.lock");
        let wasi_sdk = &anchor.wasi_sdk_sha256[0];
        fs::write(
            &lock,
            format!("[wasi-sdk.platforms.x86_64-linux]\nsha256 = \"{wasi_sdk}\"\n\n[vendor-bundle]\nsums-sha256 = \"{}\"\n", anchor.sums_sha256),
        )
        .unwrap();
        let script = workspace().path("xtask/verify-bundle");
        let check = || {
            let output = std::process::Command::new("sh").arg(&script).arg(&root).arg(&lock).output().unwrap();
            (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
        };
        let (ok, stderr) = check();
        assert!(ok, "an intact bundle passes: {stderr}");

        fs::write(root.join("crates/itoa-1.0.0/src/lib.rs"), b"pub fn f() { evil() }").unwrap();
        let (ok, stderr) = check();
        assert!(!ok && stderr.contains("crates/itoa-1.0.0/src/lib.rs"), "{stderr}");
        fs::write(root.join("crates/itoa-1.0.0/src/lib.rs"), b"pub fn f() {}").unwrap();

        fs::write(root.join("crates/itoa-1.0.0/extra.rs"), b"").unwrap();
        let (ok, stderr) = check();
        assert!(!ok && stderr.contains("crates/itoa-1.0.0/extra.rs"), "{stderr}");
        fs::remove_file(root.join("crates/itoa-1.0.0/extra.rs")).unwrap();

        fs::remove_file(root.join("debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb")).unwrap();
        let (ok, stderr) = check();
        assert!(!ok && stderr.contains("debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb"), "{stderr}");
        fs::write(root.join("debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb"), b"a package").unwrap();

        let mut config = cargo_config("bundle");
        config.push_str("[build]\nrustc-wrapper = \"/tmp/evil\"\n");
        fs::write(root.join(CARGO_CONFIG), config).unwrap();
        let (ok, stderr) = check();
        assert!(!ok && stderr.contains("cargo-config.toml"), "{stderr}");
        fs::write(root.join(CARGO_CONFIG), cargo_config("bundle")).unwrap();

        fs::create_dir_all(root.join(WASI_SDK_DIR)).unwrap();
        fs::write(root.join(WASI_SDK_DIR).join("sdk.tar.gz"), b"the sdk").unwrap();
        assert!(check().0, "{}", check().1);
        fs::write(root.join(WASI_SDK_DIR).join("sdk.tar.gz"), b"not the sdk").unwrap();
        let (ok, stderr) = check();
        assert!(!ok && stderr.contains("wasi-sdk/sdk.tar.gz"), "{stderr}");
        fs::remove_dir_all(root.join(WASI_SDK_DIR)).unwrap();

        fs::write(root.join(SUMS), "0000  debs/x\n").unwrap();
        let (ok, stderr) = check();
        assert!(!ok && stderr.contains("SHA256SUMS"), "{stderr}");
    }
}
