//! The accept loop: hyper's HTTP/1.1 server with a header read timeout, a connection limit and
//! graceful shutdown. `axum::serve` offers none of the first two.
//!
//! Each connection also runs the work its requests leave for after their answer
//! ([`AfterAnswer`]): the `guard` answers a refused body at once and hands the reading of its
//! rest to the connection, so that the answer goes out while the client is still sending and
//! the connection closes only once the body is read (or the bound is reached). Closing with a
//! body unread makes the kernel reset the connection, and a client that writes its whole body
//! before reading would see a broken pipe instead of the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tower_service::Service;

use super::ApiConfig;

type Req = hyper::Request<Incoming>;

/// Work left to a connection, run after the request's answer is handed to hyper.
pub(super) type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The door to a connection's after-answer work, in every request's extensions when it is
/// served by [`run`] (absent under another server, e.g. a router called directly).
#[derive(Debug, Clone)]
pub(super) struct AfterAnswer(mpsc::Sender<Work>);

impl AfterAnswer {
    /// Hands `work` to the connection, or gives it back when the connection has one already
    /// (a connection serves one request at a time, and a refused body closes it).
    pub(super) fn hand_over(&self, work: Work) -> Result<(), Work> {
        self.0.try_send(work).map_err(|e| e.into_inner())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, closes idle
/// connections and waits for requests in progress.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    cfg: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin or exit.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (after_tx, after_rx) = mpsc::channel::<Work>(1);
        let service = {
            let app = app.clone();
            hyper::service::service_fn(move |mut req: Req| {
                req.extensions_mut().insert(AfterAnswer(after_tx.clone()));
                let mut app = app.clone();
                async move {
                    std::future::poll_fn(|cx| Service::<Req>::poll_ready(&mut app, cx)).await?;
                    app.call(req).await
                }
            })
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Both end together: hyper finishes the connection once a drained body is read
            // (or the drain gave up and dropped it), and the work queue ends when hyper drops
            // the service, the last holder of its sender.
            let (result, ()) = tokio::join!(conn, after_answers(after_rx));
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Runs a connection's after-answer work, one piece at a time, until no request can send more.
async fn after_answers(mut work: mpsc::Receiver<Work>) {
    while let Some(w) = work.recv().await {
        w.await;
    }
}

/// Answers a connection over the limit with 503 and closes it, so that the client learns why
/// instead of hanging in the backlog.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"the server's connection limit is reached; retry later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
