//! The revocation mirror: every live revocation under the prefix, held in
//! this process, so VerifyToken needs no Redis round trip in steady state.
//!
//! **What is held.** A keyed 64-bit hash of each revoked jti, session and
//! subject (SipHash-1-3 with a per-process random key) and its expiry (and,
//! for a subject, the "revoked before" instant): 16 bytes of payload per jti,
//! about 36 bytes with the hash table's overhead. A hit is confirmed against
//! Redis before it counts, so a hash collision (or an entry whose key was
//! deleted while the stream was down) costs one lookup, never a wrong verdict.
//! A miss is answered locally.
//!
//! **How it stays complete** ([`MirrorSync`]). A dedicated RESP3 connection
//! turns on `CLIENT TRACKING ON BCAST PREFIX <prefix>jti: PREFIX <prefix>sid:
//! PREFIX <prefix>sub:` and only then SCANs every key under the prefix, so a key written during the load is announced
//! by an invalidation either way. Redis pushes an invalidation for every
//! change under the prefix, by any client (set, delete, expire); each one is
//! answered by re-reading that key (`EXPIRETIME`, `GET`), adding or dropping it.
//! Invalidations are lost while disconnected, so the mirror is marked
//! unsynced the moment the connection drops, and rebuilt after every reconnect.
//!
//! **While unsynced** [`MirroredStore`] asks Redis on every verify (and
//! answers UNAVAILABLE if Redis cannot be reached), except within
//! `--stale-grace` of losing the stream, when the last synced mirror still
//! answers.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use fred::prelude::*;
use fred::types::client::Invalidation;

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::prehashed::PrehashedMap;
use crate::revocation::redis::{KeyKind, RedisStore};
use crate::revocation::{RevocationKind, RevocationQuery, RevocationStore, Rotation, RotationOutcome};
use crate::tokens::now_ms;

type HashedMap = PrehashedMap<i64>;

/// The in-process copy of every live revocation: jtis, sessions and
/// subjects, each as a keyed hash with its expiry.
pub struct RevocationMirror {
    key: RandomState,
    // RwLock: lookups (every verify) share it; writes are rare (one per revocation).
    entries: RwLock<Entries>,
    synced: AtomicBool,
    /// When the mirror last stopped being synced (Unix ms); 0 if never synced.
    unsynced_since_ms: AtomicI64,
    /// When the last full resync finished (Unix ms).
    last_resync_ms: AtomicI64,
}

#[derive(Default)]
struct Entries {
    /// hash(jti) -> until (Unix seconds).
    jti: HashedMap,
    /// hash(sid) -> until.
    sid: HashedMap,
    /// hash(subject) -> (revoked before, µs; until).
    sub: PrehashedMap<(i64, i64)>,
}

/// Which revocations of a query the mirror holds (all must be confirmed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MirrorHits {
    /// The jti.
    pub jti: bool,
    /// The session.
    pub session: bool,
    /// The subject (revoked before the token's iat).
    pub subject: bool,
}

impl MirrorHits {
    /// Whether anything matched.
    pub fn any(self) -> bool {
        self.jti || self.session || self.subject
    }
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
            entries: RwLock::new(Entries::default()),
            synced: AtomicBool::new(false),
            unsynced_since_ms: AtomicI64::new(0),
            last_resync_ms: AtomicI64::new(0),
        }
    }

    fn hash(&self, id: &str) -> u64 {
        self.key.hash_one(id)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a revoked jti or session until `until` (Unix seconds).
    pub fn insert(&self, kind: RevocationKind, id: &str, until: i64) {
        let h = self.hash(id);
        let mut e = self.write();
        let map = match kind {
            RevocationKind::Jti => &mut e.jti,
            RevocationKind::Session => &mut e.sid,
        };
        let slot = map.entry(h).or_insert(until);
        *slot = (*slot).max(until);
    }

    /// Records a subject revoked before `before_us`, until `until`.
    pub fn insert_subject(&self, subject: &str, before_us: i64, until: i64) {
        let h = self.hash(subject);
        let mut e = self.write();
        let slot = e.sub.entry(h).or_insert((before_us, until));
        *slot = (slot.0.max(before_us), slot.1.max(until));
    }

    /// Forgets a jti or session.
    pub fn remove(&self, kind: RevocationKind, id: &str) {
        let h = self.hash(id);
        let mut e = self.write();
        match kind {
            RevocationKind::Jti => e.jti.remove(&h),
            RevocationKind::Session => e.sid.remove(&h),
        };
    }

    /// Forgets a subject revocation.
    pub fn remove_subject(&self, subject: &str) {
        let h = self.hash(subject);
        self.write().sub.remove(&h);
    }

    /// Which revocations may apply to the token at `q.now`. No hit
    /// is certain; a hit must be confirmed (hash collision, or a deletion
    /// missed while disconnected).
    pub fn lookup(&self, q: &RevocationQuery<'_>) -> MirrorHits {
        let now = q.now;
        let jti = self.hash(q.jti);
        let sid = q.session_id.map(|s| self.hash(s));
        let sub = self.hash(q.subject);
        let e = self.read();
        MirrorHits {
            jti: e.jti.get(&jti).is_some_and(|until| *until > now),
            session: sid.is_some_and(|h| e.sid.get(&h).is_some_and(|until| *until > now)),
            subject: e
                .sub
                .get(&sub)
                .is_some_and(|(before, until)| *until > now && q.covered_by_subject(*before)),
        }
    }

    /// Drops entries expired at `now`.
    pub fn purge(&self, now: i64) {
        let mut e = self.write();
        e.jti.retain(|_, until| *until > now);
        e.sid.retain(|_, until| *until > now);
        e.sub.retain(|_, (_, until)| *until > now);
    }

    /// Number of entries of every kind (expired ones until purged).
    pub fn len(&self) -> usize {
        let e = self.read();
        e.jti.len() + e.sid.len() + e.sub.len()
    }

    /// Whether the mirror holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    pub fn new(redis: Arc<RedisStore>, mirror: Arc<RevocationMirror>, stale_grace: Duration) -> Self {
        MirroredStore {
            redis,
            mirror,
            stale_grace,
        }
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

    async fn is_revoked(&self, q: &RevocationQuery<'_>) -> Result<bool, StoreError> {
        if !self.mirror.is_trusted(self.stale_grace) {
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
    /// The key prefix.
    prefix: String,
    timeout: Duration,
    /// Bumped whenever the stream is lost; a resync only marks the mirror
    /// synced if no loss happened while it ran.
    epoch: AtomicU64,
    resyncing: AtomicBool,
    /// Serializes [`MirrorSync::load`] (a tokio Mutex: held across the pipeline's await).
    load_lock: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

/// The kinds of keys the mirror holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mirrored {
    Jti,
    Session,
    Subject,
}

impl Mirrored {
    fn key_kind(self) -> KeyKind {
        match self {
            Mirrored::Jti => KeyKind::Jti,
            Mirrored::Session => KeyKind::Session,
            Mirrored::Subject => KeyKind::Subject,
        }
    }
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
        // A deep event channel: invalidations arrive in bursts.
        let client = crate::revocation::redis::client(url, timeout, 1 << 16, |c| {
            // With the heartbeat below there is always a command to time out on a dead link.
            c.unresponsive.max_timeout = Some(timeout * 2);
            c.unresponsive.interval = Duration::from_millis(250);
        })?;
        let sync = Arc::new(MirrorSync {
            client,
            mirror,
            prefix: prefix.to_owned(),
            timeout,
            epoch: AtomicU64::new(0),
            resyncing: AtomicBool::new(false),
            load_lock: tokio::sync::Mutex::new(()),
            metrics,
        });
        sync.metrics.mirror_synced(false);
        sync.metrics.mirror_entries(0);
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
        let s = self.clone();
        tokio::spawn(s.apply_invalidations(self.client.invalidation_rx()));
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
            }
        }
    }

    /// Applies invalidations in batches: whatever arrived while the previous
    /// batch was being re-read goes into the next pipeline, so a burst of
    /// revocations costs a few round trips and bounded memory, and a lone one
    /// is applied at once.
    async fn apply_invalidations(self: Arc<Self>, mut invalidations: tokio::sync::broadcast::Receiver<Invalidation>) {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        const MAX_BATCH: usize = 1024;
        let lagged = |s: &Arc<Self>, n: u64| {
            // Changes were dropped: rebuild.
            s.lost(&format!("{n} invalidations lagged"));
            s.trigger_resync();
        };
        loop {
            let mut keys: Vec<String> = match invalidations.recv().await {
                Ok(inv) => inv.keys.into_iter().filter_map(|k| k.into_string()).collect(),
                Err(RecvError::Lagged(n)) => {
                    lagged(&self, n);
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            while keys.len() < MAX_BATCH {
                match invalidations.try_recv() {
                    Ok(inv) => keys.extend(inv.keys.into_iter().filter_map(|k| k.into_string())),
                    Err(TryRecvError::Lagged(n)) => lagged(&self, n),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return,
                }
            }
            self.refresh(keys).await;
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
                    // A loss between the check and the mark would be overwritten: look again.
                    if self.epoch.load(Ordering::SeqCst) != epoch {
                        self.mirror.mark_unsynced();
                        continue;
                    }
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
            .start_tracking(self.tracked_prefixes(), true, false, false, false)
            .await?;
        // One pass over the prefix; `load` keeps only revocation keys.
        let pattern = format!("{}*", glob_escape(&self.prefix));
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

    /// The prefixes whose changes the mirror follows (session rotation state is not mirrored).
    fn tracked_prefixes(&self) -> Vec<String> {
        ["jti:", "sid:", "sub:"]
            .iter()
            .map(|k| format!("{}{k}", self.prefix))
            .collect()
    }

    /// What a full Redis key is, for the mirror.
    fn classify<'k>(&self, key: &'k str) -> Option<(Mirrored, &'k str)> {
        let rest = key.strip_prefix(&self.prefix)?;
        if let Some(jti) = rest.strip_prefix("jti:") {
            Some((Mirrored::Jti, jti))
        } else if let Some(sid) = rest.strip_prefix("sid:{").and_then(|r| r.strip_suffix('}')) {
            Some((Mirrored::Session, sid))
        } else {
            rest.strip_prefix("sub:").map(|sub| (Mirrored::Subject, sub))
        }
    }

    /// Re-reads `keys` (full Redis keys) and adds or drops each; returns how
    /// many are present.
    async fn load(&self, keys: Vec<String>, measure_lag: bool) -> Result<usize, Error> {
        // Reads and their application happen in one order: a resync page read
        // before a DEL+SET must not be applied after the re-read that follows the SET.
        let _serial = self.load_lock.lock().await;
        let keys: Vec<(Mirrored, String)> = keys
            .iter()
            .filter_map(|k| self.classify(k).map(|(kind, id)| (kind, id.to_owned())))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let pipeline = self.client.pipeline();
        for (kind, id) in &keys {
            let full = crate::revocation::redis::key(&self.prefix, kind.key_kind(), id);
            // Milliseconds: a hand-written sub-second expiry must not round down.
            let _: () = pipeline.pexpire_time(full.as_str()).await?;
            let _: () = pipeline.get(full.as_str()).await?;
        }
        let replies: Vec<Value> = pipeline.all().await?;
        let mut present = 0;
        let now = now_ms();
        for ((kind, id), pair) in keys.iter().zip(replies.chunks(2)) {
            let until = match pair[0].as_i64() {
                // -2: gone (deleted or expired).
                Some(-2) | None => None,
                // -1: no expiry (written by hand without EXAT): revoked for good.
                Some(-1) => Some(i64::MAX),
                Some(ms) => Some(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)),
            };
            let value = pair.get(1).and_then(Value::as_i64);
            match (kind, until) {
                (Mirrored::Jti, None) => self.mirror.remove(RevocationKind::Jti, id),
                (Mirrored::Session, None) => self.mirror.remove(RevocationKind::Session, id),
                (Mirrored::Subject, None) => self.mirror.remove_subject(id),
                (Mirrored::Jti, Some(u)) => self.mirror.insert(RevocationKind::Jti, id, u),
                (Mirrored::Session, Some(u)) => self.mirror.insert(RevocationKind::Session, id, u),
                // A subject key without a readable instant revokes everything before "forever".
                (Mirrored::Subject, Some(u)) => self.mirror.insert_subject(id, value.unwrap_or(i64::MAX), u),
            }
            if until.is_some() {
                present += 1;
                // jti and sid values are the revocation time in ms when revokd wrote them.
                if measure_lag
                    && *kind != Mirrored::Subject
                    && let Some(revoked_ms) = value
                {
                    self.metrics
                        .propagation(Duration::from_millis((now - revoked_ms).max(0) as u64));
                }
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
                    // A link that died silently shows here first: stop trusting the mirror at once.
                    let pong: Result<String, _> = self.client.ping(None).await;
                    if let Err(e) = pong {
                        self.lost(&format!("heartbeat failed: {e}"));
                    }
                }
            }
            if n.is_multiple_of(40) {
                self.mirror.purge(crate::tokens::unix_seconds(SystemTime::now()));
            }
            self.metrics.mirror_entries(self.mirror.len());
        }
    }
}
