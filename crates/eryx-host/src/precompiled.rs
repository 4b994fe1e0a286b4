//! Loading the build's precompiled artifact (`runtime-<variant>.cwasm`): machine code, so
//! only after its digest was checked.

use wasmtime::component::Component;
use wasmtime::Engine;

use eryx_interface::files::sha256_bytes;

use crate::manifest;

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
                write!(formatter, "its sha256 is {found}, the build wrote {expected}: it was changed since (`cargo xtask build-runtime` puts the build's back)")
            }
            NotLoaded::Unreadable(error) => write!(formatter, "{error}"),
            NotLoaded::Engine(error) => write!(formatter, "this host's engine cannot run it ({error})"),
        }
    }
}

/// Loads a precompiled artifact after checking its digest against the manifest's: loading
/// compiled code is `unsafe` (it runs as this process's machine code), so only the bytes the
/// build wrote are loaded, and wasmtime then checks that they suit `engine`. The file is read
/// once: the bytes hashed are the bytes deserialised (nothing can change in between).
pub fn load_precompiled(engine: &Engine, precompiled: &manifest::Precompiled) -> Result<Component, NotLoaded> {
    let path = &precompiled.path;
    let bytes = std::fs::read(path).map_err(|error| NotLoaded::Unreadable(format!("read {}: {error}", path.display())))?;
    let found = sha256_bytes(&bytes);
    if found != precompiled.sha256 {
        return Err(NotLoaded::Digest { found, expected: precompiled.sha256.clone() });
    }
    // SAFETY: `bytes` are the bytes the build wrote (digest checked above, on this very
    // buffer); wasmtime checks their version, target, settings and CPU features against this
    // engine and refuses a mismatch with an error.
    unsafe { Component::deserialize(engine, &bytes) }.map_err(|error| NotLoaded::Engine(format!("{error:#}")))
}
