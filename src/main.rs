//! The `hookline` binary: a thin command-line layer over the library.
//!
//! `hookline serve` runs the engine with its HTTP API. Settings come from flags, which override
//! `HOOKLINE_*` environment variables, which override the defaults (`./hookline.db`,
//! `127.0.0.1:8080`). SIGTERM or SIGINT stops intake, lets attempts in flight finish (bounded by
//! the shutdown grace) and exits 0. The other subcommands are HTTP clients of a running server
//! (see [`cli`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookline::{Engine, config::parse_networks};
use tracing_subscriber::EnvFilter;

mod cli;

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
    Serve(ServeArgs),
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

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address and port the HTTP API listens on.
    #[arg(long, env = "HOOKLINE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The SQLite journal file (created if missing).
    #[arg(long, env = "HOOKLINE_DB", default_value = "hookline.db")]
    db: PathBuf,
    /// The admin API key. If unset on first start, one is generated, printed once, and only its
    /// hash is stored.
    #[arg(long, env = "HOOKLINE_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// The master key sealing subscription secrets in the journal (`base64:…` or 64 hex
    /// characters). If unset, a key file `<db>.key` beside the journal is created and used.
    #[arg(long, env = "HOOKLINE_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Outbound HTTP(S) proxy for every delivery, e.g. http://10.0.0.5:3128.
    #[arg(long, env = "HOOKLINE_PROXY")]
    proxy: Option<String>,
    /// Comma-separated CIDRs exempt from the private-address block (e.g. 127.0.0.0/8).
    #[arg(long, env = "HOOKLINE_ALLOW_NETWORKS", default_value = "")]
    allow_networks: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => serve(args).await,
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let networks = parse_networks(&args.allow_networks).context("HOOKLINE_ALLOW_NETWORKS")?;
    let mut builder = Engine::builder().path(&args.db).allow_networks(networks);
    if let Some(key) = args.secret_key {
        builder = builder.secret_key(key);
    }
    if let Some(proxy) = args.proxy {
        builder = builder.proxy(proxy);
    }
    let engine = builder
        .build()
        .await
        .with_context(|| format!("opening journal {}", args.db.display()))?;
    if let Some(key) = engine.ensure_admin_key(args.admin_key.as_deref()).await? {
        // The one place a secret is shown: the generated admin key, once, at first start.
        #[allow(clippy::print_stdout)]
        {
            println!("hookline: generated admin API key (shown only this once, store it now):");
            println!("{key}");
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, db = %args.db.display(), "hookline serving");
    hookline::api::serve(listener, engine.clone(), shutdown_signal()).await?;
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
