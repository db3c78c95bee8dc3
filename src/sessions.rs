//! Sessions: login (IssueSession), single-use refresh rotation with reuse
//! detection and an optional retry grace window (RefreshSession), logout
//! (RevokeSession) and logout everywhere (RevokeSubject). Methods of the
//! [`TokenAuthority`], apart from issue/verify/revoke.

use std::time::Duration;

use crate::authority::{AUDIT_TARGET, RevokeOutcome, TokenAuthority, error_result, query, revoke_result};
use crate::callers::Denied;
use crate::error::Error;
use crate::revocation::{RevocationKind, Rotation, RotationOutcome};
use crate::tokens::{IssueParams, TokenUse, new_jti};

/// What to revoke with RevokeSession.
#[derive(Debug, Clone)]
pub enum SessionTarget {
    /// The session id.
    SessionId(String),
    /// Any token of the session, which must carry a valid signature from a known key.
    Token(String),
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
    /// The registered client that logged the user in (`client_id` claim of both tokens).
    pub client_id: Option<String>,
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
                    client_id: p.client_id.clone(),
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
        let now_us = self.clock.now().micros;
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
    /// revokes the session). `client`: the registered client asking, which
    /// must be the one the session was issued to.
    pub async fn refresh_session(&self, refresh_token: &str, client: Option<&str>) -> Result<SessionTokens, Error> {
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "must not be empty"));
        }
        let now_us = self.clock.now().micros;
        let now = now_us.div_euclid(1_000_000);
        let refused = |what: &str| Error::Unauthenticated(format!("refresh_token: {what}"));
        let t = self
            .verifier
            .authenticate(refresh_token)
            .map_err(|v| refused(v.as_str()))?;
        // A refresh token is bound to the client it was issued to (OAuth 2.0 6):
        // refused before anything changes.
        if let Some(me) = client
            && t.claims.client_id.as_deref().is_some_and(|issued_to| issued_to != me)
        {
            return Err(Denied::Permission(format!("client {me} may not refresh another client's session")).into());
        }
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
            client_id: t.claims.client_id.clone(),
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
        crate::authority::check_reason(reason)?;
        let now = self.clock.now().seconds();
        let result = async {
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
        self.metrics.revoked("session", revoke_result(&result, now));
        result
    }

    /// Logout everywhere: revokes every token of `subject` issued before this returns.
    pub async fn revoke_subject(&self, subject: &str, reason: &str) -> Result<SubjectRevocation, Error> {
        let result = async {
            if subject.is_empty() {
                return Err(Error::invalid("subject", "must not be empty"));
            }
            if subject.len() > crate::tokens::MAX_SUBJECT_BYTES {
                return Err(Error::invalid(
                    "subject",
                    format!("longer than {} bytes", crate::tokens::MAX_SUBJECT_BYTES),
                ));
            }
            crate::authority::check_reason(reason)?;
            let first_us = self.clock.now().micros;
            let until = self.max_lifetime_until(first_us.div_euclid(1_000_000));
            self.observe_store(
                "revoke_subject",
                self.store.revoke_subject(subject, first_us, until).await,
            )?;
            // A refresh that checked revocation before the first write landed signs
            // with an iat before this second instant, so moving the bar here (the
            // store only ever raises it) covers every token issued before we return.
            // The one call that reads the clock twice, by design.
            let now_us = self.clock.now().micros;
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::authority::tests::{authority, params, verdict};
    use crate::error::Error;
    use crate::sessions::SessionParams;
    use crate::tokens::Verdict;

    #[tokio::test]
    async fn logout_everywhere_revokes_tokens_issued_up_to_the_instant_not_after() {
        let (a, clock) = authority(Duration::ZERO);
        let before = a.issue(params(Duration::from_secs(600))).unwrap().token;
        clock.advance(Duration::from_micros(1));
        let r = a.revoke_subject("alice", "test").await.unwrap();
        assert_eq!(r.revoked_before_us, clock.now().micros);
        // Issued in the very microsecond of the revocation: covered.
        let same_instant = a.issue(params(Duration::from_secs(600))).unwrap().token;
        clock.advance(Duration::from_micros(1));
        let after = a.issue(params(Duration::from_secs(600))).unwrap().token;
        assert_eq!(verdict(&a, &before).await, Verdict::Revoked);
        assert_eq!(verdict(&a, &same_instant).await, Verdict::Revoked);
        assert_eq!(verdict(&a, &after).await, Verdict::Valid);
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_may_be_retried_within_the_grace_window_only() {
        let grace = Duration::from_secs(10);
        let (a, clock) = authority(grace);
        let first = a
            .issue_session(SessionParams {
                subject: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let second = a.refresh_session(&first.refresh_token, None).await.unwrap();
        // A retry (the first reply was lost) at the window's last millisecond gets the same pair.
        clock.advance(grace);
        assert_eq!(a.refresh_session(&first.refresh_token, None).await.unwrap(), second);
        // One millisecond later it is reuse: the session is revoked.
        clock.advance(Duration::from_millis(1));
        assert!(matches!(
            a.refresh_session(&first.refresh_token, None).await,
            Err(Error::RefreshTokenReused)
        ));
        assert_eq!(verdict(&a, &second.access_token).await, Verdict::Revoked);
    }
}
