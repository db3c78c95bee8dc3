//! The revocations this process acknowledged recently, to re-assert them after
//! a reconnect.
//!
//! Redis replication is asynchronous, and `WAIT` only says that *some*
//! replicas had a write: in a forced Sentinel failover, a replica that is not
//! the one promoted can acknowledge a write to the old master, and that write
//! is then lost when both are resynced from the new one (measured here: ~100
//! of 1,400 acknowledged revocations in one `SENTINEL FAILOVER`). A restart of
//! a Redis without persistence loses everything. Revocations are idempotent
//! (`SET ... EXAT ... NX`, "revoked before" only ever raised), so after every
//! reconnect the store writes the journal again, and until that is done a
//! lookup that Redis answers "not revoked" is still "revoked" if the journal
//! holds it.
//!
//! Bounded by age ([`WINDOW`]) and size ([`CAPACITY`]): it covers the seconds
//! a failover takes to be noticed, not a lost dataset (that needs persistence
//! and replicas; see docs/ARCHITECTURE.md).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::revocation::{RevocationKind, RevocationQuery};

/// How long an acknowledged revocation is kept for replay.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The most revocations kept (the oldest go first).
pub const CAPACITY: usize = 100_000;

/// One acknowledged revocation, as it is written again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// A jti or session, until (Unix seconds).
    Id {
        /// Jti or session.
        kind: RevocationKind,
        /// The id.
        id: String,
        /// Expiry (Unix seconds).
        until: i64,
    },
    /// A subject revoked before an instant (µs), until (Unix seconds).
    Subject {
        /// The subject.
        subject: String,
        /// Revoked before (Unix µs).
        before_us: i64,
        /// Expiry (Unix seconds).
        until: i64,
    },
}

/// Recently acknowledged revocations.
#[derive(Debug, Default)]
pub struct AckJournal {
    // A std Mutex: held for a few map operations, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    order: VecDeque<(Instant, Acked)>,
    /// id -> (latest expiry, how many records of it are queued).
    /// One map per kind, so a verify looks an id up by `&str` without allocating.
    jtis: HashMap<String, (i64, usize)>,
    sids: HashMap<String, (i64, usize)>,
    /// subject -> (latest "revoked before", how many records of it are queued).
    subjects: HashMap<String, (i64, usize)>,
}

impl Inner {
    fn ids_mut(&mut self, kind: RevocationKind) -> &mut HashMap<String, (i64, usize)> {
        match kind {
            RevocationKind::Jti => &mut self.jtis,
            RevocationKind::Session => &mut self.sids,
        }
    }
}

/// Raises a slot to `value` and counts one more record of it.
fn add(slot: &mut (i64, usize), value: i64) {
    slot.0 = slot.0.max(value);
    slot.1 += 1;
}

/// Counts one record fewer; true when none is left.
fn release(slot: &mut (i64, usize)) -> bool {
    slot.1 -= 1;
    slot.1 == 0
}

impl AckJournal {
    /// Records an acknowledged revocation.
    pub fn record(&self, acked: Acked) {
        let now = Instant::now();
        let mut j = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &acked {
            Acked::Id { kind, id, until } => add(j.ids_mut(*kind).entry(id.clone()).or_insert((*until, 0)), *until),
            Acked::Subject { subject, before_us, .. } => {
                add(j.subjects.entry(subject.clone()).or_insert((*before_us, 0)), *before_us)
            }
        }
        j.order.push_back((now, acked));
        while j.order.len() > CAPACITY || j.order.front().is_some_and(|(at, _)| now - *at > WINDOW) {
            let Some((_, old)) = j.order.pop_front() else { break };
            // Forget it from the index once no record of it is queued.
            match old {
                Acked::Id { kind, id, .. } => {
                    let ids = j.ids_mut(kind);
                    if ids.get_mut(&id).is_none_or(release) {
                        ids.remove(&id);
                    }
                }
                Acked::Subject { subject, .. } => {
                    if j.subjects.get_mut(&subject).is_none_or(release) {
                        j.subjects.remove(&subject);
                    }
                }
            }
        }
    }

    /// Whether the journal revokes the token `q` asks about.
    pub fn covers(&self, q: &RevocationQuery<'_>) -> bool {
        let j = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if j.order.is_empty() {
            return false;
        }
        let live = |slot: Option<&(i64, usize)>| slot.is_some_and(|(until, _)| *until > q.now);
        live(j.jtis.get(q.jti))
            || q.session_id.is_some_and(|s| live(j.sids.get(s)))
            || j.subjects
                .get(q.subject)
                .is_some_and(|(before, _)| q.covered_by_subject(*before))
    }

    /// Everything to write again, oldest first.
    pub fn snapshot(&self) -> Vec<Acked> {
        let j = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        j.order.iter().map(|(_, a)| a.clone()).collect()
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).order.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query<'a>(jti: &'a str, sid: Option<&'a str>, sub: &'a str, iat_us: i64) -> RevocationQuery<'a> {
        RevocationQuery {
            jti,
            session_id: sid,
            subject: sub,
            issued_at_us: Some(iat_us),
            now: 1_000,
        }
    }

    #[test]
    fn covers_what_it_recorded_until_it_expires() {
        let j = AckJournal::default();
        assert!(!j.covers(&query("a", None, "s", 0)));
        j.record(Acked::Id {
            kind: RevocationKind::Jti,
            id: "a".into(),
            until: 2_000,
        });
        j.record(Acked::Id {
            kind: RevocationKind::Session,
            id: "sess".into(),
            until: 2_000,
        });
        j.record(Acked::Subject {
            subject: "bob".into(),
            before_us: 500,
            until: 2_000,
        });
        assert!(j.covers(&query("a", None, "s", 0)));
        assert!(j.covers(&query("x", Some("sess"), "s", 0)));
        assert!(j.covers(&query("x", None, "bob", 500)));
        assert!(
            !j.covers(&query("x", None, "bob", 501)),
            "issued after the subject cutoff"
        );
        assert!(!j.covers(&query("x", Some("other"), "s", 0)));
        // Past its expiry a revocation covers nothing.
        let mut late = query("a", None, "s", 0);
        late.now = 2_000;
        assert!(!j.covers(&late));
        assert_eq!(j.snapshot().len(), 3);
    }

    #[test]
    fn bounded_by_capacity() {
        let j = AckJournal::default();
        for i in 0..CAPACITY + 10 {
            j.record(Acked::Id {
                kind: RevocationKind::Jti,
                id: i.to_string(),
                until: 2_000,
            });
        }
        assert_eq!(j.len(), CAPACITY);
        assert!(!j.covers(&query("0", None, "s", 0)), "the oldest went first");
        assert!(j.covers(&query(&(CAPACITY + 9).to_string(), None, "s", 0)));
    }
}
