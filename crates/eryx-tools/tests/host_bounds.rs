//! The host's memory while a guest floods every channel it reaches. Its own test binary
//! (so its own process): the resident-memory measurement must not see other tests'
//! sandboxes. Needs `ERYX_MANIFEST` (set by `cargo xtask test`).

mod common;

use std::sync::Arc;

use common::manifest;
use eryx_host::{Callbacks, Limits, Runtime};

/// The resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    eryx_tools::bench::memory_kib().expect("the resident memory of this process").0 * 1024
}

/// Guest code that floods every channel it can reach (stdout, stderr, its own stderr
/// descriptor, trace events, callbacks) leaves the host within the guest's memory limit plus
/// a fixed allowance.
#[test]
fn a_guest_flooding_every_channel_keeps_the_host_bounded() {
    let Some(manifest) = manifest() else { return };
    let variant = manifest.variants.get("cpython").expect("the cpython variant is built");
    let limits = Limits { memory_bytes: 128 << 20, ..Limits::default() };
    let runtime = Runtime::new(variant.clone(), limits, &manifest.compile_cache_dir()).unwrap();
    let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
    sandbox.set_trace(true);
    let before = resident_bytes();
    let flood = "\
import os, sys, _eryx_runtime
chunk = 'x' * 1_000_000
for _ in range(200):
    print(chunk)
    sys.stderr.write(chunk)
    os.write(2, chunk.encode())
event = 'e' * 10_000
for _ in range(20_000):
    _eryx_runtime._host_report_trace(1, event, event)
big = 'b' * 100_000
for _ in range(990):
    echo(text=big)
";
    let output = sandbox.execute(flood).unwrap();
    assert!(output.truncated);
    assert!(output.stdout.len() < 2 << 20 && output.stderr.len() < 2 << 20);
    let grown = resident_bytes().saturating_sub(before);
    let bound = (128u64 << 20) + (64 << 20);
    assert!(grown < bound, "the host grew by {} MiB, more than the guest's 128 MiB and a 64 MiB allowance", grown >> 20);
}

