//! Authorization at the proxy: one decision from a request's headers, for
//! Envoy's external authorization ([`crate::ext_authz`], gRPC) and for
//! forward-auth ([`crate::http_api`], HTTP: nginx `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth`, Envoy `http_service`).
//!
//! The token comes from the `authorization` header (`Bearer`, any case); the
//! verification is VerifyToken's (cache, mirror, metrics). VALID lets the
//! request through with the identity in `x-jwt-subject`, `x-jwt-id` and
//! `x-jwt-session-id`, set by revokd (every other `x-jwt-*` header a client
//! sent is removed, so no forged identity reaches the app). Anything else is
//! 401 with a `WWW-Authenticate` challenge. A store that cannot answer is
//! neither: the caller's failure mode decides (Envoy: a gRPC error; HTTP: 503).

use std::sync::Arc;
use std::time::Instant;

use crate::authority::TokenAuthority;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::tokens::Verdict;

/// The identity headers revokd sets on an allowed request.
pub const SUBJECT_HEADER: &str = "x-jwt-subject";
/// The token id.
pub const JTI_HEADER: &str = "x-jwt-id";
/// The session id (session tokens only).
pub const SESSION_HEADER: &str = "x-jwt-session-id";
/// Headers with this prefix are revokd's: a client's are removed.
pub const IDENTITY_PREFIX: &str = "x-jwt-";

/// The challenge for a token that is not valid (RFC 6750 section 3).
pub const CHALLENGE_INVALID: &str = r#"Bearer error="invalid_token""#;
/// The challenge when no token was sent (RFC 6750 section 3.1: no error code).
pub const CHALLENGE_NONE: &str = "Bearer";
/// The body of a denial: the same for every reason.
pub const DENIED_BODY: &str = "unauthorized\n";

/// What the proxy should do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through, with these identity headers.
    Allow {
        /// `sub`.
        subject: String,
        /// `jti`.
        jti: String,
        /// `sid`, for session tokens.
        session_id: Option<String>,
    },
    /// 401 with a challenge.
    Deny {
        /// The verdict (`None`: no token was sent).
        verdict: Option<Verdict>,
    },
    /// The revocation store cannot answer: neither allow nor deny.
    Unavailable,
}

impl Decision {
    /// The `WWW-Authenticate` value of a denial.
    pub fn challenge(&self) -> &'static str {
        match self {
            Decision::Deny { verdict: None } => CHALLENGE_NONE,
            _ => CHALLENGE_INVALID,
        }
    }

    /// The identity headers of an allowed request, in order.
    pub fn identity_headers(&self) -> Vec<(&'static str, &str)> {
        match self {
            Decision::Allow {
                subject,
                jti,
                session_id,
            } => {
                let mut h = vec![(SUBJECT_HEADER, subject.as_str()), (JTI_HEADER, jti.as_str())];
                if let Some(sid) = session_id {
                    h.push((SESSION_HEADER, sid.as_str()));
                }
                h
            }
            _ => Vec::new(),
        }
    }

    fn labels(&self) -> (&'static str, &'static str) {
        match self {
            Decision::Allow { .. } => ("allowed", Verdict::Valid.as_str()),
            Decision::Deny { verdict: Some(v) } => ("denied", v.as_str()),
            Decision::Deny { verdict: None } => ("denied", "missing"),
            Decision::Unavailable => ("error", "unavailable"),
        }
    }
}

/// The token of an `authorization` header value: `Bearer <token>`, the
/// scheme in any case (RFC 7235), one or more spaces.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    (!token.is_empty()).then_some(token)
}

/// Whether `value` can be an HTTP header value as it is: no control
/// characters (UTF-8 beyond ASCII is sent as is).
pub fn header_safe(value: &str) -> bool {
    !value.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Whether `name` (any case) is one of the identity headers revokd owns.
pub fn is_identity_header(name: &str) -> bool {
    name.len() >= IDENTITY_PREFIX.len() && name[..IDENTITY_PREFIX.len()].eq_ignore_ascii_case(IDENTITY_PREFIX)
}

static UNAVAILABLE_LOG: crate::error::LogLimiter = crate::error::LogLimiter::new(1000);

/// Decides for the proxies, through the same verification as VerifyToken.
#[derive(Clone)]
pub struct Authorizer {
    authority: Arc<TokenAuthority>,
    metrics: Metrics,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Over `authority`.
    pub fn new(authority: Arc<TokenAuthority>, metrics: Metrics) -> Self {
        Authorizer { authority, metrics }
    }

    /// The decision for a request with this `authorization` header value (if
    /// any), for `audience` (if the route names one); counted by `via`'s
    /// result and verdict.
    pub async fn decide(&self, authorization: Option<&str>, audience: Option<&str>) -> Decision {
        let started = Instant::now();
        let decision = self.decide_inner(authorization, audience).await;
        let (result, verdict) = decision.labels();
        self.metrics.authz_check(result, verdict, started.elapsed());
        decision
    }

    async fn decide_inner(&self, authorization: Option<&str>, audience: Option<&str>) -> Decision {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Decision::Deny { verdict: None };
        };
        let audience = audience.filter(|a| !a.is_empty());
        match self.authority.verify(token, audience).await {
            Ok(outcome) => match (outcome.verdict, outcome.token) {
                (Verdict::Valid, Some(t)) => {
                    let c = &t.claims;
                    let ids = [Some(&c.subject), Some(&c.jti), c.session_id.as_ref()];
                    if !ids.into_iter().flatten().all(|v| header_safe(v)) {
                        // A control character in a claim cannot be forwarded as a header
                        // (and would let a token forge header lines): not an identity.
                        return Decision::Deny {
                            verdict: Some(Verdict::Malformed),
                        };
                    }
                    Decision::Allow {
                        subject: c.subject.clone(),
                        jti: c.jti.clone(),
                        session_id: c.session_id.clone(),
                    }
                }
                (verdict, _) => Decision::Deny { verdict: Some(verdict) },
            },
            Err(Error::Store(e)) => {
                // An outage fails every check: one line a second, with how many it stands for.
                if let Some(suppressed) = UNAVAILABLE_LOG.allow() {
                    tracing::warn!(detail = %e, suppressed, "authorization check: revocation store unavailable");
                }
                Decision::Unavailable
            }
            Err(e) => {
                tracing::error!(error = %e, "authorization check failed");
                Decision::Unavailable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_in_any_case_only() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn control_characters_are_not_header_safe() {
        assert!(header_safe("alice@example.com"));
        assert!(header_safe("josé"));
        assert!(!header_safe("alice\r\nx-jwt-role: admin"));
        assert!(!header_safe("a\u{7f}"));
    }

    #[test]
    fn identity_headers_are_ours_in_any_case() {
        assert!(is_identity_header("x-jwt-subject"));
        assert!(is_identity_header("X-JWT-Whatever"));
        assert!(!is_identity_header("x-jw"));
        assert!(!is_identity_header("authorization"));
        let allow = Decision::Allow {
            subject: "alice".into(),
            jti: "j1".into(),
            session_id: Some("s1".into()),
        };
        assert_eq!(
            allow.identity_headers(),
            vec![(SUBJECT_HEADER, "alice"), (JTI_HEADER, "j1"), (SESSION_HEADER, "s1")]
        );
        assert_eq!(Decision::Deny { verdict: None }.challenge(), "Bearer");
        assert_eq!(
            Decision::Deny {
                verdict: Some(Verdict::Revoked)
            }
            .challenge(),
            r#"Bearer error="invalid_token""#
        );
    }
}
