//! The token authority: what revokd does, independent of gRPC.
//!
//! Issue signs; verify authenticates (or finds the token in the
//! [`VerifiedTokenCache`]), checks the time window, issuer and audience, then
//! asks the revocation store; revoke stores a jti until its token would have
//! expired. Sessions (login, refresh, logout, logout everywhere) are
//! [`crate::sessions`]. Every revocation emits one audit event on the
//! `revokd::audit` log target. The time is read from the authority's
//! [`Clock`], once per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::VerifiedTokenCache;
use crate::clock::Clock;
use crate::error::{Error, StoreError};
use crate::metrics::Metrics;
use crate::revocation::{RevocationKind, RevocationQuery, RevocationStore};
use crate::tokens::{AuthenticatedToken, IssueParams, IssuedToken, TokenIssuer, TokenUse, TokenVerifier, Verdict};

/// Log target of revocation audit events, so they can be routed on their own.
pub const AUDIT_TARGET: &str = "revokd::audit";

/// Longest jti accepted by RevokeToken (ours are 22 characters).
pub const MAX_JTI_BYTES: usize = 256;

/// The longest revocation `reason` (it goes to the audit log), in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A revocation's `reason` is within [`MAX_REASON_BYTES`].
pub(crate) fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(
            "reason",
            format!("longer than {MAX_REASON_BYTES} bytes"),
        ));
    }
    Ok(())
}

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
    pub(crate) issuer: TokenIssuer,
    pub(crate) verifier: TokenVerifier,
    pub(crate) store: Arc<dyn RevocationStore>,
    cache: VerifiedTokenCache,
    pub(crate) metrics: Metrics,
    pub(crate) refresh_grace: Duration,
    pub(crate) rng: aws_lc_rs::rand::SystemRandom,
    /// Read once per call.
    pub(crate) clock: Clock,
    /// Migration mode: the app's old blocklist key, `{jti}` in it.
    legacy_blocklist: Option<String>,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// The revocation lookup for an authenticated token.
pub(crate) fn query(t: &AuthenticatedToken, now: i64) -> RevocationQuery<'_> {
    RevocationQuery {
        jti: &t.claims.jti,
        session_id: t.claims.session_id.as_deref(),
        subject: &t.claims.subject,
        issued_at_us: t.claims.issued_at_us,
        now,
    }
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
            clock: Clock::system(),
            legacy_blocklist: None,
        }
    }

    /// Migration mode: legacy tokens are also REVOKED while `pattern` (the
    /// app's old blocklist key, `{jti}` replaced) exists.
    pub fn with_legacy_blocklist(mut self, pattern: Option<String>) -> Self {
        self.legacy_blocklist = pattern;
        self
    }

    /// The same, reading time from `clock` (a fixed one in tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn leeway(&self) -> i64 {
        self.verifier.policy().leeway.as_secs() as i64
    }

    /// Until when a revocation that must outlive every token revokd may have issued is kept.
    pub(crate) fn max_lifetime_until(&self, now: i64) -> i64 {
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

    pub(crate) fn observe_store<T>(&self, op: &'static str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.metrics.store_ok(),
            Err(_) => self.metrics.store_error(op),
        }
        r
    }

    /// Signs a new token.
    pub fn issue(&self, params: IssueParams) -> Result<IssuedToken, Error> {
        let result = self.issuer.issue(params, self.clock.now().micros);
        self.metrics.issued(match &result {
            Ok(_) => "ok",
            Err(e) => error_result(e),
        });
        let issued = result?;
        tracing::debug!(jti = %issued.jti, kid = %issued.kid, "token issued");
        Ok(issued)
    }

    /// Authenticates `token`, through the cache.
    pub(crate) fn authenticate(&self, token: &str, now: i64) -> Result<Arc<AuthenticatedToken>, Verdict> {
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
        let now = self.clock.now().seconds();
        let authenticated = match self.authenticate(token, now) {
            Ok(t) => t,
            Err(verdict) => {
                self.metrics.verified(verdict, started.elapsed());
                return Ok(VerifyOutcome { verdict, token: None });
            }
        };
        if let Err(verdict) = self.verifier.check(&authenticated, TokenUse::Access, audience, now) {
            self.metrics.verified(verdict, started.elapsed());
            if authenticated.legacy {
                self.metrics.legacy_verified(verdict);
            }
            return Ok(VerifyOutcome { verdict, token: None });
        }
        let mut revoked = self.observe_store("is_revoked", self.store.is_revoked(&query(&authenticated, now)).await)?;
        if authenticated.legacy
            && !revoked
            && let Some(pattern) = &self.legacy_blocklist
        {
            let key = pattern.replace("{jti}", &authenticated.claims.jti);
            revoked = self.observe_store("legacy_blocklist", self.store.exists_foreign(&key).await)?;
        }
        let verdict = if revoked { Verdict::Revoked } else { Verdict::Valid };
        self.metrics.verified(verdict, started.elapsed());
        if authenticated.legacy {
            self.metrics.legacy_verified(verdict);
        }
        Ok(VerifyOutcome {
            verdict,
            token: Some(authenticated),
        })
    }

    /// Revokes a token or a jti; returns once the store has it.
    pub async fn revoke(&self, target: RevokeTarget, reason: &str) -> Result<RevokeOutcome, Error> {
        let kind = target.kind();
        let now = self.clock.now().seconds();
        let result = self.revoke_inner(target, reason, now).await;
        self.metrics.revoked(kind, revoke_result(&result, now));
        result
    }

    async fn revoke_inner(&self, target: RevokeTarget, reason: &str, now: i64) -> Result<RevokeOutcome, Error> {
        check_reason(reason)?;
        let leeway = self.verifier.policy().leeway.as_secs() as i64;
        let (jti, until, subject, kid) = match target {
            RevokeTarget::Token(token) => {
                let t = self.authenticate_for_revocation(&token)?;
                // No longer than any token can be VALID (a longer-lived one is refused
                // by verify), which also keeps the expiry within what Redis accepts.
                let until = t
                    .claims
                    .expires_at
                    .saturating_add(leeway)
                    .min(self.max_lifetime_until(now));
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
    /// A token given for revocation must carry a valid signature from a known key.
    pub(crate) fn authenticate_for_revocation(&self, token: &str) -> Result<AuthenticatedToken, Error> {
        if token.is_empty() {
            return Err(Error::invalid("token", "must not be empty"));
        }
        self.verifier
            .authenticate(token)
            .map_err(|v| Error::invalid("token", format!("not a token signed by a known key ({})", v.as_str())))
    }
}

pub(crate) fn error_result(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument { .. } => "invalid_argument",
        Error::Store(e) if e.is_unavailable() => "unavailable",
        _ => "error",
    }
}

pub(crate) fn revoke_result(r: &Result<RevokeOutcome, Error>, now: i64) -> &'static str {
    match r {
        Ok(o) if o.newly_revoked => "newly_revoked",
        Ok(o) if o.until <= now => "expired",
        Ok(_) => "already_revoked",
        Err(e) => error_result(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::keys::KeyRing;
    use crate::revocation::memory::MemoryStore;
    use crate::tokens::{IssuePolicy, VerifyPolicy};

    pub(crate) const LEEWAY: Duration = Duration::from_secs(30);

    /// An authority over an in-memory store and an ephemeral key, on a clock
    /// fixed at the current second (the memory store purges by wall clock).
    pub(crate) fn authority(refresh_grace: Duration) -> (TokenAuthority, Clock) {
        let now_s = crate::tokens::unix_seconds(std::time::SystemTime::now());
        let clock = Clock::fixed(now_s * 1_000_000);
        let keys = Arc::new(ArcSwap::from_pointee(KeyRing::ephemeral().unwrap()));
        let metrics = Metrics::new();
        let issuer = TokenIssuer::new(
            keys.clone(),
            IssuePolicy {
                issuer: "revokd".into(),
                default_ttl: Duration::from_secs(900),
                max_ttl: Duration::from_secs(3600),
                refresh_ttl: Duration::from_secs(86400),
                max_token_bytes: 8192,
            },
        );
        let verifier = TokenVerifier::new(
            keys,
            VerifyPolicy {
                issuer: "revokd".into(),
                leeway: LEEWAY,
                max_token_bytes: 8192,
                max_lifetime: Duration::from_secs(86_400),
            },
        );
        let authority = TokenAuthority::new(
            issuer,
            verifier,
            MemoryStore::start(Duration::from_secs(3600)),
            VerifiedTokenCache::new(100, metrics.clone()),
            metrics,
            refresh_grace,
        )
        .with_clock(clock.clone());
        (authority, clock)
    }

    pub(crate) fn params(ttl: Duration) -> IssueParams {
        IssueParams {
            subject: "alice".into(),
            ttl: Some(ttl),
            audience: vec![],
            extra: Default::default(),
            session: None,
            client_id: None,
        }
    }

    pub(crate) async fn verdict(a: &TokenAuthority, token: &str) -> Verdict {
        a.verify(token, None).await.unwrap().verdict
    }

    #[tokio::test]
    async fn a_token_is_valid_until_exp_plus_leeway_exclusive() {
        let (a, clock) = authority(Duration::ZERO);
        let token = a.issue(params(Duration::from_secs(60))).unwrap().token;
        assert_eq!(verdict(&a, &token).await, Verdict::Valid);
        // The last instant accepted: one second before exp + leeway.
        clock.advance(Duration::from_secs(60) + LEEWAY - Duration::from_secs(1));
        assert_eq!(verdict(&a, &token).await, Verdict::Valid);
        clock.advance(Duration::from_secs(1));
        assert_eq!(verdict(&a, &token).await, Verdict::Expired);
    }

    #[tokio::test]
    async fn a_revocation_by_token_lasts_exactly_as_long_as_the_token() {
        let (a, clock) = authority(Duration::ZERO);
        let issued = a.issue(params(Duration::from_secs(60))).unwrap();
        let outcome = a
            .revoke(RevokeTarget::Token(issued.token.clone()), "test")
            .await
            .unwrap();
        assert!(outcome.newly_revoked);
        assert_eq!(outcome.until, issued.expires_at + LEEWAY.as_secs() as i64);
        assert_eq!(verdict(&a, &issued.token).await, Verdict::Revoked);
        // Once it could no longer be valid, revoking it stores nothing.
        clock.advance(Duration::from_secs(60) + LEEWAY);
        let late = a.revoke(RevokeTarget::Token(issued.token), "test").await.unwrap();
        assert!(!late.newly_revoked);
    }
}
