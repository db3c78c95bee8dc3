//! The token authority: what revokd does, independent of gRPC.
//!
//! Issue signs; verify authenticates (or finds the token in the
//! [`VerifiedTokenCache`]), checks the time window, issuer and audience, then
//! asks the revocation store; revoke stores a jti until its token would have
//! expired. Every revocation emits one audit event on the `revokd::audit` log
//! target.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cache::VerifiedTokenCache;
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
use crate::revocation::{RevocationKind, RevocationQuery, RevocationStore, Rotation, RotationOutcome};
use crate::tokens::{
    AuthenticatedToken, IssueParams, IssuedToken, TokenIssuer, TokenUse, TokenVerifier, Verdict, new_jti, unix_micros,
    unix_seconds,
};

/// Log target of revocation audit events, so they can be routed on their own.
pub const AUDIT_TARGET: &str = "revokd::audit";

/// Longest jti accepted by RevokeToken (ours are 22 characters).
pub const MAX_JTI_BYTES: usize = 256;

/// The result of a verification.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The authenticated token, for VALID and REVOKED.
    pub token: Option<Arc<AuthenticatedToken>>,
}

/// The result of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// The revoked token id.
    pub jti: String,
    /// False when it was already revoked or already expired.
    pub newly_revoked: bool,
    /// Until when the revocation is kept (Unix seconds).
    pub until: i64,
}

/// What to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// A token, which must carry a valid signature from a known key.
    Token(String),
    /// A bare token id, kept for the maximum token lifetime.
    Jti(String),
}

impl RevokeTarget {
    fn kind(&self) -> &'static str {
        match self {
            RevokeTarget::Token(_) => "token",
            RevokeTarget::Jti(_) => "jti",
        }
    }
}

/// Issue, verify and revoke, over one key ring and one revocation store.
pub struct TokenAuthority {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    store: Arc<dyn RevocationStore>,
    cache: VerifiedTokenCache,
    metrics: Metrics,
    refresh_grace: Duration,
    rng: aws_lc_rs::rand::SystemRandom,
}

/// What to revoke with RevokeSession.
#[derive(Debug, Clone)]
pub enum SessionTarget {
    /// The session id.
    SessionId(String),
    /// Any token of the session, which must carry a valid signature from a known key.
    Token(String),
}

/// The revocation lookup for an authenticated token.
fn query(t: &AuthenticatedToken, now: i64) -> RevocationQuery<'_> {
    RevocationQuery {
        jti: &t.claims.jti,
        session_id: t.claims.session_id.as_deref(),
        subject: &t.claims.subject,
        issued_at_us: t.claims.issued_at_us,
        now,
    }
}

/// Longest session id accepted by RevokeSession (ours are 22 characters).
pub const MAX_SESSION_ID_BYTES: usize = 128;

/// An access and refresh token pair of one session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionTokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The session id (`sid`).
    pub session_id: String,
    /// The access token's `exp`.
    pub access_expires_at: i64,
    /// The refresh token's `exp`.
    pub refresh_expires_at: i64,
    /// The kid that signed both.
    pub key_id: String,
}

/// What IssueSession asks for.
#[derive(Debug, Clone, Default)]
pub struct SessionParams {
    /// `sub`.
    pub subject: String,
    /// `aud` of both tokens.
    pub audience: Vec<String>,
    /// Extra claims, carried by both tokens (so a refreshed access token keeps them).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Access token lifetime.
    pub access_ttl: Option<Duration>,
    /// Refresh token lifetime.
    pub refresh_ttl: Option<Duration>,
}

/// The result of a subject revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectRevocation {
    /// Tokens issued at or before this instant (Unix µs) are revoked.
    pub revoked_before_us: i64,
    /// Until when the revocation is kept (Unix seconds).
    pub until: i64,
}

impl TokenAuthority {
    /// Puts the parts together.
    pub fn new(
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        store: Arc<dyn RevocationStore>,
        cache: VerifiedTokenCache,
        metrics: Metrics,
        refresh_grace: Duration,
    ) -> Self {
        TokenAuthority {
            issuer,
            verifier,
            store,
            cache,
            metrics,
            refresh_grace,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        }
    }

    fn leeway(&self) -> i64 {
        self.verifier.policy().leeway.as_secs() as i64
    }

    /// Until when a revocation that must outlive every token revokd may have issued is kept.
    fn max_lifetime_until(&self, now: i64) -> i64 {
        now + self.issuer.policy().max_lifetime().as_secs() as i64 + self.leeway()
    }

    /// The public keys as a JWK Set document.
    pub fn jwks_json(&self) -> String {
        self.verifier.keys().jwks_json().to_owned()
    }

    /// The verified-token cache (cleared when keys change).
    pub fn cache(&self) -> &VerifiedTokenCache {
        &self.cache
    }

    fn observe_store<T>(&self, op: &'static str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.metrics.store_ok(),
            Err(_) => self.metrics.store_error(op),
        }
        r
    }

    /// Signs a new token.
    pub fn issue(&self, params: IssueParams) -> Result<IssuedToken, Error> {
        let result = self.issuer.issue(params, unix_micros(SystemTime::now()));
        self.metrics.issued(match &result {
            Ok(_) => "ok",
            Err(e) => error_result(e),
        });
        let issued = result?;
        tracing::debug!(jti = %issued.jti, kid = %issued.kid, "token issued");
        Ok(issued)
    }

    /// Authenticates `token`, through the cache.
    fn authenticate(&self, token: &str, now: i64) -> Result<Arc<AuthenticatedToken>, Verdict> {
        if let Some(hit) = self.cache.get(token, now) {
            return Ok(hit);
        }
        let generation = self.cache.generation();
        let authenticated = Arc::new(self.verifier.authenticate(token)?);
        let until = authenticated
            .claims
            .expires_at
            .saturating_add(self.verifier.policy().leeway.as_secs() as i64);
        self.cache.insert(token, authenticated.clone(), until, now, generation);
        Ok(authenticated)
    }

    /// Verifies a token now. A bad token is a verdict; only a store failure is an error.
    pub async fn verify(&self, token: &str, audience: Option<&str>) -> Result<VerifyOutcome, Error> {
        let started = Instant::now();
        let now = unix_seconds(SystemTime::now());
        let authenticated = match self.authenticate(token, now) {
            Ok(t) => t,
            Err(verdict) => {
                self.metrics.verified(verdict, started.elapsed());
                return Ok(VerifyOutcome { verdict, token: None });
            }
        };
        if let Err(verdict) = self.verifier.check(&authenticated, TokenUse::Access, audience, now) {
            self.metrics.verified(verdict, started.elapsed());
            return Ok(VerifyOutcome { verdict, token: None });
        }
        let revoked = self.observe_store("is_revoked", self.store.is_revoked(&query(&authenticated, now)).await)?;
        let verdict = if revoked { Verdict::Revoked } else { Verdict::Valid };
        self.metrics.verified(verdict, started.elapsed());
        Ok(VerifyOutcome {
            verdict,
            token: Some(authenticated),
        })
    }

    /// Revokes a token or a jti; returns once the store has it.
    pub async fn revoke(&self, target: RevokeTarget, reason: &str) -> Result<RevokeOutcome, Error> {
        let kind = target.kind();
        let result = self.revoke_inner(target, reason).await;
        self.metrics.revoked(kind, revoke_result(&result));
        result
    }

    async fn revoke_inner(&self, target: RevokeTarget, reason: &str) -> Result<RevokeOutcome, Error> {
        let now = unix_seconds(SystemTime::now());
        let leeway = self.verifier.policy().leeway.as_secs() as i64;
        let (jti, until, subject, kid) = match target {
            RevokeTarget::Token(token) => {
                let t = self.authenticate_for_revocation(&token)?;
                let until = t.claims.expires_at.saturating_add(leeway);
                (t.claims.jti, until, t.claims.subject, t.kid)
            }
            RevokeTarget::Jti(jti) => {
                if jti.is_empty() {
                    return Err(Error::invalid("jti", "must not be empty"));
                }
                if jti.len() > MAX_JTI_BYTES {
                    return Err(Error::invalid("jti", format!("longer than {MAX_JTI_BYTES} bytes")));
                }
                // A bare jti may be a refresh token's: keep it as long as any token can live.
                let until = self.max_lifetime_until(now);
                (jti, until, String::new(), String::new())
            }
        };
        // A token past its expiry (plus leeway) is dead already: nothing to store.
        let newly_revoked = if until <= now {
            false
        } else {
            self.observe_store("revoke", self.store.revoke(RevocationKind::Jti, &jti, until).await)?
        };
        tracing::info!(
            target: AUDIT_TARGET,
            jti = %jti,
            subject = %subject,
            key_id = %kid,
            reason = %reason,
            until,
            newly_revoked,
            "token revoked"
        );
        Ok(RevokeOutcome {
            jti,
            newly_revoked,
            until,
        })
    }
}

impl TokenAuthority {
    /// Signs the access and refresh tokens of session `sid`, valid from `now_us`.
    fn sign_pair(&self, sid: &str, p: &SessionParams, now_us: i64) -> Result<(SessionTokens, String), Error> {
        let issue = |ttl, token_use| {
            self.issuer.issue(
                IssueParams {
                    subject: p.subject.clone(),
                    ttl,
                    audience: p.audience.clone(),
                    extra: p.extra.clone(),
                    session: Some((sid.to_owned(), token_use)),
                },
                now_us,
            )
        };
        let access = issue(p.access_ttl, TokenUse::Access)?;
        let refresh = issue(p.refresh_ttl, TokenUse::Refresh)?;
        Ok((
            SessionTokens {
                access_token: access.token,
                refresh_token: refresh.token,
                session_id: sid.to_owned(),
                access_expires_at: access.expires_at,
                refresh_expires_at: refresh.expires_at,
                key_id: access.kid,
            },
            refresh.jti,
        ))
    }

    /// A login: a new session with its token pair.
    pub async fn issue_session(&self, params: SessionParams) -> Result<SessionTokens, Error> {
        let now_us = unix_micros(SystemTime::now());
        let result = async {
            let sid = new_jti(&self.rng)?;
            let (tokens, refresh_jti) = self.sign_pair(&sid, &params, now_us)?;
            let until = tokens.refresh_expires_at + self.leeway();
            self.observe_store(
                "start_session",
                self.store.start_session(&sid, &refresh_jti, until).await,
            )?;
            Ok(tokens)
        }
        .await;
        self.metrics.issued(match &result {
            Ok(_) => "ok",
            Err(e) => error_result(e),
        });
        if let Ok(t) = &result {
            tracing::debug!(session_id = %t.session_id, "session issued");
        }
        result
    }

    /// Trades a refresh token for the session's next pair (single use; reuse
    /// revokes the session).
    pub async fn refresh_session(&self, refresh_token: &str) -> Result<SessionTokens, Error> {
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "must not be empty"));
        }
        let now_us = unix_micros(SystemTime::now());
        let now = now_us.div_euclid(1_000_000);
        let refused = |what: &str| Error::Unauthenticated(format!("refresh_token: {what}"));
        let t = self
            .verifier
            .authenticate(refresh_token)
            .map_err(|v| refused(v.as_str()))?;
        self.verifier
            .check(&t, TokenUse::Refresh, None, now)
            .map_err(|v| refused(v.as_str()))?;
        let Some(sid) = t.claims.session_id.clone() else {
            return Err(refused("not a session token"));
        };
        if self.observe_store("is_revoked", self.store.is_revoked(&query(&t, now)).await)? {
            return Err(refused("revoked"));
        }
        let params = SessionParams {
            subject: t.claims.subject.clone(),
            audience: t.claims.audience.clone(),
            extra: t.claims.extra.clone(),
            access_ttl: None,
            refresh_ttl: None,
        };
        let (tokens, next_jti) = self.sign_pair(&sid, &params, now_us)?;
        let grace_ms = self.refresh_grace.as_millis() as i64;
        // The successor is only kept for retries within the grace window.
        let successor = if grace_ms > 0 {
            serde_json::to_string(&tokens).map_err(|e| Error::Internal(e.to_string()))?
        } else {
            String::new()
        };
        let rotation = Rotation {
            session_id: &sid,
            presented_jti: &t.claims.jti,
            next_jti: &next_jti,
            successor: &successor,
            now_ms: now_us / 1000,
            grace_ms,
            state_until: tokens.refresh_expires_at + self.leeway(),
            revoke_until: self.max_lifetime_until(now),
        };
        match self.observe_store("rotate_refresh", self.store.rotate_refresh(&rotation).await)? {
            RotationOutcome::Rotated => Ok(tokens),
            RotationOutcome::Retry(previous) => {
                serde_json::from_str(&previous).map_err(|e| Error::Internal(format!("stored successor: {e}")))
            }
            RotationOutcome::Reused => {
                tracing::warn!(
                    target: AUDIT_TARGET,
                    session_id = %sid,
                    subject = %t.claims.subject,
                    jti = %t.claims.jti,
                    reason = "refresh token reuse",
                    "session revoked"
                );
                self.metrics.revoked("session", "newly_revoked");
                Err(Error::RefreshTokenReused)
            }
            RotationOutcome::SessionRevoked => Err(refused("session revoked")),
            RotationOutcome::UnknownSession => Err(refused("unknown or expired session")),
        }
    }

    /// Revokes a session, by id or by any validly signed token of it.
    pub async fn revoke_session(&self, target: SessionTarget, reason: &str) -> Result<RevokeOutcome, Error> {
        let result = async {
            let now = unix_seconds(SystemTime::now());
            let (sid, subject) = match target {
                SessionTarget::Token(token) => {
                    let t = self.authenticate_for_revocation(&token)?;
                    let sid = t
                        .claims
                        .session_id
                        .ok_or_else(|| Error::invalid("token", "carries no session id (sid)"))?;
                    (sid, t.claims.subject)
                }
                SessionTarget::SessionId(sid) => {
                    if sid.is_empty() || sid.len() > MAX_SESSION_ID_BYTES {
                        return Err(Error::invalid(
                            "session_id",
                            format!("must be 1 to {MAX_SESSION_ID_BYTES} bytes"),
                        ));
                    }
                    if !sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                        return Err(Error::invalid("session_id", "must be base64url characters"));
                    }
                    (sid, String::new())
                }
            };
            let until = self.max_lifetime_until(now);
            let newly = self.observe_store("revoke", self.store.revoke(RevocationKind::Session, &sid, until).await)?;
            tracing::info!(
                target: AUDIT_TARGET,
                session_id = %sid,
                subject = %subject,
                reason = %reason,
                until,
                newly_revoked = newly,
                "session revoked"
            );
            Ok(RevokeOutcome {
                jti: sid,
                newly_revoked: newly,
                until,
            })
        }
        .await;
        self.metrics.revoked("session", revoke_result(&result));
        result
    }

    /// Logout everywhere: revokes every token of `subject` issued before this returns.
    pub async fn revoke_subject(&self, subject: &str, reason: &str) -> Result<SubjectRevocation, Error> {
        let result = async {
            if subject.is_empty() {
                return Err(Error::invalid("subject", "must not be empty"));
            }
            let first_us = unix_micros(SystemTime::now());
            let until = self.max_lifetime_until(first_us.div_euclid(1_000_000));
            self.observe_store(
                "revoke_subject",
                self.store.revoke_subject(subject, first_us, until).await,
            )?;
            // A refresh that checked revocation before the first write landed signs
            // with an iat before this second instant, so moving the bar here (the
            // store only ever raises it) covers every token issued before we return.
            let now_us = unix_micros(SystemTime::now());
            self.observe_store(
                "revoke_subject",
                self.store.revoke_subject(subject, now_us, until).await,
            )?;
            tracing::info!(
                target: AUDIT_TARGET,
                subject = %subject,
                reason = %reason,
                revoked_before_us = now_us,
                until,
                "subject revoked"
            );
            Ok(SubjectRevocation {
                revoked_before_us: now_us,
                until,
            })
        }
        .await;
        self.metrics.revoked(
            "subject",
            match &result {
                Ok(_) => "newly_revoked",
                Err(e) => error_result(e),
            },
        );
        result
    }

    /// A token given for revocation must carry a valid signature from a known key.
    fn authenticate_for_revocation(&self, token: &str) -> Result<AuthenticatedToken, Error> {
        if token.is_empty() {
            return Err(Error::invalid("token", "must not be empty"));
        }
        self.verifier
            .authenticate(token)
            .map_err(|v| Error::invalid("token", format!("not a token signed by a known key ({})", v.as_str())))
    }
}

fn error_result(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument { .. } => "invalid_argument",
        Error::Store(StoreError::Unavailable(_)) => "unavailable",
        _ => "error",
    }
}

fn revoke_result(r: &Result<RevokeOutcome, Error>) -> &'static str {
    match r {
        Ok(o) if o.newly_revoked => "newly_revoked",
        Ok(o) if o.until <= unix_seconds(SystemTime::now()) => "expired",
        Ok(_) => "already_revoked",
        Err(e) => error_result(e),
    }
}
