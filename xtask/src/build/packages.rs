//! Package sets (`build-runtime --packages FILE`): the wheels of a lock file
//! (`lock-packages`), unpacked into one site-packages tree per set, which the set's sandbox
//! components mount read-only and import from before their snapshot.
//!
//! The tree is made from the verified wheels alone and is the same bytes for the same lock:
//! entries are checked (no absolute paths, no `..`, no native code, no bytecode), written in a
//! fixed order with fixed permissions (0644), and two wheels may not write one path with
//! different contents.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::inputs::cache::{self, sha256_bytes};
use crate::inputs::packages::FetchedWheel;

/// Where a set's tree is mounted in its sandboxes (and put on `sys.path` after the stdlib).
pub const GUEST_PATH: &str = "/site-packages";
/// This file: how a tree is made (a change rewrites every tree).
pub const SOURCE: &str = "xtask/src/build/packages.rs";
/// The file beside a set's tree that names the lock it was made from.
pub const LOCK_RECORD: &str = "lock-path";
/// The repository's own package sets: `cargo xtask test` builds both variants with them, and
/// the vendor bundle always carries their wheels.
pub const REPOSITORY_SETS: &[&str] = &["tests/packages/sandbox-set.lock"];

/// A package set, as the build uses it.
pub struct PackageSet {
    /// The lock file's stem: the `<set>` in `<variant>+<set>`.
    pub name: String,
    pub lock: PathBuf,
    pub lock_sha256: String,
    pub wheels: Vec<FetchedWheel>,
    /// The modules imported before the snapshot: the wheels' top-level modules, adjusted by
    /// the lock's `.imports` file when there is one.
    pub imports: Vec<String>,
}

impl PackageSet {
    /// The set of the lock file `lock`, with its wheels already in the verified cache.
    pub fn new(lock: &Path, wheels: Vec<FetchedWheel>) -> Result<PackageSet> {
        let name = lock
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|stem| !stem.is_empty() && stem.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'))
            .with_context(|| format!("{}: a package set's name is its lock file's stem, in letters, digits, `-` and `_`", lock.display()))?
            .to_owned();
        let lock_sha256 = sha256_bytes(&fs::read(lock).with_context(|| format!("read {}", lock.display()))?);
        let mut imports = BTreeSet::new();
        for wheel in &wheels {
            imports.extend(top_level_modules(&wheel.path).with_context(|| format!("read {}", wheel.file_name))?);
        }
        let adjustments = lock.with_extension("imports");
        if adjustments.exists() {
            let text = fs::read_to_string(&adjustments).with_context(|| format!("read {}", adjustments.display()))?;
            for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
                let module = line.trim_start_matches('-').trim();
                if module.is_empty() || !module.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())) {
                    bail!("{}: `{line}` is not a module name (or `-` and one)", adjustments.display());
                }
                match line.strip_prefix('-') {
                    Some(removed) => {
                        if !imports.remove(removed.trim()) {
                            bail!("{}: `{line}` removes a module the set does not import", adjustments.display());
                        }
                    }
                    None => {
                        imports.insert(line.to_owned());
                    }
                }
            }
        }
        Ok(PackageSet { name, lock: lock.to_path_buf(), lock_sha256, wheels, imports: imports.into_iter().collect() })
    }

    /// `<variant>+<set>`.
    pub fn variant_name(&self, variant: &str) -> String {
        format!("{variant}+{}", self.name)
    }

    /// The set's form of one of the variant's artifacts: `runtime-<variant>+<set>.wasm` for
    /// `runtime-<variant>.wasm`, `runtime-<variant>+<set>.cwasm` for its `.cwasm`.
    pub fn component(&self, artifact: &str) -> String {
        match artifact.split_once('.') {
            Some((stem, extension)) => format!("{stem}+{}.{extension}", self.name),
            None => format!("{artifact}+{}", self.name),
        }
    }
}

/// The directory a set's tree is written to.
pub fn tree_dir(artifacts: &Path, set: &str) -> PathBuf {
    artifacts.join("packages").join(set).join("site-packages")
}

/// What makes a path in a wheel native code the sandboxes cannot load.
fn is_native(path: &str) -> bool {
    [".so", ".pyd", ".dylib", ".dll", ".wasm"].iter().any(|suffix| path.ends_with(suffix)) || path.contains(".so.")
}

/// Compiled bytecode: Python could run it instead of the source beside it (an unchecked-hash
/// `.pyc` is never compared with its source), so a wheel may not bring its own.
fn is_bytecode(path: &str) -> bool {
    path.ends_with(".pyc") || path.ends_with(".pyo") || path.split('/').any(|part| part == "__pycache__")
}

/// A wheel's entries as the tree receives them: `(path in site-packages, contents)`. Entries
/// under `<name>.data/purelib/` and `platlib/` go to the top; the rest of `.data` (scripts,
/// headers, data files) has no place in a sandbox and is left out.
fn wheel_entries(wheel: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = fs::File::open(wheel)?;
    let mut archive = zip::ZipArchive::new(file).context("a wheel is a zip archive")?;
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index)?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_owned();
        if name.starts_with('/') || name.contains('\\') || name.split('/').any(|part| part == ".." || part == "." || part.is_empty()) {
            bail!("entry `{name}` is not a plain relative path");
        }
        if entry.is_symlink() {
            bail!("entry `{name}` is a symbolic link");
        }
        let mut parts = name.splitn(3, '/');
        let first = parts.next().unwrap_or_default();
        let target = if first.ends_with(".data") {
            match (parts.next(), parts.next()) {
                (Some("purelib" | "platlib"), Some(rest)) => rest.to_owned(),
                _ => continue,
            }
        } else {
            name.clone()
        };
        if is_native(&target) {
            bail!("entry `{name}` is native code; the sandboxes load pure Python only");
        }
        if is_bytecode(&target) {
            bail!("entry `{name}` is compiled bytecode, which could differ from its source; a pure wheel ships sources");
        }
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).with_context(|| format!("read entry `{name}`"))?;
        entries.push((target, contents));
    }
    Ok(entries)
}

/// The modules a wheel provides at the top of site-packages: its packages and modules, and
/// for a namespace package (a directory without `__init__.py`, e.g. `jaraco`) the packages
/// and modules inside it. Private names (`_…`) and metadata are left out.
fn top_level_modules(wheel: &Path) -> Result<BTreeSet<String>> {
    let paths: Vec<String> = wheel_entries(wheel)?.into_iter().map(|(path, _)| path).collect();
    let is_package = |prefix: &str| paths.iter().any(|path| path == &format!("{prefix}/__init__.py"));
    let module_of = |prefix: &str, part: &str| -> Option<String> {
        let name = part.strip_suffix(".py").unwrap_or(part);
        let ok = !name.starts_with('_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty();
        ok.then(|| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") })
    };
    let mut modules = BTreeSet::new();
    for path in &paths {
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [file] if file.ends_with(".py") => modules.extend(module_of("", file)),
            [top, ..] if top.ends_with(".dist-info") => {}
            [top, _, ..] if is_package(top) => modules.extend(module_of("", top)),
            [top, file] if file.ends_with(".py") => modules.extend(module_of(top, file)),
            [top, inner, _, ..] if is_package(&format!("{top}/{inner}")) => modules.extend(module_of(top, inner)),
            _ => {}
        }
    }
    Ok(modules)
}

/// What a wheel says of itself in its `METADATA`, for the SBOM.
pub struct WheelMetadata {
    /// `License-Expression`, else the first line of `License`, when the wheel says.
    pub license: Option<String>,
    /// The normalised names of the distributions it requires (`Requires-Dist`, any marker).
    pub requires: Vec<String>,
}

/// Reads `<name>.dist-info/METADATA` of a wheel.
pub fn wheel_metadata(wheel: &Path) -> Result<WheelMetadata> {
    let file = fs::File::open(wheel)?;
    let mut archive = zip::ZipArchive::new(file).context("a wheel is a zip archive")?;
    let name = archive
        .file_names()
        .find(|name| name.ends_with(".dist-info/METADATA") && name.matches('/').count() == 1)
        .map(str::to_owned)
        .with_context(|| format!("{} has no .dist-info/METADATA", wheel.display()))?;
    let mut text = String::new();
    archive.by_name(&name)?.read_to_string(&mut text).context("read METADATA")?;
    // The headers end at the first empty line (the description follows).
    let headers: Vec<(&str, &str)> =
        text.lines().take_while(|line| !line.is_empty()).filter_map(|line| line.split_once(": ")).collect();
    let field = |key: &str| headers.iter().find(|(name, _)| name.eq_ignore_ascii_case(key)).map(|(_, value)| value.trim().to_owned());
    let license = field("License-Expression").or_else(|| field("License")).filter(|value| !value.is_empty() && value != "UNKNOWN");
    let mut requires: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Requires-Dist"))
        .map(|(_, value)| {
            let end = value.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))).unwrap_or(value.len());
            crate::inputs::packages::normalized(&value[..end])
        })
        .collect();
    requires.sort();
    requires.dedup();
    Ok(WheelMetadata { license, requires })
}

/// Writes the set's tree into `out` (replacing it whole): every wheel's entries, checked.
pub fn write_tree(set: &PackageSet, out: &Path) -> Result<()> {
    let mut files: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
    for wheel in &set.wheels {
        for (path, contents) in wheel_entries(&wheel.path).with_context(|| format!("unpack {}", wheel.file_name))? {
            if let Some((existing, from)) = files.get(&path) {
                if *existing != contents {
                    bail!("{} and {} both write `{path}`, with different contents", from, wheel.file_name);
                }
                continue;
            }
            files.insert(path, (contents, wheel.file_name.clone()));
        }
    }
    // A file where another wheel needs a directory (`a` and `a/b.py`).
    for (path, (_, from)) in &files {
        let mut prefix = path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if let Some((_, other)) = files.get(parent) {
                bail!("{other} writes the file `{parent}`, where {from} writes `{path}`");
            }
            prefix = parent;
        }
    }
    fs::create_dir_all(out.parent().context("the tree has a parent")?)?;
    cache::replace_dir_atomically(out, |staging| {
        use std::os::unix::fs::PermissionsExt;
        for (path, (contents, _)) in &files {
            let target = staging.join(path);
            fs::create_dir_all(target.parent().context("a file has a directory")?)?;
            fs::write(&target, contents).with_context(|| format!("write {}", target.display()))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o644))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel(directory: &Path, name: &str, entries: &[(&str, &str)]) -> PathBuf {
        let path = directory.join(name);
        let mut writer = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        for (entry, contents) in entries {
            writer.start_file(*entry, zip::write::SimpleFileOptions::default()).unwrap();
            writer.write_all(contents.as_bytes()).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    #[test]
    fn top_level_modules_include_namespace_packages_and_leave_out_private_names() {
        let directory = tempfile::tempdir().unwrap();
        let path = wheel(
            directory.path(),
            "a-1-py3-none-any.whl",
            &[
                ("tabulate/__init__.py", ""),
                ("tabulate/version.py", ""),
                ("six.py", ""),
                ("_private.py", ""),
                ("jaraco/functools/__init__.py", ""),
                ("more_itertools/py.typed", ""),
                ("more_itertools/__init__.py", ""),
                ("a-1.dist-info/METADATA", ""),
                ("a-1.data/purelib/extra.py", ""),
                ("a-1.data/scripts/tool", ""),
            ],
        );
        let modules: Vec<String> = top_level_modules(&path).unwrap().into_iter().collect();
        assert_eq!(modules, ["extra", "jaraco.functools", "more_itertools", "six", "tabulate"]);
    }

    #[test]
    fn a_sets_artifacts_are_named_apart_from_the_variants() {
        let set = PackageSet { name: "sandbox-set".into(), lock: PathBuf::new(), lock_sha256: String::new(), wheels: Vec::new(), imports: Vec::new() };
        assert_eq!(set.component("runtime-cpython.wasm"), "runtime-cpython+sandbox-set.wasm");
        assert_eq!(set.component("runtime-cpython.cwasm"), "runtime-cpython+sandbox-set.cwasm");
        assert_eq!(set.variant_name("rustpython"), "rustpython+sandbox-set");
    }

    fn set_of(directory: &Path, wheels: &[(&str, &[(&str, &str)])]) -> PackageSet {
        let wheels = wheels
            .iter()
            .map(|(name, entries)| FetchedWheel {
                pin: crate::inputs::packages::Pin { name: name.to_string(), version: "1".into(), sha256: String::new() },
                file_name: format!("{name}-1-py3-none-any.whl"),
                path: wheel(directory, &format!("{name}-1-py3-none-any.whl"), entries),
            })
            .collect();
        PackageSet { name: "test".into(), lock: PathBuf::new(), lock_sha256: String::new(), wheels, imports: Vec::new() }
    }

    #[test]
    fn a_tree_is_the_same_bytes_each_time_and_collisions_are_named() {
        let directory = tempfile::tempdir().unwrap();
        let set = set_of(directory.path(), &[("a", &[("a/__init__.py", "x = 1\n"), ("shared.py", "same\n")]), ("b", &[("b.py", ""), ("shared.py", "same\n")])]);
        let (first, second) = (directory.path().join("one"), directory.path().join("two"));
        write_tree(&set, &first).unwrap();
        write_tree(&set, &second).unwrap();
        let digest = crate::inputs::unpacked::tree_digest;
        assert_eq!(digest(&first).unwrap(), digest(&second).unwrap(), "the same wheels give the same tree");
        assert_eq!(fs::read_to_string(first.join("a/__init__.py")).unwrap(), "x = 1\n");

        let clash = set_of(directory.path(), &[("c", &[("shared.py", "one\n")]), ("d", &[("shared.py", "two\n")])]);
        let error = format!("{:#}", write_tree(&clash, &directory.path().join("three")).unwrap_err());
        assert!(error.contains("both write `shared.py`, with different contents"), "{error}");
        let file_and_directory = set_of(directory.path(), &[("e", &[("pkg", "")]), ("f", &[("pkg/m.py", "")])]);
        let error = format!("{:#}", write_tree(&file_and_directory, &directory.path().join("four")).unwrap_err());
        assert!(error.contains("writes the file `pkg`"), "{error}");
        assert!(!directory.path().join("three").exists() && !directory.path().join("four").exists(), "a refused set leaves no tree");
    }

    #[test]
    fn metadata_gives_the_license_and_the_required_names() {
        let directory = tempfile::tempdir().unwrap();
        let metadata = "Metadata-Version: 2.4\nName: Tabulate\nLicense-Expression: MIT\nRequires-Dist: wcwidth; extra == \"widechars\"\nRequires-Dist: Six>=1.5\n\nLicense: not a header\n";
        let path = wheel(directory.path(), "t-1-py3-none-any.whl", &[("t-1.dist-info/METADATA", metadata), ("t.py", "")]);
        let read = wheel_metadata(&path).unwrap();
        assert_eq!(read.license.as_deref(), Some("MIT"));
        assert_eq!(read.requires, ["six", "wcwidth"]);
    }

    #[test]
    fn bytecode_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = wheel(directory.path(), "p-1-py3-none-any.whl", &[("p/__init__.py", ""), ("p/__pycache__/m.cpython-314.pyc", "")]);
        let error = format!("{:#}", wheel_entries(&path).unwrap_err());
        assert!(error.contains("compiled bytecode"), "{error}");
    }

    #[test]
    fn native_code_and_escaping_paths_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let native = wheel(directory.path(), "n-1-py3-none-any.whl", &[("n/__init__.py", ""), ("n/_speedups.cpython-314-x86_64-linux-gnu.so", "")]);
        let error = format!("{:#}", wheel_entries(&native).unwrap_err());
        assert!(error.contains("native code"), "{error}");
        let escaping = wheel(directory.path(), "e-1-py3-none-any.whl", &[("../evil.py", "")]);
        let error = format!("{:#}", wheel_entries(&escaping).unwrap_err());
        assert!(error.contains("not a plain relative path"), "{error}");
    }
}
