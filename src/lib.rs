//! revokd: a token revocation sidecar.
//!
//! Application backends call revokd over gRPC to issue JWTs at login, to verify
//! them on every request and to revoke them at logout. Revoked token ids live
//! in Redis until the token would have expired anyway.
//!
//! # Layout
//!
//! - [`config`]: command line and `REVOKD_*` environment (clap), validation.
//! - [`keys`]: key files to keys by kid; which one signs (`mod.rs`); PEM
//!   parsing (`pem`), `keygen`, reload on change (`watch`), the typed JWK Set
//!   (`jwk`) that the JWKS endpoint and GetJwks both serve.
//! - [`tokens`]: issue and verify JWTs; pure, with the time passed in.
//! - [`revocation`]: the [`revocation::RevocationStore`] trait; Redis (with
//!   replica acknowledgements and the replay journal), the push-synced mirror
//!   in front of it (table, sync, freshness proof), memory; and `topology`:
//!   which Redis (URL, TLS, Sentinel watch).
//! - [`cache`]: the verified-token cache (token bytes to verified claims).
//! - [`callers`]: who may call what: the client registry (`--clients-file`),
//!   caller credentials, permissions, `revokd client add`.
//! - [`prehashed`]: maps keyed by keyed hashes (mirror, cache).
//! - [`clock`]: the time source, read once per call; fixed in unit tests.
//! - [`authority`]: issue, verify, revoke: tokens, cache and store; audit events.
//! - [`sessions`]: login, refresh rotation, logout, logout everywhere.
//! - [`service`]: the gRPC `TokenService`: one wrapper (span, error, metric) per call.
//! - [`error`]: domain errors and their one mapping to gRPC statuses.
//! - [`metrics`]: Prometheus metric names and handles.
//! - [`authz`]: one allow/deny decision for proxies, from a request's headers;
//!   served as Envoy's ext_authz ([`ext_authz`]) and as HTTP forward-auth
//!   (`http_api`, the `--http-addr` listener).
//! - `oauth`: RFC 7009 `/revoke` and RFC 7662 `/introspect` on the HTTP API listener.
//! - [`admin`]: admin HTTP (`/healthz`, `/readyz`, `/metrics`).
//! - [`http_serve`]: how the HTTP listeners are served: a connection cap,
//!   header and connection-age deadlines.
//! - [`server`]: bind, serve gRPC and admin, drain on shutdown.
//! - [`shutdown`]: the SIGTERM / SIGINT future.
//! - [`tls`]: TLS for the gRPC and HTTP API listeners: certificate reload, mTLS.
//! - [`telemetry`]: logging setup.
//! - [`client`]: the `revokd token` command line client.
//! - [`proto`]: generated code; request decoding (`TryFrom`) and answer
//!   encoding (`From`) for every RPC.
//! - `fuzzing`: the bodies of the fuzz targets (`fuzz/`), replayed by a test.

/// The commit revokd was built from (`REVOKD_GIT_SHA` at build time, else
/// `git`), or "unknown".
pub const GIT_SHA: &str = env!("REVOKD_GIT_SHA");

/// What `revokd --version` prints after the name: the crate version and the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("REVOKD_GIT_SHA"), ")");

pub(crate) mod admin;
pub mod authority;
pub mod authz;
pub mod cache;
pub mod callers;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod ext_authz;
#[doc(hidden)]
pub mod fuzzing;
pub mod http_api;
pub mod http_serve;
pub mod keys;
pub mod metrics;
pub(crate) mod oauth;
pub(crate) mod prehashed;
pub mod proto;
pub mod revocation;
pub mod server;
pub(crate) mod service;
pub mod sessions;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub(crate) mod watch;
