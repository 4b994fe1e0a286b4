//! The conformance case format (`tests/conformance/*.toml`): the only code that knows it. It
//! rejects keys it does not know, naming the file, the case and the key.

use std::path::{Path, PathBuf};
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct Expectations {
    pub stdout: Option<String>,
    #[serde(default)]
    pub stdout_contains: Vec<String>,
    /// The number of characters on stdout.
    pub stdout_length: Option<usize>,
    #[serde(default)]
    pub stderr_contains: Vec<String>,
    #[serde(default)]
    pub error_contains: Vec<String>,
    pub timeout_ms: Option<u64>,
    /// For `snapshot` and `restore` steps: the names the action left out (snapshot) or could
    /// not restore (restore); absent means none.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Whether the output was cut at the output limit (absent: it was not).
    #[serde(default)]
    pub truncated: bool,
    /// The trace of the code as `[line, type]` pairs; the step runs with tracing on.
    pub trace: Option<Vec<(u32, String)>>,
    /// The host's record of when callbacks started and ended, in order, as `"start NAME"` and
    /// `"end NAME"` (the step runs with tracing on; only the callback events are compared).
    /// Concurrency shows as starts before ends.
    pub callback_order: Option<Vec<String>>,
    /// Limits for the step (the host's defaults otherwise).
    pub max_output_bytes: Option<u64>,
    pub max_callbacks: Option<u32>,
    pub callback_timeout_ms: Option<u64>,
    pub max_callback_argument_bytes: Option<usize>,
    pub max_pending_callback_bytes: Option<usize>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Step {
    pub code: Option<String>,
    pub action: Option<Action>,
    #[serde(flatten)]
    pub expect: Expectations,
}

impl Expectations {
    /// Whether a key about running code is set: what it prints, its trace, its limits.
    fn about_code(&self) -> bool {
        self.stdout.is_some()
            || !self.stdout_contains.is_empty()
            || !self.stderr_contains.is_empty()
            || self.stdout_length.is_some()
            || self.truncated
            || self.trace.is_some()
            || self.callback_order.is_some()
            || self.max_output_bytes.is_some()
            || self.max_callbacks.is_some()
            || self.callback_timeout_ms.is_some()
            || self.max_callback_argument_bytes.is_some()
            || self.max_pending_callback_bytes.is_some()
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Snapshot,
    Restore,
    Clear,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Case {
    pub name: String,
    pub code: Option<String>,
    pub steps: Option<Vec<Step>>,
    #[serde(default)]
    pub skip: BTreeMap<String, String>,
    #[serde(flatten)]
    pub expect: Expectations,
    /// The file the case came from (filled in by the loader).
    #[serde(skip)]
    pub file: PathBuf,
}

const EXPECTATION_KEYS: &[&str] = &[
    "stdout",
    "stdout_contains",
    "stdout_length",
    "stderr_contains",
    "error_contains",
    "timeout_ms",
    "skipped",
    "truncated",
    "trace",
    "callback_order",
    "max_output_bytes",
    "max_callbacks",
    "callback_timeout_ms",
    "max_callback_argument_bytes",
    "max_pending_callback_bytes",
];
const CASE_KEYS: &[&str] = &["name", "code", "steps", "skip"];
const STEP_KEYS: &[&str] = &["code", "action"];

fn check_keys(table: &toml::Table, allowed: &[&str], file: &Path, case: &str, place: &str) -> Result<()> {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) && !EXPECTATION_KEYS.contains(&key.as_str()) {
            bail!("{}: case `{case}`: unknown key `{key}`{place}", file.display());
        }
    }
    Ok(())
}

/// Parses one case file, rejecting unknown keys and ill-formed cases.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Case>> {
    let document: toml::Table = toml::from_str(text).with_context(|| format!("parse {}", path.display()))?;
    for key in document.keys() {
        if key != "case" {
            bail!("{}: unknown top-level key `{key}` (a case file holds only [[case]] tables)", path.display());
        }
    }
    let raw_cases = document.get("case").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    for (index, raw) in raw_cases.iter().enumerate() {
        let table = raw.as_table().with_context(|| format!("{}: case #{} is not a table", path.display(), index + 1))?;
        let name = table.get("name").and_then(toml::Value::as_str).unwrap_or("<unnamed>").to_owned();
        check_keys(table, CASE_KEYS, path, &name, "")?;
        if let Some(steps) = table.get("steps").and_then(toml::Value::as_array) {
            for (step_index, step) in steps.iter().enumerate() {
                let step = step
                    .as_table()
                    .with_context(|| format!("{}: case `{name}`: step {} is not a table", path.display(), step_index + 1))?;
                check_keys(step, STEP_KEYS, path, &name, &format!(" in step {}", step_index + 1))?;
            }
        }
    }
    let file: CaseFile = toml::from_str(text).with_context(|| format!("parse {}", path.display()))?;
    let mut names = std::collections::BTreeSet::new();
    let mut cases = Vec::new();
    for mut case in file.case {
        let here = format!("{}: case `{}`", path.display(), case.name);
        if !names.insert(case.name.clone()) {
            bail!("{here}: the name is used twice in this file");
        }
        match (&case.code, &case.steps) {
            (Some(_), None) if !case.expect.skipped.is_empty() => {
                bail!("{here}: `skipped` belongs on a `snapshot` or `restore` step");
            }
            (Some(_), None) => {}
            (None, Some(steps)) => {
                // `timeout_ms` alone may stand on the case: the default of its steps.
                let expect = &case.expect;
                if expect.about_code() || !expect.error_contains.is_empty() || !expect.skipped.is_empty() {
                    bail!("{here}: expectations belong on the steps of a case with `steps`");
                }
                for (index, step) in steps.iter().enumerate() {
                    match (&step.code, &step.action) {
                        (Some(_), None) if !step.expect.skipped.is_empty() => {
                            bail!("{here}: step {}: `skipped` belongs on a `snapshot` or `restore` step", index + 1);
                        }
                        (Some(_), None) => {}
                        (None, Some(Action::Clear)) if !step.expect.skipped.is_empty() => {
                            bail!("{here}: step {}: `clear` leaves nothing out; `skipped` belongs on `snapshot` or `restore`", index + 1);
                        }
                        (None, Some(_)) => {
                            if step.expect.about_code() {
                                bail!("{here}: step {}: an action has no output to expect", index + 1);
                            }
                        }
                        _ => bail!("{here}: step {} needs exactly one of `code` and `action`", index + 1),
                    }
                }
            }
            _ => bail!("{here}: a case needs exactly one of `code` and `steps`"),
        }
        case.file = path.to_path_buf();
        cases.push(case);
    }
    Ok(cases)
}

/// The case files under the given files and directories (directories: their `*.toml`,
/// sorted); shared by the conformance and the command suites.
pub fn case_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("read {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.extension().is_some_and(|extension| extension == "toml"))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{} holds no *.toml case files", path.display());
            }
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{} does not exist", path.display());
        }
    }
    Ok(files)
}

/// Every case under the given files and directories.
pub fn load_cases(paths: &[PathBuf]) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for file in case_files(paths)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        cases.extend(parse_file(&file, &text)?);
    }
    Ok(cases)
}
