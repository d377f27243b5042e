//! The runtime against the committed guests in `transforms/dist/` and the expected outcomes in
//! `transforms/examples/expected/` (produced by running the same guests under jco), plus the
//! hostile guests and the refusal fixtures in `testdata/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn guest(name: &str) -> Vec<u8> {
    let path = root().join("transforms/dist").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = root().join("src/transform/testdata").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn runtime() -> TransformRuntime {
    TransformRuntime::new(TransformLimits::default()).expect("runtime")
}

fn compile(rt: &TransformRuntime, name: &str) -> CompiledTransform {
    rt.compile(&guest(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[path = "testdata/compact_json.rs"]
mod compact;
use compact::compact_json;

/// The event `transforms/test/run.mjs` builds for an example envelope.
fn event_for(example: &str) -> TransformInput {
    let path = root()
        .join("transforms/examples")
        .join(format!("{example}.json"));
    let text = std::fs::read_to_string(&path).expect("example");
    let envelope: Value = serde_json::from_str(&text).expect("example is JSON");
    let field = |k: &str| envelope[k].as_str().expect("string field").to_owned();
    TransformInput {
        id: field("id"),
        tenant_id: field("tenantId"),
        subscription_id: "sub-example".into(),
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

fn expected(transform: &str, example: &str) -> Value {
    let path = root()
        .join("transforms/examples/expected")
        .join(transform)
        .join(format!("{example}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("expected file")).expect("JSON")
}

/// Compares a call's result with an expected file (`deliver`, `drop`, `error` or `trap`).
fn assert_matches(label: &str, got: &Result<TransformOutcome, TransformError>, want: &Value) {
    match (got, want["action"].as_str()) {
        (Ok(TransformOutcome::Deliver { headers, body }), Some("deliver")) => {
            let want_headers: Vec<(String, String)> =
                serde_json::from_value(want["headers"].clone()).expect("headers");
            assert_eq!(headers, &want_headers, "{label}: headers");
            assert_eq!(
                Some(body.len() as u64),
                want["bodyBytes"].as_u64(),
                "{label}: size"
            );
            let want_body = want["body"].as_str().expect("body");
            let text = std::str::from_utf8(body).expect("UTF-8 body");
            // Semantically first (a readable diff for JSON), then byte for byte.
            if let (Ok(a), Ok(b)) = (
                serde_json::from_str::<Value>(text),
                serde_json::from_str::<Value>(want_body),
            ) {
                assert_eq!(a, b, "{label}: JSON body");
            }
            assert_eq!(text, want_body, "{label}: body");
        }
        (Ok(TransformOutcome::Drop { reason }), Some("drop")) => {
            assert_eq!(
                Some(reason.as_str()),
                want["reason"].as_str(),
                "{label}: reason"
            );
        }
        (Err(TransformError::GuestError(m)), None) if want.get("error").is_some() => {
            assert_eq!(Some(m.as_str()), want["error"].as_str(), "{label}: error");
        }
        (Err(TransformError::Trap(_)), None) if want["trap"] == Value::Bool(true) => {}
        _ => panic!("{label}: got {got:?}, expected {want}"),
    }
}

#[tokio::test]
async fn rust_examples_match_the_expected_outcomes() {
    let rt = runtime();
    // Every case of transforms/test/run-examples.mjs that the host must reproduce. evil-header
    // and evil-output deliver under jco (no limits); their refusal is tested below.
    let cases = [
        ("mask-pii", "node-event"),
        ("mask-pii", "transaction-event"),
        ("to-xml", "node-event"),
        ("to-xml", "transaction-event"),
        ("drop-by-rule", "node-event"),
        ("drop-by-rule", "node-event-fresh"),
        ("drop-by-rule", "node-event-skip"),
        ("drop-by-rule", "transaction-event"),
        ("evil-error", "node-event"),
        ("evil-trap", "node-event-skip"),
        ("evil-recursion", "node-event-skip"),
    ];
    let mut compiled = std::collections::HashMap::new();
    for (name, example) in cases {
        let t = compiled.entry(name).or_insert_with(|| compile(&rt, name));
        let report = rt.call(t, event_for(example)).await;
        assert_matches(
            &format!("{name} {example}"),
            &report.result,
            &expected(name, example),
        );
    }
}

#[tokio::test]
async fn python_guest_matches_rust_and_loads_without_recompiling() {
    // The CPU deadline is not under test here: a debug build of wasmtime on a loaded 2-core
    // machine instantiates the interpreter in well over the production 100 ms.
    let rt = TransformRuntime::new(TransformLimits {
        cpu: Duration::from_secs(10),
        ..TransformLimits::default()
    })
    .expect("runtime");
    let wasm = guest("mask-pii-py");
    let started = Instant::now();
    let mut t = rt.compile(&wasm).expect("Python guest compiles");
    let compile_time = started.elapsed();
    rt.validate(&t)
        .await
        .expect("Python guest instantiates within the limits");
    let artifact = t.take_artifact().expect("artifact");

    let started = Instant::now();
    let loaded = rt
        .load_precompiled(&artifact, &t.sha256())
        .expect("artifact loads");
    let load_time = started.elapsed();
    eprintln!(
        "mask-pii-py: module {} bytes, artifact {} bytes, compile {compile_time:?}, \
         load_precompiled {load_time:?}",
        t.module_bytes(),
        artifact.len()
    );
    assert_eq!(loaded.sha256(), t.sha256());
    assert_eq!(loaded.module_bytes(), wasm.len());
    assert!(
        load_time * 5 < compile_time,
        "load {load_time:?} should be far below compile {compile_time:?}"
    );

    for example in ["node-event", "transaction-event"] {
        let want = expected("mask-pii", example);
        for (how, t) in [("compiled", &t), ("loaded", &loaded)] {
            let report = rt.call(t, event_for(example)).await;
            eprintln!("mask-pii-py {example} ({how}): {:?}", report.elapsed);
            assert_matches(
                &format!("mask-pii-py {example} {how}"),
                &report.result,
                &want,
            );
        }
    }
}

/// The JavaScript guest (componentize-js: StarlingMonkey inside) through the real runtime: it
/// compiles, fits the sandbox, reloads from its artifact, gives the Rust guest's outputs byte
/// for byte, and a thrown string is the contract's `err`.
#[tokio::test]
async fn javascript_guest_matches_rust_and_reports_its_errors() {
    // As for Python: a debug build of wasmtime on a loaded machine is slow to instantiate.
    let rt = TransformRuntime::new(TransformLimits {
        cpu: Duration::from_secs(10),
        ..TransformLimits::default()
    })
    .expect("runtime");
    let wasm = guest("mask-pii-js");
    let started = Instant::now();
    let mut t = rt.compile(&wasm).expect("JavaScript guest compiles");
    let compile_time = started.elapsed();
    rt.validate(&t)
        .await
        .expect("JavaScript guest instantiates within the limits");
    let artifact = t.take_artifact().expect("artifact");
    let loaded = rt
        .load_precompiled(&artifact, &t.sha256())
        .expect("artifact loads");
    eprintln!(
        "mask-pii-js: module {} bytes, artifact {} bytes, compile {compile_time:?}",
        t.module_bytes(),
        artifact.len()
    );
    for example in ["node-event", "transaction-event"] {
        let want = expected("mask-pii", example);
        for (how, t) in [("compiled", &t), ("loaded", &loaded)] {
            let report = rt.call(t, event_for(example)).await;
            eprintln!("mask-pii-js {example} ({how}): {:?}", report.elapsed);
            assert_matches(
                &format!("mask-pii-js {example} {how}"),
                &report.result,
                &want,
            );
        }
    }
    let mut input = event_for("node-event");
    input.body = b"{not json".to_vec();
    match rt.call(&loaded, input).await.result {
        Err(TransformError::GuestError(m)) => {
            assert!(m.starts_with("body is not valid JSON: "), "{m}");
        }
        other => panic!("expected the guest's err, got {other:?}"),
    }
}

#[tokio::test]
async fn precompiled_round_trip_gives_the_same_outputs() {
    let rt = runtime();
    let wasm = guest("mask-pii");
    let started = Instant::now();
    let compiled = rt.compile(&wasm).expect("compiles");
    let compile_time = started.elapsed();
    let artifact = compiled.artifact().expect("artifact").to_vec();
    let started = Instant::now();
    let loaded = rt
        .load_precompiled(&artifact, &compiled.sha256())
        .expect("loads");
    let load_time = started.elapsed();
    eprintln!(
        "mask-pii: module {} bytes, artifact {} bytes, compile {compile_time:?}, \
         load_precompiled {load_time:?}",
        wasm.len(),
        artifact.len()
    );
    assert!(loaded.artifact().is_none());
    // The README's `sha256sum dist/mask-pii.wasm`.
    assert!(
        compiled.sha256_hex().starts_with("4823fd59"),
        "{}",
        compiled.sha256_hex()
    );
    for example in ["node-event", "transaction-event"] {
        let a = rt.call(&compiled, event_for(example)).await.result;
        let b = rt.call(&loaded, event_for(example)).await.result;
        assert_eq!(a, b, "{example}");
        assert_matches(example, &b, &expected("mask-pii", example));
    }

    // Another module's hash, a flipped bit, a truncation, or not an artifact at all: refused
    // before wasmtime sees the bytes.
    let other = rt.compile(&guest("to-xml")).expect("compiles");
    let err = rt
        .load_precompiled(&artifact, &other.sha256())
        .expect_err("wrong module");
    assert!(
        matches!(&err, TransformError::Artifact(m) if m.contains("compiled from module")),
        "{err}"
    );
    let mut flipped = artifact.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let err = rt
        .load_precompiled(&flipped, &compiled.sha256())
        .expect_err("corrupt");
    assert!(
        matches!(&err, TransformError::Artifact(m) if m.contains("corrupt")),
        "{err}"
    );
    let err = rt
        .load_precompiled(&artifact[..100], &compiled.sha256())
        .expect_err("truncated");
    assert!(matches!(err, TransformError::Artifact(_)), "{err}");
    let err = rt
        .load_precompiled(&wasm, &compiled.sha256())
        .expect_err("a module, not an artifact");
    assert!(matches!(err, TransformError::Artifact(_)), "{err}");

    // Runtime-only settings (the stack limit here) do not change the code: the artifact of a
    // runtime with other limits loads. (Settings that do change it are refused by wasmtime:
    // see `runtime::tests`.)
    let other_rt = TransformRuntime::new(TransformLimits {
        wasm_stack_bytes: 256 << 10,
        ..TransformLimits::default()
    })
    .expect("runtime");
    assert!(
        other_rt
            .load_precompiled(&artifact, &compiled.sha256())
            .is_ok()
    );
}

#[tokio::test]
async fn evil_loop_is_interrupted_at_the_deadline() {
    let rt = runtime();
    let t = compile(&rt, "evil-loop");
    let report = rt.call(&t, event_for("node-event")).await;
    eprintln!("evil-loop: {:?} after {:?}", report.result, report.elapsed);
    assert_eq!(
        report.result,
        Err(TransformError::Timeout(Duration::from_millis(100)))
    );
    assert!(
        report.elapsed >= Duration::from_millis(100),
        "{:?}",
        report.elapsed
    );
    assert!(
        report.elapsed < Duration::from_millis(300),
        "{:?}",
        report.elapsed
    );
}

#[tokio::test]
async fn evil_memory_hits_the_memory_limit() {
    // A generous time limit: touching 64 MiB takes ~50 ms, more on a loaded machine, and the
    // memory limit is what is under test.
    let rt = TransformRuntime::new(TransformLimits {
        cpu: Duration::from_secs(5),
        ..TransformLimits::default()
    })
    .expect("runtime");
    let t = compile(&rt, "evil-memory");
    let report = rt.call(&t, event_for("node-event")).await;
    eprintln!(
        "evil-memory: {:?} after {:?}",
        report.result, report.elapsed
    );
    assert_eq!(report.result, Err(TransformError::MemoryLimit(64 << 20)));
    // The pool slot is reusable at once.
    let ok = compile(&rt, "mask-pii");
    assert!(rt.call(&ok, event_for("node-event")).await.result.is_ok());
}

#[tokio::test]
async fn evil_recursion_overflows_the_wasm_stack() {
    let rt = runtime();
    let t = compile(&rt, "evil-recursion");
    let report = rt.call(&t, event_for("node-event-skip")).await;
    eprintln!(
        "evil-recursion: {:?} after {:?}",
        report.result, report.elapsed
    );
    assert!(
        matches!(&report.result, Err(TransformError::Trap(m)) if m.contains("stack overflow")),
        "{:?}",
        report.result
    );
}

#[tokio::test]
async fn evil_output_is_refused() {
    let rt = runtime();
    let t = compile(&rt, "evil-output");
    let report = rt.call(&t, event_for("node-event-skip")).await;
    let err = report.result.expect_err("refused");
    eprintln!("evil-output: {err}");
    assert!(matches!(err, TransformError::OutputTooLarge(_)), "{err}");
    assert!(err.to_string().contains("1 MiB"), "{err}");
}

#[tokio::test]
async fn evil_trap_crashes_and_its_stderr_is_kept() {
    let rt = runtime();
    let t = compile(&rt, "evil-trap");
    let report = rt.call(&t, event_for("node-event-skip")).await;
    eprintln!("evil-trap: {:?}, log {:?}", report.result, report.log);
    assert!(
        matches!(report.result, Err(TransformError::Trap(_))),
        "{:?}",
        report.result
    );
    assert!(
        report
            .log
            .text
            .contains("evil-trap: deliberate panic for event evt-node-skip"),
        "{:?}",
        report.log
    );
}

#[tokio::test]
async fn evil_header_cannot_forge_hookline_headers() {
    let rt = runtime();
    let t = compile(&rt, "evil-header");
    let report = rt.call(&t, event_for("node-event-skip")).await;
    let err = report.result.expect_err("refused");
    eprintln!("evil-header: {err}");
    assert_eq!(
        err,
        TransformError::ForbiddenHeader("webhook-signature".into())
    );
    assert!(err.to_string().contains("webhook-signature"));
}

#[tokio::test]
async fn evil_error_fails_with_its_message() {
    let rt = runtime();
    let t = compile(&rt, "evil-error");
    let report = rt.call(&t, event_for("node-event")).await;
    assert_eq!(
        report.result,
        Err(TransformError::GuestError(
            "evil-error: this transform always fails".into()
        ))
    );
}

/// Good calls next to spinning guests: the spinning ones yield every tick, so the good ones are
/// not held up, on a multi-threaded runtime and on a single thread.
async fn good_calls_beside_evil_loops(evil_loops: usize) {
    let rt = TransformRuntime::new(TransformLimits {
        cpu: Duration::from_secs(2),
        ..TransformLimits::default()
    })
    .expect("runtime");
    let evil = compile(&rt, "evil-loop");
    let good = compile(&rt, "mask-pii");
    // Warm up the pool and code so the timings below are the steady state.
    assert!(rt.call(&good, event_for("node-event")).await.result.is_ok());
    let alone = Instant::now();
    for _ in 0..50 {
        assert!(rt.call(&good, event_for("node-event")).await.result.is_ok());
    }
    let alone = alone.elapsed();

    let evil_started = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..evil_loops {
        let (rt, evil) = (rt.clone(), evil.clone());
        loops.push(tokio::spawn(async move {
            rt.call(&evil, event_for("node-event")).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // the loops are spinning now
    let beside = Instant::now();
    let mut good_calls = Vec::new();
    for _ in 0..50 {
        let (rt, good) = (rt.clone(), good.clone());
        good_calls.push(tokio::spawn(async move {
            rt.call(&good, event_for("node-event")).await.result
        }));
    }
    for c in good_calls {
        assert!(c.await.expect("task").is_ok());
    }
    let beside = beside.elapsed();
    for l in loops {
        let report = l.await.expect("task");
        assert!(matches!(report.result, Err(TransformError::Timeout(_))));
    }
    let evil_time = evil_started.elapsed();
    eprintln!(
        "{evil_loops} evil-loop(s): 50 mask-pii calls took {alone:?} alone and {beside:?} \
         beside them; the loops were stopped after {evil_time:?}"
    );
    assert!(
        beside < Duration::from_millis(1500),
        "good calls were held up: {beside:?}"
    );
    assert!(evil_time >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_call_does_not_delay_good_calls() {
    good_calls_beside_evil_loops(1).await;
    good_calls_beside_evil_loops(4).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_hostile_call_does_not_block_a_single_threaded_runtime() {
    good_calls_beside_evil_loops(2).await;
}

#[tokio::test]
async fn calls_beyond_the_pool_wait_for_a_slot() {
    let rt = TransformRuntime::new(TransformLimits {
        max_concurrent_calls: 2,
        ..TransformLimits::default()
    })
    .expect("runtime");
    let t = compile(&rt, "mask-pii");
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (rt, t) = (rt.clone(), t.clone());
        calls.push(tokio::spawn(async move {
            rt.call(&t, event_for("transaction-event")).await.result
        }));
    }
    for c in calls {
        assert_matches(
            "queued",
            &c.await.expect("task"),
            &expected("mask-pii", "transaction-event"),
        );
    }
}

#[test]
fn refusals_say_why() {
    let rt = runtime();
    let refuse = |bytes: &[u8]| match rt.compile(bytes) {
        Err(TransformError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    };

    let refuse = |bytes: &[u8]| {
        let m = refuse(bytes);
        eprintln!("refused: {m}");
        m
    };
    let m = refuse(b"not wasm at all");
    assert!(m.contains("not a WebAssembly binary"), "{m}");
    // The smallest valid core module.
    let m = refuse(b"\0asm\x01\0\0\0");
    assert!(
        m.contains("core WebAssembly module, not a component"),
        "{m}"
    );
    let m = refuse(&fixture("other-world.wasm"));
    assert!(
        m.contains("does not export hookline:transform/handler@1.0.0")
            && m.contains("hookline:fixtures/secrets@1.0.0"),
        "{m}"
    );
    let m = refuse(&fixture("wrong-signature.wasm"));
    assert!(m.contains("not with the contract's types"), "{m}");
    let m = refuse(&fixture("imports-secrets.wasm"));
    assert!(
        m.contains("imports hookline:fixtures/secrets@1.0.0, which hookline does not provide"),
        "{m}"
    );
    // A corrupt component: valid header, garbage after it.
    let mut broken = guest("mask-pii");
    broken.truncate(1000);
    let m = refuse(&broken);
    assert!(m.contains("not a valid WebAssembly component"), "{m}");

    let small = TransformRuntime::new(TransformLimits {
        module_bytes: 1 << 20,
        ..TransformLimits::default()
    })
    .expect("runtime");
    match small.compile(&guest("mask-pii-py")) {
        Err(TransformError::Invalid(m)) => {
            assert!(m.contains("larger than the 1 MiB limit"), "{m}");
            eprintln!("refused: {m}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn modules_that_do_not_fit_the_sandbox_are_refused() {
    // 1 MiB of memory: less than the Rust guests' initial memory (17 pages). The pool checks
    // this at compile time already.
    let tiny = TransformRuntime::new(TransformLimits {
        memory_bytes: 1 << 20,
        ..TransformLimits::default()
    })
    .expect("runtime");
    match tiny.compile(&guest("mask-pii")) {
        Err(TransformError::Invalid(m)) => {
            eprintln!("refused: {m}");
            assert!(
                m.contains("needs more than hookline's sandbox allows"),
                "{m}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    let rt = runtime();
    let t = compile(&rt, "mask-pii");
    rt.validate(&t).await.expect("fits");
    // A transform compiled by another runtime (another engine) is refused, not run.
    let other = runtime();
    let foreign = compile(&other, "mask-pii");
    let err = rt.validate(&foreign).await.expect_err("foreign");
    assert!(matches!(err, TransformError::Runtime(_)), "{err}");
    let report = rt.call(&foreign, event_for("node-event")).await;
    assert!(
        matches!(report.result, Err(TransformError::Runtime(_))),
        "{:?}",
        report.result
    );
}

#[test]
fn the_ticker_thread_stops_with_the_runtime() {
    let rt = runtime();
    let t = compile(&rt, "mask-pii");
    let shared = rt.ticker_probe();
    let clone = rt.clone();
    drop(rt);
    assert!(
        shared.upgrade().is_some(),
        "a clone keeps the runtime alive"
    );
    drop(clone);
    // Dropping the last clone joined the thread, which held the other reference.
    assert!(shared.upgrade().is_none());
    drop(t); // a compiled transform outliving its runtime is harmless
}

#[test]
fn calls_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let rt = runtime();
    let t = compile(&rt, "mask-pii");
    let call = rt.call(&t, event_for("node-event"));
    assert_send(&call);
    let validate = rt.validate(&t);
    assert_send(&validate);
}
