//! The OAuth endpoints of the HTTP API listener: token revocation (RFC 7009,
//! `POST /revoke`) and token introspection (RFC 7662, `POST /introspect`).
//!
//! Both take a form-encoded `token` (and an optional `token_type_hint`, used
//! only as a hint: both kinds are always looked for), authenticate the client
//! with HTTP Basic or `client_id`/`client_secret` form fields (one method,
//! not both), and answer JSON with `Cache-Control: no-store`:
//! - a bad or missing client credential: 401 `invalid_client` with a
//!   `WWW-Authenticate: Basic` challenge; a client without the permission
//!   (`revoke`, `introspect`): 400 `unauthorized_client` (RFC 6749 5.2);
//! - a missing, empty or repeated parameter, or another content type: 400
//!   `invalid_request`;
//! - the revocation store down: 503 `temporarily_unavailable` with
//!   `Retry-After` (the client must assume the token still lives; an
//!   introspection never says active without the store).
//!
//! `/revoke` answers 200 with an empty body for every token it does not
//! revoke too: unknown, badly signed, expired, or issued to another client
//! (RFC 7009 2.2). A refresh token revokes its whole session; an access
//! token its jti. `/introspect` answers `{"active": false}` and nothing else
//! for anything not valid now; a refresh token is active only while it is the
//! current one of its live session.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use crate::authority::{RevokeTarget, TokenAuthority, query};
use crate::callers::{Caller, CallerPolicy, Credentials, Denied, Permission, credentials, form_decode};
use crate::error::Error;
use crate::sessions::SessionTarget;
use crate::tokens::{AuthenticatedToken, TokenUse, Verdict};

/// What the OAuth routes share.
#[derive(Clone)]
pub(crate) struct OAuth {
    authority: Arc<TokenAuthority>,
    callers: CallerPolicy,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth").finish_non_exhaustive()
    }
}

/// `/revoke` and `/introspect`.
pub(crate) fn routes(authority: Arc<TokenAuthority>, callers: CallerPolicy) -> Router {
    Router::new()
        .route("/revoke", post(counted_revoke))
        .route("/introspect", post(counted_introspect))
        .with_state(OAuth { authority, callers })
}

/// Counts the answer of `endpoint` by result.
fn counted(oauth: &OAuth, endpoint: &'static str, answer: Result<Response, OAuthError>) -> Response {
    let result = answer.as_ref().map_or_else(OAuthError::code, |_| "ok");
    oauth.authority.metrics.oauth(endpoint, result);
    answer.into_response()
}

async fn counted_revoke(State(oauth): State<OAuth>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = revoke(&oauth, &headers, &body).await;
    counted(&oauth, "revoke", answer)
}

async fn counted_introspect(State(oauth): State<OAuth>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = introspect(&oauth, &headers, &body).await;
    counted(&oauth, "introspect", answer)
}

/// An OAuth error answer (RFC 6749 5.2), JSON.
#[derive(Debug)]
enum OAuthError {
    /// 400 `invalid_request`.
    InvalidRequest(String),
    /// 401 `invalid_client`, with a `WWW-Authenticate: Basic` challenge.
    InvalidClient(&'static str),
    /// 400 `unauthorized_client`: a known client without the permission.
    UnauthorizedClient(String),
    /// 503 `temporarily_unavailable`, with `Retry-After`.
    Unavailable,
    /// 500 `server_error` (details only in the log).
    Server,
}

impl OAuthError {
    /// Its OAuth error code (the `result` label of `revokd_oauth_requests_total`).
    fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::Unavailable => "temporarily_unavailable",
            OAuthError::Server => "server_error",
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, code, description) = match self {
            OAuthError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d),
            OAuthError::InvalidClient(d) => (StatusCode::UNAUTHORIZED, "invalid_client", d.to_owned()),
            OAuthError::UnauthorizedClient(d) => (StatusCode::BAD_REQUEST, "unauthorized_client", d),
            OAuthError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation store is unavailable; retry".to_owned(),
            ),
            OAuthError::Server => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error".to_owned(),
            ),
        };
        let mut response = (
            status,
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            ],
            json!({"error": code, "error_description": description}).to_string(),
        )
            .into_response();
        match status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"revokd\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::InvalidRequest(description.into())
}

fn json_ok(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        ],
        body,
    )
        .into_response()
}

/// A form body: every parameter once (RFC 6749 3.2: "parameters MUST NOT be
/// included more than once").
fn form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    {
        return Err(invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    let text = std::str::from_utf8(body).map_err(|_| invalid_request("the body is not UTF-8"))?;
    let mut params = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        if params.insert(name.clone(), form_decode(value)).is_some() {
            return Err(invalid_request(format!("parameter {name} given more than once")));
        }
    }
    Ok(params)
}

/// Authenticates the client (Basic or `client_secret_post`) and checks `permission`.
async fn client(
    oauth: &OAuth,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    permission: Permission,
) -> Result<Caller, OAuthError> {
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let posted = params.get("client_id").map(|id| (id, params.get("client_secret")));
    let presented = match (basic, posted) {
        (Some(_), Some(_)) => return Err(invalid_request("use one client authentication method, not two")),
        (Some(value), None) => credentials(Some(value)),
        (None, Some((id, Some(secret)))) => Ok(Credentials::Secret {
            id: id.clone(),
            secret: secret.clone(),
        }),
        // A client_id alone: a public client, which revokd does not have.
        (None, Some((_, None))) => Err(Denied::Unauthenticated("client_secret missing")),
        (None, None) => Ok(Credentials::None),
    };
    let result = match presented {
        Ok(c) => oauth.callers.authorize(c, Some(permission)).await,
        Err(d) => Err(d),
    };
    result.map_err(|denied| {
        tracing::warn!(target: crate::authority::AUDIT_TARGET, permission = permission.as_str(), reason = %denied, "oauth call refused");
        match denied {
            Denied::Unauthenticated(why) => OAuthError::InvalidClient(why),
            Denied::Permission(why) => OAuthError::UnauthorizedClient(why),
        }
    })
}

/// The `token` parameter: present and not empty.
fn token_param(params: &HashMap<String, String>) -> Result<&str, OAuthError> {
    match params.get("token").map(String::as_str) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(invalid_request("the token parameter is required")),
    }
}

/// A store failure as an answer; anything else (about the token itself): `None`.
fn store_error(e: Error) -> Option<OAuthError> {
    match e {
        Error::Store(ref s) if s.is_unavailable() => Some(OAuthError::Unavailable),
        Error::Store(_) | Error::Internal(_) => {
            tracing::error!(error = %e, "oauth endpoint failed");
            Some(OAuthError::Server)
        }
        _ => None,
    }
}

/// Whether `token` was issued to a client other than `caller`.
fn foreign(caller: &Caller, token: &AuthenticatedToken) -> bool {
    match (caller.id(), token.claims.client_id.as_deref()) {
        (Some(me), Some(issued_to)) => me != issued_to,
        _ => false,
    }
}

async fn revoke(oauth: &OAuth, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let params = form(headers, body)?;
    let caller = client(oauth, headers, &params, Permission::Revoke).await?;
    let token = token_param(&params)?;
    let authority = &oauth.authority;
    // Not ours, or not a token: nothing to revoke, and the client need not know.
    let Ok(authenticated) = authority.authenticate_for_revocation(token) else {
        return Ok(json_ok(String::new()));
    };
    if foreign(&caller, &authenticated) {
        tracing::info!(
            client_id = caller.id().unwrap_or(""),
            "revocation of another client's token ignored"
        );
        return Ok(json_ok(String::new()));
    }
    let reason = "oauth revoke";
    let result = match (authenticated.claims.token_use, &authenticated.claims.session_id) {
        (TokenUse::Refresh, Some(sid)) => authority
            .revoke_session(SessionTarget::SessionId(sid.clone()), reason)
            .await
            .map(drop),
        _ => authority
            .revoke(RevokeTarget::Token(token.to_owned()), reason)
            .await
            .map(drop),
    };
    match result.map_err(store_error) {
        Ok(()) | Err(None) => Ok(json_ok(String::new())),
        Err(Some(e)) => Err(e),
    }
}

/// `{"active": false}`, the whole answer for anything not valid now.
fn inactive() -> Response {
    json_ok(json!({"active": false}).to_string())
}

async fn introspect(oauth: &OAuth, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let params = form(headers, body)?;
    client(oauth, headers, &params, Permission::Introspect).await?;
    let token = token_param(&params)?;
    let authority = &oauth.authority;
    // One verification, as VerifyToken's (cache, mirror); a refresh token is
    // WRONG_TOKEN_TYPE there and gets its own rule.
    let active = match authority.verify(token, None).await {
        Ok(outcome) if outcome.verdict == Verdict::Valid => Ok(outcome.token),
        Ok(outcome) if outcome.verdict == Verdict::WrongTokenType => current_refresh_token(authority, token).await,
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    match active.map_err(store_error) {
        Ok(Some(t)) => Ok(json_ok(Value::Object(description(&t)).to_string())),
        Ok(None) | Err(None) => Ok(inactive()),
        Err(Some(e)) => Err(e),
    }
}

/// A refresh token is active while valid, not revoked, and the current one
/// of its live session: then the token, else `None`.
async fn current_refresh_token(
    authority: &TokenAuthority,
    token: &str,
) -> Result<Option<Arc<AuthenticatedToken>>, Error> {
    let now = authority.clock.now().seconds();
    let Ok(t) = authority.authenticate(token, now) else {
        return Ok(None);
    };
    if authority.verifier.check(&t, TokenUse::Refresh, None, now).is_err() {
        return Ok(None);
    }
    let Some(sid) = &t.claims.session_id else {
        return Ok(None);
    };
    if authority.store.is_revoked(&query(&t, now)).await? {
        return Ok(None);
    }
    let current = authority.store.current_refresh(sid).await?;
    Ok((current.as_deref() == Some(t.claims.jti.as_str())).then_some(t))
}

/// RFC 7662 2.2: what an active token is (times as integers).
fn description(t: &AuthenticatedToken) -> Map<String, Value> {
    let c = &t.claims;
    let mut out = Map::new();
    out.insert("active".into(), true.into());
    out.insert("sub".into(), c.subject.clone().into());
    out.insert("jti".into(), c.jti.clone().into());
    if let Some(iat) = c.issued_at {
        out.insert("iat".into(), iat.into());
    }
    if let Some(nbf) = c.not_before {
        out.insert("nbf".into(), nbf.into());
    }
    out.insert("exp".into(), c.expires_at.into());
    out.insert("iss".into(), c.issuer.clone().into());
    match c.audience.len() {
        0 => {}
        1 => {
            out.insert("aud".into(), c.audience[0].clone().into());
        }
        _ => {
            out.insert("aud".into(), c.audience.clone().into());
        }
    }
    let token_type = match c.token_use {
        TokenUse::Access => "access_token",
        TokenUse::Refresh => "refresh_token",
    };
    out.insert("token_type".into(), token_type.into());
    if let Some(sid) = &c.session_id {
        out.insert("sid".into(), sid.clone().into());
    }
    if let Some(client_id) = &c.client_id {
        out.insert("client_id".into(), client_id.clone().into());
    }
    out
}
