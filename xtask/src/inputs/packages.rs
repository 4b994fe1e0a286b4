//! `cargo xtask lock-packages IN --out OUT`: a loose list of Python requirements, resolved by
//! pip (the ordinary client, with the machine's own index configuration) into a lock file in
//! pip's hash-checking format: `name==version --hash=sha256:…` for every package, dependencies
//! included, for the sandboxes' Python and pure-Python wheels only (the sandboxes cannot load
//! native extensions: no one builds them for wasm32-wasi here yet).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::inputs::cache::{write_atomic, Cache};
use crate::inputs::sources::Sources;
use crate::workspace::Workspace;

/// The Python both guests implement: what the lock resolves for.
pub const SANDBOX_PYTHON: &str = "3.14";

#[derive(clap::Args)]
pub struct Args {
    /// The loose list: pip requirement lines (`tabulate`, `attrs>=23`, `-r other.txt`, …)
    input: PathBuf,
    /// Where the lock file goes (written whole, or not at all)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The Python that runs pip
    #[arg(long, default_value = "python3", value_name = "PROGRAM")]
    python: String,
}

/// One locked package: the wheel pip chose for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// As the package names itself (the lock sorts and compares by its normalised form).
    pub name: String,
    pub version: String,
    pub wheel: String,
    pub sha256: String,
}

pub fn run(workspace: &Workspace, args: &Args) -> Result<()> {
    let input = fs::canonicalize(&args.input).with_context(|| format!("read the requirements {}", args.input.display()))?;
    let scratch = Scratch::new(workspace)?;
    eprintln!("lock-packages: resolving {} for Python {SANDBOX_PYTHON}, pure-Python wheels only (pip)", input.display());
    let report = match resolve(&args.python, &input, &scratch.path, Platform::Pure)? {
        Ok(report) => report,
        Err(pip_said) => {
            // Which packages have no pure wheel: resolve again as for this machine, and name
            // the ones whose wheel is native.
            let packages = match resolve(&args.python, &input, &scratch.path, Platform::ThisMachine)? {
                Ok(report) => parse_report(&report)?,
                Err(_) => bail!("pip could not resolve {}:\n{pip_said}", input.display()),
            };
            bail!("{}", refusal(&packages).unwrap_or(pip_said));
        }
    };
    let packages = parse_report(&report)?;
    if let Some(refused) = refusal(&packages).or_else(|| evaluated_elsewhere(&report)) {
        bail!("{refused}");
    }
    let source = input.file_name().map_or_else(|| input.display().to_string(), |name| name.to_string_lossy().into_owned());
    let text = lock_text(&packages, &source);
    // What is written reads back as a lock (a name pip reports twice, a version that is not
    // one, would not).
    read_lock(&text).context("the lock made from pip's report does not read back")?;
    write_atomic(&args.out, text.as_bytes())?;
    eprintln!("lock-packages: {} package(s) locked into {}", packages.len(), args.out.display());
    Ok(())
}

/// What pip resolves for.
#[derive(Clone, Copy)]
enum Platform {
    /// The sandboxes: Python 3.14, any implementation's pure wheels (ABI `none`, platform
    /// `any`).
    Pure,
    /// This machine's own platform (to find out which packages are native).
    ThisMachine,
}

/// Runs pip's resolver (nothing installed) and answers its JSON report, or what pip said when
/// it could not resolve.
fn resolve(python: &str, input: &Path, scratch: &Path, platform: Platform) -> Result<Result<Value, String>> {
    let report = scratch.join("report.json");
    let _ = fs::remove_file(&report);
    let mut pip = Command::new(python);
    pip.args(["-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--no-input", "--disable-pip-version-check"])
        .args(["--only-binary=:all:", "--python-version", SANDBOX_PYTHON])
        .arg("--target")
        .arg(scratch.join("target"))
        .arg("--report")
        .arg(&report)
        .arg("-r")
        .arg(input);
    if let Platform::Pure = platform {
        pip.args(["--implementation", "py", "--abi", "none", "--platform", "any"]);
    }
    let output = pip.output().with_context(|| format!("run `{python} -m pip` (install pip, or name another Python with --python)"))?;
    if !output.status.success() {
        return Ok(Err(String::from_utf8_lossy(&output.stderr).trim().to_owned()));
    }
    let text = fs::read_to_string(&report).with_context(|| format!("read pip's report {}", report.display()))?;
    Ok(Ok(serde_json::from_str(&text).context("parse pip's report")?))
}

/// The packages of a pip installation report (`pip install --report`).
pub fn parse_report(report: &Value) -> Result<Vec<Locked>> {
    let Some(install) = report.get("install").and_then(Value::as_array) else {
        bail!("pip's report has no `install` list (a pip older than 23 does not write one)");
    };
    install
        .iter()
        .map(|item| {
            let field = |path: &[&str]| -> Option<&str> {
                path.iter().try_fold(item, |value, key| value.get(key)).and_then(Value::as_str)
            };
            let name = field(&["metadata", "name"]).context("a package in pip's report has no name")?;
            let version = field(&["metadata", "version"]).with_context(|| format!("`{name}` has no version in pip's report"))?;
            let url = field(&["download_info", "url"]).with_context(|| format!("`{name}` has no download in pip's report"))?;
            let path = url.split(['#', '?']).next().unwrap_or(url);
            let wheel = path.rsplit('/').next().unwrap_or(path).to_owned();
            let sha256 = field(&["download_info", "archive_info", "hashes", "sha256"])
                .map(str::to_owned)
                .or_else(|| field(&["download_info", "archive_info", "hash"]).and_then(|hash| hash.strip_prefix("sha256=")).map(str::to_owned))
                .with_context(|| format!("`{name}` has no sha256 in pip's report"))?;
            if sha256.len() != 64 || !sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                bail!("`{name}`: pip's report gives `{sha256}` as its sha256");
            }
            Ok(Locked { name: name.to_owned(), version: version.to_owned(), wheel, sha256: sha256.to_ascii_lowercase() })
        })
        .collect()
}

/// The variables of PEP 508 markers that describe the Python and platform running pip.
const ENVIRONMENT_MARKERS: &[&str] = &[
    "python_version",
    "python_full_version",
    "implementation_name",
    "implementation_version",
    "platform_python_implementation",
    "platform_system",
    "platform_machine",
    "platform_release",
    "platform_version",
    "sys_platform",
    "os_name",
];

/// pip evaluates environment markers for the Python that runs it, whatever `--python-version`
/// says. When that is not the sandboxes' Python, a dependency whose marker depends on the
/// environment may have been taken or left out wrongly: refused, naming it (dependencies
/// behind extras that were not asked for do not count).
pub fn evaluated_elsewhere(report: &Value) -> Option<String> {
    let environment = report.get("environment")?;
    let version = environment.get("python_version").and_then(Value::as_str).unwrap_or("?");
    if version == SANDBOX_PYTHON {
        return None;
    }
    let mut dependent = Vec::new();
    for item in report.get("install").and_then(Value::as_array).into_iter().flatten() {
        let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
        let requirements = item.pointer("/metadata/requires_dist").and_then(Value::as_array);
        for requirement in requirements.into_iter().flatten().filter_map(Value::as_str) {
            let Some((_, marker)) = requirement.split_once(';') else { continue };
            if marker.contains("extra") {
                continue;
            }
            if ENVIRONMENT_MARKERS.iter().any(|variable| marker.contains(variable)) {
                dependent.push(format!("{name} needs `{}`", requirement.trim()));
            }
        }
    }
    if dependent.is_empty() {
        return None;
    }
    Some(format!(
        "pip evaluated these dependencies' markers for the Python that runs it ({version} on {}), not for \
         the sandboxes' Python {SANDBOX_PYTHON}: {}. Run lock-packages with `--python` naming a Python \
         {SANDBOX_PYTHON}",
        environment.get("sys_platform").and_then(Value::as_str).unwrap_or("?"),
        dependent.join("; ")
    ))
}

/// A package name in its normalised form (lower case, runs of `-`, `_` and `.` as one `-`).
pub fn normalized(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for part in name.split(['-', '_', '.']).filter(|part| !part.is_empty()) {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&part.to_ascii_lowercase());
    }
    out
}

/// Whether a wheel's file name says it holds no native code: every tag triple it names has
/// ABI `none` and platform `any` (`py3-none-any`, `py2.py3-none-any`, `cp314-none-any`).
pub fn is_pure_wheel(file_name: &str) -> bool {
    let Some(stem) = file_name.strip_suffix(".whl") else { return false };
    let parts: Vec<&str> = stem.split('-').collect();
    // name-version[-build]-python-abi-platform
    if parts.len() < 5 {
        return false;
    }
    let (abi, platform) = (parts[parts.len() - 2], parts[parts.len() - 1]);
    abi.split('.').all(|abi| abi == "none") && platform.split('.').all(|platform| platform == "any")
}

/// Why a resolved set cannot be locked: the packages whose wheels are native, named.
pub fn refusal(packages: &[Locked]) -> Option<String> {
    let native: Vec<String> = packages
        .iter()
        .filter(|package| !is_pure_wheel(&package.wheel))
        .map(|package| format!("{} {} (only {})", package.name, package.version, package.wheel))
        .collect();
    if native.is_empty() {
        return None;
    }
    Some(format!(
        "no pure-Python wheel for: {}. The sandboxes run Python in WebAssembly: a native extension \
         needs a wasm32-wasi build of it, which this project does not make yet; leave the package \
         out, or use a pure-Python alternative",
        native.join(", ")
    ))
}

/// The lock file: a header saying what it is, then one hash-checked requirement per package,
/// sorted by normalised name (the same set gives the same bytes).
pub fn lock_text(packages: &[Locked], source: &str) -> String {
    let mut sorted: Vec<&Locked> = packages.iter().collect();
    sorted.sort_by_key(|package| normalized(&package.name));
    let mut text = format!(
        "# Locked by `cargo xtask lock-packages` from {source}: every package (dependencies\n\
         # included) for Python {SANDBOX_PYTHON}, pure-Python wheels only, each pinned by the sha256\n\
         # of its wheel. pip reads it in hash-checking mode: `pip install --require-hashes -r FILE`.\n"
    );
    for package in sorted {
        text.push_str(&format!("{}=={} \\\n    --hash=sha256:{}\n", normalized(&package.name), package.version, package.sha256));
    }
    text
}

/// One requirement of a lock file: what `--packages FILE` will install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// Reads a lock file as [`lock_text`] writes it: comments, then `name==version` with one
/// `--hash=sha256:` each (continued lines joined), names normalised, sorted and unique.
pub fn read_lock(text: &str) -> Result<Vec<Pin>> {
    let joined = text.replace("\\\n", " ");
    let mut pins: Vec<Pin> = Vec::new();
    for (number, line) in joined.lines().enumerate().map(|(index, line)| (index + 1, line.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (requirement, hash) = match fields.as_slice() {
            [requirement, hash] => (*requirement, *hash),
            _ => bail!("lock line {number}: expected `name==version --hash=sha256:…`, found `{line}`"),
        };
        let (name, version) = requirement.split_once("==").with_context(|| format!("lock line {number}: `{requirement}` pins no version"))?;
        let sha256 = hash.strip_prefix("--hash=sha256:").with_context(|| format!("lock line {number}: `{hash}` is no sha256"))?;
        if sha256.len() != 64 || !sha256.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            bail!("lock line {number}: `{sha256}` is no sha256 (64 lower-case hex digits)");
        }
        if name.is_empty() || normalized(name) != name || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
            bail!("lock line {number}: `{name}` is not a package name in its normalised form");
        }
        if version.is_empty() || !version.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'+' | b'!' | b'-' | b'_')) {
            bail!("lock line {number}: `{version}` is not a version (no markers or ranges in a lock)");
        }
        if let Some(last) = pins.last() {
            if last.name.as_str() >= name {
                bail!("lock line {number}: `{name}` comes after `{}` (names are sorted and unique)", last.name);
            }
        }
        pins.push(Pin { name: name.to_owned(), version: version.to_owned(), sha256: sha256.to_owned() });
    }
    Ok(pins)
}

/// A directory of this run's own (pip's report and target), removed when the run ends.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(workspace: &Workspace) -> Result<Scratch> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
        let path = workspace.target_dir.join(format!("eryx-lock-packages-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report in the shape pip 23–25 writes: one package with `hashes`, one with the older
    /// single `hash`, one native wheel.
    fn report() -> Value {
        serde_json::json!({
            "version": "1",
            "install": [
                {"metadata": {"name": "Six", "version": "1.17.0"},
                 "download_info": {"url": "https://example.invalid/packages/six-1.17.0-py2.py3-none-any.whl",
                                   "archive_info": {"hash": "sha256=4721F391ED90541FDDACAB5ACF947AA0D3DC7D27B2E1E8EDA2BE8970586C3274"}}},
                {"metadata": {"name": "python_dateutil", "version": "2.9.0.post0"},
                 "download_info": {"url": "https://example.invalid/python_dateutil-2.9.0.post0-py2.py3-none-any.whl#sha256=x",
                                   "archive_info": {"hashes": {"sha256": "a8b2bc7bffae282281c8140a97d3aa9c14da0b136dfe83f850eea9a5f7470427"}}}},
            ]
        })
    }

    #[test]
    fn a_report_becomes_a_sorted_hash_checked_lock() {
        let packages = parse_report(&report()).unwrap();
        assert_eq!(packages[0].wheel, "six-1.17.0-py2.py3-none-any.whl");
        assert_eq!(packages[1].wheel, "python_dateutil-2.9.0.post0-py2.py3-none-any.whl", "the URL's fragment is no part of the name");
        let text = lock_text(&packages, "set.in");
        let requirements: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            requirements,
            [
                "python-dateutil==2.9.0.post0 \\",
                "    --hash=sha256:a8b2bc7bffae282281c8140a97d3aa9c14da0b136dfe83f850eea9a5f7470427",
                "six==1.17.0 \\",
                "    --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
            ]
        );
        assert!(text.starts_with("# Locked by `cargo xtask lock-packages` from set.in"));
        let mut reversed = packages.clone();
        reversed.reverse();
        assert_eq!(lock_text(&reversed, "set.in"), text, "the order pip reports in does not matter");
    }

    #[test]
    fn a_package_without_a_hash_or_with_a_bad_one_is_an_error() {
        let mut report = report();
        report["install"][0]["download_info"]["archive_info"] = serde_json::json!({});
        assert!(parse_report(&report).unwrap_err().to_string().contains("`Six` has no sha256"));
        report["install"][0]["download_info"]["archive_info"] = serde_json::json!({"hash": "sha256=abc"});
        assert!(parse_report(&report).unwrap_err().to_string().contains("gives `abc`"));
        assert!(parse_report(&serde_json::json!({})).is_err());
    }

    #[test]
    fn native_wheels_are_refused_by_name() {
        assert!(is_pure_wheel("tzdata-2026.6-py2.py3-none-any.whl"));
        assert!(is_pure_wheel("attrs-25.3.0-py3-none-any.whl"));
        assert!(is_pure_wheel("example-1.0-1build-cp314-none-any.whl"));
        assert!(!is_pure_wheel("numpy-2.4.6-cp314-cp314-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"));
        assert!(!is_pure_wheel("cffi-2.0.0-cp314-cp314-win_amd64.whl"));
        assert!(!is_pure_wheel("mixed-1.0-py3-abi3.none-any.whl"));
        assert!(!is_pure_wheel("example-1.0.tar.gz"));
        let mut packages = parse_report(&report()).unwrap();
        assert_eq!(refusal(&packages), None);
        packages.push(Locked {
            name: "numpy".into(),
            version: "2.4.6".into(),
            wheel: "numpy-2.4.6-cp314-cp314-manylinux_2_28_x86_64.whl".into(),
            sha256: "0".repeat(64),
        });
        let refused = refusal(&packages).unwrap();
        assert!(refused.contains("no pure-Python wheel for: numpy 2.4.6 (only numpy-2.4.6-cp314-cp314-manylinux_2_28_x86_64.whl)"), "{refused}");
        assert!(refused.contains("wasm32-wasi build"), "{refused}");
    }

    #[test]
    fn a_lock_reads_back_as_it_was_written() {
        let packages = parse_report(&report()).unwrap();
        let pins = read_lock(&lock_text(&packages, "set.in")).unwrap();
        assert_eq!(pins.iter().map(|pin| (pin.name.as_str(), pin.version.as_str())).collect::<Vec<_>>(), [("python-dateutil", "2.9.0.post0"), ("six", "1.17.0")]);
        assert!(read_lock("six==1.0 --hash=sha256:abc").unwrap_err().to_string().contains("is no sha256"));
        assert!(read_lock("six --hash=sha256:".to_owned().as_str()).is_err());
        let unsorted = format!("six==1.0 --hash=sha256:{0}\nattrs==1.0 --hash=sha256:{0}\n", "a".repeat(64));
        assert!(read_lock(&unsorted).unwrap_err().to_string().contains("comes after"));
        let marker = format!("tzdata==2026.6;python_version<\"3\" --hash=sha256:{}", "a".repeat(64));
        assert!(read_lock(&marker).unwrap_err().to_string().contains("is not a version"));
        assert!(read_lock(&format!("==1.0 --hash=sha256:{}", "a".repeat(64))).is_err(), "an empty name");
    }

    /// The repository's package set: its lock is in the form `lock-packages` writes.
    #[test]
    fn the_committed_package_lock_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = fs::read_to_string(root.join("tests/packages/sandbox-set.lock")).unwrap();
        let pins = read_lock(&text).unwrap();
        let names: Vec<&str> = pins.iter().map(|pin| pin.name.as_str()).collect();
        for wanted in ["attrs", "jaraco-functools", "more-itertools", "python-dateutil", "tabulate", "tzdata"] {
            assert!(names.contains(&wanted), "{wanted} is not in the lock: {names:?}");
        }
    }

    #[test]
    fn markers_pip_evaluated_for_another_python_are_refused() {
        let mut report = report();
        report["environment"] = serde_json::json!({"python_version": "3.11", "sys_platform": "linux"});
        report["install"][0]["metadata"]["requires_dist"] =
            serde_json::json!(["typing-extensions; python_version < \"3.13\"", "pytest; extra == \"test\"", "plain"]);
        let refused = evaluated_elsewhere(&report).unwrap();
        assert!(refused.contains("Six needs `typing-extensions; python_version < \"3.13\"`"), "{refused}");
        assert!(!refused.contains("pytest"), "{refused}");
        report["environment"]["python_version"] = serde_json::json!(SANDBOX_PYTHON);
        assert_eq!(evaluated_elsewhere(&report), None, "pip ran under the sandboxes' Python");
        report["environment"]["python_version"] = serde_json::json!("3.11");
        report["install"][0]["metadata"]["requires_dist"] = serde_json::json!(["plain", "pytest; extra == \"test\""]);
        assert_eq!(evaluated_elsewhere(&report), None, "no marker depends on the environment");
    }

    #[test]
    fn a_query_does_not_change_the_wheels_name() {
        let mut report = report();
        report["install"][0]["download_info"]["url"] = serde_json::json!("https://example.invalid/x/six-1.17.0-py2.py3-none-any.whl?sig=a/b-cp314-linux.whl");
        assert_eq!(parse_report(&report).unwrap()[0].wheel, "six-1.17.0-py2.py3-none-any.whl");
    }

    #[test]
    fn names_are_normalised_as_pip_compares_them() {
        assert_eq!(normalized("Python_Dateutil"), "python-dateutil");
        assert_eq!(normalized("jaraco.functools"), "jaraco-functools");
        assert_eq!(normalized("a--b__c"), "a-b-c");
    }
}

/// A locked wheel in the verified cache.
pub struct FetchedWheel {
    pub pin: Pin,
    /// The wheel's file name, as pip downloaded it (it carries the tags).
    pub file_name: String,
    pub path: PathBuf,
}

/// Every wheel of the lock file `lock` in the verified cache: those missing are downloaded by
/// pip in hash-checking mode (`--require-hashes`, no dependencies beyond the lock, binary
/// wheels only, for the sandboxes' Python), and each enters the cache only if its sha256 is
/// the one its line pins.
pub fn fetch_wheels(cache: &Cache, sources: &Sources, lock: &Path) -> Result<Vec<FetchedWheel>> {
    let text = fs::read_to_string(lock).with_context(|| format!("read the package lock {}", lock.display()))?;
    let pins = read_lock(&text).with_context(|| format!("read the package lock {}", lock.display()))?;
    if pins.is_empty() {
        bail!("the package lock {} pins no package", lock.display());
    }
    let names = cache.root.join("wheel-names");
    let cached = |pin: &Pin| -> Result<Option<FetchedWheel>> {
        let Some(path) = cache.get(&pin.sha256)? else { return Ok(None) };
        let Ok(file_name) = fs::read_to_string(names.join(&pin.sha256)) else { return Ok(None) };
        Ok(Some(FetchedWheel { pin: pin.clone(), file_name, path }))
    };
    // Each wheel is looked up (and hashed) once; only those missing are looked up again after
    // they were brought in.
    let found: Vec<Option<FetchedWheel>> = pins.iter().map(cached).collect::<Result<_>>()?;
    let missing: Vec<Pin> = pins.iter().zip(&found).filter(|(_, wheel)| wheel.is_none()).map(|(pin, _)| pin.clone()).collect();
    if let (Some(bundle), false) = (&sources.vendor, missing.is_empty()) {
        // A vendored wheel lies under the sha256 its line pins; its bytes are checked again.
        for pin in &missing {
            let directory = bundle.root.join(crate::inputs::bundle::PACKAGES_DIR).join(&pin.sha256);
            let file = fs::read_dir(&directory).ok().and_then(|mut entries| entries.next()).and_then(|entry| entry.ok()).map(|entry| entry.path());
            let Some(file) = file else {
                bail!(
                    "the vendor bundle {} has no wheel for {}=={} (sha256 {}); make the bundle with `cargo xtask vendor --packages {}`",
                    bundle.root.display(),
                    pin.name,
                    pin.version,
                    pin.sha256,
                    lock.display()
                );
            };
            admit_wheel(cache, &names, &file, pin, Admit::Copy)?;
        }
    } else if !missing.is_empty() {
        let list = missing.iter().map(|pin| format!("{}=={}", pin.name, pin.version)).collect::<Vec<_>>().join(", ");
        if let Some(reason) = sources.refuse_network(&format!("the wheels {list} of {}", lock.display())) {
            bail!(reason);
        }
        let scratch = cache.partial_dir()?.join(format!("wheels-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch)?;
        let result = download_wheels(&missing, &scratch, cache, &names);
        let _ = fs::remove_dir_all(&scratch);
        result?;
    }
    pins.iter()
        .zip(found)
        .map(|(pin, wheel)| match wheel {
            Some(wheel) => Ok(wheel),
            None => cached(pin)?.with_context(|| format!("{}=={} is not in the cache after it was brought in", pin.name, pin.version)),
        })
        .collect()
}

/// How a checked wheel enters the cache: copied (from a bundle) or moved (a download).
enum Admit {
    Copy,
    Move,
}

/// Lets the wheel `file` into the cache as `pin`'s: a pure-Python wheel whose sha256 is the
/// pinned one (the cache checks it), its file name recorded beside it.
fn admit_wheel(cache: &Cache, names: &Path, file: &Path, pin: &Pin, how: Admit) -> Result<()> {
    let file_name = file.file_name().context("a wheel has a name")?.to_string_lossy().into_owned();
    if !is_pure_wheel(&file_name) {
        bail!("{} ({}) is not a pure-Python wheel; the sandboxes cannot load native extensions", file.display(), pin.name);
    }
    match how {
        Admit::Copy => cache.insert_copy(file, &pin.sha256, &file_name)?,
        Admit::Move => cache.insert_file(file, &pin.sha256, &file_name)?,
    };
    fs::create_dir_all(names)?;
    write_atomic(&names.join(&pin.sha256), file_name.as_bytes())
}

fn download_wheels(missing: &[Pin], scratch: &Path, cache: &Cache, names: &Path) -> Result<()> {
    let requirements = scratch.join("requirements.txt");
    let text: String = missing.iter().map(|pin| format!("{}=={} --hash=sha256:{}\n", pin.name, pin.version, pin.sha256)).collect();
    fs::write(&requirements, text)?;
    let downloads = scratch.join("wheels");
    let python = crate::inputs::system::which("python3").context("python3 with pip is needed to download the locked wheels; install python3-pip")?;
    eprintln!("downloading {} locked wheel(s) with pip (hash-checking mode)", missing.len());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--quiet", "--no-input", "--disable-pip-version-check", "--no-deps", "--require-hashes"])
        .args(["--only-binary=:all:", "--python-version", SANDBOX_PYTHON, "--implementation", "py", "--abi", "none", "--platform", "any"])
        .arg("--dest")
        .arg(&downloads)
        .arg("-r")
        .arg(&requirements)
        .status()
        .context("run pip download")?;
    if !status.success() {
        bail!("`pip download --require-hashes` of the locked wheels failed ({status}); see pip's message above (a hash that does not match means the index serves other bytes than the lock pins)");
    }
    for entry in fs::read_dir(&downloads)? {
        let path = entry?.path();
        let digest = crate::inputs::cache::sha256_file(&path)?;
        let Some(pin) = missing.iter().find(|pin| pin.sha256 == digest) else {
            bail!("pip downloaded {} (sha256 {digest}), which the lock does not pin", path.display());
        };
        admit_wheel(cache, names, &path, pin, Admit::Move)?;
    }
    Ok(())
}
