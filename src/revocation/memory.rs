//! The embedded store: revocations in this process only.
//!
//! For `revokd serve` without Redis: it works anywhere, but revocations are
//! neither shared with other replicas nor kept across restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::error::StoreError;
use crate::revocation::RevocationStore;
use crate::tokens::unix_seconds;

/// Revoked jtis in a map, each with its expiry; a background task purges expired ones.
#[derive(Default)]
pub struct MemoryStore {
    // A std Mutex: held for one map operation, never across an .await.
    entries: Mutex<HashMap<String, i64>>,
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
        self.lock().retain(|_, until| *until > now);
    }

    /// How many entries are held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl RevocationStore for MemoryStore {
    async fn revoke(&self, jti: &str, until: i64) -> Result<bool, StoreError> {
        let now = unix_seconds(SystemTime::now());
        let mut entries = self.lock();
        match entries.get_mut(jti) {
            Some(existing) if *existing > now => Ok(false),
            Some(existing) => {
                *existing = until;
                Ok(true)
            }
            None => {
                entries.insert(jti.to_owned(), until);
                Ok(true)
            }
        }
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let now = unix_seconds(SystemTime::now());
        Ok(self.lock().get(jti).is_some_and(|until| *until > now))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
