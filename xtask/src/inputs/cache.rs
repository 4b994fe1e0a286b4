//! The content-addressed cache of verified inputs: `<root>/sha256/<digest>` holds a file
//! whose sha256 is `<digest>`. Entries are written to a temporary name and renamed into
//! place; a lookup re-hashes the entry, and a mismatch is reported and removed, never used.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use eryx_interface::files::{abandoned_temporaries, hex, sha256_bytes, sha256_file, temporary_sibling, write_atomic};

pub struct Cache {
    pub root: PathBuf,
}

/// The marker file inside every directory a command of the xtask writes whole with
/// [`replace_output_dir`] (`dist --out`, `vendor --out`): it names the command, so a later
/// run replaces only a directory that command made. It is not part of what the directory
/// ships (bundles and checksums leave it out).
pub const OUTPUT_MARKER: &str = ".eryx-output";

/// [`replace_dir_atomically`] for a directory the user names (`--out DIR`): refuses a `DIR`
/// that exists, is not empty and is not a previous output of `command` (no marker inside
/// naming it), so nothing the xtask did not make is ever removed.
pub fn replace_output_dir(out: &Path, command: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let marker = format!("written by `cargo xtask {command}`; the next run replaces this directory whole\n");
    if out.exists() {
        if !out.is_dir() {
            bail!("--out {}: it exists and is not a directory; name a new or empty directory", out.display());
        }
        let empty = fs::read_dir(out).with_context(|| format!("read {}", out.display()))?.next().is_none();
        let ours = fs::read_to_string(out.join(OUTPUT_MARKER)).is_ok_and(|text| text == marker);
        if !empty && !ours {
            bail!(
                "--out {}: the directory is not empty and is not an earlier output of `cargo xtask {command}` \
                 (it has no {OUTPUT_MARKER} naming it), so it is left as it is; name a new or empty directory, \
                 or remove this one yourself",
                out.display()
            );
        }
    }
    replace_dir_atomically(out, |staging| {
        fill(staging)?;
        fs::write(staging.join(OUTPUT_MARKER), &marker).with_context(|| format!("write the {OUTPUT_MARKER} marker"))
    })
}

/// Builds the directory `out` by filling a temporary sibling with `fill` and renaming it
/// into place: on failure nothing is left, and a reader never sees a half-made `out`. What an
/// interrupted build staged for `out` (its process gone) is removed first.
pub fn replace_dir_atomically(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    for abandoned in abandoned_temporaries(out) {
        let removed = if abandoned.is_dir() { fs::remove_dir_all(&abandoned) } else { fs::remove_file(&abandoned) };
        removed.with_context(|| format!("remove {}, which an interrupted build left", abandoned.display()))?;
    }
    let staging = temporary_sibling(out);
    fs::create_dir_all(&staging).with_context(|| format!("create {}", staging.display()))?;
    if let Err(error) = fill(&staging) {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("remove the old {}", out.display()))?;
    }
    fs::rename(&staging, out).with_context(|| format!("move {} into place", out.display()))
}


impl Cache {
    /// `--cache-dir`, else `$ERYX_CACHE_DIR`, else `$XDG_CACHE_HOME/eryx`, else `~/.cache/eryx`.
    pub fn open(flag: Option<PathBuf>) -> Result<Cache> {
        let root = match flag.or_else(|| std::env::var_os("ERYX_CACHE_DIR").map(PathBuf::from)) {
            Some(root) => root,
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(cache_home) if !cache_home.is_empty() => PathBuf::from(cache_home).join("eryx"),
                _ => {
                    let home = std::env::var_os("HOME")
                        .context("no cache directory: set ERYX_CACHE_DIR or pass --cache-dir")?;
                    PathBuf::from(home).join(".cache").join("eryx")
                }
            },
        };
        Ok(Cache { root })
    }

    #[cfg(test)]
    pub fn at(root: &Path) -> Cache {
        Cache { root: root.to_path_buf() }
    }

    pub fn entry_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// A scratch directory for downloads in progress (same file system as the entries).
    pub fn partial_dir(&self) -> Result<PathBuf> {
        let directory = self.root.join("partial");
        fs::create_dir_all(&directory).with_context(|| format!("create {}", directory.display()))?;
        Ok(directory)
    }

    /// The verified entry for `sha256`, if the cache holds one. A corrupt entry is removed
    /// and reported on stderr; the caller then fetches it again.
    pub fn get(&self, sha256: &str) -> Result<Option<PathBuf>> {
        let path = self.entry_path(sha256);
        if !path.exists() {
            return Ok(None);
        }
        let actual = sha256_file(&path)?;
        if actual == sha256 {
            return Ok(Some(path));
        }
        fs::remove_file(&path).with_context(|| format!("remove corrupt {}", path.display()))?;
        eprintln!(
            "warning: cache entry {} was corrupt (sha256 {actual}); removed it, fetching it again",
            path.display()
        );
        Ok(None)
    }

    /// Moves a file into the cache after checking its digest. On a mismatch the file is
    /// removed and nothing enters the cache.
    pub fn insert_file(&self, file: &Path, expected: &str, what: &str) -> Result<PathBuf> {
        let actual = sha256_file(file)?;
        if actual != expected {
            let _ = fs::remove_file(file);
            bail!(
                "{what} sha256 mismatch: expected {expected}, got {actual}; the download was \
                 removed, run `cargo xtask fetch` again (if it persists, the pin or the source changed)"
            );
        }
        let path = self.entry_path(expected);
        fs::create_dir_all(path.parent().unwrap())?;
        fs::rename(file, &path).with_context(|| format!("move {} into the cache", file.display()))?;
        Ok(path)
    }

    /// Copies a file into the cache after checking its digest; the original stays.
    pub fn insert_copy(&self, file: &Path, expected: &str, what: &str) -> Result<PathBuf> {
        let copy = self.partial_dir()?.join(format!("copy-{expected}-{}", std::process::id()));
        fs::copy(file, &copy).with_context(|| format!("copy {} into the cache", file.display()))?;
        self.insert_file(&copy, expected, what)
            .with_context(|| format!("{} is not the pinned {what}", file.display()))
    }

    /// Stores bytes whose digest the caller already checked against a pin.
    pub fn insert_bytes(&self, bytes: &[u8], expected: &str, what: &str) -> Result<PathBuf> {
        let actual = sha256_bytes(bytes);
        if actual != expected {
            bail!("{what} sha256 mismatch: expected {expected}, got {actual}");
        }
        let path = self.entry_path(expected);
        write_atomic(&path, bytes)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_entry_is_removed_not_used() {
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let digest = sha256_bytes(b"hello");
        cache.insert_bytes(b"hello", &digest, "greeting").unwrap();
        assert!(cache.get(&digest).unwrap().is_some());
        fs::write(cache.entry_path(&digest), b"HELLO").unwrap();
        assert_eq!(cache.get(&digest).unwrap(), None);
        assert!(!cache.entry_path(&digest).exists());
    }

    #[test]
    fn a_file_with_the_wrong_digest_never_enters() {
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let file = directory.path().join("download");
        fs::write(&file, b"payload").unwrap();
        let wrong = sha256_bytes(b"other");
        let error = cache.insert_file(&file, &wrong, "thing").unwrap_err().to_string();
        assert!(error.contains("thing sha256 mismatch"), "{error}");
        assert!(!file.exists());
        assert!(!cache.entry_path(&wrong).exists());
    }

    #[test]
    fn what_an_interrupted_build_staged_is_removed_by_the_next() {
        let directory = tempfile::tempdir().unwrap();
        let out = directory.path().join("prefix");
        // A killed build's half-filled staging directory (no process has that id).
        let abandoned = directory.path().join(".prefix.tmp-4294967295-3-0badcafe");
        fs::create_dir_all(abandoned.join("lib")).unwrap();
        fs::write(abandoned.join("lib/libz.a"), b"half").unwrap();
        // A link planted under such a name, to a directory elsewhere: the link goes, never
        // what it points to.
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("keep.txt"), b"mine").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), directory.path().join(".prefix.tmp-4294967295-4-0badcafe")).unwrap();
        replace_dir_atomically(&out, |staging| Ok(fs::write(staging.join("done"), b"")?)).unwrap();
        let mut names: Vec<String> = fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["prefix"]);
        assert!(out.join("done").exists());
        assert_eq!(fs::read(elsewhere.path().join("keep.txt")).unwrap(), b"mine");
    }

    #[test]
    fn an_output_directory_replaces_only_what_the_command_made() {
        let directory = tempfile::tempdir().unwrap();
        let out = directory.path().join("out");
        let fill = |text: &'static str| move |staging: &Path| Ok(fs::write(staging.join("result.txt"), text)?);

        // A new directory, then a rerun over it: replaced.
        replace_output_dir(&out, "dist", fill("one")).unwrap();
        replace_output_dir(&out, "dist", fill("two")).unwrap();
        assert_eq!(fs::read_to_string(out.join("result.txt")).unwrap(), "two");

        // Another command's output is not this command's: left alone.
        let error = format!("{:#}", replace_output_dir(&out, "vendor", fill("three")).unwrap_err());
        assert!(error.contains("is not an earlier output of `cargo xtask vendor`"), "{error}");
        assert_eq!(fs::read_to_string(out.join("result.txt")).unwrap(), "two");

        // A directory of the user's (a checkout, say): nothing in it is touched.
        let mine = directory.path().join("mine");
        fs::create_dir_all(mine.join(".git")).unwrap();
        fs::write(mine.join("notes.txt"), "keep me").unwrap();
        let error = format!("{:#}", replace_output_dir(&mine, "dist", fill("x")).unwrap_err());
        assert!(error.contains("--out") && error.contains("left as it is"), "{error}");
        assert_eq!(fs::read_to_string(mine.join("notes.txt")).unwrap(), "keep me");
        assert!(mine.join(".git").is_dir());

        // An empty directory is fine.
        let empty = directory.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        replace_output_dir(&empty, "dist", fill("y")).unwrap();
        assert_eq!(fs::read_to_string(empty.join("result.txt")).unwrap(), "y");
    }
}
