//! Refused bodies reach ordinary clients: a client that writes its whole body before it reads
//! the answer (Python's urllib, many SDKs, curl without `Expect: 100-continue`) must read the
//! 413 or 401, not a broken pipe or a reset (issue 16, item 2).
//!
//! Each test serves the real API on 127.0.0.1 (`hookline::api::serve_with`, the ingress tests'
//! server) and talks to it with raw TCP clients written here and with `python3`'s urllib. The
//! server answers first, then reads and discards the rest of the body within a bound (eight
//! times the route's limit, `ApiConfig::refused_body_drain` of time) before it closes.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hookline::EngineConfig;
use hookline::api::ApiConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::ingress::Server;

const MIB: usize = 1024 * 1024;
/// The body every client here sends: twice the default 1 MiB limit of `POST /v1/events`.
const OVERSIZED: usize = 2 * MIB;

/// How a raw client frames its body.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length,
    Chunked,
}

/// What a client read: the status line's code, the headers (lower-cased names), the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Value,
}

impl Answer {
    fn parse(raw: &[u8]) -> Option<Answer> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            headers: head.to_ascii_lowercase(),
            body: serde_json::from_str(body.trim()).unwrap_or(Value::Null),
        })
    }

    fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        assert!(self.headers.contains("connection: close"), "{self:?}");
    }
}

fn request_head(path: &str, key: &str, framing: Framing, len: usize) -> String {
    let framing = match framing {
        Framing::Length => format!("content-length: {len}"),
        Framing::Chunked => "transfer-encoding: chunked".to_owned(),
    };
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\n{framing}\r\n\r\n"
    )
}

/// `len` bytes of body (spaces) in 64 KiB pieces, framed as asked, the chunked terminator
/// included.
fn body_pieces(framing: Framing, len: usize) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(64 * 1024);
        left -= n;
        pieces.push(match framing {
            Framing::Length => vec![b' '; n],
            Framing::Chunked => [
                format!("{n:x}\r\n").into_bytes(),
                vec![b' '; n],
                b"\r\n".to_vec(),
            ]
            .concat(),
        });
    }
    if let Framing::Chunked = framing {
        pieces.push(b"0\r\n\r\n".to_vec());
    }
    pieces
}

/// A connection whose send buffer is 64 KiB, as on a real network where little of a body is in
/// flight at once: on loopback the kernel would otherwise take megabytes of it into its buffers
/// and hide whether the server reads them.
async fn connect_small(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_send_buffer_size(64 * 1024)?;
    socket.connect(addr).await
}

/// The careless client: writes the head and the whole body, and only then reads the answer to
/// the end. Any error on the way (a broken pipe, a reset) is returned as the test's failure.
async fn write_all_then_read(
    addr: SocketAddr,
    head: &str,
    pieces: &[Vec<u8>],
) -> std::io::Result<(Answer, Duration)> {
    let start = Instant::now();
    let mut s = connect_small(addr).await?;
    s.write_all(head.as_bytes()).await?;
    for p in pieces {
        s.write_all(p).await?;
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no end of the answer within 20 s"))??;
    let answer = Answer::parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })?;
    Ok((answer, start.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_writes_its_whole_body_first_reads_the_refusal() {
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    for framing in [Framing::Length, Framing::Chunked] {
        let head = request_head("/v1/events", &acme, framing, OVERSIZED);
        let (answer, took) = write_all_then_read(srv.addr, &head, &body_pieces(framing, OVERSIZED))
            .await
            .unwrap_or_else(|e| panic!("{framing:?}: the client did not get its answer: {e}"));
        answer.assert_refused(413, "payload_too_large");
        assert!(took < Duration::from_secs(5), "{framing:?}: took {took:?}");
        // Without a valid key the body is not buffered either, and the 401 is read as well.
        let head = request_head("/v1/events", "hlk_not-a-key", framing, OVERSIZED);
        let (answer, _) = write_all_then_read(srv.addr, &head, &body_pieces(framing, OVERSIZED))
            .await
            .unwrap_or_else(|e| panic!("{framing:?}, no key: no answer: {e}"));
        answer.assert_refused(401, "unauthorized");
    }
    // The same with Python's urllib, which writes the whole body before it reads.
    if let Some(py) = python3() {
        let url = format!("http://{}/v1/events", srv.addr);
        for mode in ["length", "chunked"] {
            let out = urllib_post(&py, &url, &acme, mode, OVERSIZED).await;
            assert_eq!(out["status"], 413, "urllib, {mode}: {out}");
            assert_eq!(out["body"]["error"]["code"], "payload_too_large", "{out}");
        }
        let out = urllib_post(&py, &url, "hlk_not-a-key", "length", OVERSIZED).await;
        assert_eq!(out["status"], 401, "urllib, no key: {out}");
        assert_eq!(out["body"]["error"]["code"], "unauthorized", "{out}");
    }
    // The server is still well: a normal request goes through.
    let (answer, _) = write_all_then_read(
        srv.addr,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        &[],
    )
    .await
    .expect("healthz");
    assert_eq!(answer.status, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_drain_bound_is_cut_off_after_the_413() {
    const TOTAL: usize = 64 * MIB;
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    // A client that reads while it writes: it sees the 413 at once, then the connection is
    // closed once the server has read its bound (8 times the 1 MiB limit).
    let start = Instant::now();
    let s = TcpStream::connect(srv.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let head = request_head("/v1/events", &acme, Framing::Chunked, TOTAL);
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        if wr.write_all(head.as_bytes()).await.is_err() {
            return sent;
        }
        for p in body_pieces(Framing::Chunked, TOTAL) {
            if wr.write_all(&p).await.is_err() {
                return sent;
            }
            sent += p.len();
        }
        sent
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first_answer = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                raw.extend_from_slice(&buf[..n]);
                first_answer.get_or_insert_with(|| start.elapsed());
            }
            Err(_) => panic!("the connection hangs: {:?}", String::from_utf8_lossy(&raw)),
        }
    }
    let closed = start.elapsed();
    let answer = Answer::parse(&raw).expect("an HTTP answer");
    answer.assert_refused(413, "payload_too_large");
    let sent = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the writer stops once the server closes")
        .expect("no panic");
    eprintln!(
        "413 after {:?}, closed after {closed:?} and {} KiB sent",
        first_answer,
        sent / 1024
    );
    assert!(sent < TOTAL, "the server read all 64 MiB");
    assert!(
        sent >= 8 * MIB,
        "closed after {sent} bytes: the bound is 8 MiB"
    );

    // urllib with the same body: no hang; it may see the 413 or a reset, nothing else.
    if let Some(py) = python3() {
        let url = format!("http://{}/v1/events", srv.addr);
        let start = Instant::now();
        let out = urllib_post(&py, &url, &acme, "chunked", TOTAL).await;
        let took = start.elapsed();
        assert!(
            out["status"] == 413 || out["error"].is_string(),
            "urllib, 64 MiB: {out}"
        );
        assert!(took < Duration::from_secs(15), "urllib took {took:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off_after_the_drain_time() {
    let drain = Duration::from_millis(500);
    let srv = Server::start_with(
        ApiConfig {
            refused_body_drain: drain,
            ..ApiConfig::default()
        },
        EngineConfig::default(),
    )
    .await;
    let acme = srv.tenant("acme").await;
    let start = Instant::now();
    let s = TcpStream::connect(srv.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let head = request_head("/v1/events", &acme, Framing::Chunked, 0);
    let writer = tokio::spawn(async move {
        let mut open = wr.write_all(head.as_bytes()).await.is_ok();
        for p in body_pieces(Framing::Chunked, OVERSIZED)
            .iter()
            .take(OVERSIZED / (64 * 1024))
        {
            open = open && wr.write_all(p).await.is_ok();
        }
        // Then one byte every 50 ms, for ever (until the server closes).
        while open {
            open = wr.write_all(b"1\r\n \r\n").await.is_ok();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut raw)).await;
    let took = start.elapsed();
    assert!(read.is_ok(), "the connection hangs after {took:?}");
    Answer::parse(&raw)
        .expect("an HTTP answer")
        .assert_refused(413, "payload_too_large");
    assert!(
        took >= drain && took < drain + Duration::from_secs(3),
        "closed after {took:?}; the drain time is {drain:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_is_answered_at_once() {
    // Expect: 100-continue means the client sends its body only when told to: the refusal is
    // the answer, and the server does not wait for a body that will not come.
    let srv = Server::start().await;
    let acme = srv.tenant("acme").await;
    let head = request_head("/v1/events", &acme, Framing::Length, OVERSIZED)
        .replace("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n");
    let (answer, took) = write_all_then_read(srv.addr, &head, &[])
        .await
        .expect("an answer");
    answer.assert_refused(413, "payload_too_large");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_start_gate_answers_a_body_it_does_not_want() {
    // While the journal recovers, every route answers 503; a body sent meanwhile is drained
    // like any refused one, so the careless client reads the 503.
    let gate = hookline::api::ops::StartGate::new(ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let gate = gate.clone();
        async move {
            gate.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let head = request_head("/v1/events", "hlk_any", Framing::Length, OVERSIZED);
    let (answer, _) = write_all_then_read(addr, &head, &body_pieces(Framing::Length, OVERSIZED))
        .await
        .expect("the 503 is read");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], "unavailable", "{answer:?}");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the gate stops")
        .expect("no panic")
        .expect("clean stop");
}

// ---- python3 -------------------------------------------------------------------------------

/// The `python3` to run urllib with, or `None` (said loudly) when there is none. CI sets
/// `HOOKLINE_REQUIRE_EXTERNAL=1`, which makes a missing `python3` a failure.
fn python3() -> Option<String> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("python3".to_owned());
    }
    let msg = "python3 not found: the urllib half of the refused-body tests did NOT run";
    assert!(
        std::env::var_os("HOOKLINE_REQUIRE_EXTERNAL").is_none(),
        "{msg} (HOOKLINE_REQUIRE_EXTERNAL is set)"
    );
    eprintln!("WARNING: {msg}");
    None
}

/// urllib's POST of `len` bytes, with a Content-Length (`mode = "length"`) or chunked (a
/// generator body). Prints one JSON line: `{status, body}` or `{error}`.
const URLLIB_POST: &str = r#"
import json, socket, sys, urllib.error, urllib.request
# A 64 KiB send buffer, as on a real network (see connect_small in the Rust half).
_connect = socket.create_connection
def connect_small(*args, **kwargs):
    s = _connect(*args, **kwargs)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    return s
socket.create_connection = connect_small
url, key, mode, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def pieces():
    left = size
    while left > 0:
        n = min(left, 65536)
        left -= n
        yield b" " * n
data = b" " * size if mode == "length" else pieces()
req = urllib.request.Request(url, data=data, method="POST", headers={
    "Authorization": "Bearer " + key, "Content-Type": "application/json"})
def parse(text):
    try:
        return json.loads(text)
    except ValueError:
        return text
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(json.dumps({"status": r.status, "body": parse(r.read())}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": parse(e.read())}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
"#;

async fn urllib_post(py: &str, url: &str, key: &str, mode: &str, len: usize) -> Value {
    let mut cmd = Command::new(py);
    cmd.args(["-c", URLLIB_POST, url, key, mode, &len.to_string()]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("no panic")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "urllib client printed {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
