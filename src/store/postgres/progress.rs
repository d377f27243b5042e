//! The progress connections: a few connections lent one statement at a time to the delivery
//! path's writes (outcomes, in-flight marks, tenant slot reservations), with
//! `synchronous_commit = off`.
//!
//! Not an sqlx pool because of what that pool does around each use: it tests a connection with
//! a round trip before lending it and again when it comes back, so one progress statement cost
//! three round trips and two wake-ups of a PostgreSQL backend. Here a connection that answered
//! its last statement goes straight back; one that failed, or whose statement was abandoned
//! half-way (its future dropped), is closed instead; and only a connection that sat idle longer
//! than [`IDLE_CHECK`] (PostgreSQL may have restarted meanwhile) is tested before it is lent.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// How long a connection may sit unused before it is tested with a round trip when lent.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// At most `size` connections, opened when first needed.
pub(super) struct Progress {
    options: PgConnectOptions,
    /// Connections not lent, with when each came back.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
    wait: Duration,
    closed: AtomicBool,
}

/// A lent connection; back to [`Progress`] on drop only if [`Lent::answered`] was called.
pub(super) struct Lent<'a> {
    conn: Option<PgConnection>,
    owner: &'a Progress,
    answered: bool,
    _permit: SemaphorePermit<'a>,
}

impl Progress {
    /// Up to `size` connections with `options`; a caller waits at most `wait` for one.
    pub(super) fn new(options: PgConnectOptions, size: u32, wait: Duration) -> Progress {
        Progress {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1) as usize),
            wait,
            closed: AtomicBool::new(false),
        }
    }

    /// A connection for one statement: an idle one, or a new one.
    pub(super) async fn lend(&self) -> Result<Lent<'_>, sqlx::Error> {
        let permit = match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        let mut conn = None;
        while let Some((mut c, since)) = self.take_idle() {
            if since.elapsed() < IDLE_CHECK || c.ping().await.is_ok() {
                conn = Some(c);
                break;
            }
            // Dead (PostgreSQL restarted, or the connection was cut): drop it, try the next.
        }
        let conn = match conn {
            Some(c) => c,
            None => self.options.connect().await?,
        };
        Ok(Lent {
            conn: Some(conn),
            owner: self,
            answered: false,
            _permit: permit,
        })
    }

    fn take_idle(&self) -> Option<(PgConnection, Instant)> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Refuses further lending and closes the idle connections (lent ones close when they
    /// come back).
    pub(super) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for (c, _) in idle {
            let _ = c.close().await;
        }
    }
}

impl Lent<'_> {
    /// The connection, for one statement.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        // Only `drop` takes it out.
        self.conn.as_mut().expect("a lent connection until dropped")
    }

    /// The statement was answered: the connection is in a clean state and may be lent again.
    pub(super) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.answered && !self.owner.closed.load(Ordering::SeqCst) {
            // Most recently used last: `lend` pops it first, while it is known to be alive.
            self.owner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((conn, Instant::now()));
        }
        // Otherwise dropped: its socket closes; PostgreSQL rolls back whatever it left open.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backend_pid(lent: &mut Lent<'_>) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(lent.conn())
            .await
            .expect("pid")
    }

    #[tokio::test]
    async fn a_connection_goes_back_only_when_its_statement_was_answered_and_a_dead_one_is_replaced()
     {
        let Some(url) = crate::store::suite::Backend::postgres("progress_connections")
            .await
            .and_then(|b| match b {
                crate::store::suite::Backend::Postgres { url } => Some(url),
                crate::store::suite::Backend::Sqlite { .. } => None,
            })
        else {
            return;
        };
        let options: PgConnectOptions = url.parse().expect("url");
        let progress = Progress::new(options.clone(), 2, Duration::from_secs(2));

        // Answered: the same backend serves the next statement (no new connection, no test).
        let mut a = progress.lend().await.expect("lend");
        let first = backend_pid(&mut a).await;
        a.answered();
        let mut b = progress.lend().await.expect("lend");
        assert_eq!(backend_pid(&mut b).await, first);

        // Not marked answered (a failed or abandoned statement): closed, not lent again.
        drop(b);
        let mut c = progress.lend().await.expect("lend");
        let second = backend_pid(&mut c).await;
        assert_ne!(second, first);
        c.answered();

        // At most `size` at once; the third waits, then times out with the pool's error.
        let short = Progress::new(options.clone(), 1, Duration::from_millis(100));
        let held = short.lend().await.expect("lend");
        assert!(matches!(short.lend().await, Err(sqlx::Error::PoolTimedOut)));
        drop(held);

        // Killed by the server while idle: found dead when lent after the idle check's delay,
        // and replaced by a live one.
        let mut admin = sqlx::PgConnection::connect_with(&options)
            .await
            .expect("admin");
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(second)
            .fetch_one(&mut admin)
            .await
            .expect("terminate");
        assert!(killed);
        tokio::time::sleep(IDLE_CHECK + Duration::from_millis(100)).await;
        let mut d = progress.lend().await.expect("lend after the kill");
        let third = backend_pid(&mut d).await;
        assert_ne!(third, second);
        d.answered();

        progress.close().await;
        assert!(matches!(
            progress.lend().await,
            Err(sqlx::Error::PoolClosed)
        ));
    }
}
