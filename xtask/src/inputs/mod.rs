//! Everything the build takes from outside, pinned and verified: the pins
//! (`toolchains.lock`), where inputs may come from on a run ([`sources::Sources`]), the
//! content-addressed cache, downloads, the vendor bundle as read, tar archives, the fixed
//! build stamp, the CPython members, the patched crates, the toolchains and the machine's
//! packages; and the commands that resolve them (`fetch`, `lock-packages`) and report on them
//! (`doctor`).
//! Nothing here imports a later stage.

pub(crate) mod archive;
pub(crate) mod bundle;
pub(crate) mod cache;
pub(crate) mod doctor;
mod download;
pub(crate) mod fetch;
pub(crate) mod lock;
mod members;
pub(crate) mod tarballs;
pub(crate) mod npm;
pub(crate) mod packages;
pub(crate) mod patch;
pub(crate) mod sources;
pub(crate) mod stamp;
pub(crate) mod system;
pub(crate) mod toolchain;
pub(crate) mod unpacked;
