//! Where revocations live: the [`RevocationStore`] trait and its
//! implementations: Redis ([`redis::RedisStore`]), Redis answered from a
//! push-synced in-process mirror ([`mirror::MirroredStore`]), and in-process
//! memory ([`memory::MemoryStore`]).
//!
//! A revocation is a token id (jti) kept until an absolute expiry: the token's
//! own `exp` plus the verify leeway, after which the token is dead anyway.

pub mod memory;
pub mod mirror;
pub mod redis;

use crate::error::StoreError;

/// A set of revoked token ids, each kept until its own expiry.
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Marks `jti` revoked until `until` (Unix seconds). Returns whether it was
    /// newly revoked (false when it already was). Returns only once the store
    /// has it.
    async fn revoke(&self, jti: &str, until: i64) -> Result<bool, StoreError>;

    /// Whether `jti` is revoked now.
    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    /// Whether the store can be reached.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `redis` or `memory`, for logs and metrics.
    fn kind(&self) -> &'static str;
}
