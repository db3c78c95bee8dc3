//! revokd: a token revocation sidecar.
//!
//! Application backends call revokd over gRPC to issue JWTs at login, to verify
//! them on every request and to revoke them at logout. Revoked token ids live
//! in Redis until the token would have expired anyway.
//!
//! # Layout
//!
//! - [`config`]: command line and `REVOKD_*` environment (clap), validation.
//! - [`keys`]: key files to keys by kid; which one signs; `keygen`.
//! - [`tokens`]: issue and verify JWTs; pure, with the time passed in.
//! - [`revocation`]: the [`revocation::RevocationStore`] trait; Redis, the
//!   push-synced mirror in front of it, and memory.
//! - [`cache`]: the verified-token cache (token bytes to verified claims).
//! - [`prehashed`]: maps keyed by keyed hashes (mirror, cache).
//! - [`authority`]: issue, verify, revoke: tokens, cache and store; audit events.
//! - [`service`]: the gRPC `TokenService`: decode, call the authority, encode.
//! - [`error`]: domain errors and their one mapping to gRPC statuses.
//! - [`metrics`]: Prometheus metric names and handles.
//! - [`admin`]: admin HTTP (`/healthz`, `/readyz`, `/metrics`).
//! - [`server`]: bind, serve gRPC and admin, drain on shutdown.
//! - [`shutdown`]: the SIGTERM / SIGINT future.
//! - [`telemetry`]: logging setup.
//! - [`client`]: the `revokd token` command line client.
//! - [`proto`]: generated code and well-known-type conversions.

pub mod admin;
pub mod authority;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod prehashed;
pub mod proto;
pub mod revocation;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tokens;
