//! The host's memory while a guest floods every channel it reaches. Its own test binary
//! (so its own process), and one test function (so nothing runs beside it): the
//! resident-memory measurement must not see other tests' sandboxes. Needs `ERYX_MANIFEST`
//! (set by `cargo xtask test`).

mod common;

use std::sync::Arc;

use common::manifest;
use eryx_host::{Callbacks, Limits, Runtime};

/// The resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    eryx_tools::bench::memory_kib().expect("the resident memory of this process").0 * 1024
}

/// Guest code that floods every channel it can reach (stdout, stderr, their descriptors with
/// writes of tens of megabytes, trace events, host timers by the hundred thousand, callbacks: one with arguments far over the limit, many pending at
/// once with large arguments, all recorded into a journal) leaves the host within the guest's
/// memory limit plus a fixed allowance, on every variant.
#[test]
fn a_guest_flooding_every_channel_keeps_the_host_bounded() {
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let limits = Limits { memory_bytes: 64 << 20, ..Limits::default() };
        let runtime = Runtime::new(variant.clone(), limits, &manifest.compile_cache_dir()).unwrap();
        let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
        sandbox.set_trace(true);
        sandbox.record_callbacks();
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
for _ in range(500):
    echo(text=big)
del chunk
wide = b'w' * 10_000_000
for _ in range(3):
    os.write(1, wide)
del wide
for _ in range(100_000):
    _eryx_runtime._host_timer(10**15)
";
        let calls = "\
import asyncio
# Arguments far over the per-call limit: refused before the host parses them.
try:
    echo(value=list(range(100_000)))
    refused = 'no'
except Exception as error:
    refused = str(error)
# Many calls pending at once with large arguments: the pending total is bounded.
pad = 'p' * 200_000
async def many():
    return await asyncio.gather(*(sleep(ms=50, pad=pad) for _ in range(60)), return_exceptions=True)
results = asyncio.run(many())
print('refused:', refused)
print('pending refused:', sum(isinstance(result, Exception) for result in results), 'of', len(results))
";
        let output = sandbox.execute(flood).unwrap();
        assert!(output.truncated, "{}", variant.name);
        assert!(output.stdout.len() < 2 << 20 && output.stderr.len() < 2 << 20, "{}", variant.name);
        let output = sandbox.execute(calls).unwrap();
        let tail: Vec<&str> = output.stdout.lines().rev().take(2).collect();
        assert!(tail[1].contains("the callback argument limit of 262144 bytes per call was exceeded"), "{}: {tail:?}", variant.name);
        let pending_refused: usize = tail[0].split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(pending_refused > 0 && pending_refused < 60, "{}: {tail:?}", variant.name);
        let grown = resident_bytes().saturating_sub(before);
        let bound = (64u64 << 20) + (64 << 20);
        eprintln!("{}: the host grew by {} MiB under the flood", variant.name, grown >> 20);
        assert!(grown < bound, "{}: the host grew by {} MiB, more than the guest's 64 MiB and a 64 MiB allowance", variant.name, grown >> 20);
    }
}
