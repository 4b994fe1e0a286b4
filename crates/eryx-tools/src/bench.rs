//! `eryx-tools bench` (run by `cargo xtask bench` on a release build): what a sandbox costs,
//! measured side by side with native `python3` in one run. Medians with min and max of N
//! runs; a markdown table on stdout and, when asked, JSON:
//!
//! ```text
//! {"variants": {"<name>": {"sandbox_ready_ms": {"plain": {"median", "min", "max"}, "preinit": …,
//!   "preinit_cwasm": …}, "runtime_load_ms": {…}, "execute_ms": …, "callback_ms": …,
//!   "awaited_callback_ms": …, "five_100ms_callbacks_ms": {"sequential": …, "gathered": …},
//!   "gather_speedup": …, "compute_ratio_to_native": {"<workload>": …},
//!   "rss_per_sandbox_mib": …, "sizes_mib": {…},
//!   "package_imports_ms": null, or for `<variant>+<set>` {"modules": […], "baked": …, "from_tree": …}}},
//!  "native": {"python3_startup_ms": …, "compute_ms": {…}}, "build_steps_s": {…}, "runs": N}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use eryx_host::{Callbacks, Form, Limits, Manifest, Runtime, Sandbox, VariantEntry};

#[derive(clap::Args)]
pub struct Args {
    /// The manifest written by `cargo xtask build-runtime`
    #[arg(long, default_value = "target/eryx/manifest.json")]
    pub manifest: PathBuf,
    /// Only this variant (default: every built one)
    #[arg(long)]
    pub variant: Option<String>,
    /// How many times each measurement runs
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// How many sandboxes are kept alive to measure memory per sandbox
    #[arg(long, default_value_t = 100)]
    pub live_sandboxes: usize,
    /// Also write the results as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The native interpreter to compare with
    #[arg(long, default_value = "python3")]
    pub python: String,
}

/// The compute workloads: each prints the seconds its own work took (measured inside the
/// interpreter, so start-up is not part of it), the same code natively and in a sandbox.
const WORKLOADS: &[(&str, &str)] = &[
    (
        "nbody",
        r#"
import time
def run(steps):
    bodies = [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 39.47], [4.84, -1.16, -0.10, 0.60, 2.81, -0.02, 0.037],
              [8.34, 4.12, -0.40, -1.01, 1.82, 0.008, 0.011], [12.89, -15.11, -0.22, 1.08, 0.86, -0.01, 0.0017],
              [15.37, -25.91, 0.17, 0.97, 0.59, -0.03, 0.002]]
    for _ in range(steps):
        for i, a in enumerate(bodies):
            for b in bodies[i + 1:]:
                dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
                d2 = dx * dx + dy * dy + dz * dz
                mag = 0.01 / (d2 * d2 ** 0.5)
                a[3] -= dx * b[6] * mag; a[4] -= dy * b[6] * mag; a[5] -= dz * b[6] * mag
                b[3] += dx * a[6] * mag; b[4] += dy * a[6] * mag; b[5] += dz * a[6] * mag
        for body in bodies:
            body[0] += 0.01 * body[3]; body[1] += 0.01 * body[4]; body[2] += 0.01 * body[5]
started = time.perf_counter(); run(2000); print(time.perf_counter() - started)
"#,
    ),
    (
        "json",
        r#"
import json, time
data = {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(2000)]}
started = time.perf_counter()
for _ in range(5):
    assert json.loads(json.dumps(data)) == data
print(time.perf_counter() - started)
"#,
    ),
    (
        "regex",
        r#"
import re, time
text = " ".join(f"user{i}@host{i % 7}.example word{i}" for i in range(5000))
pattern = re.compile(r"(\w+)@(\w+)\.example")
started = time.perf_counter()
for _ in range(5):
    assert len(pattern.findall(text)) == 5000
print(time.perf_counter() - started)
"#,
    ),
    (
        "dict_loop",
        r#"
import time
started = time.perf_counter()
counts = {}
for i in range(100000):
    key = i % 1000
    counts[key] = counts.get(key, 0) + i
assert len(counts) == 1000
print(time.perf_counter() - started)
"#,
    ),
];

struct Stats {
    samples: Vec<f64>,
}

impl Stats {
    fn median(&self) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        }
    }

    fn json(&self) -> Value {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!({"median": round(self.median()), "min": round(min), "max": round(max), "runs": self.samples.len()})
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn measure(runs: usize, mut once: impl FnMut() -> Result<f64>) -> Result<Stats> {
    let samples = (0..runs).map(|_| once()).collect::<Result<Vec<_>>>()?;
    Ok(Stats { samples })
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn expect_print(sandbox: &mut Sandbox, code: &str, expected: &str) -> Result<()> {
    let output = sandbox.execute(code).map_err(|error| anyhow::anyhow!("{code}: {error}"))?;
    if output.stdout != expected {
        bail!("{code}: printed {:?}, expected {expected:?}", output.stdout);
    }
    Ok(())
}

/// The resident and peak memory of this process, in KiB.
pub fn memory_kib() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .with_context(|| format!("/proc/self/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn size_mib(path: &Path) -> Value {
    match std::fs::metadata(path) {
        Ok(metadata) => json!(round(metadata.len() as f64 / 1048576.0)),
        Err(_) => Value::Null,
    }
}

fn bench_variant(manifest: &Manifest, variant: &VariantEntry, args: &Args, native_compute: &BTreeMap<&str, f64>) -> Result<Value> {
    let name = &variant.name;
    let callbacks = Arc::new(Callbacks::standard());
    let mut ready = serde_json::Map::new();
    let mut load = serde_json::Map::new();
    let mut fast: Option<Runtime> = None;
    for (label, form) in [("plain", Form::Plain), ("preinit", Form::PreinitCompiled), ("preinit_cwasm", Form::Preinit)] {
        // The first load fills the compile cache; the measured loads are what a host process
        // pays each time it starts.
        Runtime::with_form(variant.clone(), Limits::default(), &manifest.compile_cache_dir(), form)?;
        let load_stats = measure(args.runs.min(5), || {
            let started = Instant::now();
            Runtime::with_form(variant.clone(), Limits::default(), &manifest.compile_cache_dir(), form)?;
            Ok(millis(started))
        })?;
        let runtime = Runtime::with_form(variant.clone(), Limits::default(), &manifest.compile_cache_dir(), form)?;
        let stats = measure(args.runs, || {
            let started = Instant::now();
            let mut sandbox = runtime.sandbox(callbacks.clone())?;
            expect_print(&mut sandbox, "print(1)", "1\n")?;
            Ok(millis(started))
        })?;
        eprintln!("{name}: {label}: sandbox ready {:.2} ms (median of {})", stats.median(), args.runs);
        ready.insert(label.into(), stats.json());
        load.insert(label.into(), load_stats.json());
        if form == Form::Preinit {
            fast = Some(runtime);
        }
    }
    let runtime = fast.expect("the default form was measured");

    let mut sandbox = runtime.sandbox(callbacks.clone())?;
    expect_print(&mut sandbox, "print(1)", "1\n")?;
    // The milliseconds of one execute of `code`, which must print `expected`, `runs` times.
    let mut timed = |runs: usize, code: &str, expected: &str| {
        measure(runs, || {
            let started = Instant::now();
            expect_print(&mut sandbox, code, expected)?;
            Ok(millis(started))
        })
    };
    let execute = timed(args.runs * 5, "print(1)", "1\n")?;
    const CALLS: usize = 100;
    const GATHER_RUNS: usize = 5;
    let per_call = |stats: Stats| Stats { samples: stats.samples.iter().map(|ms| ms / CALLS as f64).collect() };
    let callback_code = format!("for i in range({CALLS}):\n    assert add(a=i, b=1) == i + 1\nprint('ok')");
    let callback = per_call(timed(args.runs, &callback_code, "ok\n")?);
    let awaited_code = format!("for i in range({CALLS}):\n    assert await add(a=i, b=1) == i + 1\nprint('ok')");
    let awaited = per_call(timed(args.runs, &awaited_code, "ok\n")?);
    // Five callbacks that each wait 100 ms on the host: one after another, and gathered.
    let slept = "[100, 100, 100, 100, 100]\n";
    let sequential = timed(GATHER_RUNS, "print([sleep(ms=100) for _ in range(5)])", slept)?;
    let gathered = timed(GATHER_RUNS, "import asyncio\nprint(await asyncio.gather(*(sleep(ms=100) for _ in range(5))))", slept)?;

    let mut ratios = serde_json::Map::new();
    for (workload, code) in WORKLOADS {
        let inside = measure(3, || {
            let output = sandbox.execute(code).map_err(|error| anyhow::anyhow!("{workload}: {error}"))?;
            output.stdout.trim().parse::<f64>().with_context(|| format!("{workload} printed {:?}", output.stdout))
        })?;
        ratios.insert((*workload).into(), json!(round(inside.median() / native_compute[workload])));
    }
    drop(sandbox);

    let (rss_before, _) = memory_kib()?;
    let mut alive = Vec::with_capacity(args.live_sandboxes);
    for _ in 0..args.live_sandboxes {
        let mut sandbox = runtime.sandbox(callbacks.clone())?;
        expect_print(&mut sandbox, "print(1)", "1\n")?;
        alive.push(sandbox);
    }
    let (rss_after, peak) = memory_kib()?;
    drop(alive);
    let per_sandbox = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 / args.live_sandboxes as f64;

    let packages = match &variant.packages {
        Some(mount) => Some(bench_package_imports(manifest, variant, &runtime, mount, args)?),
        None => None,
    };

    let mut sizes = serde_json::Map::new();
    sizes.insert("component".into(), size_mib(&variant.component_path));
    if let Some(plain) = &variant.plain_path {
        sizes.insert("plain".into(), size_mib(plain));
    }
    if let Some(precompiled) = &variant.precompiled {
        sizes.insert("cwasm".into(), size_mib(&precompiled.path));
    }
    if let Some(command) = &variant.command_path {
        sizes.insert("command".into(), size_mib(command));
    }
    Ok(json!({
        "sandbox_ready_ms": ready,
        "runtime_load_ms": load,
        "execute_ms": execute.json(),
        "callback_ms": callback.json(),
        "awaited_callback_ms": awaited.json(),
        "five_100ms_callbacks_ms": {"sequential": sequential.json(), "gathered": gathered.json()},
        "gather_speedup": round(sequential.median() / gathered.median()),
        "compute_ratio_to_native": ratios,
        "rss_per_sandbox_mib": round(per_sandbox),
        "live_sandboxes": args.live_sandboxes,
        "peak_rss_mib": round(peak as f64 / 1024.0),
        "sizes_mib": sizes,
        "package_imports_ms": packages,
    }))
}

/// For a variant with a package set (`<variant>+<set>`): the milliseconds a fresh sandbox
/// takes to import the set's modules, baked into its snapshot, against the variant itself with
/// the same tree mounted, importing them from it (compiling every module from source).
fn bench_package_imports(manifest: &Manifest, variant: &VariantEntry, runtime: &Runtime, mount: &eryx_host::manifest::StdlibMount, args: &Args) -> Result<Value> {
    let base_name = variant.name.split_once('+').map(|(base, _)| base).context("a package variant is named <variant>+<set>")?;
    let mut base = manifest.variant(base_name)?.clone();
    let imports: Vec<&String> = variant.preinit_imports.iter().filter(|module| !base.preinit_imports.contains(module)).collect();
    let code = format!(
        "import sys, time\nif {path:?} not in sys.path:\n    sys.path.append({path:?})\nstarted = time.perf_counter()\n{}\nprint((time.perf_counter() - started) * 1000)",
        imports.iter().map(|module| format!("import {module}")).collect::<Vec<_>>().join("\n"),
        path = mount.guest_path
    );
    let callbacks = Arc::new(Callbacks::standard());
    let time_in = |runtime: &Runtime| -> Result<f64> {
        let mut sandbox = runtime.sandbox(callbacks.clone())?;
        let output = sandbox.execute(&code).map_err(|error| anyhow::anyhow!("import the set's modules: {error}"))?;
        output.stdout.trim().parse::<f64>().with_context(|| format!("the import timing printed {:?}", output.stdout))
    };
    let baked = measure(args.runs, || time_in(runtime))?;
    base.packages = Some(mount.clone());
    let from_tree_runtime = Runtime::with_form(base, Limits::default(), &manifest.compile_cache_dir(), Form::Preinit)?;
    let from_tree = measure(args.runs.min(5), || time_in(&from_tree_runtime))?;
    eprintln!(
        "{}: importing {} module(s): {:.3} ms baked in, {:.1} ms from the mounted tree (medians)",
        variant.name,
        imports.len(),
        baked.median(),
        from_tree.median()
    );
    Ok(json!({ "modules": imports, "baked": baked.json(), "from_tree": from_tree.json() }))
}

fn native(args: &Args) -> Result<(Stats, BTreeMap<&'static str, f64>)> {
    let startup = measure(args.runs, || {
        let started = Instant::now();
        let output = Command::new(&args.python)
            .args(["-c", "print(1)"])
            .output()
            .with_context(|| format!("run {} (pass --python to compare with another interpreter)", args.python))?;
        if output.stdout != b"1\n" {
            bail!("{} -c 'print(1)' printed {:?}", args.python, String::from_utf8_lossy(&output.stdout));
        }
        Ok(millis(started))
    })?;
    let mut compute = BTreeMap::new();
    for (workload, code) in WORKLOADS {
        let stats = measure(3, || {
            let output = Command::new(&args.python).args(["-c", code]).output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            text.trim().parse::<f64>().with_context(|| format!("native {workload} printed {text:?}"))
        })?;
        compute.insert(*workload, stats.median());
    }
    Ok((startup, compute))
}

pub fn run(args: &Args) -> Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let names: Vec<String> = match &args.variant {
        Some(name) => {
            manifest.variant(name)?;
            vec![name.clone()]
        }
        None => manifest.variants.keys().cloned().collect(),
    };
    let (startup, native_compute) = native(args)?;
    eprintln!("native {}: start-up {:.2} ms (median of {})", args.python, startup.median(), args.runs);
    let mut variants = serde_json::Map::new();
    for name in &names {
        variants.insert(name.clone(), bench_variant(&manifest, manifest.variant(name)?, args, &native_compute)?);
    }
    let steps_path = manifest.path.parent().unwrap_or(Path::new(".")).join(".steps").join("timings.json");
    let steps: Value = std::fs::read(&steps_path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or(Value::Null);
    let result = json!({
        "variants": variants,
        "native": {
            "python3_startup_ms": startup.json(),
            "compute_s": native_compute.iter().map(|(workload, seconds)| (workload.to_string(), json!(round(*seconds)))).collect::<serde_json::Map<_, _>>(),
        },
        "build_steps_s": steps,
        "runs": args.runs,
    });
    print!("{}", table(&result, startup.median()));
    if let Some(path) = &args.json {
        eryx_host::write_atomic(path, format!("{result:#}\n").as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The markdown table of `result`.
fn table(result: &Value, native_startup: f64) -> String {
    let mut text = String::from("| measure | ");
    let variants = result["variants"].as_object().cloned().unwrap_or_default();
    let names: Vec<&String> = variants.keys().collect();
    text.push_str(&names.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(" | "));
    text.push_str(" |\n|---|");
    text.push_str(&"---|".repeat(names.len()));
    text.push('\n');
    let mut row = |label: &str, pick: &dyn Fn(&Value) -> String| {
        text.push_str(&format!("| {label} | "));
        text.push_str(&names.iter().map(|name| pick(&variants[*name])).collect::<Vec<_>>().join(" | "));
        text.push_str(" |\n");
    };
    let median = |value: &Value| format!("{:.2}", value["median"].as_f64().unwrap_or(f64::NAN));
    for form in ["plain", "preinit", "preinit_cwasm"] {
        row(&format!("sandbox ready, {form} (ms)"), &|v| median(&v["sandbox_ready_ms"][form]));
    }
    for form in ["plain", "preinit", "preinit_cwasm"] {
        row(&format!("runtime load, {form} (ms)"), &|v| median(&v["runtime_load_ms"][form]));
    }
    row("execute `print(1)` (ms)", &|v| median(&v["execute_ms"]));
    row("callback round trip (ms)", &|v| median(&v["callback_ms"]));
    row("awaited callback round trip (ms)", &|v| median(&v["awaited_callback_ms"]));
    row("5 × sleep(ms=100), one after another (ms)", &|v| median(&v["five_100ms_callbacks_ms"]["sequential"]));
    row("5 × sleep(ms=100), gathered (ms)", &|v| median(&v["five_100ms_callbacks_ms"]["gathered"]));
    row("gather speed-up (×)", &|v| format!("{:.1}", v["gather_speedup"].as_f64().unwrap_or(f64::NAN)));
    for (workload, _) in WORKLOADS {
        row(&format!("{workload}, × native"), &|v| format!("{:.2}", v["compute_ratio_to_native"][workload].as_f64().unwrap_or(f64::NAN)));
    }
    row("import the set's packages, baked in (ms)", &|v| if v["package_imports_ms"].is_null() { "—".into() } else { format!("{:.3}", v["package_imports_ms"]["baked"]["median"].as_f64().unwrap_or(f64::NAN)) });
    row("import them from the mounted tree (ms)", &|v| if v["package_imports_ms"].is_null() { "—".into() } else { median(&v["package_imports_ms"]["from_tree"]) });
    row("RSS per live sandbox (MiB)", &|v| format!("{:.1}", v["rss_per_sandbox_mib"].as_f64().unwrap_or(f64::NAN)));
    for size in ["plain", "component", "cwasm", "command"] {
        row(&format!("size, {size} (MiB)"), &|v| v["sizes_mib"][size].as_f64().map_or_else(|| "—".to_owned(), |mib| format!("{mib:.1}")));
    }
    text.push_str(&format!("\nnative python3 start-up: {native_startup:.2} ms (median)\n"));
    text
}
