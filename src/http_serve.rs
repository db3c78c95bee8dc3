//! Serving the listeners with limits a hostile or broken client cannot get
//! around: a connection cap per listener, sized from the process's file
//! descriptor limit ([`Caps`]), so a flood of one listener never takes the
//! descriptors another needs (the kubelet's probes keep their answers; the
//! gRPC listeners are capped too, [`capped_incoming`]); and, on the HTTP
//! listeners (admin, HTTP API), a deadline to send a request's
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

/// What one HTTP listener allows.
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
    pub fn admin(caps: Caps) -> Self {
        Limits {
            max_connections: caps.admin,
            header_read_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(300),
        }
    }

    /// The HTTP API listener: a proxy's connection pool.
    pub fn api(caps: Caps) -> Self {
        Limits {
            max_connections: caps.api,
            header_read_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(600),
        }
    }
}

/// Waits for a free slot of `slots`, then accepts a connection on
/// `listener` (Nagle off); `None` once `stop` completes. An accept error (out
/// of file descriptors, say) is logged and retried after a pause, not spun on.
pub(crate) async fn accept_within(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    mut stop: impl Future<Output = ()> + Unpin,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let slot = tokio::select! {
        s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
        _ = &mut stop => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, slot));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut stop => return None,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then lets
/// the requests in flight finish (the caller bounds how long). With `tls`,
/// each connection first completes a TLS handshake within the header deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let Some((stream, permit)) = accept_within(&listener, &permits, &mut shutdown).await else {
            break;
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop_rx.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), service, limits, stop).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), service, limits, stop).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One HTTP/1.1 connection: the header deadline, the maximum age, and a
/// graceful end when `stop` turns true.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
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
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`), from
/// `/proc/self/limits`; 1,024 (the usual default) where it cannot be read.
pub fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

/// The connection caps of the three kinds of listener, sized so that all of
/// them full still leave descriptors for Redis, the key files and the admin
/// listener's probes: admin 64, HTTP API a quarter of the limit (at most
/// 1,024), each gRPC listener a quarter (at most 4,096).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// The admin listener.
    pub admin: usize,
    /// The HTTP API listener.
    pub api: usize,
    /// Each gRPC listener.
    pub grpc: usize,
}

impl Caps {
    /// For a process allowed `fd_limit` descriptors.
    pub fn for_fd_limit(fd_limit: usize) -> Self {
        let quarter = (fd_limit / 4).max(16);
        Caps {
            admin: 64,
            api: quarter.min(1024),
            grpc: quarter.min(4096),
        }
    }
}

/// A connection that holds its listener's slot until it closes: a TCP
/// stream ([`Capped`]) or a TLS one ([`crate::tls::TlsConnection`]), with what
/// tonic puts in each request's extensions (`info`).
#[derive(Debug)]
pub struct Held<S, I> {
    stream: S,
    info: I,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<S, I> Held<S, I> {
    /// `stream`, holding `slot`, described by `info`.
    pub fn new(stream: S, info: I, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        Held {
            stream,
            info,
            _slot: slot,
        }
    }
}

/// A plain TCP connection of a capped gRPC listener.
pub type Capped = Held<tokio::net::TcpStream, tonic::transport::server::TcpConnectInfo>;

impl<S, I> tonic::transport::server::Connected for Held<S, I>
where
    I: Clone + Send + Sync + 'static,
{
    type ConnectInfo = I;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl<S: tokio::io::AsyncRead + Unpin, I: Unpin> tokio::io::AsyncRead for Held<S, I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin, I: Unpin> tokio::io::AsyncWrite for Held<S, I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections of a gRPC listener, at most `cap` open at once (the rest
/// wait in the kernel's backlog), with Nagle off.
pub fn capped_incoming(
    listener: TcpListener,
    cap: usize,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Capped>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(cap));
    tokio::spawn(async move {
        loop {
            let closed = std::pin::pin!(tx.closed());
            let Some((stream, slot)) = accept_within(&listener, &slots, closed).await else {
                return;
            };
            let info = tonic::transport::server::Connected::connect_info(&stream);
            if tx.send(Ok(Held::new(stream, info, slot))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
