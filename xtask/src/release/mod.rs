//! What leaves the machine, and its checks: the vendor bundle of every input (`vendor`),
//! the release bundle (`dist`) with its SBOM (`sbom`), and the second, isolated build that
//! must give the same bytes (`verify_reproducible`).

pub(crate) mod dist;
mod sbom;
pub(crate) mod vendor;
pub(crate) mod verify_reproducible;
