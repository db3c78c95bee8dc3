//! The shutdown signal: SIGTERM (the Kubernetes contract) or SIGINT (Ctrl-C).

use std::future::Future;

/// Listens for SIGTERM and SIGINT from the moment it is called (so a signal
/// sent as soon as revokd says it is serving is never missed, nor kills it
/// outright), and completes when one arrives. Call it inside the runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn wait(listener: std::io::Result<Signal>, name: &'static str) {
            match listener {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, signal = name, "cannot listen for the signal");
                    std::future::pending::<()>().await;
                }
            }
        }
        // Registered now, not on first poll.
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            tokio::select! {
                _ = wait(int, "SIGINT") => tracing::info!("SIGINT received, shutting down"),
                _ = wait(term, "SIGTERM") => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received, shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    }
}
