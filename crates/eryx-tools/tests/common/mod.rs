//! What the tests of built components share.

use std::path::Path;

use eryx_host::Manifest;

/// The manifest `ERYX_MANIFEST` names (`cargo xtask test` sets it), or `None`, said on
/// stderr, when it is not set.
pub fn manifest() -> Option<Manifest> {
    match std::env::var_os("ERYX_MANIFEST") {
        Some(path) => Some(Manifest::load(Path::new(&path)).expect("ERYX_MANIFEST names a manifest")),
        None => {
            eprintln!("ERYX_MANIFEST is not set: run through `cargo xtask test` to test the built components");
            None
        }
    }
}
