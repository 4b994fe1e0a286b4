//! [`Runtime`]: one variant's compiled component, its engine, instance pool and task
//! runtime; it creates sandboxes.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, Result};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::WasiCtxBuilder;

use crate::limits::start_epoch_ticker;
use crate::output::{Capture, Stream};
use crate::precompiled::load_precompiled;
use crate::state::{grant_variant, new_store, sandbox_linker, State, GUEST_STDERR_BYTES};
use crate::{bindings, compile_cache, engine, tail, Callbacks, Limits, Sandbox, VariantEntry};

/// How many sandboxes of one [`Runtime`] may be alive at once: the size of its instance
/// pool. Each slot reserves address space (not memory) up front: about 4 GiB for the
/// sandbox's one linear memory and 128 MiB for the fiber stack its calls run on, so a runtime
/// reserves about 2.1 TiB of the 128 TiB a Linux process has.
pub const MAX_LIVE_SANDBOXES: u32 = 500;

/// How many fresh instances a [`Runtime`] keeps ready by default ([`Runtime::keep_warm`]):
/// one. Warm instances are made on the runtime's own thread (which drops used stores in any
/// case, off the caller's path) and prepared there (an empty execute and a clear), so a caller takes
/// one instead of paying the instantiation and the pages a first execute copies: in
/// `cargo xtask bench`, ready in 0.55 ms (CPython) instead of 2.3. A host whose requests
/// come in bursts keeps more; 0 makes every sandbox on the caller's thread. Each holds a
/// slot of the instance pool.
pub const WARM_SANDBOXES: usize = 1;

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
        // A sandbox runs one guest call at a time, each on one fiber stack; what a call
        // touched past the first 2 MiB is given back when it ends.
        .total_stacks(MAX_LIVE_SANDBOXES)
        .async_stack_keep_resident(2 << 20);
    pool
}

/// Refuses, in one line, a memory limit below the memory the component starts with (its
/// pre-initialised heap, say): no sandbox could ever be created, and the instance pool would
/// refuse the component in terms of its own internals.
fn check_memory_limit(initial: Option<u64>, path: &Path, limits: &Limits) -> Result<()> {
    match initial {
        Some(initial) if initial > limits.memory_bytes as u64 => {
            let mib = |bytes: u64| bytes as f64 / 1048576.0;
            anyhow::bail!(
                "the memory limit of {:.1} MiB is below the {:.1} MiB of linear memory {} starts with; allow at least {} MiB",
                mib(limits.memory_bytes as u64),
                mib(initial),
                path.display(),
                initial.div_ceil(1 << 20)
            )
        }
        _ => Ok(()),
    }
}

/// What a fresh instance of a variant is made from (shared by a runtime and its sandboxes,
/// which make a fresh one to clear themselves).
pub(crate) struct Blueprint {
    engine: Engine,
    pre: bindings::SandboxPre<State>,
    variant: VariantEntry,
    memory_bytes: usize,
    fuel: Option<u64>,
    /// Fresh instances made ahead of time, and used stores waiting to be dropped.
    warm: Warm,
}

/// The instances a runtime keeps ready and the stores it drops off the callers' path, shared
/// with the runtime's warm-up thread.
struct Warm {
    state: Mutex<WarmState>,
    /// Wakes the warm-up thread (an instance was taken, a store retired, the runtime closed).
    wake: Condvar,
    /// Signalled when the warm-up thread finished a piece of work or ended.
    idle: Condvar,
}

impl WarmState {
    /// Whether the warm-up thread is at work or about to be (woken to make an instance it
    /// has not started yet): a slot it takes comes back as a ready instance.
    fn thread_at_work(&self) -> bool {
        !self.gone && (self.busy || (!self.closed && !self.stalled && self.ready.len() < self.target))
    }
}

impl Warm {
    fn lock(&self) -> std::sync::MutexGuard<'_, WarmState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct WarmState {
    ready: VecDeque<Fresh>,
    retired: Vec<Store<State>>,
    /// How many instances to keep ready.
    target: usize,
    /// Set when the runtime is dropped: the thread drops what it holds and ends.
    closed: bool,
    /// The thread is dropping stores or making an instance (outside the lock).
    busy: bool,
    /// How many pieces of work the thread finished (a caller waits for the next one).
    finished: u64,
    /// The thread ended (the runtime closed, or it panicked): stores are dropped where they
    /// are retired, and nobody waits for it.
    gone: bool,
    /// The last instantiation of the thread failed (no free slot, say): it waits for a
    /// change (a store retired, an instance taken) before trying again.
    stalled: bool,
}

/// The epoch ticks a new instance's preparation ([`Fresh::prepare`]) may take: a few
/// milliseconds of work, given a second on a loaded machine.
const PREPARE_TICKS: u64 = 100;

/// A fresh instance: its store, its bindings, the tail of its own stderr and the capture of
/// its output.
pub(crate) struct Fresh {
    pub(crate) store: Store<State>,
    pub(crate) instance: bindings::Sandbox,
    pub(crate) guest_stderr: tail::TailPipe,
    pub(crate) output: Capture,
}

impl Blueprint {
    /// A fresh instance for `callbacks`: one made ahead of time when there is one, else made
    /// now. Either way it comes from the snapshot and never ran a caller's code.
    pub(crate) async fn take_fresh(&self, callbacks: Arc<Callbacks>) -> Result<Fresh> {
        // Every slot of the pool may be taken only for now: by stores callers dropped that
        // wait to be dropped for good, or by the instance the warm-up thread is making. While
        // an instantiation fails and either is pending, the retired stores are dropped here
        // (or the thread's current work is waited for) and it is tried again, so a caller who
        // dropped a sandbox can always make one in its place.
        loop {
            if let Some(fresh) = self.take_warm() {
                return Ok(fresh.with_callbacks(callbacks));
            }
            let finished_before = self.warm.lock().finished;
            let error = match self.instantiate(callbacks.clone()).await {
                Ok(fresh) => return Ok(fresh),
                Err(error) => error,
            };
            let retired = {
                let mut state = self.warm.lock();
                if !state.ready.is_empty() || !state.retired.is_empty() || state.finished != finished_before {
                    // An instance made meanwhile, stores to drop here, or the thread's work
                    // overlapped the attempt (wasmtime counts a refused instantiation for a
                    // moment, so either side may be refused while the other is, spuriously).
                } else if state.thread_at_work() {
                    let seen = state.finished;
                    while state.thread_at_work() && state.finished == seen {
                        state = self.warm.idle.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                    }
                } else {
                    // Nothing is pending: the pool is full of live sandboxes.
                    return Err(error);
                }
                std::mem::take(&mut state.retired)
            };
            drop(retired);
        }
    }

    fn take_warm(&self) -> Option<Fresh> {
        let mut state = self.warm.lock();
        let fresh = state.ready.pop_front()?;
        state.stalled = false;
        self.warm.wake.notify_one();
        Some(fresh)
    }

    /// Hands a used store to the warm-up thread to drop (giving its slot back costs the
    /// resetting of what it touched), or drops it here once the runtime is gone.
    pub(crate) fn retire(&self, store: Store<State>) {
        let mut state = self.warm.lock();
        if state.closed || state.gone {
            drop(state);
            drop(store);
            return;
        }
        state.retired.push(store);
        state.stalled = false;
        self.warm.wake.notify_one();
    }

    /// A slot of the pool was given back elsewhere (a sandbox cleared in place): an
    /// instantiation that failed for want of one may succeed now.
    pub(crate) fn slot_released(&self) {
        let mut state = self.warm.lock();
        state.stalled = false;
        self.warm.wake.notify_one();
    }

    /// The warm-up thread: drops retired stores and keeps `target` instances ready until the
    /// runtime is dropped.
    fn warm_up_thread(self: Arc<Self>, tasks: Arc<Tasks>) {
        /// Marks the thread gone however it ends (a panic included), so no caller waits for it.
        struct Gone<'a>(&'a Warm);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.gone = true;
                state.busy = false;
                self.0.idle.notify_all();
            }
        }
        let _gone = Gone(&self.warm);
        loop {
            let (retired, wanted) = {
                let mut state = self.warm.lock();
                while !state.closed && state.retired.is_empty() && (state.stalled || state.ready.len() >= state.target) {
                    state = self.warm.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if state.closed {
                    let ready = std::mem::take(&mut state.ready);
                    let retired = std::mem::take(&mut state.retired);
                    drop(state);
                    drop((ready, retired));
                    return;
                }
                state.busy = true;
                (std::mem::take(&mut state.retired), !state.stalled && state.ready.len() < state.target)
            };
            // The stores hold no caller's code (their callbacks were taken out when they were
            // retired); a panic while dropping one is contained to it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(retired)));
            let made = if wanted {
                Some(tasks.block_on(async {
                    let mut fresh = self.instantiate(Arc::new(Callbacks::new())).await?;
                    fresh.prepare().await?;
                    Ok::<_, anyhow::Error>(fresh)
                }))
            } else {
                None
            };
            // An instance no longer wanted (the target was lowered meanwhile) is dropped before
            // the work counts as finished: a caller waiting for a slot retries only then.
            let surplus = {
                let mut state = self.warm.lock();
                match made {
                    Some(Ok(fresh)) if !state.closed && state.ready.len() < state.target => {
                        state.ready.push_back(fresh);
                        None
                    }
                    Some(Ok(fresh)) => Some(fresh),
                    // A caller asking for a sandbox meets the same error and reports it.
                    Some(Err(_)) => {
                        state.stalled = true;
                        None
                    }
                    None => None,
                }
            };
            drop(surplus);
            let mut state = self.warm.lock();
            state.busy = false;
            state.finished += 1;
            self.warm.idle.notify_all();
        }
    }

    /// A store with no instance (it takes no slot of the pool), to hold a sandbox's place
    /// while its instance is replaced.
    pub(crate) fn empty_store(&self) -> Store<State> {
        new_store(&self.engine, WasiCtxBuilder::new().build(), Arc::new(Callbacks::new()), 0)
    }

    /// A new instance from the pre-initialisation snapshot, seeing the variant's grant only.
    pub(crate) async fn instantiate(&self, callbacks: Arc<Callbacks>) -> Result<Fresh> {
        let mut wasi = WasiCtxBuilder::new();
        grant_variant(&mut wasi, &self.variant)?;
        // Its stdout and stderr are the sandbox's output, captured per execute. The last
        // bytes of stderr are kept apart too: a guest panic writes its reason there, which
        // explains a trap whatever the output limit.
        let output = Capture::default();
        let guest_stderr = tail::TailPipe::new(GUEST_STDERR_BYTES);
        wasi.stdout(output.pipe(Stream::Stdout, None));
        wasi.stderr(output.pipe(Stream::Stderr, Some(guest_stderr.clone())));
        // File reads (the stdlib) are quick: done inline rather than on a blocking thread.
        wasi.allow_blocking_current_thread(true);
        let mut store = new_store(&self.engine, wasi.build(), callbacks, self.memory_bytes);
        if let Some(fuel) = self.fuel {
            // Instantiation runs the libraries' constructors, which burn fuel too.
            store.set_fuel(fuel)?;
        }
        let instance = self.pre.instantiate_async(&mut store).await.map_err(anyhow::Error::from).context("instantiate the component")?;
        Ok(Fresh { store, instance, guest_stderr, output })
    }
}

impl Fresh {
    /// The runtime's own first steps in a new instance, taken off the callers' path by the
    /// warm-up thread: an empty `execute` (which renews the random seed the snapshot holds and
    /// writes where a first execute writes, so the pages of the snapshot it touches are copied
    /// now rather than on a caller's first request), then `clear-state`, which puts `__main__`,
    /// the execute count and the callbacks back as they were (the callbacks are installed for
    /// the caller who takes the instance, on its first execute). No caller's code runs here:
    /// the instance is still one that never ran user code, and its output, empty, is dropped.
    async fn prepare(&mut self) -> Result<()> {
        self.store.set_epoch_deadline(PREPARE_TICKS);
        if self.store.get_fuel().is_ok() {
            // Fuel counts a caller's calls: each of them sets its own budget first.
            self.store.set_fuel(u64::MAX)?;
        }
        let instance = &self.instance;
        let options = bindings::ExecuteOptions { trace: false };
        let executed = self.store.run_concurrent(async |accessor| instance.call_execute(accessor, String::new(), options).await).await??;
        executed.map_err(|error| anyhow::anyhow!("the runtime's empty execute failed in a new instance: {error}"))?;
        let cleared = instance.call_clear_state(&mut self.store).await?;
        cleared.map_err(|error| anyhow::anyhow!("clear-state failed in a new instance: {error}"))?;
        self.output.finish();
        Ok(())
    }

    /// The instance with the callbacks of the caller who takes it (it was made with none).
    fn with_callbacks(mut self, callbacks: Arc<Callbacks>) -> Fresh {
        self.store.data_mut().set_callbacks(callbacks);
        self
    }
}

/// A compiled variant, ready to create sandboxes.
pub struct Runtime {
    blueprint: Arc<Blueprint>,
    /// The warm-up thread, joined when the runtime is dropped.
    warm_up: Option<std::thread::JoinHandle<()>>,
    /// Drives the sandboxes' calls, their async callbacks and timers.
    tasks: Arc<Tasks>,
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
        let (component_path, initial_memory) = match form {
            Form::Plain => (
                variant.plain_path.clone().with_context(|| {
                    format!("the manifest has no plain component of `{}`; run `cargo xtask build-runtime`", variant.name)
                })?,
                variant.plain_initial_memory,
            ),
            Form::Preinit | Form::PreinitCompiled => (variant.component_path.clone(), variant.component_initial_memory),
        };
        check_memory_limit(initial_memory, &component_path, &limits)?;
        let fuel = limits.fuel.is_some();
        let mut config = engine::sandbox_config(fuel);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(&limits)));
        let engine = Engine::new(&config)?;
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
        let warm = Warm {
            state: Mutex::new(WarmState { target: WARM_SANDBOXES, ..WarmState::default() }),
            wake: Condvar::new(),
            idle: Condvar::new(),
        };
        let blueprint = Arc::new(Blueprint { engine, pre, variant, memory_bytes: limits.memory_bytes, fuel: limits.fuel, warm });
        let tasks = Arc::new(Tasks::new()?);
        let (thread_blueprint, thread_tasks) = (blueprint.clone(), tasks.clone());
        let warm_up = std::thread::Builder::new()
            .name("eryx warm-up".into())
            .spawn(move || thread_blueprint.warm_up_thread(thread_tasks))
            .context("start the runtime's warm-up thread")?;
        Ok(Runtime { blueprint, warm_up: Some(warm_up), tasks, limits, loaded })
    }

    /// How many fresh instances to keep ready ([`WARM_SANDBOXES`] by default; 0 makes every
    /// sandbox instantiate on the caller's thread, and drops the ready ones).
    pub fn keep_warm(&self, count: usize) {
        let dropped = {
            let mut state = self.blueprint.warm.lock();
            state.target = count;
            state.stalled = false;
            self.blueprint.warm.wake.notify_one();
            let keep = state.ready.len().min(count);
            state.ready.split_off(keep)
        };
        drop(dropped);
    }

    /// Waits until the runtime holds as many ready instances as it keeps ([`Runtime::keep_warm`])
    /// and its warm-up thread has nothing left to do (no used store to drop), or `timeout`
    /// passed; answers whether it got there. For a host that wants its first requests served
    /// warm, and for measurements of a request that arrives when the runtime is idle.
    pub fn wait_warm(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let state = self.blueprint.warm.lock();
                if state.ready.len() >= state.target && state.retired.is_empty() && !state.busy {
                    return true;
                }
                if state.stalled || state.gone {
                    return false;
                }
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// A fresh sandbox with its own namespace. Not from inside an async runtime (it blocks):
    /// there, use [`Runtime::sandbox_async`].
    pub fn sandbox(&self, callbacks: Arc<Callbacks>) -> Result<Sandbox> {
        self.tasks.block_on(self.sandbox_async(callbacks))
    }

    /// [`Runtime::sandbox`] for async code: a future for the caller's tokio runtime (which
    /// must have its timers enabled).
    pub async fn sandbox_async(&self, callbacks: Arc<Callbacks>) -> Result<Sandbox> {
        let fresh = self.blueprint.take_fresh(callbacks.clone()).await?;
        Ok(Sandbox {
            store: fresh.store,
            instance: fresh.instance,
            guest_stderr: fresh.guest_stderr,
            output: fresh.output,
            interrupted_output: None,
            blueprint: self.blueprint.clone(),
            callbacks,
            tasks: self.tasks.clone(),
            limits: self.limits.clone(),
            poisoned: None,
            trace: false,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Drop for Runtime {
    /// Ends the warm-up thread (it drops the ready instances) and waits for it, so nothing
    /// of the runtime outlives it but the sandboxes still alive, which drop their stores
    /// themselves from now on.
    fn drop(&mut self) {
        {
            let mut state = self.blueprint.warm.lock();
            state.closed = true;
            self.blueprint.warm.wake.notify_one();
        }
        if let Some(thread) = self.warm_up.take() {
            let _ = thread.join();
        }
    }
}

/// The tokio runtime of one [`Runtime`]: one worker thread for async callbacks and timers,
/// the blocking pool for synchronous callbacks; the calls into guests are driven by the
/// threads that make them. When the last sandbox and the runtime are gone it shuts down
/// without waiting for synchronous callbacks still running (one that hangs would otherwise
/// hang the drop).
pub(crate) struct Tasks(Option<tokio::runtime::Runtime>);

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

    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
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
