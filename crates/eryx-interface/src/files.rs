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
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let call = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|time| time.subsec_nanos()).unwrap_or(0);
    path.with_file_name(format!(".{name}.tmp-{}-{call}-{nanos:08x}", std::process::id()))
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
