//! Tar archives, both ways.
//!
//! Extraction is safe (plain or gzip): every entry's path must stay inside the destination;
//! absolute paths, `..` components and links that point outside are refused, a link judged
//! by where it leads in the tree actually written (through earlier links); setuid, setgid and
//! sticky bits are cleared. Extraction goes
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

/// Resolves `path` (relative to `root`, `/`-free components) against the tree actually
/// written under `root`, following every symlink met on the way (up to 40), the way the
/// kernel would. Returns the resolved components, or `None` when the path leaves `root`
/// (through `..` or an absolute link target).
fn resolve_within(root: &Path, start: &[PathBuf], path: &Path) -> Result<Option<Vec<PathBuf>>> {
    let mut resolved: Vec<PathBuf> = start.to_vec();
    let mut queue: std::collections::VecDeque<PathBuf> = path.components().map(|component| PathBuf::from(component.as_os_str())).collect();
    let mut hops = 0;
    // A component that does not exist yet could become a link later: a `..` after one
    // cannot be judged, so it counts as leaving.
    let mut unwritten = false;
    while let Some(part) = queue.pop_front() {
        match part.components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                if unwritten || resolved.pop().is_none() {
                    return Ok(None);
                }
            }
            Some(Component::RootDir) | Some(Component::Prefix(_)) => return Ok(None),
            Some(Component::Normal(name)) => {
                let candidate: PathBuf = resolved.iter().collect::<PathBuf>().join(name);
                match fs::symlink_metadata(root.join(&candidate)) {
                    Ok(metadata) if metadata.file_type().is_symlink() => {
                        hops += 1;
                        if hops > 40 {
                            bail!("too many levels of links resolving `{}`", path.display());
                        }
                        let target = fs::read_link(root.join(&candidate))?;
                        if target.is_absolute() {
                            return Ok(None);
                        }
                        // The link's target replaces it, resolved from the link's directory.
                        for component in target.components().rev() {
                            queue.push_front(PathBuf::from(component.as_os_str()));
                        }
                    }
                    Ok(_) => resolved.push(PathBuf::from(name)),
                    Err(_) => {
                        unwritten = true;
                        resolved.push(PathBuf::from(name));
                    }
                }
            }
        }
    }
    Ok(Some(resolved))
}

/// Checks that a link at `entry` (relative to the destination) pointing to `target` resolves
/// inside the destination, judged against the tree written so far under `root`: a symlink
/// resolves from the link's directory (itself resolved through earlier links), a hard link
/// from the archive root.
fn checked_link(root: &Path, entry: &Path, target: &Path, hard: bool) -> Result<()> {
    if target.is_absolute() {
        bail!("archive link `{}` points to the absolute path `{}`", entry.display(), target.display());
    }
    let outside = || anyhow::anyhow!("archive link `{}` points outside the destination (`{}`)", entry.display(), target.display());
    let start = if hard {
        Vec::new()
    } else {
        let parent = entry.parent().unwrap_or(Path::new(""));
        resolve_within(root, &[], parent)?.ok_or_else(outside)?
    };
    resolve_within(root, &start, target)?.ok_or_else(outside)?;
    Ok(())
}

/// Clears the setuid, setgid and sticky bits of what an entry wrote (the archive's
/// permissions are kept otherwise).
fn clear_special_bits(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = fs::symlink_metadata(path)?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    let mode = metadata.permissions().mode();
    if mode & 0o7000 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777))?;
    }
    Ok(())
}

/// Extracts `archive` into `destination`, which must not exist yet.
pub fn extract(archive: &Path, compression: Compression, destination: &Path) -> Result<()> {
    let file = fs::File::open(archive).with_context(|| format!("open {}", archive.display()))?;
    extract_from(file, compression, destination)
        .with_context(|| format!("extract {} into {}", archive.display(), destination.display()))
}

/// Extracts the tar archive `command` writes to its stdout (a decoder: `dpkg-deb
/// --fsys-tarfile`, `xz --decompress --stdout`) into `destination`, checking every entry as
/// [`extract`] does. `what` names the archive in errors; `install` says how to get the
/// program.
pub fn extract_from_command(mut command: std::process::Command, destination: &Path, what: &str, install: &str) -> Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("run {program} ({install})"))?;
    let mut stdout = child.stdout.take().with_context(|| format!("{program}'s stdout is piped"))?;
    let extracted = extract_from(&mut stdout, Compression::None, destination);
    // The tar reader stops at the archive's end; what the program still writes (padding) is
    // read here, so it never fails on a closed pipe.
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    let status = child.wait().with_context(|| format!("wait for {program}"))?;
    extracted?;
    if !status.success() {
        bail!("{program} failed on {what} ({status}); the file in the cache may be damaged: remove it");
    }
    Ok(())
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
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Metadata for the entries after it (`git archive` writes the commit there), not a
            // file: nothing to write.
            continue;
        }
        let raw_path = entry.path()?.into_owned();
        let relative = checked_relative(&raw_path)?;
        if fs::symlink_metadata(staging.join(&relative)).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
            bail!("archive entry `{}` would replace a link written before it; refusing the archive", raw_path.display());
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .with_context(|| format!("archive link `{}` has no target", raw_path.display()))?
                .into_owned();
            checked_link(staging, &relative, &target, kind.is_hard_link())?;
            if kind.is_hard_link() && fs::symlink_metadata(staging.join(checked_relative(&target)?)).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
                // The new name would be the link itself, read from another directory.
                bail!("archive hard link `{}` names a symlink (`{}`); refusing the archive", raw_path.display(), target.display());
            }
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
        clear_special_bits(&staging.join(&relative))?;
        count += 1;
    }
    if count == 0 {
        bail!("the archive is empty or not a tar archive");
    }
    // Links judged one by one could still be changed by later entries: judge every link of
    // the finished tree once more, where it stands.
    check_tree_links(staging, Path::new(""))
}

/// Refuses any symlink under `root`/`relative` whose target, followed through the tree as it
/// is, leaves `root`.
fn check_tree_links(root: &Path, relative: &Path) -> Result<()> {
    for entry in fs::read_dir(root.join(relative)).with_context(|| format!("read {}", root.join(relative).display()))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let target = fs::read_link(root.join(&path))?;
            checked_link(root, &path, &target, false)?;
        } else if kind.is_dir() {
            check_tree_links(root, &path)?;
        }
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
        if relative.as_os_str().is_empty() && entry.file_name() == crate::inputs::cache::OUTPUT_MARKER {
            // The xtask's own mark on an output directory, not part of what it ships.
            continue;
        }
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

    /// A `git archive` tarball (OpenSSL's release) starts with a pax global header: read as
    /// metadata, never written as a file, and not obeyed: one naming a path outside the
    /// destination moves no later entry there.
    #[test]
    fn a_pax_global_header_is_neither_a_file_nor_obeyed() {
        let headers: [&[u8]; 2] = [b"52 comment=8cf17aaeb4599f8af87fefd810b5b5fee90fe69e\n", b"25 path=../../escape.txt\n"];
        for header in headers {
            let bytes = tar_with(&[
                ("pax_global_header", tar::EntryType::XGlobalHeader, None, header),
                ("dir/file.txt", tar::EntryType::Regular, None, b"hi"),
            ]);
            let (directory, result) = extract_bytes(&bytes);
            result.unwrap();
            assert_eq!(fs::read(directory.path().join("out/dir/file.txt")).unwrap(), b"hi");
            for stray in ["out/pax_global_header", "out/escape.txt", "escape.txt"] {
                assert!(!directory.path().join(stray).exists(), "{stray}");
            }
        }
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

    #[test]
    fn a_link_that_escapes_through_an_earlier_link_is_refused() {
        // `a/b` leads to the root; `a/b/c -> ../x` reads as inside by its text, but it lies
        // in the root, so `..` leaves the destination.
        let bytes = tar_with(&[
            ("a/", tar::EntryType::Directory, None, b""),
            ("a/b", tar::EntryType::Symlink, Some(".."), b""),
            ("a/b/c", tar::EntryType::Symlink, Some("../x"), b""),
        ]);
        let (directory, result) = extract_bytes(&bytes);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("archive link `a/b/c` points outside"), "{error}");
        assert!(!directory.path().join("out").exists());

        // A chain of links that leaves only at its end.
        let bytes = tar_with(&[
            ("d/", tar::EntryType::Directory, None, b""),
            ("d/up", tar::EntryType::Symlink, Some(".."), b""),
            ("d/upper", tar::EntryType::Symlink, Some("up/.."), b""),
        ]);
        let (_directory, result) = extract_bytes(&bytes);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("archive link `d/upper` points outside"), "{error}");
    }

    #[test]
    fn setuid_setgid_and_sticky_bits_are_cleared() {
        use std::os::unix::fs::PermissionsExt;
        let mut builder = tar::Builder::new(Vec::new());
        for (name, mode) in [("tool", 0o4755), ("group", 0o2750), ("shared", 0o1777)] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(if name == "shared" { tar::EntryType::Directory } else { tar::EntryType::Regular });
            header.set_size(0);
            header.set_mode(mode);
            builder.append_data(&mut header, name, std::io::empty()).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let (directory, result) = extract_bytes(&bytes);
        result.unwrap();
        let mode = |name: &str| fs::metadata(directory.path().join("out").join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("tool"), 0o755);
        assert_eq!(mode("group"), 0o750);
        assert_eq!(mode("shared"), 0o777);
    }

    #[test]
    fn a_link_made_to_escape_by_a_later_entry_is_refused() {
        // `l -> a/../secret` while `a` does not exist yet; then `a -> .` would make it leave.
        let bytes = tar_with(&[
            ("l", tar::EntryType::Symlink, Some("a/../../secret"), b""),
            ("a", tar::EntryType::Symlink, Some("."), b""),
        ]);
        let (_directory, result) = extract_bytes(&bytes);
        assert!(format!("{:#}", result.unwrap_err()).contains("archive link `l` points outside"));
        // A link replaced by a later entry of the same name.
        let bytes = tar_with(&[
            ("s/", tar::EntryType::Directory, None, b""),
            ("s/t/", tar::EntryType::Directory, None, b""),
            ("a", tar::EntryType::Symlink, Some("s/t"), b""),
            ("l", tar::EntryType::Symlink, Some("a/../.."), b""),
            ("a", tar::EntryType::Symlink, Some("."), b""),
        ]);
        let (_directory, result) = extract_bytes(&bytes);
        assert!(format!("{:#}", result.unwrap_err()).contains("would replace a link"));
    }

    #[test]
    fn a_hard_link_to_a_symlink_is_refused() {
        let bytes = tar_with(&[
            ("d/", tar::EntryType::Directory, None, b""),
            ("d/e/", tar::EntryType::Directory, None, b""),
            ("d/e/s", tar::EntryType::Symlink, Some("../../x"), b""),
            ("h", tar::EntryType::Link, Some("d/e/s"), b""),
        ]);
        let (_directory, result) = extract_bytes(&bytes);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("names a symlink"), "{error}");
    }
}
