//! Rust mirrors of the data structures in `wit_dylib.h` (the header shipped in the
//! `wit-dylib` crate), written for this project. Only the layout matters: the generated
//! bindings library places a `wit_t` in memory and hands us a pointer to it.
//!
//! Every field is private and nothing here constructs these types: a value of them only
//! exists behind the pointer `wit_dylib_initialize` receives, whose tables and names the
//! bindings keep alive for the whole program. That is what makes the safe accessors below
//! (which read through the pointers) sound.

use std::ffi::{c_char, CStr};

pub type WitType = u32;

pub const WIT_CURRENT_VERSION: u32 = 3;

pub const KIND_U8: u32 = 0;
pub const KIND_EMPTY: u32 = 0xff;

pub fn type_kind(ty: WitType) -> u32 {
    ty & 0xff
}

#[repr(C)]
pub struct ImportFunc {
    interface: *const c_char,
    name: *const c_char,
    implementation: Option<unsafe extern "C" fn(cx: *mut u8)>,
    async_impl: Option<unsafe extern "C" fn(cx: *mut u8, area: *mut u8) -> u32>,
    async_lift_impl: Option<unsafe extern "C" fn(cx: *mut u8, area: *mut u8)>,
    nparams: usize,
    params: *const WitType,
    result: WitType,
    async_abi_area_size: usize,
    async_abi_area_align: usize,
}

#[repr(C)]
pub struct ExportFunc {
    interface: *const c_char,
    name: *const c_char,
    task_return: Option<unsafe extern "C" fn(cx: *mut u8)>,
    nparams: usize,
    params: *const WitType,
    result: WitType,
}

#[repr(C)]
pub struct Field {
    name: *const c_char,
    ty: WitType,
}

#[repr(C)]
pub struct Record {
    interface: *const c_char,
    name: *const c_char,
    nfields: usize,
    fields: *const Field,
}

#[repr(C)]
pub struct Case {
    name: *const c_char,
    ty: WitType,
}

#[repr(C)]
pub struct Variant {
    interface: *const c_char,
    name: *const c_char,
    ncases: usize,
    cases: *const Case,
}

#[repr(C)]
pub struct OptionType {
    interface: *const c_char,
    name: *const c_char,
    ty: WitType,
}

#[repr(C)]
pub struct ResultType {
    interface: *const c_char,
    name: *const c_char,
    ok: WitType,
    err: WitType,
}

#[repr(C)]
pub struct ListType {
    interface: *const c_char,
    name: *const c_char,
    ty: WitType,
}

/// `wit_t`: counts and pointers for every kind of item, in the header's order.
#[repr(C)]
pub struct Wit {
    version: u32,
    num_import_funcs: usize,
    import_funcs: *const ImportFunc,
    num_export_funcs: usize,
    export_funcs: *const ExportFunc,
    num_resources: usize,
    resources: *const u8,
    num_records: usize,
    records: *const Record,
    num_flags: usize,
    flags: *const u8,
    num_tuples: usize,
    tuples: *const u8,
    num_variants: usize,
    variants: *const Variant,
    num_enums: usize,
    enums: *const u8,
    num_options: usize,
    options: *const OptionType,
    num_results: usize,
    results: *const ResultType,
    num_lists: usize,
    lists: *const ListType,
    num_maps: usize,
    maps: *const u8,
    num_fixed_length_lists: usize,
    fixed_length_lists: *const u8,
    num_futures: usize,
    futures: *const u8,
    num_streams: usize,
    streams: *const u8,
    num_aliases: usize,
    aliases: *const u8,
}

unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the bindings library keeps every table alive for the whole program.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// A name of the metadata.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string that lives for the whole program.
unsafe fn c_str(ptr: *const c_char) -> &'static str {
    if ptr.is_null() {
        return "";
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap_or("")
}

impl ImportFunc {
    pub fn name(&self) -> &'static str {
        // SAFETY: a metadata name (see the module's comment).
        unsafe { c_str(self.name) }
    }
    pub fn implementation(&self) -> Option<unsafe extern "C" fn(cx: *mut u8)> {
        self.implementation
    }
    pub fn result(&self) -> WitType {
        self.result
    }
    /// The thunk that starts an async call (`async func` imports only).
    pub fn async_impl(&self) -> Option<unsafe extern "C" fn(cx: *mut u8, area: *mut u8) -> u32> {
        self.async_impl
    }
    /// The thunk that lifts an async call's result from its area once it returned.
    pub fn async_lift_impl(&self) -> Option<unsafe extern "C" fn(cx: *mut u8, area: *mut u8)> {
        self.async_lift_impl
    }
    /// The size and alignment of the memory an async call lowers into (0, 1 for none).
    pub fn async_area_layout(&self) -> (usize, usize) {
        (self.async_abi_area_size, self.async_abi_area_align.max(1))
    }
}

impl ExportFunc {
    pub fn name(&self) -> &'static str {
        // SAFETY: a metadata name (see the module's comment).
        unsafe { c_str(self.name) }
    }
    /// The `task.return` thunk of an async export: it pops the result from `cx` and
    /// delivers it to the caller.
    pub fn task_return(&self) -> Option<unsafe extern "C" fn(cx: *mut u8)> {
        self.task_return
    }
}

impl ResultType {
    pub fn ok(&self) -> WitType {
        self.ok
    }
    pub fn err(&self) -> WitType {
        self.err
    }
}

impl Case {
    pub fn ty(&self) -> WitType {
        self.ty
    }
}

impl ListType {
    pub fn ty(&self) -> WitType {
        self.ty
    }
}

// SAFETY (for every `slice` below): the count and the pointer are a table of the metadata
// (see the module's comment).
impl Wit {
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn import_funcs(&self) -> &[ImportFunc] {
        unsafe { slice(self.import_funcs, self.num_import_funcs) }
    }
    pub fn export_funcs(&self) -> &[ExportFunc] {
        unsafe { slice(self.export_funcs, self.num_export_funcs) }
    }
    pub fn records(&self) -> &[Record] {
        unsafe { slice(self.records, self.num_records) }
    }
    pub fn variants(&self) -> &[Variant] {
        unsafe { slice(self.variants, self.num_variants) }
    }
    pub fn results(&self) -> &[ResultType] {
        unsafe { slice(self.results, self.num_results) }
    }
    pub fn lists(&self) -> &[ListType] {
        unsafe { slice(self.lists, self.num_lists) }
    }
}

impl Record {
    pub fn fields(&self) -> &[Field] {
        unsafe { slice(self.fields, self.nfields) }
    }
}

impl Variant {
    pub fn cases(&self) -> &[Case] {
        unsafe { slice(self.cases, self.ncases) }
    }
}

/// Metadata built by hand, for the value stack's tests: records, results and lists only.
#[cfg(test)]
pub(crate) mod for_tests {
    use super::*;

    pub fn field(ty: WitType) -> Field {
        Field { name: std::ptr::null(), ty }
    }

    pub fn record(fields: &'static [Field]) -> Record {
        Record { interface: std::ptr::null(), name: std::ptr::null(), nfields: fields.len(), fields: fields.as_ptr() }
    }

    pub fn result(ok: WitType, err: WitType) -> ResultType {
        ResultType { interface: std::ptr::null(), name: std::ptr::null(), ok, err }
    }

    pub fn list(ty: WitType) -> ListType {
        ListType { interface: std::ptr::null(), name: std::ptr::null(), ty }
    }

    pub fn wit(records: &'static [Record], results: &'static [ResultType], lists: &'static [ListType]) -> Wit {
        let null = std::ptr::null();
        Wit {
            version: WIT_CURRENT_VERSION,
            num_import_funcs: 0,
            import_funcs: null as *const ImportFunc,
            num_export_funcs: 0,
            export_funcs: null as *const ExportFunc,
            num_resources: 0,
            resources: null,
            num_records: records.len(),
            records: records.as_ptr(),
            num_flags: 0,
            flags: null,
            num_tuples: 0,
            tuples: null,
            num_variants: 0,
            variants: null as *const Variant,
            num_enums: 0,
            enums: null,
            num_options: 0,
            options: null as *const OptionType,
            num_results: results.len(),
            results: results.as_ptr(),
            num_lists: lists.len(),
            lists: lists.as_ptr(),
            num_maps: 0,
            maps: null,
            num_fixed_length_lists: 0,
            fixed_length_lists: null,
            num_futures: 0,
            futures: null,
            num_streams: 0,
            streams: null,
            num_aliases: 0,
            aliases: null,
        }
    }
}
