//! The RustPython backend of the eryx guest.
//!
//! RustPython is embedded as a library, its standard library frozen into the binary. The
//! wit-dylib ABI layer (`eryx-guest-abi`) calls [`RustPython`] for each export; like the
//! CPython backend, it runs the shared Python half (`eryx_guest_abi::python_runtime`) in a
//! module of its own, gives that module the four host functions, and only converts values
//! on the way in and out.

// `ExitCode::exit_process`, to end the command with the interpreter's exit status. The guests
// build with a toolchain that allows it (a nightly, or Debian's rustc with RUSTC_BOOTSTRAP=1).
#![feature(exitcode_exit_method)]

use std::io::IsTerminal;

use eryx_guest_abi::{calls, python_runtime, Backend, ExecuteOptions, StateSnapshot};
use rustpython::vm::builtins::{PyBytes, PyDictRef, PyStr, PyStrRef, PyTuple};
use rustpython::vm::scope::Scope;
use rustpython::vm::{PyObjectRef, PyResult, Settings, VirtualMachine};
use rustpython::{Interpreter, InterpreterBuilder, InterpreterBuilderExt};

eryx_guest_abi::export_backend!(RustPython::start);

/// The RustPython interpreter with the runtime helper loaded.
pub struct RustPython {
    interpreter: Interpreter,
    /// The namespace of the helper module (`_eryx_runtime`).
    helper: PyDictRef,
}

impl RustPython {
    fn start() -> Self {
        let mut settings = Settings::default();
        // The sandbox has no site-packages, never writes bytecode and has no signals.
        settings.import_site = false;
        settings.write_bytecode = false;
        settings.install_signal_handlers = false;
        settings.safe_path = true;
        let interpreter = InterpreterBuilder::new().settings(settings).init_stdlib().interpreter();
        let helper = interpreter.enter(|vm| load_helper(vm).map_err(|error| describe(vm, error)));
        match helper {
            Ok(helper) => RustPython { interpreter, helper },
            // Without the helper no export can do anything; trap with the reason.
            Err(error) => panic!("starting RustPython failed: {error}"),
        }
    }

    /// Calls the helper's `name` with `arguments` and converts the result. The helper
    /// reports the user's failures as values; an exception escaping it is a runtime bug,
    /// which comes back as its traceback.
    fn call<T>(
        &self,
        name: &str,
        arguments: impl FnOnce(&VirtualMachine) -> Vec<PyObjectRef>,
        convert: impl FnOnce(&VirtualMachine, PyObjectRef) -> Result<T, String>,
    ) -> Result<T, String> {
        self.interpreter.enter(|vm| {
            let result = self
                .helper
                .get_item(name, vm)
                .and_then(|function| function.call(arguments(vm), vm))
                .map_err(|error| describe(vm, error))?;
            convert(vm, result)
        })
    }
}

impl Backend for RustPython {
    fn execute(&mut self, code: &str, options: &ExecuteOptions) -> Result<(), String> {
        let code = code.to_owned();
        let trace = options.trace;
        // The outer `?` turns a failure of the runtime itself into an error too.
        self.call(
            "execute",
            |vm| vec![vm.ctx.new_str(code).into(), vm.ctx.new_bool(trace).into()],
            |vm, error| Ok(if vm.is_none(&error) { Ok(()) } else { Err(text(&error)?) }),
        )?
    }

    fn snapshot_state(&mut self) -> Result<StateSnapshot, String> {
        self.call(
            "snapshot",
            |_| Vec::new(),
            |vm, result| {
                let [data, skipped, error] = items(&result)?;
                if !vm.is_none(&error) {
                    return Err(text(&error)?);
                }
                let bytes = data.downcast_ref::<PyBytes>().ok_or("snapshot did not return bytes")?;
                Ok(StateSnapshot { data: bytes.as_bytes().to_vec(), skipped: strings(&skipped)? })
            },
        )
    }

    fn restore_state(&mut self, data: &[u8]) -> Result<Vec<String>, String> {
        let data = data.to_vec();
        self.call(
            "restore",
            |vm| vec![vm.ctx.new_bytes(data).into()],
            |vm, result| {
                let [not_restored, error] = items(&result)?;
                if vm.is_none(&error) {
                    strings(&not_restored)
                } else {
                    Err(text(&error)?)
                }
            },
        )
    }

    fn renew_after_snapshot(&mut self) {
        // RustPython's generators (`random.Random()` without a seed, among others) draw their
        // seeds from `rand`'s thread generator, a user-space generator seeded once from WASI
        // randomness. A pre-initialised instance holds the state it had in the snapshot, the
        // same in every sandbox: seed it again from this sandbox's WASI randomness.
        if let Err(error) = rand::rng().reseed() {
            panic!("reseeding the random generator from WASI failed: {error}");
        }
    }

    fn clear_state(&mut self) -> Result<(), String> {
        self.call("clear", |_| Vec::new(), |vm, error| if vm.is_none(&error) { Ok(()) } else { Err(text(&error)?) })
    }
}

/// Creates `_eryx_runtime`, gives it the host functions and runs the Python half in it.
fn load_helper(vm: &VirtualMachine) -> PyResult<PyDictRef> {
    // The user's namespace is `__main__`, as in CPython; an embedded interpreter starts
    // without one.
    vm.ensure_main_module()?;
    let namespace = vm.ctx.new_dict();
    let module = vm.new_module(python_runtime::MODULE, namespace.clone(), None);
    vm.sys_module.get_attr("modules", vm)?.set_item(python_runtime::MODULE, module.into(), vm)?;
    namespace.set_item("_host_invoke", vm.new_function("_host_invoke", host_invoke).into(), vm)?;
    namespace.set_item("_host_start", vm.new_function("_host_start", host_start).into(), vm)?;
    namespace.set_item("_host_timer", vm.new_function("_host_timer", host_timer).into(), vm)?;
    namespace.set_item("_host_wait", vm.new_function("_host_wait", host_wait).into(), vm)?;
    namespace.set_item("_host_cancel", vm.new_function("_host_cancel", calls::cancel).into(), vm)?;
    namespace.set_item(
        "_host_list_callbacks",
        vm.new_function("_host_list_callbacks", host_list_callbacks).into(),
        vm,
    )?;
    namespace.set_item(
        "_host_report_trace",
        vm.new_function("_host_report_trace", host_report_trace).into(),
        vm,
    )?;
    namespace.set_item(
        "_host_finish_preinit",
        vm.new_function("_host_finish_preinit", eryx_guest_abi::finish_preinit).into(),
        vm,
    )?;
    let scope = Scope::with_builtins(None, namespace.clone(), vm);
    vm.run_string(scope, python_runtime::SOURCE, python_runtime::FILENAME)?;
    Ok(namespace)
}

/// The `(handle, ok, text)` the Python half gets for a call (see `eryx_guest_abi::calls`).
fn call_state((handle, ok, text): (u32, bool, String), vm: &VirtualMachine) -> PyObjectRef {
    vm.ctx.new_tuple(vec![vm.ctx.new_int(handle).into(), vm.ctx.new_bool(ok).into(), vm.ctx.new_str(text).into()]).into()
}

/// `_host_invoke(name, arguments_json) -> (handle, ok, text)`: calls and waits.
fn host_invoke(name: PyStrRef, arguments_json: PyStrRef, vm: &VirtualMachine) -> PyObjectRef {
    let answer = calls::invoke(&name.to_string_lossy(), &arguments_json.to_string_lossy());
    call_state(calls::answered(0, answer), vm)
}

/// `_host_start(name, arguments_json) -> (handle, ok, text)`: starts a call.
fn host_start(name: PyStrRef, arguments_json: PyStrRef, vm: &VirtualMachine) -> PyObjectRef {
    call_state(calls::started(calls::start_invoke(&name.to_string_lossy(), &arguments_json.to_string_lossy())), vm)
}

/// `_host_timer(nanoseconds) -> (handle, ok, text)`: starts a host timer.
fn host_timer(nanoseconds: u64, vm: &VirtualMachine) -> PyObjectRef {
    call_state(calls::started(calls::start_timer(nanoseconds)), vm)
}

/// `_host_wait(block) -> (handle, ok, text) | None`: the next call to finish.
fn host_wait(block: bool, vm: &VirtualMachine) -> PyObjectRef {
    match calls::wait_next(block) {
        Some((handle, answer)) => call_state(calls::answered(handle, answer), vm),
        None => vm.ctx.none(),
    }
}

/// `_host_list_callbacks() -> [(name, description, parameters_schema_json), ...]`.
fn host_list_callbacks(vm: &VirtualMachine) -> PyObjectRef {
    let callbacks = eryx_guest_abi::list_callbacks()
        .into_iter()
        .map(|callback| {
            let fields = [callback.name, callback.description, callback.parameters_schema_json];
            vm.ctx.new_tuple(fields.into_iter().map(|field| vm.ctx.new_str(field).into()).collect()).into()
        })
        .collect();
    vm.ctx.new_list(callbacks).into()
}

/// `_host_report_trace(lineno, event_json, context_json) -> None`.
fn host_report_trace(lineno: u32, event_json: PyStrRef, context_json: PyStrRef) {
    eryx_guest_abi::report_trace(lineno, &event_json.to_string_lossy(), &context_json.to_string_lossy());
}

/// The items of a tuple of known length.
fn items<const N: usize>(object: &PyObjectRef) -> Result<[PyObjectRef; N], String> {
    let tuple = object.downcast_ref::<PyTuple>().ok_or("the runtime helper did not return a tuple")?;
    <[PyObjectRef; N]>::try_from(tuple.as_slice().to_vec())
        .map_err(|items| format!("the runtime helper returned {} items, expected {N}", items.len()))
}

/// The items of a tuple of strings.
fn strings(object: &PyObjectRef) -> Result<Vec<String>, String> {
    let tuple = object.downcast_ref::<PyTuple>().ok_or("the runtime helper did not return a tuple of names")?;
    tuple.as_slice().iter().map(text).collect()
}

fn text(object: &PyObjectRef) -> Result<String, String> {
    let string = object.downcast_ref::<PyStr>().ok_or("the runtime helper did not return a str")?;
    Ok(string.to_string_lossy().into_owned())
}

/// An exception as its traceback text.
fn describe(vm: &VirtualMachine, error: rustpython::vm::builtins::PyBaseExceptionRef) -> String {
    let mut text = String::new();
    if vm.write_exception(&mut text, &error).is_err() {
        text = "an exception that could not be formatted".to_owned();
    }
    text.trim_end().to_owned()
}

/// The program's `main` (wasi-libc's `__main_void` calls it with the arguments) in both
/// command forms of this guest: `python-rustpython.wasm` (whose `_start` is
/// `crates/eryx-guest-abi/command_entry.c`; the component's linker has run the library
/// constructors) and the core module `python-rustpython.core.wasm` (wasi-libc's own `_start`).
/// RustPython's own command line (`-c`, scripts, `-m`), with the frozen stdlib; a script on
/// a stdin that is not a terminal runs whole, as in `python3` (RustPython alone would read it
/// as an interactive session, line by line).
#[no_mangle]
pub extern "C" fn __main_argc_argv(_argc: i32, _argv: *const *const u8) -> i32 {
    let builder = InterpreterBuilder::new().init_stdlib();
    match rustpython::parse_opts() {
        Ok((settings, rustpython::RunMode::Repl)) if !settings.inspect && !std::io::stdin().is_terminal() => {
            run_stdin_script(builder, settings)
        }
        // `rustpython::run` parses the options again (and reports what is wrong with them); it
        // answers an `ExitCode` (from `sys.exit(N)`, 1 after an uncaught exception). End the
        // process with exactly that status: in the component, `exit` is the command's own
        // (command_entry.c), which carries a failing status out; in the core module, libc's,
        // whose `proc_exit` carries it natively.
        _ => rustpython::run(builder).exit_process(),
    }
}

/// `python3 -` and `python3 < file`: the whole of stdin is the `__main__` script, named
/// `<stdin>`, with `sys.path[0] == ''`; the same start-up as `rustpython::run` otherwise
/// (`warnings`, then `site`, then the path).
fn run_stdin_script(builder: InterpreterBuilder, settings: Settings) -> ! {
    use std::io::Read;
    // What `rustpython::run` does on WASI: a POSIX shell's working directory.
    if let Ok(directory) = std::env::var("PWD") {
        let _ = std::env::set_current_dir(directory);
    }
    let safe_path = settings.safe_path;
    let interpreter = builder.settings(settings).interpreter();
    let status = interpreter.run(|vm| {
        let scope = vm.new_scope_with_main()?;
        let _ = vm.import("warnings", 0);
        let _ = vm.import("site", 0);
        if !safe_path {
            vm.insert_sys_path(vm.new_pyobj(String::new()))?;
        }
        let mut source = Vec::new();
        std::io::stdin().read_to_end(&mut source).map_err(|error| vm.new_os_error(format!("read the script from stdin: {error}")))?;
        let source = String::from_utf8(source)
            .map_err(|error| {
            let message = format!("(unicode error) the script on stdin is not UTF-8: {error}");
            vm.new_exception_msg(vm.ctx.exceptions.syntax_error.to_owned(), message.into())
        })?;
        vm.run_string(scope, &source, "<stdin>").map(drop)
    });
    // Only the low 8 bits travel, as on POSIX.
    std::process::exit((status & 0xff) as i32)
}
