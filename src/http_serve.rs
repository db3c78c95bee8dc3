//! Serving an HTTP listener (admin, HTTP API) with limits a hostile or broken
//! client cannot get around: a connection cap per listener (so a flood of one
//! listener never takes the file descriptors or tasks another needs: the
//! kubelet's probes keep their answers), a deadline to send a request's
//! headers (a slow-header client is cut), and a maximum connection age (an
//! idle keep-alive connection does not hold its slot for ever). HTTP/1.1
//! only, as every caller of these listeners speaks it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time to send a request's headers (and, on a kept-alive connection,
    /// the next request's).
    pub header_read_timeout: Duration,
    /// After this, a connection is closed once its request in flight is answered.
    pub max_connection_age: Duration,
}

impl Limits {
    /// The admin listener: probes and scrapes, a handful of clients.
    pub const ADMIN: Limits = Limits {
        max_connections: 128,
        header_read_timeout: Duration::from_secs(5),
        max_connection_age: Duration::from_secs(300),
    };
    /// The HTTP API listener: a proxy's connection pool.
    pub const API: Limits = Limits {
        max_connections: 1024,
        header_read_timeout: Duration::from_secs(5),
        max_connection_age: Duration::from_secs(600),
    };
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then lets
/// the requests in flight finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = tokio::time::sleep(limits.max_connection_age) => {
                    // Finish what is in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.header_read_timeout, connection).await;
                }
                _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}
