//! The token authority: what revokd does, independent of gRPC.
//!
//! Issue signs; verify authenticates (or finds the token in the
//! [`VerifiedTokenCache`]), checks the time window, issuer and audience, then
//! asks the revocation store; revoke stores a jti until its token would have
//! expired. Every revocation emits one audit event on the `revokd::audit` log
//! target.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::cache::VerifiedTokenCache;
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
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
}

impl TokenAuthority {
    /// Puts the parts together.
    pub fn new(
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        store: Arc<dyn RevocationStore>,
        cache: VerifiedTokenCache,
        metrics: Metrics,
    ) -> Self {
        TokenAuthority {
            issuer,
            verifier,
            store,
            cache,
            metrics,
        }
    }

    /// The revocation store.
    pub fn store(&self) -> &Arc<dyn RevocationStore> {
        &self.store
    }

    /// The verified-token cache (cleared when keys change).
    pub fn cache(&self) -> &VerifiedTokenCache {
        &self.cache
    }

    fn observe_store<T>(
        &self,
        op: &'static str,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.metrics.store_ok(),
            Err(_) => self.metrics.store_error(op),
        }
        r
    }

    /// Signs a new token.
    pub fn issue(&self, params: IssueParams) -> Result<IssuedToken, Error> {
        let result = self.issuer.issue(params, unix_seconds(SystemTime::now()));
        self.metrics.issued(match &result {
            Ok(_) => "ok",
            Err(Error::InvalidArgument { .. }) => "invalid_argument",
            Err(_) => "error",
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
        let authenticated = Arc::new(self.verifier.authenticate(token)?);
        let until = authenticated
            .claims
            .expires_at
            .saturating_add(self.verifier.policy().leeway.as_secs() as i64);
        self.cache.insert(token, authenticated.clone(), until, now);
        Ok(authenticated)
    }

    /// Verifies a token now. A bad token is a verdict; only a store failure is an error.
    pub async fn verify(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<VerifyOutcome, Error> {
        let started = Instant::now();
        let now = unix_seconds(SystemTime::now());
        let authenticated = match self.authenticate(token, now) {
            Ok(t) => t,
            Err(verdict) => {
                self.metrics.verified(verdict, started.elapsed());
                return Ok(VerifyOutcome {
                    verdict,
                    token: None,
                });
            }
        };
        if let Err(verdict) = self.verifier.check(&authenticated, audience, now) {
            self.metrics.verified(verdict, started.elapsed());
            return Ok(VerifyOutcome {
                verdict,
                token: None,
            });
        }
        let revoked = self.observe_store(
            "is_revoked",
            self.store.is_revoked(&authenticated.claims.jti).await,
        )?;
        let verdict = if revoked {
            Verdict::Revoked
        } else {
            Verdict::Valid
        };
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
        self.metrics.revoked(
            kind,
            match &result {
                Ok(o) if o.newly_revoked => "newly_revoked",
                Ok(o) if o.until <= unix_seconds(SystemTime::now()) => "expired",
                Ok(_) => "already_revoked",
                Err(Error::InvalidArgument { .. }) => "invalid_argument",
                Err(Error::Store(StoreError::Unavailable(_))) => "unavailable",
                Err(_) => "error",
            },
        );
        result
    }

    async fn revoke_inner(
        &self,
        target: RevokeTarget,
        reason: &str,
    ) -> Result<RevokeOutcome, Error> {
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
            self.observe_store("revoke", self.store.revoke(&jti, until).await)?
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
