//! The admin HTTP listener: `/healthz` (the process is alive; never depends on
//! Redis, so kubelet does not restart revokd for a Redis outage), `/readyz`
//! (the store answers and keys are loaded) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::revocation::RevocationStore;

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// The revocation store, pinged by /readyz.
    pub store: Arc<dyn RevocationStore>,
    /// Metric handles (store up/down from the readiness ping).
    pub metrics: Metrics,
    /// Renders /metrics.
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    // Keys are loaded before the listeners open, so only the store can be missing.
    match state.store.ping().await {
        Ok(()) => {
            state.metrics.store_ok();
            (StatusCode::OK, "ready\n".into())
        }
        Err(e) => {
            state.metrics.store_error("ping");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"))
        }
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
}
