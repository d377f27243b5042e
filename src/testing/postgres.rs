//! A throwaway PostgreSQL server for tests: one per test binary, a fresh database per test.
//!
//! The first test that asks ([`server`]) runs `initdb` into a temporary directory and starts
//! the server with `pg_ctl` on a free port of 127.0.0.1 (its socket in the same directory), as
//! the `postgres` user through `runuser` when the tests run as root (`initdb` refuses root).
//! Each test then takes its own database ([`PgServer::fresh_database`]), so tests run in
//! parallel without seeing each other. The server runs with `fsync=off` (a test database
//! outlives no power failure); the durability of a commit is PostgreSQL's, not under test here.
//! Benchmarks, whose figures must be durable ones, start their own server with
//! [`durable_server`] instead: `fsync=on`, `synchronous_commit=on`, PostgreSQL's defaults.
//!
//! A watcher process started beside the server stops it (`pg_ctl stop -m immediate`) and
//! removes the directory once the test process is gone, however it ended (statics are never
//! dropped, and a panicking or killed test binary runs no destructor).
//!
//! When no PostgreSQL server binaries are installed (`/usr/lib/postgresql/*/bin`, or the
//! directory in `HOOKLINE_PG_BIN`), [`server`] prints a loud SKIPPED line and returns `None`;
//! with `HOOKLINE_REQUIRE_EXTERNAL=1` (set by `.ci/run`) it panics instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running throwaway server.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    root: bool,
    settings: Settings,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The test binary's server, started on first use; `None` (after a SKIPPED line naming
/// `test`) when PostgreSQL is not installed and `HOOKLINE_REQUIRE_EXTERNAL` is not `1`.
///
/// # Panics
/// When the server cannot be started although PostgreSQL is installed, or when it is missing
/// and `HOOKLINE_REQUIRE_EXTERNAL=1`.
pub fn server(test: &str) -> Option<&'static PgServer> {
    match SERVER.get_or_init(|| start(Settings::Throwaway)) {
        Ok(s) => Some(s),
        Err(e) => skip_or_panic(test, e.clone()),
    }
}

/// A server of its own for `bench`, committing durably (`fsync=on`, `synchronous_commit=on`),
/// so that a commit it acknowledges is on disk, as in production; stopped when this process
/// exits. `None` (after a SKIPPED line) when PostgreSQL is not installed and
/// `HOOKLINE_REQUIRE_EXTERNAL` is not `1`.
///
/// # Panics
/// As [`server`].
pub fn durable_server(bench: &str) -> Option<PgServer> {
    match start(Settings::Durable) {
        Ok(s) => Some(s),
        Err(e) => skip_or_panic(bench, e),
    }
}

/// How a server commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settings {
    /// `fsync=off`: tests, whose data outlives nothing.
    Throwaway,
    /// `fsync=on`, `synchronous_commit=on`: benchmarks of durable commits.
    Durable,
}

fn skip_or_panic<T>(test: &str, error: String) -> Option<T> {
    match error {
        missing if missing.starts_with(MISSING) => {
            let required = std::env::var("HOOKLINE_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: {missing}, and HOOKLINE_REQUIRE_EXTERNAL=1"
            );
            eprintln!(
                "\n==== SKIPPED {test} on PostgreSQL: {missing}. ====\n\
                 ==== Install Debian's `postgresql` package (server binaries) to run it. ====\n"
            );
            None
        }
        e => panic!("{test}: the PostgreSQL server did not start: {e}"),
    }
}

const MISSING: &str = "no PostgreSQL server binaries";

/// A server of the caller's own, not shared with the binary's other tests: for a test that
/// stops and starts PostgreSQL under load ([`PgServer::stop`], [`PgServer::start_again`]).
/// `None` (after a SKIPPED line) as [`server`].
///
/// # Panics
/// As [`server`].
pub fn dedicated(test: &str) -> Option<PgServer> {
    match start(Settings::Throwaway) {
        Ok(s) => Some(s),
        Err(missing) if missing.starts_with(MISSING) => {
            // Says SKIPPED, or panics under HOOKLINE_REQUIRE_EXTERNAL=1.
            let _ = server(test);
            None
        }
        Err(e) => panic!("{test}: a dedicated test PostgreSQL server did not start: {e}"),
    }
}

impl PgServer {
    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL to the server's `postgres` database (for administration).
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// A URL to database `db` as the `postgres` superuser (trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database of its own for one test; returns its URL.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        self.url(&name)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected, nothing committed is
    /// lost). Meant for a [`dedicated`] server.
    ///
    /// # Panics
    /// If `pg_ctl` fails.
    pub fn stop(&self) {
        let mut pg_ctl = as_owner(self.root, &self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        if let Err(e) = run(pg_ctl, "pg_ctl stop") {
            panic!("{e}");
        }
    }

    /// Starts a [`stop`](PgServer::stop)ped server again on the same port and data.
    ///
    /// # Panics
    /// If `pg_ctl` fails.
    pub fn start_again(&self) {
        if let Err(e) = run(
            pg_ctl_start(self.root, &self.bin, &self.dir, self.port, self.settings),
            "pg_ctl start",
        ) {
            panic!("{e}");
        }
    }
}

/// `pg_ctl start` of the server in `dir` on `port`, waiting until it accepts connections.
fn pg_ctl_start(root: bool, bin: &Path, dir: &Path, port: u16, settings: Settings) -> Command {
    let commits = match settings {
        Settings::Throwaway => "-c fsync=off -c shared_buffers=64MB",
        // Spelled out, though they are the defaults: the figures depend on them. The buffers
        // hold a benchmark's whole database, so reads never wait for the disk.
        Settings::Durable => {
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c shared_buffers=256MB"
        }
    };
    let mut pg_ctl = as_owner(root, &bin.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("server.log"))
        .arg("-o")
        .arg(format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} {commits} -c max_connections=400",
            dir.display()
        ))
        .args(["-w", "-t", "60", "start"]);
    pg_ctl
}

/// The newest installed PostgreSQL's `bin` directory.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HOOKLINE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command running `program` as the server's owner.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start(settings: Settings) -> Result<PgServer, String> {
    let Some(bin) = bin_dir() else {
        return Err(format!(
            "{MISSING} (no initdb under /usr/lib/postgresql/*/bin or $HOOKLINE_PG_BIN)"
        ));
    };
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("hookline-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    if root {
        let mut chown = Command::new("chown");
        chown.arg("postgres:").arg(&dir);
        run(chown, "chown the data directory to postgres")?;
    }
    let data = dir.join("data");
    let mut initdb = as_owner(root, &bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
    run(initdb, "initdb")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    run(
        pg_ctl_start(root, &bin, &dir, port, settings),
        "pg_ctl start",
    )?;
    watch(root, &bin, &dir);
    Ok(PgServer {
        port,
        dir,
        bin,
        root,
        settings,
    })
}

/// Stops the server and removes its directory once this process has exited.
fn watch(root: bool, bin: &Path, dir: &Path) {
    let stop = format!(
        "{}{} -D {} stop -m immediate",
        if root { "runuser -u postgres -- " } else { "" },
        bin.join("pg_ctl").display(),
        dir.join("data").display()
    );
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "the test PostgreSQL server at {} will outlive the tests: {e}",
            dir.display()
        );
    }
}
