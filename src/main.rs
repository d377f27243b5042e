//! The `hookline` binary: a thin command-line layer over the library.
//!
//! `hookline serve` runs the engine with its HTTP API. Settings come from flags, which override
//! `HOOKLINE_*` environment variables, which override a `--config` TOML file, which overrides
//! the defaults (see `hookline::config::server`); an invalid setting stops it at start (exit 2)
//! naming the key. It listens before the journal is recovered (`/readyz` says when it is ready).
//! SIGTERM or SIGINT stops intake, lets attempts in flight finish (bounded by the shutdown grace)
//! and exits 0.
//! The `transform test` subcommand runs a transform locally; the other subcommands are HTTP
//! clients of a running server (see [`cli`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookline::Engine;
use hookline::config::server::{ConfigSources, LogFormat, LogSettings, ServerConfig};
use tracing_subscriber::EnvFilter;

mod cli;

/// mimalloc rather than the C library's allocator: a delivery allocates and frees many small
/// buffers across the runtime's threads (request and response bodies, rows, futures), and
/// glibc's malloc took 13 % of the CPU of 100 busy subscriptions, most of it in consolidating
/// and unlinking free chunks (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "hookline",
    version,
    about = "Durable, strictly ordered webhook delivery"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the delivery engine with its HTTP API.
    Serve(Box<ServeArgs>),
    /// Develop tenant transforms locally.
    #[command(subcommand)]
    Transform(TransformCmd),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Subcommand, Debug)]
enum TransformCmd {
    /// Run a transform component on an event envelope, as a delivery would, and print what it
    /// decided (JSON). Exits 0 for deliver or drop, 1 when the transform fails.
    Test {
        /// The component (.wasm) built for transforms/wit/transform.wit.
        #[arg(long)]
        wasm: PathBuf,
        /// The event envelope (JSON); `-` reads standard input.
        #[arg(long)]
        event: PathBuf,
    },
}

/// Settings come from, lowest first: defaults, the `--config` file, `HOOKLINE_*` environment
/// variables (e.g. HOOKLINE_LISTEN, HOOKLINE_LIMITS__MAX_EVENT_BYTES), and these flags. Every
/// key and its default: schemas/config.example.toml.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    // Flags stay text: the configuration layers parse them, so a refusal names the flag.
    #[arg(long, help = format!(
        "Address and port of the HTTP API (`listen`; default {})",
        ServerConfig::DEFAULT_LISTEN
    ))]
    listen: Option<String>,
    #[arg(long, help = format!(
        "The store: a SQLite journal file, created if missing, or a postgres:// URL shared by a cluster (`db`; default {})",
        ServerConfig::DEFAULT_DB
    ))]
    db: Option<String>,
    /// The admin API key (`adminKey`). If unset on first start, one is generated, printed once,
    /// and only its hash is stored.
    #[arg(long)]
    admin_key: Option<String>,
    /// The master key sealing subscription secrets (`secretKey`): `base64:…` or 64 hex
    /// characters. Default: a key file `<db>.key` beside the journal.
    #[arg(long)]
    secret_key: Option<String>,
    /// Outbound HTTP(S) proxy for every delivery (`proxy`), e.g. http://10.0.0.5:3128.
    #[arg(long)]
    proxy: Option<String>,
    /// Comma-separated CIDRs exempt from the private-address block (`allowNetworks`).
    #[arg(long)]
    allow_networks: Option<String>,
    /// Journal durability (`durability`): fsync (default) or os.
    #[arg(long)]
    durability: Option<String>,
    /// Log format (`log.format`): text (default) or json.
    #[arg(long)]
    log_format: Option<String>,
    #[arg(long, help = format!(
        "Log filter (`log.level`; default {}). RUST_LOG, when set, wins",
        ServerConfig::DEFAULT_LOG_LEVEL
    ))]
    log_level: Option<String>,
    /// Any configuration key, e.g. `--set limits.maxEventBytes=2097152` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServeArgs {
    fn sources(&self) -> anyhow::Result<ConfigSources> {
        let mut flags: Vec<(String, String)> = Vec::new();
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            flags.push((k.trim().to_owned(), v.to_owned()));
        }
        let named = [
            ("listen", &self.listen),
            ("db", &self.db),
            ("adminKey", &self.admin_key),
            ("secretKey", &self.secret_key),
            ("proxy", &self.proxy),
            ("allowNetworks", &self.allow_networks),
            ("durability", &self.durability),
            ("log.format", &self.log_format),
            ("log.level", &self.log_level),
        ];
        for (key, value) in named {
            if let Some(v) = value {
                flags.push((key.to_owned(), v.clone()));
            }
        }
        Ok(ConfigSources {
            file: self.config.clone(),
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("HOOKLINE_"))
                .collect(),
            flags,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => {
            let config = match args.sources().and_then(|s| Ok(ServerConfig::load(&s)?)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hookline: {e:#}");
                    std::process::exit(2);
                }
            };
            serve(config).await
        }
        Cmd::Transform(TransformCmd::Test { wasm, event }) => transform_test(wasm, event).await,
        Cmd::Client(cmd) => cli::run(cmd).await,
    }
}

async fn transform_test(wasm: PathBuf, event: PathBuf) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let module = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let text = if event.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the event from standard input")?;
        s
    } else {
        std::fs::read_to_string(&event)
            .with_context(|| format!("cannot read {}", event.display()))?
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&text).context("the event is not valid JSON")?;
    // A tenant testing locally need not name a tenant.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("tenantId").or_insert_with(|| "local".into());
    }
    let input: hookline::EventInput =
        serde_json::from_value(value).context("the event is not a valid envelope")?;
    let result = hookline::transform::test_locally(
        module,
        input,
        hookline::transform::TransformLimits::default(),
    )
    .await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &result)?;
    writeln!(out)?;
    if result.action == hookline::TransformAction::Error {
        std::process::exit(1);
    }
    Ok(())
}

fn init_tracing(log: LogSettings) {
    // `RUST_LOG` goes through the same parser as `log.level` (see `log_filter`).
    let filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .and_then(|v| hookline::config::server::log_filter(&v).ok())
        .unwrap_or(log.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(cli::log_sink::StderrSink::default())
        // The sink never fails; this keeps tracing's own error path (an `eprintln!`, which
        // panics on an unwritable stderr) out of reach all the same.
        .log_internal_errors(false);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let ServerConfig {
        listen: addr,
        db,
        admin_key,
        log,
        limits,
        ui,
        notifications,
        engine: engine_config,
    } = config;
    init_tracing(log);
    // Listen first: while the journal recovers, /healthz answers 200 and /readyz 503.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let gate =
        hookline::api::ops::StartGate::new(hookline::api::ApiConfig::from_server(&limits, &ui));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let gate = gate.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            gate.serve(listener, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("HOOKLINE_TEST_START_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let engine = Engine::builder()
        .store(db.clone())
        .config(engine_config)
        .build()
        .await
        .with_context(|| format!("opening the store {db}"))?;
    let admin_key = admin_key.as_ref().map(|k| k.expose().as_str());
    if let Some(key) = engine.ensure_admin_key(admin_key).await? {
        // The one place a secret is shown: the generated admin key, once, at first start.
        // Written, not `println!`ed: an unwritable stdout must not panic the server.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let shown = writeln!(
            out,
            "hookline: generated admin API key (shown only this once, store it now):\n{key}"
        )
        .and_then(|()| out.flush());
        if let Err(e) = shown {
            tracing::error!(error = %e, "the generated admin API key could not be written to stdout");
        }
    }
    engine
        .configure_notifications(&notifications)
        .await
        .context("setting up the [notifications] receivers")?;
    gate.open(engine.clone());
    tracing::info!(listen = %addr, db = %db, "hookline serving");
    tokio::select! {
        () = shutdown_signal() => {}
        why = engine.failed() => {
            // Staying up would only answer 503 for ever; a supervisor restarts a process that
            // exits, and recovery at start keeps everything accepted.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "hookline: stopping: {why}");
            std::process::exit(70);
        }
    }
    let _ = stop_tx.send(true);
    match server.await {
        Ok(r) => r?,
        Err(e) => tracing::error!(error = %e, "server task failed"),
    }
    tracing::info!("stopping: finishing attempts in flight");
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use clap::CommandFactory;
    use hookline::config::server::flatten;

    use super::*;

    /// The constants feed the value-like defaults; the enum-valued ones (`fsync (default)`) are
    /// words in the help, so this keeps them true: the example file is itself tested against the
    /// defaults.
    #[test]
    fn serve_help_states_the_defaults_the_example_documents() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(ServerConfig::EXAMPLE);
        let example: toml::Table = std::fs::read_to_string(path)
            .expect("read the example")
            .parse()
            .expect("toml");
        let mut defaults = BTreeMap::new();
        flatten("", &example, &mut defaults);
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let flags = [
            ("listen", "listen"),
            ("db", "db"),
            ("durability", "durability"),
            ("log_format", "log.format"),
            ("log_level", "log.level"),
        ];
        for (id, key) in flags {
            let help = serve
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let value = defaults[key].as_str().expect("a text default");
            assert!(
                help.contains(&format!("default {value}"))
                    || help.contains(&format!("{value} (default)")),
                "--{id} help {help:?} does not state the default {value:?}"
            );
        }
    }
}
