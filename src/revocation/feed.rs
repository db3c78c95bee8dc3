//! The revocation feed: every change to the live revocation set, as it is
//! applied, for `WatchRevocations` (a client that answers verifies from its
//! own copy of the set). The mirror publishes what its sync re-reads from
//! Redis and what this instance revokes; the embedded store publishes its own
//! revocations. Nothing is published while nobody watches.
//!
//! A watcher subscribes, then reads a snapshot, then applies the changes it
//! received since subscribing: a change carries the key's state as read after
//! the change (present until an expiry, or gone), so applying it after the
//! snapshot converges, whichever of the two saw the key last. Changes are
//! only complete while the source is: a mirror node that lost its stream
//! counts a gap, and a watcher that sees the gap count move starts over.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

/// What a revocation is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A token id.
    Jti,
    /// A session: every token of it.
    Session,
    /// A subject: every token issued at or before an instant.
    Subject,
}

/// One key of the revocation set, as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What is revoked.
    pub kind: ChangeKind,
    /// The jti, session id or subject.
    pub id: String,
    /// Revoked until (Unix seconds, `i64::MAX`: no expiry); `None`: not revoked (any more).
    pub until: Option<i64>,
    /// A subject: tokens issued at or before this instant (Unix µs) are revoked.
    pub revoked_before_us: i64,
}

impl Change {
    /// A jti or session revoked until `until`.
    pub fn revoked(kind: crate::revocation::RevocationKind, id: &str, until: i64) -> Self {
        let kind = match kind {
            crate::revocation::RevocationKind::Jti => ChangeKind::Jti,
            crate::revocation::RevocationKind::Session => ChangeKind::Session,
        };
        Change {
            kind,
            id: id.to_owned(),
            until: Some(until),
            revoked_before_us: 0,
        }
    }

    /// A subject revoked before `before_us`, until `until`.
    pub fn subject(subject: &str, before_us: i64, until: i64) -> Self {
        Change {
            kind: ChangeKind::Subject,
            id: subject.to_owned(),
            until: Some(until),
            revoked_before_us: before_us,
        }
    }
}

/// How many changes a watcher may fall behind before it is cut off.
pub const FEED_CAPACITY: usize = 16 * 1024;

/// The change feed of one revocation set.
#[derive(Debug)]
pub struct RevocationFeed {
    tx: broadcast::Sender<Change>,
    /// Times the changes may have been incomplete (a mirror node lost its stream).
    gaps: AtomicU64,
}

impl Default for RevocationFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl RevocationFeed {
    /// A feed nobody watches yet.
    pub fn new() -> Self {
        RevocationFeed {
            tx: broadcast::channel(FEED_CAPACITY).0,
            gaps: AtomicU64::new(0),
        }
    }

    /// Announces a change, made only if someone watches.
    pub fn publish(&self, change: impl FnOnce() -> Change) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(change());
        }
    }

    /// Every change from now on, and the gap count now.
    pub fn subscribe(&self) -> (broadcast::Receiver<Change>, u64) {
        let rx = self.tx.subscribe();
        (rx, self.gaps())
    }

    /// Changes may have been missed (and deletions will not be re-announced).
    pub fn gap(&self) {
        self.gaps.fetch_add(1, Ordering::SeqCst);
    }

    /// How many gaps so far.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::SeqCst)
    }

    /// How many watchers are subscribed.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_while_nobody_watches() {
        let feed = RevocationFeed::new();
        feed.publish(|| panic!("built without a watcher"));
        let (mut rx, gaps) = feed.subscribe();
        assert_eq!(gaps, 0);
        feed.publish(|| Change::subject("alice", 1, 2));
        assert_eq!(rx.try_recv().unwrap(), Change::subject("alice", 1, 2));
        feed.gap();
        assert_eq!(feed.gaps(), 1);
    }
}
