//! [`MirroredStore`]: the Redis store, with verifies answered from the mirror
//! while the part of it that holds the token's keys is proven fresh (every
//! node on one node or Sentinel, the keys' slots' nodes on a cluster).

use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::revocation::feed::{Change, RevocationFeed};
use crate::revocation::mirror::freshness::Coverage;
use crate::revocation::mirror::table::RevocationMirror;
use crate::revocation::redis::RedisStore;
use crate::revocation::{RevocationKind, RevocationQuery, RevocationStore, Rotation, RotationOutcome};

/// A [`RedisStore`] answered from a [`RevocationMirror`].
pub struct MirroredStore {
    redis: Arc<RedisStore>,
    mirror: Arc<RevocationMirror>,
    /// Which parts of the mirror may answer.
    coverage: Arc<dyn Coverage>,
    max_staleness: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for MirroredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredStore")
            .field("max_staleness", &self.max_staleness)
            .field("trusted", &self.is_trusted())
            .finish_non_exhaustive()
    }
}

impl MirroredStore {
    /// Answers from `mirror` where `coverage` says its part is synced and
    /// fresher than `max_staleness`, from `redis` otherwise.
    pub fn new(
        redis: Arc<RedisStore>,
        mirror: Arc<RevocationMirror>,
        coverage: Arc<dyn Coverage>,
        max_staleness: Duration,
        metrics: Metrics,
    ) -> Self {
        MirroredStore {
            redis,
            mirror,
            coverage,
            max_staleness,
            metrics,
        }
    }

    /// Whether the whole mirror may answer now.
    pub fn is_trusted(&self) -> bool {
        self.coverage.complete(self.max_staleness)
    }
}

#[async_trait::async_trait]
impl RevocationStore for MirroredStore {
    async fn revoke(&self, kind: RevocationKind, id: &str, until: i64) -> Result<bool, StoreError> {
        // Redis first: acknowledged only once Redis has it.
        let newly = self.redis.revoke(kind, id, until).await?;
        self.mirror.insert(kind, id, until);
        Ok(newly)
    }

    async fn revoke_subject(&self, subject: &str, revoked_before_us: i64, until: i64) -> Result<(), StoreError> {
        self.redis.revoke_subject(subject, revoked_before_us, until).await?;
        self.mirror.insert_subject(subject, revoked_before_us, until);
        Ok(())
    }

    async fn current_refresh(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.redis.current_refresh(session_id).await
    }

    async fn exists_foreign(&self, key: &str) -> Result<bool, StoreError> {
        // Not mirrored: one lookup.
        self.redis.exists_foreign(key).await
    }

    async fn is_revoked(&self, q: &RevocationQuery<'_>) -> Result<bool, StoreError> {
        if !self.coverage.covers(q, self.max_staleness) {
            self.metrics.mirror_stale_lookup();
            return self.redis.is_revoked(q).await;
        }
        let hits = self.mirror.lookup(q);
        if !hits.any() {
            return Ok(false);
        }
        // A hit: rare (revoked tokens are rarely presented), so confirm it.
        match self.redis.is_revoked(q).await {
            Ok(true) => Ok(true),
            // A collision, or a deletion missed while disconnected. The entry is
            // left alone: removing it here could race a re-revocation that an
            // invalidation just added, and entries only ever err towards "present".
            Ok(false) => Ok(false),
            // The mirror says revoked and Redis cannot say otherwise: fail closed.
            Err(_) => Ok(true),
        }
    }

    async fn start_session(&self, session_id: &str, refresh_jti: &str, until: i64) -> Result<(), StoreError> {
        self.redis.start_session(session_id, refresh_jti, until).await
    }

    async fn rotate_refresh(&self, rotation: &Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let outcome = self.redis.rotate_refresh(rotation).await?;
        if outcome == RotationOutcome::Reused {
            self.mirror
                .insert(RevocationKind::Session, rotation.session_id, rotation.revoke_until);
        }
        Ok(outcome)
    }

    fn feed(&self) -> Option<&RevocationFeed> {
        Some(self.mirror.feed())
    }

    fn freshness(&self) -> Option<Duration> {
        self.is_trusted().then(|| self.coverage.staleness())
    }

    async fn snapshot(&self, out: &tokio::sync::mpsc::Sender<Vec<Change>>) -> Result<(), StoreError> {
        self.redis.snapshot(out).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Ready while the mirror is fresh (it answers verifies), else while
        // Redis answers (every primary, on a cluster).
        if self.is_trusted() {
            return Ok(());
        }
        self.redis.ping().await
    }

    fn kind(&self) -> &'static str {
        "redis+mirror"
    }
}
