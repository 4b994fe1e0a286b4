//! The store state of one sandbox (its WASI context, callbacks, trace events, memory limit,
//! callback accounting and journal) and the world's imports the host implements on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Accessor, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::limits::{MemoryLimiter, MAX_PENDING_TIMERS, SYNC_CALLBACKS_PER_SANDBOX};
use crate::trace::TraceBuffer;
use crate::{bindings, journal, Callbacks, TraceEvent, VariantEntry};

/// How much of the guest's own stderr a sandbox keeps (to explain a trap).
pub const GUEST_STDERR_BYTES: usize = 64 * 1024;

/// The store state of one sandbox (opaque: only the host reads and changes it).
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    callbacks: Arc<Callbacks>,
    pub(crate) traces: TraceBuffer,
    pub(crate) limits: MemoryLimiter,
    /// This execute's callback accounting and whether it traces.
    pub(crate) calls: CallAccounting,
    /// Whether callback calls are recorded or replayed.
    pub(crate) journal: journal::Mode,
    /// The bytes of arguments of the callback calls pending now (shared with their
    /// reservations, which give them back when the handler is done, even one that runs on
    /// after its call was abandoned).
    pending_bytes: Arc<AtomicUsize>,
    /// This sandbox's share of the host's blocking threads for synchronous callbacks.
    sync_slots: Arc<tokio::sync::Semaphore>,
    /// How many of its timers are pending now.
    pending_timers: Arc<AtomicUsize>,
}

/// What a callback call reserves at least, whatever its arguments' size (so many tiny calls
/// left running count too).
const MIN_RESERVATION: usize = 1024;

/// What one pending call holds of a shared count (a callback call's argument bytes, a timer's
/// one place); given back when it is dropped (the call answered, or was cancelled with its
/// future).
struct Reservation {
    pending: Arc<AtomicUsize>,
    bytes: usize,
}

impl Reservation {
    /// Adds `bytes` to `pending` until the reservation is dropped; answers what was pending
    /// before.
    fn take(pending: &Arc<AtomicUsize>, bytes: usize) -> (Reservation, usize) {
        let before = pending.fetch_add(bytes, Ordering::SeqCst);
        (Reservation { pending: pending.clone(), bytes }, before)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl State {
    /// Gives an instance made ahead of time the callbacks of the sandbox that takes it.
    pub(crate) fn set_callbacks(&mut self, callbacks: Arc<Callbacks>) {
        self.callbacks = callbacks;
    }

    /// A sandbox's state: its WASI context, its callbacks, a memory limit; no trace events,
    /// no callback made yet.
    pub(crate) fn new(wasi: WasiCtx, callbacks: Arc<Callbacks>, memory_bytes: usize) -> State {
        State {
            wasi,
            table: ResourceTable::new(),
            callbacks,
            traces: TraceBuffer::default(),
            limits: MemoryLimiter::new(memory_bytes),
            calls: CallAccounting::default(),
            journal: journal::Mode::Off,
            pending_bytes: Arc::new(AtomicUsize::new(0)),
            sync_slots: Arc::new(tokio::sync::Semaphore::new(SYNC_CALLBACKS_PER_SANDBOX)),
            pending_timers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Accounts for a callback call about to start and says where its answer comes from;
    /// the reservation holds its argument bytes while it is pending.
    fn begin_callback(&mut self, name: &str, arguments_json: &str) -> (Option<usize>, Option<Reservation>, Answer) {
        let calls = &mut self.calls;
        if calls.made >= calls.max {
            return (None, None, Answer::Refused(format!("the callback limit of {} invocations per execute was reached", calls.max)));
        }
        let size = arguments_json.len();
        if size > calls.max_argument_bytes {
            return (None, None, Answer::Refused(format!(
                "the callback argument limit of {} bytes per call was exceeded: `{name}` was given {size} bytes of arguments",
                calls.max_argument_bytes
            )));
        }
        let pending = self.pending_bytes.load(Ordering::SeqCst);
        let reserved = size.max(MIN_RESERVATION);
        if pending + reserved > calls.max_pending_bytes {
            return (None, None, Answer::Refused(format!(
                "the limit of {} bytes of arguments for the callback calls pending at once was reached \
                 ({pending} bytes pending, `{name}` brings {size}); await some of them first",
                calls.max_pending_bytes
            )));
        }
        let (reservation, _) = Reservation::take(&self.pending_bytes, reserved);
        calls.made += 1;
        if calls.tracing {
            self.traces.push_host(serde_json::json!({"type": "callback_start", "name": name}));
        }
        let index = match &mut self.journal {
            journal::Mode::Replay(replay) => return (None, Some(reservation), Answer::Recorded(replay.answer(name, arguments_json))),
            journal::Mode::Record(journal) => journal.start(name, arguments_json),
            journal::Mode::Off => None,
        };
        (index, Some(reservation), Answer::Host(self.callbacks.clone(), self.calls.timeout, self.sync_slots.clone()))
    }

    /// Accounts for a callback call that answered (the journal entry `index` when recording).
    fn end_callback(&mut self, index: Option<usize>, name: &str, answer: &Result<String, String>, duration: Duration) {
        let duration_ms = duration.as_secs_f64() * 1000.0;
        if self.calls.tracing {
            self.traces.push_host(serde_json::json!({
                "type": "callback_end",
                "name": name,
                "ok": answer.is_ok(),
                "duration_ms": duration_ms,
            }));
        }
        if let (Some(index), journal::Mode::Record(journal)) = (index, &mut self.journal) {
            journal.finish(index, answer, duration_ms);
        }
    }
}

/// Where a callback call's answer comes from.
enum Answer {
    /// Refused before it started (the callback limit).
    Refused(String),
    /// The host's callbacks, within the callback timeout, with the sandbox's slots for
    /// synchronous ones.
    Host(Arc<Callbacks>, Duration, Arc<tokio::sync::Semaphore>),
    /// The journal being replayed (its answer `None`: the recorded call never answered).
    Recorded(journal::Recorded),
}

/// A store for one instance: its state (`wasi`, `callbacks`, a memory limit of
/// `memory_bytes`) with the memory limiter installed and no deadline yet (each call sets its
/// own).
pub(crate) fn new_store(engine: &Engine, wasi: WasiCtx, callbacks: Arc<Callbacks>, memory_bytes: usize) -> Store<State> {
    let mut store = Store::new(engine, State::new(wasi, callbacks, memory_bytes));
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// A linker with WASI and the world's imports, for sandbox components.
pub(crate) fn sandbox_linker(engine: &Engine) -> Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::Sandbox::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// The callback limits of the running `execute`.
#[derive(Default)]
pub(crate) struct CallAccounting {
    pub(crate) made: u32,
    pub(crate) max: u32,
    pub(crate) timeout: Duration,
    pub(crate) tracing: bool,
    pub(crate) max_argument_bytes: usize,
    pub(crate) max_pending_bytes: usize,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl<T> bindings::SandboxImportsWithStore<T> for HasSelf<State> {
    async fn invoke(accessor: &Accessor<T, Self>, name: String, arguments_json: String) -> Result<String, String> {
        let (index, reservation, source) = accessor.with(|mut access| access.get().begin_callback(&name, &arguments_json));
        let started = std::time::Instant::now();
        let answer = match source {
            Answer::Refused(text) => return Err(text),
            // The reservation goes with the handler: it is given back when the handler is done.
            Answer::Host(callbacks, timeout, slots) => match tokio::time::timeout(timeout, callbacks.invoke_holding(&name, &arguments_json, reservation, Some(slots))).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("callback `{name}` did not answer within the callback timeout of {} ms", timeout.as_millis())),
            },
            Answer::Recorded(recorded) => {
                // The answers recorded before this one reach the guest first.
                if let Some((position, turns)) = &recorded.turn {
                    turns.wait_for(*position).await;
                }
                match recorded.answer {
                    Some(answer) => {
                        accessor.with(|mut access| access.get().end_callback(index, &name, &answer, started.elapsed()));
                        if let Some((position, turns)) = &recorded.turn {
                            turns.done(*position);
                        }
                        return answer;
                    }
                    // Cancelled in the recording before it answered: it does not answer now either.
                    None => std::future::pending().await,
                }
            }
        };
        accessor.with(|mut access| access.get().end_callback(index, &name, &answer, started.elapsed()));
        answer
    }

    async fn timer(accessor: &Accessor<T, Self>, nanoseconds: u64) {
        let pending = accessor.with(|mut access| access.get().pending_timers.clone());
        let (_slot, before) = Reservation::take(&pending, 1);
        if before < MAX_PENDING_TIMERS {
            tokio::time::sleep(Duration::from_nanos(nanoseconds)).await;
        }
    }
}

impl bindings::SandboxImports for State {
    fn list_callbacks(&mut self) -> Vec<bindings::CallbackInfo> {
        self.callbacks
            .list()
            .map(|callback| bindings::CallbackInfo {
                name: callback.name.clone(),
                description: callback.description.clone(),
                parameters_schema_json: callback.parameters_schema_json.clone(),
            })
            .collect()
    }

    fn report_trace(&mut self, lineno: u32, event_json: String, context_json: String) {
        self.traces.push(TraceEvent { lineno, event_json, context_json });
    }
}

/// What every instance of a variant sees: its stdlib (read-only) when it mounts one, and the
/// variant's own environment.
pub fn grant_variant(wasi: &mut WasiCtxBuilder, variant: &VariantEntry) -> Result<()> {
    grant_variant_mounts(wasi, variant)?;
    for (key, value) in &variant.env {
        wasi.env(key, value);
    }
    Ok(())
}

/// The variant's mounts alone, read-only: its stdlib and its package set's tree, when it has
/// them.
pub(crate) fn grant_variant_mounts(wasi: &mut WasiCtxBuilder, variant: &VariantEntry) -> Result<()> {
    for mount in variant.stdlib.iter().chain(&variant.packages) {
        wasi.preopened_dir(&mount.host_directory, &mount.guest_path, FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("mount {}", mount.host_directory.display()))?;
    }
    Ok(())
}
