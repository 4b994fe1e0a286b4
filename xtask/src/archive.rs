//! Safe extraction of tar archives (plain or gzip). Every entry's path must stay
//! inside the destination: absolute paths, `..` components and links that point outside
//! are refused. Extraction goes to a temporary directory that is renamed into place only
//! when the whole archive was read, so a truncated archive leaves nothing behind.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug)]
pub enum Compression {
    None,
    Gzip,
}

/// Checks that `path` is relative and has no `..` (an archive member name).
fn checked_relative(path: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => bail!("archive entry `{}` has a `..` component", path.display()),
            Component::RootDir | Component::Prefix(_) => {
                bail!("archive entry `{}` is an absolute path", path.display())
            }
        }
    }
    Ok(clean)
}

/// Checks that a link at `entry` (relative to the destination) pointing to `target`
/// resolves inside the destination.
fn checked_link(entry: &Path, target: &Path, hard: bool) -> Result<()> {
    if target.is_absolute() {
        bail!("archive link `{}` points to the absolute path `{}`", entry.display(), target.display());
    }
    // Symlinks resolve from the link's directory, hard links from the archive root.
    let mut depth: i64 = if hard { 0 } else { entry.components().count() as i64 - 1 };
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => bail!("archive link `{}` has an unusable target", entry.display()),
        }
        if depth < 0 {
            bail!(
                "archive link `{}` points outside the destination (`{}`)",
                entry.display(),
                target.display()
            );
        }
    }
    Ok(())
}

/// Extracts `archive` into `destination`, which must not exist yet.
pub fn extract(archive: &Path, compression: Compression, destination: &Path) -> Result<()> {
    let file = fs::File::open(archive).with_context(|| format!("open {}", archive.display()))?;
    extract_from(file, compression, destination)
        .with_context(|| format!("extract {} into {}", archive.display(), destination.display()))
}

pub fn extract_from(reader: impl Read, compression: Compression, destination: &Path) -> Result<()> {
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(reader)),
    };
    let parent = destination.parent().context("destination has a parent")?;
    fs::create_dir_all(parent)?;
    let staging = crate::cache::temporary_sibling(destination);
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    let result = unpack(reader, &staging);
    if let Err(error) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    if destination.exists() {
        fs::remove_dir_all(destination)?;
    }
    fs::rename(&staging, destination)?;
    Ok(())
}

fn unpack(reader: impl Read, staging: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_mtime(false);
    archive.set_preserve_permissions(true);
    let entries = archive.entries().context("read the archive (truncated or not a tar?)")?;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.context("read an archive entry (the archive may be truncated)")?;
        let raw_path = entry.path()?.into_owned();
        let relative = checked_relative(&raw_path)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .with_context(|| format!("archive link `{}` has no target", raw_path.display()))?
                .into_owned();
            checked_link(&relative, &target, kind.is_hard_link())?;
        }
        if relative.as_os_str().is_empty() {
            continue;
        }
        // `unpack_in` re-checks the path and refuses to write through symlinks.
        let written = entry
            .unpack_in(staging)
            .with_context(|| format!("unpack `{}` (the archive may be truncated)", raw_path.display()))?;
        if !written {
            bail!("archive entry `{}` would be written outside the destination", raw_path.display());
        }
        count += 1;
    }
    if count == 0 {
        bail!("the archive is empty or not a tar archive");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tar with raw header names, so hostile paths can be written.
    fn tar_with(entries: &[(&str, tar::EntryType, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut header = tar::Header::new_gnu();
            {
                let bytes = &mut header.as_old_mut().name;
                bytes[..name.len()].copy_from_slice(name.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                let bytes = &mut header.as_old_mut().linkname;
                bytes[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn extract_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<()>) {
        let directory = tempfile::tempdir().unwrap();
        let destination = directory.path().join("out");
        let result = extract_from(bytes, Compression::None, &destination);
        (directory, result)
    }

    #[test]
    fn a_plain_archive_extracts() {
        let bytes = tar_with(&[("dir/file.txt", tar::EntryType::Regular, None, b"hi")]);
        let (directory, result) = extract_bytes(&bytes);
        result.unwrap();
        assert_eq!(fs::read(directory.path().join("out/dir/file.txt")).unwrap(), b"hi");
    }

    #[test]
    fn parent_components_are_refused() {
        let bytes = tar_with(&[("../escape.txt", tar::EntryType::Regular, None, b"x")]);
        let (directory, result) = extract_bytes(&bytes);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("`..` component"), "{error}");
        assert!(!directory.path().join("escape.txt").exists());
        assert!(!directory.path().join("out").exists());
    }

    #[test]
    fn absolute_paths_are_refused() {
        let bytes = tar_with(&[("/tmp/eryx-absolute.txt", tar::EntryType::Regular, None, b"x")]);
        let (_directory, result) = extract_bytes(&bytes);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("absolute path"), "{error}");
    }

    #[test]
    fn links_that_escape_are_refused() {
        let bytes = tar_with(&[("a/link", tar::EntryType::Symlink, Some("../../etc/passwd"), b"")]);
        let (_directory, result) = extract_bytes(&bytes);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("points outside"), "{error}");

        let bytes = tar_with(&[("link", tar::EntryType::Symlink, Some("/etc/passwd"), b"")]);
        let (_directory, result) = extract_bytes(&bytes);
        assert!(format!("{:#}", result.unwrap_err()).contains("absolute path"));
    }

    #[test]
    fn links_inside_are_kept() {
        let bytes = tar_with(&[
            ("a/file", tar::EntryType::Regular, None, b"data"),
            ("a/b/link", tar::EntryType::Symlink, Some("../file"), b""),
        ]);
        let (directory, result) = extract_bytes(&bytes);
        result.unwrap();
        assert_eq!(fs::read(directory.path().join("out/a/b/link")).unwrap(), b"data");
    }

    #[test]
    fn a_truncated_archive_is_a_clear_error_and_leaves_nothing() {
        let body = vec![1u8; 4096];
        let bytes = tar_with(&[("big.bin", tar::EntryType::Regular, None, &body)]);
        let mut compressed = Vec::new();
        {
            let mut encoder = flate2::write::GzEncoder::new(&mut compressed, flate2::Compression::default());
            std::io::Write::write_all(&mut encoder, &bytes).unwrap();
            encoder.finish().unwrap();
        }
        compressed.truncate(compressed.len() / 2);
        let directory = tempfile::tempdir().unwrap();
        let destination = directory.path().join("out");
        let error = format!("{:#}", extract_from(&compressed[..], Compression::Gzip, &destination).unwrap_err());
        assert!(error.contains("truncated"), "{error}");
        assert!(!destination.exists());
        assert_eq!(fs::read_dir(directory.path()).unwrap().count(), 0, "no staging directory is left");
    }
}
