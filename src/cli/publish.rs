//! `hookline events publish`: events from a file or stdin, sent in input order.
//!
//! Input is one JSON object, a JSON array of objects, or JSON lines (any sequence of objects and
//! arrays, whitespace-separated). The whole input is parsed before anything is sent, so a
//! malformed file sends nothing. One event goes to `POST /v1/events`; more go to
//! `POST /v1/events/batch` in chunks (up to 1000), one chunk after the other so the server
//! assigns sequence numbers in input order. A server without the batch route (404) gets the
//! rest one event at a time. A chunk refused as too large (413) is split in halves. Overload
//! (429, 503) is retried after the server's `Retry-After`.
//!
//! An event the server refuses does not stop the others (as in a batch); the summary lists it
//! and the command exits non-zero. A refusal of the request itself (401, 403, a 5xx, overload
//! that persists) stops at that point; what was sent before it stays accepted, and the summary
//! says how far it got.

use std::io::Read as _;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::{Api, CallError, Refusal};
use super::output::Output;

/// The batch route's limit on events per request.
pub const MAX_BATCH: u32 = 1000;
/// Attempts of one request refused with 429 or 503 before giving up.
const OVERLOAD_TRIES: u32 = 6;
/// Printed (stderr) when the server answers 404 to the batch route.
pub const NO_BATCH_NOTICE: &str =
    "the server has no POST /v1/events/batch: publishing one event at a time";
/// Longest wait honoured from a `Retry-After`.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The events: a file with one JSON object, a JSON array, or JSON lines; `-` for stdin.
    #[arg(default_value = "-")]
    file: String,
    /// The tenant of events that name none (needed with the admin key).
    #[arg(long)]
    tenant: Option<String>,
    /// Events per `POST /v1/events/batch` request; 1 sends each to `POST /v1/events`.
    #[arg(long, default_value_t = MAX_BATCH, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH as i64))]
    batch_size: u32,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// The bytes of `path`, or of stdin for `-`.
pub fn read_input(path: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == "-" {
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
    } else {
        buf = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    }
    Ok(buf)
}

/// The events of `input`: objects, arrays of objects, or a sequence of both.
pub fn parse_events(input: &[u8]) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(input).into_iter::<Value>();
    let line_at = |offset: usize| input[..offset].iter().filter(|b| **b == b'\n').count() + 1;
    loop {
        let start = stream.byte_offset();
        let Some(next) = stream.next() else { break };
        let value = next.map_err(|e| anyhow::anyhow!("input is not JSON: {e}"))?;
        let line = line_at(start + leading_whitespace(&input[start..]));
        match value {
            Value::Object(_) => events.push(value),
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    if !item.is_object() {
                        anyhow::bail!(
                            "input line {line}: item {i} of the array is {}, expected an event object",
                            kind(&item)
                        );
                    }
                    events.push(item);
                }
            }
            other => anyhow::bail!(
                "input line {line}: found {}, expected an event object or an array of them",
                kind(&other)
            ),
        }
    }
    Ok(events)
}

fn leading_whitespace(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_whitespace()).count()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What happened to the events sent so far, by input position.
#[derive(Debug, Default)]
struct Tally {
    results: Vec<Value>,
    accepted: usize,
    duplicates: usize,
    rejected: usize,
}

impl Tally {
    fn add(&mut self, index: usize, mut result: Value) {
        match result.get("status").and_then(Value::as_str) {
            Some("accepted") => self.accepted += 1,
            Some("duplicate") => self.duplicates += 1,
            _ => self.rejected += 1,
        }
        result["index"] = json!(index);
        self.results.push(result);
    }

    fn reject(&mut self, index: usize, r: &Refusal) {
        self.add(index, json!({"status": "rejected", "error": r.to_json()}));
    }

    fn sent(&self) -> usize {
        self.results.len()
    }
}

/// How one batch request went.
enum BatchOutcome {
    /// Per-item results, in the chunk's order.
    Results(Vec<Value>),
    /// The server has no batch route.
    NoRoute,
    /// The chunk exceeds the server's body limit.
    TooLarge,
    /// An event of the chunk breaks the event schema, which refuses the whole batch (400).
    ItemRefused,
}

pub async fn run(api: &Api, out: &Output, args: PublishArgs) -> anyhow::Result<()> {
    let input = read_input(&args.file)?;
    let mut events = parse_events(&input)?;
    drop(input);
    if events.is_empty() {
        anyhow::bail!("no events in the input");
    }
    if let Some(tenant) = &args.tenant {
        for e in &mut events {
            if let Some(obj) = e.as_object_mut() {
                obj.entry("tenantId").or_insert_with(|| json!(tenant));
            }
        }
    }
    let total = events.len();
    let bar = if args.quiet || total == 1 {
        ProgressBar::hidden()
    } else {
        // Drawn on stderr, and only when stderr is a terminal.
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}  {msg}")
        {
            bar.set_style(style);
        }
        bar
    };
    let mut tally = Tally::default();
    let outcome = send_all(api, &events, args.batch_size, &bar, &mut tally).await;
    bar.finish_and_clear();

    print_summary(out, &tally, total);
    if let Err(e) = outcome {
        anyhow::bail!(
            "{e}\nstopped after {} of {total} events (those are published; the rest were not sent)",
            tally.sent()
        );
    }
    if tally.rejected > 0 {
        anyhow::bail!("{} of {total} events were rejected", tally.rejected);
    }
    Ok(())
}

async fn send_all(
    api: &Api,
    events: &[Value],
    batch_size: u32,
    bar: &ProgressBar,
    tally: &mut Tally,
) -> Result<(), CallError> {
    let mut use_batch = batch_size > 1 && events.len() > 1;
    let mut chunk = batch_size as usize;
    let mut i = 0;
    while i < events.len() {
        if use_batch {
            let end = (i + chunk).min(events.len());
            match send_batch(api, &events[i..end]).await? {
                BatchOutcome::Results(results) => {
                    for (k, r) in results.into_iter().enumerate() {
                        tally.add(i + k, r);
                    }
                    bar.inc((end - i) as u64);
                    i = end;
                }
                BatchOutcome::NoRoute => {
                    bar.suspend(|| eprintln!("{NO_BATCH_NOTICE}"));
                    use_batch = false;
                }
                BatchOutcome::TooLarge if end - i > 1 => chunk = (end - i) / 2,
                BatchOutcome::TooLarge => {
                    // One event over the limit: sent alone, it gets its own 413 refusal.
                    send_one(api, &events[i], i, tally).await?;
                    bar.inc(1);
                    i += 1;
                }
                BatchOutcome::ItemRefused => {
                    // Sent one by one, the refused event gets its own refusal and the others
                    // still go, in order.
                    for (k, event) in events[i..end].iter().enumerate() {
                        send_one(api, event, i + k, tally).await?;
                        bar.inc(1);
                    }
                    i = end;
                }
            }
        } else {
            send_one(api, &events[i], i, tally).await?;
            bar.inc(1);
            i += 1;
        }
    }
    Ok(())
}

/// Sends `body` to a route, retrying overload refusals (429, 503) after their `Retry-After`.
async fn call_retrying(api: &Api, route: &[&str], body: Vec<u8>) -> Result<Value, CallError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match api.call(Method::POST, route, &[], Some(body.clone())).await {
            Err(CallError::Refused(r))
                if matches!(
                    r.status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) && tries < OVERLOAD_TRIES =>
            {
                let wait = r.retry_after.unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
            }
            other => return other,
        }
    }
}

async fn send_batch(api: &Api, chunk: &[Value]) -> Result<BatchOutcome, CallError> {
    let body = serde_json::to_vec(chunk).map_err(|e| CallError::Invalid(e.to_string()))?;
    match call_retrying(api, &["v1", "events", "batch"], body).await {
        Ok(answer) => {
            let results = answer
                .get("results")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if results.len() != chunk.len() {
                return Err(CallError::Transport(format!(
                    "the batch answer has {} results for {} events",
                    results.len(),
                    chunk.len()
                )));
            }
            // Results carry their index within the chunk; order them by it so positions map
            // back to the input whatever order the server listed them in.
            let mut ordered = vec![Value::Null; chunk.len()];
            for (k, r) in results.into_iter().enumerate() {
                let at = r
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(k, |n| n as usize);
                if let Some(slot) = ordered.get_mut(at) {
                    *slot = r;
                }
            }
            Ok(BatchOutcome::Results(ordered))
        }
        // An older server (no route), or one whose proxy in front does not know it either.
        Err(CallError::Refused(r)) if r.status == StatusCode::NOT_FOUND => {
            Ok(BatchOutcome::NoRoute)
        }
        Err(CallError::Refused(r)) if r.status == StatusCode::PAYLOAD_TOO_LARGE => {
            Ok(BatchOutcome::TooLarge)
        }
        Err(CallError::Refused(r)) if r.status == StatusCode::BAD_REQUEST => {
            Ok(BatchOutcome::ItemRefused)
        }
        Err(e) => Err(e),
    }
}

/// Sends one event to `POST /v1/events`: an answer or a refusal of the event itself goes into
/// `tally`; a refusal of the request (auth, server error, persisting overload) is returned.
async fn send_one(
    api: &Api,
    event: &Value,
    index: usize,
    tally: &mut Tally,
) -> Result<(), CallError> {
    let body = serde_json::to_vec(event).map_err(|e| CallError::Invalid(e.to_string()))?;
    match call_retrying(api, &["v1", "events"], body).await {
        Ok(receipt) => {
            let duplicate = receipt.get("duplicate").and_then(Value::as_bool) == Some(true);
            tally.add(
                index,
                json!({
                    "status": if duplicate { "duplicate" } else { "accepted" },
                    "id": receipt.get("id"),
                    "seq": receipt.get("seq"),
                    "deliveries": receipt.get("deliveries"),
                }),
            );
            Ok(())
        }
        Err(CallError::Refused(r)) if refuses_the_event(r.status) => {
            tally.reject(index, &r);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether a status refuses this event (the next one may be fine) rather than the request.
fn refuses_the_event(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::NOT_FOUND
            | StatusCode::CONFLICT
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

fn print_summary(out: &Output, tally: &Tally, total: usize) {
    if out.json {
        out.print_json(&json!({
            "total": total,
            "sent": tally.sent(),
            "accepted": tally.accepted,
            "duplicates": tally.duplicates,
            "rejected": tally.rejected,
            "results": tally.results,
        }));
        return;
    }
    if total == 1
        && let Some(r) = tally.results.first()
        && r.get("error").is_none()
    {
        let mut r = r.clone();
        if let Some(obj) = r.as_object_mut() {
            obj.remove("index");
        }
        out.record(&r, &["id", "seq", "deliveries", "status"]);
        return;
    }
    println!(
        "{total} events: {} accepted, {} duplicates, {} rejected{}",
        tally.accepted,
        tally.duplicates,
        tally.rejected,
        if tally.sent() < total {
            format!(", {} not sent", total - tally.sent())
        } else {
            String::new()
        }
    );
    if tally.rejected > 0 {
        let rejected: Vec<Value> = tally
            .results
            .iter()
            .filter_map(|r| {
                let e = r.get("error")?;
                Some(json!({
                    "index": r.get("index"),
                    "code": e.get("code"),
                    "field": e.get("field"),
                    "message": e.get("message"),
                }))
            })
            .collect();
        out.list(
            &json!({ "items": rejected }),
            &[
                ("INDEX", "index"),
                ("CODE", "code"),
                ("FIELD", "field"),
                ("MESSAGE", "message"),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(events: &[Value]) -> Vec<&str> {
        events.iter().filter_map(|e| e["id"].as_str()).collect()
    }

    #[test]
    fn one_object_an_array_or_json_lines() {
        let one = parse_events(br#"{"id":"a"}"#).unwrap();
        assert_eq!(ids(&one), ["a"]);
        let array = parse_events(br#"[{"id":"a"},{"id":"b"}]"#).unwrap();
        assert_eq!(ids(&array), ["a", "b"]);
        let lines = parse_events(b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n\n{\"id\":\"c\"}\n").unwrap();
        assert_eq!(ids(&lines), ["a", "b", "c"]);
        let mixed = parse_events(b"[{\"id\":\"a\"}]\n{\"id\":\"b\"}").unwrap();
        assert_eq!(ids(&mixed), ["a", "b"]);
        assert!(parse_events(b"  \n").unwrap().is_empty());
    }

    #[test]
    fn anything_else_is_refused_with_its_line() {
        let e = parse_events(b"{\"id\":\"a\"}\n42\n").unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("a number"),
            "{e}"
        );
        let e = parse_events(b"[{\"id\":\"a\"}, \"x\"]").unwrap_err();
        assert!(e.to_string().contains("item 1"), "{e}");
        let e = parse_events(b"{\"id\":\"a\"}\n{\"id\": }").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
