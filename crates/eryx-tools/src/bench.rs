//! `eryx-tools bench` (run by `cargo xtask bench` on a release build): what a sandbox costs,
//! measured side by side with native `python3` in one run. Medians with min and max of N
//! runs; a markdown table on stdout and, when asked, JSON:
//!
//! ```text
//! {"variants": {"<name>": {"sandbox_ready_ms": {"plain": {"median", "min", "max"}, "preinit": …,
//!   "preinit_cwasm": …}, "sandbox_ready_warm_ms": {…}, "runtime_load_ms": {…},
//!   "execute_ms": …, "callback_ms": …,
//!   "awaited_callback_ms": …, "five_100ms_callbacks_ms": {"sequential": …, "gathered": …},
//!   "gather_speedup": …, "compute_ratio_to_native": {"<workload>": …},
//!   "rss_per_sandbox_mib": …, "sizes_mib": {…},
//!   "package_imports_ms": null, or for `<variant>+<set>` {"modules": […], "baked": …, "from_tree": …}}},
//!  "native": {"python3_startup_ms": …, "version": …, "compute_s": {…}},
//!  "pyodide": {"version", "load_ms", "compute_ratio_to_native": {…}} or {"skipped": why},
//!  "build_steps_s": {…}, "runs": N}
//! ```
//!
//! Sandbox ready is a sandbox asked for and its first `print(1)` done, as the runtime makes it
//! by default and taken from warm instances ([`Runtime::keep_warm`]); the compute ratios run
//! the workload file (`bench/compute.py`) on every side in the same run.

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
    /// The compute workload file
    #[arg(long, default_value = "bench/compute.py")]
    pub workloads: PathBuf,
    /// How many times each compute workload runs on each side (the median counts)
    #[arg(long, default_value_t = 3)]
    pub compute_runs: usize,
    /// The unpacked `pyodide` npm package: also run the workloads under Pyodide in Node
    #[arg(long, value_name = "DIR")]
    pub pyodide: Option<PathBuf>,
}

/// The compute workloads: a Python file (`bench/compute.py`) that defines `WORKLOADS` (name →
/// function) and `report(name)`, which prints the seconds the workload's own work took
/// (measured inside the interpreter, so start-up and compiling the file are not part of it).
/// The same text runs natively, in each variant and under Pyodide.
pub struct Workloads {
    source: String,
    pub names: Vec<String>,
}

impl Workloads {
    /// Reads the file and asks native `python` for its workloads' names.
    fn load(path: &Path, python: &str) -> Result<Workloads> {
        let source = std::fs::read_to_string(path).with_context(|| format!("read the workload file {}", path.display()))?;
        let listing = format!("{source}\nprint(' '.join(WORKLOADS))\n");
        let output = Command::new(python)
            .args(["-c", &listing])
            .output()
            .with_context(|| format!("run {python} (pass --python to compare with another interpreter)"))?;
        if !output.status.success() {
            bail!("{python} could not read {}: {}", path.display(), String::from_utf8_lossy(&output.stderr).trim());
        }
        let names: Vec<String> = String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect();
        if names.is_empty() {
            bail!("{} defines no WORKLOADS", path.display());
        }
        Ok(Workloads { source, names })
    }

    /// The code that runs workload `name` once and prints its seconds.
    fn code(&self, name: &str) -> String {
        format!("{}\nreport({name:?})\n", self.source)
    }
}

/// How many warm instances the bench's second sandbox-ready figure keeps.
const BENCH_WARM: usize = 2;

/// Parses what a workload printed: its seconds.
fn seconds(workload: &str, side: &str, printed: &str) -> Result<f64> {
    printed.trim().parse::<f64>().with_context(|| format!("{workload} printed {printed:?} under {side}, not its seconds"))
}

/// The geometric mean of `ratios`.
fn geometric_mean(ratios: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, count) = ratios.into_iter().fold((0.0, 0usize), |(sum, count), ratio| (sum + ratio.ln(), count + 1));
    (sum / count as f64).exp()
}

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

fn bench_variant(manifest: &Manifest, variant: &VariantEntry, args: &Args, workloads: &Workloads, native_compute: &BTreeMap<String, f64>) -> Result<Value> {
    let name = &variant.name;
    let callbacks = Arc::new(Callbacks::standard());
    let mut ready = serde_json::Map::new();
    let mut from_warm = serde_json::Map::new();
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
        // A sandbox asked for and its first `print(1)` done: as the runtime makes it by default
        // (instantiated on the caller's thread), and taken from two warm instances (each
        // request arriving when they are ready and the runtime's thread is idle).
        let ready_once = || {
            let started = Instant::now();
            let mut sandbox = runtime.sandbox(callbacks.clone())?;
            expect_print(&mut sandbox, "print(1)", "1\n")?;
            Ok(millis(started))
        };
        let on_request = measure(args.runs, ready_once)?;
        runtime.keep_warm(BENCH_WARM);
        let warm = measure(args.runs, || {
            if !runtime.wait_warm(std::time::Duration::from_secs(30)) {
                bail!("{name}: the runtime's warm instances were not made");
            }
            ready_once()
        })?;
        runtime.keep_warm(eryx_host::runtime::WARM_SANDBOXES);
        eprintln!(
            "{name}: {label}: sandbox ready {:.2} ms, {:.2} ms from {BENCH_WARM} warm instances (medians of {})",
            on_request.median(),
            warm.median(),
            args.runs
        );
        ready.insert(label.into(), on_request.json());
        from_warm.insert(label.into(), warm.json());
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
    for workload in &workloads.names {
        let code = workloads.code(workload);
        let inside = measure(args.compute_runs, || {
            let output = sandbox.execute(&code).map_err(|error| anyhow::anyhow!("{workload}: {error}"))?;
            seconds(workload, name, &output.stdout)
        })?;
        ratios.insert(workload.clone(), json!(round(inside.median() / native_compute[workload])));
    }
    eprintln!("{name}: compute {}", describe_ratios(&ratios));
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
        "sandbox_ready_warm_ms": from_warm,
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

/// `name 1.23×, …, geomean 1.50×`.
fn describe_ratios(ratios: &serde_json::Map<String, Value>) -> String {
    let each: Vec<String> = ratios.iter().map(|(workload, ratio)| format!("{workload} {:.2}×", ratio.as_f64().unwrap_or(f64::NAN))).collect();
    format!("{}, geomean {:.2}× native", each.join(", "), geometric_mean(ratios.values().filter_map(Value::as_f64)))
}

/// The workloads under Pyodide (`node/pyodide_compute.mjs`, in Node), as ratios to native; a
/// note instead when Node cannot run it.
fn pyodide(args: &Args, workloads: &Workloads, native_compute: &BTreeMap<String, f64>) -> Result<Value> {
    let Some(directory) = &args.pyodide else {
        return Ok(json!({"skipped": "no Pyodide package was given (cargo xtask bench fetches the pinned one when npm can)"}));
    };
    let spec = json!({"pyodide": directory, "file": std::path::absolute(&args.workloads)?, "workloads": workloads.names, "runs": args.compute_runs});
    eprintln!("pyodide: loading it in Node and running the workloads");
    let output = match Command::new("node").args(["--input-type=module", "-e", PYODIDE_RUNNER, "--"]).arg(spec.to_string()).output() {
        Ok(output) => output,
        Err(error) => return Ok(json!({"skipped": format!("node did not start: {error}")})),
    };
    if !output.status.success() {
        bail!("the workloads failed under Pyodide ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    let answer: Value = serde_json::from_slice(&output.stdout).context("read the Pyodide runner's answer")?;
    let mut ratios = serde_json::Map::new();
    for workload in &workloads.names {
        let samples: Vec<f64> = answer["seconds"][workload].as_array().map(|runs| runs.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
        if samples.is_empty() {
            bail!("the Pyodide runner gave no time for {workload}");
        }
        ratios.insert(workload.clone(), json!(round(Stats { samples }.median() / native_compute[workload])));
    }
    eprintln!("pyodide: compute {}", describe_ratios(&ratios));
    Ok(json!({"version": answer["version"], "load_ms": answer["load_ms"], "compute_ratio_to_native": ratios}))
}

/// The script [`pyodide`] gives Node.
const PYODIDE_RUNNER: &str = include_str!("node/pyodide_compute.mjs");

fn native(args: &Args, workloads: &Workloads) -> Result<(Stats, BTreeMap<String, f64>)> {
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
    for workload in &workloads.names {
        let code = workloads.code(workload);
        let stats = measure(args.compute_runs, || {
            let output = Command::new(&args.python).args(["-c", &code]).output()?;
            seconds(workload, &args.python, &String::from_utf8_lossy(&output.stdout))
        })?;
        compute.insert(workload.clone(), stats.median());
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
    let workloads = Workloads::load(&args.workloads, &args.python)?;
    let (startup, native_compute) = native(args, &workloads)?;
    eprintln!("native {}: start-up {:.2} ms (median of {})", args.python, startup.median(), args.runs);
    let pyodide = pyodide(args, &workloads, &native_compute)?;
    let mut variants = serde_json::Map::new();
    for name in &names {
        variants.insert(name.clone(), bench_variant(&manifest, manifest.variant(name)?, args, &workloads, &native_compute)?);
    }
    let steps_path = manifest.path.parent().unwrap_or(Path::new(".")).join(".steps").join("timings.json");
    let steps: Value = std::fs::read(&steps_path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or(Value::Null);
    let result = json!({
        "variants": variants,
        "native": {
            "python3_startup_ms": startup.json(),
            "version": native_version(&args.python),
            "compute_s": native_compute.iter().map(|(workload, seconds)| (workload.clone(), json!(round(*seconds)))).collect::<serde_json::Map<_, _>>(),
        },
        "pyodide": pyodide,
        "build_steps_s": steps,
        "runs": args.runs,
    });
    print!("{}", table(&result, startup.median()));
    print!("{}", compute_table(&result, &workloads));
    if let Some(path) = &args.json {
        eryx_host::write_atomic(path, format!("{result:#}\n").as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `python --version`'s answer.
fn native_version(python: &str) -> Value {
    Command::new(python)
        .arg("--version")
        .output()
        .ok()
        .map(|output| Value::from(String::from_utf8_lossy(&output.stdout).trim().to_owned()))
        .unwrap_or(Value::Null)
}

/// The compute ratios of every side of `result` as a markdown table: one row per side, one
/// column per workload and their geometric mean.
fn compute_table(result: &Value, workloads: &Workloads) -> String {
    let mut text = format!("\n| side (× native {}) | {} | geomean |\n|---|", result["native"]["version"].as_str().unwrap_or("python3"), workloads.names.join(" | "));
    text.push_str(&"---|".repeat(workloads.names.len() + 1));
    text.push('\n');
    let mut sides: Vec<(String, &Value)> = Vec::new();
    match result["pyodide"]["version"].as_str() {
        Some(version) => sides.push((format!("Pyodide ({})", version.split_whitespace().next().unwrap_or(version)), &result["pyodide"]["compute_ratio_to_native"])),
        None => text.insert_str(0, &format!("\nPyodide: {}\n", result["pyodide"]["skipped"].as_str().unwrap_or("not run"))),
    }
    if let Some(variants) = result["variants"].as_object() {
        sides.extend(variants.iter().map(|(name, variant)| (name.clone(), &variant["compute_ratio_to_native"])));
    }
    for (side, ratios) in sides {
        let values: Vec<f64> = workloads.names.iter().map(|workload| ratios[workload].as_f64().unwrap_or(f64::NAN)).collect();
        text.push_str(&format!(
            "| {side} | {} | {:.2} |\n",
            values.iter().map(|ratio| format!("{ratio:.2}")).collect::<Vec<_>>().join(" | "),
            geometric_mean(values.iter().copied())
        ));
    }
    text
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
        row(&format!("sandbox ready, {form}, from {BENCH_WARM} warm instances (ms)"), &|v| median(&v["sandbox_ready_warm_ms"][form]));
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
    row("import the set's packages, baked in (ms)", &|v| if v["package_imports_ms"].is_null() { "—".into() } else { format!("{:.3}", v["package_imports_ms"]["baked"]["median"].as_f64().unwrap_or(f64::NAN)) });
    row("import them from the mounted tree (ms)", &|v| if v["package_imports_ms"].is_null() { "—".into() } else { median(&v["package_imports_ms"]["from_tree"]) });
    row("RSS per live sandbox (MiB)", &|v| format!("{:.1}", v["rss_per_sandbox_mib"].as_f64().unwrap_or(f64::NAN)));
    for size in ["plain", "component", "cwasm", "command"] {
        row(&format!("size, {size} (MiB)"), &|v| v["sizes_mib"][size].as_f64().map_or_else(|| "—".to_owned(), |mib| format!("{mib:.1}")));
    }
    text.push_str(&format!("\nnative python3 start-up: {native_startup:.2} ms (median)\n"));
    text
}
