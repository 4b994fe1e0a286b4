//! A pinned build stamp for the guest builds.
//!
//! rustpython-vm's build script writes `git rev-parse --short HEAD`, `git log -1
//! --format=%ct` and the local time zone into `sys.version`, and falls back to the current
//! time when git fails (it runs git in the crate's registry directory, which is no
//! repository, or worse, inside whatever repository encloses the cargo home). Either way two
//! builds would differ. So the guest cargo build runs with `GIT_DIR` set to a tiny bare
//! repository holding one commit made from fixed inputs (empty tree, fixed author, committer
//! and dates), with `TZ=UTC` and no system or user git configuration: every machine sees the
//! same commit and the same date, and the guest's bytes do not depend on when or where it
//! was built.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The date every guest build claims: 2026-01-01T00:00:00Z.
pub const SOURCE_DATE_EPOCH: i64 = 1_767_225_600;
const BRANCH: &str = "main";

pub struct Stamp {
    pub git_dir: PathBuf,
    pub commit: String,
}

impl Stamp {
    /// The environment the guest cargo build runs with.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = isolation_env();
        env.push(("GIT_DIR", self.git_dir.clone().into_os_string()));
        env.push(("TZ", "UTC".into()));
        env.push(("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string().into()));
        env
    }
}

/// Git without the machine's or the user's configuration (a user's `commit.gpgSign` or
/// `core.abbrev` would otherwise change what the commands below do).
fn isolation_env() -> Vec<(&'static str, OsString)> {
    vec![("GIT_CONFIG_NOSYSTEM", "1".into()), ("GIT_CONFIG_GLOBAL", "/dev/null".into())]
}

fn git(git_dir: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(git_dir).args(args);
    command.envs(isolation_env());
    for role in ["AUTHOR", "COMMITTER"] {
        command
            .env(format!("GIT_{role}_NAME"), "eryx build")
            .env(format!("GIT_{role}_EMAIL"), "build@eryx.invalid")
            .env(format!("GIT_{role}_DATE"), format!("@{SOURCE_DATE_EPOCH} +0000"));
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .context("run git, which pins the guests' build stamp; install git (`apt-get install git`)")?;
    if !output.status.success() {
        bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The stamp repository at `directory`, created when missing or not as expected.
pub fn ensure(directory: &Path) -> Result<Stamp> {
    if let Ok(commit) = git(directory, &["rev-parse", "HEAD"]) {
        let date = git(directory, &["log", "-1", "--format=%ct"])?;
        if date == SOURCE_DATE_EPOCH.to_string() {
            return Ok(Stamp { git_dir: directory.to_owned(), commit });
        }
    }
    // Build it under a temporary name and move it into place, so a half-made repository is
    // never the one a build uses.
    let temporary = crate::inputs::cache::temporary_sibling(directory);
    let _ = std::fs::remove_dir_all(&temporary);
    // `git --git-dir DIR init` needs DIR's parent; in a fresh checkout nothing of it exists.
    std::fs::create_dir_all(&temporary)?;
    git(&temporary, &["init", "--quiet", "--bare", "--initial-branch", BRANCH])?;
    // `mktree` with no input writes the empty tree.
    let tree = git(&temporary, &["mktree"])?;
    let commit = git(&temporary, &["commit-tree", &tree, "-m", "eryx: the pinned build stamp of the guests"])?;
    git(&temporary, &["update-ref", &format!("refs/heads/{BRANCH}"), &commit])?;
    let _ = std::fs::remove_dir_all(directory);
    std::fs::rename(&temporary, directory)
        .with_context(|| format!("move {} into place", directory.display()))?;
    Ok(Stamp { git_dir: directory.to_owned(), commit })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What rustpython-vm's build script asks git, answered through the stamp's env.
    fn ask(stamp: &Stamp, args: &[&str]) -> String {
        let output = Command::new("git").args(args).envs(stamp.env()).current_dir("/").output().unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn the_stamp_is_the_same_on_every_machine() {
        let first_root = tempfile::tempdir().unwrap();
        let second_root = tempfile::tempdir().unwrap();
        let first = ensure(&first_root.path().join("stamp")).unwrap();
        // A fresh checkout has none of the stamp's parent directories yet.
        let second = ensure(&second_root.path().join("target/eryx/build/stamp")).unwrap();
        assert_eq!(first.commit, second.commit);
        assert_eq!(ask(&first, &["log", "-1", "--format=%ct"]), SOURCE_DATE_EPOCH.to_string());
        assert_eq!(ask(&first, &["rev-parse", "--short", "HEAD"]), first.commit[..7]);
        assert_eq!(ask(&first, &["name-rev", "--name-only", "HEAD"]), BRANCH);
        // An existing stamp is reused, and a damaged one is made again.
        assert_eq!(ensure(&first_root.path().join("stamp")).unwrap().commit, first.commit);
        std::fs::remove_dir_all(first_root.path().join("stamp/refs")).unwrap();
        assert_eq!(ensure(&first_root.path().join("stamp")).unwrap().commit, first.commit);
    }
}
