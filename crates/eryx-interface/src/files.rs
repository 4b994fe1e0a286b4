//! Files for the xtask and the host alike: atomic writes (a reader sees the old file or the
//! whole new one, never a part, and a failed write leaves nothing behind) and SHA-256
//! digests as lowercase hex.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of a file's contents, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("read {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// A hidden sibling of `path` for building `path` before renaming it into place, unique to
/// this call (the process id, a per-process counter and the clock's nanoseconds): two
/// threads, or two processes, building the same file never share a temporary, and its name
/// is not known in advance.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().unwrap_or_default();
    let call = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|time| time.subsec_nanos()).unwrap_or(0);
    path.with_file_name(format!("{}{}-{call}-{nanos:08x}", temporary_prefix(name), std::process::id()))
}

/// How the name of every temporary sibling of a file named `name` begins; the process id
/// follows it.
fn temporary_prefix(name: &std::ffi::OsStr) -> String {
    format!(".{}.tmp-", name.to_string_lossy())
}

/// The temporary siblings of `path` ([`temporary_sibling`]) left by a process that no longer
/// runs (killed mid-build): nothing trusts them, but a staged directory can be large. Those of
/// a running process (another build, or another thread of this one) are not listed; nor is
/// anything where the system cannot say which processes run (no `/proc`). "Running" is as this
/// process's `/proc` sees it: builds in other process namespaces must not share the directory.
pub fn abandoned_temporaries(path: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    if !Path::new("/proc/self").exists() {
        return Vec::new();
    }
    let prefix = temporary_prefix(name);
    let Ok(entries) = fs::read_dir(parent) else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            let pid = entry_name.strip_prefix(&prefix).and_then(|rest| rest.split('-').next()).and_then(|pid| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
        })
        .map(|entry| entry.path())
        .collect()
}

/// Writes `bytes` to `path` (creating its directory) through a temporary sibling that is
/// synced and renamed into place; the temporary is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().context("a file path has a parent")?;
    if !parent.as_os_str().is_empty() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let temporary = temporary_sibling(path);
    let result = (|| {
        // A new file only: a name planted in the meantime (a symlink) is an error, not followed.
        let mut file = fs::File::options().write(true).create_new(true).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_and_a_good_one_replaces_the_file() {
        let directory = std::env::temp_dir().join(format!("eryx-files-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&directory);
        let path = directory.join("nested").join("out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        // A directory where the file should be: the rename fails, the temporary goes.
        let blocked = directory.join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomic(&blocked, b"x").is_err());
        let names: Vec<String> = fs::read_dir(&directory).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|name| !name.contains(".tmp-")), "{names:?}");
        fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn only_the_temporaries_of_processes_that_are_gone_are_abandoned() {
        let temporary = tempfile::tempdir().unwrap();
        let directory = temporary.path();
        let out = directory.join("prefix");
        // No process has this id (Linux's largest is 4 194 304); this one runs.
        let gone = directory.join(".prefix.tmp-4294967295-0-00000000");
        let running = temporary_sibling(&out);
        let other = directory.join(".prefixes.tmp-4294967295-0-00000000");
        for staged in [&gone, &running, &other] {
            fs::create_dir_all(staged).unwrap();
        }
        let abandoned = abandoned_temporaries(&out);
        if Path::new("/proc/self").exists() {
            assert_eq!(abandoned, [gone]);
        } else {
            assert!(abandoned.is_empty());
        }
    }

    #[test]
    fn many_threads_write_one_file_at_once() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("shared.bin");
        let writers: Vec<_> = (0..16u8)
            .map(|index| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        write_atomic(&path, &[index; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("every write succeeds");
        }
        // The file is one writer's whole content, and no temporary is left.
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|byte| *byte == bytes[0]));
        let names: Vec<String> = fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["shared.bin"]);
    }
}
