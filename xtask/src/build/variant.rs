//! The guests, as data. A variant names its guest crate, the C stubs it needs, the
//! libraries that join its link and whether its interpreter is CPython built from source (whose
//! standard library it mounts); one pipeline (`build_runtime`) builds any of them.

pub struct Variant {
    pub name: &'static str,
    /// The guest crate, a member of the guest workspace (`crates/Cargo.toml`).
    pub guest_package: &'static str,
    /// The directories and files whose contents decide whether the staticlib is rebuilt.
    pub guest_sources: &'static [&'static str],
    /// Environment for the guest's cargo build (compile-time settings of its dependencies).
    pub guest_build_env: &'static [(&'static str, &'static str)],
    /// C sources compiled with the WASI clang and linked into the runtime library.
    pub c_stubs: &'static [&'static str],
    /// Symbols the stubs define for the pinned libraries; the runtime library exports them
    /// (besides what the bindings import) and nothing else.
    pub stub_exports: &'static [&'static str],
    /// The shared library the guest becomes; also the wit-dylib interpreter name.
    pub runtime_library: &'static str,
    /// Whether the variant is CPython built here from pinned source
    /// (`build/cpython_source.rs`): its `libpython3.14.so` joins the component after the
    /// pinned C runtime, and the host mounts its stdlib read-only at `/python-stdlib`.
    pub cpython_from_source: bool,
    /// The sandbox component: pre-initialised, the default artifact. The linked component
    /// before pre-initialisation is [`Variant::plain_component`], its precompiled form
    /// [`Variant::precompiled`].
    pub component: &'static str,
    /// What the pre-initialisation imports, so no sandbox pays for it.
    pub preinit_imports: &'static [&'static str],
    /// The shadow stack (in linear memory) the component's linker gives the guest: where the
    /// interpreter's Rust or C frames live. Deep recursion past it corrupts memory below it
    /// or traps, so it must hold what the interpreter's own depth limits allow.
    pub shadow_stack_bytes: u32,
    /// The same interpreter as a plain WASI program.
    pub command: CommandForm,
    /// The command as a preview1 core module (`wasm32-wasip1`, exporting `_start`): the guest
    /// staticlib and the stubs statically linked with the pinned wasi-libc, for hosts that
    /// load no components (Node's `node:wasi`, browser shims). Only a guest whose staticlib
    /// holds the whole interpreter has one (CPython's is made by `cpython_source.rs`).
    pub core_module: Option<&'static str>,
}

/// The command form of a variant: `python-<variant>.wasm`, a `wasi:cli/command` component
/// whose `run` is the interpreter's own `main`. It links the variant's pinned libraries and
/// stubs like the sandbox does, plus an entry library that defines `_start`.
pub struct CommandForm {
    pub component: &'static str,
    /// The shared library that defines `_start`.
    pub library: &'static str,
    /// C sources of the entry library, besides the variant's stubs.
    pub c_sources: &'static [&'static str],
    /// Whether the guest staticlib joins the entry library (RustPython's `_start` is in it).
    pub uses_staticlib: bool,
    /// What the entry library exports, besides the stubs' exports.
    pub exports: &'static [&'static str],
}

/// The pinned libraries every variant links first: wasi-libc and its emulations.
pub const WASI_LIBRARIES: &[&str] = &[
    "libwasi-emulated-mman.so",
    "libwasi-emulated-process-clocks.so",
    "libwasi-emulated-getpid.so",
    "libwasi-emulated-signal.so",
    "libc.so",
];

/// The modules both variants import at pre-initialisation: what snippets use most.
const PREINIT_IMPORTS: &[&str] = &[
    "asyncio", "collections", "dataclasses", "datetime", "decimal", "functools", "io", "itertools", "json", "math",
    "pickle", "random", "re", "traceback", "typing",
];

const ABI_SOURCES: &str = "crates/eryx-guest-abi";
/// `_start`, `exit` and `_exit` of both command components: `exit` and `_exit` carry a failing
/// status out through `wasi:cli/exit`'s `exit-with-code` (they replace libc's: the entry
/// library links first).
const COMMAND_ENTRY: &str = "crates/eryx-guest-abi/command_entry.c";
/// The guests' own cargo workspace (see its comment for why it is `crates/`).
pub const GUEST_WORKSPACE_MANIFEST: &str = "crates/Cargo.toml";
const GUEST_LOCK: &str = "crates/Cargo.lock";

pub const CPYTHON: Variant = Variant {
    name: "cpython",
    guest_package: "eryx-wasm-runtime",
    guest_sources: &[ABI_SOURCES, GUEST_WORKSPACE_MANIFEST, GUEST_LOCK, "crates/eryx-wasm-runtime"],
    guest_build_env: &[],
    // CPython built here against the pinned wasi-libc's headers needs none (it reads the CPU
    // clocks through the emulation library).
    c_stubs: &[],
    stub_exports: &[],
    runtime_library: "liberyx_runtime.so",
    cpython_from_source: true,
    component: "runtime-cpython.wasm",
    preinit_imports: PREINIT_IMPORTS,
    // wit-component's default. CPython's recursion checks keep its C frames within it (deep
    // nesting in its decoders ends in `RecursionError`; conformance `errors.toml`).
    shadow_stack_bytes: 1 << 20,
    // CPython's own `Py_BytesMain`, called by wasi-libc's `__main_void` with the arguments.
    command: CommandForm {
        component: "python-cpython.wasm",
        library: "libpython_main.so",
        c_sources: &["crates/eryx-wasm-runtime/python_main.c", COMMAND_ENTRY],
        uses_staticlib: false,
        exports: &["_start", "__main_argc_argv", "exit", "_exit"],
    },
    core_module: None,
};

/// RustPython as a library, its stdlib frozen in: nothing to mount, no libpython, no C++.
pub const RUSTPYTHON: Variant = Variant {
    name: "rustpython",
    guest_package: "eryx-rustpython-runtime",
    guest_sources: &[ABI_SOURCES, GUEST_WORKSPACE_MANIFEST, GUEST_LOCK, "crates/eryx-rustpython-runtime"],
    // rustpython-pylib's `LIB_PATH` (the stdlib directory RustPython reports) is its crate's
    // absolute source path, which differs per machine and between registry and vendored
    // builds; the crate reads an override (`win_lib_path`, meant for Windows checkouts) at
    // compile time. Give it the remapped path every other registry source gets.
    guest_build_env: &[("win_lib_path", "/crates/rustpython-pylib-0.6.0/Lib")],
    c_stubs: &["crates/eryx-rustpython-runtime/signal_stubs.c"],
    // Used by the runtime library itself; no other library needs it.
    stub_exports: &[],
    runtime_library: "liberyx_rustpython.so",
    cpython_from_source: false,
    component: "runtime-rustpython.wasm",
    preinit_imports: PREINIT_IMPORTS,
    // RustPython's depth limits (marshal's 2000 levels, the recursion limit) count levels,
    // not bytes, and its Rust frames are large: with 1 MiB, `marshal.loads` of nested lists
    // overflowed at about 1 600 levels (some 650 bytes a level), inside its own limit. 4 MiB
    // holds the 2000 with room (conformance `errors.toml`).
    shadow_stack_bytes: 4 << 20,
    // RustPython's own command line (`rustpython::run`), from the guest staticlib.
    command: CommandForm {
        component: "python-rustpython.wasm",
        library: "liberyx_rustpython_main.so",
        c_sources: &[COMMAND_ENTRY],
        uses_staticlib: true,
        exports: &["_start", "__main_argc_argv", "exit", "_exit"],
    },
    core_module: Some("python-rustpython.core.wasm"),
};

pub const ALL: &[Variant] = &[CPYTHON, RUSTPYTHON];

pub fn by_name(name: &str) -> anyhow::Result<&'static Variant> {
    ALL.iter().find(|variant| variant.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown variant `{name}`; known: {}",
            ALL.iter().map(|variant| variant.name).collect::<Vec<_>>().join(", ")
        )
    })
}

impl Variant {
    /// Every pinned library of the component, in link-priority order: the C runtime, the same
    /// for every variant (the CPython variant's interpreter, built here, joins after it).
    pub fn pinned_libraries(&self) -> Vec<&'static str> {
        WASI_LIBRARIES.to_vec()
    }

    /// The sandbox component as linked, before pre-initialisation.
    pub fn plain_component(&self) -> String {
        self.component.replace(".wasm", ".plain.wasm")
    }

    /// The pre-initialised component compiled for the portable CPU baseline.
    pub fn precompiled(&self) -> String {
        self.component.replace(".wasm", ".cwasm")
    }

    /// The staticlib cargo produces for the guest crate.
    pub fn staticlib_name(&self) -> String {
        format!("lib{}.a", self.guest_package.replace('-', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
    }

    #[test]
    fn every_variant_names_what_exists() {
        let guest_workspace = std::fs::read_to_string(root().join(GUEST_WORKSPACE_MANIFEST)).unwrap();
        let lock = crate::inputs::lock::Lock::load(&root().join("toolchains.lock")).unwrap();
        let pinned: Vec<&str> = lock.cpython.members.iter().map(|member| member.name.as_str()).collect();
        for variant in ALL {
            for path in variant.guest_sources.iter().chain(variant.c_stubs).chain(variant.command.c_sources) {
                assert!(root().join(path).exists(), "{}: {path} does not exist", variant.name);
            }
            let crate_dir = variant.guest_sources.last().unwrap();
            let manifest = std::fs::read_to_string(root().join(crate_dir).join("Cargo.toml")).unwrap();
            assert!(manifest.contains(&format!("name = \"{}\"", variant.guest_package)), "{}", variant.name);
            // Cargo hashes a member's path relative to the workspace root only when the member
            // lies below it; otherwise the absolute checkout path reaches the guest's bytes.
            let workspace_dir = std::path::Path::new(GUEST_WORKSPACE_MANIFEST).parent().unwrap();
            let relative = std::path::Path::new(crate_dir).strip_prefix(workspace_dir);
            assert!(relative.is_ok(), "{crate_dir} is not below the guest workspace {}", workspace_dir.display());
            let member = format!("\"{}\"", relative.unwrap().display());
            assert!(guest_workspace.contains(&member), "{} is not a guest workspace member", variant.guest_package);
            for library in variant.pinned_libraries() {
                assert!(pinned.contains(&library), "{}: {library} is not a member pinned in toolchains.lock", variant.name);
            }
        }
        // A build-env path naming a crate version names the locked one.
        let guest_lock = std::fs::read_to_string(root().join(GUEST_LOCK)).unwrap();
        for variant in ALL {
            for (key, value) in variant.guest_build_env {
                if let Some(crate_dir) = value.strip_prefix("/crates/").and_then(|rest| rest.split('/').next()) {
                    let (name, version) = crate_dir.rsplit_once('-').unwrap();
                    let locked = format!("name = \"{name}\"\nversion = \"{version}\"\n");
                    assert!(guest_lock.contains(&locked), "{}: {key} names {crate_dir}, which crates/Cargo.lock does not lock", variant.name);
                }
            }
        }
        let names: std::collections::BTreeSet<_> = ALL.iter().map(|variant| variant.name).collect();
        assert_eq!(names.len(), ALL.len(), "variant names must be unique");
        let unknown = by_name("pypy").err().expect("pypy is not a variant").to_string();
        assert!(unknown.contains("known: cpython, rustpython"), "{unknown}");
    }
}
