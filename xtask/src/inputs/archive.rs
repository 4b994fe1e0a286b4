//! Tar archives, both ways.
//!
//! Extraction is safe (plain or gzip): every entry's path must stay inside the destination;
//! absolute paths, `..` components and links that point outside are refused. Extraction goes
//! to a temporary directory that is renamed into place only when the whole archive was read,
//! so a truncated archive leaves nothing behind.
//!
//! Packing is deterministic ([`pack_deterministic`]): entries sorted by path, fixed mtime,
//! uid/gid 0, empty user and group names, modes 0644/0755, zstd at a fixed level on one
//! thread. The same tree gives the same bytes whenever and wherever it is packed.

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
    let staging = crate::inputs::cache::temporary_sibling(destination);
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

/// The zstd level of every archive the build packs (vendor bundle, release bundle).
pub const PACK_ZSTD_LEVEL: i32 = 10;

/// Packs `directory` into `output` (`.tar.zst`) under the top-level name `top`, written
/// atomically. Only regular files and directories are packed; anything else is an error.
pub fn pack_deterministic(directory: &Path, top: &str, output: &Path) -> Result<()> {
    let mut entries = Vec::new();
    collect_entries(directory, Path::new(""), &mut entries)?;
    // Sort by the byte string of the path so every machine agrees on the order.
    entries.sort_by(|a, b| a.0.as_os_str().as_encoded_bytes().cmp(b.0.as_os_str().as_encoded_bytes()));
    let temporary = crate::inputs::cache::temporary_sibling(output);
    let result = (|| -> Result<()> {
        let file = fs::File::create(&temporary).with_context(|| format!("create {}", temporary.display()))?;
        let mut encoder = zstd::Encoder::new(file, PACK_ZSTD_LEVEL)?;
        // A frame checksum, so a damaged archive is noticed when it is read.
        encoder.include_checksum(true)?;
        let mut builder = tar::Builder::new(encoder);
        builder.follow_symlinks(false);
        let top = Path::new(top);
        append_directory(&mut builder, top)?;
        for (relative, is_dir) in &entries {
            let name = top.join(relative);
            if *is_dir {
                append_directory(&mut builder, &name)?;
                continue;
            }
            let path = directory.join(relative);
            let file = fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
            let metadata = file.metadata()?;
            let mut header = fixed_header(tar::EntryType::Regular);
            header.set_size(metadata.len());
            use std::os::unix::fs::PermissionsExt;
            header.set_mode(if metadata.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 });
            builder
                .append_data(&mut header, &name, file)
                .with_context(|| format!("pack {}", path.display()))?;
        }
        let encoder = builder.into_inner().context("finish the tar stream")?;
        let file = encoder.finish().context("finish the zstd stream")?;
        file.sync_all()?;
        fs::rename(&temporary, output)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.with_context(|| format!("pack {} into {}", directory.display(), output.display()))
}

fn fixed_header(kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mtime(crate::inputs::stamp::SOURCE_DATE_EPOCH as u64);
    header.set_uid(0);
    header.set_gid(0);
    // Empty names: the packer's account never reaches the archive.
    let _ = header.set_username("");
    let _ = header.set_groupname("");
    header
}

fn append_directory<W: std::io::Write>(builder: &mut tar::Builder<W>, name: &Path) -> Result<()> {
    let mut header = fixed_header(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    builder.append_data(&mut header, name, std::io::empty())?;
    Ok(())
}

fn collect_entries(root: &Path, relative: &Path, entries: &mut Vec<(PathBuf, bool)>) -> Result<()> {
    let directory = root.join(relative);
    for entry in fs::read_dir(&directory).with_context(|| format!("read {}", directory.display()))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            entries.push((path.clone(), true));
            collect_entries(root, &path, entries)?;
        } else if kind.is_file() {
            entries.push((path, false));
        } else {
            bail!("{} is neither a file nor a directory; it cannot be packed", root.join(&path).display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_all(directory: &Path, seconds: i64) {
        for entry in fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds as u64);
            fs::File::options().read(true).open(&path).unwrap().set_modified(time).ok();
            if path.is_dir() {
                touch_all(&path, seconds);
            }
        }
    }

    #[test]
    fn packing_the_same_tree_twice_gives_the_same_bytes() {
        let directory = tempfile::tempdir().unwrap();
        let tree = directory.path().join("tree");
        fs::create_dir_all(tree.join("b/nested")).unwrap();
        fs::write(tree.join("b/nested/z.txt"), b"zed").unwrap();
        fs::write(tree.join("a.txt"), b"alpha").unwrap();
        fs::write(tree.join("b/c.bin"), vec![7u8; 10000]).unwrap();
        touch_all(&tree, 1_000_000_000);
        let first = directory.path().join("first.tar.zst");
        pack_deterministic(&tree, "bundle", &first).unwrap();
        // Other mtimes and another creation order give the same archive.
        touch_all(&tree, 1_700_000_000);
        let copy = directory.path().join("copy");
        fs::create_dir_all(copy.join("b/nested")).unwrap();
        fs::write(copy.join("b/c.bin"), vec![7u8; 10000]).unwrap();
        fs::write(copy.join("a.txt"), b"alpha").unwrap();
        fs::write(copy.join("b/nested/z.txt"), b"zed").unwrap();
        let second = directory.path().join("second.tar.zst");
        pack_deterministic(&copy, "bundle", &second).unwrap();
        assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
        // The archive holds what was packed, under the top-level name.
        let unpacked = directory.path().join("unpacked");
        let bytes = zstd::decode_all(&fs::read(&first).unwrap()[..]).unwrap();
        extract_from(&bytes[..], Compression::None, &unpacked).unwrap();
        assert_eq!(fs::read(unpacked.join("bundle/b/nested/z.txt")).unwrap(), b"zed");
        // A changed byte changes the archive.
        fs::write(copy.join("a.txt"), b"alphA").unwrap();
        pack_deterministic(&copy, "bundle", &second).unwrap();
        assert_ne!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
    }

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
