//! `cargo xtask dist`: the release bundle, a directory anyone can verify.
//!
//! ```text
//! target/dist/runtime-cpython.wasm, runtime-rustpython.wasm   the sandbox components
//! target/dist/python-cpython.wasm, python-rustpython.wasm     the WASI commands
//! target/dist/python-rustpython.core.wasm                      the same as a preview1 module
//! target/dist/python-stdlib.tar.zst                            the CPython stdlib
//! target/dist/python-cpython.core.wasm                         CPython built from pinned
//!                                  source, a preview1 module (python-stdlib.tar.zst unpacked
//!                                  at /lib/python3.14 is its stdlib); the headers native
//!                                  extensions compile against: python-cpython-source-include.tar.zst
//! target/dist/manifest.json        every artifact and every input's digest
//! target/dist/sbom.cdx.json        CycloneDX SBOM (reproducible)
//! target/dist/SHA256SUMS           `sha256sum -c SHA256SUMS` checks everything here
//! target/dist/eryx-runtimes-<version>-<target>.tar.zst   all of the above, packed
//!                                  deterministically (with its own SHA256SUMS inside)
//! ```
//!
//! Each sandbox component is checked against `wit/runtime.wit`, each command for its
//! `wasi:cli/run` export and each core module for being a preview1 command, before it is
//! shipped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::build::build_runtime;
use crate::build::cpython_source;
use crate::build::packages;
use crate::build::variant;
use crate::inputs::archive;
use crate::inputs::bundle;
use crate::inputs::cache::{self, sha256_file, write_atomic, Cache};
use crate::inputs::sources::Sources;
use crate::inputs::stamp;
use crate::release::sbom;
use crate::workspace::Workspace;

pub const PRODUCT: &str = "eryx-runtimes";
pub const SUMS: &str = "SHA256SUMS";

#[derive(clap::Args, Default)]
pub struct Args {
    /// Where to assemble the release bundle [default: target/dist]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A package lock (repeatable): also ship `runtime-<variant>+<set>.wasm` for every variant
    /// and the set's tree (`packages-<set>.tar.zst`), with its wheels in the SBOM
    #[arg(long = "packages", value_name = "FILE")]
    pub packages: Vec<PathBuf>,
}

/// Builds what is stale and assembles the release bundle; returns its directory.
pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<PathBuf> {
    let build = build_runtime::Args { verify_outputs: true, packages: args.packages.clone(), ..Default::default() };
    let build_runtime::Built { manifest: build_manifest_path, fetched, sets } = build_runtime::build(workspace, cache, sources, &build)?;
    let started = Instant::now();
    let lock = &fetched.lock;
    let out = std::path::absolute(args.out.clone().unwrap_or_else(|| workspace.path("target/dist")))?;
    let version = env!("CARGO_PKG_VERSION");
    let target = &lock.rust_guest.target;
    let release_name = format!("{PRODUCT}-{version}-{target}");
    let artifacts = workspace.artifacts_dir();

    cache::replace_output_dir(&out, "dist", |staging| {
        let contents = staging.join(&release_name);
        fs::create_dir_all(&contents)?;
        // The components, each checked against the world before it ships.
        let mut shipped = Vec::new();
        for variant in variant::ALL {
            for (component, is_command) in [(variant.component, false), (variant.command.component, true)] {
                let source = artifacts.join(component);
                let bytes = fs::read(&source).with_context(|| format!("read {}", source.display()))?;
                if is_command {
                    eryx_interface::check_command(&bytes, component)?;
                } else {
                    eryx_interface::check_component(&bytes, component)?;
                }
                fs::write(contents.join(component), &bytes)?;
                shipped.push(component.to_owned());
            }
            if let Some(module) = variant.core_module {
                let source = artifacts.join(module);
                let bytes = fs::read(&source).with_context(|| format!("read {}", source.display()))?;
                eryx_interface::check_core_command(&bytes, module)?;
                fs::write(contents.join(module), &bytes)?;
                shipped.push(module.to_owned());
            }
        }
        // Each package set: its components, checked like the others, and its tree packed
        // deterministically (the directory a host mounts read-only at /site-packages).
        for set in &sets {
            for variant in variant::ALL {
                let component = set.component(variant.component);
                let bytes = fs::read(artifacts.join(&component)).with_context(|| format!("read {component}"))?;
                eryx_interface::check_component(&bytes, &component)?;
                fs::write(contents.join(&component), &bytes)?;
                shipped.push(component);
            }
            let packed = format!("packages-{}.tar.zst", set.name);
            archive::pack_deterministic(&packages::tree_dir(&artifacts, &set.name), "site-packages", &contents.join(&packed))?;
            shipped.push(packed);
        }
        let stdlib = "python-stdlib.tar.zst";
        fs::copy(artifacts.join(stdlib), contents.join(stdlib)).context("copy the stdlib archive")?;
        shipped.push(stdlib.to_owned());
        // CPython built from pinned source: its core module (it preopens the stdlib above at
        // `/lib/python3.14`) and its headers.
        let module = cpython_source::CORE_MODULE;
        let bytes = fs::read(artifacts.join(module)).with_context(|| format!("read {module}"))?;
        eryx_interface::check_core_command(&bytes, module)?;
        fs::write(contents.join(module), &bytes)?;
        shipped.push(module.to_owned());
        let packed = "python-cpython-source-include.tar.zst";
        archive::pack_deterministic(&artifacts.join(cpython_source::INCLUDE_DIR), "include", &contents.join(packed))?;
        shipped.push(packed.to_owned());

        let build_manifest: serde_json::Value = serde_json::from_slice(&fs::read(&build_manifest_path)?)
            .with_context(|| format!("parse {}", build_manifest_path.display()))?;
        let mut files = BTreeMap::new();
        for name in &shipped {
            let path = contents.join(name);
            files.insert(name.clone(), json!({ "sha256": sha256_file(&path)?, "size": fs::metadata(&path)?.len() }));
        }
        let toolchain = [
            ("rustc", fetched.rust.version.clone()),
            ("clang", fetched.wasi.version()),
            ("wasi toolchain provider", fetched.wasi.provider.to_owned()),
        ];
        let manifest = json!({
            "schema": 1,
            "name": PRODUCT,
            "version": version,
            "target": target,
            "world": eryx_interface::world_name(),
            "source_date_epoch": stamp::SOURCE_DATE_EPOCH,
            "files": files,
            "inputs": {
                "lock_files": bundle::made_for(workspace)?,
                "toolchain": toolchain.iter().map(|(name, version)| (name.to_string(), version.clone())).collect::<BTreeMap<_, _>>(),
                "cpython_wheel": { "file": lock.wheel_for_host()?.filename, "sha256": lock.wheel_for_host()?.sha256 },
                "cpython_members": lock.cpython.members.iter().map(|member| (member.name.clone(), member.sha256.clone())).collect::<BTreeMap<_, _>>(),
                "source_tarballs": build_runtime::source_tarball_inputs(lock),
                "debian_debs": lock.debian_debs.iter().map(|deb| (deb.file.clone(), deb.sha256.clone())).collect::<BTreeMap<_, _>>(),
                "unpacked_debs": lock.unpacked_debs.iter().map(|deb| (deb.file.clone(), json!({ "suite": deb.suite, "sha256": deb.sha256 }))).collect::<BTreeMap<_, _>>(),
                "patched_crates": lock.patched_crates.iter().map(|patched| (format!("{}-{}", patched.name, patched.version), json!({
                    "crate_sha256": patched.crate_sha256,
                    "files": patched.files.iter().map(|file| (file.path.clone(), json!({"original_sha256": file.original_sha256, "patched_sha256": file.patched_sha256}))).collect::<BTreeMap<_, _>>(),
                }))).collect::<BTreeMap<_, _>>(),
                "wasi_sdk": lock.wasi_sdk.platforms.iter().map(|(platform, pin)| (platform.clone(), pin.sha256.clone())).collect::<BTreeMap<_, _>>(),
            },
            "build": build_manifest,
        });
        write_json(&contents.join("manifest.json"), &manifest)?;

        let guest_lock = fs::read_to_string(workspace.path("crates/Cargo.lock"))?;
        let sbom = sbom::build(PRODUCT, version, lock, &guest_lock, &toolchain, &sets)?;
        write_json(&contents.join("sbom.cdx.json"), &sbom)?;

        write_sums(&contents)?;
        let packed = staging.join(format!("{release_name}.tar.zst"));
        archive::pack_deterministic(&contents, &release_name, &packed)?;
        // The directory's own files, beside the packed copy, and one SHA256SUMS for them all.
        for entry in fs::read_dir(&contents)? {
            let entry = entry?;
            fs::rename(entry.path(), staging.join(entry.file_name()))?;
        }
        fs::remove_dir(&contents)?;
        write_sums(staging)?;
        Ok(())
    })?;
    eprintln!("release bundle in {} ({:.1}s):", out.display(), started.elapsed().as_secs_f64());
    for line in fs::read_to_string(out.join(SUMS))?.lines() {
        let (digest, name) = line.split_once("  ").unwrap_or((line, ""));
        let size = fs::metadata(out.join(name)).map(|metadata| metadata.len()).unwrap_or(0);
        eprintln!("  {name:<44} {:>8.1} MiB  {}", size as f64 / 1048576.0, &digest[..16]);
    }
    eprintln!("check it with: cd {} && sha256sum -c {SUMS}", out.display());
    Ok(out)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// `SHA256SUMS` for every file of `directory` (sorted; the format `sha256sum -c` reads).
pub fn write_sums(directory: &Path) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && name != SUMS && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let mut text = String::new();
    for name in names {
        text.push_str(&format!("{}  {name}\n", sha256_file(&directory.join(&name))?));
    }
    write_atomic(&directory.join(SUMS), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sum_verifies_the_sums_and_notices_a_change() {
        let directory = tempfile::tempdir().unwrap();
        fs::write(directory.path().join("runtime-cpython.wasm"), b"\0asm component").unwrap();
        fs::write(directory.path().join("manifest.json"), b"{}\n").unwrap();
        write_sums(directory.path()).unwrap();
        let check = || {
            std::process::Command::new("sha256sum")
                .args(["-c", SUMS])
                .current_dir(directory.path())
                .output()
                .expect("sha256sum runs")
        };
        let output = check();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
        assert!(String::from_utf8_lossy(&output.stdout).contains("runtime-cpython.wasm: OK"));
        fs::write(directory.path().join("runtime-cpython.wasm"), b"\0asm c0mponent").unwrap();
        let output = check();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("runtime-cpython.wasm: FAILED"));
    }
}
