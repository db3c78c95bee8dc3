//! The embedded store: revocations in this process only.
//!
//! For `revokd serve` without Redis: it works anywhere, but revocations are
//! neither shared with other replicas nor kept across restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::error::StoreError;
use crate::revocation::feed::{Change, RevocationFeed};
use crate::revocation::{RevocationKind, RevocationQuery, RevocationStore, Rotation, RotationOutcome};
use crate::tokens::unix_seconds;

struct SessionState {
    current: String,
    previous: Option<String>,
    rotated_ms: i64,
    successor: String,
    until: i64,
}

impl State {
    fn revoked_mut(&mut self, kind: RevocationKind) -> &mut HashMap<String, i64> {
        match kind {
            RevocationKind::Jti => &mut self.jti,
            RevocationKind::Session => &mut self.sid,
        }
    }
}

#[derive(Default)]
struct State {
    /// Revoked ids by kind, each with its expiry (Unix seconds).
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
    /// Subject -> (revoked before, in µs; expiry).
    subjects: HashMap<String, (i64, i64)>,
    sessions: HashMap<String, SessionState>,
}

/// Revocations and session state in maps; a background task purges expired entries.
#[derive(Default)]
pub struct MemoryStore {
    // A std Mutex: held for a few map operations, never across an .await; one
    // lock also makes a rotation atomic.
    state: Mutex<State>,
    /// Every revocation, announced under the lock (so a snapshot taken under
    /// it after subscribing misses none).
    feed: RevocationFeed,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A new empty store, with a task that purges expired entries every `every`.
    pub fn start(every: Duration) -> Arc<Self> {
        let store = Arc::new(MemoryStore::default());
        let weak: Weak<MemoryStore> = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(store) => store.purge(unix_seconds(SystemTime::now())),
                    None => return,
                }
            }
        });
        store
    }

    /// Drops every entry that expired at or before `now`.
    pub fn purge(&self, now: i64) {
        let mut s = self.lock();
        s.jti.retain(|_, until| *until > now);
        s.sid.retain(|_, until| *until > now);
        s.subjects.retain(|_, (_, until)| *until > now);
        s.sessions.retain(|_, st| st.until > now);
    }

    /// How many revocations are held (expired ones included until purged).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.jti.len() + s.sid.len() + s.subjects.len()
    }

    /// Whether no revocation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> i64 {
    unix_seconds(SystemTime::now())
}

#[async_trait::async_trait]
impl RevocationStore for MemoryStore {
    async fn revoke(&self, kind: RevocationKind, id: &str, until: i64) -> Result<bool, StoreError> {
        let now = now();
        let mut s = self.lock();
        let map = s.revoked_mut(kind);
        let newly = match map.get_mut(id) {
            Some(existing) if *existing > now => false,
            Some(existing) => {
                *existing = until;
                true
            }
            None => {
                map.insert(id.to_owned(), until);
                true
            }
        };
        if newly {
            self.feed.publish(|| Change::revoked(kind, id, until));
        }
        Ok(newly)
    }

    async fn revoke_subject(&self, subject: &str, revoked_before_us: i64, until: i64) -> Result<(), StoreError> {
        let mut s = self.lock();
        let entry = s
            .subjects
            .entry(subject.to_owned())
            .or_insert((revoked_before_us, until));
        entry.0 = entry.0.max(revoked_before_us);
        entry.1 = entry.1.max(until);
        let (before, until) = *entry;
        self.feed.publish(|| Change::subject(subject, before, until));
        Ok(())
    }

    async fn is_revoked(&self, q: &RevocationQuery<'_>) -> Result<bool, StoreError> {
        let now = q.now;
        let s = self.lock();
        let live = |map: &HashMap<String, i64>, id: &str| map.get(id).is_some_and(|u| *u > now);
        Ok(live(&s.jti, q.jti)
            || q.session_id.is_some_and(|sid| live(&s.sid, sid))
            || s.subjects
                .get(q.subject)
                .is_some_and(|(before, until)| *until > now && q.covered_by_subject(*before)))
    }

    async fn start_session(&self, session_id: &str, refresh_jti: &str, until: i64) -> Result<(), StoreError> {
        self.lock().sessions.insert(
            session_id.to_owned(),
            SessionState {
                current: refresh_jti.to_owned(),
                previous: None,
                rotated_ms: 0,
                successor: String::new(),
                until,
            },
        );
        Ok(())
    }

    async fn current_refresh(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        let now = now();
        Ok(self
            .lock()
            .sessions
            .get(session_id)
            .filter(|st| st.until > now)
            .map(|st| st.current.clone()))
    }

    async fn rotate_refresh(&self, r: &Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let now = now();
        let mut s = self.lock();
        if s.sid.get(r.session_id).is_some_and(|u| *u > now) {
            return Ok(RotationOutcome::SessionRevoked);
        }
        let Some(st) = s.sessions.get_mut(r.session_id).filter(|st| st.until > now) else {
            return Ok(RotationOutcome::UnknownSession);
        };
        if st.current == r.presented_jti {
            st.previous = Some(std::mem::replace(&mut st.current, r.next_jti.to_owned()));
            st.rotated_ms = r.now_ms;
            st.successor = r.successor.to_owned();
            st.until = r.state_until;
            return Ok(RotationOutcome::Rotated);
        }
        if st.previous.as_deref() == Some(r.presented_jti) && r.grace_ms > 0 && r.now_ms - st.rotated_ms <= r.grace_ms {
            return Ok(RotationOutcome::Retry(st.successor.clone()));
        }
        s.sid.insert(r.session_id.to_owned(), r.revoke_until);
        self.feed
            .publish(|| Change::revoked(RevocationKind::Session, r.session_id, r.revoke_until));
        Ok(RotationOutcome::Reused)
    }

    fn feed(&self) -> Option<&RevocationFeed> {
        Some(&self.feed)
    }

    fn freshness(&self) -> Option<Duration> {
        // The set itself: never stale.
        Some(Duration::ZERO)
    }

    async fn snapshot(&self, out: &tokio::sync::mpsc::Sender<Vec<Change>>) -> Result<(), StoreError> {
        let now = now();
        let all: Vec<Change> = {
            let s = self.lock();
            let ids = |map: &HashMap<String, i64>, kind| {
                map.iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(id, until)| Change::revoked(kind, id, *until))
                    .collect::<Vec<_>>()
            };
            ids(&s.jti, RevocationKind::Jti)
                .into_iter()
                .chain(ids(&s.sid, RevocationKind::Session))
                .chain(
                    s.subjects
                        .iter()
                        .filter(|(_, (_, until))| *until > now)
                        .map(|(sub, (before, until))| Change::subject(sub, *before, *until)),
                )
                .collect()
        };
        for page in all.chunks(1000) {
            if out.send(page.to_vec()).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
