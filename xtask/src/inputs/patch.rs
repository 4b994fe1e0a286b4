//! Registry crates the guests use in a patched form, derived at build time and never
//! committed.
//!
//! For each `[[patched-crates]]` entry of toolchains.lock the xtask takes the pinned `.crate`
//! (checked against its registry checksum), unpacks it under [`PATCHED_DIR`], checks every
//! file it will edit against the pinned original digest, applies the edit written below, and
//! checks the result against the pinned patched digest. The guest workspace's
//! `[patch.crates-io]` points at that directory. A pin bump therefore cannot silently change
//! what is patched: a different original is refused by name.
//!
//! The directory lies below the guest workspace root (`crates/`) on purpose: cargo hashes a
//! path dependency's location relative to the workspace root only when it lies below it, so
//! the guests' bytes do not depend on the checkout's path.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::inputs::archive::{self, Compression};
use crate::inputs::cache::{self, sha256_bytes, sha256_file, Cache};
use crate::inputs::lock::PatchedCrate;
use crate::inputs::sources::Sources;
use crate::workspace::{self, Workspace};

/// Where the patched crates are derived, relative to the workspace root.
pub const PATCHED_DIR: &str = "crates/target/patched";
/// Inside a derived crate: the digests it was derived from, to skip the work next time.
const MARKER: &str = ".eryx-derived";

/// One edit: in `path` of crate `krate`, the text `find` (present exactly once) becomes
/// `replace`.
struct Edit {
    krate: &'static str,
    path: &'static str,
    find: &'static str,
    replace: &'static str,
}

const EDITS: &[Edit] = &[
    // `py_freeze!` collects the modules it freezes in a map and encodes them in the map's
    // iteration order; a BTreeMap makes that order sorted by module name instead of random.
    Edit {
        krate: "rustpython-derive-impl",
        path: "src/compile_bytecode.rs",
        find: "    collections::HashMap,\n",
        replace: "    collections::BTreeMap as HashMap,\n",
    },
    // `#[pyclass]` collects a class's getsets in a map keyed by (name, cfgs) and registers
    // them in the map's iteration order; sort them first.
    Edit {
        krate: "rustpython-derive-impl",
        path: "src/pyclass.rs",
        find: "        let properties = self.map.iter().map(|((name, cfgs), entry)| {\n",
        replace: "        // Sorted by name (then by the cfgs), not in the map's random iteration order.\n        \
                  let mut sorted: Vec<_> = self.map.iter().collect();\n        \
                  sorted.sort_by_cached_key(|((name, cfgs), _)| (name.clone(), quote!(#(#cfgs)*).to_string()));\n        \
                  let properties = sorted.into_iter().map(|((name, cfgs), entry)| {\n",
    },
];

/// The directory a patched crate is derived into.
pub fn crate_dir(workspace: &Workspace, pin: &PatchedCrate) -> PathBuf {
    workspace.path(PATCHED_DIR).join(format!("{}-{}", pin.name, pin.version))
}

/// The file name of a crate's source archive, as the registry and the vendor bundle name it.
pub fn crate_file_name(pin: &PatchedCrate) -> String {
    format!("{}-{}.crate", pin.name, pin.version)
}

fn marker_text(pin: &PatchedCrate) -> String {
    let mut text = pin.crate_sha256.clone();
    for file in &pin.files {
        text.push_str(&format!("\n{} {}", file.path, file.patched_sha256));
    }
    text
}

/// Derives every patched crate that is missing or stale.
pub fn ensure_all(workspace: &Workspace, cache: &Cache, sources: &Sources, pins: &[PatchedCrate]) -> Result<()> {
    for pin in pins {
        let directory = crate_dir(workspace, pin);
        let fresh = fs::read_to_string(directory.join(MARKER)).is_ok_and(|text| text == marker_text(pin))
            && pin.files.iter().all(|file| {
                sha256_file(&directory.join(&file.path)).is_ok_and(|digest| digest == file.patched_sha256)
            });
        if fresh {
            continue;
        }
        let original = original_crate(cache, sources, pin)?;
        eprintln!("deriving the patched {} {} into {}", pin.name, pin.version, directory.display());
        derive(&original, pin, &directory)?;
    }
    Ok(())
}

/// The pinned `.crate` in the verified cache: from the cache, the vendor bundle, cargo's
/// own registry cache, or (online) fetched by cargo through a scratch manifest.
pub fn original_crate(cache: &Cache, sources: &Sources, pin: &PatchedCrate) -> Result<PathBuf> {
    let what = format!("the {} {} crate", pin.name, pin.version);
    if let Some(path) = cache.get(&pin.crate_sha256)? {
        return Ok(path);
    }
    if let Some(bundle) = &sources.vendor {
        let file = bundle.file(&format!("{}/{}", crate::inputs::bundle::SOURCES_DIR, crate_file_name(pin)))?;
        return cache.insert_copy(&file, &pin.crate_sha256, &what);
    }
    if let Some(path) = find_in_cargo_cache(pin)? {
        return cache.insert_copy(&path, &pin.crate_sha256, &what);
    }
    if let Some(reason) = sources.refuse_network(&what) {
        bail!(reason);
    }
    fetch_with_cargo(cache, pin)?;
    match find_in_cargo_cache(pin)? {
        Some(path) => cache.insert_copy(&path, &pin.crate_sha256, &what),
        None => bail!("cargo fetched {what}, but no copy with the pinned sha256 {} appeared in its cache", pin.crate_sha256),
    }
}

/// Cargo keeps downloaded crates in `$CARGO_HOME/registry/cache/<registry>/`; the one whose
/// digest is the pin's.
fn find_in_cargo_cache(pin: &PatchedCrate) -> Result<Option<PathBuf>> {
    let registries = workspace::cargo_home().join("registry").join("cache");
    let Ok(entries) = fs::read_dir(&registries) else { return Ok(None) };
    for entry in entries {
        let candidate = entry?.path().join(crate_file_name(pin));
        if candidate.is_file() && sha256_file(&candidate)? == pin.crate_sha256 {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Asks cargo to download the crate: a scratch manifest that depends on exactly the pinned
/// version, and `cargo fetch`.
fn fetch_with_cargo(cache: &Cache, pin: &PatchedCrate) -> Result<()> {
    let scratch = cache.partial_dir()?.join(format!("fetch-{}-{}", pin.name, std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let manifest = format!(
        "[package]\nname = \"eryx-fetch-scratch\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\npath = \"lib.rs\"\n\n[dependencies]\n{} = \"={}\"\n\n[workspace]\n",
        pin.name, pin.version
    );
    fs::write(scratch.join("Cargo.toml"), manifest)?;
    fs::write(scratch.join("lib.rs"), "")?;
    let mut command = workspace::host_cargo();
    command.arg("fetch").arg("--manifest-path").arg(scratch.join("Cargo.toml"));
    eprintln!("$ cargo fetch (scratch manifest depending on {} = \"={}\")", pin.name, pin.version);
    let status = command.status().context("run cargo fetch");
    let _ = fs::remove_dir_all(&scratch);
    if !status?.success() {
        bail!("cargo could not fetch {} {}; check that cargo can reach its registry", pin.name, pin.version);
    }
    Ok(())
}

/// Unpacks `crate_file` and applies the edits, checking every digest on the way; the result
/// replaces `destination` only when all of it matched.
pub fn derive(crate_file: &Path, pin: &PatchedCrate, destination: &Path) -> Result<()> {
    let actual = sha256_file(crate_file)?;
    if actual != pin.crate_sha256 {
        bail!(
            "{} is not the pinned {} {} (sha256 {actual}, toolchains.lock pins {})",
            crate_file.display(),
            pin.name,
            pin.version,
            pin.crate_sha256
        );
    }
    let staging = cache::temporary_sibling(destination);
    let _ = fs::remove_dir_all(&staging);
    let result = (|| -> Result<()> {
        archive::extract(crate_file, Compression::Gzip, &staging)?;
        let root = staging.join(format!("{}-{}", pin.name, pin.version));
        if !root.is_dir() {
            bail!("{} has no top-level {}-{} directory", crate_file.display(), pin.name, pin.version);
        }
        for file in &pin.files {
            let path = root.join(&file.path);
            let text = fs::read_to_string(&path)
                .with_context(|| format!("{} {}: read {}", pin.name, pin.version, file.path))?;
            let original = sha256_bytes(text.as_bytes());
            if original != file.original_sha256 {
                bail!(
                    "{} {}: {} has sha256 {original}, but the patch was written for {} (toolchains.lock); \
                     the crate changed: update the pin and the edit in xtask/src/inputs/patch.rs together",
                    pin.name,
                    pin.version,
                    file.path,
                    file.original_sha256
                );
            }
            let patched = apply_edits(&pin.name, &file.path, &text)?;
            let digest = sha256_bytes(patched.as_bytes());
            if digest != file.patched_sha256 {
                bail!(
                    "{} {}: {} patched has sha256 {digest}, toolchains.lock pins {}",
                    pin.name,
                    pin.version,
                    file.path,
                    file.patched_sha256
                );
            }
            fs::write(&path, patched)?;
        }
        fs::write(root.join(MARKER), marker_text(pin))?;
        if destination.exists() {
            fs::remove_dir_all(destination)?;
        }
        fs::create_dir_all(destination.parent().context("a destination has a parent")?)?;
        fs::rename(&root, destination)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

fn apply_edits(krate: &str, path: &str, text: &str) -> Result<String> {
    let edits: Vec<&Edit> = EDITS.iter().filter(|edit| edit.krate == krate && edit.path == path).collect();
    if edits.is_empty() {
        bail!("toolchains.lock pins a patch of {krate} {path}, but xtask/src/inputs/patch.rs has no edit for it");
    }
    let mut text = text.to_owned();
    for edit in edits {
        let found = text.matches(edit.find).count();
        if found != 1 {
            bail!("{krate} {path}: the text to replace occurs {found} times, expected once: {:?}", edit.find);
        }
        text = text.replacen(edit.find, edit.replace, 1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::lock::PatchedFile;

    const ORIGINAL: &str = "use std::{\n    collections::HashMap,\n    fs,\n};\n";

    /// A `.crate` (tar.gz) holding `rustpython-derive-impl-0.6.0/src/compile_bytecode.rs`.
    fn fake_crate(directory: &Path, source: &str) -> PathBuf {
        let path = directory.join("rustpython-derive-impl-0.6.0.crate");
        let file = fs::File::create(&path).unwrap();
        let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_size(source.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "rustpython-derive-impl-0.6.0/src/compile_bytecode.rs", source.as_bytes())
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    fn pin_for(crate_file: &Path, original: &str, patched: &str) -> PatchedCrate {
        PatchedCrate {
            name: "rustpython-derive-impl".into(),
            version: "0.6.0".into(),
            crate_sha256: sha256_file(crate_file).unwrap(),
            files: vec![PatchedFile {
                path: "src/compile_bytecode.rs".into(),
                original_sha256: sha256_bytes(original.as_bytes()),
                patched_sha256: sha256_bytes(patched.as_bytes()),
            }],
        }
    }

    #[test]
    fn the_pinned_original_is_patched() {
        let directory = tempfile::tempdir().unwrap();
        let crate_file = fake_crate(directory.path(), ORIGINAL);
        let expected = "use std::{\n    collections::BTreeMap as HashMap,\n    fs,\n};\n";
        let pin = pin_for(&crate_file, ORIGINAL, expected);
        let destination = directory.path().join("derived");
        derive(&crate_file, &pin, &destination).unwrap();
        assert_eq!(fs::read_to_string(destination.join("src/compile_bytecode.rs")).unwrap(), expected);
    }

    #[test]
    fn an_original_with_another_digest_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        // The crate is what the pin says, but the file inside is not the one the edit was
        // written for (as after a version bump that kept the old file digests).
        let changed = ORIGINAL.replace("fs,", "fs, io,");
        let crate_file = fake_crate(directory.path(), &changed);
        let mut pin = pin_for(&crate_file, ORIGINAL, "unused");
        pin.crate_sha256 = sha256_file(&crate_file).unwrap();
        let destination = directory.path().join("derived");
        let error = format!("{:#}", derive(&crate_file, &pin, &destination).unwrap_err());
        assert!(error.contains("src/compile_bytecode.rs has sha256"), "{error}");
        assert!(error.contains("the patch was written for"), "{error}");
        assert!(!destination.exists(), "nothing is left where the build would look");
    }

    #[test]
    fn a_crate_that_is_not_the_pinned_one_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let crate_file = fake_crate(directory.path(), ORIGINAL);
        let mut pin = pin_for(&crate_file, ORIGINAL, "unused");
        pin.crate_sha256 = "0".repeat(64);
        let error = format!("{:#}", derive(&crate_file, &pin, &directory.path().join("derived")).unwrap_err());
        assert!(error.contains("is not the pinned rustpython-derive-impl 0.6.0"), "{error}");
    }

    #[test]
    fn the_repository_pin_matches_the_edit() {
        // The patched digest in toolchains.lock is what the edit makes of the pinned original;
        // checked on the real crate when cargo's cache has it (any machine that built once).
        let lock = crate::inputs::lock::Lock::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../toolchains.lock")).unwrap();
        for pin in &lock.patched_crates {
            for file in &pin.files {
                assert!(
                    EDITS.iter().any(|edit| edit.krate == pin.name && edit.path == file.path),
                    "{} {} has no edit",
                    pin.name,
                    file.path
                );
            }
            if let Some(crate_file) = find_in_cargo_cache(pin).unwrap() {
                let directory = tempfile::tempdir().unwrap();
                derive(&crate_file, pin, &directory.path().join("derived")).unwrap();
            }
        }
    }
}
