//! Who may call what: the client registry (`--clients-file`), how a caller
//! proves who it is, and what each client may do.
//!
//! A registry file is JSON: `{"clients": [{"id", "secret_hash", "permissions",
//! "audiences"}]}`. The secret is stored only as an argon2id hash (PHC
//! string); `revokd client add` prints a new secret once and writes its hash.
//! A secret reads `<id>.<random>`, so a bearer of the secret alone names its
//! client. The file is reloaded when it changes; one that does not load is
//! refused with a log line and the clients in force stay.
//!
//! Callers present `authorization: Basic base64(id:secret)` or `Bearer
//! <secret>` (gRPC metadata or HTTP header; the OAuth endpoints also take
//! `client_id` and `client_secret` form fields). An argon2id check is slow
//! on purpose (19 MiB and two passes, the crate's defaults), so a secret that
//! checked out is remembered (as a keyed digest, never the secret) until the
//! registry changes; failed checks run at most two at a time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Permission {
    /// VerifyToken (and Envoy's Check on the gRPC listener).
    Verify,
    /// IssueToken, IssueSession, RefreshSession.
    Issue,
    /// RevokeToken, RevokeSession; the OAuth `/revoke` endpoint.
    Revoke,
    /// RevokeSubject (log a subject out everywhere).
    RevokeSubject,
    /// The OAuth `/introspect` endpoint.
    Introspect,
}

impl Permission {
    /// Its name in the registry file and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Verify => "verify",
            Permission::Issue => "issue",
            Permission::Revoke => "revoke",
            Permission::RevokeSubject => "revoke_subject",
            Permission::Introspect => "introspect",
        }
    }
}

/// One entry of the registry file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client id: 1 to 64 of `A-Z a-z 0-9 _ -`.
    pub id: String,
    /// argon2id PHC string of the secret.
    pub secret_hash: String,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// The audiences it may issue tokens for; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// DNS names (or IP addresses) a TLS client certificate, verified against
    /// `--tls-client-ca`, may carry to be this client on the gRPC API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_names: Vec<String>,
}

/// The registry file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Every client.
    pub clients: Vec<ClientEntry>,
}

/// A client that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its id.
    pub id: String,
    permissions: HashSet<Permission>,
    audiences: Vec<String>,
}

impl Client {
    /// Whether it may do `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials, on a listener that allows that (loopback or a Unix
    /// socket, without `--require-caller-auth`): may do everything.
    Anonymous,
    /// A registered client.
    Client(Arc<Client>),
}

impl Caller {
    /// The client id, if any (for logs and the `client_id` claim).
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::Client(c) => Some(&c.id),
        }
    }

    /// Whether the caller may issue tokens for `audiences`: a client limited
    /// to some audiences must name only those, and at least one.
    pub fn check_audiences(&self, audiences: &[String]) -> Result<(), Denied> {
        let Caller::Client(c) = self else { return Ok(()) };
        if c.audiences.is_empty() {
            return Ok(());
        }
        if audiences.is_empty() {
            return Err(Denied::Permission(format!(
                "client {} must name an audience (it may issue for {})",
                c.id,
                c.audiences.join(", ")
            )));
        }
        match audiences.iter().find(|a| !c.audiences.contains(a)) {
            Some(a) => Err(Denied::Permission(format!(
                "client {} may not issue for audience {a:?}",
                c.id
            ))),
            None => Ok(()),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No usable credentials where they are required, an unknown client or a
    /// wrong secret: UNAUTHENTICATED (HTTP 401). Never says which.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known client without the permission: PERMISSION_DENIED (HTTP 403).
    #[error("{0}")]
    Permission(String),
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Denied::Permission(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// Credentials as presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None.
    None,
    /// A client id and its secret.
    Secret {
        /// The claimed client id.
        id: String,
        /// The secret (never logged).
        secret: String,
    },
    /// A TLS client certificate (DER), already verified against `--tls-client-ca`.
    Certificate(Arc<Vec<u8>>),
}

/// Reads an `authorization` value: `Basic base64(id:secret)` or `Bearer
/// <id>.<random>`; `Err` for anything else that is present.
pub fn credentials(authorization: Option<&str>) -> Result<Credentials, Denied> {
    let Some(value) = authorization else {
        return Ok(Credentials::None);
    };
    let malformed = Denied::Unauthenticated("malformed authorization: use Basic id:secret or Bearer <secret>");
    let (scheme, rest) = value.trim().split_once(' ').ok_or(malformed.clone())?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| malformed.clone())?;
        let text = String::from_utf8(decoded).map_err(|_| malformed.clone())?;
        let (id, secret) = text.split_once(':').ok_or(malformed.clone())?;
        // RFC 6749 2.3.1: both form-urlencoded before Basic encoding.
        let (id, secret) = (form_decode(id), form_decode(secret));
        return Ok(Credentials::Secret { id, secret });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let (id, _) = rest.split_once('.').ok_or(malformed)?;
        return Ok(Credentials::Secret {
            id: id.to_owned(),
            secret: rest.to_owned(),
        });
    }
    Err(malformed)
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The clients of one registry file, as loaded.
pub struct Registry {
    clients: HashMap<String, (Arc<Client>, String)>,
    /// (name, client) for clients that may come with a TLS client certificate.
    tls_names: Vec<(String, Arc<Client>)>,
    /// Keyed digests of (id, secret) pairs that checked out.
    verified: Mutex<HashSet<[u8; 32]>>,
    digest_key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.clients.keys().collect();
        ids.sort();
        f.debug_struct("Registry")
            .field("clients", &ids)
            .finish_non_exhaustive()
    }
}

/// At most this many argon2 checks at once (failed ones are not remembered).
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl Registry {
    /// Parses and checks a registry file's contents.
    pub fn parse(text: &str) -> Result<Registry, String> {
        let file: RegistryFile = serde_json::from_str(text).map_err(|e| format!("not a clients file: {e}"))?;
        let mut clients = HashMap::new();
        let mut tls_names = Vec::new();
        for entry in file.clients {
            if !valid_id(&entry.id) {
                return Err(format!("client id {:?}: 1 to 64 of A-Z a-z 0-9 _ -", entry.id));
            }
            let hash = PasswordHash::new(&entry.secret_hash)
                .map_err(|e| format!("client {}: secret_hash is not a PHC string: {e}", entry.id))?;
            if hash.algorithm.as_str() != "argon2id" {
                return Err(format!("client {}: secret_hash must be argon2id", entry.id));
            }
            if entry.permissions.is_empty() {
                return Err(format!("client {}: no permissions", entry.id));
            }
            let client = Arc::new(Client {
                id: entry.id.clone(),
                permissions: entry.permissions.into_iter().collect(),
                audiences: entry.audiences,
            });
            tls_names.extend(entry.tls_names.into_iter().map(|name| (name, client.clone())));
            if clients.insert(entry.id.clone(), (client, entry.secret_hash)).is_some() {
                return Err(format!("client {}: listed twice", entry.id));
            }
        }
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut key = [0u8; 32];
        rng.fill(&mut key).map_err(|_| "no randomness".to_string())?;
        Ok(Registry {
            clients,
            tls_names,
            verified: Mutex::new(HashSet::new()),
            digest_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        })
    }

    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Registry, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Registry::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// How many clients it has.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client a verified TLS client certificate names (its first `tls_names` match).
    pub fn authenticate_certificate(&self, der: &[u8]) -> Result<Arc<Client>, Denied> {
        self.tls_names
            .iter()
            .find(|(name, _)| crate::tls::certificate_names(der, name))
            .map(|(_, client)| client.clone())
            .ok_or(Denied::Unauthenticated(
                "the client certificate names no registered client",
            ))
    }

    /// The client `id` if `secret` is its secret.
    pub async fn authenticate(&self, id: &str, secret: &str) -> Result<Arc<Client>, Denied> {
        let unknown = Denied::Unauthenticated("unknown client or wrong secret");
        let Some((client, hash)) = self.clients.get(id) else {
            return Err(unknown);
        };
        let mut mac = aws_lc_rs::hmac::Context::with_key(&self.digest_key);
        mac.update(id.as_bytes());
        mac.update(&[0]);
        mac.update(secret.as_bytes());
        let digest: [u8; 32] = mac.sign().as_ref().try_into().expect("SHA-256 is 32 bytes");
        if self.verified.lock().unwrap().contains(&digest) {
            return Ok(client.clone());
        }
        let _slot = CHECKS.acquire().await.expect("never closed");
        let (hash, secret) = (hash.clone(), secret.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(unknown);
        }
        let mut verified = self.verified.lock().unwrap();
        if verified.len() < 4096 {
            verified.insert(digest);
        }
        Ok(client.clone())
    }
}

/// The registry in force (none: no `--clients-file`), shared by every
/// listener and swapped on reload.
pub type Registries = Arc<ArcSwap<Option<Arc<Registry>>>>;

/// How one listener treats callers.
#[derive(Debug, Clone)]
pub struct CallerPolicy {
    registry: Registries,
    /// Callers without credentials are allowed (and may do everything).
    anonymous: bool,
}

impl CallerPolicy {
    /// `anonymous`: the listener is on loopback or a Unix socket and
    /// `--require-caller-auth` is off.
    pub fn new(registry: Registries, anonymous: bool) -> Self {
        CallerPolicy { registry, anonymous }
    }

    /// Everyone may do everything (tests, embedding).
    pub fn open() -> Self {
        CallerPolicy::new(Arc::new(ArcSwap::from_pointee(None)), true)
    }

    /// Who presented `credentials`, if they may do `permission`.
    pub async fn authorize(&self, credentials: Credentials, permission: Option<Permission>) -> Result<Caller, Denied> {
        if credentials == Credentials::None {
            return if self.anonymous {
                Ok(Caller::Anonymous)
            } else {
                Err(Denied::Unauthenticated("caller credentials required"))
            };
        }
        let registry = self.registry.load_full();
        let Some(registry) = registry.as_ref() else {
            // Credentials where no client is registered: nothing to check them against.
            return if self.anonymous {
                Ok(Caller::Anonymous)
            } else {
                Err(Denied::Unauthenticated("unknown client or wrong secret"))
            };
        };
        let caller = match credentials {
            Credentials::None => unreachable!("handled above"),
            Credentials::Secret { id, secret } => registry.authenticate(&id, &secret).await?,
            Credentials::Certificate(der) => registry.authenticate_certificate(&der)?,
        };
        if let Some(p) = permission
            && !caller.may(p)
        {
            return Err(Denied::Permission(format!(
                "client {} may not {}",
                caller.id,
                p.as_str()
            )));
        }
        Ok(Caller::Client(caller))
    }

    /// [`CallerPolicy::authorize`] from an `authorization` value, or else a
    /// verified TLS client certificate.
    pub async fn authorize_call(
        &self,
        authorization: Option<&str>,
        certificate: Option<Arc<Vec<u8>>>,
        permission: Option<Permission>,
    ) -> Result<Caller, Denied> {
        let credentials = match (credentials(authorization)?, certificate) {
            (Credentials::None, Some(der)) => Credentials::Certificate(der),
            (presented, _) => presented,
        };
        self.authorize(credentials, permission).await
    }
}

/// Reloads the registry at `path` when its contents change (checked every
/// `every`); a file that does not load is refused and the clients in force stay.
pub fn watch(path: PathBuf, registry: Registries, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = std::fs::read(&path).ok();
            if now == last {
                continue;
            }
            last = now;
            match Registry::load(&path) {
                Ok(new) => {
                    tracing::info!(clients = new.len(), "clients reloaded");
                    registry.store(Arc::new(Some(Arc::new(new))));
                }
                Err(e) => tracing::error!(error = %e, "new clients file refused; keeping the clients in force"),
            }
        }
    })
}

/// A new secret for client `id`: `<id>.<43 base64url characters>` (256 bits).
pub fn new_secret(id: &str) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness".to_string())?;
    Ok(format!("{id}.{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The argon2id PHC string of `secret`, with a random salt.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "no randomness".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// `revokd client add`: adds client `id` to the file at `path` (created if
/// missing, mode 0600, replaced atomically) and returns its new secret.
pub fn add_client(
    path: &Path,
    id: &str,
    permissions: Vec<Permission>,
    audiences: Vec<String>,
    tls_names: Vec<String>,
) -> Result<String, String> {
    if !valid_id(id) {
        return Err(format!("--id {id:?}: 1 to 64 of A-Z a-z 0-9 _ -"));
    }
    if permissions.is_empty() {
        return Err("give at least one --permission".into());
    }
    let mut file: RegistryFile = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: not a clients file: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if file.clients.iter().any(|c| c.id == id) {
        return Err(format!("client {id} already exists in {}", path.display()));
    }
    let secret = new_secret(id)?;
    file.clients.push(ClientEntry {
        id: id.to_owned(),
        secret_hash: hash_secret(&secret)?,
        permissions,
        audiences,
        tls_names,
    });
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())? + "\n";
    // Check what we write loads.
    Registry::parse(&text)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.sync_all().map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_values() {
        assert_eq!(credentials(None).unwrap(), Credentials::None);
        let basic = format!("Basic {}", STANDARD.encode("app:s3cr%3At"));
        assert_eq!(
            credentials(Some(&basic)).unwrap(),
            Credentials::Secret {
                id: "app".into(),
                secret: "s3cr:t".into()
            }
        );
        assert_eq!(
            credentials(Some("Bearer app.abc")).unwrap(),
            Credentials::Secret {
                id: "app".into(),
                secret: "app.abc".into()
            }
        );
        for bad in ["Bearer", "Bearer nodot", "Basic !!!", "Digest x", "Basic bm9jb2xvbg=="] {
            assert!(credentials(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(form_decode("a+b%2Fc%zz%4"), "a b/c%zz%4");
    }

    #[tokio::test]
    async fn secrets_check_out_and_permissions_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        let secret = add_client(
            &path,
            "app",
            vec![Permission::Verify, Permission::Issue],
            vec!["web".into()],
            vec![],
        )
        .unwrap();
        assert!(secret.starts_with("app."));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret), "only the hash is stored");
        assert!(
            add_client(&path, "app", vec![Permission::Verify], vec![], vec![]).is_err(),
            "no duplicate ids"
        );
        let registry: Registries = Arc::new(ArcSwap::from_pointee(Some(Arc::new(Registry::load(&path).unwrap()))));
        let remote = CallerPolicy::new(registry.clone(), false);
        let ok = Credentials::Secret {
            id: "app".into(),
            secret: secret.clone(),
        };
        let caller = remote.authorize(ok.clone(), Some(Permission::Issue)).await.unwrap();
        assert_eq!(caller.id(), Some("app"));
        assert!(caller.check_audiences(&["web".into()]).is_ok());
        assert!(caller.check_audiences(&["admin".into()]).is_err());
        assert!(caller.check_audiences(&[]).is_err());
        // Remembered: the second check is the cache's.
        assert!(remote.authorize(ok.clone(), Some(Permission::Verify)).await.is_ok());
        assert!(matches!(
            remote.authorize(ok, Some(Permission::Revoke)).await,
            Err(Denied::Permission(_))
        ));
        let wrong = Credentials::Secret {
            id: "app".into(),
            secret: "app.wrong".into(),
        };
        assert!(matches!(
            remote.authorize(wrong, None).await,
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            remote.authorize(Credentials::None, None).await,
            Err(Denied::Unauthenticated(_))
        ));
        let local = CallerPolicy::new(registry, true);
        assert_eq!(
            local.authorize(Credentials::None, Some(Permission::Issue)).await,
            Ok(Caller::Anonymous)
        );
    }

    #[test]
    fn bad_registry_files_are_refused() {
        for bad in [
            "{}",
            r#"{"clients":[{"id":"a b","secret_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA","permissions":["verify"]}]}"#,
            r#"{"clients":[{"id":"a","secret_hash":"plain","permissions":["verify"]}]}"#,
            r#"{"clients":[{"id":"a","secret_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA","permissions":[]}]}"#,
            r#"{"clients":[{"id":"a","secret_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA","permissions":["fly"]}]}"#,
            r#"{"clients":[{"id":"a","secret_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA","permissions":["verify"],"extra":1}]}"#,
        ] {
            assert!(Registry::parse(bad).is_err(), "{bad}");
        }
    }
}
