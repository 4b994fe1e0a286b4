//! The guests, as data. A variant names its guest crate, the C stubs it needs, the pinned
//! libraries that join its link and whether it mounts the CPython standard library; one
//! pipeline (`build_runtime`) builds any of them.

pub struct Variant {
    pub name: &'static str,
    /// The guest crate in `crates/guest-workspace`.
    pub guest_package: &'static str,
    /// The directories whose contents decide whether the staticlib is rebuilt.
    pub guest_sources: &'static [&'static str],
    /// C sources compiled with the WASI clang and linked into the runtime library.
    pub c_stubs: &'static [&'static str],
    /// The shared library the guest becomes; also the wit-dylib interpreter name.
    pub runtime_library: &'static str,
    /// Pinned CPython-set members that join the component, in link-priority order.
    pub pinned_libraries: &'static [&'static str],
    /// Whether the host mounts the CPython stdlib read-only at `/python-stdlib`.
    pub mounts_stdlib: bool,
    pub component: &'static str,
}

const ABI_SOURCES: &str = "crates/eryx-guest-abi";
const GUEST_WORKSPACE: &str = "crates/guest-workspace";

pub const CPYTHON: Variant = Variant {
    name: "cpython",
    guest_package: "eryx-wasm-runtime",
    guest_sources: &[ABI_SOURCES, GUEST_WORKSPACE, "crates/eryx-wasm-runtime"],
    c_stubs: &["crates/eryx-wasm-runtime/clock_stubs.c"],
    runtime_library: "liberyx_runtime.so",
    pinned_libraries: &[
        "libwasi-emulated-mman.so",
        "libwasi-emulated-process-clocks.so",
        "libwasi-emulated-getpid.so",
        "libwasi-emulated-signal.so",
        "libc.so",
        "libc++abi.so",
        "libc++.so",
        "libpython3.14.so",
    ],
    mounts_stdlib: true,
    component: "runtime-cpython.wasm",
};

pub const ALL: &[Variant] = &[CPYTHON];

pub fn by_name(name: &str) -> anyhow::Result<&'static Variant> {
    ALL.iter().find(|variant| variant.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown variant `{name}`; known: {}",
            ALL.iter().map(|variant| variant.name).collect::<Vec<_>>().join(", ")
        )
    })
}

impl Variant {
    /// The staticlib cargo produces for the guest crate.
    pub fn staticlib_name(&self) -> String {
        format!("lib{}.a", self.guest_package.replace('-', "_"))
    }
}
