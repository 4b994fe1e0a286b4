//! `eryx-tools bytecode` (a build step of `cargo xtask build-runtime`): the CPython command
//! form compiles every module of a stdlib tree into deterministic, unchecked-hash bytecode
//! beside it (`bytecode.py`), so neither a sandbox nor the command compiles an imported module
//! from source on every start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use eryx_host::command::{CommandRuntime, Invocation, Streams};
use eryx_host::VariantEntry;

/// The script the command runs.
const SCRIPT: &str = include_str!("bytecode.py");
/// Where the tree is mounted: where sandboxes and the command mount the stdlib, so the names
/// compiled into the bytecode are the ones they import by.
const GUEST_PATH: &str = "/python-stdlib";

/// Compiles the modules under `stdlib` (written in place) with the command component
/// `command`; answers how many were compiled.
pub fn compile_stdlib(command: &Path, stdlib: &Path, compile_cache: &Path) -> Result<usize> {
    let mut variant = VariantEntry::for_component(command);
    variant.command_path = Some(command.to_path_buf());
    // The command's own stdlib is the tree being compiled (read and written).
    variant.env = BTreeMap::from([
        ("PYTHONHOME".to_owned(), GUEST_PATH.to_owned()),
        ("PYTHONPATH".to_owned(), GUEST_PATH.to_owned()),
        // No bytecode of the modules the script itself imports is written behind its back
        // (it would be checked-timestamp bytecode), and the same hash seed every time.
        ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
        ("PYTHONHASHSEED".to_owned(), "0".to_owned()),
    ]);
    let runtime = CommandRuntime::new(variant, compile_cache)?;
    let invocation = Invocation {
        args: vec!["-S".into(), "-c".into(), SCRIPT.into(), GUEST_PATH.into()],
        env: Vec::new(),
        dirs: vec![(stdlib.to_path_buf(), GUEST_PATH.to_owned())],
        timeout: Duration::from_secs(600),
        memory_bytes: 1 << 30,
    };
    let finished = runtime.run(&invocation, Streams::Capture { stdin: Vec::new() })?;
    let stderr = String::from_utf8_lossy(&finished.stderr);
    if finished.exit_status != 0 {
        bail!("compiling the stdlib's bytecode failed (status {}):\n{}", finished.exit_status, stderr.trim_end());
    }
    eprint!("{stderr}");
    let stdout = String::from_utf8_lossy(&finished.stdout);
    stdout.trim().parse::<usize>().with_context(|| format!("the bytecode script printed {stdout:?}, not a count"))
}
