//! The tools around the eryx host library ([`eryx_host`]): what the build, the tests and the
//! benchmark run, and what an embedder does not need.
//!
//! - [`case_format`]: the sandbox case format (`tests/conformance/*.toml`);
//! - [`conformance`]: its runner and report;
//! - [`cli_cases`]: the command case format (`tests/cli/*.toml`) and its runner;
//! - [`bench`]: start-up, latency, compute and memory, side by side with native `python3`;
//! - [`preinit`]: the build step that pre-initialises a sandbox component (wasmtime-wizer);
//! - [`precompile`]: the build step that precompiles one for the portable CPU baseline;
//! - [`bytecode`]: the build step that compiles the stdlib's bytecode with the command form.
//!
//! The `eryx-tools` binary serves them to `cargo xtask` (`run`, `python`, `conformance`,
//! `test`, `bench` and the build steps).

pub mod bench;
pub mod bytecode;
pub mod case_format;
pub mod cli_cases;
pub mod conformance;
pub mod precompile;
pub mod preinit;
