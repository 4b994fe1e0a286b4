use std::sync::Arc;
use std::time::{Duration, Instant};
use eryx_host::{Callbacks, Limits, Manifest, Runtime};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let manifest = Manifest::load(std::path::Path::new("target/eryx/manifest.json")).unwrap();
    let variant = manifest.variant(&args[1]).unwrap().clone();
    let warm: usize = args[2].parse().unwrap();
    let n: usize = args[3].parse().unwrap();
    let runtime = Runtime::new(variant, Limits::default(), &manifest.compile_cache_dir()).unwrap();
    runtime.keep_warm(warm);
    let callbacks = Arc::new(if std::env::var_os("NOCB").is_some() { Callbacks::new() } else { Callbacks::standard() });
    let (mut take, mut exec, mut total) = (vec![], vec![], vec![]);
    for _ in 0..n {
        if warm > 0 { assert!(runtime.wait_warm(Duration::from_secs(10))); std::thread::sleep(Duration::from_millis(5)); }
        let t0 = Instant::now();
        let mut sandbox = runtime.sandbox(callbacks.clone()).unwrap();
        let t1 = Instant::now();
        if let Ok(first) = std::env::var("FIRST") { let o = sandbox.execute(&first).unwrap(); eprint!("{}{}", o.stdout, o.stderr); }
        let out = sandbox.execute("print(1)").unwrap();
        let t2 = Instant::now();
        assert_eq!(out.stdout, "1\n");
        take.push((t1 - t0).as_secs_f64() * 1e3);
        exec.push((t2 - t1).as_secs_f64() * 1e3);
        total.push((t2 - t0).as_secs_f64() * 1e3);
        let t3 = Instant::now();
        drop(sandbox);
        let _ = t3;
    }
    let med = |v: &mut Vec<f64>| { v.sort_by(f64::total_cmp); v[v.len() / 2] };
    println!("take {:.3} exec {:.3} total {:.3}", med(&mut take), med(&mut exec), med(&mut total));
}
