//! CPython from pinned source: the release tarball and the C libraries its modules need
//! (`[[source-tarballs]]`), compiled here with the pinned WASI clang against the pinned
//! wasi-libc (`[[unpacked-debs]]`), into a statically linked preview1 core module,
//! `target/eryx/python-cpython.core.wasm`, and the standard library it imports,
//! `target/eryx/cpython-source/lib/python3.14/` (a host preopens it at
//! `/lib/python3.14`, where the interpreter, configured with prefix `/`, looks for it).
//! The same objects (position-independent) also make `libpython3.14.so`, the interpreter
//! the CPython variant's components link (`target/eryx/cpython-source/libpython3.14.so`).
//!
//! Cross-compiling CPython needs a Python of the same version on the build machine: it is
//! built first from the same tarball, for this machine, and used only by the build. Debian's
//! patches are not applied: the tarballs are upstream's.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::steps::{Fingerprint, Runner};
use crate::inputs::cache::{self, Cache};
use crate::inputs::fetch::Fetched;
use crate::inputs::sources::Sources;
use crate::inputs::stamp;
use crate::inputs::tarballs;
use crate::workspace::Workspace;

/// The core module, in `target/eryx/`.
pub const CORE_MODULE: &str = "python-cpython.core.wasm";
/// The standard library's folder, in `target/eryx/`: preopened at `/lib/python3.14`.
pub const STDLIB_DIR: &str = "cpython-source/lib/python3.14";

/// The C libraries, in build order, and the static library each leaves in the prefix.
const LIBRARIES: &[&str] = &["zlib", "bzip2", "xz", "mpdecimal", "sqlite", "openssl"];
/// The static libraries the prefix holds (`lib<name>.a`), as CPython's configure names them
/// (its `<NAME>_CFLAGS` and `<NAME>_LIBS`) and as its modules link them.
const PREFIX_LIBRARIES: &[(&str, &str)] = &[("ZLIB", "z"), ("BZIP2", "bz2"), ("LIBLZMA", "lzma"), ("LIBSQLITE3", "sqlite3"), ("LIBMPDEC", "mpdec")];
/// OpenSSL's crypto library, which `_hashlib` links (`hashlib.pbkdf2_hmac`, `scrypt`, and
/// OpenSSL's digests); configure finds it with `--with-openssl=<prefix>`. Its `libssl` is
/// built only because configure's OpenSSL check links it: `_ssl` needs sockets, which WASI
/// preview 1 has not, and is left out.
const OPENSSL_CRYPTO: &str = "crypto";

/// The parts of the standard library a sandboxed command never imports: CPython's own test
/// suite, the GUI toolkits and their demos, and pip's bootstrap wheels.
const STDLIB_LEFT_OUT: &[&str] = &["test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__phello__"];

/// The C stack (in linear memory) of the core module: the sandbox component's (wit-component's
/// default). CPython's recursion checks measure this stack, and the host's wasm stack must
/// outlast it: with CPython's own 16 MiB, a 1 000 000-deep `json.dumps` exhausted a 64 MiB
/// wasm stack (a trap) before the interpreter saw its limit; with 1 MiB it is a
/// `RecursionError` (command case `deep-nesting-in-json-is-a-recursion-error`).
const SHADOW_STACK_BYTES: u32 = 1 << 20;

/// The headers for native extensions, in `target/eryx/` (`python3.14/` inside).
pub const INCLUDE_DIR: &str = "cpython-source/include";

/// The interpreter as a shared library, in `target/eryx/`: what the CPython variant's
/// components link.
pub const SHARED_LIBRARY: &str = "cpython-source/libpython3.14.so";
/// Its name in the component (what the other libraries' `needed` entries name).
pub const SHARED_LIBRARY_NAME: &str = "libpython3.14.so";

/// What the stage made.
pub struct Built {
    pub core_module: PathBuf,
    pub stdlib: PathBuf,
    pub include: PathBuf,
    pub shared_library: PathBuf,
}

/// `_sysconfigdata` without the paths of this machine: the build directory as
/// `/build/cpython-source`, wasi-libc's sysroot in the cache as `/wasi-sysroot`. So the stdlib
/// is the same file in every checkout; an extension build names its own sysroot anyway.
fn without_build_paths(text: &str, build_dir: &Path, sysroot: &Path) -> String {
    text.replace(&build_dir.display().to_string(), "/build/cpython-source").replace(&sysroot.display().to_string(), "/wasi-sysroot")
}

/// Builds what is stale: the build machine's Python, the C libraries, CPython for
/// wasm32-wasip1, and the module and stdlib in `target/eryx/`.
pub fn build(workspace: &Workspace, cache: &Cache, sources: &Sources, fetched: &Fetched, clang_version: &str, runner: &mut Runner) -> Result<Built> {
    let lock = &fetched.lock;
    let artifacts = workspace.artifacts_dir();
    let build_dir = artifacts.join("build").join("cpython-source");
    fs::create_dir_all(&build_dir)?;
    let cpython_pin = lock.source_tarball("cpython")?;
    let cpython = tarballs::unpacked(cache, sources, cpython_pin)?;
    let unpacked_source = tarballs::top_folder(&cpython)?;
    let tools = Tools::new(fetched, clang_version)?;
    // The recipes are this file: a change to a flag builds again.
    let recipe = workspace.path("xtask/src/build/cpython_source.rs");
    let jobs = std::thread::available_parallelism().map_or(2, |count| count.get()).to_string();
    // Kept outside the directories a failed step removes.
    let logs = build_dir.join("logs");
    fs::create_dir_all(&logs)?;

    // 0. A copy of the source the builds may write into (the build Python drops bytecode in
    // its `Lib`): the verified tree in the cache stays as unpacked. The builds name it by a
    // relative path, `../src/<top folder>`, so no absolute path of the machine is compiled in.
    let top = unpacked_source.file_name().context("the source has a folder name")?.to_owned();
    let source_copy = build_dir.join("src");
    let source = source_copy.join(&top);
    let relative_source = Path::new("..").join("src").join(&top);
    let mut inputs = Fingerprint::default();
    inputs.text("cpython", &cpython.digest);
    runner.step("cpython-source: source tree", &inputs, &[&source_copy], || {
        cache::replace_dir_atomically(&source_copy, |staging| copy_tree(&unpacked_source, &staging.join(&top)))
    })?;

    // 1. CPython for this machine, only to run the cross build's generators.
    let native = build_dir.join("native");
    let mut inputs = Fingerprint::default();
    // Only the build runs it: compiled quickly rather than for speed.
    let (native_flags, native_opt) = (["--without-ensurepip", "--disable-test-modules"], "-O1");
    inputs.text("cpython", &cpython.digest).text("host cc", &tool_version("cc")?).text("flags", &format!("{} OPT={native_opt}", native_flags.join(" ")));
    runner.step("cpython-source: python for the build machine", &inputs, &[&native.join("python")], || {
        in_fresh_dir(&native, |build| {
            run_logged(build_command(relative_source.join("configure")).args(native_flags).env("OPT", native_opt).current_dir(build), &logs, "native configure")?;
            run_logged(build_command("make").args(["-j", &jobs, "all"]).current_dir(build), &logs, "native make")
        })
    })?;

    // 2. The C libraries, static, into one prefix.
    let prefix = build_dir.join("prefix");
    let mut inputs = Fingerprint::default();
    inputs.text("tools", &tools.describe()).text("libraries", &LIBRARIES.join(" ")).file(&recipe)?;
    let mut trees = Vec::new();
    for name in LIBRARIES {
        let tree = tarballs::unpacked(cache, sources, lock.source_tarball(name)?)?;
        inputs.text(name, &tree.digest);
        trees.push((*name, tarballs::top_folder(&tree)?));
    }
    runner.step("cpython-source: C libraries", &inputs, &[&prefix], || {
        cache::replace_dir_atomically(&prefix, |staging| {
            fs::create_dir_all(staging.join("lib"))?;
            fs::create_dir_all(staging.join("include"))?;
            let scratch = build_dir.join("libraries");
            let _ = fs::remove_dir_all(&scratch);
            for (name, tree) in &trees {
                eprintln!("      cpython-source: {name}");
                let work = scratch.join(name);
                copy_tree(tree, &work)?;
                build_library(name, &work, staging, &tools, &jobs, &logs)?;
            }
            let _ = fs::remove_dir_all(&scratch);
            Ok(())
        })
    })?;

    // 3. CPython for wasm32-wasip1: position-independent objects, linked once statically
    // (the core module) and once as a shared library (the variant's interpreter).
    let wasi_build = build_dir.join("wasi");
    let config_site = source.join("Tools/wasm/wasi/config.site-wasm32-wasi");
    let mut inputs = Fingerprint::default();
    inputs.text("cpython", &cpython.digest).text("tools", &tools.describe()).file(&native.join("python"))?.file(&recipe)?;
    inputs.tree(&prefix)?.file(&tools.builtins)?;
    let built_shared = wasi_build.join(SHARED_LIBRARY_NAME);
    runner.step("cpython-source: python for wasm32-wasip1", &inputs, &[&wasi_build.join("python.wasm"), &built_shared], || {
        in_fresh_dir(&wasi_build, |build| {
            let include = format!("-I{}", prefix.join("include").display());
            let libs = |name: &str| format!("-L{} -l{name}", prefix.join("lib").display());
            let mut configure = build_command(relative_source.join("configure"));
            configure
                .args(["--host=wasm32-wasip1", "--build=x86_64-pc-linux-gnu", "--prefix=/", "--with-system-libmpdec", "--disable-test-modules"])
                .arg(format!("--with-build-python={}", native.join("python").display()))
                .arg(format!("--with-openssl={}", prefix.display()))
                .env("py_cv_module__ssl", "n/a")
                .env("CONFIG_SITE", &config_site)
                .env("CC", tools.cc())
                .env("CPP", format!("{} -E", tools.cc()))
                .env("AR", &tools.ar)
                .env("RANLIB", &tools.ranlib)
                .env("LDFLAGS", "-Wl,--strip-debug")
                // Position-independent, so a shared library can be made of the same objects;
                // where the sources and the prefix lie is not part of the program.
                .env("CFLAGS", format!("-fPIC -ffile-prefix-map={}=/cpython -ffile-prefix-map={}=/prefix", relative_source.display(), prefix.display()))
                .env("PKG_CONFIG_PATH", "")
                .env("PKG_CONFIG_LIBDIR", build.join("no-pkg-config"))
                .current_dir(build);
            for (module, library) in PREFIX_LIBRARIES {
                configure.env(format!("{module}_CFLAGS"), &include).env(format!("{module}_LIBS"), libs(library));
            }
            run_logged(&mut configure, &logs, "wasi configure")?;
            set_shadow_stack(&build.join("Makefile"), SHADOW_STACK_BYTES)?;
            // `sys.version` names the build's date: the pinned one (clang reads
            // `SOURCE_DATE_EPOCH` for `__DATE__` and `__TIME__`; see `build_command`).
            run_logged(build_command("make").args(["-j", &jobs, "all"]).current_dir(build), &logs, "wasi make")?;
            link_shared_library(build, &prefix, &tools, &logs)
        })
    })?;

    // 4. The module and the standard library it imports.
    let core_module = artifacts.join(CORE_MODULE);
    let stdlib = artifacts.join(STDLIB_DIR);
    let mut inputs = Fingerprint::default();
    inputs.text("cpython", &cpython.digest).file(&wasi_build.join("python.wasm"))?.file(&built_shared)?.file(&recipe)?;
    inputs.text("left out", &STDLIB_LEFT_OUT.join(" ")).tree(&wasi_build.join("build"))?;
    let include = artifacts.join(INCLUDE_DIR);
    let shared_library = artifacts.join(SHARED_LIBRARY);
    runner.step("cpython-source: core module and stdlib", &inputs, &[&core_module, &shared_library, &stdlib, &include], || {
        cache::write_atomic(&core_module, &fs::read(wasi_build.join("python.wasm"))?)?;
        cache::write_atomic(&shared_library, &fs::read(&built_shared)?)?;
        fs::create_dir_all(stdlib.parent().context("the stdlib has a parent")?)?;
        cache::replace_dir_atomically(&stdlib, |staging| {
            copy_stdlib(&source.join("Lib"), staging)?;
            // The landmark of the platform-dependent half (`exec_prefix`): without it every
            // start says "Could not find platform dependent libraries". Everything is built
            // in, so it stays empty.
            fs::create_dir_all(staging.join("lib-dynload"))?;
            // The build's own configuration (`sysconfig`), which the interpreter imports.
            let build_lib = fs::read_to_string(wasi_build.join("pybuilddir.txt")).context("read pybuilddir.txt")?;
            for entry in fs::read_dir(wasi_build.join(build_lib.trim()))? {
                let path = entry?.path();
                let name = path.file_name().context("an entry has a name")?.to_string_lossy().into_owned();
                if name.starts_with("_sysconfigdata") && name.ends_with(".py") {
                    let text = fs::read_to_string(&path)?;
                    cache::write_atomic(&staging.join(&name), without_build_paths(&text, &build_dir, &tools.sysroot).as_bytes())?;
                }
            }
            Ok(())
        })?;
        // The headers a native extension compiles against: the source's and the build's
        // `pyconfig.h`.
        cache::replace_dir_atomically(&include, |staging| {
            copy_tree(&source.join("Include"), &staging.join("python3.14"))?;
            fs::copy(wasi_build.join("pyconfig.h"), staging.join("python3.14/pyconfig.h"))?;
            Ok(())
        })
    })?;
    Ok(Built { core_module, stdlib, include, shared_library })
}

/// Links `libpython3.14.so` in the configured build directory `build`: the whole of
/// `libpython3.14.a` (the interpreter and its built-in modules) with the libraries those
/// modules need (the build's own `MODLIBS`: the prefix's C libraries, HACL*, expat) and
/// compiler-rt's builtins; wasi-libc and its emulations stay imports, which the component's
/// `libc.so` and `libwasi-emulated-*.so` answer (its static `libc.a` is not position-independent).
fn link_shared_library(build: &Path, prefix: &Path, tools: &Tools, logs: &Path) -> Result<()> {
    let modlibs = build_command("make")
        .args(["--no-print-directory", "--eval=print-%: ; @echo $($*)", "print-MODLIBS"])
        .current_dir(build)
        .output()
        .context("ask the Makefile for MODLIBS")?;
    if !modlibs.status.success() {
        bail!("`make print-MODLIBS` failed in {}: {}", build.display(), String::from_utf8_lossy(&modlibs.stderr));
    }
    // libm is part of libc. Nothing else may join: the prefix's libraries (built in an earlier
    // step) and the build's own archives; never a library the linker would find elsewhere.
    let modlibs: Vec<String> = String::from_utf8(modlibs.stdout)?.split_whitespace().filter(|word| *word != "-lm").map(str::to_owned).collect();
    check_modlibs(&modlibs, prefix)?;
    let mut link = tools.clang_command();
    link.args(["-nostdlib", "-shared", "-fPIC", "-Wl,--no-entry", "-Wl,--allow-undefined", "-Wl,--strip-debug", "-Wl,-Bsymbolic"])
        .args(["-o", SHARED_LIBRARY_NAME, "-Wl,--whole-archive", "libpython3.14.a", "-Wl,--no-whole-archive"])
        .args(&modlibs)
        .arg(&tools.builtins)
        .current_dir(build);
    run_logged(&mut link, logs, "wasi link libpython3.14.so")
}

/// Refuses a word of CPython's `MODLIBS` that is not the prefix's library folder, one of
/// [`PREFIX_LIBRARIES`], OpenSSL's crypto library ([`OPENSSL_CRYPTO`]) or an archive the
/// build made in its own `Modules/`: the shared library links nothing the linker would find
/// elsewhere.
fn check_modlibs(modlibs: &[String], prefix: &Path) -> Result<()> {
    let prefix_lib = format!("-L{}", prefix.join("lib").display());
    for word in modlibs {
        let known = *word == prefix_lib
            || PREFIX_LIBRARIES.iter().map(|(_, name)| *name).chain([OPENSSL_CRYPTO]).any(|name| *word == format!("-l{name}"))
            || (word.starts_with("Modules/") && word.ends_with(".a") && !word.contains(".."));
        if !known {
            bail!("CPython's MODLIBS names `{word}`, which the shared library's recipe does not know (cpython_source.rs: PREFIX_LIBRARIES)");
        }
    }
    Ok(())
}

/// The C compiler and archivers for wasm32-wasi: the pinned WASI clang, with the pinned
/// wasi-libc's headers and libraries as its sysroot.
struct Tools {
    clang: PathBuf,
    sysroot: PathBuf,
    /// compiler-rt's builtins for wasm32 (Debian's libclang-rt-19-dev-wasm32), which the
    /// shared library links in (the core module gets them from clang itself).
    builtins: PathBuf,
    ar: PathBuf,
    ranlib: PathBuf,
    version: String,
    wasi_libc: String,
}

impl Tools {
    fn new(fetched: &Fetched, clang_version: &str) -> Result<Tools> {
        let clang = fetched.wasi.clang.clone();
        // Beside `clang-19` are `llvm-ar-19` and `llvm-ranlib-19`; beside an SDK's `clang`,
        // `llvm-ar` and `llvm-ranlib`.
        let name = clang.file_name().context("clang has a file name")?.to_string_lossy().into_owned();
        let sibling = |tool: &str| clang.with_file_name(name.replacen("clang", tool, 1));
        let (ar, ranlib) = (sibling("llvm-ar"), sibling("llvm-ranlib"));
        for tool in [&ar, &ranlib] {
            if !tool.is_file() {
                bail!("{} is missing beside {}; install the LLVM tools of the WASI toolchain (`cargo xtask doctor`)", tool.display(), clang.display());
            }
        }
        let builtins = Command::new(&clang).args(["--target=wasm32-wasi", "-print-libgcc-file-name"]).output().context("ask clang for compiler-rt's builtins")?;
        let builtins = PathBuf::from(String::from_utf8(builtins.stdout)?.trim());
        if !builtins.is_file() {
            bail!("compiler-rt's builtins for wasm32 are not at {}; install the pinned libclang-rt-19-dev-wasm32 (`cargo xtask doctor`)", builtins.display());
        }
        Ok(Tools {
            builtins,
            sysroot: fetched.wasi_libc.root.join("usr"),
            version: clang_version.to_owned(),
            wasi_libc: fetched.wasi_libc.digest.clone(),
            clang,
            ar,
            ranlib,
        })
    }

    /// clang's target, sysroot and features for wasm32-wasi: the `wasm32-wasi` triple finds
    /// wasi-libc's multiarch headers and compiler-rt's builtins where Debian keeps them. Two
    /// features of WebAssembly 2.0 that clang 19 leaves off by default (every host we run on
    /// has them): bulk memory, so `memcpy` and `memset` become `memory.copy` and
    /// `memory.fill` (the host's own loops, instead of a call into wasi-libc, which in a
    /// dynamically linked component is a call into another instance), and float-to-int
    /// conversions without a trap guard.
    fn target_args(sysroot: &Path) -> [String; 4] {
        ["--target=wasm32-wasi".to_owned(), format!("--sysroot={}", sysroot.display()), "-mbulk-memory".to_owned(), "-mnontrapping-fptoint".to_owned()]
    }

    /// `CC` for wasm32-wasi, as one word list for configure scripts and makefiles.
    fn cc(&self) -> String {
        self.cc_with_sysroot(&self.sysroot)
    }

    /// [`Tools::cc`] naming the sysroot as `sysroot` (a link to it, say).
    fn cc_with_sysroot(&self, sysroot: &Path) -> String {
        format!("{} {}", self.clang.display(), Tools::target_args(sysroot).join(" "))
    }

    /// clang for wasm32-wasi, run by the build itself.
    fn clang_command(&self) -> Command {
        let mut command = build_command(&self.clang);
        command.args(Tools::target_args(&self.sysroot));
        command
    }

    fn describe(&self) -> String {
        format!("{}; wasi-libc {}", self.version, self.wasi_libc)
    }
}

/// The flags every C library is compiled with: optimised, position-independent (so a shared
/// libpython can take them later), with wasi-libc's emulations CPython links anyway.
const LIBRARY_CFLAGS: &str = "-O2 -fPIC -D_WASI_EMULATED_SIGNAL -D_WASI_EMULATED_MMAN -D_WASI_EMULATED_GETPID -D_WASI_EMULATED_PROCESS_CLOCKS";

/// OpenSSL's build target for wasm32-wasi (a `Configure --config` file; the compiler and its
/// flags come from `CC` and `CFLAGS`).
const OPENSSL_TARGET: &str = r#"my %targets = (
    "eryx-wasm32-wasi" => {
        inherit_from => [ "BASE_unix" ],
        bn_ops => "BN_LLONG RC4_CHAR",
        thread_scheme => "pthreads",
        dso_scheme => "none",
    },
);
"#;

/// OpenSSL's features for the sandbox: see the recipe in [`build_library`].
const OPENSSL_OPTIONS: &[&str] = &[
    "no-asm",
    "no-shared",
    "no-module",
    "no-dso",
    "no-engine",
    "no-sock",
    "no-ui-console",
    "no-afalgeng",
    "no-async",
    "no-secure-memory",
    "no-autoload-config",
    // Its own thread pool (and QUIC, which uses it) starts threads, which a single-threaded
    // wasi-libc cannot.
    "no-thread-pool",
    "no-quic",
    "no-tests",
    "no-apps",
    "no-docs",
    // What CPython's `_hashlib` never reaches (it asks for digests, HMAC, PBKDF2 and scrypt;
    // `_ssl` is not built): the default provider registers every algorithm it is built with,
    // so each one left in is linked into libpython. Without these a static PBKDF2 program is
    // 1.5 MB instead of 2.6 MB (the step that builds the C libraries took 190 s against 217 s
    // in one measurement on two cores).
    "no-cms", "no-ocsp", "no-ts", "no-ct", "no-cmp", "no-srp", "no-http", "no-srtp", "no-comp", "no-rfc3779",
    "no-ec", "no-dh", "no-dsa", "no-sm2", "no-ml-dsa", "no-ml-kem", "no-slh-dsa",
    "no-sm4", "no-gost", "no-idea", "no-seed", "no-rc2", "no-rc4", "no-rc5", "no-bf", "no-cast",
    "no-camellia", "no-aria", "no-des", "no-mdc2", "no-siv", "no-ocb",
];

/// Builds one C library in `work` (a copy of its source) and installs its static library and
/// headers into `prefix`.
fn build_library(name: &str, work: &Path, prefix: &Path, tools: &Tools, jobs: &str, logs: &Path) -> Result<()> {
    let cc = tools.cc();
    let logged = |command: &mut Command, what: &str| run_logged(command, logs, &format!("{name} {what}"));
    let make = |arguments: &[&str]| -> Result<()> {
        let mut command = build_command("make");
        command.args(["-j", jobs]).args(arguments).current_dir(work);
        logged(&mut command, "make")
    };
    let autoconf = |extra: &[&str]| -> Result<()> {
        let mut configure = build_command(work.join("configure"));
        configure
            .args(["--host=wasm32-wasi", "--disable-shared", "--enable-static"])
            .arg(format!("--prefix={}", prefix.display()))
            .args(extra)
            .env("CC", &cc)
            .env("AR", &tools.ar)
            .env("RANLIB", &tools.ranlib)
            .env("CFLAGS", LIBRARY_CFLAGS)
            .current_dir(work);
        logged(&mut configure, "configure")
    };
    let install = |files: &[(&str, &str)]| -> Result<()> {
        for (from, to) in files {
            fs::copy(work.join(from), prefix.join(to)).with_context(|| format!("install {name}'s {from}"))?;
        }
        Ok(())
    };
    match name {
        "zlib" => {
            let mut configure = build_command(work.join("configure"));
            configure
                .arg("--static")
                .arg(format!("--prefix={}", prefix.display()))
                .env("CC", &cc)
                .env("AR", &tools.ar)
                .env("RANLIB", &tools.ranlib)
                .env("CFLAGS", LIBRARY_CFLAGS)
                .env("CHOST", "wasm32")
                .current_dir(work);
            logged(&mut configure, "configure")?;
            make(&["libz.a"])?;
            install(&[("libz.a", "lib/libz.a"), ("zlib.h", "include/zlib.h"), ("zconf.h", "include/zconf.h")])
        }
        "bzip2" => {
            let cc = format!("CC={cc}");
            let flags = format!("CFLAGS={LIBRARY_CFLAGS} -D_FILE_OFFSET_BITS=64");
            let (ar, ranlib) = (format!("AR={}", tools.ar.display()), format!("RANLIB={}", tools.ranlib.display()));
            make(&["libbz2.a", &cc, &flags, &ar, &ranlib])?;
            install(&[("libbz2.a", "lib/libbz2.a"), ("bzlib.h", "include/bzlib.h")])
        }
        "xz" => {
            autoconf(&[
                "--disable-threads",
                "--disable-xz",
                "--disable-xzdec",
                "--disable-lzmadec",
                "--disable-lzmainfo",
                "--disable-lzma-links",
                "--disable-scripts",
                "--disable-doc",
                "--disable-nls",
            ])?;
            let mut command = build_command("make");
            command.args(["-j", jobs, "-C", "src/liblzma", "install"]).current_dir(work);
            logged(&mut command, "make install")
        }
        "mpdecimal" => {
            autoconf(&["--disable-cxx"])?;
            make(&[])?;
            install(&[("libmpdec/libmpdec.a", "lib/libmpdec.a"), ("libmpdec/mpdecimal.h", "include/mpdecimal.h")])
        }
        "sqlite" => {
            // The amalgamation is generated by the source tree's own tools, built for this
            // machine; it is then compiled alone for wasm32-wasi, without threads, WAL
            // (shared memory) or loadable extensions, which WASI has not.
            let generate = work.join("generate");
            fs::create_dir_all(&generate)?;
            logged(build_command(work.join("configure")).current_dir(&generate), "configure (amalgamation)")?;
            logged(build_command("make").arg("sqlite3.c").current_dir(&generate), "make sqlite3.c")?;
            let object = work.join("sqlite3.o");
            let mut compile = tools.clang_command();
            compile
                .args(LIBRARY_CFLAGS.split(' '))
                .args(["-DSQLITE_THREADSAFE=0", "-DSQLITE_OMIT_LOAD_EXTENSION", "-DSQLITE_OMIT_WAL", "-DSQLITE_OMIT_SHARED_CACHE", "-c"])
                .arg(generate.join("sqlite3.c"))
                .arg("-o")
                .arg(&object)
                .current_dir(work);
            logged(&mut compile, "compile sqlite3.c")?;
            let mut archive = build_command(&tools.ar);
            archive.arg("rcsD").arg(prefix.join("lib/libsqlite3.a")).arg(&object).current_dir(work);
            logged(&mut archive, "llvm-ar")?;
            fs::copy(generate.join("sqlite3.h"), prefix.join("include/sqlite3.h"))?;
            Ok(())
        }
        "openssl" => {
            // A target of our own (OpenSSL knows none for WASI): 32-bit C, no assembly, POSIX
            // threads, which wasi-libc answers single-threaded (CPython's `_hashlib` requires
            // an OpenSSL built with locking; nothing starts a thread). Nothing that needs what
            // WASI preview 1 has not (sockets, `dlopen`, a terminal, `mmap`'s secure heap), no
            // configuration file read at start, no engines or loadable providers.
            fs::write(work.join("eryx-wasm32-wasi.conf"), OPENSSL_TARGET)?;
            // `compiler_flags` (`OpenSSL_version`) holds the compile command: the sysroot is
            // named by a relative link, so no path of this machine is compiled in.
            std::os::unix::fs::symlink(&tools.sysroot, work.join("wasi-sysroot")).context("link the sysroot into OpenSSL's tree")?;
            let mut configure = build_command("perl");
            configure
                .args(["Configure", "--config=eryx-wasm32-wasi.conf", "eryx-wasm32-wasi"])
                .args(OPENSSL_OPTIONS)
                .env("CC", tools.cc_with_sysroot(Path::new("wasi-sysroot")))
                .env("AR", &tools.ar)
                .env("RANLIB", &tools.ranlib)
                .env("CFLAGS", LIBRARY_CFLAGS)
                .current_dir(work);
            logged(&mut configure, "configure")?;
            make(&["build_generated"])?;
            make(&["libcrypto.a", "libssl.a"])?;
            install(&[("libcrypto.a", "lib/libcrypto.a"), ("libssl.a", "lib/libssl.a")])?;
            copy_tree(&work.join("include/openssl"), &prefix.join("include/openssl"))
        }
        other => bail!("no recipe for the C library `{other}`"),
    }
}

/// Sets the stack size CPython's configure chose for WASI (`-z stack-size=N` in the
/// Makefile's link flags) to `bytes`; an upstream that no longer sets one exactly once is an
/// error, not a silent default.
fn set_shadow_stack(makefile: &Path, bytes: u32) -> Result<()> {
    let text = fs::read_to_string(makefile).with_context(|| format!("read {}", makefile.display()))?;
    let lines: Vec<&str> = text.lines().filter(|line| line.starts_with("CONFIGURE_LDFLAGS_NODIST=")).collect();
    let [line] = lines[..] else { bail!("{} has {} CONFIGURE_LDFLAGS_NODIST lines, not one", makefile.display(), lines.len()) };
    let flags: Vec<&str> = line.split_whitespace().collect();
    let Some(position) = flags.windows(2).position(|pair| pair[0] == "-z" && pair[1].starts_with("stack-size=")) else {
        bail!("CPython's configure set no `-z stack-size=` for WASI ({line}); the recipe in cpython_source.rs needs a look");
    };
    let old = format!("-z {}", flags[position + 1]);
    let replaced = line.replacen(&old, &format!("-z stack-size={bytes}"), 1);
    cache::write_atomic(makefile, text.replacen(line, &replaced, 1).as_bytes())
}

/// Runs `command` with its output in `<logs>/<what>.log`; a failure names the log and prints
/// its last lines.
fn run_logged(command: &mut Command, logs: &Path, what: &str) -> Result<()> {
    let log_path = logs.join(format!("{}.log", what.replace([' ', '(', ')', '.'], "-")));
    let log = fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    let status = command
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("run {what} ({:?})", command.get_program()))?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        // One write: another thread's lines (the guest build beside it) stay out of it.
        let shown: String = tail.iter().rev().map(|line| format!("    | {what}: {line}\n")).collect();
        eprint!("{shown}");
        bail!("{what} failed ({status}); its whole output is in {}", log_path.display());
    }
    Ok(())
}

/// Builds in `directory`, emptied first, where it stays: configure records its build
/// directory (in `_sysconfigdata`, in the build Python), so it is built under its own name.
/// What an interrupted build leaves there is never trusted: the step's record is removed
/// before it runs and written only after it succeeded (`steps.rs`), so it runs again.
fn in_fresh_dir(directory: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if directory.exists() {
        fs::remove_dir_all(directory).with_context(|| format!("remove the old {}", directory.display()))?;
    }
    fs::create_dir_all(directory)?;
    fill(directory)
}

/// A build command with none of the caller's environment but `PATH` (a `CFLAGS`, `LIBS`,
/// `CONFIG_SITE` or `MAKEFLAGS` of the shell would change what is built without changing a
/// fingerprint), in the C locale and UTC, at the pinned date, writing no bytecode.
fn build_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", stamp::SOURCE_DATE_EPOCH.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

fn tool_version(tool: &str) -> Result<String> {
    let output = Command::new(tool).arg("--version").output().with_context(|| format!("run {tool} --version (install build-essential)"))?;
    Ok(String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_owned())
}

/// Copies a source tree (the library builds write into theirs), every entry dated at the
/// pinned stamp: the unpacked tree keeps no order of modification times, and autotools'
/// makefiles would take a `configure.ac` that looks newer than `aclocal.m4` for an edit and
/// regenerate the build system.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to.parent().context("a tree has a parent")?)?;
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().context("run cp")?;
    if !status.success() {
        bail!("cp -a {} {} failed ({status})", from.display(), to.display());
    }
    let date = format!("@{}", stamp::SOURCE_DATE_EPOCH);
    let status = Command::new("find").arg(to).args(["-exec", "touch", "-h", "-d", &date, "{}", "+"]).status().context("run find")?;
    if !status.success() {
        bail!("dating the files of {} failed ({status})", to.display());
    }
    Ok(())
}

/// The standard library's `.py` files and data, without [`STDLIB_LEFT_OUT`] and without any
/// `__pycache__` (bytecode is compiled afresh from the sources), in `to`.
pub fn copy_stdlib(from: &Path, to: &Path) -> Result<()> {
    fn walk(from: &Path, to: &Path, top: bool) -> Result<()> {
        fs::create_dir_all(to)?;
        let mut entries: Vec<_> = fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name_text = name.to_string_lossy();
            if (top && STDLIB_LEFT_OUT.contains(&name_text.as_ref())) || name_text == "__pycache__" {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path(), &to.join(&name), false)?;
            } else if kind.is_file() {
                fs::copy(entry.path(), to.join(&name))?;
            }
        }
        Ok(())
    }
    walk(from, to, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modlibs_word_the_recipe_does_not_know_is_refused() {
        let prefix = Path::new("/b/prefix");
        let words = |list: &[&str]| list.iter().map(|word| word.to_string()).collect::<Vec<_>>();
        check_modlibs(&words(&["-L/b/prefix/lib", "-lz", "-lsqlite3", "-lcrypto", "Modules/expat/libexpat.a"]), prefix).unwrap();
        for hostile in ["-lssl", "-L/usr/lib/wasm32-wasi", "/usr/lib/wasm32-wasi/libc.a", "Modules/../../libc.a", "-Wl,--export-all", "-lz.a"] {
            let error = check_modlibs(&words(&["-lz", hostile]), prefix).unwrap_err().to_string();
            assert!(error.contains(hostile), "{hostile}: {error}");
        }
    }

    /// Bytecode a run wrote into the source stdlib (a writable preopen) never reaches the
    /// shipped one: the copy drops every `__pycache__`, at any depth, and keeps the rest.
    #[test]
    fn bytecode_written_into_the_source_stdlib_is_not_copied() {
        let directory = tempfile::tempdir().unwrap();
        let (root, copy) = (directory.path().join("lib"), directory.path().join("copy"));
        for folder in ["__pycache__", "json/__pycache__", "json/nested", "lib-dynload"] {
            fs::create_dir_all(root.join(folder)).unwrap();
        }
        for file in ["os.py", "__pycache__/os.cpython-314.pyc", "json/__init__.py", "json/__pycache__/__init__.cpython-314.pyc", "json/nested/x.py"] {
            fs::write(root.join(file), b"x").unwrap();
        }
        copy_stdlib(&root, &copy).unwrap();
        assert!(!copy.join("__pycache__").exists() && !copy.join("json/__pycache__").exists());
        assert!(copy.join("os.py").is_file() && copy.join("json/__init__.py").is_file() && copy.join("json/nested/x.py").is_file());
        assert!(copy.join("lib-dynload").is_dir());
    }

    #[test]
    fn sysconfig_data_names_no_path_of_the_machine() {
        let build = Path::new("/home/someone/eryx/target/eryx/build/cpython-source");
        let sysroot = Path::new("/home/someone/.cache/eryx/unpacked/ab12/root/usr");
        let text = "{'abs_builddir': '/home/someone/eryx/target/eryx/build/cpython-source/wasi', \
                    'LIBS': '-L/home/someone/eryx/target/eryx/build/cpython-source/prefix/lib -lz', \
                    'CC': '/usr/bin/clang-19 --sysroot=/home/someone/.cache/eryx/unpacked/ab12/root/usr', \
                    'srcdir': '/home/someone/eryx/target/eryx/build/cpython-source/wasi/../src'}";
        let clean = without_build_paths(text, build, sysroot);
        assert_eq!(
            clean,
            "{'abs_builddir': '/build/cpython-source/wasi', 'LIBS': '-L/build/cpython-source/prefix/lib -lz', \
             'CC': '/usr/bin/clang-19 --sysroot=/wasi-sysroot', 'srcdir': '/build/cpython-source/wasi/../src'}"
        );
        assert!(!clean.contains("/home/someone"));
    }
}
