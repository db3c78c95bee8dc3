//! Issuing and verifying JWTs: pure and synchronous, with the time passed in.
//!
//! Verification runs in two stages so the expensive one can be cached:
//! [`TokenVerifier::authenticate`] checks the size cap, the header, the key the
//! `kid` names and the signature, and parses the claims (a function of the
//! token's bytes alone); [`TokenVerifier::check`] then checks the time window,
//! issuer and audience against `now`. Revocation is checked by the caller.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::keys::{KeyRing, alg_name};

/// Claims that callers cannot set through IssueToken's `claims`.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "sid",
    "token_use",
    "client_id",
];

/// What a token is for (the `token_use` claim). Tokens without the claim are access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Presented to VerifyToken on every request.
    Access,
    /// Presented to RefreshSession only.
    Refresh,
}

impl TokenUse {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Refresh => "refresh",
        }
    }
}

/// The outcome of a verification. Numbers match `revokd.v1.Verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Genuine, in its time window, right issuer and audience, not revoked.
    Valid,
    /// Genuine but revoked.
    Revoked,
    /// Past `exp` plus leeway.
    Expired,
    /// Before `nbf` minus leeway.
    NotYetValid,
    /// Signature or algorithm does not match the key.
    BadSignature,
    /// Not a JWT, too large, or required claims missing.
    Malformed,
    /// The requested audience is not in `aud`.
    WrongAudience,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// No key with that `kid`.
    UnknownKey,
    /// A refresh token where an access token is expected, or the other way round.
    WrongTokenType,
}

impl Verdict {
    /// Every verdict, in proto order.
    pub const ALL: [Verdict; 10] = [
        Verdict::Valid,
        Verdict::Revoked,
        Verdict::Expired,
        Verdict::NotYetValid,
        Verdict::BadSignature,
        Verdict::Malformed,
        Verdict::WrongAudience,
        Verdict::WrongIssuer,
        Verdict::UnknownKey,
        Verdict::WrongTokenType,
    ];

    /// A short lowercase name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Revoked => "revoked",
            Verdict::Expired => "expired",
            Verdict::NotYetValid => "not_yet_valid",
            Verdict::BadSignature => "bad_signature",
            Verdict::Malformed => "malformed",
            Verdict::WrongAudience => "wrong_audience",
            Verdict::WrongIssuer => "wrong_issuer",
            Verdict::UnknownKey => "unknown_key",
            Verdict::WrongTokenType => "wrong_token_type",
        }
    }
}

/// The claims of a token whose signature checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `iss`, empty when absent.
    pub issuer: String,
    /// `sub`, empty when absent.
    pub subject: String,
    /// `aud` (a string or an array in the token).
    pub audience: Vec<String>,
    /// `iat` in seconds since the epoch, when present.
    pub issued_at: Option<i64>,
    /// `iat` in microseconds (revokd writes it with sub-second precision).
    pub issued_at_us: Option<i64>,
    /// `sid`: the session, for tokens issued by IssueSession.
    pub session_id: Option<String>,
    /// `token_use`: `refresh` marks a refresh token.
    pub token_use: TokenUse,
    /// `nbf` in seconds since the epoch, when present.
    pub not_before: Option<i64>,
    /// `exp` in seconds since the epoch (required).
    pub expires_at: i64,
    /// `jti` (required).
    pub jti: String,
    /// `client_id`: the registered client that asked for the token (RFC 8693 4.3), if any.
    pub client_id: Option<String>,
    /// Every other claim.
    pub extra: Map<String, Value>,
}

/// A token that passed [`TokenVerifier::authenticate`]: signature and claims.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatedToken {
    /// The kid of the key that verified it ([`crate::keys::LEGACY_KID`] for a legacy token).
    pub kid: String,
    /// Verified by the legacy key of migration mode.
    pub legacy: bool,
    /// Its claims.
    pub claims: Claims,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Verification settings.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// Required `iss`.
    pub issuer: String,
    /// Allowed clock skew for exp and nbf.
    pub leeway: Duration,
    /// Larger tokens are MALFORMED without parsing.
    pub max_token_bytes: usize,
    /// The longest lifetime revokd issues (the larger of `--max-ttl` and
    /// `--refresh-ttl`): a token meant to live longer is MALFORMED, because
    /// its revocation could not be kept as long as it lives.
    pub max_lifetime: Duration,
}

/// Migration mode: the key and issuer of the tokens an app signed before
/// revokd. Such a token has no `kid`; it may lack a `jti`, and then goes by
/// [`legacy_jti`], a digest of the token.
#[derive(Debug)]
pub struct Legacy {
    /// The app's key, its algorithm fixed.
    pub key: crate::keys::VerifyingKey,
    /// The `iss` legacy tokens carry; empty: none.
    pub issuer: String,
}

/// The jti a legacy token without one goes by: `legacy-` and the base64url
/// SHA-256 of the whole token, so RevokeToken given the token finds it again.
pub fn legacy_jti(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    format!("legacy-{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// Verifies tokens against the current key ring.
pub struct TokenVerifier {
    keys: Arc<ArcSwap<KeyRing>>,
    policy: VerifyPolicy,
    legacy: Option<Legacy>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    /// RFC 7515 4.1.11: extensions the recipient must understand. revokd
    /// implements none, so any `crit` (even an empty one, which is invalid)
    /// makes the token MALFORMED.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

impl TokenVerifier {
    /// A verifier over a (reloadable) key ring.
    pub fn new(keys: Arc<ArcSwap<KeyRing>>, policy: VerifyPolicy) -> Self {
        TokenVerifier {
            keys,
            policy,
            legacy: None,
        }
    }

    /// Also accepts the tokens of `legacy` (migration mode).
    pub fn with_legacy(mut self, legacy: Option<Legacy>) -> Self {
        self.legacy = legacy;
        self
    }

    /// The key ring in force.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// The reloadable key ring itself, to follow its changes.
    pub fn key_ring(&self) -> Arc<ArcSwap<KeyRing>> {
        self.keys.clone()
    }

    /// The settings in force.
    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    /// Stage one: size, header, key, signature, claims. Depends only on the
    /// token's bytes and the key ring, so its result may be cached.
    pub fn authenticate(&self, token: &str) -> Result<AuthenticatedToken, Verdict> {
        if token.len() > self.policy.max_token_bytes {
            return Err(Verdict::Malformed);
        }
        let (message, signature) = token.rsplit_once('.').ok_or(Verdict::Malformed)?;
        let (header_b64, payload_b64) = message.split_once('.').ok_or(Verdict::Malformed)?;
        if payload_b64.contains('.') {
            return Err(Verdict::Malformed);
        }
        let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| Verdict::Malformed)?;
        // RFC 7515 4: a JSON object (serde would also read a struct from an array).
        if header_json.trim_ascii_start().first() != Some(&b'{') {
            return Err(Verdict::Malformed);
        }
        let header: Header<'_> = serde_json::from_slice(&header_json).map_err(|_| Verdict::Malformed)?;
        if header.crit.is_some() {
            return Err(Verdict::Malformed);
        }
        let keys = self.keys.load();
        let key = match (&header.kid, &self.legacy) {
            (Some(kid), _) => keys.get(kid).map(|k| &**k).ok_or(Verdict::UnknownKey)?,
            // Migration mode: no kid, the legacy key; nothing else ever verifies with it.
            (None, Some(legacy)) => &legacy.key,
            (None, None) => return Err(Verdict::UnknownKey),
        };
        // The key fixes the algorithm: `none`, or any other than the key's, is refused.
        if header.alg != alg_name(key.alg) {
            return Err(Verdict::BadSignature);
        }
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.decoding, key.alg) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(Verdict::BadSignature),
        }
        let legacy = header.kid.is_none();
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| Verdict::Malformed)?;
        let mut claims = parse_claims_inner(&payload, legacy).ok_or(Verdict::Malformed)?;
        if claims.jti.is_empty() {
            claims.jti = legacy_jti(token);
        }
        Ok(AuthenticatedToken {
            kid: key.kid.clone(),
            legacy,
            claims,
        })
    }

    /// Stage two: token type, time window, issuer, audience, at `now`.
    pub fn check(
        &self,
        token: &AuthenticatedToken,
        expected: TokenUse,
        audience: Option<&str>,
        now: i64,
    ) -> Result<(), Verdict> {
        let leeway = self.policy.leeway.as_secs() as i64;
        let claims = &token.claims;
        if claims.token_use != expected {
            return Err(Verdict::WrongTokenType);
        }
        // RFC 7519: valid only *before* exp; a revocation kept until exp + leeway
        // (Redis EXAT) therefore covers every instant the token is accepted.
        if now >= claims.expires_at.saturating_add(leeway) {
            return Err(Verdict::Expired);
        }
        if let Some(nbf) = claims.not_before
            && now.saturating_add(leeway) < nbf
        {
            return Err(Verdict::NotYetValid);
        }
        // Every VALID token must be revocable: a revocation is kept at most the
        // maximum lifetime (plus leeway), so a token that lives longer than that
        // from now, or was issued to live longer, is not one of ours to accept.
        let max_lifetime = (self.policy.max_lifetime.as_secs() as i64).saturating_add(leeway);
        if claims.expires_at.saturating_sub(now) > max_lifetime
            || claims
                .issued_at
                .is_some_and(|iat| claims.expires_at.saturating_sub(iat) > max_lifetime)
        {
            return Err(Verdict::Malformed);
        }
        let issuer = match (&self.legacy, token.legacy) {
            (Some(legacy), true) => &legacy.issuer,
            _ => &self.policy.issuer,
        };
        if claims.issuer != *issuer {
            return Err(Verdict::WrongIssuer);
        }
        if let Some(aud) = audience
            && !claims.audience.iter().any(|a| a == aud)
        {
            return Err(Verdict::WrongAudience);
        }
        Ok(())
    }

    /// Both stages, for an access token.
    pub fn verify(&self, token: &str, audience: Option<&str>, now: i64) -> Result<AuthenticatedToken, Verdict> {
        let authenticated = self.authenticate(token)?;
        self.check(&authenticated, TokenUse::Access, audience, now)?;
        Ok(authenticated)
    }
}

fn numeric_date(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.floor() as i64)),
        _ => None,
    }
}

/// Parses a token's payload (JSON) into claims; `None` if required claims
/// are missing or of the wrong type.
pub fn parse_claims(payload: &[u8]) -> Option<Claims> {
    parse_claims_inner(payload, false)
}

/// [`parse_claims`]; a `legacy` token may lack a `jti` (left empty).
fn parse_claims_inner(payload: &[u8], legacy: bool) -> Option<Claims> {
    let mut map: Map<String, Value> = serde_json::from_slice(payload).ok()?;
    let string = |v: Option<Value>| -> Option<String> {
        match v {
            None => Some(String::new()),
            Some(Value::String(s)) => Some(s),
            Some(_) => None,
        }
    };
    let issuer = string(map.remove("iss"))?;
    let subject = string(map.remove("sub"))?;
    let audience = match map.remove("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    let opt_date = |v: Option<Value>| -> Option<Option<i64>> {
        match v {
            None => Some(None),
            Some(v) => numeric_date(&v).map(Some),
        }
    };
    let iat = map.remove("iat");
    let issued_at_us = match &iat {
        None => None,
        Some(Value::Number(n)) => Some(match n.as_i64() {
            Some(i) => i.saturating_mul(1_000_000),
            None => (n.as_f64()? * 1e6).round() as i64,
        }),
        Some(_) => return None,
    };
    let issued_at = opt_date(iat)?;
    let session_id = match map.remove("sid") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(_) => return None,
    };
    let token_use = match map.remove("token_use") {
        None => TokenUse::Access,
        Some(Value::String(s)) if s == "access" => TokenUse::Access,
        Some(Value::String(s)) if s == "refresh" => TokenUse::Refresh,
        Some(_) => return None,
    };
    let not_before = opt_date(map.remove("nbf"))?;
    let expires_at = opt_date(map.remove("exp"))??;
    let jti = string(map.remove("jti"))?;
    if jti.is_empty() && !legacy {
        return None;
    }
    let client_id = match map.remove("client_id") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return None,
    };
    Some(Claims {
        issuer,
        subject,
        audience,
        issued_at,
        issued_at_us,
        session_id,
        token_use,
        not_before,
        expires_at,
        jti,
        client_id,
        extra: map,
    })
}

/// What IssueToken asks for, decoded from the request.
#[derive(Debug, Clone, Default)]
pub struct IssueParams {
    /// `sub`.
    pub subject: String,
    /// Lifetime; the default when None.
    pub ttl: Option<Duration>,
    /// `aud`.
    pub audience: Vec<String>,
    /// Extra claims.
    pub extra: Map<String, Value>,
    /// `sid` and `token_use`, for session tokens.
    pub session: Option<(String, TokenUse)>,
    /// `client_id`: the registered client that asked.
    pub client_id: Option<String>,
}

/// A freshly signed token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// The kid that signed it.
    pub kid: String,
}

/// Lifetime settings for issuing.
#[derive(Debug, Clone)]
pub struct IssuePolicy {
    /// The `iss` claim.
    pub issuer: String,
    /// Lifetime when the request gives none.
    pub default_ttl: Duration,
    /// Longest lifetime granted.
    pub max_ttl: Duration,
    /// Lifetime of refresh tokens, and the longest one granted.
    pub refresh_ttl: Duration,
    /// The largest token to sign (`--max-token-bytes`: verify calls a larger one MALFORMED).
    pub max_token_bytes: usize,
}

/// The longest `sub` (and RevokeSubject subject), in bytes.
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// The most `aud` entries of one token.
pub const MAX_AUDIENCES: usize = 16;
/// The longest `aud` entry, in bytes.
pub const MAX_AUDIENCE_BYTES: usize = 256;

impl IssuePolicy {
    /// The longest any token revokd issues can live.
    pub fn max_lifetime(&self) -> Duration {
        self.max_ttl.max(self.refresh_ttl)
    }
}

/// Signs new tokens with the ring's signing key.
pub struct TokenIssuer {
    keys: Arc<ArcSwap<KeyRing>>,
    policy: IssuePolicy,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

/// A fresh token id: 128 random bits, base64url (22 characters).
pub fn new_jti(rng: &dyn SecureRandom) -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| Error::Internal("system randomness failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl TokenIssuer {
    /// An issuer over a (reloadable) key ring.
    pub fn new(keys: Arc<ArcSwap<KeyRing>>, policy: IssuePolicy) -> Self {
        TokenIssuer {
            keys,
            policy,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        }
    }

    /// The settings in force.
    pub fn policy(&self) -> &IssuePolicy {
        &self.policy
    }

    /// Validates the request and signs a token valid from `now_us`
    /// (microseconds since the epoch: `iat` keeps sub-second precision, so a
    /// token issued right after a RevokeSubject is told apart from one issued
    /// right before, even within the same second).
    pub fn issue(&self, params: IssueParams, now_us: i64) -> Result<IssuedToken, Error> {
        if params.subject.is_empty() {
            return Err(Error::invalid("subject", "must not be empty"));
        }
        if params.subject.len() > MAX_SUBJECT_BYTES {
            return Err(Error::invalid(
                "subject",
                format!("longer than {MAX_SUBJECT_BYTES} bytes"),
            ));
        }
        let p = &self.policy;
        let (ttl_field, default, max) = match params.session {
            Some((_, TokenUse::Refresh)) => ("refresh_ttl", p.refresh_ttl, p.refresh_ttl),
            Some((_, TokenUse::Access)) => ("access_ttl", p.default_ttl, p.max_ttl),
            None => ("ttl", p.default_ttl, p.max_ttl),
        };
        let ttl = params.ttl.unwrap_or(default);
        if ttl.as_secs() == 0 {
            return Err(Error::invalid(ttl_field, "must be at least 1s"));
        }
        if ttl > max {
            return Err(Error::invalid(
                ttl_field,
                format!(
                    "{} is above the maximum token lifetime {}",
                    humantime::format_duration(ttl),
                    humantime::format_duration(max)
                ),
            ));
        }
        if params.audience.iter().any(String::is_empty) {
            return Err(Error::invalid("audience", "entries must not be empty"));
        }
        if params.audience.len() > MAX_AUDIENCES {
            return Err(Error::invalid("audience", format!("more than {MAX_AUDIENCES} entries")));
        }
        if params.audience.iter().any(|a| a.len() > MAX_AUDIENCE_BYTES) {
            return Err(Error::invalid(
                "audience",
                format!("an entry longer than {MAX_AUDIENCE_BYTES} bytes"),
            ));
        }
        if let Some(name) = params.extra.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
            return Err(Error::invalid("claims", format!("{name:?} is a reserved claim")));
        }
        let jti = new_jti(&self.rng)?;
        let now = now_us.div_euclid(1_000_000);
        let exp = now + ttl.as_secs() as i64;
        let mut claims = Map::with_capacity(params.extra.len() + 7);
        claims.insert("iss".into(), self.policy.issuer.clone().into());
        claims.insert("sub".into(), params.subject.into());
        match params.audience.len() {
            0 => {}
            1 => {
                claims.insert("aud".into(), params.audience[0].clone().into());
            }
            _ => {
                claims.insert("aud".into(), params.audience.into());
            }
        }
        let iat = serde_json::Number::from_f64(now_us as f64 / 1e6)
            .ok_or_else(|| Error::Internal("clock out of range".into()))?;
        claims.insert("iat".into(), Value::Number(iat));
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), exp.into());
        claims.insert("jti".into(), jti.clone().into());
        if let Some((sid, token_use)) = params.session {
            claims.insert("sid".into(), sid.into());
            claims.insert("token_use".into(), token_use.as_str().into());
        }
        if let Some(client_id) = params.client_id {
            claims.insert("client_id".into(), client_id.into());
        }
        claims.extend(params.extra);
        let keys = self.keys.load();
        let key = keys.signing();
        let mut header = jsonwebtoken::Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| Error::Internal(format!("signing with kid {}: {e}", key.kid)))?;
        // A token verify would refuse is not issued (the claims are what can make it large).
        if token.len() > self.policy.max_token_bytes {
            return Err(Error::invalid(
                "claims",
                format!(
                    "the token would be {} bytes, above --max-token-bytes {}",
                    token.len(),
                    self.policy.max_token_bytes
                ),
            ));
        }
        Ok(IssuedToken {
            token,
            jti,
            expires_at: exp,
            kid: key.kid.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeygenAlg;

    const NOW: i64 = 1_800_000_000;
    const NOW_US: i64 = NOW * 1_000_000 + 250_000;

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let dir = tempfile::tempdir().unwrap();
        crate::keys::keygen(KeygenAlg::EdDsa, "ed", dir.path()).unwrap();
        let keys = Arc::new(ArcSwap::from_pointee(KeyRing::load_dir(dir.path(), None).unwrap()));
        let issuer = TokenIssuer::new(
            keys.clone(),
            IssuePolicy {
                issuer: "revokd".into(),
                default_ttl: Duration::from_secs(900),
                max_ttl: Duration::from_secs(3600),
                refresh_ttl: Duration::from_secs(7200),
                max_token_bytes: 8192,
            },
        );
        let verifier = TokenVerifier::new(
            keys,
            VerifyPolicy {
                issuer: "revokd".into(),
                leeway: Duration::from_secs(30),
                max_token_bytes: 8192,
                max_lifetime: Duration::from_secs(86_400),
            },
        );
        (issuer, verifier)
    }

    fn params(subject: &str) -> IssueParams {
        IssueParams {
            subject: subject.into(),
            ..Default::default()
        }
    }

    #[test]
    fn issued_tokens_carry_the_registered_claims() {
        let (issuer, verifier) = setup();
        let mut p = params("alice");
        p.audience = vec!["web".into()];
        p.extra.insert("role".into(), "admin".into());
        let t = issuer.issue(p, NOW_US).unwrap();
        assert_eq!(t.expires_at, NOW + 900);
        assert_eq!(t.jti.len(), 22, "128 random bits, base64url");
        let a = verifier.verify(&t.token, Some("web"), NOW).unwrap();
        assert_eq!(a.kid, "ed");
        let c = &a.claims;
        assert_eq!((c.issuer.as_str(), c.subject.as_str()), ("revokd", "alice"));
        assert_eq!(c.audience, vec!["web"]);
        assert_eq!(
            (c.issued_at, c.not_before, c.expires_at),
            (Some(NOW), Some(NOW), NOW + 900)
        );
        assert_eq!(c.jti, t.jti);
        assert_eq!(c.extra.get("role"), Some(&Value::from("admin")));
        // Fresh jti every time.
        assert_ne!(issuer.issue(params("alice"), NOW_US).unwrap().jti, t.jti);
    }

    #[test]
    fn time_window_honours_the_leeway_exactly() {
        let (issuer, verifier) = setup();
        let t = issuer.issue(params("a"), NOW_US).unwrap().token;
        let exp = NOW + 900;
        assert!(verifier.verify(&t, None, exp + 29).is_ok());
        assert_eq!(verifier.verify(&t, None, exp + 30), Err(Verdict::Expired));
        assert!(verifier.verify(&t, None, NOW - 30).is_ok());
        assert_eq!(verifier.verify(&t, None, NOW - 31), Err(Verdict::NotYetValid));
    }

    #[test]
    fn a_token_meant_to_outlive_its_revocation_is_malformed() {
        let (issuer, verifier) = setup();
        // 900 s from iat, within the 600 s bound from now: still refused (exp - iat).
        let t = issuer.issue(params("a"), NOW_US).unwrap().token;
        let strict = TokenVerifier::new(
            verifier.keys.clone(),
            VerifyPolicy {
                issuer: "revokd".into(),
                leeway: Duration::from_secs(30),
                max_token_bytes: 8192,
                max_lifetime: Duration::from_secs(600),
            },
        );
        assert!(verifier.verify(&t, None, NOW).is_ok());
        assert_eq!(strict.verify(&t, None, NOW + 400), Err(Verdict::Malformed));
        // Without iat: exp - now counts.
        let mut claims = serde_json::json!({"iss": "revokd", "sub": "a", "jti": "j", "exp": NOW + 900});
        let no_iat = |c: &serde_json::Value| {
            let keys = verifier.keys.load();
            let key = keys.signing();
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            header.kid = Some("ed".into());
            jsonwebtoken::encode(&header, c, &key.encoding).unwrap()
        };
        assert_eq!(strict.verify(&no_iat(&claims), None, NOW), Err(Verdict::Malformed));
        assert!(strict.verify(&no_iat(&claims), None, NOW + 400).is_ok());
        // Far beyond anything Redis could keep: never VALID.
        claims["exp"] = serde_json::json!(9_200_000_000_000_000i64);
        assert_eq!(verifier.verify(&no_iat(&claims), None, NOW), Err(Verdict::Malformed));
    }

    #[test]
    fn issue_validates_its_input() {
        let (issuer, _) = setup();
        let field = |r: Result<IssuedToken, Error>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert_eq!(field(issuer.issue(params(""), NOW_US)), "subject");
        let mut p = params("a");
        p.ttl = Some(Duration::from_secs(3601));
        assert_eq!(field(issuer.issue(p, NOW_US)), "ttl");
        let mut p = params("a");
        p.ttl = Some(Duration::from_millis(200));
        assert_eq!(field(issuer.issue(p, NOW_US)), "ttl");
        for name in RESERVED_CLAIMS {
            let mut p = params("a");
            p.extra.insert((*name).into(), 1.into());
            assert_eq!(field(issuer.issue(p, NOW_US)), "claims");
        }
        let mut p = params("a");
        p.audience = vec![String::new()];
        assert_eq!(field(issuer.issue(p, NOW_US)), "audience");
        // Sizes: every field is bounded, and no token larger than verify accepts is signed.
        assert_eq!(
            field(issuer.issue(params(&"s".repeat(MAX_SUBJECT_BYTES + 1)), NOW_US)),
            "subject"
        );
        assert!(issuer.issue(params(&"s".repeat(MAX_SUBJECT_BYTES)), NOW_US).is_ok());
        let mut p = params("a");
        p.audience = vec!["x".into(); MAX_AUDIENCES + 1];
        assert_eq!(field(issuer.issue(p, NOW_US)), "audience");
        let mut p = params("a");
        p.audience = vec!["x".repeat(MAX_AUDIENCE_BYTES + 1)];
        assert_eq!(field(issuer.issue(p, NOW_US)), "audience");
        let mut p = params("a");
        p.extra.insert("blob".into(), "x".repeat(1 << 20).into());
        assert_eq!(field(issuer.issue(p, NOW_US)), "claims");
        let mut p = params("a");
        p.extra.insert("blob".into(), "x".repeat(5000).into());
        let issued = issuer.issue(p, NOW_US).unwrap();
        assert!(issued.token.len() <= 8192, "just below the cap is signed");
    }

    #[test]
    fn claims_parsing_accepts_standard_shapes_and_refuses_bad_types() {
        let ok = parse_claims(br#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10.7,"jti":"j"}"#).unwrap();
        assert_eq!(ok.audience, vec!["a", "b"]);
        assert_eq!(ok.expires_at, 10);
        assert_eq!(
            parse_claims(br#"{"aud":"a","exp":1,"jti":"j"}"#).unwrap().audience,
            vec!["a"]
        );
        assert!(parse_claims(br#"{"exp":1}"#).is_none(), "jti required");
        assert!(parse_claims(br#"{"jti":"j"}"#).is_none(), "exp required");
        assert!(parse_claims(br#"{"exp":"soon","jti":"j"}"#).is_none());
        assert!(parse_claims(br#"{"exp":1,"jti":"j","aud":[1]}"#).is_none());
        assert!(parse_claims(br#"{"exp":1,"jti":"j","sub":5}"#).is_none());
        assert!(parse_claims(b"[]").is_none());
    }

    #[test]
    fn header_algorithm_must_be_the_keys() {
        let (issuer, verifier) = setup();
        let t = issuer.issue(params("a"), NOW_US).unwrap().token;
        let (_, rest) = t.split_once('.').unwrap();
        for alg in ["none", "HS256", "RS256", "ES256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"ed"}}"#));
            assert_eq!(
                verifier.verify(&format!("{header}.{rest}"), None, NOW),
                Err(Verdict::BadSignature)
            );
        }
    }
}
