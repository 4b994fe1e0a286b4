//! The build step that precompiles a sandbox component (`eryx-tools precompile`): machine
//! code for the portable CPU baseline of [`eryx_host::engine`], and what it was compiled for.

use anyhow::{Context, Result};

use eryx_host::engine::{compatibility_hash, precompile_engine, PRECOMPILED_CPU, PRECOMPILED_TARGET};

/// Precompiles the sandbox component at `component` with [`precompile_engine`] into `out`,
/// and writes `info`: the size and sha256 of the bytes written, and the target, CPU baseline
/// and compatibility hash they were made for.
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
    // The digest of the bytes written here is the one the manifest gives the host: it is
    // recorded now and never computed again from the file on disk.
    let info = serde_json::json!({
        "size": compiled.len(),
        "sha256": eryx_interface::files::sha256_bytes(&compiled),
        "target": PRECOMPILED_TARGET,
        "cpu": PRECOMPILED_CPU,
        "compatibility_hash": compatibility_hash(&engine),
    });
    eryx_host::write_atomic(out, &compiled)?;
    eryx_host::write_atomic(info_path, format!("{info:#}\n").as_bytes())?;
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
    use wasmtime::Engine;

    use super::*;
    use eryx_host::engine::sandbox_config;
    use eryx_host::manifest::Precompiled;
    use eryx_host::{load_precompiled, NotLoaded};

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
        let mut variant = eryx_host::VariantEntry::for_component(&component);
        variant.precompiled = Some(Precompiled {
            sha256: eryx_interface::files::sha256_file(&artifact).unwrap(),
            path: artifact,
            wasmtime: String::new(),
            compatibility_hash: String::new(),
        });
        let error = eryx_host::Runtime::new(variant, eryx_host::Limits::default(), &directory.path().join("compiled"))
            .err()
            .expect("a component without clear-state cannot serve sandboxes");
        let error = format!("{error:#}");
        assert!(error.contains("runtime-old.wasm does not implement this host's eryx:sandbox/sandbox"), "{error}");
        assert!(error.contains("clear-state"), "{error}");
    }
}

