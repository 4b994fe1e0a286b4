//! The commands that build what is stale and then run the guests through the host binary
//! (the handover itself is `host.rs`): `run`, `python` and `conformance` (`conformance`),
//! `test` and `bench`.

pub(crate) mod bench;
pub(crate) mod conformance;
pub(crate) mod test;
