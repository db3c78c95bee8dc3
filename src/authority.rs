//! The token authority: what revokd does, independent of gRPC.
//!
//! Issue signs; verify authenticates, checks the time window, issuer and
//! audience, then asks the revocation store; revoke stores a jti until its
//! token would have expired. Every revocation emits one audit event on the
//! `revokd::audit` log target.

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::Error;
use crate::revocation::RevocationStore;
use crate::tokens::{
    AuthenticatedToken, IssueParams, IssuedToken, TokenIssuer, TokenVerifier, Verdict, unix_seconds,
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

/// Issue, verify and revoke, over one key ring and one revocation store.
pub struct TokenAuthority {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    store: Arc<dyn RevocationStore>,
}

impl TokenAuthority {
    /// Puts the parts together.
    pub fn new(
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        store: Arc<dyn RevocationStore>,
    ) -> Self {
        TokenAuthority {
            issuer,
            verifier,
            store,
        }
    }

    /// The revocation store.
    pub fn store(&self) -> &Arc<dyn RevocationStore> {
        &self.store
    }

    /// Signs a new token.
    pub fn issue(&self, params: IssueParams) -> Result<IssuedToken, Error> {
        let issued = self.issuer.issue(params, unix_seconds(SystemTime::now()))?;
        tracing::debug!(jti = %issued.jti, kid = %issued.kid, "token issued");
        Ok(issued)
    }

    /// Verifies a token now. A bad token is a verdict; only a store failure is an error.
    pub async fn verify(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<VerifyOutcome, Error> {
        let now = unix_seconds(SystemTime::now());
        let authenticated = match self.verifier.verify(token, audience, now) {
            Ok(t) => Arc::new(t),
            Err(verdict) => {
                return Ok(VerifyOutcome {
                    verdict,
                    token: None,
                });
            }
        };
        let verdict = if self.store.is_revoked(&authenticated.claims.jti).await? {
            Verdict::Revoked
        } else {
            Verdict::Valid
        };
        Ok(VerifyOutcome {
            verdict,
            token: Some(authenticated),
        })
    }

    /// Revokes a token or a jti; returns once the store has it.
    pub async fn revoke(&self, target: RevokeTarget, reason: &str) -> Result<RevokeOutcome, Error> {
        let now = unix_seconds(SystemTime::now());
        let leeway = self.verifier.policy().leeway.as_secs() as i64;
        let (jti, until, subject, kid) = match target {
            RevokeTarget::Token(token) => {
                if token.is_empty() {
                    return Err(Error::invalid("token", "must not be empty"));
                }
                let t = self.verifier.authenticate(&token).map_err(|verdict| {
                    Error::invalid(
                        "token",
                        format!("not a token signed by a known key ({})", verdict.as_str()),
                    )
                })?;
                let until = t.claims.expires_at.saturating_add(leeway);
                (t.claims.jti, until, t.claims.subject, t.kid)
            }
            RevokeTarget::Jti(jti) => {
                if jti.is_empty() {
                    return Err(Error::invalid("jti", "must not be empty"));
                }
                if jti.len() > MAX_JTI_BYTES {
                    return Err(Error::invalid(
                        "jti",
                        format!("longer than {MAX_JTI_BYTES} bytes"),
                    ));
                }
                let until = now + self.issuer.policy().max_ttl.as_secs() as i64 + leeway;
                (jti, until, String::new(), String::new())
            }
        };
        // A token past its expiry (plus leeway) is dead already: nothing to store.
        let newly_revoked = if until <= now {
            false
        } else {
            self.store.revoke(&jti, until).await?
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
