//! The admin HTTP listener: `/healthz` (the process is alive; never depends on
//! Redis, so kubelet does not restart revokd for a Redis outage), `/readyz`
//! (verifies can be answered: the mirror is fresh, or the store answers, on
//! a Redis Cluster every primary), `/metrics` (Prometheus) and
//! `/.well-known/jwks.json` (the public keys).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::keys::KeyRing;
use crate::metrics::Metrics;
use crate::revocation::RevocationStore;

/// What the admin endpoints look at.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The revocation store, pinged by /readyz.
    pub(crate) store: Arc<dyn RevocationStore>,
    /// The keys, published by /.well-known/jwks.json.
    pub(crate) keys: Arc<arc_swap::ArcSwap<KeyRing>>,
    /// Metric handles (store up/down from the readiness ping).
    pub(crate) metrics: Metrics,
    /// Renders /metrics.
    pub(crate) prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// The admin routes.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/.well-known/jwks.json", get(jwks))
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

/// How long clients may cache the JWKS: short, so a new key is picked up soon
/// after rotation (publish a new key before it starts signing).
pub(crate) const JWKS_MAX_AGE_SECONDS: u32 = 300;

async fn jwks(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    let body = state.keys.load().jwks_json().to_owned();
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json".to_string()),
            (
                axum::http::header::CACHE_CONTROL,
                format!("public, max-age={JWKS_MAX_AGE_SECONDS}"),
            ),
        ],
        body,
    )
}
