//! Debian packages used as files (`[[unpacked-debs]]` in toolchains.lock), never installed:
//! the machine keeps its own versions. A package comes from the vendor bundle or through
//! `apt-get download` with a private apt configuration that names only the pinned suite of
//! the machine's own Debian archive (its address read from the machine's apt sources, never
//! written here); its sha256 is checked against the pin before it enters the cache, and it is
//! unpacked, with every entry checked, into `<cache>/unpacked/<sha256>/root`. The digest of the
//! unpacked tree is recorded beside it and checked on every use: a tree changed since is
//! unpacked again from the verified package, never used.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::inputs::archive;
use crate::inputs::bundle;
use crate::inputs::cache::{self, Cache};
use crate::inputs::lock::UnpackedDeb;
use crate::inputs::sources::Sources;

/// Holds the digest of the unpacked tree ([`tree_digest`]), written last inside the atomically
/// renamed directory.
const TREE_DIGEST: &str = "tree.sha256";

/// An unpacked package: its `/` as a directory, and the digest of everything in it (what a
/// build step that uses it fingerprints).
pub struct Unpacked {
    pub root: PathBuf,
    pub digest: String,
}

/// The unpacked file tree of `pin`, fetched and unpacked if missing or changed since.
pub fn root(cache: &Cache, sources: &Sources, pin: &UnpackedDeb) -> Result<Unpacked> {
    verified_tree(cache, &pin.sha256, &pin.file, |staging_root| {
        let deb = deb_file(cache, sources, pin)?;
        // dpkg-deb only decodes the package's data member; the extraction checks every entry
        // (no absolute paths, no `..`, no links leaving the tree).
        let mut command = Command::new("dpkg-deb");
        command.arg("--fsys-tarfile").arg(&deb);
        archive::extract_from_command(command, staging_root, &deb.display().to_string(), "is this a Debian-like machine?")
    })
}

/// The tree unpacked from the verified input `sha256` (named `what`) at
/// `<cache>/unpacked/<sha256>/root`: used as it is when its recorded digest still matches,
/// else made again by `unpack` (which fetches the input and fills the directory it is given)
/// in a staging directory that replaces the old one whole, its digest written last.
pub fn verified_tree(cache: &Cache, sha256: &str, what: &str, unpack: impl FnOnce(&Path) -> Result<()>) -> Result<Unpacked> {
    let directory = cache.root.join("unpacked").join(sha256);
    let root = directory.join("root");
    if let Ok(recorded) = fs::read_to_string(directory.join(TREE_DIGEST)) {
        let digest = tree_digest(&root)?;
        if digest == recorded {
            return Ok(Unpacked { root, digest });
        }
        eprintln!("warning: the unpacked {what} in {} changed since it was unpacked; unpacking it again", directory.display());
    }
    eprintln!("unpacking {what} into {}", directory.display());
    fs::create_dir_all(directory.parent().context("the unpacked directory has a parent")?)?;
    cache::replace_dir_atomically(&directory, |staging| {
        let staging_root = staging.join("root");
        unpack(&staging_root).with_context(|| format!("unpack {what} into {}", directory.display()))?;
        fs::write(staging.join(TREE_DIGEST), tree_digest(&staging_root)?)?;
        Ok(())
    })?;
    let digest = fs::read_to_string(directory.join(TREE_DIGEST))?;
    Ok(Unpacked { root, digest })
}

/// The sha256 of a directory tree: every entry's relative path and kind, a file's contents
/// and executable bit, a link's target, in sorted order.
pub fn tree_digest(root: &Path) -> Result<String> {
    fn walk(root: &Path, directory: &Path, listing: &mut String) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(directory)
            .with_context(|| format!("read {}", directory.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let relative = path.strip_prefix(root)?.to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                listing.push_str(&format!("link {relative} -> {}\n", fs::read_link(&path)?.display()));
            } else if kind.is_dir() {
                listing.push_str(&format!("dir {relative}\n"));
                walk(root, &path, listing)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
                listing.push_str(&format!("file {relative} {} {executable}\n", cache::sha256_file(&path)?));
            }
        }
        Ok(())
    }
    let mut listing = String::new();
    walk(root, root, &mut listing)?;
    Ok(cache::sha256_bytes(listing.as_bytes()))
}

/// The pinned `.deb` in the verified cache: from the vendor bundle, or downloaded.
pub fn deb_file(cache: &Cache, sources: &Sources, pin: &UnpackedDeb) -> Result<PathBuf> {
    let bundled = format!("{}/{}", bundle::DEBS_DIR, pin.file);
    if let Some(path) = sources.cached_or_bundled(cache, &pin.sha256, &bundled, &pin.file, &format!("the pinned package {}", pin.file))? {
        return Ok(path);
    }
    let scratch = cache.partial_dir()?.join(format!("apt-{}-{}", pin.suite, std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let result = download(&scratch, pin).and_then(|downloaded| cache.insert_file(&downloaded, &pin.sha256, &pin.file));
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// `apt-get download PACKAGE=VERSION` from `pin.suite`, with apt's lists, caches and status
/// inside `scratch`: the machine's apt state is neither read for packages nor written.
fn download(scratch: &Path, pin: &UnpackedDeb) -> Result<PathBuf> {
    let source = machine_archive()?;
    for directory in ["lists/partial", "cache/archives/partial", "download"] {
        fs::create_dir_all(scratch.join(directory))?;
    }
    let sources_file = scratch.join("suite.sources");
    fs::write(&sources_file, source.stanza(&pin.suite))?;
    let options = [
        format!("Dir::Etc::sourcelist={}", sources_file.display()),
        "Dir::Etc::sourceparts=-".to_owned(),
        format!("Dir::State::Lists={}", scratch.join("lists").display()),
        "Dir::State::status=/dev/null".to_owned(),
        format!("Dir::Cache={}", scratch.join("cache").display()),
    ];
    let apt = |arguments: &[&str]| {
        let mut command = Command::new("apt-get");
        for option in &options {
            command.arg("-o").arg(option);
        }
        command.args(arguments).current_dir(scratch.join("download")).stdout(Stdio::null()).status()
    };
    eprintln!("fetching {}={} from Debian's `{}` ({}) with apt-get", pin.package, pin.version, pin.suite, source.uri);
    let status = apt(&["update"]).context("run apt-get update (is this a Debian-like machine?)")?;
    if !status.success() {
        bail!(
            "`apt-get update` for the `{}` suite of {} failed ({status}); check that apt can reach it and that it \
             carries that suite, or build from a vendor bundle (`--vendor DIR`) that holds {}",
            pin.suite,
            source.uri,
            pin.file
        );
    }
    let request = format!("{}={}", pin.package, pin.version);
    let status = apt(&["download", &request]).context("run apt-get download")?;
    let downloaded = scratch.join("download").join(&pin.file);
    if !status.success() || !downloaded.is_file() {
        bail!(
            "`apt-get download {request}` from `{}` did not write {} ({status}); if the version left the suite, \
             update `[[unpacked-debs]]` in toolchains.lock",
            pin.suite,
            pin.file
        );
    }
    Ok(downloaded)
}

/// The machine's own Debian archive, as its apt configuration names it.
#[derive(Debug, PartialEq)]
pub(crate) struct ArchiveSource {
    pub(crate) uri: String,
    signed_by: Option<String>,
}

impl ArchiveSource {
    /// A deb822 stanza for `suite` of this archive, `main` only.
    fn stanza(&self, suite: &str) -> String {
        let mut text = format!("Types: deb\nURIs: {}\nSuites: {suite}\nComponents: main\n", self.uri);
        if let Some(keyring) = &self.signed_by {
            text.push_str(&format!("Signed-By: {keyring}\n"));
        }
        text
    }
}

pub(crate) fn machine_archive() -> Result<ArchiveSource> {
    let os_release = fs::read_to_string("/etc/os-release").context("read /etc/os-release (is this a Debian-like machine?)")?;
    let codename = os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME, so the machine's Debian archive cannot be found; build from a vendor bundle (`--vendor DIR`)")?;
    let mut texts = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
        paths.sort();
        for path in paths {
            match path.extension().and_then(|extension| extension.to_str()) {
                Some("sources") => texts.push((true, fs::read_to_string(&path).unwrap_or_default())),
                Some("list") => texts.push((false, fs::read_to_string(&path).unwrap_or_default())),
                _ => {}
            }
        }
    }
    texts.push((false, fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()));
    texts
        .iter()
        .find_map(|(deb822, text)| if *deb822 { from_deb822(text, &codename) } else { from_one_line(text, &codename) })
        .with_context(|| {
            format!(
                "the machine's apt sources name no Debian archive for `{codename}` (a `deb` source with that suite and \
                 `main`); add the one this machine installs from to /etc/apt/sources.list.d, or build from a vendor \
                 bundle (`--vendor DIR`)"
            )
        })
}

/// The first `deb` stanza whose suites include `codename` itself and whose components include
/// `main`.
fn from_deb822(text: &str, codename: &str) -> Option<ArchiveSource> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
            })
        };
        let words = |name: &str| field(name).map(|value| value.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default();
        let enabled = field("Enabled").is_none_or(|value| !value.eq_ignore_ascii_case("no"));
        (enabled
            && words("Types").iter().any(|kind| kind == "deb")
            && words("Suites").iter().any(|suite| suite == codename)
            && words("Components").iter().any(|component| component == "main"))
        .then(|| Some(ArchiveSource { uri: words("URIs").into_iter().next()?, signed_by: field("Signed-By") }))
        .flatten()
    })
}

/// The first `deb [options] URI SUITE COMPONENTS...` line for `codename` with `main`.
fn from_one_line(text: &str, codename: &str) -> Option<ArchiveSource> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (options, rest) = bracketed.split_once(']')?;
                (options, rest)
            }
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?.to_owned();
        let suite = words.next()?;
        (suite == codename && words.any(|component| component == "main")).then(|| ArchiveSource {
            uri,
            signed_by: options.split_whitespace().find_map(|option| option.strip_prefix("signed-by=")).map(str::to_owned),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_archive_is_the_stanza_of_its_own_suite() {
        let text = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
                    Types: deb-src\nURIs: http://wrong.example/debian\nSuites: bookworm\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        let source = from_deb822(text, "bookworm").unwrap();
        assert_eq!(source.uri, "http://mirror.example/debian");
        assert_eq!(source.signed_by.as_deref(), Some("/usr/share/keyrings/debian-archive-keyring.gpg"));
        assert_eq!(
            source.stanza("sid"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: sid\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        assert_eq!(from_deb822(text, "trixie"), None);
        assert_eq!(from_deb822("Types: deb\nEnabled: no\nURIs: http://x/debian\nSuites: bookworm\nComponents: main\n", "bookworm"), None);
    }

    #[test]
    fn a_changed_tree_has_another_digest() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/libc.a"), b"archive").unwrap();
        let first = tree_digest(root).unwrap();
        assert_eq!(first, tree_digest(root).unwrap());
        fs::write(root.join("usr/lib/libc.a"), b"archivE").unwrap();
        let changed = tree_digest(root).unwrap();
        assert_ne!(first, changed, "a changed file");
        fs::write(root.join("usr/lib/extra.o"), b"").unwrap();
        assert_ne!(changed, tree_digest(root).unwrap(), "an added file");
    }

    #[test]
    fn a_tree_changed_on_disk_is_unpacked_again_and_a_failed_unpack_leaves_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let cache = Cache::at(directory.path());
        let unpack = |root: &Path| -> Result<()> {
            fs::create_dir_all(root.join("lib"))?;
            fs::write(root.join("lib/code.js"), b"the pinned bytes")?;
            Ok(())
        };
        let first = verified_tree(&cache, "ab12", "a package", unpack).unwrap();
        // Someone with write access to the cache edits the tree (and could not fix the
        // recorded digest to match without unpacking being asked for again).
        fs::write(first.root.join("lib/code.js"), b"changed bytes").unwrap();
        let again = verified_tree(&cache, "ab12", "a package", unpack).unwrap();
        assert_eq!(fs::read(again.root.join("lib/code.js")).unwrap(), b"the pinned bytes");
        assert_eq!(again.digest, first.digest);
        // An unpack that fails leaves no tree a later call would trust.
        let failed = verified_tree(&cache, "cd34", "another", |root: &Path| -> Result<()> {
            fs::create_dir_all(root)?;
            fs::write(root.join("half"), b"")?;
            anyhow::bail!("the archive ended early")
        });
        assert!(failed.is_err());
        assert!(!directory.path().join("unpacked/cd34").exists());
    }

    #[test]
    fn one_line_sources_are_read_too() {
        let text = "# deb http://old.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main # comment\n";
        assert_eq!(
            from_one_line(text, "bookworm"),
            Some(ArchiveSource { uri: "http://mirror.example/debian".into(), signed_by: Some("/k.gpg".into()) })
        );
        assert_eq!(from_one_line("deb http://mirror.example/debian bookworm contrib\n", "bookworm"), None);
    }
}
