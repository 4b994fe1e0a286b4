//! Build-time pre-initialisation: run a sandbox component's start-up once (the interpreter
//! initialised, the Python half loaded, a default set of modules imported) and write a
//! component whose memory already holds that state, with `wasmtime-wizer`.
//!
//! The flow: instrument the component (wizer adds an export that reads every memory and
//! global) → instantiate it with the variant's mounts and environment → `execute` the guest's
//! `_preinit`, which imports the modules, leaves `__main__` fresh and resets the WASI state a
//! snapshot must not keep → snapshot. Everything the guest can observe during this is fixed
//! (a seeded random source, stopped clocks), so two pre-initialisations of one component give
//! the same bytes. What must differ per sandbox is renewed by the guest on its first
//! `execute` (the `random` module's state); `hash()` of strings, seeded from the fixed source,
//! is the same in every sandbox of one build.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentType, Instance, Lift, Linker, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtxBuilder};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use eryx_host::preinit_host::{self, State};
use eryx_host::VariantEntry;

/// The wall clock every pre-initialisation sees: 2025-01-01T00:00:00Z.
const FIXED_WALL_CLOCK: Duration = Duration::from_secs(1_735_689_600);
/// Memory the pre-initialisation may use (more than a sandbox's default: it is the build).
const PREINIT_MEMORY_BYTES: usize = 1 << 30;

struct StoppedWallClock;

impl HostWallClock for StoppedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        FIXED_WALL_CLOCK
    }
}

struct StoppedMonotonicClock;

impl HostMonotonicClock for StoppedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The bytes the pre-initialisation's random sources cycle through: SHA-256 in counter mode
/// over a fixed label, 4 KiB.
fn seeded_bytes() -> Vec<u8> {
    (0u32..128)
        .flat_map(|counter| Sha256::new().chain_update(b"eryx pre-initialisation").chain_update(counter.to_le_bytes()).finalize())
        .collect()
}

/// The Python code the pre-initialisation executes: the package set's directory (if any) on
/// `sys.path` after the stdlib, then the imports (`_preinit` leaves `__main__` fresh again).
pub fn preinit_code(imports: &[String], packages: Option<&str>) -> Result<String> {
    for name in imports {
        if name.is_empty() || !name.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())) {
            bail!("`{name}` is not a module name");
        }
    }
    let list = imports.iter().map(|name| format!("{name:?}")).collect::<Vec<_>>().join(", ");
    let path = match packages {
        Some(guest) if guest.starts_with('/') && !guest.contains(['"', '\\', '\n']) => format!("__import__('sys').path.append({guest:?}); "),
        Some(guest) => bail!("`{guest}` is not an absolute guest path"),
        None => String::new(),
    };
    Ok(format!("{path}__import__('_eryx_runtime')._preinit([{list}])"))
}

/// Pre-initialises the sandbox component `plain` of `variant`, importing `imports`.
pub fn preinitialize(plain: &[u8], variant: &VariantEntry, imports: &[String]) -> Result<Vec<u8>> {
    let code = preinit_code(imports, variant.packages.as_ref().map(|mount| mount.guest_path.as_str()))?;
    let wizer = Wizer::new();
    let (context, instrumented) = wizer.instrument_component(plain).map_err(anyhow::Error::from).context("instrument the component")?;
    let engine = Engine::new(&eryx_host::engine::sandbox_config(false))?;
    let component = Component::new(&engine, &instrumented).map_err(anyhow::Error::from).context("compile the instrumented component")?;

    let mut wasi = WasiCtxBuilder::new();
    preinit_host::grant_variant(&mut wasi, variant)?;
    let guest_stderr = MemoryOutputPipe::new(preinit_host::GUEST_STDERR_BYTES);
    wasi.stderr(guest_stderr.clone())
        .secure_random(Deterministic::new(seeded_bytes()))
        .insecure_random(Deterministic::new(seeded_bytes()))
        .insecure_random_seed(0)
        .wall_clock(StoppedWallClock)
        .monotonic_clock(StoppedMonotonicClock)
        .allow_blocking_current_thread(true);
    let mut store = preinit_host::store(&engine, wasi.build(), PREINIT_MEMORY_BYTES);
    let mut linker = preinit_host::linker(&engine)?;
    settle_file_metadata(&mut linker)?;
    let tasks = tokio::runtime::Builder::new_current_thread().enable_time().build().context("start a task runtime")?;
    let instance = tasks
        .block_on(linker.instantiate_async(&mut store, &component))
        .map_err(anyhow::Error::from)
        .context("instantiate the instrumented component")?;
    let explain = |error: wasmtime::Error| {
        let said = String::from_utf8_lossy(&guest_stderr.contents()).trim().to_owned();
        anyhow::anyhow!("the pre-initialisation trapped: {said}\n{error:?}")
    };
    if let Err(traceback) = tasks.block_on(preinit_host::execute(&mut store, &instance, code)).map_err(explain)? {
        bail!("the pre-initialisation failed:\n{traceback}");
    }
    let mut access = Access { store: &mut store, instance };
    tasks.block_on(wizer.snapshot_component(&context, &mut access)).map_err(anyhow::Error::from).context("snapshot the component")
}

/// Replaces the filesystem functions whose answers depend on the build machine rather than
/// on the files: access, change and modification times, inode numbers. The guest keeps what
/// they answer in its memory (in live objects, or in freed blocks), so the snapshot would
/// differ between two builds of the same inputs. During pre-initialisation every timestamp
/// reads as [`FIXED_WALL_CLOCK`] and a file's identity is derived from its path.
fn settle_file_metadata(linker: &mut Linker<State>) -> Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::WasiFilesystemView;
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        Datetime, Descriptor, DescriptorStat, ErrorCode, HostDescriptor, MetadataHashValue, PathFlags,
    };
    use wasmtime_wasi::p2::FsResult;

    fn settle<T>(result: FsResult<T>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
        match result {
            Ok(value) => Ok((Ok(value),)),
            Err(error) => {
                let code: ErrorCode = error.downcast()?;
                Ok((Err(code),))
            }
        }
    }
    fn fixed(stat: DescriptorStat) -> DescriptorStat {
        let time = Some(Datetime { seconds: FIXED_WALL_CLOCK.as_secs(), nanoseconds: 0 });
        DescriptorStat {
            data_access_timestamp: time,
            data_modification_timestamp: time,
            status_change_timestamp: time,
            ..stat
        }
    }
    fn identity(path: &str) -> MetadataHashValue {
        let digest = Sha256::digest(path.as_bytes());
        let half = |range: std::ops::Range<usize>| u64::from_le_bytes(digest[range].try_into().expect("8 bytes"));
        MetadataHashValue { lower: half(0..8), upper: half(8..16) }
    }

    linker.allow_shadowing(true);
    let mut types = linker.instance("wasi:filesystem/types@0.2.12")?;
    types.func_wrap_async("[method]descriptor.stat", |mut store, (fd,): (Resource<Descriptor>,)| {
        Box::new(async move { settle(HostDescriptor::stat(&mut store.data_mut().filesystem(), fd).await.map(fixed)) })
    })?;
    types.func_wrap_async(
        "[method]descriptor.stat-at",
        |mut store, (fd, flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                settle(HostDescriptor::stat_at(&mut store.data_mut().filesystem(), fd, flags, path).await.map(fixed))
            })
        },
    )?;
    types.func_wrap_async("[method]descriptor.metadata-hash", |mut store, (fd,): (Resource<Descriptor>,)| {
        Box::new(async move {
            settle(HostDescriptor::metadata_hash(&mut store.data_mut().filesystem(), fd).await.map(|_| identity("")))
        })
    })?;
    types.func_wrap_async(
        "[method]descriptor.metadata-hash-at",
        |mut store, (fd, flags, path): (Resource<Descriptor>, PathFlags, String)| {
            let identity = identity(&path);
            Box::new(async move {
                settle(HostDescriptor::metadata_hash_at(&mut store.data_mut().filesystem(), fd, flags, path).await.map(|_| identity))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What wizer reads the instance's state through: the exports its instrumentation added.
struct Access<'a> {
    store: &'a mut Store<State>,
    instance: Instance,
}

impl Access<'_> {
    async fn call<R: ComponentType + Lift + Send + Sync + 'static>(&mut self, instance: &str, func: &str) -> R {
        let (_, exported) = self.instance.get_export(&mut *self.store, None, instance).unwrap_or_else(|| panic!("wizer's instance `{instance}` is missing"));
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&exported), func)
            .unwrap_or_else(|| panic!("wizer's function `{instance}#{func}` is missing"));
        let typed = self.instance.get_typed_func::<(), (R,)>(&mut *self.store, index).expect("wizer's accessor has the expected type");
        typed.call_async(&mut *self.store, ()).await.expect("wizer's accessor does not trap").0
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(&mut self, instance: &str, func: &str, contents: impl FnOnce(&[u8]) + Send) {
        let list: WasmList<u8> = self.call(instance, func).await;
        contents(list.as_le_slice(&*self.store));
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).await.to_bits()
    }
}
