//! [`Sandbox`]: one guest instance with a persistent Python namespace, and the calls into it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use wasmtime::Store;

use crate::limits::TICK;
use crate::runtime::{Blueprint, Tasks};
use crate::state::{CallAccounting, State};
use crate::trace::TraceBuffer;
use crate::output::{Capture, OutputListener};
use crate::{bindings, journal, tail, Callbacks, ExecError, Journal, Limits, Output, StateSnapshot, TraceEvent};

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
    /// Where the instance's stdout and stderr go.
    pub(crate) output: Capture,
    /// What the last execute wrote, when it was stopped (timeout, limits, a trap).
    pub(crate) interrupted_output: Option<Output>,
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
        let options = bindings::ExecuteOptions { trace: self.trace };
        let code = code.to_owned();
        self.output.begin(self.limits.max_output_bytes);
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
        let output = self.output.finish();
        self.interrupted_output = None;
        match outcome {
            Ok(Ok(())) => Ok(output),
            Ok(Err(traceback)) => {
                Err(ExecError::Python { traceback: bound_traceback(traceback, self.limits.max_output_bytes), output })
            }
            Err(error) => {
                self.interrupted_output = Some(output);
                Err(self.classify(error))
            }
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
        let journal = std::mem::take(&mut self.store.data_mut().journal);
        // The old instance goes first and gives its slot back to the pool, so a runtime whose
        // slots are all taken can still clear its sandboxes. Until the fresh one is in place
        // the sandbox refuses calls.
        let mut empty = self.blueprint.empty_store();
        empty.data_mut().journal = journal;
        drop(std::mem::replace(&mut self.store, empty));
        self.blueprint.slot_released();
        self.poisoned = Some(ExecError::Trap("the sandbox's clear did not finish; clear it again".into()));
        let fresh = match self.blueprint.take_fresh(self.callbacks.clone()).await {
            Ok(fresh) => fresh,
            Err(error) => {
                let error = ExecError::Trap(format!("a fresh instance could not be made: {error:#}"));
                self.poisoned = Some(error.clone());
                return Err(error);
            }
        };
        let journal = std::mem::take(&mut self.store.data_mut().journal);
        self.store = fresh.store;
        self.instance = fresh.instance;
        self.guest_stderr = fresh.guest_stderr;
        fresh.output.set_listener(self.output.listener());
        self.output = fresh.output;
        self.store.data_mut().journal = journal;
        self.poisoned = None;
        Ok(())
    }

    /// What the last execute wrote before it was stopped (by the timeout, the memory or fuel
    /// limit, or a trap); `None` after an execute that ended by itself (its output is in its
    /// answer, or in [`ExecError::Python`]).
    pub fn interrupted_output(&self) -> Option<&Output> {
        self.interrupted_output.as_ref()
    }

    /// Shows the following executes' output to `listener` as it is written (the bytes each
    /// stream keeps, in order), besides collecting it into their [`Output`]; `None` stops it.
    pub fn set_output_listener(&mut self, listener: Option<OutputListener>) {
        self.output.set_listener(listener);
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

impl Drop for Sandbox {
    /// The used instance goes to the runtime's warm-up thread to be dropped: giving its slot
    /// back (resetting what it touched) is not the caller's wait.
    fn drop(&mut self) {
        let empty = self.blueprint.empty_store();
        let mut store = std::mem::replace(&mut self.store, empty);
        // The caller's callbacks (its code, whose drop may do anything) are dropped here, on
        // the caller's thread, not with the store.
        store.data_mut().set_callbacks(Arc::new(crate::Callbacks::new()));
        self.blueprint.retire(store);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Callbacks, Runtime, VariantEntry};

    /// A runtime of a component whose exports trap (`unreachable`), with nothing mounted.
    fn trapping_runtime(directory: &Path) -> Runtime {
        let path = directory.join("runtime-trap.wasm");
        std::fs::write(&path, eryx_interface::test_components::component_for(eryx_interface::WORLD_WIT)).unwrap();
        Runtime::new(VariantEntry::for_component(&path), Limits::default(), &directory.join("compiled")).unwrap()
    }

    /// A sandbox of [`trapping_runtime`].
    fn trapping_sandbox(directory: &Path) -> Sandbox {
        trapping_runtime(directory).sandbox(Arc::new(Callbacks::new())).unwrap()
    }

    /// As many sandboxes of `runtime` as its pool has slots; asking for one more fails.
    fn fill_the_pool(runtime: &Runtime) -> Vec<Sandbox> {
        let sandboxes: Vec<Sandbox> = (0..crate::MAX_LIVE_SANDBOXES).map(|_| runtime.sandbox(Arc::new(Callbacks::new())).unwrap()).collect();
        assert!(runtime.sandbox(Arc::new(Callbacks::new())).is_err(), "the pool is full");
        sandboxes
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
    fn a_sandbox_clears_while_every_slot_of_the_pool_is_taken() {
        let directory = tempfile::tempdir().unwrap();
        let runtime = trapping_runtime(directory.path());
        let mut sandboxes = fill_the_pool(&runtime);
        sandboxes[7].record_callbacks();
        sandboxes[7].clear().expect("a clear needs no second slot");
        assert!(sandboxes[7].recorded_callbacks().is_some(), "the journal stays");
        // The cleared sandbox is usable (its exports trap here: it was entered).
        assert!(matches!(sandboxes[7].execute("print(1)"), Err(ExecError::Trap(text)) if text.contains("unreachable")));
    }

    #[test]
    fn a_dropped_sandbox_gives_its_slot_back_before_the_next_one_is_asked_for() {
        // Used stores are dropped by the warm-up thread; a caller at the pool's limit who drops
        // a sandbox must still get one at once, every time (with and without warm instances).
        let directory = tempfile::tempdir().unwrap();
        let runtime = trapping_runtime(directory.path());
        for warm in [2, 0] {
            runtime.keep_warm(warm);
            let mut sandboxes = fill_the_pool(&runtime);
            for round in 0..50 {
                sandboxes.pop();
                sandboxes.push(runtime.sandbox(Arc::new(Callbacks::new())).unwrap_or_else(|error| panic!("round {round}: {error:#}")));
            }
            drop(sandboxes);
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
    fn a_traceback_keeps_its_head_and_its_tail() {
        // A traceback keeps its head and its tail.
        let long = format!("Traceback (most recent call last):\n{}\nValueError: end", "x".repeat(1 << 20));
        let cut = bound_traceback(long, 16);
        assert!(cut.len() < (64 << 10) + 100 && cut.starts_with("Traceback") && cut.ends_with("ValueError: end"));
    }
}
