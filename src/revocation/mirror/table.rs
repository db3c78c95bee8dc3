//! The mirror's data: every live revocation as a keyed hash with its expiry.
//! Pure and synchronous; whether it may answer is [`super::freshness`]'s call.

use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;

use crate::prehashed::PrehashedMap;
use crate::revocation::feed::{Change, ChangeKind, RevocationFeed};
use crate::revocation::{RevocationKind, RevocationQuery};

type HashedMap = PrehashedMap<i64>;

/// The in-process copy of every live revocation: jtis, sessions and
/// subjects, each as a keyed hash with its expiry.
pub struct RevocationMirror {
    key: RandomState,
    // RwLock: lookups (every verify) share it; writes are rare (one per revocation).
    entries: RwLock<Entries>,
    /// Every change, by id, for watchers (WatchRevocations).
    feed: RevocationFeed,
}

impl std::fmt::Debug for RevocationMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationMirror")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
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
    /// An empty mirror with a fresh random hash key.
    pub fn new() -> Self {
        RevocationMirror {
            key: RandomState::new(),
            entries: RwLock::new(Entries::default()),
            feed: RevocationFeed::new(),
        }
    }

    /// The feed every change to the mirror is announced on.
    pub fn feed(&self) -> &RevocationFeed {
        &self.feed
    }

    /// Applies a key's state as read from Redis (present until an expiry, or gone).
    pub fn apply(&self, change: &Change) {
        let kind = match change.kind {
            ChangeKind::Jti => RevocationKind::Jti,
            ChangeKind::Session => RevocationKind::Session,
            ChangeKind::Subject => {
                match change.until {
                    Some(until) => self.insert_subject(&change.id, change.revoked_before_us, until),
                    None => self.remove_subject(&change.id),
                }
                return;
            }
        };
        match change.until {
            Some(until) => self.insert(kind, &change.id, until),
            None => self.remove(kind, &change.id),
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
        // What the mirror now holds (the later expiry), so a watcher never shortens it.
        let held = *slot;
        drop(e);
        self.feed.publish(|| Change::revoked(kind, id, held));
    }

    /// Records a subject revoked before `before_us`, until `until`.
    pub fn insert_subject(&self, subject: &str, before_us: i64, until: i64) {
        let h = self.hash(subject);
        let mut e = self.write();
        let slot = e.sub.entry(h).or_insert((before_us, until));
        *slot = (slot.0.max(before_us), slot.1.max(until));
        let (before, held) = *slot;
        drop(e);
        self.feed.publish(|| Change::subject(subject, before, held));
    }

    /// Forgets a jti or session.
    pub fn remove(&self, kind: RevocationKind, id: &str) {
        let h = self.hash(id);
        let mut e = self.write();
        match kind {
            RevocationKind::Jti => e.jti.remove(&h),
            RevocationKind::Session => e.sid.remove(&h),
        };
        drop(e);
        self.feed.publish(|| Change {
            until: None,
            ..Change::revoked(kind, id, 0)
        });
    }

    /// Forgets a subject revocation.
    pub fn remove_subject(&self, subject: &str) {
        let h = self.hash(subject);
        self.write().sub.remove(&h);
        self.feed.publish(|| Change {
            until: None,
            ..Change::subject(subject, 0, 0)
        });
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
}
