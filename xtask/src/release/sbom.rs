//! A CycloneDX 1.5 SBOM of what the release bundle is made of: the guest workspace's crates
//! (from `crates/Cargo.lock`, with their registry checksums and dependency edges), the source
//! tarballs CPython is built from, the pinned C runtime and its wheel, and the toolchain that
//! built them (scope `excluded`: it is not inside the artifacts, but for compiler-rt's builtins,
//! which are). It is reproducible: the timestamp is the build's fixed
//! `SOURCE_DATE_EPOCH` and the serial number is derived from the document's own content.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::build::packages::{wheel_metadata, PackageSet};
use crate::inputs::cache::sha256_bytes;
use crate::inputs::lock::{CargoLock, Lock};

/// `1767225600` → `2026-01-01T00:00:00Z` (proleptic Gregorian, UTC).
pub fn rfc3339(epoch_seconds: i64) -> String {
    let days = epoch_seconds.div_euclid(86_400);
    let seconds = epoch_seconds.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn purl_cargo(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

/// The SBOM for a release of `product` at `version`. `patched` names the crates the build
/// patches (they get a pedigree note).
pub fn build(product: &str, version: &str, lock: &Lock, guest_cargo_lock: &str, toolchain: &[(&str, String)], sets: &[PackageSet]) -> Result<Value> {
    let cargo_lock = CargoLock::parse(guest_cargo_lock, "crates/Cargo.lock")?;
    // `name` alone or `name version` identify a dependency in Cargo.lock.
    let mut versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for package in &cargo_lock.package {
        versions.entry(&package.name).or_default().push(&package.version);
    }
    let reference = |dependency: &str| -> String {
        let mut parts = dependency.split(' ');
        let name = parts.next().unwrap_or_default();
        let version = parts.next().unwrap_or_else(|| versions.get(name).and_then(|found| found.first()).copied().unwrap_or(""));
        purl_cargo(name, version)
    };

    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for package in &cargo_lock.package {
        let purl = purl_cargo(&package.name, &package.version);
        let mut component = json!({
            "type": "library",
            "bom-ref": purl,
            "name": package.name,
            "version": package.version,
            "purl": purl,
            "scope": "required",
        });
        if let Some(checksum) = &package.checksum {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": checksum }]);
        }
        if package.source.is_none() {
            component["description"] = json!("a crate of this repository's guest workspace");
        }
        if let Some(patched) = lock.patched_crates.iter().find(|patched| patched.name == package.name && patched.version == package.version) {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": patched.crate_sha256 }]);
            component["pedigree"] = json!({
                "notes": format!(
                    "patched at build time from the pinned registry crate; files: {}",
                    patched.files.iter().map(|file| format!("{} ({} -> {})", file.path, file.original_sha256, file.patched_sha256)).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        components.push(component);
        let mut depends_on: Vec<String> = package.dependencies.iter().map(|dependency| reference(dependency)).collect();
        depends_on.sort();
        dependencies.push(json!({ "ref": purl, "dependsOn": depends_on }));
    }

    let wheel = lock.wheel_for_host()?;
    let wheel_purl = format!("pkg:pypi/{}@{}", lock.cpython.wheel_project, lock.cpython.wheel_version);
    components.push(json!({
        "type": "library",
        "bom-ref": wheel_purl,
        "name": lock.cpython.wheel_project,
        "version": lock.cpython.wheel_version,
        "purl": wheel_purl,
        "scope": "required",
        "description": format!("the wheel {} that carries the WASI C runtime the components link", wheel.filename),
        "hashes": [{ "alg": "SHA-256", "content": wheel.sha256 }],
    }));
    for member in &lock.cpython.members {
        let bom_ref = format!("{wheel_purl}#{}", member.name);
        components.push(json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": member.name,
            "version": lock.cpython.wheel_version,
            "scope": "required",
            "description": format!("taken from {}", wheel.filename),
            "hashes": [{ "alg": "SHA-256", "content": member.sha256 }],
        }));
    }
    let deb = |package: &str, version: &str, sha256: &str, (kind, scope): (&str, &str), description: String| {
        let purl = format!("pkg:deb/debian/{package}@{version}");
        json!({
            "type": kind,
            "bom-ref": purl,
            "name": package,
            "version": version,
            "purl": purl,
            "scope": scope,
            "description": description,
            "hashes": [{ "alg": "SHA-256", "content": sha256 }],
        })
    };
    for pin in &lock.debian_debs {
        // compiler-rt's builtins are linked into libpython3.14.so and the core modules.
        let (kind, description) = if pin.package.starts_with("libclang-rt-") {
            (("library", "required"), "compiler-rt's builtins, linked into the interpreter and the core modules".to_owned())
        } else {
            (("application", "excluded"), "build toolchain (not inside the artifacts)".to_owned())
        };
        components.push(deb(&pin.package, &pin.version, &pin.sha256, kind, description));
    }
    // Linked into the core module: inside the artifacts.
    for pin in &lock.unpacked_debs {
        let description = format!("Debian's `{}` package, its static libraries linked into the core module", pin.suite);
        components.push(deb(&pin.package, &pin.version, &pin.sha256, ("library", "required"), description));
    }
    // Upstream sources compiled into CPython built from source: the CPython variant's
    // interpreter and the core module.
    for pin in &lock.source_tarballs {
        let purl = format!("pkg:generic/{}@{}", pin.name, pin.version);
        components.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": pin.name,
            "version": pin.version,
            "purl": purl,
            "scope": "required",
            "description": format!("the source of {} {} as Debian's archive keeps it ({}), compiled into {} and {}", pin.name, pin.version, pin.file, crate::build::cpython_source::SHARED_LIBRARY_NAME, crate::build::cpython_source::CORE_MODULE),
            "licenses": [{ "expression": pin.license }],
            "hashes": [{ "alg": "SHA-256", "content": pin.sha256 }],
        }));
    }
    // The package sets' wheels: inside the `<variant>+<set>` components' snapshots and trees.
    let mut seen = std::collections::BTreeSet::new();
    for set in sets {
        let purl_of = |name: &str| set.wheels.iter().find(|wheel| wheel.pin.name == name).map(|wheel| format!("pkg:pypi/{}@{}", wheel.pin.name, wheel.pin.version));
        for wheel in &set.wheels {
            let purl = format!("pkg:pypi/{}@{}", wheel.pin.name, wheel.pin.version);
            if !seen.insert(purl.clone()) {
                continue;
            }
            let metadata = wheel_metadata(&wheel.path).with_context(|| format!("read {}", wheel.file_name))?;
            let mut component = json!({
                "type": "library",
                "bom-ref": purl,
                "name": wheel.pin.name,
                "version": wheel.pin.version,
                "purl": purl,
                "scope": "required",
                "description": format!("the wheel {} of the package set `{}`", wheel.file_name, set.name),
                "hashes": [{ "alg": "SHA-256", "content": wheel.pin.sha256 }],
            });
            if let Some(license) = metadata.license {
                component["licenses"] = json!([{ "expression": license }]);
            }
            components.push(component);
            let mut depends_on: Vec<String> = metadata.requires.iter().filter_map(|name| purl_of(name)).collect();
            depends_on.sort();
            dependencies.push(json!({ "ref": purl, "dependsOn": depends_on }));
        }
    }
    let tools: Vec<Value> = toolchain
        .iter()
        .map(|(name, version)| json!({ "type": "application", "name": name, "version": version }))
        .collect();

    let mut document = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(crate::inputs::stamp::SOURCE_DATE_EPOCH),
            "tools": { "components": tools },
            "component": { "type": "application", "bom-ref": product, "name": product, "version": version },
        },
        "components": components,
        "dependencies": dependencies,
    });
    // The serial number is a UUID made from the document's digest: the same content gives
    // the same serial, different content a different one.
    let digest = sha256_bytes(serde_json::to_string(&document)?.as_bytes());
    let hex = &digest[..32];
    let serial = format!(
        "urn:uuid:{}-{}-5{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        (u8::from_str_radix(&hex[16..17], 16)? & 0x3) | 0x8,
        &hex[17..20],
        &hex[20..32]
    );
    document["serialNumber"] = json!(serial);
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_render_as_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
    }

    #[test]
    fn the_sbom_lists_the_guest_crates_and_the_cpython_set_and_is_stable() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let lock = Lock::load(&root.join("toolchains.lock")).unwrap();
        let cargo_lock = std::fs::read_to_string(root.join("crates/Cargo.lock")).unwrap();
        let toolchain = [("rustc", "rustc 1.96.0".to_owned())];
        let first = build("eryx-runtimes", "0.1.0", &lock, &cargo_lock, &toolchain, &[]).unwrap();
        let second = build("eryx-runtimes", "0.1.0", &lock, &cargo_lock, &toolchain, &[]).unwrap();
        assert_eq!(first, second);
        let serial = first["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36, "{serial}");
        let names: Vec<&str> = first["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        for expected in ["rustpython-vm", "pyo3-ffi", "libc.so", "cpython", "componentize-py", "rustc-web", "wasi-libc"] {
            assert!(names.contains(&expected), "{expected} is missing from the SBOM");
        }
        let other = build("eryx-runtimes", "0.2.0", &lock, &cargo_lock, &toolchain, &[]).unwrap();
        assert_ne!(first["serialNumber"], other["serialNumber"]);
    }
}
