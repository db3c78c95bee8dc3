//! Where revocations live: the [`RevocationStore`] trait and its
//! implementations: Redis ([`redis::RedisStore`]), Redis answered from a
//! push-synced in-process mirror ([`mirror::MirroredStore`]), and in-process
//! memory ([`memory::MemoryStore`]). Which Redis (one node, Sentinel or
//! Cluster, TLS) is [`topology`]'s concern; a cluster's layout is followed by
//! [`cluster`], and [`slots`] says which node holds a key.
//!
//! Three kinds of revocation, each kept until an absolute expiry after which
//! every token it could match is dead anyway:
//! - a token id (`jti`): until the token's own `exp` plus leeway;
//! - a session (`sid`): every token of a login, access and refresh;
//! - a subject (`sub`) "revoked before" an instant: every token of the subject
//!   issued at or before it (logout everywhere).
//!
//! Refresh-token rotation needs one atomic step: [`RevocationStore::rotate_refresh`].

pub mod cluster;
pub mod diagnose;
pub mod feed;
pub mod journal;
pub mod memory;
pub mod mirror;
pub mod redis;
pub mod slots;
pub mod topology;

use crate::error::StoreError;
use crate::revocation::feed::{Change, RevocationFeed};

/// What is revoked by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationKind {
    /// A token id.
    Jti,
    /// A session id: every token of the session.
    Session,
}

/// What a verification asks of the store about one token.
#[derive(Debug, Clone, Copy)]
pub struct RevocationQuery<'a> {
    /// The token's `jti`.
    pub jti: &'a str,
    /// The token's `sid`, if it belongs to a session.
    pub session_id: Option<&'a str>,
    /// The token's `sub`.
    pub subject: &'a str,
    /// The token's `iat` in microseconds; a token without one counts as issued
    /// before any subject revocation.
    pub issued_at_us: Option<i64>,
    /// The instant of the verification (Unix seconds), read once per verify.
    pub now: i64,
}

impl RevocationQuery<'_> {
    /// Whether a subject revocation "before `revoked_before_us`" covers this token.
    pub fn covered_by_subject(&self, revoked_before_us: i64) -> bool {
        self.issued_at_us.is_none_or(|iat| iat <= revoked_before_us)
    }
}

/// One refresh-token rotation, decided atomically by the store.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    /// The session.
    pub session_id: &'a str,
    /// The jti of the refresh token presented.
    pub presented_jti: &'a str,
    /// The jti of the refresh token that replaces it.
    pub next_jti: &'a str,
    /// The new token pair, serialized, returned to a retry within the grace
    /// window (empty when there is no grace window).
    pub successor: &'a str,
    /// Now, Unix milliseconds.
    pub now_ms: i64,
    /// How long the previous refresh token may be retried, in milliseconds.
    pub grace_ms: i64,
    /// Until when the session's rotation state is kept (Unix seconds).
    pub state_until: i64,
    /// Until when a session revoked for reuse stays revoked (Unix seconds).
    pub revoke_until: i64,
}

/// What a rotation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// The presented token was the current one: the new pair is now current.
    Rotated,
    /// The presented token was the previous one, retried within the grace
    /// window: here is the successor it already got.
    Retry(String),
    /// A used refresh token was presented again: the session is now revoked.
    Reused,
    /// The session is revoked.
    SessionRevoked,
    /// The store knows no such session (expired, or never issued here).
    UnknownSession,
}

/// The revocation set, and session rotation state.
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Marks a jti or session revoked until `until` (Unix seconds). Returns
    /// whether it was newly revoked. Returns only once the store has it.
    async fn revoke(&self, kind: RevocationKind, id: &str, until: i64) -> Result<bool, StoreError>;

    /// Revokes every token of `subject` issued at or before `revoked_before_us`,
    /// kept until `until` (Unix seconds). A later instant replaces an earlier one.
    async fn revoke_subject(&self, subject: &str, revoked_before_us: i64, until: i64) -> Result<(), StoreError>;

    /// Whether the token is revoked by its jti, its session or its subject.
    async fn is_revoked(&self, query: &RevocationQuery<'_>) -> Result<bool, StoreError>;

    /// Records a new session whose current refresh token is `refresh_jti`.
    async fn start_session(&self, session_id: &str, refresh_jti: &str, until: i64) -> Result<(), StoreError>;

    /// Atomically rotates a session's refresh token (see [`Rotation`]).
    async fn rotate_refresh(&self, rotation: &Rotation<'_>) -> Result<RotationOutcome, StoreError>;

    /// The jti of session `session_id`'s current refresh token, if the session
    /// is known and live (introspection: only that refresh token is active).
    async fn current_refresh(&self, session_id: &str) -> Result<Option<String>, StoreError>;

    /// Whether `key`, a key revokd does not own (migration mode: the app's old
    /// blocklist), exists. Stores without such keys answer false.
    async fn exists_foreign(&self, _key: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The feed this store announces every change of the revocation set on
    /// (WatchRevocations); `None`: not offered (`--revocation-check redis`).
    fn feed(&self) -> Option<&RevocationFeed> {
        None
    }

    /// How stale the set the feed follows may be now (every revocation
    /// acknowledged longer ago than that has been announced); `None` while
    /// that is not proven.
    fn freshness(&self) -> Option<std::time::Duration> {
        None
    }

    /// Sends every live revocation into `out`, page by page (for a watcher
    /// subscribed to [`RevocationStore::feed`] first).
    async fn snapshot(&self, _out: &tokio::sync::mpsc::Sender<Vec<Change>>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the store can be reached.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `redis`, `redis+mirror` or `memory`, for logs.
    fn kind(&self) -> &'static str;
}
