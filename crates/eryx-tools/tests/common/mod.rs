//! What the tests of built components share.

use std::path::Path;

use eryx_host::Manifest;

/// The manifest `ERYX_MANIFEST` names (`cargo xtask test` sets it), or `None`, said on
/// stderr, when it is not set.
pub fn manifest() -> Option<Manifest> {
    match std::env::var_os("ERYX_MANIFEST") {
        Some(path) => {
            let mut manifest = Manifest::load(Path::new(&path)).expect("ERYX_MANIFEST names a manifest");
            // The variants themselves: one with a package set (`<variant>+<set>`) is the same
            // guest with another snapshot, tested by its set's cases.
            manifest.variants.retain(|_, variant| variant.packages.is_none());
            Some(manifest)
        }
        None => {
            eprintln!("ERYX_MANIFEST is not set: run through `cargo xtask test` to test the built components");
            None
        }
    }
}
