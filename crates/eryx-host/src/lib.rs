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
pub mod manifest;
pub mod preinit;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use callbacks::{Callback, Callbacks, TraceEvent};
pub use manifest::{Manifest, VariantEntry};

mod bindings {
    wasmtime::component::bindgen!({
        world: "sandbox",
        path: "../../wit",
    });
}

/// How often the epoch ticker advances; the timeout's resolution.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// How much of the guest's own stderr a sandbox keeps (to explain a trap).
const GUEST_STDERR_BYTES: usize = 64 * 1024;
/// How many sandboxes of one [`Runtime`] may be alive at once: the size of its instance
/// pool. Each slot reserves address space (not memory) up front: about 4 GiB for the
/// sandbox's one linear memory, so a runtime reserves about 2 TiB of the 128 TiB a Linux
/// process has.
pub const MAX_LIVE_SANDBOXES: u32 = 500;

/// Writes `bytes` to `path` through a temporary sibling that is renamed into place, so a
/// reader sees the old file or the whole new one, never a part; the temporary is removed
/// when the write fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let file_name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let temporary = path.with_file_name(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("write {}", path.display()));
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Resource limits for one sandbox.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time one `execute` may take.
    pub timeout: Duration,
    /// The most linear memory the guest may hold, in bytes.
    pub memory_bytes: usize,
    /// Fuel per `execute` (instructions, roughly), when set.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(30), memory_bytes: 256 << 20, fuel: None }
    }
}

/// What one `execute` printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
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
        match self {
            ExecError::Python { traceback, .. } => write!(formatter, "{traceback}"),
            ExecError::Timeout(limit) => {
                write!(formatter, "execution timed out: the timeout limit of {} ms was hit", limit.as_millis())
            }
            ExecError::MemoryLimit(limit) => {
                write!(formatter, "the memory limit of {} MiB was hit", limit >> 20)
            }
            ExecError::FuelExhausted(fuel) => write!(formatter, "the fuel limit of {fuel} was hit"),
            ExecError::Trap(text) => write!(formatter, "the sandbox trapped: {text}"),
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
    traces: Vec<TraceEvent>,
    limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::SandboxImports for State {
    fn invoke(&mut self, name: String, arguments_json: String) -> Result<String, String> {
        self.callbacks.invoke(&name, &arguments_json)
    }

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

/// Whether a wasmtime error (its `{:?}` text) is the store refusing memory growth past the
/// limit. wasmtime reports it only as text.
pub(crate) fn hit_memory_limit(error_text: &str) -> bool {
    error_text.contains("forcing trap when growing memory") || error_text.contains("memory minimum size")
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
        .max_memory_size(limits.memory_bytes.next_multiple_of(64 << 10));
    pool
}

/// A compiled variant, ready to create sandboxes.
pub struct Runtime {
    engine: Engine,
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
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Sandbox::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("link {}", component_path.display()))?;
        let pre = bindings::SandboxPre::new(pre)?;
        start_epoch_ticker(&engine);
        Ok(Runtime { engine, pre, variant, limits, loaded })
    }

    /// A fresh sandbox with its own namespace.
    pub fn sandbox(&self, callbacks: Arc<Callbacks>) -> Result<Sandbox> {
        let mut wasi = WasiCtxBuilder::new();
        grant_variant(&mut wasi, &self.variant)?;
        // The guest's own stderr (not the user's, which `execute` captures) carries the
        // reason of a guest panic; it is kept to explain traps.
        let guest_stderr = MemoryOutputPipe::new(GUEST_STDERR_BYTES);
        wasi.stderr(guest_stderr.clone());
        let state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            callbacks,
            traces: Vec::new(),
            limits: StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate(&mut store).map_err(anyhow::Error::from).context("instantiate the component")?;
        Ok(Sandbox { store, instance, limits: self.limits.clone(), poisoned: None, guest_stderr })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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
    let found = compile_cache::sha256_of_file(path).map_err(|error| NotLoaded::Unreadable(format!("{error:#}")))?;
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
    guest_stderr: MemoryOutputPipe,
}

impl Sandbox {
    /// Changes the wall-clock timeout for the following calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.limits.timeout = timeout;
    }

    fn arm(&mut self) -> Result<(), ExecError> {
        if let Some(error) = &self.poisoned {
            return Err(ExecError::Trap(format!("the sandbox is unusable after an earlier failure ({error})")));
        }
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
            _ if hit_memory_limit(&text) => ExecError::MemoryLimit(self.limits.memory_bytes),
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

    /// Runs `code` in the sandbox's namespace.
    pub fn execute(&mut self, code: &str) -> Result<Output, ExecError> {
        self.arm()?;
        match self.instance.call_execute(&mut self.store, code) {
            Ok(Ok(output)) => Ok(Output { stdout: output.stdout, stderr: output.stderr }),
            Ok(Err(error)) => Err(ExecError::Python {
                traceback: error.traceback,
                output: Output { stdout: error.stdout, stderr: error.stderr },
            }),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Serialises the picklable user globals.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, ExecError> {
        self.arm()?;
        match self.instance.call_snapshot_state(&mut self.store) {
            Ok(result) => result.map_err(ExecError::python),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Merges a snapshot's globals back.
    pub fn restore(&mut self, data: &[u8]) -> Result<(), ExecError> {
        self.arm()?;
        match self.instance.call_restore_state(&mut self.store, data) {
            Ok(result) => result.map_err(ExecError::python),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Removes every user global.
    pub fn clear(&mut self) -> Result<(), ExecError> {
        self.arm()?;
        self.instance.call_clear_state(&mut self.store).map_err(|error| self.classify(error))
    }

    /// The trace events reported so far, in order.
    pub fn traces(&self) -> &[TraceEvent] {
        &self.store.data().traces
    }
}
