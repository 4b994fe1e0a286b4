//! A thin, owned view of the CPython C API (through `pyo3-ffi`, the bindings pyo3 itself
//! uses), and the host functions the Python half calls.

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use pyo3_ffi as ffi;

use eryx_guest_abi::{calls, python_runtime};

/// A strong reference, released when dropped.
pub struct Owned(ptr::NonNull<ffi::PyObject>);

impl Owned {
    /// Takes a new reference returned by the C API; a null means a Python error is set.
    ///
    /// # Safety
    /// `pointer` is null or a new (owned) reference to a live object.
    unsafe fn from_new(pointer: *mut ffi::PyObject) -> Result<Owned, String> {
        ptr::NonNull::new(pointer).map(Owned).ok_or_else(take_error)
    }

    /// Takes a borrowed reference and makes it a strong one.
    ///
    /// # Safety
    /// `pointer` is null or a borrowed reference to a live object.
    unsafe fn from_borrowed(pointer: *mut ffi::PyObject) -> Result<Owned, String> {
        let object = ptr::NonNull::new(pointer).ok_or_else(take_error)?;
        // SAFETY: the caller's contract; we add the reference we will release.
        unsafe { ffi::Py_IncRef(object.as_ptr()) };
        Ok(Owned(object))
    }

    fn as_ptr(&self) -> *mut ffi::PyObject {
        self.0.as_ptr()
    }

    /// Gives the reference away (to a call that steals it).
    fn into_ptr(self) -> *mut ffi::PyObject {
        let pointer = self.0.as_ptr();
        std::mem::forget(self);
        pointer
    }

    pub fn string(text: &str) -> Result<Owned, String> {
        // SAFETY: the pointer and length describe `text`, which outlives the call.
        unsafe { Owned::from_new(ffi::PyUnicode_FromStringAndSize(text.as_ptr() as *const c_char, text.len() as _)) }
    }

    pub fn bytes(data: &[u8]) -> Result<Owned, String> {
        // SAFETY: as above, for `data`.
        unsafe { Owned::from_new(ffi::PyBytes_FromStringAndSize(data.as_ptr() as *const c_char, data.len() as _)) }
    }

    fn tuple(items: Vec<Owned>) -> Result<Owned, String> {
        Owned::sequence(items, ffi::PyTuple_New, ffi::PyTuple_SetItem)
    }

    fn list(items: Vec<Owned>) -> Result<Owned, String> {
        Owned::sequence(items, ffi::PyList_New, ffi::PyList_SetItem)
    }

    /// A fresh tuple or list holding `items`; `set_item` steals each item's reference.
    fn sequence(
        items: Vec<Owned>,
        new: unsafe extern "C" fn(ffi::Py_ssize_t) -> *mut ffi::PyObject,
        set_item: unsafe extern "C" fn(*mut ffi::PyObject, ffi::Py_ssize_t, *mut ffi::PyObject) -> std::ffi::c_int,
    ) -> Result<Owned, String> {
        // SAFETY: a fresh sequence of the right length, filled once per index.
        unsafe {
            let sequence = Owned::from_new(new(items.len() as _))?;
            for (index, item) in items.into_iter().enumerate() {
                if set_item(sequence.as_ptr(), index as _, item.into_ptr()) != 0 {
                    return Err(take_error());
                }
            }
            Ok(sequence)
        }
    }

    fn none() -> Owned {
        // SAFETY: `None` is immortal; the borrowed reference is always valid.
        unsafe { Owned::from_borrowed(ffi::Py_None()) }.expect("None exists")
    }

    pub fn boolean(value: bool) -> Owned {
        // SAFETY: returns a new reference to `True` or `False`.
        unsafe { Owned::from_new(ffi::PyBool_FromLong(value as _)) }.expect("bools exist")
    }

    pub fn unsigned(value: u64) -> Result<Owned, String> {
        // SAFETY: returns a new reference, or null with an exception set.
        unsafe { Owned::from_new(ffi::PyLong_FromUnsignedLongLong(value)) }
    }

    /// Python truth of the object.
    pub fn is_true(&self) -> Result<bool, String> {
        // SAFETY: a live object; -1 means an exception was raised.
        match unsafe { ffi::PyObject_IsTrue(self.as_ptr()) } {
            -1 => Err(take_error()),
            value => Ok(value != 0),
        }
    }

    pub fn is_none(&self) -> bool {
        // SAFETY: comparing identities only.
        self.as_ptr() == unsafe { ffi::Py_None() }
    }

    /// Item `index` of a tuple.
    pub fn item(&self, index: usize) -> Result<Owned, String> {
        // SAFETY: `PyTuple_GetItem` checks the type and bounds and returns a borrowed item.
        unsafe { Owned::from_borrowed(ffi::PyTuple_GetItem(self.as_ptr(), index as _)) }
    }

    pub fn to_string(&self) -> Result<String, String> {
        let mut length: ffi::Py_ssize_t = 0;
        // SAFETY: `PyUnicode_AsUTF8AndSize` checks the type; the buffer lives as long as
        // the object, and we copy it before returning.
        unsafe {
            let data = ffi::PyUnicode_AsUTF8AndSize(self.as_ptr(), &mut length);
            if data.is_null() {
                return Err(take_error());
            }
            let bytes = std::slice::from_raw_parts(data as *const u8, length as usize);
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
    }

    /// The items of a tuple of strings.
    pub fn strings(&self) -> Result<Vec<String>, String> {
        // SAFETY: `PyTuple_Size` checks the type (-1 with an exception otherwise).
        let length = unsafe { ffi::PyTuple_Size(self.as_ptr()) };
        if length < 0 {
            return Err(take_error());
        }
        (0..length as usize).map(|index| self.item(index)?.to_string()).collect()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut data: *mut c_char = ptr::null_mut();
        let mut length: ffi::Py_ssize_t = 0;
        // SAFETY: as for `to_string`, for a bytes object.
        unsafe {
            if ffi::PyBytes_AsStringAndSize(self.as_ptr(), &mut data, &mut length) != 0 {
                return Err(take_error());
            }
            Ok(std::slice::from_raw_parts(data as *const u8, length as usize).to_vec())
        }
    }

    fn attribute(&self, name: &CStr) -> Result<Owned, String> {
        // SAFETY: a live object and a NUL-terminated name.
        unsafe { Owned::from_new(ffi::PyObject_GetAttrString(self.as_ptr(), name.as_ptr())) }
    }

    fn call(&self, arguments: Vec<Owned>) -> Result<Owned, String> {
        let arguments = Owned::tuple(arguments)?;
        // SAFETY: a callable and a tuple of arguments; no keyword arguments.
        unsafe { Owned::from_new(ffi::PyObject_Call(self.as_ptr(), arguments.as_ptr(), ptr::null_mut())) }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we hold exactly one reference, released here once.
        unsafe { ffi::Py_DecRef(self.0.as_ptr()) }
    }
}

/// Takes the pending Python exception and describes it as `Type: message`.
fn take_error() -> String {
    // SAFETY: reads and clears the thread's raised exception, if any.
    let raised = unsafe { ffi::PyErr_GetRaisedException() };
    let Some(raised) = ptr::NonNull::new(raised).map(Owned) else {
        return "a Python C API call failed without an exception".to_owned();
    };
    let type_name = raised
        .attribute(c"__class__")
        .and_then(|class| class.attribute(c"__name__"))
        .and_then(|name| name.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    // SAFETY: `PyObject_Str` returns a new reference or null.
    let message = unsafe { Owned::from_new(ffi::PyObject_Str(raised.as_ptr())) }
        .and_then(|text| text.to_string())
        .unwrap_or_default();
    // Formatting may itself have raised; do not leave that behind.
    unsafe { ffi::PyErr_Clear() };
    format!("{type_name}: {message}")
}

/// The `_eryx_runtime` module, with `eryx_runtime.py` executed in it.
pub struct HelperModule {
    module: Owned,
}

impl HelperModule {
    /// Calls the helper function `name` with positional arguments.
    pub fn call(&self, name: &str, arguments: &[Owned]) -> Result<Owned, String> {
        let name = CString::new(name).map_err(|error| error.to_string())?;
        let function = self.module.attribute(&name)?;
        let arguments = arguments
            .iter()
            // SAFETY: each argument is a live object this call holds.
            .map(|argument| unsafe { Owned::from_borrowed(argument.as_ptr()) })
            .collect::<Result<Vec<_>, _>>()?;
        function.call(arguments)
    }
}

/// Starts CPython (the host provides `PYTHONHOME` and the read-only stdlib) and loads the
/// runtime helper.
pub fn initialize() -> Result<HelperModule, String> {
    // SAFETY: called once, before any other Python call, on the guest's only thread.
    unsafe {
        if ffi::Py_IsInitialized() == 0 {
            ffi::Py_InitializeEx(0);
        }
    }
    // SAFETY: C API calls with live objects and NUL-terminated names throughout.
    unsafe {
        let module_name = c_string(python_runtime::MODULE)?;
        let module = Owned::from_borrowed(ffi::PyImport_AddModule(module_name.as_ptr()))?;
        let namespace = Owned::from_borrowed(ffi::PyModule_GetDict(module.as_ptr()))?;
        let builtins = Owned::from_new(ffi::PyImport_ImportModule(c"builtins".as_ptr()))?;
        set_item(&namespace, c"__builtins__", builtins)?;
        for (name, function) in HOST_FUNCTIONS.iter() {
            set_item(&namespace, name, function_object(name, *function)?)?;
        }
        let source = c_string(python_runtime::SOURCE)?;
        let filename = c_string(python_runtime::FILENAME)?;
        let code = Owned::from_new(ffi::Py_CompileString(
            source.as_ptr(),
            filename.as_ptr(),
            ffi::Py_file_input,
        ))?;
        Owned::from_new(ffi::PyEval_EvalCode(code.as_ptr(), namespace.as_ptr(), namespace.as_ptr()))?;
        Ok(HelperModule { module })
    }
}

fn c_string(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|error| error.to_string())
}

fn set_item(namespace: &Owned, name: &CStr, value: Owned) -> Result<(), String> {
    // SAFETY: `PyDict_SetItemString` does not steal `value`; ours is dropped afterwards.
    if unsafe { ffi::PyDict_SetItemString(namespace.as_ptr(), name.as_ptr(), value.as_ptr()) } != 0
    {
        return Err(take_error());
    }
    Ok(())
}

type HostFunction = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;

const HOST_FUNCTIONS: [(&CStr, HostFunction); 8] = [
    (c"_host_invoke", host_invoke),
    (c"_host_start", host_start),
    (c"_host_timer", host_timer),
    (c"_host_wait", host_wait),
    (c"_host_cancel", host_cancel),
    (c"_host_list_callbacks", host_list_callbacks),
    (c"_host_report_trace", host_report_trace),
    (c"_host_finish_preinit", host_finish_preinit),
];

/// Wraps `function` as a Python callable taking positional arguments.
fn function_object(name: &'static CStr, function: HostFunction) -> Result<Owned, String> {
    // CPython keeps a pointer to the method definition for the callable's whole life, and
    // these callables live as long as the interpreter: one allocation per host function,
    // made once at start-up, is the definition's storage.
    let definition = Box::into_raw(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: function },
        ml_flags: ffi::METH_VARARGS,
        ml_doc: ptr::null(),
    }));
    // SAFETY: a valid definition that outlives the function object.
    unsafe { Owned::from_new(ffi::PyCFunction_NewEx(definition, ptr::null_mut(), ptr::null_mut())) }
}

/// Converts a host function's `Result` into what CPython expects: a new reference, or
/// null with an exception set.
fn to_python(result: Result<Owned, String>) -> *mut ffi::PyObject {
    match result {
        Ok(object) => object.into_ptr(),
        Err(message) => {
            let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
            // SAFETY: sets a RuntimeError with a NUL-terminated message.
            unsafe { ffi::PyErr_SetString(ffi::PyExc_RuntimeError, message.as_ptr()) };
            ptr::null_mut()
        }
    }
}

/// Item `index` of the arguments tuple of a host function.
///
/// # Safety
/// `arguments` is the live tuple CPython passed to the host function.
unsafe fn argument(arguments: *mut ffi::PyObject, index: usize) -> Result<Owned, String> {
    // SAFETY: the caller's contract; `PyTuple_GetItem` checks the bounds.
    unsafe { Owned::from_borrowed(ffi::PyTuple_GetItem(arguments, index as _)) }
}

/// An unsigned integer argument.
///
/// # Safety
/// `arguments` is the live tuple CPython passed to the host function.
unsafe fn unsigned_argument(arguments: *mut ffi::PyObject, index: usize) -> Result<u64, String> {
    // SAFETY: the caller's contract.
    let object = unsafe { argument(arguments, index)? };
    // SAFETY: a live object; a failed conversion sets an exception we take.
    let value = unsafe { ffi::PyLong_AsUnsignedLongLong(object.as_ptr()) };
    if value == u64::MAX && unsafe { !ffi::PyErr_Occurred().is_null() } {
        return Err(take_error());
    }
    Ok(value)
}

/// The `(handle, ok, text)` the Python half gets for a call (see `eryx_guest_abi::calls`).
fn call_state((handle, ok, text): (u32, bool, String)) -> Result<Owned, String> {
    Owned::tuple(vec![Owned::unsigned(handle.into())?, Owned::boolean(ok), Owned::string(&text)?])
}

/// The name and the JSON arguments of a callback call.
///
/// # Safety
/// `arguments` is the live tuple CPython passed to the host function.
unsafe fn callback_arguments(arguments: *mut ffi::PyObject) -> Result<(String, String), String> {
    // SAFETY: the caller's contract.
    unsafe { Ok((argument(arguments, 0)?.to_string()?, argument(arguments, 1)?.to_string()?)) }
}

/// `_host_invoke(name, arguments_json) -> (handle, ok, text)`: calls and waits.
unsafe extern "C" fn host_invoke(_module: *mut ffi::PyObject, arguments: *mut ffi::PyObject) -> *mut ffi::PyObject {
    to_python((|| {
        // SAFETY: `arguments` is the tuple CPython passed to this host function.
        let (name, arguments_json) = unsafe { callback_arguments(arguments)? };
        call_state(calls::answered(0, calls::invoke(&name, &arguments_json)))
    })())
}

/// `_host_start(name, arguments_json) -> (handle, ok, text)`: starts a call.
unsafe extern "C" fn host_start(_module: *mut ffi::PyObject, arguments: *mut ffi::PyObject) -> *mut ffi::PyObject {
    to_python((|| {
        // SAFETY: `arguments` is the tuple CPython passed to this host function.
        let (name, arguments_json) = unsafe { callback_arguments(arguments)? };
        call_state(calls::started(calls::start_invoke(&name, &arguments_json)))
    })())
}

/// `_host_timer(nanoseconds) -> (handle, ok, text)`: starts a host timer.
unsafe extern "C" fn host_timer(_module: *mut ffi::PyObject, arguments: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `arguments` is the tuple CPython passed to this host function.
    to_python(unsafe { unsigned_argument(arguments, 0) }.and_then(|nanoseconds| call_state(calls::started(calls::start_timer(nanoseconds)))))
}

/// `_host_wait(block) -> (handle, ok, text) | None`: the next call to finish.
unsafe extern "C" fn host_wait(_module: *mut ffi::PyObject, arguments: *mut ffi::PyObject) -> *mut ffi::PyObject {
    to_python((|| {
        // SAFETY: `arguments` is the tuple CPython passed to this host function.
        let block = unsafe { argument(arguments, 0)? }.is_true()?;
        match calls::wait_next(block) {
            Some((handle, answer)) => call_state(calls::answered(handle, answer)),
            None => Ok(Owned::none()),
        }
    })())
}

/// `_host_cancel(handle) -> None`.
unsafe extern "C" fn host_cancel(_module: *mut ffi::PyObject, arguments: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `arguments` is the tuple CPython passed to this host function.
    to_python(unsafe { unsigned_argument(arguments, 0) }.and_then(|handle| {
        calls::cancel(u32::try_from(handle).map_err(|_| format!("{handle} is no call handle"))?);
        Ok(Owned::none())
    }))
}

/// `_host_list_callbacks() -> [(name, description, parameters_schema_json), ...]`.
unsafe extern "C" fn host_list_callbacks(
    _module: *mut ffi::PyObject,
    _arguments: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    to_python((|| {
        let items = eryx_guest_abi::list_callbacks()
            .into_iter()
            .map(|callback| {
                Owned::tuple(vec![
                    Owned::string(&callback.name)?,
                    Owned::string(&callback.description)?,
                    Owned::string(&callback.parameters_schema_json)?,
                ])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Owned::list(items)
    })())
}

/// `_host_finish_preinit() -> bool`: see [`eryx_guest_abi::finish_preinit`].
unsafe extern "C" fn host_finish_preinit(
    _module: *mut ffi::PyObject,
    _arguments: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    to_python(Ok(Owned::boolean(eryx_guest_abi::finish_preinit())))
}

/// `_host_report_trace(lineno, event_json, context_json) -> None`.
unsafe extern "C" fn host_report_trace(
    _module: *mut ffi::PyObject,
    arguments: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    to_python((|| {
        // SAFETY (here and below): `arguments` is the tuple CPython passed to this function.
        let lineno_object = unsafe { argument(arguments, 0)? };
        // SAFETY: a live object; a failed conversion sets an exception we take.
        let lineno = unsafe { ffi::PyLong_AsUnsignedLong(lineno_object.as_ptr()) };
        if lineno == std::ffi::c_ulong::MAX && unsafe { !ffi::PyErr_Occurred().is_null() } {
            return Err(take_error());
        }
        let event_json = unsafe { argument(arguments, 1)? }.to_string()?;
        let context_json = unsafe { argument(arguments, 2)? }.to_string()?;
        eryx_guest_abi::report_trace(lineno as u32, &event_json, &context_json);
        Ok(Owned::none())
    })())
}
