//! Interface validation: does a component implement the world in `wit/runtime.wit`?
//!
//! The component's own world is decoded from its type information and compared, function by
//! function, with the world this crate was compiled against. Types are compared by
//! structure (a record's fields and their types, a result's arms, ...), not by the names
//! of their definitions. A mismatch names the function, its type and the expected type:
//! the release step (`cargo xtask dist`) refuses to ship such a component and the host
//! refuses to load it, instead of failing later with a linker error.
//!
//! [`flags`] holds the sandbox flags the xtask and the host share, [`files`] the atomic
//! file writes both use.

pub mod files;
#[cfg(feature = "flags")]
pub mod flags;

use std::fmt::Write;

use anyhow::{bail, Context, Result};
use wit_parser::decoding::DecodedWasm;
use wit_parser::{Function, FunctionKind, Resolve, Type, TypeDefKind, WorldId, WorldItem, WorldKey};

/// The world every guest implements, as the build and the host know it.
pub const WORLD_WIT: &str = include_str!("../../../wit/runtime.wit");
/// The world's name in `WORLD_WIT`.
pub const WORLD_NAME: &str = "sandbox";

/// The expected world, parsed.
fn expected_world(wit: &str) -> Result<(Resolve, WorldId)> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("runtime.wit", wit).context("parse the expected world")?;
    let world = resolve.select_world(&[package], Some(WORLD_NAME)).context("find the expected world")?;
    Ok((resolve, world))
}

/// The qualified name of the expected world, e.g. `eryx:sandbox/sandbox`.
pub fn world_name() -> String {
    expected_world(WORLD_WIT)
        .map(|(resolve, world)| {
            let package = resolve.worlds[world].package.map(|package| &resolve.packages[package].name);
            match package {
                Some(name) => format!("{}:{}/{}", name.namespace, name.name, WORLD_NAME),
                None => WORLD_NAME.to_owned(),
            }
        })
        .unwrap_or_else(|_| WORLD_NAME.to_owned())
}

/// Checks that the component `bytes` (called `label` in errors) implements the world in
/// `wit/runtime.wit`.
pub fn check_component(bytes: &[u8], label: &str) -> Result<()> {
    check_component_against(bytes, label, WORLD_WIT)
}

/// Checks `bytes` against the world `sandbox` of the WIT text `wit`.
pub fn check_component_against(bytes: &[u8], label: &str, wit: &str) -> Result<()> {
    let (expected_resolve, expected_world) = expected_world(wit)?;
    let decoded = wit_parser::decoding::decode(bytes).with_context(|| format!("{label} is not a readable component"))?;
    let DecodedWasm::Component(actual_resolve, actual_world) = decoded else {
        bail!("{label} is a WIT package, not a component");
    };
    let problems = compare(&expected_resolve, expected_world, &actual_resolve, actual_world);
    if let Some(first) = problems.first() {
        let mut message = format!("component {label} does not implement {}: {first}", world_name());
        for more in &problems[1..] {
            let _ = write!(message, "; {more}");
        }
        bail!(message);
    }
    Ok(())
}

/// Checks that `bytes` is a WASI command: a component exporting the `wasi:cli/run`
/// interface, which is what every WASI host calls.
pub fn check_command(bytes: &[u8], label: &str) -> Result<()> {
    let decoded = wit_parser::decoding::decode(bytes).with_context(|| format!("{label} is not a readable component"))?;
    let DecodedWasm::Component(resolve, world) = decoded else {
        bail!("{label} is a WIT package, not a component");
    };
    let exports_run = resolve.worlds[world].exports.keys().any(|key| match key {
        WorldKey::Interface(id) => resolve.id_of(*id).is_some_and(|name| name.starts_with("wasi:cli/run@")),
        WorldKey::Name(_) => false,
    });
    if !exports_run {
        bail!("component {label} is not a WASI command: it does not export `wasi:cli/run`");
    }
    Ok(())
}

/// The module a preview1 command imports everything from.
pub const PREVIEW1_MODULE: &str = "wasi_snapshot_preview1";

/// Checks that `bytes` is a WASI preview1 command: a core module (not a component) that
/// exports `_start` and its memory and imports nothing but [`PREVIEW1_MODULE`], so hosts that
/// load only such modules (Node's `node:wasi`, browser shims) can run it.
pub fn check_core_command(bytes: &[u8], label: &str) -> Result<()> {
    use wasmparser::{Encoding, ExternalKind, Payload};
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.with_context(|| format!("{label} is not a readable wasm module"))? {
            Payload::Version { encoding: Encoding::Component, .. } => bail!("{label} is a component, not a core module"),
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.with_context(|| format!("read the imports of {label}"))?;
                    if import.module != PREVIEW1_MODULE {
                        bail!("{label} imports `{}` from `{}`: a preview1 command imports only from {PREVIEW1_MODULE}", import.name, import.module);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.with_context(|| format!("read the exports of {label}"))?;
                    exports.push((export.name.to_owned(), export.kind));
                }
            }
            _ => {}
        }
    }
    for (name, kind) in [("_start", ExternalKind::Func), ("memory", ExternalKind::Memory)] {
        if !exports.iter().any(|(exported, exported_kind)| exported == name && *exported_kind == kind) {
            bail!("{label} is not a preview1 command: it does not export `{name}`");
        }
    }
    Ok(())
}

/// The functions a world exports or imports at its top level, by name.
fn functions<'a>(items: impl Iterator<Item = (&'a WorldKey, &'a WorldItem)>) -> Vec<(String, &'a Function)> {
    items
        .filter_map(|(key, item)| match item {
            WorldItem::Function(function) => Some((key_name(key), function)),
            _ => None,
        })
        .collect()
}

fn key_name(key: &WorldKey) -> String {
    match key {
        WorldKey::Name(name) => name.clone(),
        WorldKey::Interface(id) => format!("interface {}", id.index()),
    }
}

fn compare(expected: &Resolve, expected_world: WorldId, actual: &Resolve, actual_world: WorldId) -> Vec<String> {
    let mut problems = Vec::new();
    let expected_world = &expected.worlds[expected_world];
    let actual_world = &actual.worlds[actual_world];
    let directions = [
        ("export", functions(expected_world.exports.iter()), functions(actual_world.exports.iter())),
        ("import", functions(expected_world.imports.iter()), functions(actual_world.imports.iter())),
    ];
    for (direction, wanted, present) in &directions {
        for (name, function) in wanted {
            let wanted_type = function_type(expected, function);
            match present.iter().find(|(present_name, _)| present_name == name) {
                None => problems.push(format!("{direction} `{name}` is missing (expected {wanted_type})")),
                Some((_, found)) => {
                    let found_type = function_type(actual, found);
                    if found_type != wanted_type {
                        problems.push(format!("{direction} `{name}` has type {found_type} (expected {wanted_type})"));
                    }
                }
            }
        }
    }
    // A function import the world does not offer could never be satisfied by the host.
    let (_, offered, imported) = &directions[1];
    for (name, function) in imported {
        if !offered.iter().any(|(offered_name, _)| offered_name == name) {
            problems.push(format!("import `{name}` ({}) is not part of the world", function_type(actual, function)));
        }
    }
    problems
}

/// A function's type, rendered structurally.
pub fn function_type(resolve: &Resolve, function: &Function) -> String {
    let prefix = match function.kind {
        FunctionKind::AsyncFreestanding | FunctionKind::AsyncMethod(_) | FunctionKind::AsyncStatic(_) => "async func",
        _ => "func",
    };
    let params: Vec<String> =
        function.params.iter().map(|param| format!("{}: {}", param.name, type_string(resolve, &param.ty))).collect();
    let mut text = format!("{prefix}({})", params.join(", "));
    if let Some(result) = &function.result {
        let _ = write!(text, " -> {}", type_string(resolve, result));
    }
    text
}

fn optional(resolve: &Resolve, ty: &Option<Type>) -> String {
    ty.as_ref().map(|ty| type_string(resolve, ty)).unwrap_or_else(|| "_".to_owned())
}

/// A type rendered by structure: two types that the canonical ABI treats alike render alike.
pub fn type_string(resolve: &Resolve, ty: &Type) -> String {
    let id = match ty {
        Type::Bool => return "bool".into(),
        Type::U8 => return "u8".into(),
        Type::U16 => return "u16".into(),
        Type::U32 => return "u32".into(),
        Type::U64 => return "u64".into(),
        Type::S8 => return "s8".into(),
        Type::S16 => return "s16".into(),
        Type::S32 => return "s32".into(),
        Type::S64 => return "s64".into(),
        Type::F32 => return "f32".into(),
        Type::F64 => return "f64".into(),
        Type::Char => return "char".into(),
        Type::String => return "string".into(),
        Type::ErrorContext => return "error-context".into(),
        Type::Id(id) => *id,
    };
    let definition = &resolve.types[id];
    let list = |items: Vec<String>| items.join(", ");
    match &definition.kind {
        TypeDefKind::Record(record) => format!(
            "record {{ {} }}",
            list(record.fields.iter().map(|field| format!("{}: {}", field.name, type_string(resolve, &field.ty))).collect())
        ),
        TypeDefKind::Resource => format!("resource {}", definition.name.as_deref().unwrap_or("?")),
        TypeDefKind::Handle(wit_parser::Handle::Own(resource)) => format!("own<{}>", type_string(resolve, &Type::Id(*resource))),
        TypeDefKind::Handle(wit_parser::Handle::Borrow(resource)) => {
            format!("borrow<{}>", type_string(resolve, &Type::Id(*resource)))
        }
        TypeDefKind::Flags(flags) => format!("flags {{ {} }}", list(flags.flags.iter().map(|flag| flag.name.clone()).collect())),
        TypeDefKind::Tuple(tuple) => format!("tuple<{}>", list(tuple.types.iter().map(|ty| type_string(resolve, ty)).collect())),
        TypeDefKind::Variant(variant) => format!(
            "variant {{ {} }}",
            list(
                variant
                    .cases
                    .iter()
                    .map(|case| match &case.ty {
                        Some(ty) => format!("{}({})", case.name, type_string(resolve, ty)),
                        None => case.name.clone(),
                    })
                    .collect()
            )
        ),
        TypeDefKind::Enum(enumeration) => {
            format!("enum {{ {} }}", list(enumeration.cases.iter().map(|case| case.name.clone()).collect()))
        }
        TypeDefKind::Option(ty) => format!("option<{}>", type_string(resolve, ty)),
        TypeDefKind::Result(result) => format!("result<{}, {}>", optional(resolve, &result.ok), optional(resolve, &result.err)),
        TypeDefKind::List(ty) => format!("list<{}>", type_string(resolve, ty)),
        TypeDefKind::Map(key, value) => format!("map<{}, {}>", type_string(resolve, key), type_string(resolve, value)),
        TypeDefKind::FixedLengthList(ty, length) => format!("list<{}, {length}>", type_string(resolve, ty)),
        TypeDefKind::Future(ty) => format!("future<{}>", optional(resolve, ty)),
        TypeDefKind::Stream(ty) => format!("stream<{}>", optional(resolve, ty)),
        TypeDefKind::Type(ty) => type_string(resolve, ty),
        TypeDefKind::Unknown => "unknown".into(),
    }
}

/// Components built from variants of the world, for tests (here and in the host).
#[cfg(any(test, feature = "test-components"))]
pub mod test_components {
    use super::*;

    /// A component built from `wit` (a variant of the real world) with a dummy core module.
    pub fn component_for(wit: &str) -> Vec<u8> {
        let mut resolve = Resolve::default();
        let package = resolve.push_str("test.wit", wit).expect("the test world parses");
        let world = resolve.select_world(&[package], Some(WORLD_NAME)).expect("the test world is named sandbox");
        let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8, false)
            .expect("embed the test world");
        wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).encode())
            .expect("encode the test component")
    }

    /// The real world without the one line that contains `needle`.
    pub fn without_line(needle: &str) -> String {
        let lines: Vec<&str> = WORLD_WIT.lines().filter(|line| !line.contains(needle)).collect();
        assert_eq!(lines.len() + 1, WORLD_WIT.lines().count(), "`{needle}` is on exactly one line of the world");
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::test_components::{component_for, without_line};
    use super::*;

    #[test]
    fn a_component_of_the_world_passes() {
        check_component(&component_for(WORLD_WIT), "runtime-test.wasm").unwrap();
    }

    #[test]
    fn a_missing_export_is_named() {
        let bytes = component_for(&without_line("export clear-state:"));
        let error = format!("{:#}", check_component(&bytes, "runtime-test.wasm").unwrap_err());
        assert!(error.contains("component runtime-test.wasm does not implement eryx:sandbox/sandbox"), "{error}");
        assert!(error.contains("export `clear-state` is missing (expected func() -> result<_, string>)"), "{error}");
    }

    #[test]
    fn an_export_of_another_type_is_named_with_both_types() {
        let wit = WORLD_WIT.replace(
            "export restore-state: func(data: list<u8>) -> result<list<string>, string>;",
            "export restore-state: func(data: list<u8>) -> result<list<string>, u32>;",
        );
        assert_ne!(wit, WORLD_WIT);
        let error = format!("{:#}", check_component(&component_for(&wit), "runtime-test.wasm").unwrap_err());
        assert!(
            error.contains(
                "export `restore-state` has type func(data: list<u8>) -> result<list<string>, u32> \
                 (expected func(data: list<u8>) -> result<list<string>, string>)"
            ),
            "{error}"
        );
    }

    #[test]
    fn an_import_the_world_does_not_offer_is_named() {
        let wit = WORLD_WIT.replace(
            "    import list-callbacks:",
            "    import read-host-file: func(path: string) -> list<u8>;\n    import list-callbacks:",
        );
        let error = format!("{:#}", check_component(&component_for(&wit), "runtime-test.wasm").unwrap_err());
        assert!(error.contains("import `read-host-file` (func(path: string) -> list<u8>) is not part of the world"), "{error}");
    }

    #[test]
    fn a_sandbox_component_is_not_a_command() {
        let error = format!("{:#}", check_command(&component_for(WORLD_WIT), "runtime-test.wasm").unwrap_err());
        assert!(error.contains("runtime-test.wasm is not a WASI command"), "{error}");
    }

    #[test]
    fn bytes_that_are_no_component_are_an_error() {
        let error = format!("{:#}", check_component(b"\0asm\x01\0\0\0", "core.wasm").unwrap_err());
        assert!(error.contains("core.wasm"), "{error}");
    }

    /// A core module importing one function from `import_module`, with one function and one
    /// memory, exporting them under the names given.
    fn core_module(import_module: &str, function_export: &str, memory_export: &str) -> Vec<u8> {
        fn name(text: &str) -> Vec<u8> {
            let mut bytes = vec![text.len() as u8];
            bytes.extend_from_slice(text.as_bytes());
            bytes
        }
        fn section(id: u8, contents: Vec<u8>) -> Vec<u8> {
            let mut bytes = vec![id, contents.len() as u8];
            bytes.extend(contents);
            bytes
        }
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend(section(1, vec![1, 0x60, 0, 0]));
        module.extend(section(2, [vec![1], name(import_module), name("fd_write"), vec![0x00, 0]].concat()));
        module.extend(section(3, vec![1, 0]));
        module.extend(section(5, vec![1, 0x00, 1]));
        module.extend(section(7, [vec![2], name(function_export), vec![0x00, 1], name(memory_export), vec![0x02, 0]].concat()));
        module.extend(section(10, vec![1, 2, 0, 0x0b]));
        module
    }

    #[test]
    fn a_preview1_command_module_passes_and_others_are_named() {
        check_core_command(&core_module(PREVIEW1_MODULE, "_start", "memory"), "python.core.wasm").unwrap();
        let error = format!("{:#}", check_core_command(&core_module("env", "_start", "memory"), "python.core.wasm").unwrap_err());
        assert!(error.contains("imports `fd_write` from `env`"), "{error}");
        let error = format!("{:#}", check_core_command(&core_module(PREVIEW1_MODULE, "_initialize", "memory"), "python.core.wasm").unwrap_err());
        assert!(error.contains("does not export `_start`"), "{error}");
        let error = format!("{:#}", check_core_command(&core_module(PREVIEW1_MODULE, "_start", "mem"), "python.core.wasm").unwrap_err());
        assert!(error.contains("does not export `memory`"), "{error}");
        let error = format!("{:#}", check_core_command(&component_for(WORLD_WIT), "runtime-test.wasm").unwrap_err());
        assert!(error.contains("is a component, not a core module"), "{error}");
    }
}
