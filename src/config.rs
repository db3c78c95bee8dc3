//! Command line and environment configuration (clap), and its validation.
//!
//! Every `serve` flag also reads `REVOKD_<NAME>` from the environment, so a
//! Kubernetes manifest can configure revokd with `env:` alone. A bad value
//! prints one clear line and exits with 64 (EX_USAGE).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::revocation::topology::RedisTarget;

/// Exit status for a usage error (sysexits.h EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// revokd: issues, verifies and revokes JWTs over gRPC.
#[derive(Debug, Parser)]
#[command(name = "revokd", version = crate::VERSION, about, args_override_self = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC token service and the admin HTTP listener.
    Serve(Box<ServeConfig>),
    /// Write a new key file into a keys directory.
    Keygen(KeygenArgs),
    /// Issue, verify and revoke tokens on a running revokd.
    Token(TokenArgs),
    /// Log in, refresh and log out sessions on a running revokd.
    Session(SessionArgs),
    /// Manage the registered callers (`--clients-file`).
    Client(ClientArgs),
    /// Print the public keys (JWK Set) of a running revokd.
    Jwks(Endpoint),
    /// Is a running revokd healthy: gRPC, store, mirror, keys. Exits 1 unless ready.
    Status(StatusArgs),
}

/// Parses a duration such as `30s`, `15m` or `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected a duration such as 30s, 15m, 24h)"))
}

/// A configuration that cannot work; the message names the flag (printed as
/// one line, exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// A value that may carry a password: it never prints (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where a listener listens: a TCP address, or a Unix domain socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`.
    Tcp(SocketAddr),
    /// `unix:/path`: a Unix domain socket (created at start, removed at exit).
    Unix(PathBuf),
}

impl ListenAddr {
    /// Loopback, or a Unix socket: only this machine (in a pod, this pod) reaches it.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) => addr.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some(path) => {
                let path = path.strip_prefix("//").unwrap_or(path);
                if !path.starts_with('/') {
                    return Err("unix: needs an absolute path, e.g. unix:/run/revokd/grpc.sock".into());
                }
                Ok(ListenAddr::Unix(path.into()))
            }
            None => s
                .parse()
                .map(ListenAddr::Tcp)
                .map_err(|e| format!("{e} (expected HOST:PORT such as 127.0.0.1:50051, or unix:/path)")),
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => addr.fmt(f),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// How VerifyToken checks revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RevocationCheck {
    /// Answer from the in-process mirror of the revocation set (no round trip).
    Mirror,
    /// One store lookup per verify.
    Redis,
}

/// Configuration of `revokd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// gRPC API address: HOST:PORT, or a Unix domain socket `unix:/path` (for an app sharing a
    /// volume with the sidecar). Loopback by default: in a pod only the app reaches it.
    #[arg(long, env = "REVOKD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: ListenAddr,

    /// Admin HTTP address (/healthz, /readyz, /metrics, JWKS); kubelet probes hit the pod IP.
    #[arg(long, env = "REVOKD_ADMIN_ADDR", default_value = "0.0.0.0:9464")]
    pub admin_addr: SocketAddr,

    /// HTTP API address: forward-auth at /authz/check for nginx, Traefik, Caddy, Envoy
    /// http_service. Loopback by default, like the gRPC API.
    #[arg(long, env = "REVOKD_HTTP_ADDR", default_value = "127.0.0.1:50052")]
    pub http_addr: SocketAddr,

    /// A second gRPC address that serves only Envoy's ext_authz Check (and health), for a
    /// proxy or gateway that must not reach IssueToken or RevokeToken. Off by default (Check
    /// is always served on --grpc-addr too).
    #[arg(long, env = "REVOKD_AUTHZ_ADDR")]
    pub authz_addr: Option<SocketAddr>,

    /// Redis URL: redis://[user:pass@]host:port[/db], rediss:// (TLS),
    /// redis-sentinel://HOST:PORT[,HOST:PORT...]/SERVICE, rediss-sentinel://,
    /// redis-cluster://HOST:PORT[,HOST:PORT...] or rediss-cluster://. Without it
    /// revocations live in memory only.
    #[arg(long, env = "REVOKD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Redis password, when the URL carries none (keep it out of the URL: take it from a Secret).
    #[arg(long, env = "REVOKD_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// Password of the Sentinels themselves, if they require one.
    #[arg(long, env = "REVOKD_REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<Secret>,

    /// CA certificates (PEM) that Redis' TLS certificate must chain to (rediss:// only); the
    /// system roots when unset.
    #[arg(long, env = "REVOKD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Replicas that must acknowledge every revocation write (`WAIT`) before it is acknowledged;
    /// fewer within the store timeout fails the call with UNAVAILABLE. 0: the master's reply.
    #[arg(long, env = "REVOKD_MIN_REPLICA_ACKS", default_value_t = 0)]
    pub min_replica_acks: u32,

    /// Prefix of every Redis key revokd writes.
    #[arg(long, env = "REVOKD_KEY_PREFIX", default_value = "revokd:")]
    pub key_prefix: String,

    /// Directory of keys: `<kid>.pem` (Ed25519, RSA, EC P-256/P-384) and `<kid>.secret` (HMAC).
    #[arg(long, env = "REVOKD_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,

    /// The kid of the key that signs new tokens (needed when the directory holds several).
    #[arg(long, env = "REVOKD_SIGNING_KID")]
    pub signing_kid: Option<String>,

    /// The `iss` claim revokd writes and requires.
    #[arg(long, env = "REVOKD_ISSUER", default_value = "revokd")]
    pub issuer: String,

    /// Clock skew allowed when checking exp and nbf.
    #[arg(long, env = "REVOKD_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub leeway: Duration,

    /// Lifetime of a token when IssueToken gives none.
    #[arg(long, env = "REVOKD_DEFAULT_TTL", default_value = "15m", value_parser = parse_duration)]
    pub default_ttl: Duration,

    /// The longest lifetime IssueToken grants; also how long a revocation by jti is kept.
    #[arg(long, env = "REVOKD_MAX_TTL", default_value = "24h", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// Lifetime of refresh tokens (IssueSession, RefreshSession), and the longest granted.
    #[arg(long, env = "REVOKD_REFRESH_TTL", default_value = "7d", value_parser = parse_duration)]
    pub refresh_ttl: Duration,

    /// How long after a rotation the previous refresh token may be retried (getting the same new
    /// pair) instead of counting as reuse; 0 disables retries.
    #[arg(long, env = "REVOKD_REFRESH_GRACE", default_value = "0s", value_parser = parse_duration)]
    pub refresh_grace: Duration,

    /// How often the keys directory is checked for changes (a Kubernetes Secret update swaps
    /// its `..data` link); 0 disables reloading.
    #[arg(long, env = "REVOKD_KEYS_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub keys_reload_interval: Duration,

    /// Log format.
    #[arg(long, env = "REVOKD_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Tokens longer than this many bytes are MALFORMED without being parsed.
    #[arg(long, env = "REVOKD_MAX_TOKEN_BYTES", default_value_t = 8192)]
    pub max_token_bytes: usize,

    /// How long in-flight calls may take to finish after SIGTERM.
    #[arg(long, env = "REVOKD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a store command may take before it counts as unavailable.
    #[arg(long, env = "REVOKD_STORE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub store_timeout: Duration,

    /// How VerifyToken checks revocation with Redis: from the push-synced in-process mirror, or
    /// one Redis lookup per verify.
    #[arg(long, env = "REVOKD_REVOCATION_CHECK", value_enum, default_value = "mirror")]
    pub revocation_check: RevocationCheck,

    /// The mirror answers a verify only while it is proven to hold every revocation acknowledged
    /// more than this long ago (a heartbeat every fifth of it); otherwise one Redis lookup.
    #[arg(long, env = "REVOKD_MAX_STALENESS", default_value = "100ms", value_parser = parse_duration)]
    pub max_staleness: Duration,

    /// How many verified tokens to remember (signature and claims), so a token presented on every
    /// request skips signature work; 0 disables the cache.
    #[arg(long, env = "REVOKD_TOKEN_CACHE_SIZE", default_value_t = 10_000)]
    pub token_cache_size: usize,

    /// Registered callers (JSON; `revokd client add` creates and extends it), reloaded when it
    /// changes. Required when --grpc-addr or --http-addr is not a loopback address.
    #[arg(long, env = "REVOKD_CLIENTS_FILE")]
    pub clients_file: Option<PathBuf>,

    /// Require caller credentials on loopback listeners too (without it, a caller on loopback
    /// that presents none may do everything).
    #[arg(long, env = "REVOKD_REQUIRE_CALLER_AUTH")]
    pub require_caller_auth: bool,

    /// TLS certificate chain (PEM) for the gRPC and HTTP API listeners; reloaded when the file
    /// changes (cert-manager). Needs --tls-key.
    #[arg(long, env = "REVOKD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "REVOKD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that TLS client certificates must chain to (mTLS); a verified
    /// certificate names a registered client by its tls_names.
    #[arg(long, env = "REVOKD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Migration mode: what tokens signed before revokd look like.
    #[command(flatten)]
    pub legacy: LegacyArgs,
}

/// Migration mode (docs/MIGRATING.md), off unless `--legacy-key-file` is
/// given: tokens an app signed itself before revokd (no `kid`, perhaps no
/// `jti`, another `iss`) stay valid until they expire, and the app's old
/// blocklist keeps holding. Every legacy token verified is counted
/// (`revokd_legacy_tokens_total`), so operators see when to turn it off.
#[derive(Debug, Clone, Args)]
pub struct LegacyArgs {
    /// The key the app signed its own tokens with: an HMAC secret file (HS256/384/512) or a PEM
    /// public or private key. It verifies tokens without a `kid` header, and only those.
    #[arg(long, env = "REVOKD_LEGACY_KEY_FILE")]
    pub legacy_key_file: Option<PathBuf>,

    /// The one algorithm legacy tokens may use (fixed: the header's `alg` must match).
    #[arg(long, env = "REVOKD_LEGACY_ALG", value_enum, default_value = "HS256")]
    pub legacy_alg: LegacyAlg,

    /// The `iss` legacy tokens carry; unset: legacy tokens must carry no `iss`.
    #[arg(long, env = "REVOKD_LEGACY_ISSUER")]
    pub legacy_issuer: Option<String>,

    /// The app's old blocklist key for a revoked jti, e.g. `blocklist:{jti}` (`{jti}` is replaced):
    /// a legacy token whose key exists is REVOKED, so logouts made before the cut-over hold.
    /// Costs one Redis lookup per legacy verify.
    #[arg(long, env = "REVOKD_LEGACY_BLOCKLIST_KEY")]
    pub legacy_blocklist_key: Option<String>,
}

/// Algorithms a legacy key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LegacyAlg {
    /// HMAC with SHA-256.
    #[value(name = "HS256")]
    Hs256,
    /// HMAC with SHA-384.
    #[value(name = "HS384")]
    Hs384,
    /// HMAC with SHA-512.
    #[value(name = "HS512")]
    Hs512,
    /// RSA PKCS#1 v1.5 with SHA-256.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ES256")]
    Es256,
    /// Ed25519.
    #[value(name = "EdDSA")]
    EdDsa,
}

impl LegacyAlg {
    /// jsonwebtoken's name for it.
    pub fn algorithm(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm;
        match self {
            LegacyAlg::Hs256 => Algorithm::HS256,
            LegacyAlg::Hs384 => Algorithm::HS384,
            LegacyAlg::Hs512 => Algorithm::HS512,
            LegacyAlg::Rs256 => Algorithm::RS256,
            LegacyAlg::Es256 => Algorithm::ES256,
            LegacyAlg::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl ServeConfig {
    /// Checks what clap cannot (relations between values, the Redis URL and
    /// its TLS files), once, and returns the Redis deployment to connect to,
    /// if any. Every error names the flag.
    pub fn validate(&self) -> Result<Option<RedisTarget>, ConfigError> {
        self.check().map_err(ConfigError)?;
        self.redis_target()
    }

    fn check(&self) -> Result<(), String> {
        if self.max_ttl.is_zero() {
            return Err("--max-ttl must be greater than 0".into());
        }
        if self.default_ttl.is_zero() || self.default_ttl > self.max_ttl {
            return Err(format!(
                "--default-ttl ({}) must be greater than 0 and at most --max-ttl ({})",
                humantime::format_duration(self.default_ttl),
                humantime::format_duration(self.max_ttl)
            ));
        }
        if self.refresh_ttl.is_zero() {
            return Err("--refresh-ttl must be greater than 0".into());
        }
        if self.issuer.is_empty() {
            return Err("--issuer must not be empty".into());
        }
        if self.max_token_bytes < 64 {
            return Err("--max-token-bytes must be at least 64".into());
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(format!(
                "--key-prefix {:?} must not contain {{ or }}: session keys use a {{hash tag}} of their own",
                self.key_prefix
            ));
        }
        if self.max_staleness < Duration::from_millis(5) || self.max_staleness > Duration::from_secs(60) {
            return Err("--max-staleness must be between 5ms and 60s".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
        }
        if self.require_caller_auth && self.clients_file.is_none() {
            return Err("--require-caller-auth needs --clients-file (create one with `revokd client add`)".into());
        }
        for (flag, addr) in [
            ("--grpc-addr", self.grpc_addr.clone()),
            ("--http-addr", ListenAddr::Tcp(self.http_addr)),
        ] {
            if !addr.is_local() && self.clients_file.is_none() {
                return Err(format!(
                    "{flag} {addr} is not a loopback address: anyone who reaches it could issue and revoke tokens; \
                     register callers with --clients-file (create it with `revokd client add`), or listen on 127.0.0.1"
                ));
            }
        }
        let legacy = &self.legacy;
        if legacy.legacy_key_file.is_none() && (legacy.legacy_issuer.is_some() || legacy.legacy_blocklist_key.is_some())
        {
            return Err("--legacy-issuer and --legacy-blocklist-key need --legacy-key-file (migration mode)".into());
        }
        if let Some(pattern) = &legacy.legacy_blocklist_key
            && (!pattern.contains("{jti}") || self.redis_url.is_none())
        {
            return Err(format!(
                "--legacy-blocklist-key {pattern:?} must contain {{jti}} and needs --redis-url (the app's Redis)"
            ));
        }
        if self.redis_url.is_none() && (self.redis_ca_file.is_some() || self.min_replica_acks > 0) {
            return Err("--redis-ca-file and --min-replica-acks need --redis-url".into());
        }
        Ok(())
    }

    /// The Redis deployment `--redis-url` names, if any, with its password
    /// and TLS roots; a URL or CA file that cannot work is an error here.
    fn redis_target(&self) -> Result<Option<RedisTarget>, ConfigError> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        RedisTarget::parse(
            url.expose(),
            self.redis_password.as_ref().map(Secret::expose),
            self.redis_sentinel_password.as_ref().map(Secret::expose),
            self.redis_ca_file.as_deref(),
        )
        .map(Some)
        .map_err(|e| ConfigError(format!("--redis-url: {e}")))
    }

    /// A configuration for tests and embedding: loopback on port 0 for both
    /// listeners, in-memory store, ephemeral key.
    pub fn for_tests() -> Self {
        let cli = Cli::parse_from([
            "revokd",
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ]);
        match cli.command {
            Command::Serve(c) => *c,
            _ => unreachable!("parsed a serve command"),
        }
    }
}

/// Key algorithms `keygen` can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeygenAlg {
    /// Ed25519 (PKCS#8 PEM).
    #[value(name = "EdDSA")]
    EdDsa,
    /// RSA 2048 with SHA-256 (PKCS#8 PEM).
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256 (PKCS#8 PEM).
    #[value(name = "ES256")]
    Es256,
    /// HMAC with SHA-256 (a random secret).
    #[value(name = "HS256")]
    Hs256,
}

/// Arguments of `revokd keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Algorithm of the new key.
    #[arg(long, value_enum)]
    pub alg: KeygenAlg,
    /// Key id; the file is named after it.
    #[arg(long)]
    pub kid: String,
    /// Directory to write into (created if missing).
    #[arg(long, env = "REVOKD_KEYS_DIR", default_value = ".")]
    pub out: PathBuf,
}

/// Where a running revokd answers: `--addr` for gRPC.
#[derive(Debug, Clone, Args)]
pub struct Endpoint {
    /// gRPC address of a running revokd: `HOST:PORT` or `http://HOST:PORT`.
    #[arg(long, env = "REVOKD_ADDR", default_value = "127.0.0.1:50051", global = true)]
    pub addr: String,
}

/// Arguments of `revokd token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Where revokd answers.
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// What to do.
    #[command(subcommand)]
    pub action: TokenAction,
}

/// The `revokd token` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Issue a token and print it.
    Issue {
        /// The subject (`sub`).
        #[arg(long)]
        subject: String,
        /// Lifetime, e.g. 15m.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Audience; repeat for several.
        #[arg(long)]
        audience: Vec<String>,
    },
    /// Verify a token and print the verdict and claims; exits 1 unless VALID.
    Verify {
        /// The token.
        token: String,
        /// Require this audience.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Revoke a token (or a jti).
    Revoke {
        /// The token.
        #[arg(required_unless_present = "jti", conflicts_with = "jti")]
        token: Option<String>,
        /// A token id instead of a token.
        #[arg(long)]
        jti: Option<String>,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Log a subject out everywhere: revoke every token issued to it until now.
    RevokeSubject {
        /// The subject (`sub`).
        subject: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Arguments of `revokd session`.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Where revokd answers.
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// What to do.
    #[command(subcommand)]
    pub action: SessionAction,
}

/// The `revokd session` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum SessionAction {
    /// Log in: a new session, its access and refresh tokens.
    Login {
        /// The subject (`sub`).
        #[arg(long)]
        subject: String,
        /// Audience; repeat for several.
        #[arg(long)]
        audience: Vec<String>,
        /// Lifetime of the access token, e.g. 15m.
        #[arg(long, value_parser = parse_duration)]
        access_ttl: Option<Duration>,
        /// Lifetime of the refresh token, e.g. 7d.
        #[arg(long, value_parser = parse_duration)]
        refresh_ttl: Option<Duration>,
    },
    /// Trade a refresh token for a new pair (the old one is then spent).
    Refresh {
        /// The refresh token.
        refresh_token: String,
    },
    /// Log a session out: by any of its tokens, or by --session-id.
    Logout {
        /// An access or refresh token of the session.
        #[arg(required_unless_present = "session_id", conflicts_with = "session_id")]
        token: Option<String>,
        /// The session id instead of a token.
        #[arg(long)]
        session_id: Option<String>,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Arguments of `revokd status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Where revokd answers gRPC.
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Admin HTTP address of the same revokd (readiness, metrics): `HOST:PORT` or `http://HOST:PORT`.
    #[arg(long, env = "REVOKD_ADMIN_URL", default_value = "127.0.0.1:9464")]
    pub admin: String,
}

/// Arguments of `revokd client`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ClientAction,
}

/// The `revokd client` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientAction {
    /// Register a client: prints its new secret once, stores only an argon2id hash.
    Add {
        /// The clients file (created if missing).
        #[arg(long, env = "REVOKD_CLIENTS_FILE")]
        clients_file: PathBuf,
        /// The client id: 1 to 64 of A-Z a-z 0-9 _ -.
        #[arg(long)]
        id: String,
        /// What it may do; repeat for several.
        #[arg(long = "permission", value_enum, required = true)]
        permissions: Vec<crate::callers::Permission>,
        /// An audience it may issue tokens for; repeat for several (none: any).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A DNS name (or IP address) a TLS client certificate may carry to be this client
        /// (with --tls-client-ca); repeat for several.
        #[arg(long = "tls-name")]
        tls_names: Vec<String>,
    },
}

impl ServeConfig {
    /// The TLS files, when `--tls-cert` is given (validated together).
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}
