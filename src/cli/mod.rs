//! The client side of the `hookline` binary: subcommands that talk to a running server over its
//! HTTP API (`tenants`, `subscriptions`, `events`, `deliveries`) and the HTTP load generator
//! (`load`); and the server's [log sink](log_sink).
//!
//! These commands never open a journal: they are plain HTTP clients, so they work against any
//! hookline server they can reach. The server's URL and API key come from `--url` / `--key` or
//! `HOOKLINE_URL` / `HOOKLINE_KEY`. Answers are shown as tables, or as the server's JSON with
//! `--json`; a refusal is printed from the server's `{error: {code, message, field}}` and the
//! process exits non-zero.
//!
//! The HTTP client here is a plain reqwest client, deliberately not the engine's delivery
//! client: that one refuses private and loopback addresses (SSRF defence), which is right for
//! tenants' callbacks and wrong for an operator talking to their own server.

// This module is a command-line program: printing answers to stdout is its job.
#![allow(clippy::print_stdout)]

mod client;
mod load;
pub(crate) mod log_sink;
mod output;
mod publish;
mod receiver;
mod soak;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use client::{Api, Conn};
use output::Output;

/// The client subcommands, flattened into the binary's top-level commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create and show tenants (creating needs the admin key).
    Tenants(Tenants),
    /// Create, list, show, pause, resume and delete subscriptions.
    Subscriptions(Subscriptions),
    /// Publish events from a file or stdin.
    Events(Events),
    /// List, show, resubmit and skip deliveries.
    Deliveries(Deliveries),
    /// Generate HTTP load against a running server and report events/s and latency.
    Load(load::LoadArgs),
}

/// Runs a client subcommand to completion. A failure is printed as one readable message on
/// stderr (no backtrace: these are expected outcomes, such as a refusal by the server) and the
/// process exits with status 1.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    let result = match cmd {
        ClientCommand::Tenants(t) => tenants(t).await,
        ClientCommand::Subscriptions(s) => subscriptions(s).await,
        ClientCommand::Events(e) => events(e).await,
        ClientCommand::Deliveries(d) => deliveries(d).await,
        ClientCommand::Load(l) => load::run(l).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

// ---- tenants -------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct Tenants {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: TenantCmd,
}

#[derive(Subcommand, Debug)]
enum TenantCmd {
    /// Create a tenant; the answer holds its API key, shown only this once.
    Create {
        /// The tenant id (letters, digits, `-`, `_`).
        #[arg(long)]
        id: String,
        /// A display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a tenant.
    Show {
        /// The tenant id.
        id: String,
    },
}

async fn tenants(t: Tenants) -> anyhow::Result<()> {
    let api = Api::new(&t.conn)?;
    let out = Output::new(t.conn.json);
    match t.cmd {
        TenantCmd::Create { id, name } => {
            let name = name.unwrap_or_else(|| id.clone());
            let created = api
                .post(&["v1", "tenants"], &json!({"id": id, "name": name}))
                .await?;
            out.record(&created, &["id", "name", "createdAt", "apiKey"]);
            if !out.json {
                eprintln!("the tenant's API key is shown only this once: store it now");
            }
        }
        TenantCmd::Show { id } => {
            let tenant = api.get(&["v1", "tenants", &id], &[]).await?;
            out.record(&tenant, &["id", "name", "createdAt"]);
        }
    }
    Ok(())
}

// ---- subscriptions -------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct Subscriptions {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: SubscriptionCmd,
}

#[derive(Subcommand, Debug)]
enum SubscriptionCmd {
    /// Create a subscription from flags and/or a JSON spec file (flags win).
    Create(Box<CreateSubscription>),
    /// List subscriptions (a tenant key sees its own; the admin key all, or one tenant's).
    List {
        /// Only this tenant's subscriptions.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show a subscription.
    Show {
        /// The subscription id.
        id: String,
    },
    /// Pause a subscription: events keep accumulating, nothing is sent.
    Pause {
        /// The subscription id.
        id: String,
    },
    /// Resume a paused, disabled or faulted subscription.
    Resume {
        /// The subscription id.
        id: String,
    },
    /// Delete a subscription.
    Delete {
        /// The subscription id.
        id: String,
    },
}

/// `subscriptions create`: the common fields as flags; anything else through `--file`.
#[derive(Args, Debug)]
struct CreateSubscription {
    /// A JSON file with the subscription (the body of `POST /v1/subscriptions`); `-` for stdin.
    #[arg(long, short = 'f')]
    file: Option<String>,
    /// The owning tenant (required with the admin key; a tenant key implies its own).
    #[arg(long)]
    tenant: Option<String>,
    /// The callback URL deliveries are POSTed to (`--url` is the hookline server's).
    #[arg(long, visible_alias = "callback-url")]
    endpoint: Option<String>,
    /// Notification types to receive (repeatable or comma-separated); none means all.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// Workflow ids to receive (repeatable or comma-separated); none means all.
    #[arg(long = "workflow", value_delimiter = ',')]
    workflows: Vec<String>,
    /// The `access-key` header value the receiver expects.
    #[arg(long)]
    access_key: Option<String>,
    /// A custom header sent with every delivery, `Name=value` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Attempts per delivery, the first included.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Delays before each retry in ms, comma-separated (the last repeats).
    #[arg(long, value_delimiter = ',')]
    backoff_ms: Vec<u64>,
    /// Per-attempt timeout in ms.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// What a failed delivery does to the queue: `block` or `skip`.
    #[arg(long, value_parser = ["block", "skip"])]
    on_failure: Option<String>,
    /// Deliveries per second (fractions allowed).
    #[arg(long)]
    rate_per_second: Option<f64>,
    /// Burst of the rate limit (with --rate-per-second).
    #[arg(long, requires = "rate_per_second")]
    rate_burst: Option<u32>,
    /// Also sign with ed25519 (`v1a` signatures).
    #[arg(long)]
    ed25519: bool,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected Name=value, got {s:?}")),
    }
}

impl CreateSubscription {
    /// The request body: the spec file's object with the flags laid over it.
    fn body(&self) -> anyhow::Result<Value> {
        let mut body = match &self.file {
            Some(path) => {
                let bytes = publish::read_input(path)?;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => anyhow::bail!("{path}: the subscription spec must be a JSON object"),
                    Err(e) => anyhow::bail!("{path}: malformed JSON: {e}"),
                }
            }
            None => Map::new(),
        };
        let mut set = |k: &str, v: Value| {
            body.insert(k.to_owned(), v);
        };
        if let Some(t) = &self.tenant {
            set("tenantId", json!(t));
        }
        if let Some(u) = &self.endpoint {
            set("url", json!(u));
        }
        if !self.types.is_empty() {
            set("notificationTypes", json!(self.types));
        }
        if !self.workflows.is_empty() {
            set("workflowIds", json!(self.workflows));
        }
        if let Some(k) = &self.access_key {
            set("accessKey", json!(k));
        }
        if !self.headers.is_empty() {
            let h: Map<String, Value> = self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            set("headers", Value::Object(h));
        }
        if self.max_attempts.is_some() || !self.backoff_ms.is_empty() {
            let mut retry = Map::new();
            if let Some(n) = self.max_attempts {
                retry.insert("maxAttempts".into(), json!(n));
            }
            if !self.backoff_ms.is_empty() {
                retry.insert("backoffMs".into(), json!(self.backoff_ms));
            }
            set("retry", Value::Object(retry));
        }
        if let Some(t) = self.timeout_ms {
            set("timeoutMs", json!(t));
        }
        if let Some(p) = &self.on_failure {
            set("onFailure", json!(p));
        }
        if let Some(r) = self.rate_per_second {
            let mut rl = json!({"perSecond": r});
            if let Some(b) = self.rate_burst {
                rl["burst"] = json!(b);
            }
            set("rateLimit", rl);
        }
        if self.ed25519 {
            set("ed25519", json!(true));
        }
        if !body.contains_key("url") {
            anyhow::bail!(
                "a subscription needs a callback URL: pass --endpoint or a spec file with \"url\""
            );
        }
        Ok(Value::Object(body))
    }
}

/// The fields a subscription is shown with, in this order (the rest follow).
const SUBSCRIPTION_FIELDS: &[&str] = &[
    "id",
    "tenantId",
    "url",
    "state",
    "stateReason",
    "blockedOn",
    "notificationTypes",
    "workflowIds",
    "onFailure",
    "retry",
    "timeoutMs",
    "secret",
    "secretMasked",
];

async fn subscriptions(s: Subscriptions) -> anyhow::Result<()> {
    let api = Api::new(&s.conn)?;
    let out = Output::new(s.conn.json);
    match s.cmd {
        SubscriptionCmd::Create(c) => {
            let sub = api.post(&["v1", "subscriptions"], &c.body()?).await?;
            out.record(&sub, SUBSCRIPTION_FIELDS);
            if !out.json && sub.get("secret").is_some() {
                eprintln!("the signing secret is shown only this once: store it now");
            }
        }
        SubscriptionCmd::List { tenant } => {
            let query: Vec<(&str, String)> = tenant.map(|t| ("tenantId", t)).into_iter().collect();
            let page = api.get(&["v1", "subscriptions"], &query).await?;
            out.list(
                &page,
                &[
                    ("ID", "id"),
                    ("TENANT", "tenantId"),
                    ("STATE", "state"),
                    ("URL", "url"),
                    ("TYPES", "notificationTypes"),
                    ("ON FAILURE", "onFailure"),
                ],
            );
        }
        SubscriptionCmd::Show { id } => {
            let sub = api.get(&["v1", "subscriptions", &id], &[]).await?;
            out.record(&sub, SUBSCRIPTION_FIELDS);
        }
        SubscriptionCmd::Pause { id } => {
            let sub = api
                .post_empty(&["v1", "subscriptions", &id, "pause"])
                .await?;
            out.record(&sub, SUBSCRIPTION_FIELDS);
        }
        SubscriptionCmd::Resume { id } => {
            let sub = api
                .post_empty(&["v1", "subscriptions", &id, "resume"])
                .await?;
            out.record(&sub, SUBSCRIPTION_FIELDS);
        }
        SubscriptionCmd::Delete { id } => {
            api.delete(&["v1", "subscriptions", &id]).await?;
            if out.json {
                out.print_json(&json!({"id": id, "deleted": true}));
            } else {
                println!("deleted subscription {id}");
            }
        }
    }
    Ok(())
}

// ---- events --------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct Events {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: EventCmd,
}

#[derive(Subcommand, Debug)]
enum EventCmd {
    /// Publish events, in input order: one JSON object, a JSON array, or JSON lines.
    Publish(publish::PublishArgs),
}

async fn events(e: Events) -> anyhow::Result<()> {
    let api = Api::new(&e.conn)?;
    let out = Output::new(e.conn.json);
    match e.cmd {
        EventCmd::Publish(args) => publish::run(&api, &out, args).await,
    }
}

// ---- deliveries ----------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct Deliveries {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: DeliveryCmd,
}

#[derive(Subcommand, Debug)]
enum DeliveryCmd {
    /// List a subscription's deliveries in delivery order.
    List {
        /// The subscription id.
        subscription: String,
        /// Only deliveries in this status.
        #[arg(long, value_parser = ["pending", "in_flight", "delivered", "failed", "skipped", "dropped"])]
        status: Option<String>,
        /// Page size (the server's default when absent).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue after this cursor (the `next` of a previous page).
        #[arg(long)]
        after: Option<String>,
        /// Follow the cursor through every page.
        #[arg(long, conflicts_with = "after")]
        all: bool,
    },
    /// Show a delivery with its attempt log.
    Show {
        /// The delivery id.
        id: String,
    },
    /// Put a failed delivery back to pending in its place (unblocks a subscription blocked on it).
    Resubmit {
        /// The delivery id.
        id: String,
    },
    /// Skip a pending or failed delivery (a subscription blocked on it moves on).
    Skip {
        /// The delivery id.
        id: String,
    },
}

const DELIVERY_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SEQ", "seq"),
    ("EVENT", "eventId"),
    ("STATUS", "status"),
    ("ATTEMPTS", "attempts"),
    ("LAST CODE", "lastStatusCode"),
    ("LAST ERROR", "lastError"),
    ("UPDATED", "updatedAt"),
];

const DELIVERY_FIELDS: &[&str] = &[
    "id",
    "eventId",
    "subscriptionId",
    "tenantId",
    "seq",
    "status",
    "attemptCount",
    "lastStatusCode",
    "lastError",
    "nextAttemptAt",
    "updatedAt",
];

async fn deliveries(d: Deliveries) -> anyhow::Result<()> {
    let api = Api::new(&d.conn)?;
    let out = Output::new(d.conn.json);
    match d.cmd {
        DeliveryCmd::List {
            subscription,
            status,
            limit,
            after,
            all,
        } => {
            let path = ["v1", "subscriptions", &subscription, "deliveries"];
            let mut items = Vec::new();
            let mut cursor = after;
            let next = loop {
                let mut query = Vec::new();
                if let Some(s) = &status {
                    query.push(("status", s.clone()));
                }
                if let Some(l) = limit {
                    query.push(("limit", l.to_string()));
                }
                if let Some(c) = &cursor {
                    query.push(("after", c.clone()));
                }
                let mut page = api.get(&path, &query).await?;
                if let Some(Value::Array(page_items)) = page.get_mut("items").map(Value::take) {
                    items.extend(page_items);
                }
                let next = page.get("next").and_then(Value::as_str).map(str::to_owned);
                match next {
                    Some(n) if all => cursor = Some(n),
                    other => break other,
                }
            };
            let page = json!({"items": items, "next": next});
            out.list(&page, DELIVERY_COLUMNS);
            if !out.json
                && let Some(n) = next
            {
                println!("more: --after {n}");
            }
        }
        DeliveryCmd::Show { id } => {
            let mut detail = api.get(&["v1", "deliveries", &id], &[]).await?;
            if out.json {
                out.print_json(&detail);
            } else {
                let log = detail
                    .as_object_mut()
                    .and_then(|d| d.remove("attempts"))
                    .unwrap_or_else(|| json!([]));
                out.record(&detail, DELIVERY_FIELDS);
                let attempts = json!({ "items": log });
                println!();
                println!("attempts:");
                out.list(
                    &attempts,
                    &[
                        ("N", "n"),
                        ("STARTED", "startedAt"),
                        ("MS", "durationMs"),
                        ("CODE", "statusCode"),
                        ("KIND", "errorKind"),
                        ("ERROR", "error"),
                        ("RESPONSE", "responseSnippet"),
                    ],
                );
            }
        }
        DeliveryCmd::Resubmit { id } => {
            let d = api
                .post_empty(&["v1", "deliveries", &id, "resubmit"])
                .await?;
            out.record(&d, DELIVERY_FIELDS);
        }
        DeliveryCmd::Skip { id } => {
            let d = api.post_empty(&["v1", "deliveries", &id, "skip"]).await?;
            out.record(&d, DELIVERY_FIELDS);
        }
    }
    Ok(())
}
