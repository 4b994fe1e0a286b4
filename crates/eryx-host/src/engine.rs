//! The engine settings of sandboxes, in one place: the host's engines and the build's
//! precompiled artifacts (`runtime-<variant>.cwasm`) must agree on every setting that
//! shapes compiled code, or a precompiled artifact would not load.

use std::hash::Hasher;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine};

/// The wasm stack a sandbox may use. CPython 3.14 guards its C recursion by the depth of the
/// shadow stack in linear memory (about 1 MiB on WASI), but the frames live on wasmtime's
/// native stack: 4 MiB of it ran out first (a trap) for `json.dumps` of a list nested
/// 100 000 deep, 7 MiB gave CPython's own `RecursionError`. 16 MiB leaves a margin.
pub const MAX_WASM_STACK: usize = 16 << 20;
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

/// Precompiles the sandbox component at `component` with [`precompile_engine`] into `out`,
/// and writes `info`: the target, CPU baseline and compatibility hash it was made for.
pub fn precompile(component: &std::path::Path, out: &std::path::Path, info: &std::path::Path) -> Result<()> {
    let bytes = std::fs::read(component).with_context(|| format!("read {}", component.display()))?;
    eryx_interface::check_component(&bytes, &component.display().to_string())?;
    precompile_unchecked(component, &bytes, out, info)
}

/// [`precompile`] of `bytes` (read from `component`) without the world check (tests make
/// artifacts of other worlds).
fn precompile_unchecked(component: &std::path::Path, bytes: &[u8], out: &std::path::Path, info_path: &std::path::Path) -> Result<()> {
    let engine = precompile_engine()?;
    let started = std::time::Instant::now();
    let compiled = engine.precompile_component(bytes).map_err(anyhow::Error::from).with_context(|| format!("precompile {}", component.display()))?;
    let info = serde_json::json!({
        "target": PRECOMPILED_TARGET,
        "cpu": PRECOMPILED_CPU,
        "compatibility_hash": compatibility_hash(&engine),
    });
    crate::write_atomic(out, &compiled)?;
    crate::write_atomic(info_path, format!("{info:#}\n").as_bytes())?;
    eprintln!(
        "precompiled {} for {PRECOMPILED_TARGET} ({PRECOMPILED_CPU}) in {:.1}s: {:.1} MiB",
        component.display(),
        started.elapsed().as_secs_f64(),
        compiled.len() as f64 / 1048576.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Precompiled;
    use crate::{load_precompiled, NotLoaded};

    #[test]
    fn a_precompiled_artifact_loads_only_with_its_digest_and_a_matching_engine() {
        let directory = tempfile::tempdir().unwrap();
        let component = directory.path().join("runtime-test.wasm");
        std::fs::write(&component, eryx_interface::test_components::component_for(eryx_interface::WORLD_WIT)).unwrap();
        let artifact = directory.path().join("runtime-test.cwasm");
        precompile(&component, &artifact, &directory.path().join("runtime-test.cwasm.json")).unwrap();
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(directory.path().join("runtime-test.cwasm.json")).unwrap()).unwrap();
        assert_eq!(info["cpu"], "x86-64-v2");
        assert_eq!(info["compatibility_hash"], compatibility_hash(&precompile_engine().unwrap()));
        let bytes = std::fs::read(&artifact).unwrap();
        let entry = Precompiled {
            path: artifact.clone(),
            sha256: eryx_interface::files::sha256_bytes(&bytes),
            wasmtime: String::new(),
            compatibility_hash: String::new(),
        };

        // The build machine's own engine (its CPU features detected) runs the baseline artifact.
        let host = Engine::new(&sandbox_config(false)).unwrap();
        assert!(load_precompiled(&host, &entry).is_ok(), "a matching artifact loads");

        // One changed byte: refused by its digest, before wasmtime sees it.
        let mut changed = bytes.clone();
        let middle = changed.len() / 2;
        changed[middle] ^= 1;
        let tampered = directory.path().join("tampered.cwasm");
        std::fs::write(&tampered, &changed).unwrap();
        match load_precompiled(&host, &Precompiled { path: tampered, ..entry.clone() }) {
            Err(NotLoaded::Digest { found, expected }) => {
                assert_eq!(expected, entry.sha256);
                assert_ne!(found, expected);
            }
            other => panic!("a changed artifact must be refused by its digest, got {:?}", other.map(|_| "loaded")),
        }

        // An engine with other settings (fuel changes compiled code): wasmtime refuses it.
        let fueled = Engine::new(&sandbox_config(true)).unwrap();
        match load_precompiled(&fueled, &entry) {
            Err(NotLoaded::Engine(text)) => assert!(text.contains("fuel"), "{text}"),
            other => panic!("an engine mismatch must be reported, got {:?}", other.map(|_| "loaded")),
        }
    }

    #[test]
    fn a_precompiled_component_of_another_world_is_refused_naming_the_world() {
        let directory = tempfile::tempdir().unwrap();
        let component = directory.path().join("runtime-old.wasm");
        let wit = eryx_interface::test_components::without_line("export clear-state:");
        std::fs::write(&component, eryx_interface::test_components::component_for(&wit)).unwrap();
        let artifact = directory.path().join("runtime-old.cwasm");
        let info = directory.path().join("runtime-old.cwasm.json");
        precompile_unchecked(&component, &std::fs::read(&component).unwrap(), &artifact, &info).unwrap();
        let mut variant = crate::VariantEntry::for_component(&component);
        variant.precompiled = Some(Precompiled {
            sha256: eryx_interface::files::sha256_file(&artifact).unwrap(),
            path: artifact,
            wasmtime: String::new(),
            compatibility_hash: String::new(),
        });
        let error = crate::Runtime::new(variant, crate::Limits::default(), &directory.path().join("compiled"))
            .err()
            .expect("a component without clear-state cannot serve sandboxes");
        let error = format!("{error:#}");
        assert!(error.contains("runtime-old.wasm does not implement this host's eryx:sandbox/sandbox"), "{error}");
        assert!(error.contains("clear-state"), "{error}");
    }
}

