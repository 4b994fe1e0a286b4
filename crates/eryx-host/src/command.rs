//! Running a variant's command form (`python-<variant>.wasm`, a `wasi:cli/command`
//! component) the way one runs `python3`: arguments, environment, stdin, preopened
//! directories, and the program's exit status.
//!
//! The program sees only what it is given: the directories passed (read-write), the
//! environment passed, and, for a variant that mounts the CPython stdlib, that stdlib
//! read-only with the variant's own environment (`PYTHONHOME`, ...). Limits: a wall-clock
//! timeout and a memory limit, as for sandboxes. The program runs as an async call, so the
//! timeout holds while it computes (the epoch deadline) and while it waits in WASI (a sleep,
//! a blocked read of stdin: a timer around the call).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::VariantEntry;

/// How much output a captured run keeps per stream.
const CAPTURE_BYTES: usize = 16 << 20;

/// Where the program's standard streams go.
pub enum Streams {
    /// The host process's own stdin, stdout and stderr.
    Inherit,
    /// `stdin` as the program's input; its output is captured and returned.
    Capture { stdin: Vec<u8> },
}

/// One run of the command.
pub struct Invocation {
    /// `argv[1..]`; `argv[0]` is `python`.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host directory → path inside the program, read-write.
    pub dirs: Vec<(PathBuf, String)>,
    pub timeout: Duration,
    pub memory_bytes: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub exit_status: i32,
    /// Empty unless the streams were captured.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: crate::limits::MemoryLimiter,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The program's environment: the variant's own, under what the user gave (the user's value
/// wins), but for `PYTHONPATH`, where the user's directories come first and the variant's
/// (its stdlib) after them, so the stdlib stays importable.
pub fn environment<'a>(variant: &'a std::collections::BTreeMap<String, String>, user: &'a [(String, String)]) -> Vec<(&'a str, String)> {
    let mut merged: Vec<(&str, String)> = variant.iter().map(|(key, value)| (key.as_str(), value.clone())).collect();
    for (key, value) in user {
        match merged.iter_mut().find(|(known, _)| *known == key.as_str()) {
            Some((_, known)) if key == "PYTHONPATH" && !value.is_empty() => *known = format!("{value}:{known}"),
            Some((_, known)) => *known = value.clone(),
            None => merged.push((key.as_str(), value.clone())),
        }
    }
    merged
}

/// A compiled command component of one variant.
pub struct CommandRuntime {
    engine: Engine,
    component: Component,
    linker: Linker<State>,
    variant: VariantEntry,
}

impl CommandRuntime {
    pub fn new(variant: VariantEntry, compile_cache_dir: &Path) -> Result<CommandRuntime> {
        let path = variant.command_path.clone().with_context(|| {
            format!("the manifest has no command form of `{}`; run `cargo xtask build-runtime`", variant.name)
        })?;
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // The stack a sandbox has (`engine::MAX_WASM_STACK`, on a fiber with room for the
        // host's frames): deep nesting ends in the interpreter's own `RecursionError`, as in a
        // sandbox, not in wasmtime's "call stack exhausted" at its default 512 KiB.
        config.async_stack_size(crate::engine::GUEST_FIBER_STACK);
        config.max_wasm_stack(crate::engine::MAX_WASM_STACK);
        let engine = Engine::new(&config)?;
        let (component, _) = crate::compile_cache::load(
            &engine,
            &path,
            compile_cache_dir,
            &format!("command;epoch=1;stack={}", crate::engine::MAX_WASM_STACK),
            crate::compile_cache::Interface::Command,
        )?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::limits::start_epoch_ticker(&engine);
        Ok(CommandRuntime { engine, component, linker, variant })
    }

    /// Runs the program once, in a fresh instance.
    pub fn run(&self, invocation: &Invocation, streams: Streams) -> Result<Finished> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.arg("python");
        wasi.args(&invocation.args);
        crate::state::grant_variant_mounts(&mut wasi, &self.variant)?;
        for (key, value) in environment(&self.variant.env, &invocation.env) {
            wasi.env(key, value);
        }
        for (host, guest) in &invocation.dirs {
            if !host.is_dir() {
                bail!("--dir {}: not a directory", host.display());
            }
            wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("mount {} at {guest}", host.display()))?;
        }
        // File reads (the stdlib) are quick: done inline rather than on a blocking thread.
        wasi.allow_blocking_current_thread(true);
        let captured = match streams {
            Streams::Inherit => {
                wasi.inherit_stdio();
                None
            }
            Streams::Capture { stdin } => {
                let stdout = MemoryOutputPipe::new(CAPTURE_BYTES);
                let stderr = MemoryOutputPipe::new(CAPTURE_BYTES);
                wasi.stdin(MemoryInputPipe::new(stdin));
                wasi.stdout(stdout.clone());
                wasi.stderr(stderr.clone());
                Some((stdout, stderr))
            }
        };
        let state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: crate::limits::MemoryLimiter::new(invocation.memory_bytes),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline((invocation.timeout.as_millis() / crate::limits::TICK.as_millis()).max(1) as u64);
        let tasks = tokio::runtime::Builder::new_current_thread().enable_time().build().context("start a task runtime")?;
        let timed_out = || anyhow::anyhow!("the program ran longer than the timeout of {} ms", invocation.timeout.as_millis());
        // The timer is made inside the task runtime (it needs its clock).
        let outcome = tasks.block_on(async {
            tokio::time::timeout(invocation.timeout, async {
                let command = Command::instantiate_async(&mut store, &self.component, &self.linker)
                    .await
                    .map_err(anyhow::Error::from)
                    .context("instantiate the command component")?;
                Ok::<_, anyhow::Error>(command.wasi_cli_run().call_run(&mut store).await)
            })
            .await
        });
        // Waiting in WASI past the deadline: the call is dropped where it waits.
        let outcome = outcome.map_err(|_| timed_out())??;
        let exit_status = match outcome {
            Ok(Ok(())) => 0,
            Ok(Err(())) => 1,
            Err(error) => match error.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => match error.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => return Err(timed_out()),
                    _ if store.data().limits.refused => {
                        bail!("the program hit the memory limit of {} MiB", invocation.memory_bytes >> 20)
                    }
                    _ => return Err(anyhow::Error::from(error).context("the program trapped")),
                },
            },
        };
        let (stdout, stderr) = match captured {
            Some((stdout, stderr)) => (stdout.contents().to_vec(), stderr.contents().to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Finished { exit_status, stdout, stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_environment_wins_and_pythonpath_keeps_the_stdlib() {
        let variant: std::collections::BTreeMap<String, String> =
            [("PYTHONHOME", "/python-stdlib"), ("PYTHONPATH", "/python-stdlib")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        let user = [("PYTHONPATH", "/work/lib"), ("PYTHONHOME", "/mine"), ("GREETING", "hi")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        let merged = environment(&variant, &user);
        assert_eq!(
            merged,
            [("PYTHONHOME", "/mine".to_owned()), ("PYTHONPATH", "/work/lib:/python-stdlib".to_owned()), ("GREETING", "hi".to_owned())]
        );
        assert_eq!(environment(&variant, &[]).len(), 2, "nothing given, nothing changed");
    }
}
