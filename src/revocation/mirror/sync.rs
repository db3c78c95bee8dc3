//! [`MirrorSync`]: keeps the mirror in step with one Redis node over a
//! connection of its own, and proves its freshness (see [`super::freshness`]).
//! On a Redis Cluster there is one per node ([`super::cluster`]); a replica's
//! sync keeps its connection and tracking ready but is not consulted until
//! the node is promoted (then it is rescanned).
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
use fred::types::{Expiration, Key};

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::revocation::feed::ChangeKind;
use crate::revocation::mirror::freshness::{Heartbeat, NodeState, mono_us};
use crate::revocation::mirror::table::RevocationMirror;
use crate::revocation::redis::{glob_escape, read_revocations};
use crate::revocation::topology::RedisTarget;
use crate::tokens::now_ms;

/// What the syncs of one mirror share (a cluster has one sync per node).
#[derive(Debug, Clone)]
pub struct Shared {
    mirror: Arc<RevocationMirror>,
    /// This instance's heartbeat keys.
    heartbeat: Heartbeat,
    /// How often a heartbeat is written.
    heartbeat_every: Duration,
    /// The key prefix.
    prefix: String,
    timeout: Duration,
    /// Serializes [`MirrorSync::load`] across every node (a tokio Mutex: held
    /// across the pipeline's await): a read is applied before the next read is
    /// made, so an older read can never undo a newer one, even when a key
    /// moves between nodes.
    load_lock: Arc<tokio::sync::Mutex<()>>,
    metrics: Metrics,
}

impl Shared {
    /// For a mirror under `prefix` with freshness bounded by `max_staleness`.
    pub fn new(
        mirror: Arc<RevocationMirror>,
        prefix: &str,
        timeout: Duration,
        max_staleness: Duration,
        metrics: Metrics,
    ) -> Self {
        Shared {
            mirror,
            heartbeat: Heartbeat::new(prefix),
            heartbeat_every: (max_staleness / 5).max(Duration::from_millis(1)),
            prefix: prefix.to_owned(),
            timeout,
            load_lock: Arc::new(tokio::sync::Mutex::new(())),
            metrics,
        }
    }

    /// How often heartbeats are written (and a cluster's layout polled).
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_every
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// What a node is to the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The one node (single node or Sentinel master): plain heartbeat keys.
    Only,
    /// A cluster primary; its heartbeat keys carry this hash tag (one of its
    /// slots), none while it serves no slot.
    Primary(Option<String>),
    /// A cluster replica: connected and tracking, never scanned or trusted.
    Replica,
}

/// Keeps a [`RevocationMirror`] in step with one Redis node over its own connection.
pub struct MirrorSync {
    /// The node's own connection: tracking, heartbeats, scans.
    client: Client,
    /// Where invalidated keys are re-read: the node's connection, or on a
    /// cluster a routed client (a key may have moved).
    reader: Client,
    shared: Shared,
    /// This node's sync and freshness state.
    node: Arc<NodeState>,
    role: std::sync::Mutex<Role>,
    /// Whether this sync sets the mirror's gauges (a cluster's are set for all nodes at once).
    reports: bool,
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
    /// A replica's tracking is on (it has nothing else to rebuild).
    standby_armed: AtomicBool,
    /// Failed resyncs since the last success (only the first is a warning).
    resync_failures: AtomicU64,
}

impl std::fmt::Debug for MirrorSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorSync")
            .field("prefix", &self.shared.prefix)
            .field("role", &self.role())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The tasks a [`MirrorSync`] runs; dropping it stops them.
#[derive(Debug)]
pub struct SyncTasks(Vec<tokio::task::AbortHandle>);

impl SyncTasks {
    /// Tasks to stop together.
    pub fn new(tasks: Vec<tokio::task::AbortHandle>) -> Self {
        SyncTasks(tasks)
    }
}

impl Drop for SyncTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
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
        let shared = Shared::new(mirror, prefix, timeout, max_staleness, metrics);
        Self::start_node(target, shared, None, Role::Only)
    }

    /// Starts following one node of a deployment (`target` names that node
    /// alone); `reader` re-reads invalidated keys (the node's own connection
    /// if `None`). A node of a cluster (`reader` given) leaves the mirror's
    /// gauges to the cluster mirror.
    pub fn start_node(
        target: &RedisTarget,
        shared: Shared,
        reader: Option<Client>,
        role: Role,
    ) -> Result<(Arc<Self>, SyncTasks), StoreError> {
        let timeout = shared.timeout;
        // A deep event channel: invalidations arrive in bursts.
        let client = crate::revocation::redis::client(target, timeout, 1 << 16, |c| {
            // The heartbeat is always a command to time out on a dead link.
            c.unresponsive.max_timeout = Some(timeout * 2);
            c.unresponsive.interval = Duration::from_millis(250);
        })?;
        let reports = reader.is_none();
        let sync = Arc::new(MirrorSync {
            reader: reader.unwrap_or_else(|| client.clone()),
            client,
            shared,
            node: Arc::new(NodeState::new()),
            role: std::sync::Mutex::new(role),
            reports,
            epoch: AtomicU64::new(0),
            resyncing: AtomicBool::new(false),
            discarding: AtomicBool::new(true),
            standby_armed: AtomicBool::new(false),
            resync_failures: AtomicU64::new(0),
        });
        if sync.reports {
            sync.shared.metrics.mirror_synced(false);
            sync.shared.metrics.mirror_entries(0);
        }
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

    /// What the node is to the mirror now.
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node's role or slots changed (`cause`): its part of the mirror is
    /// untrusted at once, then re-armed and rescanned.
    pub fn reassign(self: &Arc<Self>, role: Role, cause: &'static str) {
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = role;
        if !self.lost(cause, cause) {
            // Counted even when the node was not synced (a replica being promoted).
            self.shared.metrics.mirror_resync(cause);
        }
        self.trigger_resync();
    }

    /// Closes the node's connection (it left the cluster).
    pub fn stop(&self) {
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.quit().await;
        });
    }

    fn is_replica(&self) -> bool {
        self.role() == Role::Replica
    }

    /// The stream was lost (`why`, counted as `cause`): untrusted until
    /// rebuilt. Returns whether the node was synced (then it was counted).
    fn lost(&self, why: &str, cause: &'static str) -> bool {
        self.discarding.store(true, Ordering::SeqCst);
        self.standby_armed.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        // Watchers start over: a deletion missed now would never be announced.
        self.shared.mirror.feed().gap();
        let was_synced = self.node.mark_unsynced();
        if was_synced {
            if matches!(cause, "role_change" | "slot_change") {
                // The layout changed (a failover, a reshard): expected, not a fault.
                tracing::info!(why, node = %self.node_name(), "revocation mirror part unsynced");
            } else {
                tracing::warn!(why, node = %self.node_name(), "revocation mirror unsynced");
            }
            self.shared.metrics.mirror_resync(cause);
        }
        if self.reports {
            self.shared.metrics.mirror_synced(false);
        }
        was_synced
    }

    /// The node's address, for logs.
    fn node_name(&self) -> String {
        self.client
            .active_connections()
            .first()
            .map(|s| format!("{}:{}", s.host, s.port))
            .unwrap_or_default()
    }

    async fn run(self: Arc<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut errors = self.client.error_rx();
        let mut reconnects = self.client.reconnect_rx();
        let _connection = self.client.connect();
        loop {
            tokio::select! {
                e = errors.recv() => match e {
                    Ok((error, _)) => {
                        self.lost(&error.to_string(), "error");
                    }
                    Err(RecvError::Lagged(_)) => {
                        self.lost("error events lagged", "error");
                    }
                    Err(RecvError::Closed) => return,
                },
                r = reconnects.recv() => match r {
                    // A new connection has no tracking yet: rebuild.
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        self.lost("reconnected", "reconnect");
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
            if self.discarding.load(Ordering::SeqCst) || self.is_replica() {
                // Taken off the channel before the resync's scan began: the scan covers
                // them. A replica's part is rescanned when it is promoted.
                continue;
            }
            let mut heartbeat = self.heartbeat_in(&keys);
            if heartbeat.is_some() {
                // Redis flushes a BCAST batch prefix by prefix, and the heartbeat's
                // sorts first: changes made just before it may still be behind it.
                // A reply to a command sent now comes after all of them.
                let fence: Result<String, _> = self.client.ping(None).await;
                if let Err(e) = fence {
                    self.lost(&format!("heartbeat fence failed: {e}"), "error");
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
        self.lost(&format!("{n} invalidations lagged"), "lagged");
        self.trigger_resync();
    }

    /// The latest send time among this instance's heartbeats in `keys`.
    fn heartbeat_in(&self, keys: &[String]) -> Option<i64> {
        keys.iter().filter_map(|k| self.shared.heartbeat.sent_at(k)).max()
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
                // A replica is armed only.
                Ok(_) if self.is_replica() => {
                    self.standby_armed
                        .store(self.epoch.load(Ordering::SeqCst) == epoch, Ordering::SeqCst);
                    return;
                }
                Ok(loaded) if self.epoch.load(Ordering::SeqCst) == epoch => {
                    self.node.mark_synced();
                    self.resync_failures.store(0, Ordering::SeqCst);
                    // A loss between the check and the mark would be overwritten: look again.
                    if self.epoch.load(Ordering::SeqCst) != epoch {
                        self.node.mark_unsynced();
                        continue;
                    }
                    if self.reports {
                        self.shared.metrics.mirror_synced(true);
                        self.shared.metrics.mirror_resynced(self.node.last_resync_ms());
                        self.shared.metrics.mirror_entries(self.shared.mirror.len());
                    }
                    tracing::info!(loaded, took = ?started.elapsed(), node = %self.node_name(), "revocation mirror synced");
                    // Prove freshness now rather than at the next tick (with a long
                    // --max-staleness, verifies would do lookups until then).
                    self.beat(self.heartbeat_ttl_ms()).await;
                    return;
                }
                Ok(_) => tracing::debug!("stream lost during resync; again"),
                Err(e) => {
                    // Once per outage at WARN: retried every 250 ms.
                    if self.resync_failures.fetch_add(1, Ordering::SeqCst) == 0 {
                        tracing::warn!(error = %e, node = %self.node_name(), "revocation mirror resync failed; retrying");
                    } else {
                        tracing::debug!(error = %e, "revocation mirror resync failed again");
                    }
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
        if self.is_replica() {
            return Ok(0);
        }
        // Confirmed on: this instance's heartbeats from now on are announced.
        self.node.arm();
        // From here on the scan reads every key after any change already
        // announced, so those announcements need no re-read of their own.
        self.discarding.store(false, Ordering::SeqCst);
        // One pass over the prefix; `load` keeps only revocation keys.
        let pattern = format!("{}*", glob_escape(&self.shared.prefix));
        let opts = Options {
            timeout: Some(self.shared.timeout * 5),
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
            .map(|k| format!("{}{k}", self.shared.prefix))
            .collect();
        prefixes.push(self.shared.heartbeat.tracked_prefix().to_owned());
        prefixes
    }

    /// Re-reads `keys` (full Redis keys) and adds or drops each; returns how
    /// many are present.
    async fn load(&self, keys: &[String], measure_lag: bool) -> Result<usize, RedisError> {
        // Reads and their application happen in one order: a resync page read
        // before a DEL+SET must not be applied after the re-read that follows the SET.
        let _serial = self.shared.load_lock.lock().await;
        let read = read_revocations(&self.reader, &self.shared.prefix, keys).await?;
        let mut present = 0;
        let now = now_ms();
        for (change, value) in &read {
            self.shared.mirror.apply(change);
            if change.until.is_some() {
                present += 1;
                // jti and sid values are the revocation time in ms when revokd wrote them.
                if measure_lag
                    && change.kind != ChangeKind::Subject
                    && let Some(revoked_ms) = value
                {
                    self.shared
                        .metrics
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
                self.lost(&format!("re-reading an invalidated key failed: {e}"), "error");
                let _ = self.client.force_reconnection().await;
                false
            }
        };
        if self.reports {
            self.shared.metrics.mirror_entries(self.shared.mirror.len());
        }
        ok
    }

    /// Writes a heartbeat key every `heartbeat_every` while connected; a
    /// write that fails or times out means the link is dead.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.shared.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ttl_ms = self.heartbeat_ttl_ms();
        loop {
            tick.tick().await;
            if self.reports {
                self.shared.metrics.mirror_staleness(self.node.staleness());
            }
            if !self.client.is_connected() {
                continue;
            }
            self.beat(ttl_ms).await;
        }
    }

    /// Writes one heartbeat key, stamped with the instant it is sent (on a
    /// cluster, in a slot of this node); none on a node that serves no slot.
    async fn beat(&self, ttl_ms: i64) {
        let key = match self.role() {
            Role::Only => self.shared.heartbeat.key(mono_us(), None),
            Role::Primary(Some(tag)) => self.shared.heartbeat.key(mono_us(), Some(&tag)),
            Role::Primary(None) | Role::Replica => return,
        };
        let written: Result<(), _> = self.client.set(key, 1, Some(Expiration::PX(ttl_ms)), None, false).await;
        if let Err(e) = written {
            self.lost(&format!("heartbeat failed: {e}"), "error");
        }
    }

    /// How long a heartbeat key lives: long enough to come back through any
    /// backlog, short enough not to pile up.
    fn heartbeat_ttl_ms(&self) -> i64 {
        (self.shared.heartbeat_every.as_millis() as i64 * 50).max(1000)
    }

    /// A resync if one is due, expiry purge and gauges.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let standby = self.is_replica() && self.standby_armed.load(Ordering::SeqCst);
            if self.client.is_connected() && !self.node.is_synced() && !standby {
                self.trigger_resync();
            }
            if self.reports {
                if n.is_multiple_of(40) {
                    self.shared.mirror.purge(crate::tokens::unix_seconds(SystemTime::now()));
                }
                self.shared.metrics.mirror_entries(self.shared.mirror.len());
            }
        }
    }
}

/// The most keys re-read in one pipeline.
const MAX_BATCH: usize = 1024;
