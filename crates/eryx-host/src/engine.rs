//! The engine settings of sandboxes, in one place: the host's engines and the build's
//! precompiled artifacts (`runtime-<variant>.cwasm`) must agree on every setting that
//! shapes compiled code, or a precompiled artifact would not load.

use std::hash::Hasher;

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine};

/// The wasm stack a sandbox may use. CPython 3.14 guards its C recursion by the depth of the
/// shadow stack in linear memory (about 1 MiB on WASI), but the frames live on wasmtime's
/// native stack: 4 MiB of it ran out first (a trap) for `json.dumps` of a list nested
/// 100 000 deep, 7 MiB gave CPython's own `RecursionError`. The decoders use more of it per
/// level (`json.loads` and `pickle.loads` of 100 000 nested lists exhausted 16 MiB before the
/// guard tripped): 64 MiB. Only the pages a call touches are memory.
pub const MAX_WASM_STACK: usize = 64 << 20;
/// The stack of the fiber a guest call runs on: the wasm stack and room for the host's own
/// frames (host functions run on it too); only the pages touched are memory.
pub const GUEST_FIBER_STACK: usize = 2 * MAX_WASM_STACK;
/// The CPU baseline of precompiled artifacts: any x86-64 machine of the last 15 years
/// (SSE4.2, POPCNT, CMPXCHG16B). Compiling for the build machine's own features (AVX-512 and
/// the like) would give artifacts that fail to load elsewhere.
pub const PRECOMPILED_CPU: &str = "x86-64-v2";
/// The target precompiled artifacts are built for.
pub const PRECOMPILED_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The settings of a sandbox engine: component model with its async ABI (the world's `invoke`
/// and `timer` are async imports, `execute` an async export), epoch interruption (the
/// timeout), fuel when asked for, the stack limit.
pub fn sandbox_config(fuel: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    // Every guest call runs on a fiber (the exports are called async); its stack holds the
    // wasm stack, with room for host frames.
    config.async_stack_size(GUEST_FIBER_STACK);
    // A deep call touches tens of MiB of its fiber stack: zeroed (and given back to the
    // system, past what the pool keeps resident) when the call ends, so no slot keeps it.
    config.async_stack_zeroing(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    config
}

/// A short text naming the settings of [`sandbox_config`], for cache keys.
pub fn settings_label(fuel: bool) -> String {
    format!("epoch=1;fuel={fuel};stack={MAX_WASM_STACK};cm-async=1")
}

/// The engine that precompiles artifacts: the sandbox settings without fuel, for
/// [`PRECOMPILED_TARGET`] at the [`PRECOMPILED_CPU`] baseline instead of the build machine.
pub fn precompile_engine() -> Result<Engine> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        anyhow::bail!("precompiled artifacts are built on x86-64 Linux only (they are for {PRECOMPILED_TARGET})");
    }
    let mut config = sandbox_config(false);
    config.target(PRECOMPILED_TARGET)?;
    // SAFETY: enables a CPU-feature preset; the artifacts it makes are checked against the
    // loading machine's features by wasmtime when they are deserialised.
    unsafe {
        config.cranelift_flag_enable(PRECOMPILED_CPU);
    }
    Ok(Engine::new(&config)?)
}

/// wasmtime's summary of what makes compiled code compatible with `engine` (version, target,
/// flags, tunables), as a SHA-256 hex digest that stays the same across processes.
pub fn compatibility_hash(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            unreachable!("only the digest is read")
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    eryx_interface::files::hex(&hasher.0.finalize())
}
