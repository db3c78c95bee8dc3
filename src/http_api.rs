//! The HTTP API listener (`--http-addr`, loopback by default): forward-auth
//! for proxies that ask an HTTP endpoint whether a request may pass (nginx
//! `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`, Envoy's
//! `http_service`).
//!
//! `/authz/check` and any path below it (Envoy and Traefik append the
//! original path), any method (a proxy may forward the original one):
//! - exactly 200 with `x-jwt-subject`, `x-jwt-id` (and `x-jwt-session-id`)
//!   when the bearer token is VALID (the proxy copies them to the upstream);
//! - 401 with a `WWW-Authenticate` challenge otherwise;
//! - 503 with `Retry-After` when the revocation store cannot answer.
//!
//! The route's audience, if any, comes in the `x-revokd-audience` header,
//! which the proxy sets per route.
//!
//! Also the OAuth endpoints `POST /revoke` (RFC 7009) and `POST /introspect`
//! (RFC 7662), in [`crate::oauth`].

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::authz::{Authorizer, DENIED_BODY, Decision};

/// The header a proxy sets to name the audience a route requires.
pub const AUDIENCE_HEADER: &str = "x-revokd-audience";

/// The HTTP API routes: forward-auth, and the OAuth endpoints for the
/// callers `callers` admits.
pub(crate) fn router(
    authorizer: Authorizer,
    authority: std::sync::Arc<crate::authority::TokenAuthority>,
    callers: crate::callers::CallerPolicy,
) -> Router {
    Router::new()
        .route("/authz/check", any(check))
        .route("/authz/check/", any(check))
        .route("/authz/check/{*rest}", any(check))
        .with_state(authorizer)
        .merge(crate::oauth::routes(authority, callers))
}

async fn check(State(authorizer): State<Authorizer>, headers: HeaderMap) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let decision = authorizer
        .decide(text(header::AUTHORIZATION.as_str()), text(AUDIENCE_HEADER))
        .await;
    let no_store = (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match &decision {
        Decision::Allow { .. } => {
            let mut out = HeaderMap::new();
            for (name, value) in decision.identity_headers() {
                // The Authorizer let only header-safe values through (UTF-8 is sent as is).
                let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) else {
                    return unavailable("an identity header cannot carry this token's claims");
                };
                out.insert(HeaderName::from_static(name), value);
            }
            out.insert(no_store.0, no_store.1);
            (StatusCode::OK, out).into_response()
        }
        Decision::Deny { .. } => (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, HeaderValue::from_static(decision.challenge())),
                no_store,
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
            ],
            DENIED_BODY,
        )
            .into_response(),
        Decision::Unavailable => unavailable("revocation store unavailable"),
    }
}

fn unavailable(why: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        format!("{why}\n"),
    )
        .into_response()
}
