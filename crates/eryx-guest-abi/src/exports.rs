//! The export entry points the wit-dylib bindings call: a call's context is created, its
//! arguments popped from the value stack, the function dispatched to the backend
//! ([`crate::dispatch`]) and its result pushed back; an async export (`execute`) runs inside
//! [`calls::AsyncExport`], so the calls it starts end with it.

use crate::calls;
use crate::stack::{cx, wit, Context};

#[no_mangle]
pub extern "C" fn wit_dylib_export_start(_which: usize) -> *mut u8 {
    Box::into_raw(Box::<Context>::default()) as *mut u8
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_export_call(cx_pointer: *mut u8, which: usize) {
    let context = unsafe { cx(cx_pointer) };
    let name = wit().export_funcs()[which].name();
    let args = std::mem::take(&mut context.stack);
    if let Some(result) = crate::dispatch(name, args) {
        context.stack.push(result);
    }
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_export_finish(cx_pointer: *mut u8, _which: usize) {
    // SAFETY: created by `wit_dylib_export_start`; the bindings finish each call once.
    drop(unsafe { Box::from_raw(cx_pointer as *mut Context) });
}

/// An async export (`execute`): runs to the end without returning to the host in between
/// (the guest waits for its pending calls inside, see [`crate::calls`]), delivers the result
/// with `task.return` and says it is done.
#[no_mangle]
pub unsafe extern "C" fn wit_dylib_export_async_call(cx_pointer: *mut u8, which: usize) -> u32 {
    // SAFETY: created by `wit_dylib_export_start`; an async export's call owns it.
    let mut context = unsafe { Box::from_raw(cx_pointer as *mut Context) };
    let function = &wit().export_funcs()[which];
    let args = std::mem::take(&mut context.stack);
    let result = {
        let _export = calls::AsyncExport::begin();
        crate::dispatch(function.name(), args)
    };
    if let Some(result) = result {
        context.stack.push(result);
    }
    let task_return = function.task_return().expect("an async export has a task.return thunk");
    // SAFETY: the bindings' thunk for this export, given this call's context; it lowers
    // the result and hands it to the caller before returning.
    unsafe { task_return(&mut *context as *mut Context as *mut u8) };
    calls::CALLBACK_CODE_EXIT
}

/// Called only after an async export answered `WAIT` or `YIELD`, which this guest never does.
#[no_mangle]
pub extern "C" fn wit_dylib_export_async_callback(event: u32, _a: u32, _b: u32, _which: usize) -> u32 {
    panic!("an async export was called back (event {event}), but this guest never leaves one unfinished");
}
