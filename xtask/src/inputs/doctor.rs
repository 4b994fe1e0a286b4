//! `cargo xtask doctor`: one row per input and tool: where it was found, its version,
//! whether it matches the pin, and for anything missing the command that fixes it. Exits
//! non-zero when something the build needs is missing. It never installs or downloads.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::inputs::cache::Cache;
use crate::inputs::lock::{host_platform, Lock};
use crate::inputs::system;
use crate::workspace::Workspace;

struct Row {
    item: String,
    location: String,
    version: String,
    status: &'static str,
    fix: String,
}

fn package_rows(pins: &[String], rows: &mut Vec<Row>, needed: bool) {
    for pin in pins {
        let parsed = system::parse_pin(pin);
        let installed = system::installed_version(parsed.name);
        let (status, fix) = match &installed {
            Some(version) if version == parsed.version => ("ok", String::new()),
            Some(_) => ("differs", format!("apt-get install -y {pin}")),
            None if needed => ("MISSING", format!("apt-get install -y {pin}")),
            None => ("absent", format!("apt-get install -y {pin}")),
        };
        rows.push(Row {
            item: format!("deb {}", parsed.name),
            location: if installed.is_some() { "dpkg".into() } else { "-".into() },
            version: installed.unwrap_or_else(|| "-".into()),
            status,
            fix,
        });
    }
}

pub fn run(workspace: &Workspace, cache: &Cache) -> Result<()> {
    let lock = Lock::load(&workspace.lock_path())?;
    let mut rows = Vec::new();

    // The CPython wheel and its members.
    let wheel = lock.wheel_for_host();
    match &wheel {
        Ok(pin) => {
            let found = cache.get(&pin.sha256)?;
            rows.push(Row {
                item: format!("{} wheel", lock.cpython.wheel_project),
                location: found.as_ref().map(|path| path.display().to_string()).unwrap_or_else(|| "-".into()),
                version: lock.cpython.wheel_version.clone(),
                status: if found.is_some() { "ok" } else { "absent" },
                fix: if found.is_some() { String::new() } else { "cargo xtask fetch (only needed while members are missing)".into() },
            });
        }
        Err(error) => rows.push(Row {
            item: format!("{} wheel", lock.cpython.wheel_project),
            location: "-".into(),
            version: "-".into(),
            status: "MISSING",
            fix: error.to_string(),
        }),
    }
    for member in &lock.cpython.members {
        let found = cache.get(&member.sha256)?;
        rows.push(Row {
            item: member.name.clone(),
            location: found.as_ref().map(|path| path.display().to_string()).unwrap_or_else(|| "-".into()),
            version: format!("sha256 {}…", &member.sha256[..12]),
            status: if found.is_some() { "ok" } else { "MISSING" },
            fix: if found.is_some() { String::new() } else { "cargo xtask fetch".into() },
        });
    }

    // The WASI toolchain: any one provider is enough.
    let env_sdk = std::env::var_os("WASI_SDK_PATH").filter(|value| !value.is_empty()).map(PathBuf::from);
    let pin = lock.wasi_sdk.platforms.get(&host_platform());
    let cached_sdk = pin.map(|pin| cache.root.join("wasi-sdk").join(&pin.sha256).join("sdk")).filter(|path| path.join("bin/clang").is_file());
    let system_clang = system::which(&lock.wasi_sdk.system.clang);
    let wasi_ok = env_sdk.is_some() || cached_sdk.is_some() || system_clang.is_some();
    let (location, version) = match (&env_sdk, &cached_sdk, &system_clang) {
        (Some(path), _, _) => (format!("WASI_SDK_PATH={}", path.display()), system::tool_version(&path.join("bin/clang")).unwrap_or_default()),
        (None, Some(path), _) => (path.display().to_string(), system::tool_version(&path.join("bin/clang")).unwrap_or_default()),
        (None, None, Some(path)) => (format!("system {}", path.display()), system::tool_version(path).unwrap_or_default()),
        _ => ("-".into(), "-".into()),
    };
    rows.push(Row {
        item: format!("wasi toolchain (sdk {})", lock.wasi_sdk.version),
        location,
        version,
        status: if wasi_ok { "ok" } else { "MISSING" },
        fix: if wasi_ok {
            String::new()
        } else if pin.is_none() {
            format!("no WASI SDK pinned for {}: set WASI_SDK_PATH", host_platform())
        } else {
            "cargo xtask fetch".into()
        },
    });
    package_rows(&lock.wasi_sdk.system.debian_packages, &mut rows, cached_sdk.is_none() && env_sdk.is_none());

    // The guest Rust toolchain.
    let rustc = PathBuf::from(&lock.rust_guest.system.rustc);
    let sources = PathBuf::from("/usr/lib/rustlib/src/rust/library");
    let rust_ok = rustc.is_file() && sources.is_dir();
    rows.push(Row {
        item: format!("guest rustc ({})", lock.rust_guest.target),
        location: rustc.display().to_string(),
        version: system::tool_version(&rustc).unwrap_or_else(|| "-".into()),
        status: if rust_ok { "ok" } else { "MISSING" },
        fix: if rust_ok { String::new() } else { "cargo xtask fetch (installs the Debian packages below)".into() },
    });
    package_rows(&lock.rust_guest.system.debian_packages, &mut rows, true);

    // Host tools.
    for (tool, fix) in [
        ("python3", "apt-get install -y python3-pip"),
        ("cargo", "install rustup's stable toolchain"),
        ("git", "apt-get install -y git (it pins the guests' build stamp)"),
    ] {
        let path = system::which(tool);
        rows.push(Row {
            item: tool.into(),
            location: path.as_ref().map(|path| path.display().to_string()).unwrap_or_else(|| "-".into()),
            version: path.as_ref().and_then(|path| system::tool_version(path)).unwrap_or_else(|| "-".into()),
            status: if path.is_some() { "ok" } else { "MISSING" },
            fix: if path.is_some() { String::new() } else { fix.into() },
        });
    }

    let widths = [
        rows.iter().map(|row| row.item.len()).max().unwrap_or(4).max(4),
        rows.iter().map(|row| row.location.len()).max().unwrap_or(5).clamp(5, 60),
        rows.iter().map(|row| row.version.len()).max().unwrap_or(7).clamp(7, 40),
    ];
    println!("{:<w0$}  {:<w1$}  {:<w2$}  {:<7}  fix", "item", "found", "version", "status", w0 = widths[0], w1 = widths[1], w2 = widths[2]);
    for row in &rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<7}  {}",
            row.item,
            row.location,
            row.version,
            row.status,
            row.fix,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    let missing = rows.iter().filter(|row| row.status == "MISSING").count();
    println!("cache: {}", cache.root.display());
    if missing > 0 {
        bail!("{missing} item(s) the build needs are missing; run the commands in the `fix` column (or `cargo xtask fetch`)");
    }
    Ok(())
}
