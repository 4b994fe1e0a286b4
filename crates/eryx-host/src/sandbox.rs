//! [`Sandbox`]: one guest instance with a persistent Python namespace, and the calls into it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use wasmtime::Store;

use crate::limits::TICK;
use crate::runtime::{Blueprint, Tasks};
use crate::state::{CallAccounting, State};
use crate::trace::TraceBuffer;
use crate::{bindings, journal, tail, Callbacks, ExecError, Journal, Limits, Output, StateSnapshot, TraceEvent};

/// The start of the mark that says an output was cut (the guest's and the host's alike).
const CUT_MARK: &str = "\n[eryx: output truncated: ";

/// An execute's output as the host keeps it: each stream at most `max_bytes` UTF-8 bytes
/// (and the mark saying how much more was printed), whatever the guest answered. The guest
/// cuts first; its limit lives in objects user code can reach, so the host cuts again here,
/// where user code cannot.
fn bounded(stdout: String, stderr: String, truncated: bool, max_bytes: u64) -> Output {
    let (stdout, cut_out) = bound_stream(stdout, max_bytes);
    let (stderr, cut_err) = bound_stream(stderr, max_bytes);
    Output { stdout, stderr, truncated: truncated || cut_out || cut_err }
}

/// One stream: its text (without the guest's own mark, which is kept when it is exactly
/// one) cut at a character boundary at `max_bytes`; whether the host cut it.
fn bound_stream(text: String, max_bytes: u64) -> (String, bool) {
    let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    // The guest's own mark: exactly `CUT_MARK`, a count, " more characters were printed]\n".
    // (exactly as the guest writes it: a count without leading zeros or a sign).
    let mark = |count: u64| format!("{CUT_MARK}{count} more characters were printed]\n");
    let (body, guest_dropped) = match text.rfind(CUT_MARK) {
        Some(at) => {
            let tail = &text[at + CUT_MARK.len()..];
            let count = tail.strip_suffix(" more characters were printed]\n").and_then(|count| count.parse::<u64>().ok());
            match count {
                Some(count) if text[at..] == mark(count) => (&text[..at], count),
                _ => (text.as_str(), 0),
            }
        }
        None => (text.as_str(), 0),
    };
    if body.len() <= max {
        return (text, false);
    }
    // Walk the text in the guest's units: a character costs its UTF-8 bytes, and an escaped
    // lone surrogate (`\udcff`, how the guest writes one) the 3 bytes it stands for.
    let bytes = body.as_bytes();
    let (mut at, mut spent) = (0, 0);
    let unit = |at: usize| -> (usize, usize) {
        if surrogate_escape(&bytes[at..]) {
            (6, 3)
        } else {
            let width = body[at..].chars().next().map_or(1, char::len_utf8);
            (width, width)
        }
    };
    while at < bytes.len() {
        let (width, cost) = unit(at);
        if spent + cost > max {
            break;
        }
        at += width;
        spent += cost;
    }
    if at == bytes.len() {
        return (text, false);
    }
    let mut dropped: u64 = 0;
    let mut rest = at;
    while rest < bytes.len() {
        rest += unit(rest).0;
        dropped += 1;
    }
    (format!("{}{}", &body[..at], mark(dropped.saturating_add(guest_dropped))), true)
}

/// Whether `rest` starts with the guest's escape of a lone surrogate (`\ud800`–`\udfff`).
fn surrogate_escape(rest: &[u8]) -> bool {
    rest.len() >= 6
        && rest.starts_with(b"\\ud")
        && matches!(rest[3], b'8'..=b'9' | b'a'..=b'f')
        && rest[4].is_ascii_hexdigit()
        && rest[5].is_ascii_hexdigit()
}

/// A traceback as the host keeps it: at most `max_bytes` (but never less than 64 KiB, so a
/// small output limit still leaves the error readable), its head and its tail (where the
/// exception is) around a line saying what was left out.
fn bound_traceback(text: String, max_bytes: u64) -> String {
    let max = usize::try_from(max_bytes).unwrap_or(usize::MAX).max(64 << 10);
    if text.len() <= max {
        return text;
    }
    let mut head = max / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - max / 2;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}\n[eryx: traceback cut: {} bytes left out]\n{}", &text[..head], tail - head, &text[tail..])
}

/// One guest instance with a persistent Python namespace.
pub struct Sandbox {
    pub(crate) store: Store<State>,
    pub(crate) instance: bindings::Sandbox,
    pub(crate) limits: Limits,
    /// Set after a trap: the instance must not be entered again.
    pub(crate) poisoned: Option<ExecError>,
    pub(crate) guest_stderr: tail::TailPipe,
    pub(crate) trace: bool,
    /// The runtime's task runtime, which drives this sandbox's calls.
    pub(crate) tasks: Arc<Tasks>,
    /// What a fresh instance is made from, and the callbacks it gets: [`Sandbox::clear`].
    pub(crate) blueprint: Arc<Blueprint>,
    pub(crate) callbacks: Arc<Callbacks>,
}

impl Sandbox {
    /// Changes the wall-clock timeout for the following calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.limits.timeout = timeout;
    }

    /// The limits of the following calls; the memory limit and fuel's presence are fixed
    /// when the runtime is created.
    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// Runs a call into the guest to its end, or until the timeout: the guest runs on a fiber
    /// whose stack holds [`engine::MAX_WASM_STACK`] of wasm frames with room to spare, whatever
    /// the caller's thread has (deep recursion in the interpreter's C code then ends in its own
    /// `RecursionError`, or in wasmtime's stack-limit trap, never in an overflow of the host's
    /// stack). The epoch deadline stops guest code that runs too long; this timeout also stops
    /// a guest that waits too long (on callbacks that do not answer).
    async fn call_guest<R>(
        &mut self,
        call: impl AsyncFnOnce(&mut Store<State>, &bindings::Sandbox) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let (store, instance, timeout) = (&mut self.store, &self.instance, self.limits.timeout);
        match tokio::time::timeout(timeout, call(store, instance)).await {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Trap::Interrupt.into()),
        }
    }

    /// [`Sandbox::call_guest`] on the runtime's own task runtime, for the synchronous API.
    fn block_on<R>(&mut self, call: impl AsyncFnOnce(&mut Store<State>, &bindings::Sandbox) -> wasmtime::Result<R>) -> wasmtime::Result<R> {
        let tasks = self.tasks.clone();
        tasks.block_on(self.call_guest(call))
    }

    fn arm(&mut self) -> Result<(), ExecError> {
        if let Some(error) = &self.poisoned {
            return Err(ExecError::Trap(format!("the sandbox is unusable after an earlier failure ({error})")));
        }
        // The guest's stderr, and a refused memory growth, explain a trap of this call only.
        self.guest_stderr.clear();
        self.store.data_mut().limits.refused = false;
        let ticks = (self.limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        self.store.set_epoch_deadline(ticks);
        if let Some(fuel) = self.limits.fuel {
            self.store.set_fuel(fuel).map_err(|error| ExecError::Trap(error.to_string()))?;
        }
        Ok(())
    }

    fn classify(&mut self, error: wasmtime::Error) -> ExecError {
        let text = format!("{error:?}");
        let classified = match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => ExecError::Timeout(self.limits.timeout),
            Some(wasmtime::Trap::OutOfFuel) => ExecError::FuelExhausted(self.limits.fuel.unwrap_or(0)),
            _ if self.store.data().limits.refused => ExecError::MemoryLimit(self.limits.memory_bytes),
            _ => {
                let said = String::from_utf8_lossy(&self.guest_stderr.contents()).trim().to_owned();
                if said.is_empty() {
                    ExecError::Trap(text)
                } else {
                    ExecError::Trap(format!("{said}\n{text}"))
                }
            }
        };
        self.poisoned = Some(classified.clone());
        classified
    }

    /// Reports trace events of the following executes (off by default: tracing costs).
    pub fn set_trace(&mut self, trace: bool) {
        self.trace = trace;
    }

    /// Runs `code` in the sandbox's namespace. The trace events it caused, when tracing is
    /// on, are [`Sandbox::traces`] afterwards. Not from inside an async runtime (it blocks):
    /// there, use [`Sandbox::execute_async`].
    pub fn execute(&mut self, code: &str) -> Result<Output, ExecError> {
        let tasks = self.tasks.clone();
        tasks.block_on(self.execute_async(code))
    }

    /// [`Sandbox::execute`] for async code: a future for the caller's tokio runtime (which
    /// must have its timers enabled); the sandbox's callbacks then run on that runtime too.
    pub async fn execute_async(&mut self, code: &str) -> Result<Output, ExecError> {
        self.arm()?;
        let state = self.store.data_mut();
        state.traces = TraceBuffer::default();
        state.calls = CallAccounting {
            made: 0,
            max: self.limits.max_callbacks,
            timeout: self.limits.callback_timeout,
            tracing: self.trace,
            max_argument_bytes: self.limits.max_callback_argument_bytes,
            max_pending_bytes: self.limits.max_pending_callback_bytes,
        };
        let options = bindings::ExecuteOptions { max_output_bytes: self.limits.max_output_bytes, trace: self.trace };
        let code = code.to_owned();
        // Until the call ends, the sandbox counts as broken: a future dropped mid-call (its
        // caller went away) leaves the guest stopped inside `execute`, never to be entered again.
        self.poisoned = Some(ExecError::Trap(
            "an earlier execute was abandoned before it finished (its future was dropped); clear the sandbox".into(),
        ));
        let outcome = self
            .call_guest(async move |store, instance| {
                store.run_concurrent(async move |accessor| instance.call_execute(accessor, code, options).await).await?
            })
            .await;
        self.poisoned = None;
        let max = self.limits.max_output_bytes;
        match outcome {
            Ok(Ok(output)) => Ok(bounded(output.stdout, output.stderr, output.truncated, max)),
            Ok(Err(error)) => Err(ExecError::Python {
                traceback: bound_traceback(error.traceback, max),
                output: bounded(error.stdout, error.stderr, error.truncated, max),
            }),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Serialises the user globals that can be carried to another sandbox; the snapshot
    /// names the ones it left out.
    pub fn snapshot(&mut self) -> Result<StateSnapshot, ExecError> {
        self.arm()?;
        match self.block_on(async |store, instance| instance.call_snapshot_state(store).await) {
            Ok(result) => result
                .map(|snapshot| StateSnapshot { data: snapshot.data, skipped: snapshot.skipped })
                .map_err(ExecError::python),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Merges a snapshot's globals back, name by name; answers the names that could not be
    /// restored. Snapshots are trusted input: restoring one runs code it carries (inside the
    /// sandbox).
    pub fn restore(&mut self, data: &[u8]) -> Result<Vec<String>, ExecError> {
        self.arm()?;
        match self.block_on(async |store, instance| instance.call_restore_state(store, data).await) {
            Ok(result) => result.map_err(ExecError::python),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Makes the sandbox exactly as fresh as a new one, whatever its code did before (to its
    /// globals, the builtins, imported modules or the runtime's own machinery, even after a
    /// trap): its instance is replaced by a new one from the runtime's snapshot. Its limits,
    /// tracing and callback journal stay. (The world's `clear-state` export only resets the
    /// namespace; this host does not need it.)
    pub fn clear(&mut self) -> Result<(), ExecError> {
        let tasks = self.tasks.clone();
        tasks.block_on(self.clear_async())
    }

    /// [`Sandbox::clear`] for async code.
    pub async fn clear_async(&mut self) -> Result<(), ExecError> {
        let fresh = self
            .blueprint
            .instantiate(self.callbacks.clone())
            .await
            .map_err(|error| ExecError::Trap(format!("a fresh instance could not be made: {error:#}")))?;
        let journal = std::mem::take(&mut self.store.data_mut().journal);
        self.store = fresh.store;
        self.instance = fresh.instance;
        self.guest_stderr = fresh.guest_stderr;
        self.store.data_mut().journal = journal;
        self.poisoned = None;
        Ok(())
    }

    /// Records the callback calls of the following executes, from now on (an empty journal).
    pub fn record_callbacks(&mut self) {
        self.store.data_mut().journal = journal::Mode::Record(Journal::default());
    }

    /// Answers the callback calls of the following executes from `journal`, in order,
    /// without calling the host; a call that is not the journal's next one gets an error
    /// naming the first difference (see [`Sandbox::replay_mismatch`]).
    pub fn replay_callbacks(&mut self, journal: Journal) {
        self.store.data_mut().journal = journal::Mode::Replay(journal::Replay::new(journal));
    }

    /// The callback calls recorded since [`Sandbox::record_callbacks`].
    pub fn recorded_callbacks(&self) -> Option<&Journal> {
        match &self.store.data().journal {
            journal::Mode::Record(journal) => Some(journal),
            _ => None,
        }
    }

    /// Why a replay did not match: its first call that differed from the journal, or the
    /// journal's calls that were not made. `None` when it matched (or nothing is replayed).
    pub fn replay_mismatch(&self) -> Option<String> {
        match &self.store.data().journal {
            journal::Mode::Replay(replay) => replay.mismatch(),
            _ => None,
        }
    }

    /// The trace events of the last `execute`, in order.
    pub fn traces(&self) -> &[TraceEvent] {
        &self.store.data().traces.events
    }

    /// How many trace events were dropped because the buffer was full.
    pub fn dropped_traces(&self) -> u64 {
        self.store.data().traces.dropped
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Callbacks, Runtime, VariantEntry};

    /// A sandbox of a component whose exports trap (`unreachable`), with nothing mounted.
    fn trapping_sandbox(directory: &Path) -> Sandbox {
        let path = directory.join("runtime-trap.wasm");
        std::fs::write(&path, eryx_interface::test_components::component_for(eryx_interface::WORLD_WIT)).unwrap();
        let runtime = Runtime::new(VariantEntry::for_component(&path), Limits::default(), &directory.join("compiled")).unwrap();
        runtime.sandbox(Arc::new(Callbacks::new())).unwrap()
    }

    #[test]
    fn a_memory_refusal_of_an_earlier_call_does_not_explain_a_later_trap() {
        let directory = tempfile::tempdir().unwrap();
        let mut sandbox = trapping_sandbox(directory.path());
        // An earlier call had a growth refused (and its code caught the MemoryError).
        sandbox.store.data_mut().limits.refused = true;
        match sandbox.execute("print(1)").unwrap_err() {
            ExecError::Trap(text) => assert!(text.contains("unreachable"), "{text}"),
            other => panic!("a trap of this call is no memory limit: {other}"),
        }
    }

    #[test]
    fn a_memory_limit_below_the_start_is_one_line_naming_both_sizes() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("runtime-small.wasm");
        std::fs::write(&path, eryx_interface::test_components::component_for(eryx_interface::WORLD_WIT)).unwrap();
        let mut variant = VariantEntry::for_component(&path);
        variant.component_initial_memory = Some(20 << 20);
        let limits = Limits { memory_bytes: 8 << 20, ..Limits::default() };
        let error = format!("{:#}", Runtime::new(variant, limits, &directory.path().join("compiled")).err().expect("refused"));
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.contains("the memory limit of 8.0 MiB is below the 20.0 MiB of linear memory"), "{error}");
        assert!(error.contains("allow at least 20 MiB"), "{error}");
    }

    #[test]
    fn the_host_cuts_output_the_guest_did_not() {
        // Within the limit, or cut by the guest with its own mark: kept as it is.
        assert_eq!(bound_stream("short\n".into(), 16), ("short\n".into(), false));
        let guest_cut = format!("{}{CUT_MARK}7 more characters were printed]\n", "x".repeat(16));
        assert_eq!(bound_stream(guest_cut.clone(), 16), (guest_cut, false));
        // Past the limit (the guest's was lifted): cut at the limit, counting what was dropped.
        let (text, cut) = bound_stream("x".repeat(1000), 16);
        assert!(cut);
        assert_eq!(text, format!("{}{CUT_MARK}984 more characters were printed]\n", "x".repeat(16)));
        // At a character boundary, never inside a character's bytes.
        let (text, _) = bound_stream("é".repeat(20), 15);
        assert_eq!(text, format!("{}{CUT_MARK}13 more characters were printed]\n", "é".repeat(7)));
        // A mark user code printed itself, with more text inside it, is no mark.
        let forged = format!("{}{CUT_MARK}1 {} more characters were printed]\n", "x".repeat(4), "y".repeat(100));
        let (text, cut) = bound_stream(forged, 16);
        assert!(cut && text.len() < 16 + 64, "{text}");
        // An escaped lone surrogate counts as the 3 bytes it stands for, and is never split.
        assert_eq!(bound_stream("ab\\udcff".into(), 5), ("ab\\udcff".into(), false));
        let (text, cut) = bound_stream("ab\\udcffcd".into(), 6);
        assert!(cut);
        assert_eq!(text, format!("ab\\udcffc{CUT_MARK}1 more characters were printed]\n"));
        // Nor is one with leading zeros, or a count that would overflow the sum.
        let zeros = format!("{CUT_MARK}{}7 more characters were printed]\n", "0".repeat(1000));
        assert!(bound_stream(zeros, 16).0.len() < 16 + 64);
        let huge = format!("{}{CUT_MARK}{} more characters were printed]\n", "x".repeat(40), u64::MAX);
        assert!(bound_stream(huge, 16).0.contains(&u64::MAX.to_string()));
        // A traceback keeps its head and its tail.
        let long = format!("Traceback (most recent call last):\n{}\nValueError: end", "x".repeat(1 << 20));
        let cut = bound_traceback(long, 16);
        assert!(cut.len() < (64 << 10) + 100 && cut.starts_with("Traceback") && cut.ends_with("ValueError: end"));
        let output = bounded("x".repeat(100), "ok".into(), false, 16);
        assert!(output.truncated && output.stderr == "ok");
    }
}
