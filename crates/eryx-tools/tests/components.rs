//! The components the build made: pre-initialisation, the host's fast path, state that travels. These
//! need `cargo xtask build-runtime`'s output: `cargo xtask test` runs them with
//! `ERYX_MANIFEST` set; without it they say so and pass nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::manifest;
use eryx_host::{Callbacks, Limits, Loaded, Runtime, VariantEntry};

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Pre-initialising the plain component again, with the stdlib freshly copied (other inodes,
/// times and directory order than the build's), gives the build's bytes.
#[test]
fn pre_initialisation_is_deterministic() {
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let mut variant: VariantEntry = variant.clone();
        let copy = tempfile::tempdir().unwrap();
        if let Some(stdlib) = &mut variant.stdlib {
            let fresh: PathBuf = copy.path().join("stdlib");
            copy_tree(&stdlib.host_directory, &fresh);
            stdlib.host_directory = fresh;
        }
        let plain = std::fs::read(variant.plain_path.as_ref().expect("the manifest names the plain component")).unwrap();
        let again = eryx_tools::preinit::preinitialize(&plain, &variant, &variant.preinit_imports).unwrap();
        let built = std::fs::read(&variant.component_path).unwrap();
        assert!(again.len() > plain.len(), "{}: the snapshot holds the initialised heap", variant.name);
        assert!(again == built, "{}: a second pre-initialisation gave other bytes than the build's", variant.name);
    }
}

/// For each variant of the build: its name, a runtime with the default limits (which the
/// sandbox needs alive) and a sandbox of it with the standard callbacks.
fn standard_sandboxes(manifest: &eryx_host::Manifest) -> Vec<(String, Runtime, eryx_host::Sandbox)> {
    manifest
        .variants
        .values()
        .map(|variant| {
            let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
            let sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
            (variant.name.clone(), runtime, sandbox)
        })
        .collect()
}

fn print_of(sandbox: &mut eryx_host::Sandbox, code: &str) -> String {
    sandbox.execute(code).unwrap_or_else(|error| panic!("{code}: {error}")).stdout
}

/// Sandboxes start from one snapshot but share nothing: state set in one is absent from the
/// next (alive at the same time or created after it was dropped), the `random` module is
/// reseeded per sandbox, and a module the pre-initialisation did not import still loads.
#[test]
fn sandboxes_from_one_snapshot_are_isolated() {
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        assert_eq!(runtime.loaded, Loaded::Precompiled, "{}: the precompiled artifact loads on the build machine", variant.name);
        let callbacks = Arc::new(Callbacks::standard());
        let mut first = runtime.sandbox(callbacks.clone()).unwrap();
        let mut second = runtime.sandbox(callbacks.clone()).unwrap();
        let draw = "import random; print(random.random(), random.Random().random())";
        assert_eq!(print_of(&mut first, "secret = 41\nimport sys; sys.modules['json'].marker = 1\nprint(secret + 1)"), "42\n");
        assert_eq!(print_of(&mut second, "print('secret' in globals(), hasattr(__import__('json'), 'marker'))"), "False False\n");
        let (one, two) = (print_of(&mut first, draw), print_of(&mut second, draw));
        assert_ne!(one, two, "{}: two sandboxes drew the same random numbers", variant.name);
        drop(first);
        let mut third = runtime.sandbox(callbacks).unwrap();
        assert_eq!(print_of(&mut third, "print('secret' in globals())"), "False\n", "{}", variant.name);
        assert_ne!(print_of(&mut third, draw), one, "{}: a recycled slot drew the first sandbox's numbers", variant.name);
        assert_eq!(print_of(&mut third, "import xml.dom.minidom, email.message; print(xml.dom.minidom.parseString('<a/>').documentElement.tagName)"), "a\n");
    }
}

/// Sandboxes handed out from the runtime's warm instances (made ahead of time, before the
/// caller's callbacks were known) call the callbacks of the caller that took them, and one
/// taken after another sandbox ran and was dropped starts fresh, as with the warm pool off.
#[test]
fn warm_sandboxes_take_their_callers_callbacks_and_start_fresh() {
    let Some(manifest) = manifest() else { return };
    let named = |name: &'static str| {
        let mut callbacks = Callbacks::new();
        callbacks.register("whoami", "Names the host.", serde_json::json!({}), move |_| Ok(serde_json::json!(name)));
        Arc::new(callbacks)
    };
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        for warm in [2, 0] {
            runtime.keep_warm(warm);
            assert!(runtime.wait_warm(std::time::Duration::from_secs(60)), "{}: the warm instances were made", variant.name);
            for round in 0..4 {
                let mut alpha = runtime.sandbox(named("alpha")).unwrap();
                let mut beta = runtime.sandbox(named("beta")).unwrap();
                assert_eq!(print_of(&mut alpha, "print(whoami(), 'left' in globals())"), "alpha False\n", "{} round {round}", variant.name);
                assert_eq!(print_of(&mut beta, "left = 1\nprint(whoami())"), "beta\n", "{} round {round}", variant.name);
            }
        }
    }
}

/// A warm instance ran the runtime's own first steps ahead of time (an empty execute and a
/// clear, on the warm-up thread); what its caller sees is what a sandbox instantiated on the
/// caller's thread shows: the same globals, modules and first traceback, and random numbers
/// of its own.
#[test]
fn a_warm_sandbox_looks_like_one_made_on_request() {
    let Some(manifest) = manifest() else { return };
    let seen = "import sys\nprint(sorted(globals()), sorted(sys.modules), invoke.__name__, callable(add))";
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        let mut views = Vec::new();
        let mut draws = Vec::new();
        for warm in [0, 2] {
            runtime.keep_warm(warm);
            assert!(runtime.wait_warm(std::time::Duration::from_secs(60)), "{}: the warm instances were made", variant.name);
            let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
            let traceback = sandbox.execute("x = 1\n1 / 0").unwrap_err().to_string();
            views.push((traceback, print_of(&mut sandbox, seen)));
            draws.push(print_of(&mut sandbox, "import random; print(random.random())"));
        }
        assert_eq!(views[0], views[1], "{}: a warm sandbox differs from one made on request", variant.name);
        assert!(views[1].0.contains("ZeroDivisionError"), "{}: {}", variant.name, views[1].0);
        let mut other = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
        assert_ne!(print_of(&mut other, "import random; print(random.random())"), draws[1], "{}: two warm sandboxes drew alike", variant.name);
    }
}

/// A precompiled artifact whose bytes are not the manifest's is not loaded; the runtime
/// compiles the component instead and works.
#[test]
fn a_changed_precompiled_artifact_falls_back_to_compiling() {
    let Some(manifest) = manifest() else { return };
    let variant = manifest.variants.values().next().expect("a built variant");
    let mut changed = variant.clone();
    let precompiled = changed.precompiled.as_mut().expect("the manifest names the precompiled artifact");
    let directory = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&precompiled.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    precompiled.path = directory.path().join("changed.cwasm");
    std::fs::write(&precompiled.path, &bytes).unwrap();
    let runtime = Runtime::new(changed, Limits::default(), &manifest.compile_cache_dir()).unwrap();
    assert_ne!(runtime.loaded, Loaded::Precompiled);
    let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
    assert_eq!(print_of(&mut sandbox, "print(6 * 7)"), "42\n");
}

/// A snapshot restores into another sandbox; one made by another interpreter or version is
/// refused as a whole, naming both.
#[test]
fn snapshots_travel_between_sandboxes_of_one_interpreter_only() {
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        let callbacks = Arc::new(Callbacks::standard());
        let mut first = runtime.sandbox(callbacks.clone()).unwrap();
        print_of(&mut first, "numbers = [1, 2.5, 2**70 + 1]\ntext = 'é'");
        let taken = first.snapshot().unwrap();
        assert!(taken.skipped.is_empty(), "{}: {:?}", variant.name, taken.skipped);
        let mut second = runtime.sandbox(callbacks.clone()).unwrap();
        assert_eq!(second.restore(&taken.data).unwrap(), Vec::<String>::new());
        assert_eq!(print_of(&mut second, "print(numbers, text)"), "[1, 2.5, 1180591620717411303425] é\n", "{}", variant.name);

        let foreign_hex = print_of(
            &mut second,
            "import pickle\nprint(pickle.dumps({'format': 1, 'implementation': 'pypy', 'python': [3, 9], 'values': {}}).hex())",
        );
        let foreign: Vec<u8> = (0..foreign_hex.trim().len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&foreign_hex.trim()[index..index + 2], 16).unwrap())
            .collect();
        let error = second.restore(&foreign).unwrap_err().to_string();
        assert!(error.contains("the snapshot was made by pypy 3.9; this sandbox runs"), "{}: {error}", variant.name);
        let error = second.restore(b"not a pickle").unwrap_err().to_string();
        assert!(error.contains("the snapshot does not load"), "{}: {error}", variant.name);
        assert_eq!(print_of(&mut second, "print(text)"), "é\n", "a refused snapshot changes nothing");
    }
}

/// Guest code can call the runtime's trace import directly; the host keeps a bounded number
/// of events and bytes, and counts the rest.
#[test]
fn trace_events_a_guest_floods_are_bounded() {
    let Some(manifest) = manifest() else { return };
    let variant = manifest.variants.values().next().expect("a built variant");
    let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
    let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
    let flood = "import _eryx_runtime\nevent = 'e' * 10000\nfor _ in range(20000):\n    _eryx_runtime._host_report_trace(1, event, '')\nprint('done')";
    assert_eq!(print_of(&mut sandbox, flood), "done\n");
    let kept: usize = sandbox.traces().iter().map(|event| event.event_json.len() + event.context_json.len()).sum();
    assert!(kept <= eryx_host::MAX_TRACE_BYTES, "{kept} bytes kept");
    assert!(sandbox.traces().len() <= eryx_host::MAX_TRACE_EVENTS);
    assert_eq!(sandbox.traces().len() as u64 + sandbox.dropped_traces(), 20000, "every event is kept or counted");
}

/// Fuel runs out as an error of its own; a sandbox that failed that way refuses later calls
/// with the reason, and a new sandbox of the same runtime works.
#[test]
fn fuel_exhaustion_poisons_only_its_sandbox() {
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let limits = Limits { fuel: Some(50_000_000), ..Limits::default() };
        let runtime = Runtime::new(variant.clone(), limits, &manifest.compile_cache_dir()).unwrap();
        assert_ne!(runtime.loaded, Loaded::Precompiled, "fuel needs code compiled with fuel checks");
        let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
        let error = sandbox.execute("while True:\n    pass").unwrap_err();
        assert!(matches!(error, eryx_host::ExecError::FuelExhausted(50_000_000)), "{}: {error}", variant.name);
        assert!(error.to_string().contains("the sandbox must be recreated"), "{error}");
        let again = sandbox.execute("print(1)").unwrap_err().to_string();
        assert!(again.contains("unusable after an earlier failure") && again.contains("fuel limit"), "{again}");
        let mut fresh = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
        assert_eq!(print_of(&mut fresh, "print(sum(range(10)))"), "45\n", "{}", variant.name);
    }
}

/// The standard callbacks' names and descriptions, with handlers that fail: a sandbox with
/// these sees the usual callbacks, but any call that reaches the host fails.
fn callbacks_that_must_not_be_called() -> Callbacks {
    let mut callbacks = Callbacks::new();
    for callback in Callbacks::standard().list() {
        let schema = serde_json::from_str(&callback.parameters_schema_json).unwrap();
        callbacks.register(&callback.name, &callback.description, schema, |_| Err("the host was called".into()));
    }
    callbacks
}

/// Recorded executes replay in a sandbox whose callbacks all fail: the same code
/// gives the same output from the journal alone; code that calls differently gets an error
/// naming the first difference, and the sandbox says the replay did not match.
#[test]
fn a_callback_journal_replays_without_the_host() {
    let Some(manifest) = manifest() else { return };
    // A synchronous call in one execute, concurrent ones in the next.
    let first = "total = add(a=20, b=22)";
    let code = r#"
import asyncio
slept, echoed, failed = await asyncio.gather(sleep(ms=5), echo(x=[1, "y"]), fail(), return_exceptions=True)
print(total, slept, echoed, failed)
"#;
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        let mut recording = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
        recording.record_callbacks();
        print_of(&mut recording, first);
        let recorded = print_of(&mut recording, code);
        assert_eq!(recorded, "42 5 {'x': [1, 'y']} callback 'fail' failed: boom\n", "{}", variant.name);
        let journal = recording.recorded_callbacks().unwrap().clone();
        let calls: Vec<(&str, String)> = journal.calls.iter().map(|call| (call.name.as_str(), serde_json::from_str::<serde_json::Value>(call.arguments.get()).unwrap().to_string())).collect();
        assert_eq!(
            calls,
            [("add", r#"{"a":20,"b":22}"#.into()), ("sleep", r#"{"ms":5}"#.into()), ("echo", r#"{"x":[1,"y"]}"#.into()), ("fail", "{}".into())],
            "{}: calls in the order they started",
            variant.name
        );
        assert_eq!(journal.calls[3].error.as_deref(), Some("boom"));
        assert!(journal.calls[1].duration_ms >= 5.0, "{}: the duration is the host's", variant.name);

        let mut replaying = runtime.sandbox(Arc::new(callbacks_that_must_not_be_called())).unwrap();
        replaying.replay_callbacks(journal.clone());
        print_of(&mut replaying, first);
        assert_eq!(print_of(&mut replaying, code), recorded, "{}: the replay gives the recording's output", variant.name);
        assert_eq!(replaying.replay_mismatch(), None);

        let mut diverging = runtime.sandbox(Arc::new(callbacks_that_must_not_be_called())).unwrap();
        diverging.replay_callbacks(journal);
        let error = diverging.execute(&first.replace("b=22", "b=23")).unwrap_err().to_string();
        let difference = "call 1 (`add`) differs from the callback journal: argument `b` is 23, the journal has 22";
        assert!(error.contains(&format!("CallbackError: callback 'add' failed: {difference}")), "{}: {error}", variant.name);
        assert_eq!(diverging.replay_mismatch().as_deref(), Some(difference), "{}", variant.name);
    }
}

/// Code that races callbacks takes the recorded path on replay: the answers come in the
/// order they came when recorded (the call started first answered second), not all at once.
#[test]
fn a_replayed_race_takes_the_recorded_path() {
    let Some(manifest) = manifest() else { return };
    let race = r#"
import asyncio
slow = asyncio.ensure_future(sleep(ms=400))
fast = asyncio.ensure_future(sleep(ms=20))
done, pending = await asyncio.wait([slow, fast], return_when=asyncio.FIRST_COMPLETED)
print('first:', sorted(task.result() for task in done))
print('then:', await asyncio.gather(*pending))
"#;
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        let mut recording = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
        recording.record_callbacks();
        let recorded = print_of(&mut recording, race);
        assert_eq!(recorded, "first: [20]\nthen: [400]\n", "{}", variant.name);
        let journal = recording.recorded_callbacks().unwrap().clone();
        assert_eq!((journal.calls[0].finished, journal.calls[1].finished), (Some(1), Some(0)), "{}", variant.name);

        let mut replaying = runtime.sandbox(Arc::new(callbacks_that_must_not_be_called())).unwrap();
        replaying.replay_callbacks(journal);
        assert_eq!(print_of(&mut replaying, race), recorded, "{}: the replay takes the recorded path", variant.name);
        assert_eq!(replaying.replay_mismatch(), None, "{}", variant.name);
    }
}

/// `eryx-tools run --record FILE` writes the journal of the run; `--replay FILE` gives the same
/// output from it; a run that calls differently fails, saying how.
#[test]
fn run_records_and_replays_a_journal() {
    let Some(_) = manifest() else { return };
    let manifest_path = std::env::var("ERYX_MANIFEST").unwrap();
    let directory = tempfile::tempdir().unwrap();
    let journal = directory.path().join("journal.json");
    let run = |extra: &[&str], code: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_eryx-tools"))
            .args(["run", "--manifest", &manifest_path, "--variant", "cpython"])
            .args(extra)
            .args(["-c", "import asyncio", "-c", code])
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let code = "print(await asyncio.gather(*(add(a=i, b=1) for i in range(3))))";
    let journal_flag = journal.to_str().unwrap();
    let (ok, stdout, stderr) = run(&["--record", journal_flag], code);
    assert!(ok && stdout == "[1, 2, 3]\n", "{stdout}{stderr}");
    assert!(stderr.contains("recorded 3 callback call(s)"), "{stderr}");
    let recorded = eryx_host::Journal::load(&journal).unwrap();
    assert_eq!(recorded.calls.iter().map(|call| call.result.as_ref().unwrap().get().to_owned()).collect::<Vec<_>>(), ["1", "2", "3"]);

    let (ok, stdout, stderr) = run(&["--replay", journal_flag], code);
    assert!(ok && stdout == "[1, 2, 3]\n", "{stdout}{stderr}");
    let (ok, _, stderr) = run(&["--replay", journal_flag], &code.replace("range(3)", "range(2)"));
    assert!(!ok, "a run with fewer calls than its journal fails");
    assert!(stderr.contains("the run did not match the callback journal: the callback journal has 1 more call(s)"), "{stderr}");
}

/// A synchronous callback that never returns ends in the callback timeout, and dropping the
/// sandbox and its runtime afterwards does not wait for it.
#[test]
fn a_hung_synchronous_callback_holds_up_nothing() {
    let Some(manifest) = manifest() else { return };
    let variant = manifest.variants.values().next().unwrap().clone();
    let limits = Limits { callback_timeout: std::time::Duration::from_millis(50), ..Limits::default() };
    let runtime = Runtime::new(variant, limits, &manifest.compile_cache_dir()).unwrap();
    let (keep, never) = std::sync::mpsc::channel::<()>();
    let never = std::sync::Mutex::new(never);
    let mut callbacks = Callbacks::new();
    callbacks.register("hang", "Never answers.", serde_json::json!({}), move |_| {
        let _ = never.lock().unwrap().recv();
        Ok(serde_json::Value::Null)
    });
    let mut sandbox = runtime.sandbox(Arc::new(callbacks)).unwrap();
    let output = print_of(&mut sandbox, "try:\n    hang()\nexcept CallbackError as error:\n    print(error)");
    assert!(output.contains("did not answer within the callback timeout of 50 ms"), "{output}");
    let (dropped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(sandbox);
        drop(runtime);
        dropped.send(()).unwrap();
    });
    assert!(done.recv_timeout(std::time::Duration::from_secs(10)).is_ok(), "dropping the runtime waited for the hung callback");
    drop(keep);
}

/// From async code: a sandbox made and run on the caller's own tokio runtime, inside a
/// spawned task (so the futures must be `Send`), its async callbacks running on that runtime.
#[test]
fn sandboxes_run_from_async_code() {
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
        let tasks = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        let output = tasks.block_on(async move {
            let task = tokio::spawn(async move {
                let mut sandbox = runtime.sandbox_async(Arc::new(Callbacks::standard())).await.unwrap();
                let code = "import asyncio\nprint(await asyncio.gather(sleep(ms=20), add(a=1, b=2)))";
                sandbox.execute_async(code).await.unwrap().stdout
            });
            task.await.unwrap()
        });
        assert_eq!(output, "[20, 3]\n", "{}", variant.name);
    }
}

/// The command form's timeout holds while the program waits in WASI (a sleep), not only
/// while it computes: the run ends soon after the timeout with its error.
#[test]
fn the_command_timeout_holds_while_the_program_sleeps() {
    use eryx_host::command::{CommandRuntime, Invocation, Streams};
    let Some(manifest) = manifest() else { return };
    for variant in manifest.variants.values() {
        let runtime = CommandRuntime::new(variant.clone(), &manifest.compile_cache_dir()).unwrap();
        let invocation = Invocation {
            args: vec!["-c".into(), "import time; time.sleep(30)".into()],
            env: Vec::new(),
            dirs: Vec::new(),
            timeout: std::time::Duration::from_millis(1500),
            memory_bytes: 256 << 20,
        };
        let started = std::time::Instant::now();
        let error = runtime.run(&invocation, Streams::Capture { stdin: Vec::new() }).expect_err("a sleep of 30 s outlives a timeout of 1.5 s");
        assert!(format!("{error:#}").contains("longer than the timeout of 1500 ms"), "{}: {error:#}", variant.name);
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{}: ended after {:?}", variant.name, started.elapsed());
    }
}

/// An execute whose future is dropped before it ends (its caller went away) leaves the
/// sandbox refusing further calls, naming why, until it is cleared.
#[test]
fn an_abandoned_execute_leaves_the_sandbox_unusable_until_cleared() {
    let Some(manifest) = manifest() else { return };
    for (name, _runtime, mut sandbox) in standard_sandboxes(&manifest) {
        let tasks = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let gave_up = tasks.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(300), sandbox.execute_async("import time\ntime.sleep(5)")).await.is_err()
        });
        assert!(gave_up, "{}: the execute was still running", name);
        let error = sandbox.execute("print(1)").unwrap_err().to_string();
        assert!(error.contains("abandoned before it finished"), "{}: {error}", name);
        sandbox.clear().unwrap();
        assert_eq!(print_of(&mut sandbox, "print(1)"), "1\n", "{}", name);
    }
}

/// The output listener sees what the code writes while it runs, in order across streams: a
/// line printed before a pause arrives before the pause ends. The output keeps the exact
/// bytes beside the text.
#[test]
fn output_streams_to_the_listener_as_it_is_written() {
    let Some(manifest) = manifest() else { return };
    for (name, _runtime, mut sandbox) in standard_sandboxes(&manifest) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let started = std::time::Instant::now();
        sandbox.set_output_listener(Some(Arc::new(move |stream, bytes: &[u8]| {
            sink.lock().unwrap().push((stream, String::from_utf8_lossy(bytes).into_owned(), started.elapsed()));
        })));
        let code = "import os, sys, time\nprint('before')\nos.write(2, b'warn\\n')\ntime.sleep(0.6)\nsys.stdout.buffer.write(b'after\\xff\\n')";
        let output = sandbox.execute(code).unwrap();
        assert_eq!(output.stdout_bytes, b"before\nafter\xff\n", "{}", name);
        assert_eq!(output.stdout, "before\nafter\\udcff\n", "{}", name);
        {
            let seen = seen.lock().unwrap();
            // In order across the streams (a print may come in pieces: its text, then its end).
            let mut runs: Vec<(eryx_host::Stream, String)> = Vec::new();
            for (stream, text, _) in seen.iter() {
                match runs.last_mut() {
                    Some((last, joined)) if last == stream => joined.push_str(text),
                    _ => runs.push((*stream, text.clone())),
                }
            }
            use eryx_host::Stream::{Stderr, Stdout};
            let expected = [(Stdout, "before\n"), (Stderr, "warn\n"), (Stdout, "after\u{fffd}\n")].map(|(stream, text)| (stream, text.to_owned()));
            assert_eq!(runs, expected, "{}", name);
            let (first, last) = (seen.first().unwrap().2, seen.last().unwrap().2);
            assert!(last - first >= std::time::Duration::from_millis(500), "{}: all output arrived at once ({first:?}, {last:?})", name);
        }
        // A cleared sandbox keeps its listener.
        sandbox.clear().unwrap();
        let before = seen.lock().unwrap().len();
        sandbox.execute("print('again')").unwrap();
        let after: String = seen.lock().unwrap()[before..].iter().map(|(_, text, _)| text.as_str()).collect();
        assert_eq!(after, "again\n", "{}", name);
    }
}

/// `eryx-tools run` prints the sandbox's output as it is written: the first line of a run that
/// pauses arrives while the run is still going.
#[test]
fn run_prints_output_live() {
    let Some(_) = manifest() else { return };
    let manifest_path = std::env::var("ERYX_MANIFEST").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eryx-tools"))
        .args(["run", "--manifest", &manifest_path, "--variant", "cpython", "--max-output-bytes", "12"])
        .args(["-c", "import time\nprint('first')\ntime.sleep(3)\nprint('second and more')"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "first\n");
    assert!(child.try_wait().unwrap().is_none(), "the first line came only when the run ended");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    // The limit holds live too: the kept bytes, then the mark.
    assert_eq!(rest, "second\n[eryx: output truncated: 10 more characters were printed]\n");
}

/// Code that reaches the runtime's plumbing and starts timers by the hundred thousand leaves
/// the host with a bounded number asleep and the sandbox working.
#[test]
fn a_flood_of_timers_stays_bounded() {
    let Some(manifest) = manifest() else { return };
    for (name, _runtime, mut sandbox) in standard_sandboxes(&manifest) {
        let code = "import _eryx_runtime\nstarted = [_eryx_runtime._host_timer(10**15)[0] for _ in range(100_000)]\nprint(sum(1 for handle in started if handle))";
        let pending: usize = print_of(&mut sandbox, code).trim().parse().unwrap();
        assert!(pending <= eryx_host::limits::MAX_PENDING_TIMERS, "{}: {pending} timers asleep", name);
        assert_eq!(print_of(&mut sandbox, "import asyncio\nasyncio.run(asyncio.sleep(0.01))\nprint('ok')"), "ok\n", "{}", name);
    }
}

/// Synchronous callbacks gathered by the dozen run beside each other, but never more than
/// `SYNC_CALLBACKS_PER_SANDBOX` of one sandbox at once: the others wait for a slot.
#[test]
fn synchronous_callbacks_of_one_sandbox_share_a_bounded_number_of_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Some(manifest) = manifest() else { return };
    let variant = manifest.variants.values().next().unwrap().clone();
    let runtime = Runtime::new(variant, Limits::default(), &manifest.compile_cache_dir()).unwrap();
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut callbacks = Callbacks::new();
    let (now, peak) = (running.clone(), most.clone());
    callbacks.register("slow", "Takes 100 ms on a blocking thread.", serde_json::json!({}), move |_| {
        let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(at_once, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(100));
        now.fetch_sub(1, Ordering::SeqCst);
        Ok(serde_json::json!(1))
    });
    let mut sandbox = runtime.sandbox(Arc::new(callbacks)).unwrap();
    let code = "import asyncio\nprint(sum(await asyncio.gather(*(slow() for _ in range(40)))))";
    assert_eq!(print_of(&mut sandbox, code), "40\n");
    let most = most.load(Ordering::SeqCst);
    assert!(most > 1 && most <= eryx_host::limits::SYNC_CALLBACKS_PER_SANDBOX, "{most} ran at once");
}

/// The stdlib's bytecode is the same bytes when compiled again from a fresh copy of the
/// sources (other inodes, times and directory order than the build's), and a sandbox imports
/// a module the pre-initialisation did not from that bytecode.
#[test]
fn the_stdlib_bytecode_is_deterministic_and_used() {
    let Some(manifest) = manifest() else { return };
    let Some(variant) = manifest.variants.values().find(|variant| variant.stdlib.is_some() && variant.command_path.is_some()) else {
        panic!("no variant mounts a stdlib");
    };
    let stdlib = &variant.stdlib.as_ref().unwrap().host_directory;
    let copy = tempfile::tempdir().unwrap();
    let fresh = copy.path().join("stdlib");
    copy_tree(stdlib, &fresh);
    let mut built = Vec::new();
    remove_bytecode(&fresh, &fresh, &mut built);
    assert!(built.len() > 500, "the build's tree holds the bytecode of the stdlib ({} files)", built.len());
    let command = variant.command_path.as_ref().unwrap();
    let count = eryx_tools::bytecode::compile_stdlib(command, &fresh, &copy.path().join("compiled")).unwrap();
    assert_eq!(count, built.len(), "one .pyc per module, as in the build");
    for relative in &built {
        assert!(std::fs::read(fresh.join(relative)).unwrap() == std::fs::read(stdlib.join(relative)).unwrap(), "{} differs", relative.display());
    }
    let runtime = Runtime::new(variant.clone(), Limits::default(), &manifest.compile_cache_dir()).unwrap();
    let mut sandbox = runtime.sandbox(Arc::new(Callbacks::standard())).unwrap();
    let code = "import sys, os, xml.dom.minidom as m\nprint('xml.dom.minidom' in sys.modules, m.__cached__.endswith('.pyc'), os.path.exists(m.__cached__))";
    assert_eq!(print_of(&mut sandbox, code), "True True True\n");
}

/// Removes every `__pycache__` directory under `directory`, noting the files they held
/// (relative to `root`).
fn remove_bytecode(root: &Path, directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "__pycache__") {
            for file in std::fs::read_dir(&path).unwrap() {
                found.push(file.unwrap().path().strip_prefix(root).unwrap().to_path_buf());
            }
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            remove_bytecode(root, &path, found);
        }
    }
}
