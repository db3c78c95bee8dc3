//! The verified-token cache: a token's exact bytes -> its authenticated
//! claims, kept until the token's expiry (plus leeway), so a session token
//! presented on every request skips header parsing, signature work and claims
//! parsing. Only the signature-and-claims stage is cached: time window, issuer,
//! audience and revocation are checked on every verify. Bad tokens are never
//! cached, so garbage cannot crowd out good entries.
//!
//! Bounded: when a shard is full, an insert looks at a few entries (hash
//! order, i.e. effectively random): the expired ones among them go, else one.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;
use crate::prehashed::PrehashedMap;
use crate::tokens::AuthenticatedToken;

const SHARDS: usize = 16;

/// How many entries an insert into a full shard looks at to pick what to evict.
const EVICTION_SAMPLE: usize = 8;

struct Entry {
    /// The exact token, compared on every hit (the map key is only its hash).
    token: Box<str>,
    value: Arc<AuthenticatedToken>,
    /// Unix seconds after which the entry is useless.
    until: i64,
}

type Shard = PrehashedMap<Entry>;

/// A bounded map from token bytes to verified claims.
pub struct VerifiedTokenCache {
    key: RandomState,
    // std Mutex per shard: held for one map operation, never across an .await;
    // sharding keeps two cores from queueing on one lock.
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// Entries held, kept beside the shards.
    count: AtomicUsize,
    /// Bumped by every [`VerifiedTokenCache::clear`]: an authentication that
    /// began under an older key ring must not be inserted after the clear.
    generation: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for VerifiedTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokenCache").finish_non_exhaustive()
    }
}

impl VerifiedTokenCache {
    /// A cache of about `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize, metrics: Metrics) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        VerifiedTokenCache {
            key: RandomState::new(),
            shards: (0..if capacity == 0 { 0 } else { SHARDS })
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            per_shard,
            count: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(h as usize) % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached authentication of `token`, if still useful at `now`.
    pub fn get(&self, token: &str, now: i64) -> Option<Arc<AuthenticatedToken>> {
        if self.shards.is_empty() {
            return None;
        }
        let h = self.key.hash_one(token);
        let found = {
            let shard = self.shard(h);
            shard
                .get(&h)
                .filter(|e| e.until >= now && *e.token == *token)
                .map(|e| e.value.clone())
        };
        self.metrics.cache_lookup(found.is_some());
        found
    }

    /// The current generation; read it before authenticating, pass it to [`VerifiedTokenCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Remembers that `token` authenticated as `value`, until `until` (Unix
    /// seconds), unless the cache was cleared since `generation` was read.
    pub fn insert(&self, token: &str, value: Arc<AuthenticatedToken>, until: i64, now: i64, generation: u64) {
        if self.shards.is_empty() || until < now {
            return;
        }
        let h = self.key.hash_one(token);
        let mut evicted = 0;
        {
            let mut shard = self.shard(h);
            // Checked under the shard lock; clear() bumps first, then empties each shard.
            if self.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            if shard.len() >= self.per_shard && !shard.contains_key(&h) {
                // O(1), not a scan of the shard: expired entries among a few
                // (in hash order, so effectively random) go first, else the first of them.
                let sample: Vec<(u64, bool)> = shard
                    .iter()
                    .take(EVICTION_SAMPLE)
                    .map(|(k, e)| (*k, e.until < now))
                    .collect();
                let expired: Vec<u64> = sample.iter().filter(|(_, x)| *x).map(|(k, _)| *k).collect();
                let victims = if expired.is_empty() {
                    sample.first().map(|(k, _)| vec![*k]).unwrap_or_default()
                } else {
                    expired
                };
                for k in &victims {
                    shard.remove(k);
                }
                evicted = victims.len();
            }
            let replaced = shard
                .insert(
                    h,
                    Entry {
                        token: token.into(),
                        value,
                        until,
                    },
                )
                .is_some();
            if !replaced {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            self.count.fetch_sub(evicted, Ordering::Relaxed);
        }
        if evicted > 0 {
            self.metrics.cache_evicted(evicted as u64);
        }
        self.metrics.cache_entries(self.len());
    }

    /// Forgets everything (after a key change).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for s in &self.shards {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            self.count.fetch_sub(shard.len(), Ordering::Relaxed);
            shard.clear();
        }
        self.metrics.cache_entries(0);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        // A counter, so the gauge needs no walk over every shard's lock.
        self.count.load(Ordering::Relaxed)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Claims;

    fn token(jti: &str) -> Arc<AuthenticatedToken> {
        Arc::new(AuthenticatedToken {
            legacy: false,
            kid: "k".into(),
            claims: Claims {
                issuer: "i".into(),
                subject: "s".into(),
                audience: vec![],
                issued_at: None,
                issued_at_us: None,
                session_id: None,
                token_use: crate::tokens::TokenUse::Access,
                not_before: None,
                expires_at: 100,
                jti: jti.into(),
                client_id: None,
                extra: Default::default(),
            },
        })
    }

    #[test]
    fn hits_until_expiry_and_exact_bytes_only() {
        let cache = VerifiedTokenCache::new(100, Metrics::new());
        cache.insert("tok-a", token("a"), 130, 50, cache.generation());
        assert_eq!(cache.get("tok-a", 130).unwrap().claims.jti, "a");
        assert!(cache.get("tok-a", 131).is_none(), "expired");
        assert!(cache.get("tok-b", 60).is_none());
        cache.clear();
        assert!(cache.get("tok-a", 60).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedTokenCache::new(64, Metrics::new());
        for i in 0..10_000 {
            cache.insert(&format!("tok-{i}"), token("x"), 1_000, 0, 0);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        // Expired entries are dropped before live ones: every shard full of expired
        // entries, one insert purges its whole shard.
        let cache = VerifiedTokenCache::new(64, Metrics::new());
        for i in 0..1_000 {
            cache.insert(&format!("old-{i}"), token("o"), 10, 0, cache.generation());
        }
        assert_eq!(cache.len(), 64);
        cache.insert("new", token("n"), 1_000, 20, 0);
        assert!(cache.get("new", 20).is_some());
        assert!(cache.len() <= 61, "{}", cache.len());
    }

    #[test]
    fn an_authentication_begun_before_a_clear_is_not_cached() {
        let cache = VerifiedTokenCache::new(100, Metrics::new());
        let before = cache.generation();
        cache.clear();
        cache.insert("old-key-token", token("a"), 1_000, 0, before);
        assert!(cache.get("old-key-token", 0).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = VerifiedTokenCache::new(0, Metrics::new());
        cache.insert("t", token("a"), 1_000, 0, 0);
        assert!(cache.get("t", 0).is_none());
    }
}
