//! Where outside inputs may come from on a run (`--offline`, `--vendor DIR`): every fetch,
//! install and nested cargo command asks [`Sources`]. It lives apart from the `fetch`
//! command, so every stage can ask it without importing the command.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::inputs::bundle::Bundle;
use crate::inputs::cache::Cache;

/// Where outside inputs may come from on this run.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// No network: nothing is downloaded and no index is asked; what is missing from the
    /// cache (and the bundle) is an error that says so.
    pub offline: bool,
    /// A verified vendor bundle: cargo builds through its source replacement, and the wheel,
    /// the `.deb`s and the patched crates' originals come from it.
    pub vendor: Option<Bundle>,
}

impl Sources {
    /// Arguments for every nested cargo command (host or guest): the bundle's source
    /// replacement and `--frozen` with a bundle, `--offline` when offline.
    pub fn cargo_args(&self) -> Vec<std::ffi::OsString> {
        match &self.vendor {
            Some(bundle) => vec!["--config".into(), bundle.cargo_config().into_os_string(), "--frozen".into()],
            None if self.offline => vec!["--offline".into()],
            None => Vec::new(),
        }
    }

    /// The pinned file `sha256` (`file` by name): from the cache, else copied from the vendor
    /// bundle's `bundle_path` (checked against the pin on its way into the cache). `None` when
    /// it must be fetched; an error naming `what` when this run may not fetch.
    pub fn cached_or_bundled(&self, cache: &Cache, sha256: &str, bundle_path: &str, file: &str, what: &str) -> Result<Option<PathBuf>> {
        if let Some(path) = cache.get(sha256)? {
            return Ok(Some(path));
        }
        if let Some(bundle) = &self.vendor {
            return cache.insert_copy(&bundle.file(bundle_path)?, sha256, file).map(Some);
        }
        if let Some(reason) = self.refuse_network(what) {
            bail!(reason);
        }
        Ok(None)
    }

    /// Why a missing input cannot be fetched now, or `None` when the network may be used.
    pub fn refuse_network(&self, what: &str) -> Option<String> {
        self.offline.then(|| {
            format!(
                "{what} is not in the cache and this build is offline; pass --vendor DIR with a bundle \
                 made by `cargo xtask vendor`, or run once with the network"
            )
        })
    }
}
