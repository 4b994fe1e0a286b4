//! Calls of the world's asynchronous imports (`invoke`, `timer`) that may be pending at once.
//!
//! Starting a call runs the bindings' lowering thunk, which answers a component-model status:
//! the call either returned at once or is a pending *subtask*, which joins this export call's
//! *waitable set*. [`wait_next`] waits on that set (blocking the guest, not the host: the host
//! goes on running the other pending calls) and lifts each call's result once it has
//! returned. The guest never returns to the host to wait (it never answers `WAIT` from its
//! export): the whole event loop of Python's asyncio runs inside one `execute`, so the
//! interpreter's native stack never has to be unwound.
//!
//! Only an asynchronous export may wait (the component model traps a synchronous task that
//! blocks), so calls are refused outside [`AsyncExport`]. When the export ends, calls still
//! pending are cancelled and the set is dropped: nothing of them outlives the call (and no
//! handle ends up in a pre-initialisation snapshot).

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use crate::ffi::{self, ImportFunc};
use crate::stack::{wit, Context, Value};

/// What a finished call answered: the callback's JSON result or its error text for `invoke`,
/// an empty text for `timer`.
pub type Answer = Result<String, String>;

/// How starting a call went.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// It returned at once (or could not be made).
    Done(Answer),
    /// It is pending under this handle; [`wait_next`] answers it later.
    Pending(u32),
}

// Component-model subtask states (the low 4 bits of a status) and waitable-set events.
const STATUS_STARTING: u32 = 0;
const STATUS_STARTED: u32 = 1;
const STATUS_RETURNED: u32 = 2;
const STATUS_START_CANCELLED: u32 = 3;
const STATUS_RETURN_CANCELLED: u32 = 4;
const EVENT_NONE: u32 = 0;
const EVENT_SUBTASK: u32 = 1;
/// The callback-ABI code by which an async export says it is done.
pub(crate) const CALLBACK_CODE_EXIT: u32 = 0;

#[cfg(target_arch = "wasm32")]
mod intrinsics {
    #[link(wasm_import_module = "$root")]
    extern "C" {
        #[link_name = "[waitable-set-new]"]
        pub fn waitable_set_new() -> u32;
        #[link_name = "[waitable-set-wait]"]
        pub fn waitable_set_wait(set: u32, payload: *mut u32) -> u32;
        #[link_name = "[waitable-set-poll]"]
        pub fn waitable_set_poll(set: u32, payload: *mut u32) -> u32;
        #[link_name = "[waitable-set-drop]"]
        pub fn waitable_set_drop(set: u32);
        #[link_name = "[waitable-join]"]
        pub fn waitable_join(waitable: u32, set: u32);
        #[link_name = "[subtask-drop]"]
        pub fn subtask_drop(subtask: u32);
        #[link_name = "[subtask-cancel]"]
        pub fn subtask_cancel(subtask: u32) -> u32;
    }
}

/// The intrinsics exist only inside a wasm32 component; the crate's host-side unit tests
/// never start a call.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc)]
mod intrinsics {
    const ONLY_IN_A_COMPONENT: &str = "component-model intrinsics exist only in a wasm32 component";
    pub unsafe fn waitable_set_new() -> u32 {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
    pub unsafe fn waitable_set_wait(_set: u32, _payload: *mut u32) -> u32 {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
    pub unsafe fn waitable_set_poll(_set: u32, _payload: *mut u32) -> u32 {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
    pub unsafe fn waitable_set_drop(_set: u32) {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
    pub unsafe fn waitable_join(_waitable: u32, _set: u32) {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
    pub unsafe fn subtask_drop(_subtask: u32) {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
    pub unsafe fn subtask_cancel(_subtask: u32) -> u32 {
        panic!("{ONLY_IN_A_COMPONENT}")
    }
}

/// The memory an async call lowers its arguments into and its result back into; it must
/// live until the call has returned.
struct Area {
    pointer: *mut u8,
    layout: Layout,
}

impl Area {
    fn new(size: usize, align: usize) -> Area {
        let layout = Layout::from_size_align(size, align).expect("the bindings give a valid layout");
        let pointer = if size == 0 {
            align as *mut u8
        } else {
            // SAFETY: a layout of nonzero size.
            let pointer = unsafe { alloc::alloc_zeroed(layout) };
            if pointer.is_null() {
                alloc::handle_alloc_error(layout);
            }
            pointer
        };
        Area { pointer, layout }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: allocated in `Area::new` with this layout.
            unsafe { alloc::dealloc(self.pointer, self.layout) };
        }
    }
}

/// One started call: its context (which keeps the lowered arguments alive) and its area.
struct Call {
    function: &'static ImportFunc,
    context: Box<Context>,
    area: Area,
}

impl Call {
    /// Lifts the result of a call that has returned.
    fn answer(mut self) -> Answer {
        let lift = self.function.async_lift_impl().expect("an async import has a lift thunk");
        // SAFETY: the call returned, so its area holds the result; `context` is this call's.
        unsafe { lift(&mut *self.context as *mut Context as *mut u8, self.area.pointer) };
        if ffi::type_kind(self.function.result()) == ffi::KIND_EMPTY {
            return Ok(String::new());
        }
        match self.context.stack.pop() {
            Some(Value::Result(Ok(Some(payload)))) => Ok(payload.into_string()),
            Some(Value::Result(Err(Some(payload)))) => Err(payload.into_string()),
            other => panic!("{} returned an unexpected value {other:?}", self.function.name()),
        }
    }
}

#[derive(Default)]
struct Calls {
    /// Whether an async export is running (only it may wait).
    in_async_export: bool,
    /// The waitable set of this export call, made on its first pending call.
    set: Option<u32>,
    pending: BTreeMap<u32, Call>,
    /// Calls that returned while the guest waited for another one, oldest first.
    finished: VecDeque<(u32, Answer)>,
}

thread_local! {
    static CALLS: RefCell<Calls> = RefCell::new(Calls::default());
}

/// Marks an async export call while it runs: calls may be started and waited on; when it
/// ends, the calls still pending are cancelled.
pub(crate) struct AsyncExport(());

impl AsyncExport {
    pub(crate) fn begin() -> AsyncExport {
        CALLS.with(|calls| calls.borrow_mut().in_async_export = true);
        AsyncExport(())
    }
}

impl Drop for AsyncExport {
    fn drop(&mut self) {
        let handles: Vec<u32> = CALLS.with(|calls| calls.borrow().pending.keys().copied().collect());
        for handle in handles {
            cancel(handle);
        }
        let (parked, set) = CALLS.with(|calls| {
            let mut calls = calls.borrow_mut();
            let parked: Vec<u32> = calls.finished.drain(..).map(|(handle, _)| handle).collect();
            calls.in_async_export = false;
            (parked, calls.set.take())
        });
        for handle in parked {
            // SAFETY: returned subtasks of this instance whose answers were never handed out.
            unsafe { intrinsics::subtask_drop(handle) };
        }
        if let Some(set) = set {
            // SAFETY: a set of this instance with no member left (every call was cancelled
            // or has returned, and was dropped).
            unsafe { intrinsics::waitable_set_drop(set) };
        }
    }
}

fn import_named(name: &str) -> &'static ImportFunc {
    wit()
        .import_funcs()
        .iter()
        .find(|function| function.name() == name)
        .unwrap_or_else(|| panic!("the world has no import named `{name}`"))
}

/// Starts the async import `name` with `args` (in declaration order).
fn start(name: &str, args: Vec<Value>) -> Started {
    if !CALLS.with(|calls| calls.borrow().in_async_export) {
        return Started::Done(Err(format!(
            "`{name}` can only be called while code executes (not while the state is snapshotted, restored or cleared)"
        )));
    }
    let function = import_named(name);
    let begin = function.async_impl().unwrap_or_else(|| panic!("import `{name}` is not asynchronous"));
    let (size, align) = function.async_area_layout();
    let mut call = Call { function, context: Box::default(), area: Area::new(size, align) };
    // The bindings lower the first parameter first, so it must be on top of the stack.
    call.context.stack.extend(args.into_iter().rev());
    // SAFETY: `begin` is the bindings' thunk for this import; the context and the area live
    // in `call`, which is kept until the call has returned or was cancelled.
    let status = unsafe { begin(&mut *call.context as *mut Context as *mut u8, call.area.pointer) };
    let (state, handle) = (status & 0xf, status >> 4);
    match state {
        STATUS_RETURNED => Started::Done(call.answer()),
        STATUS_STARTING | STATUS_STARTED => {
            CALLS.with(|calls| {
                let mut calls = calls.borrow_mut();
                // SAFETY: plain intrinsics on handles of this instance.
                let set = *calls.set.get_or_insert_with(|| unsafe { intrinsics::waitable_set_new() });
                unsafe { intrinsics::waitable_join(handle, set) };
                calls.pending.insert(handle, call);
            });
            Started::Pending(handle)
        }
        other => panic!("starting `{name}` answered the status {other}"),
    }
}

/// Starts a call of the host callback `name`.
pub fn start_invoke(name: &str, arguments_json: &str) -> Started {
    start("invoke", vec![Value::String(name.to_owned()), Value::String(arguments_json.to_owned())])
}

/// Starts a host timer of `nanoseconds`.
pub fn start_timer(nanoseconds: u64) -> Started {
    start("timer", vec![Value::U64(nanoseconds)])
}

/// The next call to finish: one that finished earlier, or (with `block`) the next one to
/// return, or (without) one that has returned by now. `None` when no call is pending (or,
/// without `block`, none has returned yet). Its subtask is dropped as it is handed out, not
/// before: until then its handle cannot be given to another call.
pub fn wait_next(block: bool) -> Option<(u32, Answer)> {
    let (handle, answer) = next_returned(block)?;
    // SAFETY: a subtask of this instance that has returned, handed out once.
    unsafe { intrinsics::subtask_drop(handle) };
    Some((handle, answer))
}

/// [`wait_next`] without dropping the subtask (the caller drops it when it hands the answer
/// out).
fn next_returned(block: bool) -> Option<(u32, Answer)> {
    loop {
        let set = CALLS.with(|calls| {
            let mut calls = calls.borrow_mut();
            match calls.finished.pop_front() {
                Some(done) => Err(done),
                None if calls.pending.is_empty() => Ok(None),
                None => Ok(calls.set),
            }
        });
        let set = match set {
            Err(done) => return Some(done),
            Ok(None) => return None,
            Ok(Some(set)) => set,
        };
        let mut payload = [0u32; 2];
        // SAFETY: a set of this instance and a payload of two u32 for the intrinsic to fill.
        let event = unsafe {
            if block {
                intrinsics::waitable_set_wait(set, payload.as_mut_ptr())
            } else {
                intrinsics::waitable_set_poll(set, payload.as_mut_ptr())
            }
        };
        match event {
            EVENT_NONE if !block => return None,
            EVENT_NONE => continue,
            EVENT_SUBTASK => {
                let [handle, status] = payload;
                match status {
                    STATUS_RETURNED => {
                        let call = CALLS.with(|calls| calls.borrow_mut().pending.remove(&handle));
                        let call = call.unwrap_or_else(|| panic!("subtask {handle} returned but was not pending"));
                        return Some((handle, call.answer()));
                    }
                    // Progress short of returning: keep waiting.
                    STATUS_STARTING | STATUS_STARTED => continue,
                    other => panic!("subtask {handle} reported the status {other}"),
                }
            }
            other => panic!("the waitable set reported the event {other}"),
        }
    }
}

/// Waits for the call `handle` to return; calls that return meanwhile stay for
/// [`wait_next`], in order (their subtasks stay too, so their handles are not reused before
/// their answers are handed out).
pub fn wait_for(handle: u32) -> Answer {
    let mut others = Vec::new();
    let answer = loop {
        match next_returned(true) {
            Some((done, answer)) if done == handle => {
                // SAFETY: this call's subtask, returned, handed out now.
                unsafe { intrinsics::subtask_drop(done) };
                break answer;
            }
            Some(other) => others.push(other),
            None => panic!("call {handle} is not pending"),
        }
    };
    CALLS.with(|calls| {
        let mut calls = calls.borrow_mut();
        for other in others.into_iter().rev() {
            calls.finished.push_front(other);
        }
    });
    answer
}

/// Cancels the call `handle` (its result, if it has one already, is dropped).
pub fn cancel(handle: u32) {
    let (call, parked) = CALLS.with(|calls| {
        let mut calls = calls.borrow_mut();
        let before = calls.finished.len();
        calls.finished.retain(|(done, _)| *done != handle);
        (calls.pending.remove(&handle), calls.finished.len() != before)
    });
    if parked {
        // It had returned and its answer was waiting to be handed out: its subtask goes now.
        // SAFETY: a returned subtask of this instance, not handed out.
        unsafe { intrinsics::subtask_drop(handle) };
        return;
    }
    let Some(call) = call else { return };
    // SAFETY: a pending subtask of this instance: it leaves the set (a subtask in a set
    // cannot be cancelled synchronously), is cancelled and waited for, and then dropped.
    let status = unsafe {
        intrinsics::waitable_join(handle, 0);
        intrinsics::subtask_cancel(handle)
    };
    match status {
        // It returned before the cancellation reached it: its result is in the area, and
        // lifting it releases what the host allocated for it.
        STATUS_RETURNED => drop(call.answer()),
        STATUS_START_CANCELLED | STATUS_RETURN_CANCELLED => drop(call),
        other => panic!("cancelling subtask {handle} answered the status {other}"),
    }
    // SAFETY: the subtask has resolved.
    unsafe { intrinsics::subtask_drop(handle) };
}

/// Calls the host callback `name` and waits for its answer.
pub fn invoke(name: &str, arguments_json: &str) -> Answer {
    match start_invoke(name, arguments_json) {
        Started::Done(answer) => answer,
        Started::Pending(handle) => wait_for(handle),
    }
}

/// A call as the Python half sees it: `(handle, ok, text)`, with handle 0 for a call that
/// has its answer already.
pub fn started(started: Started) -> (u32, bool, String) {
    match started {
        Started::Done(answer) => answered(0, answer),
        Started::Pending(handle) => (handle, true, String::new()),
    }
}

/// The `(handle, ok, text)` of a call that answered.
pub fn answered(handle: u32, answer: Answer) -> (u32, bool, String) {
    match answer {
        Ok(text) => (handle, true, text),
        Err(text) => (handle, false, text),
    }
}
