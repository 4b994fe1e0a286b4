//! The value stack behind the `wit_dylib_*` functions, and the functions that move values
//! and memory across it (the export entry points are in `exports.rs`).
//!
//! Ownership rules (from `wit_dylib.h`): strings and byte lists pushed to us were allocated
//! with `cabi_realloc` and become ours; pointers we hand out when a value is popped must
//! stay valid until the context ends (after the import call, or in the export's
//! post-return), so the context keeps those buffers alive and frees them when dropped.

use std::alloc::{self, Layout};
use std::cell::Cell;

use crate::ffi::{self, Wit};

/// A WIT value in the guest's own representation.
#[derive(Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    S8(i8),
    S16(i16),
    S32(i32),
    S64(i64),
    F32(f32),
    F64(f64),
    Char(u32),
    /// Enum cases, flags and resource handles: a number with a type elsewhere.
    Index(u32),
    String(String),
    /// A `list<u8>`, kept in its canonical-ABI form.
    Bytes(Vec<u8>),
    List(Vec<Value>),
    /// A list being lowered element by element.
    ListIter(Vec<Value>),
    Record(Vec<Value>),
    Option(Option<Box<Value>>),
    Result(Result<Option<Box<Value>>, Option<Box<Value>>>),
    Variant(u32, Option<Box<Value>>),
}

impl Value {
    pub fn ok(payload: Option<Value>) -> Value {
        Value::Result(Ok(payload.map(Box::new)))
    }

    pub fn err(payload: Option<Value>) -> Value {
        Value::Result(Err(payload.map(Box::new)))
    }

    /// The string inside, for values the world declares as strings.
    pub fn into_string(self) -> String {
        match self {
            Value::String(text) => text,
            other => panic!("expected a string, got {other:?}"),
        }
    }
}

thread_local! {
    static WIT: Cell<*const Wit> = const { Cell::new(std::ptr::null()) };
}

/// The metadata the bindings library handed to `wit_dylib_initialize`.
pub fn wit() -> &'static Wit {
    let pointer = WIT.with(Cell::get);
    assert!(!pointer.is_null(), "wit_dylib_initialize has not run");
    // SAFETY: the bindings keep the metadata alive for the whole program.
    unsafe { &*pointer }
}

/// The `cx` of one import or export call.
#[derive(Default)]
pub(crate) struct Context {
    pub stack: Vec<Value>,
    /// Buffers whose pointers were handed to the bindings while popping.
    keep_alive: Vec<Vec<u8>>,
    /// `cabi_realloc` allocations whose release the bindings deferred to the call's end.
    deferred: Vec<(*mut u8, usize, usize)>,
}

impl Context {
    fn pop(&mut self) -> Value {
        self.stack.pop().expect("wit-dylib popped from an empty stack")
    }

    fn lend(&mut self, bytes: Vec<u8>) -> (*mut u8, usize) {
        let length = bytes.len();
        self.keep_alive.push(bytes);
        let buffer = self.keep_alive.last_mut().unwrap();
        (buffer.as_mut_ptr(), length)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        for (pointer, size, align) in self.deferred.drain(..) {
            // SAFETY: recorded from `wit_dylib_dealloc_bytes`, allocated by `cabi_realloc`.
            unsafe { deallocate(pointer, size, align) };
        }
    }
}

pub(crate) unsafe fn cx<'a>(cx: *mut u8) -> &'a mut Context {
    // SAFETY: every `cx` the bindings pass us came from `Box<Context>` or `&mut Context`.
    unsafe { &mut *(cx as *mut Context) }
}

unsafe fn deallocate(pointer: *mut u8, size: usize, align: usize) {
    if size != 0 {
        // SAFETY: the caller passes a live allocation made by `cabi_realloc` with this layout.
        unsafe { alloc::dealloc(pointer, Layout::from_size_align_unchecked(size, align)) };
    }
}

/// Takes ownership of a `cabi_realloc` allocation of `length` bytes with alignment 1.
unsafe fn adopt_bytes(bytes: *mut u8, length: usize) -> Vec<u8> {
    if length == 0 {
        Vec::new()
    } else {
        // SAFETY: `cabi_realloc` allocated exactly `length` bytes with alignment 1.
        unsafe { Vec::from_raw_parts(bytes, length, length) }
    }
}

/// The canonical ABI's allocator, shared by every library in the component.
#[no_mangle]
pub unsafe extern "C" fn cabi_realloc(
    old_pointer: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    if new_size == 0 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { deallocate(old_pointer, old_size, align) };
        return align as *mut u8;
    }
    let layout = Layout::from_size_align(new_size, align).expect("cabi_realloc: bad layout");
    // SAFETY: `layout` has a nonzero size; the old allocation, when there is one, had
    // `old_size` bytes with the same alignment.
    let pointer = unsafe {
        if old_size == 0 {
            alloc::alloc(layout)
        } else {
            alloc::realloc(old_pointer, Layout::from_size_align_unchecked(old_size, align), new_size)
        }
    };
    if pointer.is_null() {
        alloc::handle_alloc_error(layout);
    }
    pointer
}

/// # Safety
/// `metadata` is the bindings' `wit_t`, valid for the whole program.
#[no_mangle]
pub unsafe extern "C" fn wit_dylib_initialize(metadata: *const Wit) {
    // SAFETY: the caller's contract.
    let version = unsafe { (*metadata).version() };
    assert_eq!(
        version,
        ffi::WIT_CURRENT_VERSION,
        "bindings metadata version {version} is not the one this guest was written for"
    );
    WIT.with(|cell| cell.set(metadata));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_dealloc_bytes(
    cx_pointer: *mut u8,
    pointer: *mut u8,
    size: usize,
    align: usize,
    defer: bool,
) {
    if defer {
        unsafe { cx(cx_pointer) }.deferred.push((pointer, size, align));
    } else {
        unsafe { deallocate(pointer, size, align) };
    }
}

#[no_mangle]
pub extern "C" fn wit_dylib_resource_dtor(_ty: usize, _handle: usize) {
    panic!("the eryx world has no resources");
}

macro_rules! scalars {
    ($($push:ident $pop:ident $variant:ident $rust:ty;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $push(cx_pointer: *mut u8, value: $rust) {
            unsafe { cx(cx_pointer) }.stack.push(Value::$variant(value));
        }

        #[no_mangle]
        pub unsafe extern "C" fn $pop(cx_pointer: *mut u8) -> $rust {
            match unsafe { cx(cx_pointer) }.pop() {
                Value::$variant(value) => value,
                other => panic!(concat!(stringify!($pop), ": found {:?}"), other),
            }
        }
    )*};
}

/// The canonical ABI passes a `bool` as an `i32` in which any non-zero value means true; a
/// Rust `bool` parameter holding anything but 0 or 1 would be undefined behaviour.
#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_bool(cx_pointer: *mut u8, value: u32) {
    unsafe { cx(cx_pointer) }.stack.push(Value::Bool(value != 0));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_bool(cx_pointer: *mut u8) -> bool {
    match unsafe { cx(cx_pointer) }.pop() {
        Value::Bool(value) => value,
        other => panic!("wit_dylib_pop_bool: found {other:?}"),
    }
}

scalars! {
    wit_dylib_push_u8 wit_dylib_pop_u8 U8 u8;
    wit_dylib_push_u16 wit_dylib_pop_u16 U16 u16;
    wit_dylib_push_u32 wit_dylib_pop_u32 U32 u32;
    wit_dylib_push_u64 wit_dylib_pop_u64 U64 u64;
    wit_dylib_push_s8 wit_dylib_pop_s8 S8 i8;
    wit_dylib_push_s16 wit_dylib_pop_s16 S16 i16;
    wit_dylib_push_s32 wit_dylib_pop_s32 S32 i32;
    wit_dylib_push_s64 wit_dylib_pop_s64 S64 i64;
    wit_dylib_push_f32 wit_dylib_pop_f32 F32 f32;
    wit_dylib_push_f64 wit_dylib_pop_f64 F64 f64;
    wit_dylib_push_char wit_dylib_pop_char Char u32;
}

macro_rules! typed_indices {
    ($($push:ident $pop:ident;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $push(cx_pointer: *mut u8, _ty: usize, value: u32) {
            unsafe { cx(cx_pointer) }.stack.push(Value::Index(value));
        }

        #[no_mangle]
        pub unsafe extern "C" fn $pop(cx_pointer: *mut u8, _ty: usize) -> u32 {
            match unsafe { cx(cx_pointer) }.pop() {
                Value::Index(value) => value,
                other => panic!(concat!(stringify!($pop), ": found {:?}"), other),
            }
        }
    )*};
}

typed_indices! {
    wit_dylib_push_enum wit_dylib_pop_enum;
    wit_dylib_push_flags wit_dylib_pop_flags;
    wit_dylib_push_borrow wit_dylib_pop_borrow;
    wit_dylib_push_own wit_dylib_pop_own;
    wit_dylib_push_future wit_dylib_pop_future;
    wit_dylib_push_stream wit_dylib_pop_stream;
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_string(cx_pointer: *mut u8, bytes: *mut u8, length: usize) {
    let bytes = unsafe { adopt_bytes(bytes, length) };
    // The component model only passes valid UTF-8 strings into a UTF-8 component.
    let text = String::from_utf8(bytes).expect("string from the host is not UTF-8");
    unsafe { cx(cx_pointer) }.stack.push(Value::String(text));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_string(cx_pointer: *mut u8, pointer: *mut *mut u8) -> usize {
    let context = unsafe { cx(cx_pointer) };
    let Value::String(text) = context.pop() else { panic!("wit_dylib_pop_string: not a string") };
    let (data, length) = context.lend(text.into_bytes());
    unsafe { *pointer = data };
    length
}

fn record_field_count(ty: usize) -> usize {
    wit().records()[ty].fields().len()
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_record(cx_pointer: *mut u8, ty: usize) {
    let context = unsafe { cx(cx_pointer) };
    let count = record_field_count(ty);
    let fields = context.stack.split_off(context.stack.len() - count);
    context.stack.push(Value::Record(fields));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_record(cx_pointer: *mut u8, ty: usize) {
    let context = unsafe { cx(cx_pointer) };
    let Value::Record(fields) = context.pop() else { panic!("wit_dylib_pop_record: not a record") };
    assert_eq!(fields.len(), record_field_count(ty), "record has the wrong number of fields");
    // The first field ends on top of the stack.
    context.stack.extend(fields.into_iter().rev());
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_tuple(_cx: *mut u8, _ty: usize) {
    panic!("the eryx world has no tuples");
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_tuple(_cx: *mut u8, _ty: usize) {
    panic!("the eryx world has no tuples");
}

fn has_payload(ty: ffi::WitType) -> bool {
    ffi::type_kind(ty) != ffi::KIND_EMPTY
}

fn pop_payload(context: &mut Context, present: bool) -> Option<Box<Value>> {
    present.then(|| Box::new(context.pop()))
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_option(cx_pointer: *mut u8, _ty: usize, discriminant: u32) {
    let context = unsafe { cx(cx_pointer) };
    let value = pop_payload(context, discriminant == 1);
    context.stack.push(Value::Option(value));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_option(cx_pointer: *mut u8, _ty: usize) -> u32 {
    let context = unsafe { cx(cx_pointer) };
    match context.pop() {
        Value::Option(None) => 0,
        Value::Option(Some(payload)) => {
            context.stack.push(*payload);
            1
        }
        other => panic!("wit_dylib_pop_option: found {other:?}"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_result(cx_pointer: *mut u8, ty: usize, discriminant: u32) {
    let context = unsafe { cx(cx_pointer) };
    let result = &wit().results()[ty];
    let value = if discriminant == 0 {
        Ok(pop_payload(context, has_payload(result.ok())))
    } else {
        Err(pop_payload(context, has_payload(result.err())))
    };
    context.stack.push(Value::Result(value));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_result(cx_pointer: *mut u8, _ty: usize) -> u32 {
    let context = unsafe { cx(cx_pointer) };
    let (discriminant, payload) = match context.pop() {
        Value::Result(Ok(payload)) => (0, payload),
        Value::Result(Err(payload)) => (1, payload),
        other => panic!("wit_dylib_pop_result: found {other:?}"),
    };
    if let Some(payload) = payload {
        context.stack.push(*payload);
    }
    discriminant
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_variant(cx_pointer: *mut u8, ty: usize, discriminant: u32) {
    let context = unsafe { cx(cx_pointer) };
    let case = &wit().variants()[ty].cases()[discriminant as usize];
    let payload = pop_payload(context, has_payload(case.ty()));
    context.stack.push(Value::Variant(discriminant, payload));
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_variant(cx_pointer: *mut u8, _ty: usize) -> u32 {
    let context = unsafe { cx(cx_pointer) };
    let Value::Variant(discriminant, payload) = context.pop() else {
        panic!("wit_dylib_pop_variant: not a variant")
    };
    if let Some(payload) = payload {
        context.stack.push(*payload);
    }
    discriminant
}

fn is_byte_list(ty: usize) -> bool {
    ffi::type_kind(wit().lists()[ty].ty()) == ffi::KIND_U8
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_list(
    cx_pointer: *mut u8,
    ty: usize,
    bytes: *mut u8,
    length: usize,
) -> bool {
    let context = unsafe { cx(cx_pointer) };
    if is_byte_list(ty) {
        context.stack.push(Value::Bytes(unsafe { adopt_bytes(bytes, length) }));
        true
    } else {
        context.stack.push(Value::List(Vec::with_capacity(length)));
        false
    }
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_list_append(cx_pointer: *mut u8, _ty: usize) {
    let context = unsafe { cx(cx_pointer) };
    let element = context.pop();
    match context.stack.last_mut() {
        Some(Value::List(items)) => items.push(element),
        other => panic!("wit_dylib_list_append: found {other:?}"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_list(
    cx_pointer: *mut u8,
    _ty: usize,
    pointer: *mut *mut u8,
) -> usize {
    let context = unsafe { cx(cx_pointer) };
    match context.pop() {
        Value::Bytes(bytes) => {
            let (data, length) = context.lend(bytes);
            unsafe { *pointer = data };
            length
        }
        Value::List(mut items) => {
            let length = items.len();
            // Elements are handed out from the end of the vector, so reverse it once.
            items.reverse();
            context.stack.push(Value::ListIter(items));
            unsafe { *pointer = std::ptr::null_mut() };
            length
        }
        other => panic!("wit_dylib_pop_list: found {other:?}"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_list_iter_next(cx_pointer: *mut u8, _ty: usize) {
    let context = unsafe { cx(cx_pointer) };
    let next = match context.stack.last_mut() {
        Some(Value::ListIter(items)) => items.pop().expect("list iterator is exhausted"),
        other => panic!("wit_dylib_pop_list_iter_next: found {other:?}"),
    };
    context.stack.push(next);
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_list_iter(cx_pointer: *mut u8, _ty: usize) {
    match unsafe { cx(cx_pointer) }.pop() {
        Value::ListIter(_) => {}
        other => panic!("wit_dylib_pop_list_iter: found {other:?}"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_push_map(_cx: *mut u8, _ty: usize, _length: usize) {
    panic!("the eryx world has no maps");
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_map_append(_cx: *mut u8, _ty: usize) {
    panic!("the eryx world has no maps");
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_map(_cx: *mut u8, _ty: usize) -> usize {
    panic!("the eryx world has no maps");
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_map_iter_next(_cx: *mut u8, _ty: usize) {
    panic!("the eryx world has no maps");
}

#[no_mangle]
pub unsafe extern "C" fn wit_dylib_pop_map_iter(_cx: *mut u8, _ty: usize) {
    panic!("the eryx world has no maps");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(context: &mut Context) -> *mut u8 {
        context as *mut Context as *mut u8
    }

    #[test]
    fn a_bool_is_any_non_zero_i32() {
        let mut context = Context::default();
        for raw in [0, 1, 2, 0x100, u32::MAX] {
            unsafe { wit_dylib_push_bool(pointer(&mut context), raw) };
            assert_eq!(unsafe { wit_dylib_pop_bool(pointer(&mut context)) }, raw != 0, "{raw}");
        }
    }

    #[test]
    fn a_list_is_handed_out_in_order_and_its_iterator_removed() {
        let mut context = Context::default();
        context.stack.push(Value::List(vec![Value::U32(1), Value::U32(2), Value::U32(3)]));
        let mut data = std::ptr::null_mut();
        let length = unsafe { wit_dylib_pop_list(pointer(&mut context), 0, &mut data) };
        assert_eq!(length, 3);
        assert!(data.is_null(), "a list of non-bytes is lowered element by element");
        let mut seen = Vec::new();
        for _ in 0..length {
            unsafe { wit_dylib_pop_list_iter_next(pointer(&mut context), 0) };
            seen.push(unsafe { wit_dylib_pop_u32(pointer(&mut context)) });
        }
        unsafe { wit_dylib_pop_list_iter(pointer(&mut context), 0) };
        assert_eq!(seen, [1, 2, 3]);
        assert!(context.stack.is_empty());
    }

    #[test]
    fn bytes_are_lent_for_the_call_and_strings_lowered_whole() {
        let mut context = Context::default();
        context.stack.push(Value::Bytes(vec![7, 8, 9]));
        let mut data = std::ptr::null_mut();
        let length = unsafe { wit_dylib_pop_list(pointer(&mut context), 0, &mut data) };
        assert_eq!(unsafe { std::slice::from_raw_parts(data, length) }, [7, 8, 9]);
        context.stack.push(Value::String("héllo".into()));
        let mut text = std::ptr::null_mut();
        let length = unsafe { wit_dylib_pop_string(pointer(&mut context), &mut text) };
        assert_eq!(unsafe { std::slice::from_raw_parts(text, length) }, "héllo".as_bytes());
    }

    #[test]
    fn results_and_options_keep_their_payloads() {
        let mut context = Context::default();
        context.stack.push(Value::err(Some(Value::String("no".into()))));
        assert_eq!(unsafe { wit_dylib_pop_result(pointer(&mut context), 0) }, 1);
        assert_eq!(context.stack.pop(), Some(Value::String("no".into())));
        context.stack.push(Value::Option(None));
        assert_eq!(unsafe { wit_dylib_pop_option(pointer(&mut context), 0) }, 0);
        assert!(context.stack.is_empty());
    }

    /// A hand-built metadata table: record 0 has two fields; result 0 is `result<T, E>` with
    /// payloads on both sides, result 1 `result<_, E>`; list 0 is `list<u8>`, list 1 another.
    fn install_test_wit() {
        use crate::ffi::for_tests::{field, list, record, result, wit};
        const STRING: ffi::WitType = 0x11;
        let fields: &'static [ffi::Field] = Box::leak(Box::new([field(STRING), field(STRING)]));
        let records: &'static [ffi::Record] = Box::leak(Box::new([record(fields)]));
        let results: &'static [ffi::ResultType] = Box::leak(Box::new([result(STRING, STRING), result(ffi::KIND_EMPTY, STRING)]));
        let lists: &'static [ffi::ListType] = Box::leak(Box::new([list(ffi::KIND_U8), list(STRING)]));
        let metadata: &'static Wit = Box::leak(Box::new(wit(records, results, lists)));
        unsafe { wit_dylib_initialize(metadata) };
    }

    #[test]
    fn records_gather_their_fields_in_order_and_give_them_back_first_on_top() {
        install_test_wit();
        let mut context = Context::default();
        context.stack.extend([Value::String("a".into()), Value::String("b".into())]);
        unsafe { wit_dylib_push_record(pointer(&mut context), 0) };
        assert_eq!(context.stack, [Value::Record(vec![Value::String("a".into()), Value::String("b".into())])]);
        unsafe { wit_dylib_pop_record(pointer(&mut context), 0) };
        assert_eq!(context.stack.pop(), Some(Value::String("a".into())), "the first field is on top");
        assert_eq!(context.stack.pop(), Some(Value::String("b".into())));
    }

    #[test]
    fn results_take_a_payload_only_where_the_type_has_one() {
        install_test_wit();
        let mut context = Context::default();
        context.stack.push(Value::String("why".into()));
        unsafe { wit_dylib_push_result(pointer(&mut context), 0, 1) };
        assert_eq!(context.stack, [Value::err(Some(Value::String("why".into())))]);
        context.stack.clear();
        context.stack.push(Value::U32(7));
        unsafe { wit_dylib_push_result(pointer(&mut context), 1, 0) };
        assert_eq!(context.stack, [Value::U32(7), Value::ok(None)], "`result<_, E>`'s ok has no payload to take");
    }

    #[test]
    fn a_byte_list_is_adopted_whole_and_another_list_grows_by_appends() {
        install_test_wit();
        let mut context = Context::default();
        let bytes = unsafe { cabi_realloc(std::ptr::null_mut(), 0, 1, 3) };
        unsafe { std::ptr::copy_nonoverlapping([1u8, 2, 3].as_ptr(), bytes, 3) };
        assert!(unsafe { wit_dylib_push_list(pointer(&mut context), 0, bytes, 3) }, "bytes need no appends");
        assert_eq!(context.stack.pop(), Some(Value::Bytes(vec![1, 2, 3])));
        assert!(!unsafe { wit_dylib_push_list(pointer(&mut context), 1, std::ptr::null_mut(), 2) });
        for text in ["x", "y"] {
            context.stack.push(Value::String(text.into()));
            unsafe { wit_dylib_list_append(pointer(&mut context), 1) };
        }
        assert_eq!(context.stack, [Value::List(vec![Value::String("x".into()), Value::String("y".into())])]);
    }
}
