//! The wasmtime host for eryx guests: the library an embedder depends on.
//!
//! [`Runtime`] compiles (or loads from the compile cache, or from the build's precompiled
//! artifact) one variant's component and creates [`Sandbox`]es from it. A sandbox sees the
//! variant's read-only stdlib mount (when the variant has one) and nothing else of the host:
//! no other directory, no network, an environment holding only what the variant's manifest
//! entry sets. Each sandbox runs under [`Limits`] (wall-clock timeout, memory, optional fuel,
//! output, callbacks) with typed errors ([`ExecError`]); its Python code reaches the host only
//! through the [`Callbacks`] it was given, whose calls can be recorded and replayed
//! ([`Journal`]). [`command::CommandRuntime`] runs a variant's command form like `python3`.
//!
//! The tools around it (the conformance and command-case runners, the benchmark, the build
//! steps that pre-initialise and precompile components, the `eryx-tools` binary) live in the
//! `eryx-tools` crate; this one carries none of them.
//!
//! Modules, one concept each:
//! - [`runtime`]: a compiled variant, its engine, instance pool and task runtime;
//! - [`sandbox`]: one instance and the calls into it;
//! - [`limits`]: what a sandbox may use, the epoch clock and the memory limiter;
//! - [`outcome`]: what calls answer (output, state snapshots, errors);
//! - [`output`]: the sandbox's stdout and stderr, captured at its WASI streams, cut, streamed;
//! - [`callbacks`]: the host functions Python code may call;
//! - [`journal`]: recording and replaying callback calls;
//! - [`engine`]: the engine settings the host and precompiled artifacts share;
//! - [`precompiled`]: loading a precompiled artifact after its digest was checked;
//! - [`manifest`]: what the build says about each variant (`manifest.json`);
//! - [`command`]: a variant's command form run like `python3`;
//! - [`preinit_host`]: the instance the build's pre-initialisation snapshots;
//! - `state` (the store state and the world's imports), `trace` (the bounded trace buffer),
//!   `tail` (the guest's own stderr), `compile_cache` and `bindings` are internal.

mod bindings;
pub mod callbacks;
pub mod command;
mod compile_cache;
pub mod engine;
pub mod journal;
pub mod limits;
pub mod manifest;
pub mod outcome;
pub mod output;
pub mod precompiled;
pub mod preinit_host;
pub mod runtime;
pub mod sandbox;
mod state;
mod tail;
mod trace;

pub use callbacks::{Callback, Callbacks, TraceEvent};
pub use eryx_interface::files::write_atomic;
pub use journal::{Journal, JournalEntry};
pub use limits::Limits;
pub use manifest::{Manifest, VariantEntry};
pub use outcome::{ExecError, Output, StateSnapshot};
pub use output::{OutputListener, Stream};
pub use precompiled::{load_precompiled, NotLoaded};
pub use runtime::{Form, Loaded, Runtime, MAX_LIVE_SANDBOXES};
pub use sandbox::Sandbox;
pub use trace::{MAX_TRACE_BYTES, MAX_TRACE_EVENTS};
