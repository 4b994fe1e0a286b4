//! Build steps as functions of their inputs. A step fingerprints everything it reads
//! (file contents, pins, flags, tool versions); when the fingerprint equals the one stored
//! from its last successful run and its outputs exist, it is skipped. The stored record also
//! holds the sha256 of every output file as the step wrote it; a runner that verifies outputs
//! (`cargo xtask build-runtime`, `dist`) runs a step again when an output's bytes changed
//! since, so a changed artifact is put back. Outputs are written
//! under temporary names and renamed into place, and the stored fingerprint is removed
//! before a step runs and written only after it succeeded, so an interrupted step always
//! runs again.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::inputs::cache::{hex, sha256_file, write_atomic};

/// The error of a step that did not start because a step beside it (on another thread of
/// the build) failed: that one's error is the cause to report.
#[derive(Debug)]
pub struct Stopped {
    step: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step `{}` not started: the build stopped (a step beside it failed)", self.step)
    }
}

impl std::error::Error for Stopped {}

/// The outcome of two sides of a build that ran beside each other: both results, or the
/// error that is the cause (a side that was only [`Stopped`] yields to the other side's).
pub fn joined<A, B>(first: Result<A>, second: Result<B>) -> Result<(A, B)> {
    match (first, second) {
        (Err(stopped), Err(cause)) if stopped.is::<Stopped>() => Err(cause),
        (first, second) => Ok((first?, second?)),
    }
}

#[derive(Default)]
pub struct Fingerprint {
    hasher: Sha256,
}

impl Fingerprint {
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        for part in [key, value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part.as_bytes());
        }
        self
    }

    pub fn file(&mut self, path: &Path) -> Result<&mut Self> {
        let digest = sha256_file(path)?;
        Ok(self.text(&path.to_string_lossy(), &digest))
    }

    /// Every file under `directory` (sorted, skipping `target` directories), by content.
    pub fn tree(&mut self, directory: &Path) -> Result<&mut Self> {
        let mut files = Vec::new();
        collect_files(directory, &mut files)?;
        files.sort();
        for file in files {
            self.file(&file)?;
        }
        Ok(self)
    }

    pub fn finish(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

fn collect_files(directory: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(directory).with_context(|| format!("read {}", directory.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// Records which steps ran and how long they took, for the build summary.
#[derive(Default)]
pub struct Runner {
    pub state_dir: PathBuf,
    /// Whether a step whose outputs' bytes differ from what it wrote runs again (hashes every
    /// output on every run); otherwise only their existence is checked.
    pub verify_outputs: bool,
    pub ran: Vec<(String, f64)>,
    pub skipped: Vec<String>,
    /// Printed (to stderr) before the first step that runs: which toolchains a build uses is
    /// worth saying only when something is built. Shared with forks, so it is said once.
    preamble: Arc<Mutex<Vec<String>>>,
    /// Set by [`Runner::cancel`] on this runner or a fork of it: no further step starts.
    cancelled: Arc<AtomicBool>,
}

impl Runner {
    pub fn new(state_dir: PathBuf) -> Runner {
        Runner { state_dir, ..Runner::default() }
    }

    /// A runner for steps run on another thread beside this one's (same records, same
    /// verification); [`Runner::absorb`] takes its summary back.
    pub fn fork(&self) -> Runner {
        Runner {
            state_dir: self.state_dir.clone(),
            verify_outputs: self.verify_outputs,
            preamble: Arc::clone(&self.preamble),
            cancelled: Arc::clone(&self.cancelled),
            ..Runner::default()
        }
    }

    /// No further step starts on this runner or on its forks (a step that runs finishes).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Lines to print before the first step that runs (on this runner or a fork).
    pub fn set_preamble(&mut self, lines: Vec<String>) {
        *lock(&self.preamble) = lines;
    }

    /// Adds what a [`Runner::fork`] ran and skipped to this runner's summary.
    pub fn absorb(&mut self, fork: Runner) {
        self.ran.extend(fork.ran);
        self.skipped.extend(fork.skipped);
    }

    /// Runs `action` unless `fingerprint` matches the last successful run and every output
    /// exists (and, when verifying outputs, holds the bytes the step wrote). Returns whether
    /// it ran.
    pub fn step(
        &mut self,
        name: &str,
        fingerprint: &Fingerprint,
        outputs: &[&Path],
        action: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let stamp = self.state_dir.join(format!("{name}.fingerprint"));
        let digest = fingerprint.finish();
        let stored = fs::read_to_string(&stamp).unwrap_or_default();
        let mut lines = stored.lines();
        let fresh = lines.next() == Some(digest.as_str())
            && outputs.iter().all(|output| output.exists())
            && (!self.verify_outputs || outputs_unchanged(lines, outputs)?);
        if fresh {
            self.skipped.push(name.to_owned());
            return Ok(false);
        }
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Stopped { step: name.to_owned() }.into());
        }
        for line in lock(&self.preamble).drain(..) {
            eprintln!("{line}");
        }
        let _ = fs::remove_file(&stamp);
        eprintln!("[run ] {name}");
        let started = Instant::now();
        action().with_context(|| format!("step `{name}`"))?;
        let seconds = started.elapsed().as_secs_f64();
        let mut record = digest;
        for output in outputs {
            record.push_str(&format!("\n{}  {}", output_digest(output)?, output.display()));
        }
        write_atomic(&stamp, record.as_bytes())?;
        self.record_timing(name, seconds)?;
        eprintln!("[done] {name} in {seconds:.1}s");
        self.ran.push((name.to_owned(), seconds));
        Ok(true)
    }
}

/// A lock whose holder may have panicked (what it guards stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The sha256 of an output: a file's contents, or a directory's every file (by path and
/// contents, as [`Fingerprint::tree`] reads them).
fn output_digest(output: &Path) -> Result<String> {
    if output.is_dir() {
        let mut tree = Fingerprint::default();
        tree.tree(output)?;
        Ok(tree.finish())
    } else {
        sha256_file(output)
    }
}

/// Whether every output still has the sha256 recorded when its step wrote it (a record
/// without digests, from before they were kept, counts as changed).
fn outputs_unchanged<'a>(recorded: impl Iterator<Item = &'a str>, outputs: &[&Path]) -> Result<bool> {
    let recorded: Vec<(&str, &str)> = recorded.filter_map(|line| line.split_once("  ")).collect();
    for output in outputs {
        let name = output.display().to_string();
        let Some((digest, _)) = recorded.iter().find(|(_, path)| *path == name) else { return Ok(false) };
        if output_digest(output)? != *digest {
            eprintln!("note: {name} changed since its step wrote it; building it again");
            return Ok(false);
        }
    }
    Ok(true)
}

impl Runner {
    /// Keeps each step's latest duration in `timings.json` beside the fingerprints (read by
    /// `cargo xtask bench`).
    fn record_timing(&self, name: &str, seconds: f64) -> Result<()> {
        // Runners on two threads (see `fork`) share the file: one read-modify-write at a time.
        static TIMINGS: Mutex<()> = Mutex::new(());
        let _one_at_a_time = lock(&TIMINGS);
        let path = self.state_dir.join("timings.json");
        let mut timings: std::collections::BTreeMap<String, f64> =
            fs::read(&path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
        timings.insert(name.to_owned(), (seconds * 10.0).round() / 10.0);
        write_atomic(&path, format!("{}\n", serde_json::to_string_pretty(&timings)?).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_reruns_only_when_an_input_changes() {
        let directory = tempfile::tempdir().unwrap();
        let input = directory.path().join("input.txt");
        let output = directory.path().join("output.txt");
        fs::write(&input, "one").unwrap();
        let mut runner = Runner::new(directory.path().join("state"));
        let mut runs = 0;
        let mut build = |runner: &mut Runner| {
            let mut fingerprint = Fingerprint::default();
            fingerprint.file(&input).unwrap();
            runner
                .step("copy", &fingerprint, &[&output], || {
                    runs += 1;
                    write_atomic(&output, &fs::read(&input)?)
                })
                .unwrap()
        };
        assert!(build(&mut runner));
        assert!(!build(&mut runner));
        fs::write(&input, "two").unwrap();
        assert!(build(&mut runner));
        fs::remove_file(&output).unwrap();
        assert!(build(&mut runner), "a missing output reruns the step");
        assert_eq!(runs, 3);
    }

    #[test]
    fn a_failed_step_is_not_recorded() {
        let directory = tempfile::tempdir().unwrap();
        let mut runner = Runner::new(directory.path().join("state"));
        let mut fingerprint = Fingerprint::default();
        fingerprint.text("flag", "x");
        let error = runner.step("fails", &fingerprint, &[], || anyhow::bail!("no")).unwrap_err();
        assert!(format!("{error:#}").contains("step `fails`: no"));
        assert!(runner.step("fails", &fingerprint, &[], || Ok(())).unwrap(), "it runs again");
    }

    #[test]
    fn a_cancelled_runner_stops_its_forks_next_step_and_the_preamble_is_said_once() {
        let directory = tempfile::tempdir().unwrap();
        let mut runner = Runner::new(directory.path().join("state"));
        runner.set_preamble(vec!["toolchains".to_owned()]);
        let mut fork = runner.fork();
        let mut fingerprint = Fingerprint::default();
        fingerprint.text("input", "1");
        assert!(fork.step("first", &fingerprint, &[], || Ok(())).unwrap());
        assert!(lock(&runner.preamble).is_empty(), "the fork said it");
        assert!(runner.step("breaks", &fingerprint, &[], || anyhow::bail!("no")).is_err());
        runner.cancel();
        let mut ran = false;
        let error = fork
            .step("second", &fingerprint, &[], || {
                ran = true;
                Ok(())
            })
            .unwrap_err();
        assert!(!ran);
        assert!(format!("{error:#}").contains("a step beside it failed"));
        // The build reports the cause, whichever side it came from, not the stop.
        let cause = || Err::<bool, _>(anyhow::anyhow!("the real cause"));
        let mut stopped = || fork.step("second", &fingerprint, &[], || Ok(()));
        assert_eq!(format!("{:#}", joined(stopped(), cause()).unwrap_err()), "the real cause");
        assert_eq!(format!("{:#}", joined(cause(), stopped()).unwrap_err()), "the real cause");
        assert_eq!(joined(Ok::<_, anyhow::Error>(1), Ok::<_, anyhow::Error>(2)).unwrap(), (1, 2));
        runner.absorb(fork);
        assert_eq!(runner.ran.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["first"]);
    }

    #[test]
    fn a_verifying_runner_rebuilds_an_output_changed_after_its_step() {
        let directory = tempfile::tempdir().unwrap();
        let output = directory.path().join("artifact.bin");
        let mut runner = Runner::new(directory.path().join("state"));
        let mut fingerprint = Fingerprint::default();
        fingerprint.text("input", "1");
        let make = |runner: &mut Runner| runner.step("make", &fingerprint, &[&output], || write_atomic(&output, b"the build's bytes")).unwrap();
        assert!(make(&mut runner));
        fs::write(&output, b"the build's bytez").unwrap();
        // Without verification, an existing output is enough (the quick path of `run`).
        assert!(!make(&mut runner));
        runner.verify_outputs = true;
        assert!(make(&mut runner), "a changed output is made again");
        assert_eq!(fs::read(&output).unwrap(), b"the build's bytes");
        assert!(!make(&mut runner), "and then it is up to date");
    }
}
