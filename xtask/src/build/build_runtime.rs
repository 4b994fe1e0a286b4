//! `cargo xtask build-runtime`: pinned inputs → `target/eryx/runtime-<variant>.wasm` (the
//! sandbox), `target/eryx/python-<variant>.wasm` (the same interpreter as a WASI command),
//! `target/eryx/python-rustpython.core.wasm` (that command as a preview1 core module) and
//! `target/eryx/manifest.json`. The steps, each skipped when its inputs are unchanged:
//!
//! 1. the guest staticlib (`-Z build-std`, PIC, its own target directory, the pinned
//!    build stamp of `inputs/stamp.rs`);
//! 2. the variant's C stubs, with the chosen WASI clang;
//! 3. the wit-dylib bindings library for `wit/runtime.wit`;
//! 4. the runtime shared library (whole staticlib + stubs), exporting only what the
//!    bindings and the pinned libraries import from it, names stripped;
//! 5. (before any variant) for CPython, the interpreter from pinned source
//!    (`cpython_source.rs`): `libpython3.14.so`, its stdlib and the core module;
//! 6. the component, linked by wit-component's `Linker` from the pinned C runtime, the
//!    interpreter and the runtime library;
//! 7. the command form: an entry library defining `_start` (the interpreter's own main) and
//!    a `wasi:cli/command` component from the same libraries with the command adapter; for
//!    CPython, the stdlib with the bytecode that command compiles, packed;
//! 8. the core module (variants that have one): the staticlib and stubs statically linked
//!    with the pinned wasi-libc (`[[unpacked-debs]]`);
//! 9. the manifest: every artifact's path, size and sha256, and the pins that made it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use xshell::{cmd, Shell};

use crate::build::cpython_source;
use crate::build::packages::{self, PackageSet};
use crate::build::steps::{self, Fingerprint, Runner};
use crate::build::variant::{self, Variant};
use crate::host::{self, HOST_PACKAGE};
use crate::inputs::archive;
use crate::inputs::cache::{self, sha256_file, write_atomic, Cache};
use crate::inputs::fetch::{self, Fetched};
use crate::inputs::sources::Sources;
use crate::inputs::stamp::{self, Stamp};
use crate::workspace::Workspace;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Build only this variant (default: all of them); `<variant>+<set>` builds the variant
    /// with a package set (the set's lock from --packages, or the one the manifest records)
    #[arg(long, value_name = "NAME")]
    pub variant: Option<String>,
    /// A lock file written by `lock-packages` (repeatable): also build, for every variant,
    /// `runtime-<variant>+<set>.wasm` (`<set>` is FILE's stem) with its packages mounted
    /// read-only and their modules imported before the snapshot; a `<set>.imports` beside FILE
    /// adds (`module`) or removes (`-module`) imports
    #[arg(long = "packages", value_name = "FILE")]
    pub packages: Vec<PathBuf>,
    /// Whether a step runs again when its outputs' bytes changed since it wrote them (every
    /// output is hashed): set for `cargo xtask build-runtime` and `dist`; the quick builds
    /// before `run`, `conformance` and the like only check that outputs exist (the host checks
    /// a precompiled artifact's digest itself before loading it).
    #[arg(skip = true)]
    pub verify_outputs: bool,
}

const ADAPTER_MEMBER: &str = "wasi_snapshot_preview1.reactor.wasm";
const STDLIB_DIRECTORY: &str = "python-stdlib";
const STDLIB_ARCHIVE: &str = "python-stdlib.tar.zst";
const STDLIB_GUEST_PATH: &str = "/python-stdlib";
const GUEST_RUSTFLAGS: &str = "-C relocation-model=pic";
/// Where the checkout, cargo's home, registry sources and the guest target directory appear
/// in the guests' panic messages, whatever their real paths: the guests' bytes do not
/// depend on where they were built, nor on whether the crates came from cargo's registry
/// cache or from a vendor bundle.
const REMAPPED_WORKSPACE: &str = "/eryx";
const REMAPPED_CARGO_HOME: &str = "/cargo";
const REMAPPED_CRATES: &str = "/crates";
const REMAPPED_TARGET: &str = "/target";

/// The guest rustc flags: PIC, and the machine's paths remapped. Passed through
/// `CARGO_ENCODED_RUSTFLAGS`, so paths with spaces stay whole. rustc applies the last
/// remapping that matches, so the more specific ones come last.
fn guest_rustflags(workspace: &Workspace, sources: &Sources) -> Result<Vec<String>> {
    let remap = |from: &Path, to: &str| format!("--remap-path-prefix={}={to}", from.display());
    let mut flags: Vec<String> = GUEST_RUSTFLAGS.split(' ').map(str::to_owned).collect();
    flags.push(remap(&workspace.root, REMAPPED_WORKSPACE));
    let cargo_home = crate::workspace::cargo_home();
    flags.push(remap(&cargo_home, REMAPPED_CARGO_HOME));
    // Cargo unpacks registry crates to `registry/src/<registry>/NAME-VERSION`; a bundle holds
    // them as `crates/NAME-VERSION`. Both become `/crates/NAME-VERSION`.
    let mut registries: Vec<PathBuf> = match fs::read_dir(cargo_home.join("registry").join("src")) {
        Ok(entries) => entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect(),
        Err(_) => Vec::new(),
    };
    registries.sort();
    for registry in &registries {
        flags.push(remap(registry, REMAPPED_CRATES));
    }
    if let Some(bundle) = &sources.vendor {
        flags.push(remap(&bundle.crates_dir(), REMAPPED_CRATES));
    }
    flags.push(remap(&workspace.guest_target_dir(), REMAPPED_TARGET));
    Ok(flags)
}

/// Builds the requested variants; returns the manifest path.
pub fn run(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<PathBuf> {
    build(workspace, cache, sources, args).map(|built| built.manifest)
}

/// What a build made: the manifest, the inputs that built it and the package sets.
pub struct Built {
    pub manifest: PathBuf,
    pub fetched: Fetched,
    pub sets: Vec<PackageSet>,
}

/// Builds the requested variants; returns the manifest path and the inputs that built them.
pub fn build(workspace: &Workspace, cache: &Cache, sources: &Sources, args: &Args) -> Result<Built> {
    let started = Instant::now();
    let artifacts = workspace.artifacts_dir();
    let mut locks = args.packages.clone();
    let variants: Vec<&Variant> = match args.variant.as_deref() {
        Some(name) if name != "all" => match name.split_once('+') {
            Some((base, set)) => {
                if !locks.iter().any(|lock| lock.file_stem().is_some_and(|stem| stem == set)) {
                    locks.push(recorded_lock(&artifacts, name)?);
                }
                vec![variant::by_name(base)?]
            }
            None => vec![variant::by_name(name)?],
        },
        _ => variant::ALL.iter().collect(),
    };
    // The host tools compile on the core the guests leave idle; their steps wait for them.
    let host_build = host::prebuild(workspace, sources)?;
    let fetched = fetch::resolve(workspace, cache, sources, false)?;
    let mut sets = Vec::new();
    for lock in &locks {
        let lock = std::path::absolute(lock)?;
        let wheels = crate::inputs::packages::fetch_wheels(cache, sources, &lock)?;
        sets.push(PackageSet::new(&lock, wheels)?);
    }
    if let Some(twice) = sets.iter().enumerate().find_map(|(index, set)| sets[..index].iter().any(|other| other.name == set.name).then_some(&set.name)) {
        bail!("two --packages files are named `{twice}`; a set's name is its file's stem");
    }
    let stamp = stamp::ensure(&workspace.artifacts_dir().join("build").join("git-stamp"))?;
    let mut runner = Runner::new(artifacts.join(".steps"));
    runner.verify_outputs = args.verify_outputs;
    runner.set_preamble(vec![
        format!("wasi toolchain: {} — {}", fetched.wasi.provider, fetched.wasi.reason),
        format!("guest rust: {} — {}", fetched.rust.version, fetched.rust.reason),
    ]);
    let clang_version = fetched.wasi.version();
    let linking = LinkingCrates::locked(workspace)?;
    // CPython from pinned source (the CPython variant's interpreter and stdlib, and its core
    // module) builds on a thread of its own beside the guest staticlibs: its configure
    // scripts and links use one core, and so does the long LTO phase of the RustPython
    // staticlib, which would otherwise leave the other core idle for minutes. A step that
    // fails on either side lets no new step start on the other (the one running finishes and
    // stays cached).
    let from_source_wanted = variants.iter().any(|variant| variant.cpython_from_source);
    let (staticlibs, from_source) = std::thread::scope(|scope| -> Result<_> {
        let source_build = from_source_wanted.then(|| {
            let mut fork = runner.fork();
            let (fetched, clang_version) = (&fetched, &clang_version);
            scope.spawn(move || {
                let built = cpython_source::build(workspace, cache, sources, fetched, clang_version, &mut fork);
                if let Err(error) = &built {
                    fork.cancel();
                    eprintln!("error: CPython from source: {error:#}");
                }
                (built, fork)
            })
        });
        // Stops at the first failure.
        let staticlibs: Result<Vec<PathBuf>> =
            variants.iter().map(|variant| guest_staticlib(workspace, sources, &fetched, &stamp, variant, from_source_wanted, &mut runner)).collect();
        if staticlibs.is_err() {
            runner.cancel();
        }
        let from_source = match source_build {
            Some(handle) => {
                if staticlibs.is_err() && !handle.is_finished() {
                    eprintln!("a guest staticlib failed; waiting for the CPython-from-source step in progress to finish (Ctrl-C stops it)");
                }
                Some(match handle.join() {
                    Ok((built, fork)) => {
                        runner.absorb(fork);
                        built
                    }
                    Err(_) => Err(anyhow::anyhow!("the CPython-from-source build thread panicked")),
                })
            }
            None => None,
        };
        steps::joined(staticlibs, from_source.transpose())
    })?;
    for (variant, staticlib) in variants.iter().zip(&staticlibs) {
        build_variant(workspace, sources, &linking, &fetched, &clang_version, variant, staticlib, from_source.as_ref(), &mut runner)?;
    }
    for set in &sets {
        let tree_digest = tree_step(workspace, set, &mut runner)?;
        for variant in &variants {
            build_set_variant(workspace, sources, &linking, variant, set, &tree_digest, &mut runner)?;
        }
    }
    let manifest = write_manifest(workspace, &fetched, &linking, &clang_version, &variants, &sets)?;
    // Every later command runs the host tools too: their build is waited for, not stopped.
    host_build.finish();
    if runner.ran.is_empty() {
        // Nothing was rebuilt: one line, so a command that builds first stays quiet.
        eprintln!(
            "build-runtime: up to date ({} steps, {:.1}s); {}",
            runner.skipped.len(),
            started.elapsed().as_secs_f64(),
            manifest.display()
        );
        return Ok(Built { manifest, fetched, sets });
    }
    eprintln!("\nbuild summary ({:.1}s):", started.elapsed().as_secs_f64());
    for (name, seconds) in &runner.ran {
        eprintln!("  ran     {name:<28} {seconds:>7.1}s");
    }
    if !runner.skipped.is_empty() {
        eprintln!("  up to date: {}", runner.skipped.join(", "));
    }
    for variant in &variants {
        let forms = [variant.plain_component(), variant.component.to_owned(), variant.precompiled(), variant.command.component.to_owned()];
        let set_forms = sets.iter().flat_map(|set| [set.component(variant.component), set.component(&variant.precompiled())]);
        for component in forms.into_iter().chain(variant.core_module.map(str::to_owned)).chain(set_forms) {
            let path = artifacts.join(&component);
            let size = fs::metadata(&path)?.len();
            eprintln!("  {component:<28} {:>8.1} MiB  {}", size as f64 / 1048576.0, path.display());
        }
    }
    if let Some(built) = &from_source {
        let size = fs::metadata(&built.core_module)?.len();
        eprintln!("  {:<28} {:>8.1} MiB  {} (CPython from source)", cpython_source::CORE_MODULE, size as f64 / 1048576.0, built.core_module.display());
        eprintln!("  {:<28} {:>8}      {}", "its stdlib", "", built.stdlib.display());
        eprintln!("  {:<28} {:>8}      {}", "its headers", "", built.include.display());
    }
    eprintln!("  manifest: {}", manifest.display());
    Ok(Built { manifest, fetched, sets })
}

fn member<'a>(fetched: &'a Fetched, name: &str) -> Result<&'a Path> {
    fetched
        .members
        .get(name)
        .map(PathBuf::as_path)
        .with_context(|| format!("the pinned C runtime (the wheel's members) has no `{name}`"))
}

/// Builds `variant`'s guest staticlib (RustPython's takes most of a fresh build, much of it on
/// one core): every variant's comes before any variant's later steps, so the host tools'
/// background build, which those steps wait for, runs beside it. Answers the staticlib's path.
fn guest_staticlib(
    workspace: &Workspace,
    sources: &Sources,
    fetched: &Fetched,
    stamp: &Stamp,
    variant: &Variant,
    beside_other_steps: bool,
    runner: &mut Runner,
) -> Result<PathBuf> {
    let target = &fetched.lock.rust_guest.target;
    let guest_target = workspace.guest_target_dir();
    let staticlib = guest_target.join(target).join("release").join(variant.staticlib_name());
    let rustflags = guest_rustflags(workspace, sources)?;
    let mut inputs = Fingerprint::default();
    for source in variant.guest_sources {
        let path = workspace.path(source);
        if path.is_dir() {
            inputs.tree(&path)?;
        } else {
            inputs.file(&path)?;
        }
    }
    inputs
        .text("rustc", &fetched.rust.version)
        .text("rustflags", &rustflags.join("\x1f"))
        .text("target", target)
        .text("build-stamp", &stamp.commit);
    for (key, value) in variant.guest_build_env {
        inputs.text(key, value);
    }
    for patched in &fetched.lock.patched_crates {
        inputs.tree(&crate::inputs::patch::crate_dir(workspace, patched))?;
    }
    runner.step(&format!("{}: guest staticlib", variant.name), &inputs, &[&staticlib], || {
        let shell = Shell::new()?;
        shell.change_dir(&workspace.root);
        let cargo = &fetched.rust.cargo;
        let toolchain = fetched.rust.toolchain_arg.as_slice();
        let manifest = workspace.path(variant::GUEST_WORKSPACE_MANIFEST);
        let package = variant.guest_package;
        let mut command = scrubbed(cmd!(
            shell,
            "{cargo} {toolchain...} build --release --locked -Z build-std=panic_abort,std --target {target} --manifest-path {manifest} -p {package} --target-dir {guest_target}"
        ))
        .args(sources.cargo_args())
        .env("RUSTC", &fetched.rust.rustc)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"));
        for (key, value) in &fetched.rust.env {
            command = command.env(key, value);
        }
        for (key, value) in stamp.env() {
            command = command.env(key, value);
        }
        for (key, value) in variant.guest_build_env {
            command = command.env(key, value);
        }
        if beside_other_steps {
            // cargo's progress bar redraws its line, and the other thread's lines would land
            // on it.
            command = command.env("CARGO_TERM_PROGRESS_WHEN", "never");
        }
        command
            .run()
        .with_context(|| format!("build the {package} staticlib"))?;
        Ok(())
    })?;
    Ok(staticlib)
}

/// Removes inherited build settings from a nested cargo command: RUSTFLAGS / CARGO_* /
/// RUSTC* from the host build would leak into the guest's.
fn scrubbed(mut command: xshell::Cmd<'_>) -> xshell::Cmd<'_> {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let inherited_build_setting = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key.starts_with("RUSTDOC")
            || key == "RUSTUP_TOOLCHAIN"
            || key.starts_with("PYO3_");
        if inherited_build_setting {
            command = command.env_remove(key);
        }
    }
    command
}

/// The versions of the xtask's own linking crates (from the host Cargo.lock): a bump of one
/// must rebuild what it made.
struct LinkingCrates {
    wit_dylib: String,
    wit_component: String,
    /// The host's wasmtime and wizer: they pre-initialise and precompile.
    wasmtime: String,
    wasmtime_wizer: String,
}

impl LinkingCrates {
    fn locked(workspace: &Workspace) -> Result<LinkingCrates> {
        let path = workspace.path("Cargo.lock");
        let lock = crate::inputs::lock::CargoLock::load(&path)?;
        let version = |package: &str| lock.version_of(package).with_context(|| path.display().to_string());
        Ok(LinkingCrates {
            wit_dylib: version("wit-dylib")?,
            wit_component: version("wit-component")?,
            wasmtime: version("wasmtime")?,
            wasmtime_wizer: version("wasmtime-wizer")?,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn build_variant(
    workspace: &Workspace,
    sources: &Sources,
    linking: &LinkingCrates,
    fetched: &Fetched,
    clang_version: &str,
    variant: &Variant,
    staticlib: &Path,
    from_source: Option<&cpython_source::Built>,
    runner: &mut Runner,
) -> Result<()> {
    let artifacts = workspace.artifacts_dir();
    let build_dir = artifacts.join("build").join(variant.name);
    let from_source = match (variant.cpython_from_source, from_source) {
        (true, Some(built)) => Some(built),
        (true, None) => bail!("{}: CPython from source was not built", variant.name),
        (false, _) => None,
    };
    fs::create_dir_all(&build_dir)?;

    // 1. The guest staticlib was built before any variant's later steps ([`guest_staticlib`]).
    // 2. The C stubs.
    let mut objects = Vec::new();
    for stub in variant.c_stubs {
        objects.push(compile_c(workspace, fetched, clang_version, variant, &build_dir, stub, runner)?);
    }

    // 3. The bindings library (first: it decides what the runtime library exports).
    let wit_dir = workspace.path("wit");
    let bindings = build_dir.join("libcomponent_bindings.so");
    let mut inputs = Fingerprint::default();
    inputs.tree(&wit_dir)?.text("interpreter", variant.runtime_library).text("wit-dylib", &linking.wit_dylib);
    runner.step(&format!("{}: wit-dylib bindings", variant.name), &inputs, &[&bindings], || {
        let bytes = generate_bindings(&wit_dir, variant.runtime_library)?;
        write_atomic(&bindings, &bytes)
    })?;

    // 4. The runtime shared library, exporting only what the bindings and the other
    // libraries import from it, without its name section.
    let runtime_library = build_dir.join(variant.runtime_library);
    let mut exports = imports_of(&fs::read(&bindings)?)?;
    exports.extend(variant.stub_exports.iter().map(|name| name.to_string()));
    link_library(variant, fetched, clang_version, Some(staticlib), &objects, &exports, &runtime_library, runner)?;

    // 5. The component.
    let mut pinned: Vec<(String, PathBuf)> = Vec::new();
    for name in variant.pinned_libraries() {
        pinned.push((name.to_string(), member(fetched, name)?.to_path_buf()));
    }
    if let Some(built) = from_source {
        pinned.push((cpython_source::SHARED_LIBRARY_NAME.to_owned(), built.shared_library.clone()));
    }
    let mut libraries = pinned.clone();
    libraries.push((variant.runtime_library.to_owned(), runtime_library.clone()));
    libraries.push(("libcomponent_bindings.so".to_owned(), bindings.clone()));
    let adapter = fs::read(member(fetched, ADAPTER_MEMBER)?)?;
    let plain = artifacts.join(variant.plain_component());
    link_component_step(linking, variant, &libraries, &adapter, &plain, runner)?;

    // 6. The command form: the interpreter's own `main` as a `wasi:cli/command` component,
    // from the same pinned libraries and stubs, with the preview1 command adapter.
    let command = &variant.command;
    for source in command.c_sources {
        objects.push(compile_c(workspace, fetched, clang_version, variant, &build_dir, source, runner)?);
    }
    let entry_library = build_dir.join(command.library);
    let mut exports: Vec<String> = command.exports.iter().map(|name| name.to_string()).collect();
    exports.extend(variant.stub_exports.iter().map(|name| name.to_string()));
    let entry_staticlib = command.uses_staticlib.then_some(staticlib);
    link_library(variant, fetched, clang_version, entry_staticlib, &objects, &exports, &entry_library, runner)?;
    let adapter = command_adapter(&fetched.lock)?;
    let entry_with_world = build_dir.join(format!("world-{}", command.library));
    embed_entry_world_step(variant, &entry_library, adapter, &entry_with_world, runner)?;
    // The entry library first: the first library that exports a symbol wins, so what it
    // defines of libc's (CPython's entry defines `exit`) is what every library calls.
    let mut libraries = vec![(command.library.to_owned(), entry_with_world)];
    libraries.extend(pinned);
    let command_component = artifacts.join(command.component);
    link_component_step(linking, variant, &libraries, adapter, &command_component, runner)?;

    // 7. The stdlib, for variants that mount it, with bytecode the command form compiled.
    if let Some(built) = from_source {
        build_stdlib(workspace, sources, &artifacts, &built.stdlib, &command_component, runner)?;
    }

    // 8. The pre-initialised component (the default), and its precompiled form.
    let component = artifacts.join(variant.component);
    preinit_step(workspace, sources, linking, variant, None, &plain, &component, runner)?;
    precompile_step(workspace, sources, linking, variant.name, &component, &artifacts.join(variant.precompiled()), runner)?;

    // 9. The core module: the same staticlib and stubs as one wasm32-wasip1 program.
    if let Some(core_module) = variant.core_module {
        link_core_module(workspace, fetched, clang_version, variant, &build_dir, staticlib, &artifacts.join(core_module), runner)?;
    }
    Ok(())
}

/// The static libraries of wasi-libc's emulations the guest uses (the component links their
/// shared forms, [`variant::WASI_LIBRARIES`]).
const STATIC_WASI_EMULATIONS: &[&str] =
    &["-lwasi-emulated-mman", "-lwasi-emulated-process-clocks", "-lwasi-emulated-getpid", "-lwasi-emulated-signal"];

/// Links a variant's core module: its staticlib and C stubs (compiled here against the pinned
/// wasi-libc's own headers) with that wasi-libc's static C library and start files, so
/// wasi-libc's `_start` runs the constructors, calls the guest's `main` and ends the program
/// with `proc_exit(status)`. The shadow stack is the sandbox's; the name section and debug
/// information are dropped, and unused code is collected.
#[allow(clippy::too_many_arguments)]
fn link_core_module(
    workspace: &Workspace,
    fetched: &Fetched,
    clang_version: &str,
    variant: &Variant,
    build_dir: &Path,
    staticlib: &Path,
    output: &Path,
    runner: &mut Runner,
) -> Result<()> {
    let sysroot = fetched.wasi_libc.root.join("usr");
    let name = output.file_name().context("a module has a file name")?.to_string_lossy().into_owned();
    let target = &["--target=wasm32-wasi".to_owned(), format!("--sysroot={}", sysroot.display())];
    let compile_flags = &["-O2"];
    // wasi-libc's `__main_void` names `main` (`__main_argc_argv`) only weakly, which pulls
    // nothing out of an archive: the guest's is asked for by name. The stack comes first in
    // memory, as in the components: RustPython guesses where its stack ends (8 MiB below where
    // it starts, or address 0), which holds only then, and an overflow traps at address 0
    // instead of writing over the data.
    let mut link_flags: Vec<String> =
        ["-fuse-ld=lld", "-Wl,--undefined=__main_argc_argv", "-Wl,--stack-first", "-Wl,--gc-sections", "-Wl,--strip-all"]
            .map(str::to_owned)
            .to_vec();
    link_flags.push(format!("-Wl,-z,stack-size={}", variant.shadow_stack_bytes));
    let mut inputs = Fingerprint::default();
    inputs.file(staticlib)?.text("clang", clang_version).text("wasi-libc tree", &fetched.wasi_libc.digest);
    inputs.text("compile flags", &compile_flags.join(" ")).text("link flags", &link_flags.join(" "));
    inputs.text("emulations", &STATIC_WASI_EMULATIONS.join(" "));
    for stub in variant.c_stubs {
        inputs.file(&workspace.path(stub))?;
    }
    runner.step(&format!("{}: link {name}", variant.name), &inputs, &[output], || {
        let shell = Shell::new()?;
        let clang = &fetched.wasi.clang;
        let core_dir = build_dir.join("core");
        fs::create_dir_all(&core_dir)?;
        let mut objects = Vec::new();
        for stub in variant.c_stubs {
            let source = workspace.path(stub);
            let object = core_dir.join(Path::new(stub).with_extension("o").file_name().context("a C source has a file name")?);
            cmd!(shell, "{clang} {target...} {compile_flags...} -c {source} -o {object}").quiet().run().with_context(|| format!("compile {stub} for {name}"))?;
            objects.push(object);
        }
        link_into(output, &name, |temporary| {
            cmd!(shell, "{clang} {target...} {link_flags...} {staticlib} {objects...} {STATIC_WASI_EMULATIONS...} -o {temporary}")
        })
    })?;
    Ok(())
}

/// Runs the link command `link` makes for a temporary name beside `output`, then moves the
/// result into place: an interrupted link leaves nothing under the output's name.
fn link_into<'a>(output: &Path, name: &str, link: impl FnOnce(&Path) -> xshell::Cmd<'a>) -> Result<()> {
    let temporary = cache::temporary_sibling(output);
    link(&temporary).quiet().run().with_context(|| format!("link {name}"))?;
    fs::rename(&temporary, output)?;
    Ok(())
}

/// The site-packages tree of `set`, written from its verified wheels; answers the tree's
/// digest (what the set's pre-initialisations fingerprint).
/// The set's lock is recorded beside its tree, so `--variant <variant>+<set>` finds it later.
fn tree_step(workspace: &Workspace, set: &PackageSet, runner: &mut Runner) -> Result<String> {
    let artifacts = workspace.artifacts_dir();
    let tree = packages::tree_dir(&artifacts, &set.name);
    let record = tree.with_file_name("tree.sha256");
    let lock_record = tree.with_file_name(packages::LOCK_RECORD);
    let mut inputs = Fingerprint::default();
    inputs.text("lock", &set.lock_sha256).text("lock path", &set.lock.display().to_string());
    inputs.file(&workspace.path(packages::SOURCE))?;
    for wheel in &set.wheels {
        inputs.text(&wheel.file_name, &wheel.pin.sha256);
    }
    // The tree is an output: one changed or removed since is written again.
    runner.step(&format!("{}: site-packages", set.name), &inputs, &[&tree, &record, &lock_record], || {
        packages::write_tree(set, &tree)?;
        write_atomic(&lock_record, set.lock.display().to_string().as_bytes())?;
        write_atomic(&record, crate::inputs::unpacked::tree_digest(&tree)?.as_bytes())
    })?;
    fs::read_to_string(&record).with_context(|| format!("read {}", record.display()))
}

/// `runtime-<variant>+<set>.wasm` and its `.cwasm`: the variant's plain component,
/// pre-initialised with the set's tree mounted and its modules imported.
fn build_set_variant(
    workspace: &Workspace,
    sources: &Sources,
    linking: &LinkingCrates,
    variant: &Variant,
    set: &PackageSet,
    tree_digest: &str,
    runner: &mut Runner,
) -> Result<()> {
    let artifacts = workspace.artifacts_dir();
    let plain = artifacts.join(variant.plain_component());
    let component = artifacts.join(set.component(variant.component));
    preinit_step(workspace, sources, linking, variant, Some(SetPreinit { set, tree_digest }), &plain, &component, runner)?;
    precompile_step(workspace, sources, linking, &set.variant_name(variant.name), &component, &artifacts.join(set.component(&variant.precompiled())), runner)
}

/// The lock file an earlier build recorded for the package variant `name` (`<variant>+<set>`).
fn recorded_lock(artifacts: &Path, name: &str) -> Result<PathBuf> {
    let set = name.split_once('+').map(|(_, set)| set).unwrap_or_default();
    let record = packages::tree_dir(artifacts, set).with_file_name(packages::LOCK_RECORD);
    let lock = fs::read_to_string(&record).map(PathBuf::from).with_context(|| {
        format!("`{name}` has not been built: build it first with `cargo xtask build-runtime --packages FILE` (the lock file whose stem is `{set}`)")
    })?;
    if !lock.is_file() {
        bail!("`{name}` was built from {}, which is gone; build it again with `cargo xtask build-runtime --packages FILE`", lock.display());
    }
    Ok(lock)
}

/// What a sandbox of a variant sees besides its code.
struct SandboxView {
    /// The stdlib mount: host directory, guest path.
    mount: Option<(PathBuf, &'static str)>,
    env: Vec<(&'static str, &'static str)>,
}

fn sandbox_view(artifacts: &Path, variant: &Variant) -> SandboxView {
    if variant.cpython_from_source {
        let env = vec![("PYTHONHOME", STDLIB_GUEST_PATH), ("PYTHONPATH", STDLIB_GUEST_PATH), ("PYTHONDONTWRITEBYTECODE", "1")];
        SandboxView { mount: Some((artifacts.join(STDLIB_DIRECTORY), STDLIB_GUEST_PATH)), env }
    } else {
        SandboxView { mount: None, env: Vec::new() }
    }
}

/// What a package set adds to a pre-initialisation: its tree (mounted and put on `sys.path`)
/// and its imports.
struct SetPreinit<'a> {
    set: &'a PackageSet,
    tree_digest: &'a str,
}

/// Pre-initialises `plain` into `output` with the host (`eryx-tools preinit`), as a step: the
/// variant's snapshot, or with a package set.
#[allow(clippy::too_many_arguments)]
fn preinit_step(
    workspace: &Workspace,
    sources: &Sources,
    linking: &LinkingCrates,
    variant: &Variant,
    set: Option<SetPreinit<'_>>,
    plain: &Path,
    output: &Path,
    runner: &mut Runner,
) -> Result<()> {
    let artifacts = workspace.artifacts_dir();
    let SandboxView { mount, env } = sandbox_view(&artifacts, variant);
    let mut imports: Vec<String> = variant.preinit_imports.iter().map(|name| name.to_string()).collect();
    let mut label = variant.name.to_owned();
    let mut packages = None;
    let mut inputs = Fingerprint::default();
    if let Some(SetPreinit { set, tree_digest }) = &set {
        imports.extend(set.imports.iter().cloned());
        label = set.variant_name(variant.name);
        packages = Some(format!("{}::{}", packages::tree_dir(&artifacts, &set.name).display(), packages::GUEST_PATH));
        inputs.text("package tree", tree_digest).text("package path", packages::GUEST_PATH);
    }
    inputs
        .file(plain)?
        .text("imports", &imports.join(","))
        .text("wasmtime", &linking.wasmtime)
        .text("wasmtime-wizer", &linking.wasmtime_wizer);
    for source in host::PREINIT_SOURCES {
        inputs.file(&workspace.path(source))?;
    }
    if mount.is_some() {
        // The stdlib's contents (its archive stands for the extracted tree).
        inputs.file(&artifacts.join(STDLIB_ARCHIVE))?;
    }
    for (key, value) in &env {
        inputs.text(key, value);
    }
    runner.step(&format!("{label}: pre-initialise"), &inputs, &[output], || {
        let mut command = host::host_command(workspace, sources)?;
        command.arg("preinit").arg("--component").arg(plain).arg("--out").arg(output);
        if let Some((host, guest)) = &mount {
            command.arg("--mount").arg(format!("{}::{guest}", host.display()));
        }
        if let Some(packages) = &packages {
            command.arg("--packages").arg(packages);
        }
        for (key, value) in &env {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        for module in &imports {
            command.arg("--import").arg(module);
        }
        host::exec(command, &format!("{HOST_PACKAGE} preinit"))
    })?;
    Ok(())
}

/// Precompiles `component` into `output` (and `output.json`) with the host
/// (`eryx-tools precompile`), as a step.
fn precompile_step(
    workspace: &Workspace,
    sources: &Sources,
    linking: &LinkingCrates,
    label: &str,
    component: &Path,
    output: &Path,
    runner: &mut Runner,
) -> Result<()> {
    let sidecar = precompiled_info_path(output);
    let mut inputs = Fingerprint::default();
    inputs.file(component)?.text("wasmtime", &linking.wasmtime);
    for source in host::PRECOMPILE_SOURCES {
        inputs.file(&workspace.path(source))?;
    }
    runner.step(&format!("{label}: precompile"), &inputs, &[output, &sidecar], || {
        let mut command = host::host_command(workspace, sources)?;
        command.arg("precompile").arg("--component").arg(component).arg("--out").arg(output).arg("--info").arg(&sidecar);
        host::exec(command, &format!("{HOST_PACKAGE} precompile"))
    })?;
    Ok(())
}

/// Where the build keeps what a precompiled artifact was compiled for (`eryx-tools precompile
/// --info`).
fn precompiled_info_path(artifact: &Path) -> PathBuf {
    let mut path = artifact.as_os_str().to_owned();
    path.push(".json");
    PathBuf::from(path)
}

/// What the command's entry library imports of WASI itself (besides what the adapter does):
/// `wasi:cli/exit`'s `exit-with-code`, stable since WASI 0.2.12, which carries a status the
/// preview1 adapter cannot (it ends every non-zero `proc_exit` as plain failure).
const ENTRY_WORLD: &str = "package eryx:command-entry;\n\nworld entry {\n    import wasi:cli/exit@0.2.12;\n}\n";

/// The entry library with its world embedded (the interfaces it imports, so the component's
/// linker knows their types), taken from the WASI packages the command adapter was built
/// against: the adapter and the entry library agree on every type by construction.
fn embed_entry_world_step(variant: &Variant, library: &Path, adapter: &[u8], output: &Path, runner: &mut Runner) -> Result<()> {
    let name = output.file_name().context("a library has a file name")?.to_string_lossy().into_owned();
    let mut inputs = Fingerprint::default();
    inputs.file(library)?.text("adapter", &cache::sha256_bytes(adapter)).text("world", ENTRY_WORLD);
    runner.step(&format!("{}: embed the world of {name}", variant.name), &inputs, &[output], || {
        let mut bytes = fs::read(library).with_context(|| format!("read {}", library.display()))?;
        embed_entry_world(&mut bytes, adapter)?;
        write_atomic(output, &bytes)
    })?;
    Ok(())
}

fn embed_entry_world(library: &mut Vec<u8>, adapter: &[u8]) -> Result<()> {
    let (_, mut bindgen) = wit_component::metadata::decode(adapter).context("read the WASI packages of the command adapter")?;
    let package = bindgen.resolve.push_str("entry.wit", ENTRY_WORLD).context("resolve the entry library's world")?;
    let world = bindgen.resolve.select_world(&[package], Some("entry"))?;
    wit_component::embed_component_metadata(library, &bindgen.resolve, world, wit_component::StringEncoding::UTF8, false)
        .context("embed the world in the entry library")
}

/// The source tarballs, as the build manifest and the release manifest name them among
/// their inputs: file → name, version and sha256.
pub fn source_tarball_inputs(lock: &crate::inputs::lock::Lock) -> BTreeMap<String, serde_json::Value> {
    lock.source_tarballs.iter().map(|pin| (pin.file.clone(), json!({ "name": pin.name, "version": pin.version, "sha256": pin.sha256 }))).collect()
}

/// The preview1 command adapter, checked against its pin.
fn command_adapter(lock: &crate::inputs::lock::Lock) -> Result<&'static [u8]> {
    let bytes = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER;
    let pin = &lock.command_adapter;
    let digest = cache::sha256_bytes(bytes);
    if digest != pin.sha256 {
        bail!(
            "the preview1 command adapter of {} has sha256 {digest}, toolchains.lock pins {} ({} {}): \
             move the pin and the dependency in xtask/Cargo.toml together",
            pin.crate_name,
            pin.sha256,
            pin.crate_name,
            pin.version
        );
    }
    Ok(bytes)
}

/// Compiles one C source of `variant` with the chosen WASI clang; returns the object.
fn compile_c(
    workspace: &Workspace,
    fetched: &Fetched,
    clang_version: &str,
    variant: &Variant,
    build_dir: &Path,
    relative: &str,
    runner: &mut Runner,
) -> Result<PathBuf> {
    let source = workspace.path(relative);
    let file_name = Path::new(relative).file_name().context("a C source has a file name")?.to_string_lossy().into_owned();
    let object = build_dir.join(Path::new(&file_name).with_extension("o"));
    let mut inputs = Fingerprint::default();
    inputs.file(&source)?.text("clang", clang_version).text("flags", &fetched.wasi.compile_flags.join(" "));
    runner.step(&format!("{}: compile {file_name}", variant.name), &inputs, &[&object], || {
        let shell = Shell::new()?;
        let clang = &fetched.wasi.clang;
        let flags = &fetched.wasi.compile_flags;
        let temporary = cache::temporary_sibling(&object);
        cmd!(shell, "{clang} {flags...} -fPIC -O2 -c {source} -o {temporary}").run()?;
        fs::rename(&temporary, &object)?;
        Ok(())
    })?;
    Ok(object)
}

/// Links a wasm shared library from the (optional, whole) staticlib and objects, exporting
/// only `exports`, without its name section.
#[allow(clippy::too_many_arguments)]
fn link_library(
    variant: &Variant,
    fetched: &Fetched,
    clang_version: &str,
    staticlib: Option<&Path>,
    objects: &[PathBuf],
    exports: &[String],
    output: &Path,
    runner: &mut Runner,
) -> Result<()> {
    let name = output.file_name().context("a library has a file name")?.to_string_lossy().into_owned();
    let export_flags: Vec<String> = exports.iter().map(|name| format!("-Wl,--export-if-defined={name}")).collect();
    let mut inputs = Fingerprint::default();
    if let Some(staticlib) = staticlib {
        inputs.file(staticlib)?;
    }
    inputs.text("clang", clang_version).text("exports", &exports.join(","));
    for object in objects {
        inputs.file(object)?;
    }
    let archive: Vec<String> = match staticlib {
        Some(staticlib) => vec!["-Wl,--whole-archive".into(), staticlib.display().to_string(), "-Wl,--no-whole-archive".into()],
        None => Vec::new(),
    };
    runner.step(&format!("{}: link {name}", variant.name), &inputs, &[output], || {
        let shell = Shell::new()?;
        let clang = &fetched.wasi.clang;
        // `--strip-all` drops the name section, so the temporary name leaves no trace.
        link_into(output, &name, |temporary| {
            cmd!(
                shell,
                "{clang} --target=wasm32-wasip1 -fuse-ld=lld -nostdlib -shared -Wl,--no-entry -Wl,--allow-undefined -Wl,--no-export-dynamic {export_flags...} -Wl,--strip-all {archive...} {objects...} -o {temporary}"
            )
        })
    })?;
    Ok(())
}

/// Links a component from `libraries` and `adapter` into `output`, as a skippable step.
fn link_component_step(
    linking: &LinkingCrates,
    variant: &Variant,
    libraries: &[(String, PathBuf)],
    adapter: &[u8],
    output: &Path,
    runner: &mut Runner,
) -> Result<()> {
    let name = output.file_name().context("a component has a file name")?.to_string_lossy().into_owned();
    let mut inputs = Fingerprint::default();
    for (library, path) in libraries {
        inputs.text("library", library).file(path)?;
    }
    inputs
        .text("adapter", &cache::sha256_bytes(adapter))
        .text("wit-component", &linking.wit_component)
        .text("shadow-stack-bytes", &variant.shadow_stack_bytes.to_string());
    runner.step(&format!("{}: link {name}", variant.name), &inputs, &[output], || {
        let bytes = link_component(libraries, adapter, variant.shadow_stack_bytes)?;
        write_atomic(output, &bytes)
    })?;
    Ok(())
}

/// The stdlib as the sandboxes and the command form mount it: the source build's
/// (`cpython_source::STDLIB_DIR`), with the bytecode of every module beside it
/// (`__pycache__/*.pyc`, unchecked-hash, so it is used without looking at the sources' times,
/// and the same bytes on every machine), compiled by the variant's own command form through
/// `eryx-tools bytecode`; and the same packed.
fn build_stdlib(workspace: &Workspace, sources: &Sources, artifacts: &Path, stdlib: &Path, command: &Path, runner: &mut Runner) -> Result<()> {
    let directory = artifacts.join(STDLIB_DIRECTORY);
    let packed = artifacts.join(STDLIB_ARCHIVE);
    let mut inputs = Fingerprint::default();
    inputs.tree(stdlib)?.file(command)?.text("zstd-level", &archive::PACK_ZSTD_LEVEL.to_string());
    for source in host::BYTECODE_SOURCES {
        inputs.file(&workspace.path(source))?;
    }
    runner.step("stdlib: copy, compile bytecode and pack", &inputs, &[&directory, &packed], || {
        cache::replace_dir_atomically(&directory, |staging| {
            // Without any `__pycache__`: bytecode an interpreter wrote into the source folder
            // (a run that preopened it writable) is not the build's; only the bytecode
            // compiled next is shipped.
            cpython_source::copy_stdlib(stdlib, staging)?;
            let mut compile = host::host_command(workspace, sources)?;
            compile.arg("bytecode").arg("--command").arg(command).arg("--stdlib").arg(staging);
            compile.arg("--compile-cache").arg(artifacts.join("compiled"));
            host::exec(compile, &format!("{} bytecode", host::HOST_PACKAGE))
        })?;
        archive::pack_deterministic(&directory, ".", &packed)
    })?;
    Ok(())
}

/// The names `library` (a shared library) imports: what the runtime library must export
/// for it. Names the runtime library does not define are left to the other libraries.
fn imports_of(library: &[u8]) -> Result<Vec<String>> {
    let mut names = std::collections::BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(library) {
        if let wasmparser::Payload::ImportSection(reader) = payload.context("parse the bindings library")? {
            for import in reader.into_imports() {
                names.insert(import.context("parse the bindings' imports")?.name.to_owned());
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// The wit-dylib bindings for the world in `wit_dir`, with the world's type embedded so
/// the linker knows what the component exports and imports.
fn generate_bindings(wit_dir: &Path, interpreter: &str) -> Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(wit_dir).with_context(|| format!("parse {}", wit_dir.display()))?;
    let world = resolve.select_world(&[package], Some("sandbox")).context("find world `sandbox`")?;
    let mut options = wit_dylib::DylibOpts { interpreter: Some(interpreter.to_owned()), ..Default::default() };
    let mut bytes = wit_dylib::create(&resolve, world, Some(&mut options)).context("wit-dylib")?;
    wit_component::embed_component_metadata(&mut bytes, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .context("embed the world in the bindings")?;
    Ok(bytes)
}

fn link_component(libraries: &[(String, PathBuf)], adapter: &[u8], shadow_stack_bytes: u32) -> Result<Vec<u8>> {
    let mut linker = wit_component::Linker::default();
    linker.stack_size(shadow_stack_bytes);
    linker.use_built_in_libdl(true);
    for (name, path) in libraries {
        let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
        linker.library(name, &bytes, false)?;
    }
    linker.encoder().validate(true);
    linker.encoder().adapter("wasi_snapshot_preview1", adapter)?;
    linker.encode().context("link the component")
}

fn artifact_entry(artifacts: &Path, path: &Path) -> Result<serde_json::Value> {
    let size = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?.len();
    Ok(entry_of(artifacts, path, size, &sha256_file(path)?))
}

/// A manifest entry: the artifact's path (relative to `artifacts`), size and sha256.
fn entry_of(artifacts: &Path, path: &Path, size: u64, sha256: &str) -> serde_json::Value {
    let relative = path.strip_prefix(artifacts).unwrap_or(path);
    json!({ "path": relative.to_string_lossy(), "size": size, "sha256": sha256 })
}

/// [`artifact_entry`] of a sandbox component, with the linear memory it starts with (the
/// largest initial size of its core modules' memories): the host refuses a memory limit
/// below it in one line, before compiling anything.
fn component_entry(artifacts: &Path, path: &Path) -> Result<serde_json::Value> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut initial: u64 = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::MemorySection(memories) = payload.with_context(|| format!("parse {}", path.display()))? {
            for memory in memories {
                let memory = memory?;
                initial = initial.max(memory.initial << memory.page_size_log2.unwrap_or(16));
            }
        }
    }
    let mut entry = entry_of(artifacts, path, bytes.len() as u64, &cache::sha256_bytes(&bytes));
    entry["initial_memory_bytes"] = json!(initial);
    Ok(entry)
}

/// Writes `manifest.json`, keeping the entries of variants not built this time when their
/// component is still there.
fn write_manifest(
    workspace: &Workspace,
    fetched: &Fetched,
    linking: &LinkingCrates,
    clang_version: &str,
    built: &[&Variant],
    sets: &[PackageSet],
) -> Result<PathBuf> {
    let artifacts = workspace.artifacts_dir();
    let path = artifacts.join("manifest.json");
    let mut variants: BTreeMap<String, serde_json::Value> = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|manifest| serde_json::from_value(manifest["variants"].clone()).ok())
        .unwrap_or_default();
    // A rebuilt variant's entries are written again; those of its package sets not built in
    // this run are dropped (they would hold a snapshot of an older build; `--variant
    // <variant>+<set>` builds one again from its recorded lock).
    variants.retain(|name, entry| {
        let base = name.split_once('+').map_or(name.as_str(), |(base, _)| base);
        !built.iter().any(|variant| variant.name == base)
            && entry["component"]["path"].as_str().is_some_and(|component| artifacts.join(component).exists())
    });
    let precompiled_entry = |precompiled: PathBuf| -> Result<serde_json::Value> {
        let info_path = precompiled_info_path(&precompiled);
        let info: serde_json::Value = serde_json::from_slice(&fs::read(&info_path).with_context(|| format!("read {}", info_path.display()))?)
            .with_context(|| format!("parse {}", info_path.display()))?;
        // The digest `eryx-tools precompile` recorded of the bytes it wrote, never one of the
        // file as it is now: the host loads the artifact only when its bytes are those.
        let relative = precompiled.strip_prefix(&artifacts).unwrap_or(&precompiled);
        let mut precompiled = json!({ "path": relative.to_string_lossy(), "wasmtime": linking.wasmtime });
        for key in ["size", "sha256", "target", "cpu", "compatibility_hash"] {
            if info[key].is_null() {
                bail!("{} has no `{key}` (written by an older build); run `cargo xtask build-runtime`", info_path.display());
            }
            precompiled[key] = info[key].clone();
        }
        Ok(precompiled)
    };
    for variant in built {
        let mut entry = json!({
            "component": component_entry(&artifacts, &artifacts.join(variant.component))?,
            "plain": component_entry(&artifacts, &artifacts.join(variant.plain_component()))?,
            "precompiled": precompiled_entry(artifacts.join(variant.precompiled()))?,
            "preinit_imports": variant.preinit_imports,
            "command": artifact_entry(&artifacts, &artifacts.join(variant.command.component))?,
            "core_module": match variant.core_module {
                Some(module) => artifact_entry(&artifacts, &artifacts.join(module))?,
                None => serde_json::Value::Null,
            },
            "runtime_library": artifact_entry(&artifacts, &artifacts.join("build").join(variant.name).join(variant.runtime_library))?,
            "pinned_libraries": variant.pinned_libraries(),
            "source_libraries": match variant.cpython_from_source {
                true => vec![artifact_entry(&artifacts, &artifacts.join(cpython_source::SHARED_LIBRARY))?],
                false => Vec::new(),
            },
            "env": {},
        });
        let SandboxView { mount, env } = sandbox_view(&artifacts, variant);
        if mount.is_some() {
            entry["stdlib"] = json!({
                "directory": STDLIB_DIRECTORY,
                "guest_path": STDLIB_GUEST_PATH,
                "archive": artifact_entry(&artifacts, &artifacts.join(STDLIB_ARCHIVE))?,
            });
        }
        entry["env"] = json!(env.into_iter().collect::<BTreeMap<_, _>>());
        // The variant with each package set: its own snapshot and tree; the same plain
        // component, stdlib and environment; no command forms (they are the variant's).
        for set in sets {
            let mut with_set = entry.clone();
            with_set["component"] = component_entry(&artifacts, &artifacts.join(set.component(variant.component)))?;
            with_set["precompiled"] = precompiled_entry(artifacts.join(set.component(&variant.precompiled())))?;
            with_set["preinit_imports"] = json!(variant.preinit_imports.iter().map(|name| name.to_string()).chain(set.imports.iter().cloned()).collect::<Vec<_>>());
            with_set["command"] = serde_json::Value::Null;
            with_set["core_module"] = serde_json::Value::Null;
            let tree = packages::tree_dir(&artifacts, &set.name);
            with_set["packages"] = json!({
                "directory": tree.strip_prefix(&artifacts).unwrap_or(&tree).to_string_lossy(),
                "guest_path": packages::GUEST_PATH,
            });
            with_set["package_set"] = json!({
                "name": set.name,
                "lock": set.lock.strip_prefix(&workspace.root).unwrap_or(&set.lock).display().to_string(),
                "lock_sha256": set.lock_sha256,
                "imports": set.imports,
                "wheels": set.wheels.iter().map(|wheel| json!({
                    "name": wheel.pin.name,
                    "version": wheel.pin.version,
                    "file": wheel.file_name,
                    "sha256": wheel.pin.sha256,
                })).collect::<Vec<_>>(),
            });
            variants.insert(set.variant_name(variant.name), with_set);
        }
        variants.insert(variant.name.to_owned(), entry);
    }
    let lock = &fetched.lock;
    let manifest = json!({
        "schema": 1,
        "variants": variants,
        "inputs": {
            "python_version": lock.cpython.python_version,
            "cpython_wheel": {
                "project": lock.cpython.wheel_project,
                "version": lock.cpython.wheel_version,
                "sha256": lock.wheel_for_host()?.sha256,
            },
            "cpython_members": lock.cpython.members.iter().map(|member| (member.name.clone(), member.sha256.clone())).collect::<BTreeMap<_, _>>(),
            "source_tarballs": source_tarball_inputs(lock),
            "wasi_toolchain": { "provider": fetched.wasi.provider, "clang": clang_version, "wasi_sdk_pin": lock.wasi_sdk.version },
            "static_wasi_libc": {
                "package": lock.unpacked_deb(fetch::WASI_LIBC_PACKAGE)?.file,
                "sha256": lock.unpacked_deb(fetch::WASI_LIBC_PACKAGE)?.sha256,
            },
            "guest_rust": { "version": fetched.rust.version, "target": lock.rust_guest.target, "rustflags": GUEST_RUSTFLAGS, "remapped_paths": [REMAPPED_WORKSPACE, REMAPPED_CARGO_HOME], "source_date_epoch": stamp::SOURCE_DATE_EPOCH },
        },
    });
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&path, text.as_bytes())?;
    }
    if !path.exists() {
        bail!("the manifest was not written");
    }
    Ok(path)
}
