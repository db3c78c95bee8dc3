//! Envoy's external authorization API, v3 (`envoy.service.auth.v3.Authorization/Check`),
//! over the [`Authorizer`]: served on the gRPC listener, and alone (with
//! health) on `--authz-addr`.
//!
//! - Allowed: an `OkHttpResponse` that sets `x-jwt-subject`, `x-jwt-id` and
//!   `x-jwt-session-id` (overwriting a client's) and removes every other
//!   `x-jwt-*` header the client sent; the verdict and ids also go to the
//!   dynamic metadata (`envoy.filters.http.ext_authz` namespace) for logs and
//!   later filters.
//! - Denied: a `DeniedHttpResponse`, 401, `WWW-Authenticate`,
//!   `Cache-Control: no-store`, a generic body.
//! - Store unavailable: the RPC fails with UNAVAILABLE, never a denial, so
//!   Envoy's `failure_mode_allow` / `status_on_error` decide as configured (a
//!   non-OK CheckResponse would be a plain 403).

use prost_types::value::Kind;
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, DENIED_BODY, Decision, is_identity_header};
use crate::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction};
use crate::proto::envoy::service::auth::v3::authorization_server::Authorization;
use crate::proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use crate::proto::envoy::r#type::v3::{HttpStatus, StatusCode as HttpStatusCode};
use crate::proto::google::rpc::Status as RpcStatus;

pub use crate::proto::envoy::service::auth::v3::authorization_server::AuthorizationServer;

/// The ext_authz `Authorization` service.
#[derive(Debug, Clone)]
pub struct ExtAuthz {
    authorizer: Authorizer,
}

impl ExtAuthz {
    /// Answers with `authorizer`'s decisions.
    pub fn new(authorizer: Authorizer) -> Self {
        ExtAuthz { authorizer }
    }
}

/// gRPC status codes in `google.rpc.Status.code`.
const RPC_OK: i32 = 0;
const RPC_UNAUTHENTICATED: i32 = 16;

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn string_value(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// The answer for `decision`; `sent` are the request's header names.
fn response(decision: &Decision, sent: &[&str]) -> CheckResponse {
    match decision {
        Decision::Allow { .. } => {
            let identity = decision.identity_headers();
            let headers = identity
                .iter()
                .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                .collect();
            // A client's x-jwt-* headers that revokd does not set itself.
            let headers_to_remove = sent
                .iter()
                .filter(|h| is_identity_header(h) && !identity.iter().any(|(k, _)| k.eq_ignore_ascii_case(h)))
                .map(|h| h.to_ascii_lowercase())
                .collect();
            let mut fields: std::collections::BTreeMap<String, prost_types::Value> = identity
                .iter()
                .map(|(k, v)| (k.trim_start_matches("x-jwt-").replace('-', "_"), string_value(v)))
                .collect();
            fields.insert("verdict".into(), string_value("valid"));
            CheckResponse {
                status: Some(RpcStatus {
                    code: RPC_OK,
                    ..Default::default()
                }),
                dynamic_metadata: Some(prost_types::Struct { fields }),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove,
                    ..Default::default()
                })),
            }
        }
        _ => {
            let verdict = match decision {
                Decision::Deny { verdict: Some(v) } => v.as_str(),
                _ => "missing",
            };
            CheckResponse {
                status: Some(RpcStatus {
                    code: RPC_UNAUTHENTICATED,
                    ..Default::default()
                }),
                dynamic_metadata: Some(prost_types::Struct {
                    fields: [("verdict".to_owned(), string_value(verdict))].into_iter().collect(),
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: HttpStatusCode::Unauthorized as i32,
                    }),
                    headers: vec![
                        header(
                            "www-authenticate",
                            decision.challenge(),
                            HeaderAppendAction::OverwriteIfExistsOrAdd,
                        ),
                        header("cache-control", "no-store", HeaderAppendAction::OverwriteIfExistsOrAdd),
                        header(
                            "content-type",
                            "text/plain; charset=utf-8",
                            HeaderAppendAction::OverwriteIfExistsOrAdd,
                        ),
                    ],
                    body: DENIED_BODY.to_owned(),
                })),
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let attributes = request.attributes.unwrap_or_default();
        let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
        // Envoy sends lower-case names, in `headers` or (with
        // encode_raw_headers) in `header_map`.
        let mut names: Vec<&str> = http.headers.keys().map(String::as_str).collect();
        let mut authorization = http.headers.get("authorization").map(String::as_str);
        if let Some(map) = &http.header_map {
            for h in &map.headers {
                names.push(h.key.as_str());
                if authorization.is_none() && h.key.eq_ignore_ascii_case("authorization") {
                    authorization = Some(if h.value.is_empty() {
                        std::str::from_utf8(&h.raw_value).unwrap_or("")
                    } else {
                        h.value.as_str()
                    });
                }
            }
        }
        let audience = attributes.context_extensions.get("audience").map(String::as_str);
        let decision = self.authorizer.decide(authorization, audience).await;
        if decision == Decision::Unavailable {
            return Err(Status::unavailable("revocation store unavailable"));
        }
        Ok(Response::new(response(&decision, &names)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Verdict;

    fn header_pairs(h: &[HeaderValueOption]) -> Vec<(String, String)> {
        h.iter()
            .map(|o| {
                let v = o.header.as_ref().unwrap();
                (v.key.clone(), v.value.clone())
            })
            .collect()
    }

    #[test]
    fn allowed_sets_identity_and_strips_forged_headers() {
        let d = Decision::Allow {
            subject: "alice".into(),
            jti: "j1".into(),
            session_id: None,
        };
        let r = response(&d, &["authorization", "x-jwt-subject", "X-Jwt-Role", "x-other"]);
        let Some(check_response::HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("not ok: {r:?}")
        };
        assert_eq!(
            header_pairs(&ok.headers),
            vec![
                ("x-jwt-subject".into(), "alice".into()),
                ("x-jwt-id".into(), "j1".into())
            ]
        );
        assert!(
            ok.headers
                .iter()
                .all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
        );
        assert_eq!(ok.headers_to_remove, vec!["x-jwt-role".to_string()]);
        assert_eq!(r.status.unwrap().code, RPC_OK);
    }

    #[test]
    fn denied_is_401_with_a_challenge() {
        for (d, challenge) in [
            (Decision::Deny { verdict: None }, "Bearer"),
            (
                Decision::Deny {
                    verdict: Some(Verdict::Revoked),
                },
                r#"Bearer error="invalid_token""#,
            ),
        ] {
            let r = response(&d, &[]);
            let Some(check_response::HttpResponse::DeniedResponse(denied)) = r.http_response else {
                panic!("not denied: {r:?}")
            };
            assert_eq!(denied.status.unwrap().code, HttpStatusCode::Unauthorized as i32);
            let headers = header_pairs(&denied.headers);
            assert!(headers.contains(&("www-authenticate".into(), challenge.into())));
            assert!(headers.contains(&("cache-control".into(), "no-store".into())));
            assert_eq!(denied.body, DENIED_BODY);
        }
    }
}
