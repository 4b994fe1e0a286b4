//! Where things are: the workspace root (from `cargo metadata`), the target directory and
//! `target/eryx/`, where every artifact the build makes lands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Workspace {
    pub root: PathBuf,
    /// Cargo's target directory for the host workspace (honours CARGO_TARGET_DIR).
    pub target_dir: PathBuf,
}

impl Workspace {
    pub fn discover() -> Result<Workspace> {
        let metadata = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .exec()
            .context("run `cargo metadata` to find the workspace")?;
        Ok(Workspace {
            root: metadata.workspace_root.into_std_path_buf(),
            target_dir: metadata.target_directory.into_std_path_buf(),
        })
    }

    /// `target/eryx/` in the workspace: the artifacts and `manifest.json`.
    pub fn artifacts_dir(&self) -> PathBuf {
        self.root.join("target").join("eryx")
    }

    /// The guests' own cargo target directory (they build for another target with another
    /// rustc, so they never share the host's), one per checkout: the guests' rustflags name
    /// the checkout's path (to remap it), so two checkouts sharing one directory (a clone
    /// beside the working copy, both with CARGO_TARGET_DIR set) would each rebuild the
    /// RustPython guest from scratch whenever the other one had built last.
    pub fn guest_target_dir(&self) -> PathBuf {
        self.target_dir.join("guests").join(checkout_key(&self.root))
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join("toolchains.lock")
    }

    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }
}

/// A short, stable name for the checkout at `root`: the start of its path's SHA-256.
fn checkout_key(root: &Path) -> String {
    use sha2::{Digest, Sha256};
    eryx_interface::files::hex(&Sha256::digest(root.as_os_str().as_encoded_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_checkouts_build_their_guests_apart_and_one_checkout_always_in_the_same_place() {
        let at = |root: &str| Workspace { root: root.into(), target_dir: "/shared/target".into() }.guest_target_dir();
        assert_ne!(at("/work/main"), at("/tmp/clone"));
        assert_eq!(at("/work/main"), at("/work/main"));
        assert!(at("/work/main").starts_with("/shared/target/guests"));
    }
}

/// The cargo that runs this xtask (cargo sets `CARGO` for `cargo run`), for nested host builds.
pub fn host_cargo() -> std::process::Command {
    std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Cargo's home: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}
