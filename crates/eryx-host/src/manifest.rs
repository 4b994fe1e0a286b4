//! Reading `target/eryx/manifest.json`: where each variant's component is and what it
//! needs mounted. The host learns nothing else about a variant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct StdlibMount {
    pub host_directory: PathBuf,
    pub guest_path: String,
}

/// A variant's precompiled artifact (`runtime-<variant>.cwasm`).
#[derive(Debug, Clone)]
pub struct Precompiled {
    pub path: PathBuf,
    /// Checked before the artifact is loaded: loading compiled code is `unsafe`.
    pub sha256: String,
    pub wasmtime: String,
    pub compatibility_hash: String,
}

#[derive(Debug, Clone)]
pub struct VariantEntry {
    pub name: String,
    /// The default sandbox component (pre-initialised).
    pub component_path: PathBuf,
    pub component_sha256: String,
    /// The linear memory the default component starts with, when the build measured it.
    pub component_initial_memory: Option<u64>,
    /// The component as linked, before pre-initialisation.
    pub plain_path: Option<PathBuf>,
    /// The linear memory the plain component starts with, when the build measured it.
    pub plain_initial_memory: Option<u64>,
    pub precompiled: Option<Precompiled>,
    /// What the pre-initialisation imported.
    pub preinit_imports: Vec<String>,
    /// The command form (`python-<variant>.wasm`), when the build made one.
    pub command_path: Option<PathBuf>,
    /// The command as a preview1 core module, for variants that have one.
    pub core_module_path: Option<PathBuf>,
    pub stdlib: Option<StdlibMount>,
    /// A package set's site-packages tree (`<variant>+<set>`), mounted read-only like the
    /// stdlib; the snapshot has it on `sys.path`.
    pub packages: Option<StdlibMount>,
    pub env: BTreeMap<String, String>,
}

impl VariantEntry {
    /// An entry for a component alone: no mounts, no environment, no other forms.
    pub fn for_component(path: &Path) -> VariantEntry {
        VariantEntry {
            name: path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default(),
            component_path: path.to_path_buf(),
            component_sha256: String::new(),
            component_initial_memory: None,
            plain_path: None,
            plain_initial_memory: None,
            precompiled: None,
            preinit_imports: Vec::new(),
            command_path: None,
            core_module_path: None,
            stdlib: None,
            packages: None,
            env: BTreeMap::new(),
        }
    }
}

pub struct Manifest {
    pub path: PathBuf,
    pub variants: BTreeMap<String, VariantEntry>,
}

#[derive(Deserialize)]
struct RawManifest {
    variants: BTreeMap<String, RawVariant>,
}

#[derive(Deserialize)]
struct RawArtifact {
    path: String,
    sha256: String,
    #[serde(default)]
    initial_memory_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct RawPrecompiled {
    path: String,
    sha256: String,
    wasmtime: String,
    compatibility_hash: String,
}

#[derive(Deserialize)]
struct RawStdlib {
    directory: String,
    guest_path: String,
}

#[derive(Deserialize)]
struct RawVariant {
    component: RawArtifact,
    command: Option<RawArtifact>,
    core_module: Option<RawArtifact>,
    plain: Option<RawArtifact>,
    precompiled: Option<RawPrecompiled>,
    #[serde(default)]
    preinit_imports: Vec<String>,
    stdlib: Option<RawStdlib>,
    packages: Option<RawStdlib>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read {} (run `cargo xtask build-runtime`)", path.display()))?;
        let raw: RawManifest = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let variants = raw
            .variants
            .into_iter()
            .map(|(name, variant)| {
                let entry = VariantEntry {
                    name: name.clone(),
                    component_path: base.join(&variant.component.path),
                    component_sha256: variant.component.sha256,
                    component_initial_memory: variant.component.initial_memory_bytes,
                    plain_initial_memory: variant.plain.as_ref().and_then(|plain| plain.initial_memory_bytes),
                    plain_path: variant.plain.map(|plain| base.join(plain.path)),
                    precompiled: variant.precompiled.map(|precompiled| Precompiled {
                        path: base.join(precompiled.path),
                        sha256: precompiled.sha256,
                        wasmtime: precompiled.wasmtime,
                        compatibility_hash: precompiled.compatibility_hash,
                    }),
                    preinit_imports: variant.preinit_imports,
                    command_path: variant.command.map(|command| base.join(command.path)),
                    core_module_path: variant.core_module.map(|module| base.join(module.path)),
                    stdlib: variant.stdlib.map(|stdlib| StdlibMount {
                        host_directory: base.join(stdlib.directory),
                        guest_path: stdlib.guest_path,
                    }),
                    packages: variant.packages.map(|packages| StdlibMount {
                        host_directory: base.join(packages.directory),
                        guest_path: packages.guest_path,
                    }),
                    env: variant.env,
                };
                (name, entry)
            })
            .collect();
        Ok(Manifest { path: path.to_path_buf(), variants })
    }

    pub fn variant(&self, name: &str) -> Result<&VariantEntry> {
        match self.variants.get(name) {
            Some(entry) => Ok(entry),
            None => bail!(
                "{} has no variant `{name}` (built: {}); run `cargo xtask build-runtime --variant {name}`",
                self.path.display(),
                self.variants.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Where compiled components are cached: beside the manifest.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join("compiled")
    }
}
