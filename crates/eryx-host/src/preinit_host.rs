//! The host side of the build's pre-initialisation: an instance of a sandbox component with
//! this host's imports, under a WASI context the build chooses (the build's tool fixes its
//! clocks and random sources), whose `execute` runs once before the instance is snapshotted.
//! The snapshotting itself (wasmtime-wizer) belongs to the build's tools, not to this library.

use anyhow::Result;
use wasmtime::component::{Instance, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;

pub use crate::state::{grant_variant, State, GUEST_STDERR_BYTES};
use crate::{bindings, Callbacks};

/// A linker with WASI and the world's imports, as every sandbox has (the build may shadow
/// some of WASI's functions before instantiating).
pub fn linker(engine: &Engine) -> Result<Linker<State>> {
    crate::state::sandbox_linker(engine)
}

/// A store for one pre-initialisation: the WASI context `wasi`, no callbacks, a memory limit
/// of `memory_bytes`, no deadline.
pub fn store(engine: &Engine, wasi: WasiCtx, memory_bytes: usize) -> Store<State> {
    crate::state::new_store(engine, wasi, std::sync::Arc::new(Callbacks::new()), memory_bytes)
}

/// Runs `code` as one `execute` of `instance`, without tracing (its output goes to the
/// WASI context's stdout and stderr): `Ok(Err(traceback))` when the Python code raised.
pub async fn execute(store: &mut Store<State>, instance: &Instance, code: String) -> wasmtime::Result<Result<(), String>> {
    let sandbox = bindings::Sandbox::new(&mut *store, instance)?;
    let options = bindings::ExecuteOptions { trace: false };
    let outcome = store.run_concurrent(async |accessor| sandbox.call_execute(accessor, code, options).await).await??;
    Ok(outcome)
}
