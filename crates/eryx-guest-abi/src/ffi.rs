//! Rust mirrors of the data structures in `wit_dylib.h` (the header shipped in the
//! `wit-dylib` crate), written for this project. Only the layout matters: the generated
//! bindings library places a `wit_t` in memory and hands us a pointer to it.

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
    pub interface: *const c_char,
    pub name: *const c_char,
    pub implementation: Option<unsafe extern "C" fn(cx: *mut u8)>,
    pub async_impl: *const u8,
    pub async_lift_impl: *const u8,
    pub nparams: usize,
    pub params: *const WitType,
    pub result: WitType,
    pub async_abi_area_size: usize,
    pub async_abi_area_align: usize,
}

#[repr(C)]
pub struct ExportFunc {
    pub interface: *const c_char,
    pub name: *const c_char,
    pub task_return: *const u8,
    pub nparams: usize,
    pub params: *const WitType,
    pub result: WitType,
}

#[repr(C)]
pub struct Field {
    pub name: *const c_char,
    pub ty: WitType,
}

#[repr(C)]
pub struct Record {
    pub interface: *const c_char,
    pub name: *const c_char,
    pub nfields: usize,
    pub fields: *const Field,
}

#[repr(C)]
pub struct Case {
    pub name: *const c_char,
    pub ty: WitType,
}

#[repr(C)]
pub struct Variant {
    pub interface: *const c_char,
    pub name: *const c_char,
    pub ncases: usize,
    pub cases: *const Case,
}

#[repr(C)]
pub struct OptionType {
    pub interface: *const c_char,
    pub name: *const c_char,
    pub ty: WitType,
}

#[repr(C)]
pub struct ResultType {
    pub interface: *const c_char,
    pub name: *const c_char,
    pub ok: WitType,
    pub err: WitType,
}

#[repr(C)]
pub struct ListType {
    pub interface: *const c_char,
    pub name: *const c_char,
    pub ty: WitType,
}

/// `wit_t`: counts and pointers for every kind of item, in the header's order.
#[repr(C)]
pub struct Wit {
    pub version: u32,
    pub num_import_funcs: usize,
    pub import_funcs: *const ImportFunc,
    pub num_export_funcs: usize,
    pub export_funcs: *const ExportFunc,
    pub num_resources: usize,
    pub resources: *const u8,
    pub num_records: usize,
    pub records: *const Record,
    pub num_flags: usize,
    pub flags: *const u8,
    pub num_tuples: usize,
    pub tuples: *const u8,
    pub num_variants: usize,
    pub variants: *const Variant,
    pub num_enums: usize,
    pub enums: *const u8,
    pub num_options: usize,
    pub options: *const OptionType,
    pub num_results: usize,
    pub results: *const ResultType,
    pub num_lists: usize,
    pub lists: *const ListType,
    pub num_maps: usize,
    pub maps: *const u8,
    pub num_fixed_length_lists: usize,
    pub fixed_length_lists: *const u8,
    pub num_futures: usize,
    pub futures: *const u8,
    pub num_streams: usize,
    pub streams: *const u8,
    pub num_aliases: usize,
    pub aliases: *const u8,
}

unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: the bindings library keeps every table alive for the whole program.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

pub fn c_str(ptr: *const c_char) -> &'static str {
    if ptr.is_null() {
        return "";
    }
    // SAFETY: names in the metadata are NUL-terminated and live for the whole program.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap_or("")
}

impl Wit {
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
