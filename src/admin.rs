//! The admin HTTP listener: `/healthz` (the process is alive; never depends on
//! Redis, so kubelet does not restart revokd for a Redis outage) and `/readyz`
//! (the store answers and keys are loaded).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::revocation::RevocationStore;

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// The revocation store, pinged by /readyz.
    pub store: Arc<dyn RevocationStore>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    // Keys are loaded before the listeners open, so only the store can be missing.
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}
