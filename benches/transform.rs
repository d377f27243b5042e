//! Transform benchmark: what one WebAssembly transform costs per delivery.
//!
//! `cargo bench --bench transform -- [--quick] [--calls N] [--no-python] [--no-js]`
//!
//! The figure to watch is a fresh instance plus one `transform` call of the Rust `mask-pii`
//! guest on the ~1 KiB `node-event` example, exactly as a delivery makes it
//! (`TransformRuntime::call`: slot permit, `Store`, instantiation from the pooled `InstancePre`,
//! the call, output checks, store drop), timed call by call on one current-thread tokio runtime.
//! The machine is shared and small, so it is printed next to a ceiling measured in the same run:
//! `serde_json` parsing and re-serialising the same body (what any JSON-rewriting transform
//! does at the very least), and the ratio of the two. The project's target is a median of at
//! most 50 µs per call.
//!
//! Also printed: compile and `load_precompiled` times of the Rust, Python and JavaScript guests
//! (the restart path must not recompile), and the Python and JavaScript guests' cost per call
//! (skipped with `--quick`, or `--no-python` / `--no-js`: their compiles take seconds).
//!
//! The table goes to stdout; the last stdout line is one JSON object with every figure.

#![allow(clippy::print_stdout, reason = "a benchmark's report is its stdout")]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use hookline::transform::{
    CompiledTransform, TransformInput, TransformLimits, TransformOutcome, TransformRuntime,
};

#[derive(Debug)]
struct Args {
    calls: usize,
    python: bool,
    js: bool,
}

fn args() -> Args {
    let mut a = Args {
        calls: 20_000,
        python: true,
        js: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                a.calls = 2_000;
                a.python = false;
                a.js = false;
            }
            "--no-python" => a.python = false,
            "--no-js" => a.js = false,
            "--calls" => {
                a.calls = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("--calls needs a number"));
            }
            // `cargo bench` passes `--bench`; ignore anything else too.
            _ => {}
        }
    }
    a
}

fn read(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// The transform tests include the same fixture file; when clippy builds this bench with
// cfg(test) the two includes meet in one crate, which is intended: one source, two users.
#[allow(clippy::duplicate_mod)]
#[path = "../src/transform/testdata/compact_json.rs"]
mod compact;
use compact::compact_json;

fn event() -> TransformInput {
    let text = String::from_utf8(read("transforms/examples/node-event.json")).expect("UTF-8");
    let envelope: Value = serde_json::from_str(&text).expect("JSON");
    let field = |k: &str| envelope[k].as_str().expect("string").to_owned();
    TransformInput {
        id: field("id"),
        tenant_id: field("tenantId"),
        subscription_id: "sub-bench".into(),
        notification_type: field("notificationType"),
        headers: vec![
            (
                "content-type".into(),
                "application/json;charset=UTF-8".into(),
            ),
            ("user-agent".into(), "hookline/0.1.0".into()),
        ],
        body: compact_json(&text).into_bytes(),
    }
}

/// Median and 99th percentile in µs.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

async fn time_calls(
    rt: &TransformRuntime,
    t: &CompiledTransform,
    input: &TransformInput,
    warmup: usize,
    calls: usize,
) -> (f64, f64) {
    for _ in 0..warmup {
        let r = rt.call(t, input.clone()).await;
        assert!(
            matches!(r.result, Ok(TransformOutcome::Deliver { .. })),
            "{:?}",
            r.result
        );
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let input = input.clone(); // the engine hands over an owned input too; not timed
        let started = Instant::now();
        let r = rt.call(t, input).await;
        samples.push(started.elapsed());
        black_box(r);
    }
    percentiles(samples)
}

fn time_serde(body: &[u8], warmup: usize, calls: usize) -> (f64, f64) {
    let round_trip = |b: &[u8]| {
        let v: Value = serde_json::from_slice(b).expect("JSON");
        serde_json::to_vec(&v).expect("serialises")
    };
    for _ in 0..warmup {
        black_box(round_trip(black_box(body)));
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        black_box(round_trip(black_box(body)));
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

/// Compile time, artifact size and load time of one guest.
fn compile_and_load(rt: &TransformRuntime, wasm: &[u8]) -> (CompiledTransform, f64, f64, usize) {
    let started = Instant::now();
    let mut t = rt.compile(wasm).expect("compiles");
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let artifact = t.take_artifact().expect("artifact");
    let started = Instant::now();
    let loaded = rt.load_precompiled(&artifact, &t.sha256()).expect("loads");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    (loaded, compile_ms, load_ms, artifact.len())
}

fn main() {
    let args = args();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio");
    let rt = TransformRuntime::new(TransformLimits::default()).expect("transform runtime");
    let input = event();
    let warmup = (args.calls / 20).max(200);

    let rust_wasm = read("transforms/dist/mask-pii.wasm");
    let (rust, rust_compile_ms, rust_load_ms, rust_artifact) = compile_and_load(&rt, &rust_wasm);
    let (t50, t99) = tokio.block_on(time_calls(&rt, &rust, &input, warmup, args.calls));
    let (s50, s99) = time_serde(&input.body, warmup, args.calls);

    let python = args.python.then(|| {
        let wasm = read("transforms/dist/mask-pii-py.wasm");
        let (py, compile_ms, load_ms, artifact) = compile_and_load(&rt, &wasm);
        let calls = (args.calls / 20).max(200);
        let (p50, p99) = tokio.block_on(time_calls(&rt, &py, &input, 20, calls));
        (wasm.len(), compile_ms, load_ms, artifact, p50, p99, calls)
    });

    let js = args.js.then(|| {
        let wasm = read("transforms/dist/mask-pii-js.wasm");
        let (t, compile_ms, load_ms, artifact) = compile_and_load(&rt, &wasm);
        let calls = (args.calls / 20).max(200);
        let (p50, p99) = tokio.block_on(time_calls(&rt, &t, &input, 20, calls));
        (wasm.len(), compile_ms, load_ms, artifact, p50, p99, calls)
    });

    println!("transform benchmark: body {} bytes", input.body.len());
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "per call (µs)", "p50", "p99", "calls"
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>8}",
        "mask-pii (Rust): fresh instance + transform", t50, t99, args.calls
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>8}",
        "serde_json parse + serialize (ceiling)", s50, s99, args.calls
    );
    if let Some((_, _, _, _, p50, p99, calls)) = python {
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>8}",
            "mask-pii-py (Python): fresh + transform", p50, p99, calls
        );
    }
    if let Some((_, _, _, _, p50, p99, calls)) = js {
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>8}",
            "mask-pii-js (JavaScript): fresh + transform", p50, p99, calls
        );
    }
    println!(
        "{:<44} {:>10} {:>10} {:>12}",
        "compile vs load", "compile ms", "load ms", "artifact B"
    );
    println!(
        "{:<44} {:>10.1} {:>10.2} {:>12}",
        format!("mask-pii ({} B)", rust_wasm.len()),
        rust_compile_ms,
        rust_load_ms,
        rust_artifact
    );
    if let Some((size, compile_ms, load_ms, artifact, ..)) = python {
        println!(
            "{:<44} {:>10.1} {:>10.2} {:>12}",
            format!("mask-pii-py ({size} B)"),
            compile_ms,
            load_ms,
            artifact
        );
    }
    if let Some((size, compile_ms, load_ms, artifact, ..)) = js {
        println!(
            "{:<44} {:>10.1} {:>10.2} {:>12}",
            format!("mask-pii-js ({size} B)"),
            compile_ms,
            load_ms,
            artifact
        );
    }

    let round = |x: f64| (x * 10.0).round() / 10.0;
    let mut report = json!({
        "transform_us_p50": round(t50),
        "transform_us_p99": round(t99),
        "serde_us_p50": round(s50),
        "serde_us_p99": round(s99),
        "ratio": round(t50 / s50),
        "calls": args.calls,
        "body_bytes": input.body.len(),
        "rust_compile_ms": round(rust_compile_ms),
        "rust_load_ms": (rust_load_ms * 100.0).round() / 100.0,
    });
    if let Some((_, compile_ms, load_ms, _, p50, p99, _)) = python {
        report["python_us_p50"] = json!(round(p50));
        report["python_us_p99"] = json!(round(p99));
        report["python_compile_ms"] = json!(round(compile_ms));
        report["python_load_ms"] = json!(round(load_ms));
    }
    if let Some((_, compile_ms, load_ms, _, p50, p99, _)) = js {
        report["js_us_p50"] = json!(round(p50));
        report["js_us_p99"] = json!(round(p99));
        report["js_compile_ms"] = json!(round(compile_ms));
        report["js_load_ms"] = json!(round(load_ms));
    }
    println!("{report}");
}
