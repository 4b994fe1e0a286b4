//! The wasmtime host for eryx guests.
//!
//! [`Runtime`] compiles (or loads from the compile cache) one variant's component and
//! creates [`Sandbox`]es from it. A sandbox sees the variant's read-only stdlib mount (when
//! the variant has one) and nothing else of the host: no other directory, no network, an
//! environment holding only what the variant's manifest entry sets. Each sandbox runs
//! under limits (wall-clock timeout, memory, optional fuel) with typed errors.

pub mod callbacks;
pub mod cli_cases;
pub mod command;
mod compile_cache;
pub mod conformance;
pub mod manifest;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
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

/// A compiled variant, ready to create sandboxes.
pub struct Runtime {
    engine: Engine,
    component: Component,
    linker: Linker<State>,
    variant: VariantEntry,
    limits: Limits,
    /// Whether the component came from the compile cache (for reports and tests).
    pub loaded_from_cache: bool,
}

impl Runtime {
    /// Loads `variant` from a manifest, with `compile_cache_dir` for compiled components.
    pub fn new(variant: VariantEntry, limits: Limits, compile_cache_dir: &Path) -> Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(limits.fuel.is_some());
        config.async_stack_size(8 << 20);
        config.max_wasm_stack(4 << 20);
        let engine = Engine::new(&config)?;
        let settings = format!("epoch=1;fuel={};stack=4M", limits.fuel.is_some());
        let (component, loaded_from_cache) =
            compile_cache::load(&engine, &variant.component_path, compile_cache_dir, &settings, compile_cache::Interface::Sandbox)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Sandbox::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        start_epoch_ticker(&engine);
        Ok(Runtime { engine, component, linker, variant, limits, loaded_from_cache })
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
        let instance = bindings::Sandbox::instantiate(&mut store, &self.component, &self.linker)
            .map_err(anyhow::Error::from)
            .context("instantiate the component")?;
        Ok(Sandbox { store, instance, limits: self.limits.clone(), poisoned: None, guest_stderr })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
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
