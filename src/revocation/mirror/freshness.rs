//! How fresh the mirror is, proven rather than assumed, per Redis node.
//!
//! A node's part of the mirror may answer only while it is **synced** (tracking
//! armed, then a full scan done, and no stream loss since) and **fresh**: the
//! sync task writes a heartbeat key under a tracked prefix every
//! `--max-staleness / 5`, named after the instant it was sent
//! (`<prefix>hb:<instance>:<µs>`). Redis announces that write on the tracking
//! connection after every change it executed before it (a BCAST flush can put
//! the heartbeat's prefix first, so the sync task fences with one more round
//! trip and applies what arrived before counting the heartbeat). Once that is
//! done, every revocation acknowledged before the heartbeat was sent is in
//! the mirror: the node is fresh *as of the send time*. Verify trusts the
//! mirror only while that instant is younger than `--max-staleness`; a burst
//! that backs up the invalidation stream, a silent partition or a paused
//! Redis all stop the proofs, so the mirror stops answering within the bound
//! by construction, with no timeout to tune.
//!
//! Times here are monotonic microseconds since the process started
//! ([`mono_us`]): a wall clock step can neither extend nor shorten the bound.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::revocation::RevocationQuery;
use crate::tokens::now_ms;

/// Monotonic microseconds since this process first asked (never 0).
pub fn mono_us() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(|| Instant::now() - Duration::from_micros(1));
    start.elapsed().as_micros() as i64
}

/// The sync and freshness state of one Redis node's part of the mirror.
#[derive(Debug)]
pub struct NodeState {
    synced: AtomicBool,
    /// Heartbeats sent before this instant (µs) prove nothing: tracking was
    /// not yet confirmed on for the current connection.
    armed_at: AtomicI64,
    /// The mirror holds every change acknowledged before this instant (µs); 0: none proven.
    fresh_as_of: AtomicI64,
    /// When the last full resync finished (Unix ms).
    last_resync_ms: AtomicI64,
    /// When this state was created (µs), for the age of a never-fresh node.
    created: i64,
}

impl Default for NodeState {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeState {
    /// Unsynced and unproven.
    pub fn new() -> Self {
        NodeState {
            synced: AtomicBool::new(false),
            armed_at: AtomicI64::new(i64::MAX),
            fresh_as_of: AtomicI64::new(0),
            last_resync_ms: AtomicI64::new(0),
            created: mono_us(),
        }
    }

    /// Whether every change under the prefix is being received.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Whether this node's part of the mirror may answer: synced, and proven
    /// complete as of less than `max_staleness` ago.
    pub fn is_trusted(&self, max_staleness: Duration) -> bool {
        if !self.is_synced() {
            return false;
        }
        let fresh = self.fresh_as_of.load(Ordering::SeqCst);
        fresh > 0
            && fresh > self.armed_at.load(Ordering::SeqCst)
            && mono_us() - fresh < max_staleness.as_micros() as i64
    }

    /// Tracking was just confirmed on: heartbeats sent from now on prove freshness.
    pub fn arm(&self) {
        self.fresh_as_of.store(0, Ordering::SeqCst);
        self.armed_at.store(mono_us(), Ordering::SeqCst);
    }

    /// A heartbeat sent at `sent_at` came back and everything before it is
    /// applied. Returns whether it counted.
    pub fn prove(&self, sent_at: i64) -> bool {
        // Strictly after: a heartbeat stamped in the same microsecond may have been sent first.
        if sent_at <= self.armed_at.load(Ordering::SeqCst) {
            return false;
        }
        self.fresh_as_of.fetch_max(sent_at, Ordering::SeqCst);
        true
    }

    /// How long since the last proof (since creation if none).
    pub fn staleness(&self) -> Duration {
        let fresh = self.fresh_as_of.load(Ordering::SeqCst);
        let since = if fresh > 0 { fresh } else { self.created };
        Duration::from_micros((mono_us() - since).max(0) as u64)
    }

    /// Marks the node complete (after a full load with tracking on).
    pub fn mark_synced(&self) {
        self.last_resync_ms.store(now_ms(), Ordering::SeqCst);
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Marks the node incomplete (stream lost); returns whether it was synced.
    pub fn mark_unsynced(&self) -> bool {
        self.fresh_as_of.store(0, Ordering::SeqCst);
        self.armed_at.store(i64::MAX, Ordering::SeqCst);
        self.synced.swap(false, Ordering::SeqCst)
    }

    /// When the last full resync finished (Unix ms, 0 if never).
    pub fn last_resync_ms(&self) -> i64 {
        self.last_resync_ms.load(Ordering::SeqCst)
    }
}

/// Which parts of the mirror may answer: every node's (one node, Sentinel),
/// or per hash slot (a cluster).
pub trait Coverage: Send + Sync + std::fmt::Debug {
    /// Whether the mirror may answer `q`: every node holding one of its keys
    /// is trusted.
    fn covers(&self, q: &RevocationQuery<'_>, max_staleness: Duration) -> bool;
    /// Whether the whole mirror is trusted.
    fn complete(&self, max_staleness: Duration) -> bool;
    /// The age of the oldest part's last freshness proof.
    fn staleness(&self) -> Duration;
}

/// Every node must be trusted (the single-node and Sentinel mirror).
#[derive(Debug)]
pub struct AllNodes(pub Vec<Arc<NodeState>>);

impl Coverage for AllNodes {
    fn covers(&self, _q: &RevocationQuery<'_>, max_staleness: Duration) -> bool {
        self.complete(max_staleness)
    }

    fn complete(&self, max_staleness: Duration) -> bool {
        !self.0.is_empty() && self.0.iter().all(|n| n.is_trusted(max_staleness))
    }

    fn staleness(&self) -> Duration {
        self.0.iter().map(|n| n.staleness()).max().unwrap_or_default()
    }
}

/// The heartbeat keys of one revokd instance: `<prefix>hb:<instance>:<sent µs>`,
/// or on a cluster `<prefix>hb:<instance>:{<tag>}<sent µs>` with a hash tag
/// that puts it on the node it proves.
/// The instance id is random per process, so no other writer's keys (another
/// instance's, or this one's before a restart) can be mistaken for a proof.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    prefix: String,
}

impl Heartbeat {
    /// Heartbeat keys under `key_prefix` for a new random instance id.
    pub fn new(key_prefix: &str) -> Self {
        let instance = RandomState::new().hash_one(mono_us());
        Heartbeat {
            prefix: format!("{key_prefix}hb:{instance:016x}:"),
        }
    }

    /// The prefix to track (only this instance's heartbeats).
    pub fn tracked_prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of a heartbeat sent at `sent_at` (µs), with a hash tag if given.
    pub fn key(&self, sent_at: i64, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{}{{{tag}}}{sent_at}", self.prefix),
            None => format!("{}{sent_at}", self.prefix),
        }
    }

    /// The send time of one of this instance's heartbeat keys.
    pub fn sent_at(&self, key: &str) -> Option<i64> {
        let rest = key.strip_prefix(&self.prefix)?;
        let rest = match rest.strip_prefix('{') {
            Some(tagged) => tagged.split_once('}')?.1,
            None => rest,
        };
        rest.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monotonic instant strictly after the current one (spins a microsecond).
    fn next_us() -> i64 {
        let now = mono_us();
        loop {
            let t = mono_us();
            if t > now {
                return t;
            }
            std::hint::spin_loop();
        }
    }

    #[test]
    fn trusted_only_while_synced_armed_and_recently_proven() {
        let n = NodeState::new();
        let bound = Duration::from_secs(3600);
        assert!(!n.is_trusted(bound), "a new node proves nothing");
        // A heartbeat from before tracking was armed is no proof.
        let early = mono_us();
        n.arm();
        assert!(!n.prove(early));
        n.mark_synced();
        assert!(!n.is_trusted(bound), "synced but not proven");
        assert!(n.prove(next_us()));
        assert!(n.is_trusted(bound));
        assert!(!n.is_trusted(Duration::ZERO), "a zero bound never trusts");
        // Losing the stream withdraws the proof, and old proofs do not come back.
        let before_loss = mono_us();
        assert!(n.mark_unsynced());
        assert!(!n.is_trusted(bound));
        n.arm();
        n.mark_synced();
        assert!(!n.prove(before_loss));
        assert!(!n.is_trusted(bound));
    }

    #[test]
    fn staleness_grows_until_the_next_proof() {
        let n = NodeState::new();
        n.arm();
        n.mark_synced();
        let sent = next_us();
        assert!(n.prove(sent));
        // A proof never moves backwards.
        n.prove(sent - 1);
        assert!(n.staleness() < Duration::from_secs(5));
        assert!(n.is_trusted(Duration::from_secs(5)));
    }

    #[test]
    fn heartbeat_keys_belong_to_one_instance() {
        let a = Heartbeat::new("revokd:");
        let b = Heartbeat::new("revokd:");
        assert_ne!(a.tracked_prefix(), b.tracked_prefix());
        let key = a.key(12345, None);
        assert!(key.starts_with("revokd:hb:"));
        assert_eq!(a.sent_at(&key), Some(12345));
        let tagged = a.key(678, Some("42"));
        assert!(tagged.ends_with(":{42}678"), "{tagged}");
        assert_eq!(a.sent_at(&tagged), Some(678));
        assert_eq!(a.sent_at(&format!("{}{{42", a.tracked_prefix())), None);
        assert_eq!(b.sent_at(&key), None);
        assert_eq!(a.sent_at("revokd:jti:x"), None);
    }
}
