//! The revocation mirror: every live revocation under the prefix, held in
//! this process, so VerifyToken needs no Redis round trip in steady state.
//!
//! **What is held.** A keyed 64-bit hash of each revoked jti (SipHash-1-3 with
//! a per-process random key) and its expiry: 16 bytes of payload per entry,
//! about 36 bytes with the hash table's overhead. A hit is confirmed against
//! Redis before it counts, so a hash collision (or an entry whose key was
//! deleted while the stream was down) costs one lookup, never a wrong verdict.
//! A miss is answered locally.
//!
//! **How it stays complete** ([`MirrorSync`]). A dedicated RESP3 connection
//! turns on `CLIENT TRACKING ON BCAST PREFIX <prefix>jti:` and only then SCANs
//! every key under the prefix, so a key written during the load is announced
//! by an invalidation either way. Redis pushes an invalidation for every
//! change under the prefix, by any client (set, delete, expire); each one is
//! answered by re-reading that key (`EXPIRETIME`), adding or dropping it.
//! Invalidations are lost while disconnected, so the mirror is marked
//! unsynced the moment the connection drops, and rebuilt after every reconnect.
//!
//! **While unsynced** [`MirroredStore`] asks Redis on every verify (and
//! answers UNAVAILABLE if Redis cannot be reached), except within
//! `--stale-grace` of losing the stream, when the last synced mirror still
//! answers.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use fred::types::RespVersion;

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::revocation::RevocationStore;
use crate::revocation::redis::RedisStore;

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashedMap = HashMap<u64, i64, BuildHasherDefault<Prehashed>>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The in-process set of revoked jtis (as keyed hashes) with their expiries.
pub struct RevocationMirror {
    key: RandomState,
    // RwLock: lookups (every verify) share it; writes are rare (one per revocation).
    entries: RwLock<HashedMap>,
    synced: AtomicBool,
    /// When the mirror last stopped being synced (Unix ms); 0 if never synced.
    unsynced_since_ms: AtomicI64,
    /// When the last full resync finished (Unix ms).
    last_resync_ms: AtomicI64,
}

impl Default for RevocationMirror {
    fn default() -> Self {
        Self::new()
    }
}

impl RevocationMirror {
    /// An empty, unsynced mirror with a fresh random hash key.
    pub fn new() -> Self {
        RevocationMirror {
            key: RandomState::new(),
            entries: RwLock::new(HashedMap::default()),
            synced: AtomicBool::new(false),
            unsynced_since_ms: AtomicI64::new(0),
            last_resync_ms: AtomicI64::new(0),
        }
    }

    fn hash(&self, jti: &str) -> u64 {
        self.key.hash_one(jti)
    }

    /// Records `jti` as revoked until `until` (Unix seconds).
    pub fn insert(&self, jti: &str, until: i64) {
        let h = self.hash(jti);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let slot = entries.entry(h).or_insert(until);
        *slot = (*slot).max(until);
    }

    /// Forgets `jti`.
    pub fn remove(&self, jti: &str) {
        let h = self.hash(jti);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h);
    }

    /// Whether `jti` may be revoked at `now` (Unix seconds). False is certain;
    /// true must be confirmed (hash collision).
    pub fn contains(&self, jti: &str, now: i64) -> bool {
        let h = self.hash(jti);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&h).is_some_and(|until| *until > now)
    }

    /// Drops entries expired at `now`.
    pub fn purge(&self, now: i64) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }

    /// Number of entries (expired ones until purged).
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the mirror holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the table holds, by its bucket count (for the memory figure).
    pub fn table_bytes(&self) -> usize {
        let cap = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .capacity();
        if cap == 0 {
            return 0;
        }
        // hashbrown keeps at most 7/8 of its power-of-two buckets full, one control byte each.
        let buckets = (cap * 8 / 7).next_power_of_two();
        buckets * (std::mem::size_of::<(u64, i64)>() + 1)
    }

    /// Whether every change under the prefix is being received.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Whether the mirror may answer: synced, or unsynced for less than `stale_grace`.
    pub fn is_trusted(&self, stale_grace: Duration) -> bool {
        if self.is_synced() {
            return true;
        }
        let since = self.unsynced_since_ms.load(Ordering::SeqCst);
        since > 0 && !stale_grace.is_zero() && now_ms() - since < stale_grace.as_millis() as i64
    }

    /// Marks the mirror complete (after a full load with tracking on).
    pub fn mark_synced(&self) {
        self.last_resync_ms.store(now_ms(), Ordering::SeqCst);
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Marks the mirror incomplete (stream lost); returns whether it was synced.
    pub fn mark_unsynced(&self) -> bool {
        let was = self.synced.swap(false, Ordering::SeqCst);
        if was {
            self.unsynced_since_ms.store(now_ms(), Ordering::SeqCst);
        }
        was
    }

    /// When the last full resync finished (Unix ms, 0 if never).
    pub fn last_resync_ms(&self) -> i64 {
        self.last_resync_ms.load(Ordering::SeqCst)
    }
}

/// A [`RedisStore`] answered from a [`RevocationMirror`].
pub struct MirroredStore {
    redis: Arc<RedisStore>,
    mirror: Arc<RevocationMirror>,
    stale_grace: Duration,
}

impl MirroredStore {
    /// Answers from `mirror` while it is trusted, from `redis` otherwise.
    pub fn new(
        redis: Arc<RedisStore>,
        mirror: Arc<RevocationMirror>,
        stale_grace: Duration,
    ) -> Self {
        MirroredStore {
            redis,
            mirror,
            stale_grace,
        }
    }
}

#[async_trait::async_trait]
impl RevocationStore for MirroredStore {
    async fn revoke(&self, jti: &str, until: i64) -> Result<bool, StoreError> {
        // Redis first: acknowledged only once Redis has it.
        let newly = self.redis.revoke(jti, until).await?;
        self.mirror.insert(jti, until);
        Ok(newly)
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        if !self.mirror.is_trusted(self.stale_grace) {
            return self.redis.is_revoked(jti).await;
        }
        let now = crate::tokens::unix_seconds(SystemTime::now());
        if !self.mirror.contains(jti, now) {
            return Ok(false);
        }
        // A hit: rare (revoked tokens are rarely presented), so confirm it.
        match self.redis.is_revoked(jti).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.mirror.remove(jti);
                Ok(false)
            }
            // The mirror says revoked and Redis cannot say otherwise: fail closed.
            Err(_) => Ok(true),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }

    fn kind(&self) -> &'static str {
        "redis+mirror"
    }
}

/// Keeps a [`RevocationMirror`] in step with Redis over its own connection.
pub struct MirrorSync {
    client: Client,
    mirror: Arc<RevocationMirror>,
    /// `<prefix>jti:`.
    jti_prefix: String,
    timeout: Duration,
    /// Bumped whenever the stream is lost; a resync only marks the mirror
    /// synced if no loss happened while it ran.
    epoch: AtomicU64,
    resyncing: AtomicBool,
    metrics: Metrics,
}

/// Escapes glob characters for a SCAN MATCH pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl MirrorSync {
    /// Connects the mirror's own client and starts keeping `mirror` in step.
    pub fn start(
        url: &str,
        prefix: &str,
        timeout: Duration,
        mirror: Arc<RevocationMirror>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, StoreError> {
        let mut config =
            Config::from_url(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        config.version = RespVersion::RESP3;
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.max_command_attempts = 1;
                // With the heartbeat below there is always a command to time out on a dead link.
                c.unresponsive.max_timeout = Some(timeout * 2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
                p.broadcast_channel_capacity = 1 << 16;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 1_000, 2))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let sync = Arc::new(MirrorSync {
            client,
            mirror,
            jti_prefix: format!("{prefix}jti:"),
            timeout,
            epoch: AtomicU64::new(0),
            resyncing: AtomicBool::new(false),
            metrics,
        });
        let s = sync.clone();
        tokio::spawn(async move { s.run().await });
        let s = sync.clone();
        tokio::spawn(async move { s.housekeeping().await });
        Ok(sync)
    }

    fn lost(&self, why: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.mirror.mark_unsynced() {
            tracing::warn!(why, "revocation mirror unsynced");
        }
        self.metrics.mirror_synced(false);
    }

    async fn run(self: Arc<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut errors = self.client.error_rx();
        let mut reconnects = self.client.reconnect_rx();
        let mut invalidations = self.client.invalidation_rx();
        let _connection = self.client.connect();
        loop {
            tokio::select! {
                e = errors.recv() => match e {
                    Ok((error, _)) => self.lost(&error.to_string()),
                    Err(RecvError::Lagged(_)) => self.lost("error events lagged"),
                    Err(RecvError::Closed) => return,
                },
                r = reconnects.recv() => match r {
                    // A new connection has no tracking yet: rebuild.
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        self.lost("reconnected");
                        self.trigger_resync();
                    }
                    Err(RecvError::Closed) => return,
                },
                i = invalidations.recv() => match i {
                    Ok(inv) => {
                        let keys: Vec<String> = inv.keys.into_iter().filter_map(|k| k.into_string()).collect();
                        let s = self.clone();
                        tokio::spawn(async move { s.refresh(keys).await });
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Changes were dropped: rebuild.
                        self.lost(&format!("{n} invalidations lagged"));
                        self.trigger_resync();
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// Starts a resync unless one is running (which then retries on its own).
    fn trigger_resync(self: &Arc<Self>) {
        if self.resyncing.swap(true, Ordering::SeqCst) {
            return;
        }
        let s = self.clone();
        tokio::spawn(async move {
            s.resync().await;
            s.resyncing.store(false, Ordering::SeqCst);
        });
    }

    /// Tracking on, then a full SCAN; synced only if the stream stayed up
    /// meanwhile, else again while connected.
    async fn resync(&self) {
        while self.client.is_connected() {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let started = std::time::Instant::now();
            match self.load_all().await {
                Ok(loaded) if self.epoch.load(Ordering::SeqCst) == epoch => {
                    self.mirror.mark_synced();
                    self.metrics.mirror_synced(true);
                    self.metrics.mirror_resynced(self.mirror.last_resync_ms());
                    self.metrics.mirror_entries(self.mirror.len());
                    tracing::info!(loaded, took = ?started.elapsed(), "revocation mirror synced");
                    return;
                }
                Ok(_) => tracing::debug!("stream lost during resync; again"),
                Err(e) => {
                    tracing::warn!(error = %e, "revocation mirror resync failed");
                    return;
                }
            }
        }
    }

    async fn load_all(&self) -> Result<usize, Error> {
        // Tracking first (re-armed from scratch), then the scan: a key written
        // during the scan is announced by an invalidation either way.
        let _ = self.client.stop_tracking().await;
        self.client
            .start_tracking(vec![self.jti_prefix.clone()], true, false, false, false)
            .await?;
        let pattern = format!("{}*", glob_escape(&self.jti_prefix));
        let opts = Options {
            timeout: Some(self.timeout * 5),
            ..Default::default()
        };
        let mut cursor = "0".to_string();
        let mut loaded = 0;
        loop {
            let (next, keys): (String, Vec<Key>) = self
                .client
                .with_options(&opts)
                .scan_page(cursor, pattern.clone(), Some(1000), None)
                .await?;
            let keys: Vec<String> = keys.into_iter().filter_map(|k| k.into_string()).collect();
            loaded += self.load(keys, false).await?;
            if next == "0" {
                return Ok(loaded);
            }
            cursor = next;
        }
    }

    /// Re-reads `keys` (full Redis keys) and adds or drops each.
    async fn load(&self, keys: Vec<String>, measure_lag: bool) -> Result<usize, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let pipeline = self.client.pipeline();
        for k in &keys {
            let _: () = pipeline.expire_time(k.as_str()).await?;
            if measure_lag {
                let _: () = pipeline.get(k.as_str()).await?;
            }
        }
        let replies: Vec<Value> = pipeline.all().await?;
        let per_key = if measure_lag { 2 } else { 1 };
        let mut present = 0;
        let now = now_ms();
        for (key, chunk) in keys.iter().zip(replies.chunks(per_key)) {
            let Some(jti) = key.strip_prefix(&self.jti_prefix) else {
                continue;
            };
            match chunk[0].as_i64() {
                // -2: gone (deleted or expired).
                Some(-2) | None => self.mirror.remove(jti),
                // -1: no expiry (written by hand without EXAT): revoked for good.
                Some(-1) => {
                    self.mirror.insert(jti, i64::MAX);
                    present += 1;
                }
                Some(until) => {
                    self.mirror.insert(jti, until);
                    present += 1;
                }
            }
            // The value is the revocation time in ms when revokd wrote it.
            if measure_lag && let Some(revoked_ms) = chunk.get(1).and_then(|v| v.as_i64()) {
                self.metrics
                    .propagation(Duration::from_millis((now - revoked_ms).max(0) as u64));
            }
        }
        Ok(present)
    }

    async fn refresh(&self, keys: Vec<String>) {
        if let Err(e) = self.load(keys, true).await {
            // The key's state is unknown: the mirror cannot be trusted until rebuilt.
            self.lost(&format!("re-reading an invalidated key failed: {e}"));
            let _ = self.client.force_reconnection().await;
        }
        self.metrics.mirror_entries(self.mirror.len());
    }

    /// Heartbeat (so a dead link is noticed), a resync if one is due, expiry
    /// purge and gauges.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            if self.client.is_connected() {
                if !self.mirror.is_synced() {
                    self.trigger_resync();
                }
                if n.is_multiple_of(4) {
                    let _: Result<String, _> = self.client.ping(None).await;
                }
            }
            if n.is_multiple_of(40) {
                self.mirror
                    .purge(crate::tokens::unix_seconds(SystemTime::now()));
            }
            self.metrics.mirror_entries(self.mirror.len());
        }
    }
}
