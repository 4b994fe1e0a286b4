//! The wit-dylib interpreter side, written once for every eryx guest.
//!
//! `wit-dylib` generates a bindings library that lifts and lowers canonical-ABI values by
//! calling `wit_dylib_push_*` / `wit_dylib_pop_*` on a context we own. This crate implements
//! those functions over a stack of [`Value`]s, dispatches the world's four exports to a
//! [`Backend`] through one function ([`dispatch`]), and calls the world's imports for the
//! backend ([`calls`] for the asynchronous `invoke` and `timer`, [`list_callbacks`],
//! [`report_trace`]).
//!
//! A guest crate implements [`Backend`] for its Python and names its constructor with
//! [`export_backend!`]. The guest is single-threaded: the backend lives in a thread-local.

pub mod calls;
mod exports;
mod ffi;
mod stack;

/// The Python half every backend runs: the persistent namespace, the standard streams,
/// tracebacks, snapshots and the callback wrappers, written once in Python. A backend
/// creates the module [`MODULE`](python_runtime::MODULE), gives it the four host
/// functions the source names, runs [`SOURCE`](python_runtime::SOURCE) in it and then
/// calls its `execute`, `snapshot`, `restore` and `clear`.
pub mod python_runtime {
    pub const SOURCE: &str = include_str!("eryx_runtime.py");
    pub const MODULE: &str = "_eryx_runtime";
    pub const FILENAME: &str = "<eryx-runtime>";
}

use std::cell::RefCell;

pub use stack::Value;
use stack::{wit, Context};

/// How one `execute` runs (the world's `execute-options`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecuteOptions {
    /// Whether to report trace events of the user's code.
    pub trace: bool,
}

/// The user state `snapshot-state` serialised, and the names it left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateSnapshot {
    pub data: Vec<u8>,
    pub skipped: Vec<String>,
}

/// A callback the host offers, as `list-callbacks` describes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackInfo {
    pub name: String,
    pub description: String,
    pub parameters_schema_json: String,
}

/// One Python implementation behind the world's exports.
pub trait Backend {
    /// Runs `code`; its output goes to file descriptors 1 and 2 as it is written (the host
    /// captures it). An error is the traceback.
    fn execute(&mut self, code: &str, options: &ExecuteOptions) -> Result<(), String>;
    fn snapshot_state(&mut self) -> Result<StateSnapshot, String>;
    /// Answers the names that could not be restored.
    fn restore_state(&mut self, data: &[u8]) -> Result<Vec<String>, String>;
    fn clear_state(&mut self) -> Result<(), String>;
    /// Renews the backend's own state that must differ per sandbox (generators seeded from
    /// WASI randomness) in an instance restored from a pre-initialisation snapshot. Called
    /// once, before the restored instance's first export call.
    fn renew_after_snapshot(&mut self) {}
}

/// Names the guest's backend constructor; call it once at the top of the guest crate.
#[macro_export]
macro_rules! export_backend {
    ($constructor:expr) => {
        #[no_mangle]
        pub fn __eryx_guest_create_backend() -> ::std::boxed::Box<dyn $crate::Backend> {
            ::std::boxed::Box::new($constructor())
        }
    };
}

extern "Rust" {
    fn __eryx_guest_create_backend() -> Box<dyn Backend>;
}

/// Set in the pre-initialisation snapshot; see [`Backend::renew_after_snapshot`].
static RENEW_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static BACKEND: RefCell<Option<Box<dyn Backend>>> = const { RefCell::new(None) };
}

/// Runs one export call against the backend, creating the backend on first use. Every
/// export path (`wit_dylib_export_call`) comes through here.
pub fn dispatch(name: &str, mut args: Vec<Value>) -> Option<Value> {
    BACKEND.with(|cell| {
        let mut slot = cell.borrow_mut();
        // SAFETY: the guest crate defines the constructor with `export_backend!`.
        let backend = slot.get_or_insert_with(|| unsafe { __eryx_guest_create_backend() });
        if RENEW_PENDING.swap(false, std::sync::atomic::Ordering::SeqCst) {
            backend.renew_after_snapshot();
        }
        dispatch_to(backend.as_mut(), name, &mut args)
    })
}

/// The export table of `wit/runtime.wit`, separated from the thread-local so it can be
/// exercised with any backend.
pub fn dispatch_to(backend: &mut dyn Backend, name: &str, args: &mut Vec<Value>) -> Option<Value> {
    match name {
        "execute" => {
            // The parameters were lifted in order: the last one is on top.
            let options = take_options(args);
            let code = take_string(args, name);
            Some(text_result(backend.execute(&code, &options), |()| None))
        }
        "snapshot-state" => Some(text_result(backend.snapshot_state(), |snapshot| {
            Some(Value::Record(vec![Value::Bytes(snapshot.data), strings(snapshot.skipped)]))
        })),
        "restore-state" => {
            let data = match args.pop() {
                Some(Value::Bytes(bytes)) => bytes,
                other => panic!("restore-state expects list<u8>, got {other:?}"),
            };
            Some(text_result(backend.restore_state(&data), |not_restored| Some(strings(not_restored))))
        }
        "clear-state" => Some(text_result(backend.clear_state(), |()| None)),
        other => panic!("the world has no export named `{other}`"),
    }
}

fn take_options(args: &mut Vec<Value>) -> ExecuteOptions {
    match args.pop() {
        Some(Value::Record(fields)) => match <[Value; 1]>::try_from(fields) {
            Ok([Value::Bool(trace)]) => ExecuteOptions { trace },
            Ok(other) => panic!("execute-options has unexpected fields {other:?}"),
            Err(fields) => panic!("execute-options has {} fields, expected 1", fields.len()),
        },
        other => panic!("execute expects execute-options, got {other:?}"),
    }
}

/// A `result<T, string>` of the world: the payload `ok` makes of a success, or the error text.
fn text_result<T>(result: Result<T, String>, ok: impl FnOnce(T) -> Option<Value>) -> Value {
    match result {
        Ok(value) => Value::ok(ok(value)),
        Err(error) => Value::err(Some(Value::String(error))),
    }
}

fn strings(items: Vec<String>) -> Value {
    Value::List(items.into_iter().map(Value::String).collect())
}

fn take_string(args: &mut Vec<Value>, function: &str) -> String {
    match args.pop() {
        Some(Value::String(text)) => text,
        other => panic!("{function} expects a string argument, got {other:?}"),
    }
}

/// Ends a build-time pre-initialisation: forgets the WASI state that a snapshot of this
/// instance must not keep. wasi-libc caches the preopened directories' descriptors, and the
/// preview1 adapter its descriptor table; both hold handles of the instance that ran the
/// pre-initialisation, which mean nothing (or something else) in the instances restored from
/// the snapshot. After the reset both are rebuilt on the next WASI call. Does this once per
/// instance (a restored instance has it done already); answers whether it did it now.
pub fn finish_preinit() -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FINISHED: AtomicBool = AtomicBool::new(false);
    if FINISHED.swap(true, Ordering::SeqCst) {
        return false;
    }
    // The snapshot is taken right after this call returns: every instance restored from it
    // renews its backend's generators on its first call.
    RENEW_PENDING.store(true, Ordering::SeqCst);
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "wasi_snapshot_preview1")]
        extern "C" {
            fn reset_adapter_state();
        }
        extern "C" {
            fn __wasilibc_reset_preopens();
        }
        // SAFETY: both only reset caches that their owners rebuild on demand; nothing of
        // this guest holds a descriptor across this call (the pre-initialisation opened no
        // file that stays open).
        unsafe {
            __wasilibc_reset_preopens();
            reset_adapter_state();
        }
    }
    true
}

/// Calls the world's synchronous import `name` with `args` (in declaration order) and
/// returns its result, if it has one.
fn call_import(name: &str, args: Vec<Value>) -> Option<Value> {
    let function = wit()
        .import_funcs()
        .iter()
        .find(|function| function.name() == name)
        .unwrap_or_else(|| panic!("the world has no import named `{name}`"));
    let implementation = function
        .implementation()
        .unwrap_or_else(|| panic!("import `{name}` is not synchronous"));
    let mut cx = Context::default();
    // The bindings lower the first parameter first, so it must be on top of the stack.
    cx.stack.extend(args.into_iter().rev());
    // SAFETY: `implementation` is the bindings' lowering thunk and `cx` outlives the call.
    unsafe { implementation(&mut cx as *mut Context as *mut u8) };
    if ffi::type_kind(function.result()) == ffi::KIND_EMPTY {
        None
    } else {
        Some(cx.stack.pop().expect("import result was not pushed"))
    }
}

/// Lists the host's callbacks.
pub fn list_callbacks() -> Vec<CallbackInfo> {
    let Some(Value::List(items)) = call_import("list-callbacks", Vec::new()) else {
        panic!("list-callbacks did not return a list");
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Record(fields) = item else {
                panic!("callback-info is not a record")
            };
            let mut fields = fields.into_iter().map(Value::into_string);
            CallbackInfo {
                name: fields.next().unwrap_or_default(),
                description: fields.next().unwrap_or_default(),
                parameters_schema_json: fields.next().unwrap_or_default(),
            }
        })
        .collect()
}

/// Reports one trace event to the host.
pub fn report_trace(lineno: u32, event_json: &str, context_json: &str) {
    call_import(
        "report-trace",
        vec![
            Value::U32(lineno),
            Value::String(event_json.to_owned()),
            Value::String(context_json.to_owned()),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::export_backend!(Recorder::default);

    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl Backend for Recorder {
        fn execute(&mut self, code: &str, options: &ExecuteOptions) -> Result<(), String> {
            self.calls.push(format!("execute {code} {options:?}"));
            if code == "fail" {
                return Err("Traceback\nValueError: no".into());
            }
            Ok(())
        }
        fn snapshot_state(&mut self) -> Result<StateSnapshot, String> {
            Ok(StateSnapshot { data: vec![1, 2, 3], skipped: vec!["helper".into()] })
        }
        fn restore_state(&mut self, data: &[u8]) -> Result<Vec<String>, String> {
            self.calls.push(format!("restore {data:?}"));
            Ok(vec!["point".into()])
        }
        fn clear_state(&mut self) -> Result<(), String> {
            self.calls.push("clear".into());
            if self.calls.len() > 2 {
                return Err("clear failed".into());
            }
            Ok(())
        }
    }

    #[test]
    fn execute_results_are_shaped_like_the_world() {
        let mut backend = Recorder::default();
        let options = || Value::Record(vec![Value::Bool(true)]);
        let ok = dispatch_to(&mut backend, "execute", &mut vec![Value::String("hi".into()), options()]);
        assert_eq!(ok, Some(Value::ok(None)));
        let err = dispatch_to(&mut backend, "execute", &mut vec![Value::String("fail".into()), options()]);
        assert_eq!(err, Some(Value::err(Some(Value::String("Traceback\nValueError: no".into())))));
        assert_eq!(backend.calls[0], "execute hi ExecuteOptions { trace: true }");
    }

    #[test]
    fn state_exports_reach_the_backend() {
        let mut backend = Recorder::default();
        assert_eq!(
            dispatch_to(&mut backend, "snapshot-state", &mut vec![]),
            Some(Value::ok(Some(Value::Record(vec![
                Value::Bytes(vec![1, 2, 3]),
                Value::List(vec![Value::String("helper".into())])
            ]))))
        );
        assert_eq!(
            dispatch_to(&mut backend, "restore-state", &mut vec![Value::Bytes(vec![9])]),
            Some(Value::ok(Some(Value::List(vec![Value::String("point".into())]))))
        );
        assert_eq!(dispatch_to(&mut backend, "clear-state", &mut vec![]), Some(Value::ok(None)));
        assert_eq!(
            dispatch_to(&mut backend, "clear-state", &mut vec![]),
            Some(Value::err(Some(Value::String("clear failed".into())))),
            "a failed clear is an error value, not a panic"
        );
        assert_eq!(backend.calls, vec!["restore [9]", "clear", "clear"]);
    }
}
