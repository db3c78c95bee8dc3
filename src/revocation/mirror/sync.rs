//! [`MirrorSync`]: keeps the mirror in step with one Redis node over a
//! connection of its own, and proves its freshness (see [`super::freshness`]).
//!
//! The connection turns on `CLIENT TRACKING ON BCAST` for the revocation
//! prefixes and this instance's heartbeat prefix, and only then SCANs every
//! key under the prefix, so a key written during the load is announced by an
//! invalidation either way. Each invalidation is answered by re-reading that
//! key (`PEXPIRETIME`, `GET`), adding or dropping it, in batches. Invalidations
//! are lost while disconnected, so the node is marked unsynced the moment the
//! connection reports an error, and rebuilt after every reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fred::clients::Client;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, TrackingInterface};
use fred::types::client::Invalidation;
use fred::types::config::Options;
use fred::types::{Expiration, Key, Value};

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::revocation::RevocationKind;
use crate::revocation::mirror::freshness::{Heartbeat, NodeState, mono_us};
use crate::revocation::mirror::table::RevocationMirror;
use crate::revocation::redis::KeyKind;
use crate::revocation::topology::RedisTarget;
use crate::tokens::now_ms;

/// Keeps a [`RevocationMirror`] in step with one Redis node over its own connection.
pub struct MirrorSync {
    client: Client,
    mirror: Arc<RevocationMirror>,
    /// This node's sync and freshness state.
    node: Arc<NodeState>,
    heartbeat: Heartbeat,
    /// How often a heartbeat is written.
    heartbeat_every: Duration,
    /// The key prefix.
    prefix: String,
    timeout: Duration,
    /// Bumped whenever the stream is lost; a resync only marks the node
    /// synced, and a heartbeat only proves freshness, if no loss happened
    /// while it ran.
    epoch: AtomicU64,
    resyncing: AtomicBool,
    /// Set when the stream is lost, cleared when the next resync starts
    /// scanning: invalidations taken off the channel meanwhile announce
    /// changes the scan will read anyway, so they are dropped unread (a burst
    /// that overflowed the channel is not re-read key by key before the scan).
    discarding: AtomicBool,
    /// Serializes [`MirrorSync::load`] (a tokio Mutex: held across the pipeline's await).
    load_lock: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

impl std::fmt::Debug for MirrorSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSync")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The tasks a [`MirrorSync`] runs; dropping it stops them.
#[derive(Debug)]
pub struct SyncTasks(Vec<tokio::task::AbortHandle>);

impl Drop for SyncTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
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
    /// Connects the mirror's own client to `target` and starts keeping
    /// `mirror` in step, with a heartbeat every `max_staleness / 5`.
    pub fn start(
        target: &RedisTarget,
        prefix: &str,
        timeout: Duration,
        max_staleness: Duration,
        mirror: Arc<RevocationMirror>,
        metrics: Metrics,
    ) -> Result<(Arc<Self>, SyncTasks), StoreError> {
        // A deep event channel: invalidations arrive in bursts.
        let client = crate::revocation::redis::client(target, timeout, 1 << 16, |c| {
            // The heartbeat is always a command to time out on a dead link.
            c.unresponsive.max_timeout = Some(timeout * 2);
            c.unresponsive.interval = Duration::from_millis(250);
        })?;
        let sync = Arc::new(MirrorSync {
            client,
            mirror,
            node: Arc::new(NodeState::new()),
            heartbeat: Heartbeat::new(prefix),
            heartbeat_every: (max_staleness / 5).max(Duration::from_millis(1)),
            prefix: prefix.to_owned(),
            timeout,
            epoch: AtomicU64::new(0),
            resyncing: AtomicBool::new(false),
            discarding: AtomicBool::new(true),
            load_lock: tokio::sync::Mutex::new(()),
            metrics,
        });
        sync.metrics.mirror_synced(false);
        sync.metrics.mirror_entries(0);
        let tasks = vec![
            tokio::spawn(sync.clone().run()).abort_handle(),
            tokio::spawn(sync.clone().apply_invalidations(sync.client.invalidation_rx())).abort_handle(),
            tokio::spawn(sync.clone().heartbeats()).abort_handle(),
            tokio::spawn(sync.clone().housekeeping()).abort_handle(),
        ];
        Ok((sync, SyncTasks(tasks)))
    }

    /// This node's sync and freshness state.
    pub fn node(&self) -> Arc<NodeState> {
        self.node.clone()
    }

    /// The client, for a Sentinel watch to move.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn lost(&self, why: &str) {
        self.discarding.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.node.mark_unsynced() {
            tracing::warn!(why, "revocation mirror unsynced");
        }
        self.metrics.mirror_synced(false);
    }

    async fn run(self: Arc<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut errors = self.client.error_rx();
        let mut reconnects = self.client.reconnect_rx();
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
    /// is applied at once. A batch holding one of this instance's heartbeats
    /// proves freshness once it, and everything that arrived with it, is applied.
    async fn apply_invalidations(self: Arc<Self>, mut invalidations: tokio::sync::broadcast::Receiver<Invalidation>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let first = match invalidations.recv().await {
                Ok(inv) => inv,
                Err(RecvError::Lagged(n)) => {
                    self.lagged(n);
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let epoch = self.epoch.load(Ordering::SeqCst);
            let mut keys: Vec<String> = first.keys.into_iter().filter_map(|k| k.into_string()).collect();
            if !self.drain(&mut invalidations, &mut keys, MAX_BATCH) {
                return;
            }
            if self.discarding.load(Ordering::SeqCst) {
                // Taken off the channel before the resync's scan began: the scan covers them.
                continue;
            }
            let mut heartbeat = self.heartbeat_in(&keys);
            if heartbeat.is_some() {
                // Redis flushes a BCAST batch prefix by prefix, and the heartbeat's
                // sorts first: changes made just before it may still be behind it.
                // A reply to a command sent now comes after all of them.
                let fence: Result<String, _> = self.client.ping(None).await;
                if let Err(e) = fence {
                    self.lost(&format!("heartbeat fence failed: {e}"));
                    continue;
                }
                if !self.drain(&mut invalidations, &mut keys, usize::MAX) {
                    return;
                }
                heartbeat = self.heartbeat_in(&keys);
            }
            let mut ok = true;
            for chunk in keys.chunks(MAX_BATCH) {
                ok &= self.refresh(chunk).await;
            }
            if let Some(sent_at) = heartbeat
                && ok
                && self.epoch.load(Ordering::SeqCst) == epoch
            {
                self.node.prove(sent_at);
            }
        }
    }

    /// Moves what has already arrived into `keys` (up to `limit`), without
    /// waiting; false once the channel is closed.
    fn drain(
        self: &Arc<Self>,
        invalidations: &mut tokio::sync::broadcast::Receiver<Invalidation>,
        keys: &mut Vec<String>,
        limit: usize,
    ) -> bool {
        use tokio::sync::broadcast::error::TryRecvError;
        while keys.len() < limit {
            match invalidations.try_recv() {
                Ok(inv) => keys.extend(inv.keys.into_iter().filter_map(|k| k.into_string())),
                Err(TryRecvError::Lagged(n)) => self.lagged(n),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return false,
            }
        }
        true
    }

    /// Changes were dropped: rebuild.
    fn lagged(self: &Arc<Self>, n: u64) {
        self.lost(&format!("{n} invalidations lagged"));
        self.trigger_resync();
    }

    /// The latest send time among this instance's heartbeats in `keys`.
    fn heartbeat_in(&self, keys: &[String]) -> Option<i64> {
        keys.iter().filter_map(|k| self.heartbeat.sent_at(k)).max()
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
                    self.node.mark_synced();
                    // A loss between the check and the mark would be overwritten: look again.
                    if self.epoch.load(Ordering::SeqCst) != epoch {
                        self.node.mark_unsynced();
                        continue;
                    }
                    self.metrics.mirror_synced(true);
                    self.metrics.mirror_resynced(self.node.last_resync_ms());
                    self.metrics.mirror_entries(self.mirror.len());
                    tracing::info!(loaded, took = ?started.elapsed(), "revocation mirror synced");
                    // Prove freshness now rather than at the next tick (with a long
                    // --max-staleness, verifies would do lookups until then).
                    self.beat(self.heartbeat_ttl_ms()).await;
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

    async fn load_all(&self) -> Result<usize, RedisError> {
        // Tracking first (re-armed from scratch), then the scan: a key written
        // during the scan is announced by an invalidation either way.
        let _ = self.client.stop_tracking().await;
        self.client
            .start_tracking(self.tracked_prefixes(), true, false, false, false)
            .await?;
        // Confirmed on: this instance's heartbeats from now on are announced.
        self.node.arm();
        // From here on the scan reads every key after any change already
        // announced, so those announcements need no re-read of their own.
        self.discarding.store(false, Ordering::SeqCst);
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
            loaded += self.load(&keys, false).await?;
            if next == "0" {
                return Ok(loaded);
            }
            cursor = next;
        }
    }

    /// The prefixes whose changes the mirror follows (session rotation state
    /// is not mirrored), and this instance's heartbeats.
    fn tracked_prefixes(&self) -> Vec<String> {
        let mut prefixes: Vec<String> = ["jti:", "sid:", "sub:"]
            .iter()
            .map(|k| format!("{}{k}", self.prefix))
            .collect();
        prefixes.push(self.heartbeat.tracked_prefix().to_owned());
        prefixes
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
    async fn load(&self, keys: &[String], measure_lag: bool) -> Result<usize, RedisError> {
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

    /// Applies a batch of invalidated keys; false if it could not be (the
    /// node is then unsynced and reconnecting).
    async fn refresh(&self, keys: &[String]) -> bool {
        let ok = match self.load(keys, true).await {
            Ok(_) => true,
            Err(e) => {
                // The key's state is unknown: the mirror cannot be trusted until rebuilt.
                self.lost(&format!("re-reading an invalidated key failed: {e}"));
                let _ = self.client.force_reconnection().await;
                false
            }
        };
        self.metrics.mirror_entries(self.mirror.len());
        ok
    }

    /// Writes a heartbeat key every `heartbeat_every` while connected; a
    /// write that fails or times out means the link is dead.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ttl_ms = self.heartbeat_ttl_ms();
        loop {
            tick.tick().await;
            self.metrics.mirror_staleness(self.node.staleness());
            if !self.client.is_connected() {
                continue;
            }
            self.beat(ttl_ms).await;
        }
    }

    /// Writes one heartbeat key, stamped with the instant it is sent.
    async fn beat(&self, ttl_ms: i64) {
        let key = self.heartbeat.key(mono_us());
        let written: Result<(), _> = self.client.set(key, 1, Some(Expiration::PX(ttl_ms)), None, false).await;
        if let Err(e) = written {
            self.lost(&format!("heartbeat failed: {e}"));
        }
    }

    /// How long a heartbeat key lives: long enough to come back through any
    /// backlog, short enough not to pile up.
    fn heartbeat_ttl_ms(&self) -> i64 {
        (self.heartbeat_every.as_millis() as i64 * 50).max(1000)
    }

    /// A resync if one is due, expiry purge and gauges.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            if self.client.is_connected() && !self.node.is_synced() {
                self.trigger_resync();
            }
            if n.is_multiple_of(40) {
                self.mirror.purge(crate::tokens::unix_seconds(SystemTime::now()));
            }
            self.metrics.mirror_entries(self.mirror.len());
        }
    }
}

/// The most keys re-read in one pipeline.
const MAX_BATCH: usize = 1024;
