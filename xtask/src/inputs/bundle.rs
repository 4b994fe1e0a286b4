//! The vendor bundle: one directory holding every input the build takes from outside, so a
//! build can run with no network at all. `cargo xtask vendor` writes it; `--vendor DIR`
//! reads it, after checking every file against the bundle's manifest.
//!
//! ```text
//! DIR/cargo-config.toml      source replacement for every cargo build, `net.offline`
//! DIR/vendor-manifest.json   every other file's sha256 and size, and what the bundle is for
//! DIR/crates/                `cargo vendor --versioned-dirs`: host, guests, Rust's std
//! DIR/wheels/                the pinned CPython wheel
//! DIR/debs/                  the pinned Debian packages (`[[debian-debs]]`)
//! DIR/sources/               the pinned `.crate`s the build patches (`[[patched-crates]]`)
//! DIR/wasi-sdk/              the pinned WASI SDK tarball, when it was cached
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::inputs::cache::sha256_file;
use crate::workspace::Workspace;

pub const CARGO_CONFIG: &str = "cargo-config.toml";
pub const MANIFEST: &str = "vendor-manifest.json";
pub const CRATES_DIR: &str = "crates";
pub const WHEELS_DIR: &str = "wheels";
pub const DEBS_DIR: &str = "debs";
pub const SOURCES_DIR: &str = "sources";
pub const WASI_SDK_DIR: &str = "wasi-sdk";
const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub schema: u32,
    /// The sha256 of the inputs the bundle was made for: `toolchains.lock` and both
    /// `Cargo.lock`s, by their path in the repository.
    pub made_for: BTreeMap<String, String>,
    /// Every file of the bundle but the manifest itself, by its path in the bundle.
    pub files: BTreeMap<String, FileEntry>,
}

/// The files whose digests tie a bundle to a commit.
pub const PINNING_FILES: &[&str] = &["toolchains.lock", "Cargo.lock", "crates/Cargo.lock"];

pub fn made_for(workspace: &Workspace) -> Result<BTreeMap<String, String>> {
    PINNING_FILES
        .iter()
        .map(|name| Ok((name.to_string(), sha256_file(&workspace.path(name))?)))
        .collect()
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
}

impl Bundle {
    /// Opens the bundle at `root`: it must have been made for this checkout's lock files,
    /// and every file must be exactly what its manifest says (no file changed, missing or
    /// added). The error names the first file that differs.
    pub fn open(root: &Path, workspace: &Workspace) -> Result<Bundle> {
        let started = Instant::now();
        let root = std::path::absolute(root).with_context(|| format!("resolve {}", root.display()))?;
        let manifest_path = root.join(MANIFEST);
        let text = fs::read_to_string(&manifest_path).with_context(|| {
            format!("read {} (is {} a bundle made by `cargo xtask vendor`?)", manifest_path.display(), root.display())
        })?;
        let manifest: BundleManifest =
            serde_json::from_str(&text).with_context(|| format!("parse {}", manifest_path.display()))?;
        if manifest.schema != SCHEMA {
            bail!("{} has schema {}, this xtask reads {SCHEMA}; run `cargo xtask vendor` again", manifest_path.display(), manifest.schema);
        }
        for (name, digest) in made_for(workspace)? {
            if manifest.made_for.get(&name) != Some(&digest) {
                bail!(
                    "the vendor bundle {} was made for another {name} (this checkout's sha256 is {digest}); \
                     run `cargo xtask vendor` at this commit",
                    root.display()
                );
            }
        }
        eprintln!("checking the vendor bundle {} ({} files)", root.display(), manifest.files.len());
        verify_files(&root, &manifest.files)?;
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

/// Every file under `root` but the manifest, by its `/`-separated relative path.
pub fn list_files(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, relative: &str, files: &mut Vec<String>) -> Result<()> {
        let directory = if relative.is_empty() { root.to_path_buf() } else { root.join(relative) };
        for entry in fs::read_dir(&directory).with_context(|| format!("read {}", directory.display()))? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|name| anyhow::anyhow!("{name:?} is not UTF-8"))?;
            let path = if relative.is_empty() { name } else { format!("{relative}/{name}") };
            if entry.file_type()?.is_dir() {
                walk(root, &path, files)?;
            } else if path != MANIFEST {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, "", &mut files)?;
    files.sort();
    Ok(files)
}

/// The manifest entries of every file under `root`.
pub fn describe_files(root: &Path) -> Result<BTreeMap<String, FileEntry>> {
    list_files(root)?
        .into_iter()
        .map(|relative| {
            let path = root.join(&relative);
            let size = fs::metadata(&path)?.len();
            Ok((relative, FileEntry { sha256: sha256_file(&path)?, size }))
        })
        .collect()
}

fn verify_files(root: &Path, expected: &BTreeMap<String, FileEntry>) -> Result<()> {
    let present = list_files(root)?;
    for relative in &present {
        let Some(entry) = expected.get(relative) else {
            bail!(
                "the vendor bundle {} holds `{relative}`, which its manifest does not list; \
                 refusing a bundle that was changed after it was made (run `cargo xtask vendor` again)",
                root.display()
            );
        };
        let path = root.join(relative);
        let size = fs::metadata(&path)?.len();
        let digest = if size == entry.size { sha256_file(&path)? } else { String::new() };
        if digest != entry.sha256 {
            bail!(
                "the vendor bundle file `{relative}` is not what the bundle's manifest says \
                 (size {size}, manifest {}; sha256 {}, manifest {}): refusing a damaged or tampered \
                 bundle; run `cargo xtask vendor` again",
                entry.size,
                if digest.is_empty() { "not computed" } else { &digest },
                entry.sha256
            );
        }
    }
    if let Some(missing) = expected.keys().find(|relative| present.binary_search(relative).is_err()) {
        bail!("the vendor bundle {} lacks `{missing}`, which its manifest lists; run `cargo xtask vendor` again", root.display());
    }
    Ok(())
}

/// Writes the manifest of the bundle at `root`.
pub fn write_manifest(root: &Path, workspace: &Workspace) -> Result<BundleManifest> {
    let manifest = BundleManifest { schema: SCHEMA, made_for: made_for(workspace)?, files: describe_files(root)? };
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    crate::inputs::cache::write_atomic(&root.join(MANIFEST), text.as_bytes())?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
        Workspace { target_dir: root.join("target"), root }
    }

    fn small_bundle(directory: &Path) -> PathBuf {
        let root = directory.join("bundle");
        fs::create_dir_all(root.join("debs")).unwrap();
        fs::create_dir_all(root.join("crates/itoa-1.0.0")).unwrap();
        fs::write(root.join("debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb"), b"a package").unwrap();
        fs::write(root.join("crates/itoa-1.0.0/lib.rs"), b"pub fn f() {}").unwrap();
        fs::write(root.join(CARGO_CONFIG), b"[net]\noffline = true\n").unwrap();
        write_manifest(&root, &workspace()).unwrap();
        root
    }

    #[test]
    fn an_intact_bundle_opens() {
        let directory = tempfile::tempdir().unwrap();
        let root = small_bundle(directory.path());
        Bundle::open(&root, &workspace()).unwrap();
    }

    #[test]
    fn a_tampered_file_is_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let root = small_bundle(directory.path());
        // Same size, other bytes: only the digest can tell.
        fs::write(root.join("debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb"), b"a pAckage").unwrap();
        let error = format!("{:#}", Bundle::open(&root, &workspace()).unwrap_err());
        assert!(error.contains("`debs/clang-19_1%3a19.1.7-3~deb12u1_amd64.deb` is not what"), "{error}");
    }

    #[test]
    fn an_added_or_removed_file_is_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let root = small_bundle(directory.path());
        fs::write(root.join("crates/itoa-1.0.0/build.rs"), b"fn main() {}").unwrap();
        let error = format!("{:#}", Bundle::open(&root, &workspace()).unwrap_err());
        assert!(error.contains("`crates/itoa-1.0.0/build.rs`, which its manifest does not list"), "{error}");
        fs::remove_file(root.join("crates/itoa-1.0.0/build.rs")).unwrap();
        fs::remove_file(root.join("crates/itoa-1.0.0/lib.rs")).unwrap();
        let error = format!("{:#}", Bundle::open(&root, &workspace()).unwrap_err());
        assert!(error.contains("lacks `crates/itoa-1.0.0/lib.rs`"), "{error}");
    }

    #[test]
    fn a_bundle_for_another_lock_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let root = small_bundle(directory.path());
        let path = root.join(MANIFEST);
        let mut manifest: BundleManifest = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        manifest.made_for.insert("crates/Cargo.lock".into(), "0".repeat(64));
        fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let error = format!("{:#}", Bundle::open(&root, &workspace()).unwrap_err());
        assert!(error.contains("made for another crates/Cargo.lock"), "{error}");
    }
}
