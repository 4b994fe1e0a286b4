//! The wasmtime host for eryx guests.
//!
//! [`Runtime`] compiles (or loads from the compile cache) one variant's component and
//! creates [`Sandbox`]es from it. A sandbox sees the variant's read-only stdlib mount (when
//! the variant has one) and nothing else of the host: no other directory, no network, an
//! environment holding only what the variant's manifest entry sets. Each sandbox runs
//! under limits (wall-clock timeout, memory, optional fuel) with typed errors.

pub mod bench;
pub mod callbacks;
pub mod cli_cases;
pub mod command;
mod compile_cache;
pub mod conformance;
pub mod engine;
pub mod journal;
pub mod manifest;
pub mod preinit;
mod tail;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Accessor, Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use callbacks::{Callback, Callbacks, TraceEvent};
pub use journal::{Journal, JournalEntry};
pub use manifest::{Manifest, VariantEntry};

mod bindings {
    wasmtime::component::bindgen!({
        world: "sandbox",
        path: "../../wit",
        // Every export is called with `call_async` (an async export needs it; the others
        // then run the same way, on a fiber whose stack holds the wasm stack).
        exports: { default: async },
    });
}

/// How often the epoch ticker advances; the timeout's resolution.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// How much of the guest's own stderr a sandbox keeps (to explain a trap).
const GUEST_STDERR_BYTES: usize = 64 * 1024;
/// How many sandboxes of one [`Runtime`] may be alive at once: the size of its instance
/// pool. Each slot reserves address space (not memory) up front: about 4 GiB for the
/// sandbox's one linear memory and 32 MiB for the fiber stack its calls run on, so a runtime
/// reserves about 2 TiB of the 128 TiB a Linux process has.
pub const MAX_LIVE_SANDBOXES: u32 = 500;

pub use eryx_interface::files::write_atomic;
use eryx_interface::files::sha256_file;

/// Resource limits for one sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time one `execute` may take.
    pub timeout: Duration,
    /// The most linear memory the guest may hold, in bytes.
    pub memory_bytes: usize,
    /// Fuel per `execute` (instructions, roughly), when set.
    pub fuel: Option<u64>,
    /// The most UTF-8 bytes of stdout, and of stderr, one `execute` keeps (enforced in the
    /// guest: the rest is cut with a marker and the output says it was truncated).
    pub max_output_bytes: u64,
    /// The most callback invocations one `execute` may make.
    pub max_callbacks: u32,
    /// How long one callback may take before the guest gets an error instead.
    pub callback_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 << 20,
            fuel: None,
            max_output_bytes: 1 << 20,
            max_callbacks: 1000,
            callback_timeout: Duration::from_secs(10),
        }
    }
}

/// What one `execute` printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout or stderr was cut at [`Limits::max_output_bytes`].
    pub truncated: bool,
}

/// The user state of a sandbox, as `snapshot-state` serialised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    pub data: Vec<u8>,
    /// The globals left out: values that cannot be serialised, or that refer to code
    /// defined in the sandbox.
    pub skipped: Vec<String>,
}

/// Why an `execute` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The Python code raised: the guest's traceback, and what the code printed before.
    Python { traceback: String, output: Output },
    /// The wall-clock timeout was hit.
    Timeout(Duration),
    /// The memory limit was hit.
    MemoryLimit(usize),
    /// The fuel ran out.
    FuelExhausted(u64),
    /// The guest trapped for another reason; the sandbox cannot be used again.
    Trap(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every failure but Python's own ends the instance: say so.
        const RECREATE: &str = "the sandbox must be recreated";
        match self {
            ExecError::Python { traceback, .. } => write!(formatter, "{traceback}"),
            ExecError::Timeout(limit) => {
                write!(formatter, "execution timed out: the timeout limit of {} ms was hit; {RECREATE}", limit.as_millis())
            }
            ExecError::MemoryLimit(limit) => {
                write!(formatter, "the memory limit of {} MiB was hit; {RECREATE}", limit >> 20)
            }
            ExecError::FuelExhausted(fuel) => write!(formatter, "the fuel limit of {fuel} was hit; {RECREATE}"),
            ExecError::Trap(text) => write!(formatter, "the sandbox trapped ({RECREATE}): {text}"),
        }
    }
}

impl std::error::Error for ExecError {}

impl ExecError {
    /// A Python failure that printed nothing (the state exports).
    pub fn python(traceback: String) -> ExecError {
        ExecError::Python { traceback, output: Output::default() }
    }

    /// What the failed code printed before it failed (empty for other failures).
    pub fn partial_output(&self) -> Option<&Output> {
        match self {
            ExecError::Python { output, .. } => Some(output),
            _ => None,
        }
    }
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    callbacks: Arc<Callbacks>,
    traces: TraceBuffer,
    limits: MemoryLimiter,
    /// This execute's callback accounting and whether it traces.
    calls: CallAccounting,
    /// Whether callback calls are recorded or replayed.
    journal: journal::Mode,
}

impl State {
    /// A sandbox's state: its WASI context, its callbacks, a memory limit; no trace events,
    /// no callback made yet.
    fn new(wasi: WasiCtx, callbacks: Arc<Callbacks>, memory_bytes: usize) -> State {
        State {
            wasi,
            table: ResourceTable::new(),
            callbacks,
            traces: TraceBuffer::default(),
            limits: MemoryLimiter::new(memory_bytes),
            calls: CallAccounting::default(),
            journal: journal::Mode::Off,
        }
    }

    /// Accounts for a callback call about to start and says where its answer comes from.
    fn begin_callback(&mut self, name: &str, arguments_json: &str) -> (Option<usize>, Answer) {
        let calls = &mut self.calls;
        if calls.made >= calls.max {
            return (None, Answer::Refused(format!("the callback limit of {} invocations per execute was reached", calls.max)));
        }
        calls.made += 1;
        if calls.tracing {
            self.traces.push_host(serde_json::json!({"type": "callback_start", "name": name}));
        }
        let index = match &mut self.journal {
            journal::Mode::Replay(replay) => return (None, Answer::Recorded(replay.answer(name, arguments_json))),
            journal::Mode::Record(journal) => Some(journal.start(name, arguments_json)),
            journal::Mode::Off => None,
        };
        (index, Answer::Host(self.callbacks.clone(), self.calls.timeout))
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
    /// The host's callbacks, within the callback timeout.
    Host(Arc<Callbacks>, Duration),
    /// The journal being replayed (`None`: the recorded call never answered).
    Recorded(Option<Result<String, String>>),
}

/// A linker with WASI and the world's imports, for sandbox components.
fn sandbox_linker(engine: &Engine) -> Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::Sandbox::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// The callback limits of the running `execute`.
#[derive(Default)]
pub(crate) struct CallAccounting {
    made: u32,
    max: u32,
    timeout: Duration,
    tracing: bool,
}

/// The trace events a sandbox keeps for the host: bounded in count and bytes whatever the
/// guest reports (guest code can call the import directly); what does not fit is counted.
#[derive(Default)]
pub(crate) struct TraceBuffer {
    events: Vec<TraceEvent>,
    bytes: usize,
    dropped: u64,
}

/// At most this many trace events per sandbox, holding at most [`MAX_TRACE_BYTES`].
pub const MAX_TRACE_EVENTS: usize = 10_000;
pub const MAX_TRACE_BYTES: usize = 1 << 20;

impl TraceBuffer {
    fn push(&mut self, event: TraceEvent) {
        let size = event.event_json.len() + event.context_json.len();
        if self.events.len() >= MAX_TRACE_EVENTS || self.bytes + size > MAX_TRACE_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += size;
        self.events.push(event);
    }

    /// An event the host itself reports (no source line).
    fn push_host(&mut self, event: serde_json::Value) {
        self.push(TraceEvent { lineno: 0, event_json: event.to_string(), context_json: "{}".into() });
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl<T> bindings::SandboxImportsWithStore<T> for HasSelf<State> {
    async fn invoke(accessor: &Accessor<T, Self>, name: String, arguments_json: String) -> Result<String, String> {
        let (index, source) = accessor.with(|mut access| access.get().begin_callback(&name, &arguments_json));
        let started = std::time::Instant::now();
        let answer = match source {
            Answer::Refused(text) => return Err(text),
            Answer::Host(callbacks, timeout) => match tokio::time::timeout(timeout, callbacks.invoke(&name, &arguments_json)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("callback `{name}` did not answer within the callback timeout of {} ms", timeout.as_millis())),
            },
            Answer::Recorded(Some(answer)) => answer,
            // Cancelled in the recording before it answered: it does not answer now either.
            Answer::Recorded(None) => std::future::pending().await,
        };
        accessor.with(|mut access| access.get().end_callback(index, &name, &answer, started.elapsed()));
        answer
    }

    async fn timer(_accessor: &Accessor<T, Self>, nanoseconds: u64) {
        tokio::time::sleep(Duration::from_nanos(nanoseconds)).await;
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

/// Advances `engine`'s epoch every [`TICK`] (the timeouts' clock) until the engine, held
/// weakly, is gone.
pub(crate) fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::spawn(move || loop {
        std::thread::sleep(TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => break,
        }
    });
}

/// The memory limit of one store. A growth past it is refused (`memory.grow` answers -1, so
/// the guest's allocator fails and Python raises `MemoryError`) and remembered for the call:
/// when the guest then traps anyway (an allocation it cannot survive), the trap is the memory
/// limit. A sandbox forgets the refusal when its next call starts.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    pub(crate) refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: usize) -> MemoryLimiter {
        MemoryLimiter { max_bytes, refused: false }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|maximum| desired <= maximum))
    }
}

/// What every instance of a variant sees: its stdlib (read-only) when it mounts one, and the
/// variant's own environment.
pub(crate) fn grant_variant(wasi: &mut WasiCtxBuilder, variant: &VariantEntry) -> Result<()> {
    if let Some(stdlib) = &variant.stdlib {
        wasi.preopened_dir(&stdlib.host_directory, &stdlib.guest_path, FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("mount {}", stdlib.host_directory.display()))?;
    }
    for (key, value) in &variant.env {
        wasi.env(key, value);
    }
    Ok(())
}

/// Where a [`Runtime`]'s compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The build's precompiled artifact (`runtime-<variant>.cwasm`), digest checked.
    Precompiled,
    /// The host's compile cache.
    CompileCache,
    /// Compiled now (and cached).
    Compiled,
}

impl Loaded {
    pub fn describe(self) -> &'static str {
        match self {
            Loaded::Precompiled => "loaded the precompiled artifact",
            Loaded::CompileCache => "loaded from the compile cache",
            Loaded::Compiled => "compiled",
        }
    }
}

/// Which of a variant's components a [`Runtime`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The pre-initialised component, from its precompiled artifact when that loads (the
    /// default).
    Preinit,
    /// The pre-initialised component, compiled by the host (through its compile cache).
    PreinitCompiled,
    /// The component as linked, without pre-initialisation (for comparison).
    Plain,
}

/// The instance pool of one runtime: every sandbox's memories and tables come from
/// pre-reserved slots, and a memory is initialised by mapping the component's image
/// copy-on-write instead of copying it; a slot is reset when its sandbox is dropped.
fn pooling(limits: &Limits) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_LIVE_SANDBOXES)
        .total_core_instances(MAX_LIVE_SANDBOXES * 32)
        // A sandbox component has one linear memory (its libraries share it) and two tables.
        .total_memories(MAX_LIVE_SANDBOXES)
        .total_tables(MAX_LIVE_SANDBOXES * 2)
        .max_core_instances_per_component(32)
        .max_memories_per_component(1)
        .max_tables_per_component(2)
        .table_elements(100_000)
        .max_memory_size(limits.memory_bytes.next_multiple_of(64 << 10))
        // A sandbox runs one guest call at a time, each on one fiber stack.
        .total_stacks(MAX_LIVE_SANDBOXES);
    pool
}

/// A compiled variant, ready to create sandboxes.
pub struct Runtime {
    engine: Engine,
    /// Drives the sandboxes' calls, their async callbacks and timers.
    tasks: Arc<Tasks>,
    pre: bindings::SandboxPre<State>,
    variant: VariantEntry,
    limits: Limits,
    /// Where the compiled component came from (for reports and tests).
    pub loaded: Loaded,
}

impl Runtime {
    /// Loads `variant`'s default (pre-initialised) component from a manifest, with
    /// `compile_cache_dir` for compiled components.
    pub fn new(variant: VariantEntry, limits: Limits, compile_cache_dir: &Path) -> Result<Runtime> {
        Runtime::with_form(variant, limits, compile_cache_dir, Form::Preinit)
    }

    /// Loads one of `variant`'s component forms.
    pub fn with_form(variant: VariantEntry, limits: Limits, compile_cache_dir: &Path, form: Form) -> Result<Runtime> {
        let fuel = limits.fuel.is_some();
        let mut config = engine::sandbox_config(fuel);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(&limits)));
        let engine = Engine::new(&config)?;
        let component_path = match form {
            Form::Plain => variant.plain_path.clone().with_context(|| {
                format!("the manifest has no plain component of `{}`; run `cargo xtask build-runtime`", variant.name)
            })?,
            Form::Preinit | Form::PreinitCompiled => variant.component_path.clone(),
        };
        let precompiled = match (&variant.precompiled, form) {
            // Fuel changes the compiled code; the artifact is built without it.
            (Some(precompiled), Form::Preinit) if !fuel => match load_precompiled(&engine, precompiled) {
                Ok(component) => Some(component),
                Err(why) => {
                    eprintln!("note: not using {}: {why}; compiling the component instead", precompiled.path.display());
                    None
                }
            },
            _ => None,
        };
        let (component, loaded) = match precompiled {
            Some(component) => (component, Loaded::Precompiled),
            None => {
                let (component, cached) = compile_cache::load(
                    &engine,
                    &component_path,
                    compile_cache_dir,
                    &engine::settings_label(fuel),
                    compile_cache::Interface::Sandbox,
                )?;
                (component, if cached { Loaded::CompileCache } else { Loaded::Compiled })
            }
        };
        let linker = sandbox_linker(&engine)?;
        // A precompiled artifact skips the world check of the compile path; linking checks
        // every function's type, so say what a failure here means.
        let pre = linker
            .instantiate_pre(&component)
            .and_then(bindings::SandboxPre::new)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "{} does not implement this host's {} (built for another version of wit/runtime.wit?); \
                     rebuild it with `cargo xtask build-runtime`",
                    component_path.display(),
                    eryx_interface::world_name()
                )
            })?;
        start_epoch_ticker(&engine);
        Ok(Runtime { engine, tasks: Arc::new(Tasks::new()?), pre, variant, limits, loaded })
    }

    /// A fresh sandbox with its own namespace. Not from inside an async runtime (it blocks):
    /// there, use [`Runtime::sandbox_async`].
    pub fn sandbox(&self, callbacks: Arc<Callbacks>) -> Result<Sandbox> {
        self.tasks.block_on(self.sandbox_async(callbacks))
    }

    /// [`Runtime::sandbox`] for async code: a future for the caller's tokio runtime (which
    /// must have its timers enabled).
    pub async fn sandbox_async(&self, callbacks: Arc<Callbacks>) -> Result<Sandbox> {
        let mut wasi = WasiCtxBuilder::new();
        grant_variant(&mut wasi, &self.variant)?;
        // The guest's own stderr (not the user's, which `execute` captures) carries the
        // reason of a guest panic; it is kept to explain traps.
        let guest_stderr = tail::TailPipe::new(GUEST_STDERR_BYTES);
        wasi.stderr(guest_stderr.clone());
        // File reads (the stdlib) are quick: done inline rather than on a blocking thread.
        wasi.allow_blocking_current_thread(true);
        let mut store = Store::new(&self.engine, State::new(wasi.build(), callbacks, self.limits.memory_bytes));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        if let Some(fuel) = self.limits.fuel {
            // Instantiation runs the libraries' constructors, which burn fuel too.
            store.set_fuel(fuel)?;
        }
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiate the component")?;
        Ok(Sandbox {
            store,
            instance,
            tasks: self.tasks.clone(),
            limits: self.limits.clone(),
            poisoned: None,
            guest_stderr,
            trace: false,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// The tokio runtime of one [`Runtime`]: one worker thread for async callbacks and timers,
/// the blocking pool for synchronous callbacks; the calls into guests are driven by the
/// threads that make them. When the last sandbox and the runtime are gone it shuts down
/// without waiting for synchronous callbacks still running (one that hangs would otherwise
/// hang the drop).
struct Tasks(Option<tokio::runtime::Runtime>);

impl Tasks {
    fn new() -> Result<Tasks> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("eryx host")
            .enable_time()
            .build()
            .context("start the host's task runtime")?;
        Ok(Tasks(Some(runtime)))
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.as_ref().expect("the task runtime runs until dropped").block_on(future)
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why a precompiled artifact was not loaded.
#[derive(Debug)]
pub enum NotLoaded {
    /// Its bytes are not the ones the manifest names: it was never handed to wasmtime.
    Digest { found: String, expected: String },
    /// It could not be read.
    Unreadable(String),
    /// wasmtime refused it: another version, target, CPU or engine setting.
    Engine(String),
}

impl std::fmt::Display for NotLoaded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotLoaded::Digest { found, expected } => {
                write!(formatter, "its sha256 is {found}, the manifest names {expected} (rebuild with `cargo xtask build-runtime`)")
            }
            NotLoaded::Unreadable(error) => write!(formatter, "{error}"),
            NotLoaded::Engine(error) => write!(formatter, "this host's engine cannot run it ({error})"),
        }
    }
}

/// Loads a precompiled artifact after checking its digest against the manifest's: loading
/// compiled code is `unsafe` (it runs as this process's machine code), so only the bytes the
/// build wrote are loaded, and wasmtime then checks that they suit `engine`.
pub fn load_precompiled(engine: &Engine, precompiled: &manifest::Precompiled) -> Result<Component, NotLoaded> {
    let path = &precompiled.path;
    let found = sha256_file(path).map_err(|error| NotLoaded::Unreadable(format!("{error:#}")))?;
    if found != precompiled.sha256 {
        return Err(NotLoaded::Digest { found, expected: precompiled.sha256.clone() });
    }
    // SAFETY: the file holds the bytes the build wrote (digest checked above); wasmtime
    // checks their version, target, settings and CPU features against this engine and
    // refuses a mismatch with an error.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|error| NotLoaded::Engine(format!("{error:#}")))
}

/// One guest instance with a persistent Python namespace.
pub struct Sandbox {
    store: Store<State>,
    instance: bindings::Sandbox,
    limits: Limits,
    /// Set after a trap: the instance must not be entered again.
    poisoned: Option<ExecError>,
    guest_stderr: tail::TailPipe,
    trace: bool,
    /// The runtime's task runtime, which drives this sandbox's calls.
    tasks: Arc<Tasks>,
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
        };
        let options = bindings::ExecuteOptions { max_output_bytes: self.limits.max_output_bytes, trace: self.trace };
        let code = code.to_owned();
        let outcome = self
            .call_guest(async move |store, instance| {
                store.run_concurrent(async move |accessor| instance.call_execute(accessor, code, options).await).await?
            })
            .await;
        match outcome {
            Ok(Ok(output)) => Ok(Output { stdout: output.stdout, stderr: output.stderr, truncated: output.truncated }),
            Ok(Err(error)) => Err(ExecError::Python {
                traceback: error.traceback,
                output: Output { stdout: error.stdout, stderr: error.stderr, truncated: error.truncated },
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

    /// Removes every user global and brings back the builtins and the callbacks.
    pub fn clear(&mut self) -> Result<(), ExecError> {
        self.arm()?;
        match self.block_on(async |store, instance| instance.call_clear_state(store).await) {
            Ok(result) => result.map_err(ExecError::python),
            Err(error) => Err(self.classify(error)),
        }
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
    use super::*;

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
}
