//! Upstream source tarballs the build compiles (`[[source-tarballs]]` in toolchains.lock):
//! CPython's release tarball and its C libraries' sources, as Debian's archive keeps them
//! (`<package>_<version>.orig.tar.*`: upstream's release tarball itself, or Debian's repack of
//! it, as for zlib; toolchains.lock says which). A tarball comes from the cache, the
//! vendor bundle or the machine's own Debian archive (its address read from the machine's apt
//! sources, never written here; the pin names only the folder inside it), and enters the
//! cache only when its sha256 is the pinned one: the pin, not the archive, is what vouches
//! for it. It is unpacked, every entry checked, into `<cache>/unpacked/<sha256>/root`, which
//! is checked against its recorded digest on every use.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::inputs::archive::{self, Compression};
use crate::inputs::bundle;
use crate::inputs::cache::Cache;
use crate::inputs::download;
use crate::inputs::lock::SourceTarball;
use crate::inputs::sources::Sources;
use crate::inputs::unpacked::{self, Unpacked};

/// The pinned tarball in the verified cache: from the vendor bundle, or downloaded.
pub fn tarball(cache: &Cache, sources: &Sources, pin: &SourceTarball) -> Result<PathBuf> {
    let bundled = format!("{}/{}", bundle::SOURCES_DIR, pin.file);
    if let Some(path) = sources.cached_or_bundled(cache, &pin.sha256, &bundled, &pin.file, &format!("the pinned source tarball {}", pin.file))? {
        return Ok(path);
    }
    let archive = unpacked::machine_archive()?;
    let url = format!("{}/{}/{}", archive.uri.trim_end_matches('/'), pin.directory, pin.file);
    download::fetch_verified(cache, &url, &pin.sha256, &pin.file).with_context(|| {
        format!(
            "fetch {} {} from the machine's Debian archive; if it left the archive, build from a vendor bundle \
             (`--vendor DIR`) that holds it, or pin a version the archive serves in `[[source-tarballs]]`",
            pin.name, pin.version
        )
    })
}

/// The unpacked tree of `pin` (its top folder as upstream named it, inside `root`), fetched
/// and unpacked when missing or changed since.
pub fn unpacked(cache: &Cache, sources: &Sources, pin: &SourceTarball) -> Result<Unpacked> {
    unpacked::verified_tree(cache, &pin.sha256, &pin.file, |root| {
        let tarball = tarball(cache, sources, pin)?;
        if pin.file.ends_with(".tar.gz") {
            return archive::extract(&tarball, Compression::Gzip, root);
        }
        // `xz` decodes; the tar reader checks every entry (no absolute paths, no `..`, no
        // links leaving the tree).
        let mut command = Command::new("xz");
        command.args(["--decompress", "--stdout"]).arg(&tarball);
        archive::extract_from_command(command, root, &tarball.display().to_string(), "install xz-utils")
    })
}

/// The one folder a source tarball unpacks into (`Python-3.14.7/`, `zlib-1.3.1/`, …).
pub fn top_folder(unpacked: &Unpacked) -> Result<PathBuf> {
    let mut folders = std::fs::read_dir(&unpacked.root)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    match folders.len() {
        1 if folders[0].is_dir() => Ok(folders.remove(0)),
        _ => bail!("{} holds {} entries, not one top folder", unpacked.root.display(), folders.len()),
    }
}
