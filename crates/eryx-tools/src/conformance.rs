//! The conformance suite runner: case files (`tests/conformance/*.toml`, read by
//! [`crate::case_format`]) against variants.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use eryx_host::{Callbacks, Limits, Manifest, Runtime, Sandbox};

pub use crate::case_format::{case_files, load_cases, parse_file, Action, Case, Expectations, Step};

/// What every suite runner takes: the manifest, the variants and the case files.
#[derive(clap::Args)]
pub struct SuiteArgs {
    /// The manifest written by `cargo xtask build-runtime`
    #[arg(long, default_value = "target/eryx/manifest.json")]
    pub manifest: PathBuf,
    /// A variant name (`<variant>+<set>` for one with a package set) or `all` (default: every
    /// variant in the manifest without a package set)
    #[arg(long)]
    pub variant: Option<String>,
    /// Case files, or directories of `*.toml` case files
    #[arg(long = "cases", required = true)]
    pub cases: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Also write the results as JSON
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Fail when a variant passes fewer than this share of the cases (skips count against it)
    #[arg(long, value_name = "PERCENT", default_value_t = 90.0)]
    pub min_pass_percent: f64,
    /// Run the plain components (as linked, not pre-initialised) instead of the default ones
    #[arg(long)]
    pub plain: bool,
}


/// The outcome of one case on one variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// A skipped case runs too: failing is the expected divergence (a skip), passing means the
/// divergence is gone and the skip must be removed (a failure, so it cannot go unnoticed).
fn with_skip(outcome: Outcome, skip: Option<&String>) -> Outcome {
    match (outcome, skip) {
        (Outcome::Pass, Some(reason)) => {
            Outcome::Fail(format!("passes although it is skipped ({reason}); remove the skip"))
        }
        (Outcome::Fail(_), Some(reason)) => Outcome::Skip(reason.clone()),
        (outcome, _) => outcome,
    }
}

/// Where two texts first differ, for a short failure message.
fn first_difference(expected: &str, actual: &str) -> String {
    let position = expected.chars().zip(actual.chars()).take_while(|(a, b)| a == b).count();
    let excerpt = |text: &str| {
        let excerpt: String = text.chars().skip(position.saturating_sub(10)).take(40).collect();
        format!("{excerpt:?}")
    };
    format!(
        "stdout differs at character {position}: expected {} (length {}), got {} (length {})",
        excerpt(expected),
        expected.chars().count(),
        excerpt(actual),
        actual.chars().count()
    )
}

/// Checks one step's result; `interrupted` is what an execute that was stopped (a timeout, a
/// limit, a trap) wrote before.
fn check(
    expect: &Expectations,
    result: Result<eryx_host::Output, eryx_host::ExecError>,
    interrupted: Option<eryx_host::Output>,
) -> Result<(), String> {
    let output = match result {
        Err(error) => {
            let text = error.to_string();
            if expect.error_contains.is_empty() {
                return Err(format!("unexpected error: {}", text.lines().last().unwrap_or(&text)));
            }
            for needle in &expect.error_contains {
                if !text.contains(needle.as_str()) {
                    return Err(format!("error lacks {needle:?}; the error was: {}", text.trim_end()));
                }
            }
            // What the code printed before it failed (or was stopped) is checked like any output.
            error.partial_output().cloned().or(interrupted).unwrap_or_default()
        }
        Ok(output) => {
            if !expect.error_contains.is_empty() {
                return Err(format!("expected an error containing {:?}, but the code succeeded", expect.error_contains));
            }
            output
        }
    };
    if output.truncated != expect.truncated {
        return Err(format!(
            "the output was {}truncated, expected it {}to be",
            if output.truncated { "" } else { "not " },
            if expect.truncated { "" } else { "not " }
        ));
    }
    if let Some(stdout) = &expect.stdout {
        if *stdout != output.stdout {
            return Err(first_difference(stdout, &output.stdout));
        }
    }
    for needle in &expect.stdout_contains {
        if !output.stdout.contains(needle.as_str()) {
            return Err(format!("stdout lacks {needle:?}; stdout was {:?}", truncate(&output.stdout)));
        }
    }
    if let Some(length) = expect.stdout_length {
        let actual = output.stdout.chars().count();
        if actual != length {
            return Err(format!("stdout has {actual} characters, expected {length}"));
        }
    }
    for needle in &expect.stderr_contains {
        if !output.stderr.contains(needle.as_str()) {
            return Err(format!("stderr lacks {needle:?}; stderr was {:?}", truncate(&output.stderr)));
        }
    }
    Ok(())
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

fn timeout_for(case: &Case, step: &Expectations, default: Duration) -> Duration {
    step.timeout_ms.or(case.expect.timeout_ms).map(Duration::from_millis).unwrap_or(default)
}

/// Runs one case on a fresh sandbox.
pub fn run_case(runtime: &Runtime, case: &Case) -> Outcome {
    let mut sandbox = match runtime.sandbox(Arc::new(Callbacks::standard())) {
        Ok(sandbox) => sandbox,
        Err(error) => return Outcome::Fail(format!("could not create a sandbox: {error:#}")),
    };
    let default_timeout = runtime.limits().timeout;
    let steps = match (&case.code, &case.steps) {
        (Some(code), _) => vec![Step { code: Some(code.clone()), action: None, expect: case.expect.clone() }],
        (None, Some(steps)) => steps.clone(),
        (None, None) => Vec::new(),
    };
    let mut snapshot: Option<Vec<u8>> = None;
    for (index, step) in steps.iter().enumerate() {
        let label = if steps.len() > 1 { format!("step {}: ", index + 1) } else { String::new() };
        sandbox.set_timeout(timeout_for(case, &step.expect, default_timeout));
        let outcome = run_step(&mut sandbox, step, &mut snapshot);
        if let Err(message) = outcome {
            return Outcome::Fail(format!("{label}{message}"));
        }
    }
    Outcome::Pass
}

fn run_step(sandbox: &mut Sandbox, step: &Step, snapshot: &mut Option<Vec<u8>>) -> Result<(), String> {
    if let Some(code) = &step.code {
        let expect = &step.expect;
        let defaults = eryx_host::Limits::default();
        let limits = sandbox.limits_mut();
        limits.max_output_bytes = expect.max_output_bytes.unwrap_or(defaults.max_output_bytes);
        limits.max_callbacks = expect.max_callbacks.unwrap_or(defaults.max_callbacks);
        limits.callback_timeout = expect.callback_timeout_ms.map(Duration::from_millis).unwrap_or(defaults.callback_timeout);
        limits.max_callback_argument_bytes = expect.max_callback_argument_bytes.unwrap_or(defaults.max_callback_argument_bytes);
        limits.max_pending_callback_bytes = expect.max_pending_callback_bytes.unwrap_or(defaults.max_pending_callback_bytes);
        let tracing = expect.trace.is_some() || expect.callback_order.is_some();
        sandbox.set_trace(tracing);
        let result = sandbox.execute(code);
        check(expect, result, sandbox.interrupted_output().cloned())?;
        if !tracing && !sandbox.traces().is_empty() {
            return Err(format!("tracing was off, yet the execute reported {} trace events", sandbox.traces().len()));
        }
        let events: Vec<(u32, serde_json::Value)> = sandbox
            .traces()
            .iter()
            .map(|event| {
                let value = serde_json::from_str::<serde_json::Value>(&event.event_json)
                    .unwrap_or_else(|_| json!({"type": format!("<not JSON: {}>", event.event_json)}));
                (event.lineno, value)
            })
            .collect();
        let kind = |value: &serde_json::Value| value["type"].as_str().unwrap_or("<no type>").to_owned();
        if let Some(expected) = &expect.trace {
            let actual: Vec<(u32, String)> = events.iter().map(|(line, value)| (*line, kind(value))).collect();
            if actual != *expected {
                return Err(format!("the trace was {actual:?}, expected {expected:?}"));
            }
        }
        if let Some(expected) = &expect.callback_order {
            let actual: Vec<String> = events
                .iter()
                .filter_map(|(_, value)| {
                    let phase = kind(value).strip_prefix("callback_")?.to_owned();
                    Some(format!("{phase} {}", value["name"].as_str().unwrap_or("?")))
                })
                .collect();
            if actual != *expected {
                return Err(format!("the callbacks started and ended as {actual:?}, expected {expected:?}"));
            }
        }
        return Ok(());
    }
    let result = match step.action.expect("validated: code or action") {
        Action::Snapshot => sandbox.snapshot().map(|taken| {
            *snapshot = Some(taken.data);
            taken.skipped
        }),
        Action::Clear => sandbox.clear().map(|()| Vec::new()),
        Action::Restore => match snapshot {
            Some(bytes) => sandbox.restore(bytes),
            None => return Err("`restore` before any `snapshot`".into()),
        },
    };
    match result {
        Ok(_) if !step.expect.error_contains.is_empty() => {
            Err(format!("expected the action to fail with {:?}", step.expect.error_contains))
        }
        Ok(mut skipped) => {
            skipped.sort();
            let mut expected = step.expect.skipped.clone();
            expected.sort();
            if skipped == expected {
                Ok(())
            } else {
                Err(format!("{:?} left out {skipped:?}, expected {expected:?}", step.action.unwrap()))
            }
        }
        Err(error) => check(&step.expect, Err(error), None).map_err(|message| format!("{:?}: {message}", step.action.unwrap())),
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let manifest = Manifest::load(&args.suite.manifest)?;
    let variant_names: Vec<String> = match args.suite.variant.as_deref() {
        // A package variant (`<variant>+<set>`) runs its set's cases when named.
        None | Some("all") => manifest.variants.iter().filter(|(_, entry)| entry.packages.is_none()).map(|(name, _)| name.clone()).collect(),
        Some(name) => {
            manifest.variant(name)?;
            vec![name.to_owned()]
        }
    };
    if variant_names.is_empty() {
        bail!("{} lists no built variants; run `cargo xtask build-runtime`", manifest.path.display());
    }
    let cases = load_cases(&args.suite.cases)?;
    let mut results: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for name in &variant_names {
        let started = std::time::Instant::now();
        let form = if args.plain { eryx_host::Form::Plain } else { eryx_host::Form::Preinit };
        let runtime = Runtime::with_form(manifest.variant(name)?.clone(), Limits::default(), &manifest.compile_cache_dir(), form)?;
        eprintln!(
            "{name}: component {} in {:.2}s",
            runtime.loaded.describe(),
            started.elapsed().as_secs_f64()
        );
        let outcomes = cases
            .iter()
            .map(|case| with_skip(run_case(&runtime, case), case.skip.get(name)))
            .collect();
        results.insert(name.clone(), outcomes);
    }
    print!("{}", report(&cases, &variant_names, &results));
    let shares: Vec<Share> = variant_names.iter().map(|name| pass_share(&results[name])).collect();
    let (passed, failed, skipped) = shares.iter().fold((0, 0, 0), |(passed, failed, skipped), share| {
        (passed + share.passed, failed + share.failed, skipped + share.skipped)
    });
    if let Some(path) = &args.json {
        let entries: Vec<_> = cases
            .iter()
            .enumerate()
            .flat_map(|(index, case)| {
                variant_names.iter().map(move |variant| (index, case, variant))
            })
            .map(|(index, case, variant)| {
                let (status, detail) = match &results[variant][index] {
                    Outcome::Pass => ("pass", String::new()),
                    Outcome::Fail(message) => ("fail", message.clone()),
                    Outcome::Skip(reason) => ("skip", reason.clone()),
                };
                json!({"file": case.file.display().to_string(), "case": case.name, "variant": variant, "status": status, "detail": detail})
            })
            .collect();
        let document = json!({"results": entries, "passed": passed, "failed": failed, "skipped": skipped});
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    let mut below_share = Vec::new();
    for (name, share) in variant_names.iter().zip(&shares) {
        println!("{name}: {share}");
        if share.percent() < args.min_pass_percent {
            below_share.push(format!("{name} passes {:.1}% of the cases, below --min-pass-percent {}", share.percent(), args.min_pass_percent));
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    for message in &below_share {
        eprintln!("error: {message}");
    }
    Ok(if failed == 0 && below_share.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One variant's outcome counts.
#[derive(Debug, PartialEq)]
struct Share {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Share {
    fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }

    /// The passing share of all cases; a skipped case counts as not passing.
    fn percent(&self) -> f64 {
        if self.total() == 0 {
            return 100.0;
        }
        self.passed as f64 * 100.0 / self.total() as f64
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}/{} passed ({:.1}%), {} failed, {} skipped",
            self.passed,
            self.total(),
            self.percent(),
            self.failed,
            self.skipped
        )
    }
}

fn pass_share(outcomes: &[Outcome]) -> Share {
    let count = |wanted: fn(&Outcome) -> bool| outcomes.iter().filter(|outcome| wanted(outcome)).count();
    Share {
        passed: count(|outcome| matches!(outcome, Outcome::Pass)),
        failed: count(|outcome| matches!(outcome, Outcome::Fail(_))),
        skipped: count(|outcome| matches!(outcome, Outcome::Skip(_))),
    }
}

/// The case × variant table.
fn report(cases: &[Case], variants: &[String], results: &BTreeMap<String, Vec<Outcome>>) -> String {
    let label = |case: &Case| {
        format!("{}::{}", case.file.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default(), case.name)
    };
    let width = cases.iter().map(|case| label(case).len()).max().unwrap_or(4).max(4);
    let mut text = String::new();
    let _ = write!(text, "{:<width$}", "case");
    for variant in variants {
        let _ = write!(text, "  {variant}");
    }
    text.push('\n');
    for (index, case) in cases.iter().enumerate() {
        let _ = write!(text, "{:<width$}", label(case));
        for variant in variants {
            let cell = match &results[variant][index] {
                Outcome::Pass => "pass".to_owned(),
                Outcome::Fail(message) => format!("FAIL {message}"),
                Outcome::Skip(reason) => format!("skip ({reason})"),
            };
            let _ = write!(text, "  {cell}");
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Vec<Case>> {
        parse_file(Path::new("cases.toml"), text)
    }

    #[test]
    fn the_documented_format_parses() {
        let cases = parse(
            r#"
[[case]]
name = "print-int"
code = "print(1 + 1)"
stdout = "2\n"

[[case]]
name = "snapshot-restore"
skip = { rustpython = "no pickle" }
steps = [
  { code = "x = 41" },
  { action = "snapshot" },
  { action = "clear" },
  { code = "x", error_contains = ["NameError"] },
  { action = "restore" },
  { code = "print(x + 1)", stdout = "42\n", timeout_ms = 500 },
]
"#,
        )
        .unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].expect.stdout.as_deref(), Some("2\n"));
        let steps = cases[1].steps.as_ref().unwrap();
        assert_eq!(steps[1].action, Some(Action::Snapshot));
        assert_eq!(steps[3].expect.error_contains, ["NameError"]);
        assert_eq!(steps[5].expect.timeout_ms, Some(500));
        assert_eq!(cases[1].skip["rustpython"], "no pickle");
    }

    #[test]
    fn unknown_keys_name_the_file_case_and_key() {
        let error = parse("[[case]]\nname = \"a\"\ncode = \"1\"\nstdot = \"1\"\n").unwrap_err().to_string();
        assert_eq!(error, "cases.toml: case `a`: unknown key `stdot`");
        let error = parse("[[case]]\nname = \"b\"\nsteps = [{ code = \"1\", sdout = \"\" }]\n").unwrap_err().to_string();
        assert_eq!(error, "cases.toml: case `b`: unknown key `sdout` in step 1");
        assert!(parse("[meta]\n").unwrap_err().to_string().contains("unknown top-level key `meta`"));
    }

    #[test]
    fn ill_formed_cases_are_refused() {
        assert!(parse("[[case]]\nname = \"a\"\n").unwrap_err().to_string().contains("exactly one of `code` and `steps`"));
        let twice = "[[case]]\nname = \"a\"\ncode = \"1\"\n[[case]]\nname = \"a\"\ncode = \"2\"\n";
        assert!(parse(twice).unwrap_err().to_string().contains("used twice"));
        let bad_action = "[[case]]\nname = \"a\"\nsteps = [{ action = \"explode\" }]\n";
        assert!(format!("{:#}", parse(bad_action).unwrap_err()).contains("explode"));
        let trace_beside_steps = "[[case]]\nname = \"a\"\nsteps = [{ code = \"1\" }]\ntrace = [[1, \"line\"]]\n";
        assert!(parse(trace_beside_steps).unwrap_err().to_string().contains("expectations belong on the steps"));
        let skipped_on_code = "[[case]]\nname = \"a\"\ncode = \"1\"\nskipped = [\"x\"]\n";
        assert!(parse(skipped_on_code).unwrap_err().to_string().contains("`skipped` belongs on a `snapshot` or `restore` step"));
    }

    #[test]
    fn expectations_report_the_first_difference() {
        let expect = Expectations { stdout: Some("hello\n".into()), ..Expectations::default() };
        let output = eryx_host::Output { stdout: "help\n".into(), ..eryx_host::Output::default() };
        let message = check(&expect, Ok(output), None).unwrap_err();
        assert!(message.contains("character 3"), "{message}");

        let expect = Expectations { error_contains: vec!["NameError".into()], ..Expectations::default() };
        assert!(check(&expect, Ok(eryx_host::Output::default()), None).unwrap_err().contains("succeeded"));
        assert!(check(&expect, Err(eryx_host::ExecError::python("NameError: x".into())), None).is_ok());
        // Output printed before the error is checked too.
        let expect = Expectations {
            error_contains: vec!["ValueError".into()],
            stdout: Some("partial\n".into()),
            ..Expectations::default()
        };
        let failed = |stdout: &str| eryx_host::ExecError::Python {
            traceback: "ValueError: late".into(),
            output: eryx_host::Output { stdout: stdout.into(), ..eryx_host::Output::default() },
        };
        assert!(check(&expect, Err(failed("partial\n")), None).is_ok());
        assert!(check(&expect, Err(failed("")), None).unwrap_err().contains("stdout differs"));
        let timeout = eryx_host::ExecError::Timeout(Duration::from_millis(100));
        assert!(check(&expect, Err(timeout), None).unwrap_err().contains("timeout"));
    }

    #[test]
    fn a_skipped_case_that_passes_fails_the_run() {
        let reason = "no SIGINT".to_owned();
        assert_eq!(with_skip(Outcome::Fail("AttributeError".into()), Some(&reason)), Outcome::Skip(reason.clone()));
        match with_skip(Outcome::Pass, Some(&reason)) {
            Outcome::Fail(message) => assert!(message.contains("remove the skip"), "{message}"),
            other => panic!("a passing skipped case must fail, got {other:?}"),
        }
        assert_eq!(with_skip(Outcome::Pass, None), Outcome::Pass);
        let expect = Expectations { stdout_length: Some(3), ..Expectations::default() };
        let output = |text: &str| Ok(eryx_host::Output { stdout: text.into(), ..eryx_host::Output::default() });
        assert!(check(&expect, output("abc"), None).is_ok());
        assert!(check(&expect, output("abcd"), None).unwrap_err().contains("4 characters, expected 3"));
    }

    #[test]
    fn skipped_cases_count_against_the_pass_share() {
        let outcomes: Vec<Outcome> = (0..18)
            .map(|_| Outcome::Pass)
            .chain([Outcome::Skip("no module".into()), Outcome::Fail("differs".into())])
            .collect();
        let share = pass_share(&outcomes);
        assert_eq!(share, Share { passed: 18, failed: 1, skipped: 1 });
        assert_eq!(share.percent(), 90.0);
        assert_eq!(share.to_string(), "18/20 passed (90.0%), 1 failed, 1 skipped");
    }
}
