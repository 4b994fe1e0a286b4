//! Compiled components, cached by the component's sha256, the engine settings and the
//! wasmtime version. Each entry is stored with its own sha256 and checked before it is
//! deserialised; a stale or corrupt entry is ignored and replaced.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use eryx_interface::files::{hex, sha256_bytes, write_atomic};

/// What a component must implement to be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// The `eryx:sandbox/sandbox` world of `wit/runtime.wit`.
    Sandbox,
    /// A WASI command: it exports `wasi:cli/run`.
    Command,
}

/// Loads the compiled form of `component_path`, compiling and caching it when needed.
/// Returns the component and whether it came from the cache.
pub fn load(
    engine: &Engine,
    component_path: &Path,
    cache_dir: &Path,
    settings: &str,
    interface: Interface,
) -> Result<(Component, bool)> {
    let bytes = fs::read(component_path).with_context(|| {
        format!("read {} (run `cargo xtask build-runtime`)", component_path.display())
    })?;
    let label = component_path.display().to_string();
    // A component of another world would fail later with a linker error that names no
    // function; this names the one that differs.
    match interface {
        Interface::Sandbox => eryx_interface::check_component(&bytes, &label)?,
        Interface::Command => eryx_interface::check_command(&bytes, &label)?,
    }
    let key = hex(&Sha256::new()
        .chain_update(&bytes)
        .chain_update(settings)
        .chain_update(env!("CARGO_PKG_VERSION"))
        .chain_update(crate::engine::compatibility_hash(engine))
        .finalize());
    let entry = cache_dir.join(format!("{key}.cwasm"));
    let digest_path: PathBuf = cache_dir.join(format!("{key}.sha256"));
    if let (Ok(compiled), Ok(digest)) = (fs::read(&entry), fs::read_to_string(&digest_path)) {
        if sha256_bytes(&compiled) == digest.trim() {
            // SAFETY: the bytes are ones this host serialised (their digest matches the one
            // stored beside them), for an engine with the same settings and version.
            if let Ok(component) = unsafe { Component::deserialize(engine, &compiled) } {
                return Ok((component, true));
            }
        }
        eprintln!("note: compiled-component cache entry {} is stale or corrupt; recompiling", entry.display());
    }
    let started = std::time::Instant::now();
    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compile {}", component_path.display()))?;
    eprintln!("compiled {} in {:.1}s", component_path.display(), started.elapsed().as_secs_f64());
    let compiled = component.serialize()?;
    fs::create_dir_all(cache_dir).with_context(|| format!("create {}", cache_dir.display()))?;
    let _ = fs::remove_file(&digest_path);
    write_atomic(&entry, &compiled)?;
    write_atomic(&digest_path, sha256_bytes(&compiled).as_bytes())?;
    Ok((component, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_of_another_world_is_refused_naming_the_function() {
        let directory = tempfile::tempdir().unwrap();
        let wit = eryx_interface::test_components::without_line("export snapshot-state:");
        let path = directory.path().join("runtime-broken.wasm");
        fs::write(&path, eryx_interface::test_components::component_for(&wit)).unwrap();
        let engine = Engine::default();
        let error = format!("{:#}", load(&engine, &path, &directory.path().join("compiled"), "", Interface::Sandbox).err().unwrap());
        assert!(error.contains("runtime-broken.wasm does not implement eryx:sandbox/sandbox"), "{error}");
        assert!(error.contains("export `snapshot-state` is missing"), "{error}");
        assert!(!directory.path().join("compiled").exists(), "nothing was compiled or cached");
    }

    #[test]
    fn a_stale_or_corrupt_entry_is_compiled_again_and_replaced() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("runtime-test.wasm");
        fs::write(&path, eryx_interface::test_components::component_for(eryx_interface::WORLD_WIT)).unwrap();
        let cache = directory.path().join("compiled");
        let engine = Engine::default();
        let load = || load(&engine, &path, &cache, "test", Interface::Sandbox).map(|(_, cached)| cached).unwrap();
        assert!(!load(), "compiled the first time");
        assert!(load(), "loaded from the cache the second time");
        let entry = fs::read_dir(&cache)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|extension| extension == "cwasm"))
            .expect("a cache entry");
        let mut bytes = fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&entry, &bytes).unwrap();
        assert!(!load(), "a changed entry is not loaded (its digest differs); it is compiled again");
        assert!(load(), "and replaced");
        let leftovers: Vec<_> = fs::read_dir(&cache).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "one entry and its digest, no temporary files: {leftovers:?}");
    }
}
