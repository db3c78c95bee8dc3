//! The shared store: revocations in Redis, through fred.
//!
//! Key layout (single-key commands only, so it works on Redis Cluster):
//! `<prefix>jti:<jti>` = the revocation time in Unix milliseconds, with an
//! absolute expiry (`SET ... EXAT <until> NX`) equal to the token's own expiry
//! plus the verify leeway.
//!
//! The client reconnects on its own. While it is disconnected every command
//! fails at once (or after the store timeout) with
//! [`StoreError::Unavailable`]: revokd fails closed and never guesses.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use fred::types::RespVersion;

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::revocation::RevocationStore;

/// After this long, fred's connection state outranks a drop event.
const STALE_DROP_MS: i64 = 500;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Revocations in Redis.
pub struct RedisStore {
    client: Client,
    prefix: String,
    /// Per-command options: fail at once while disconnected, and time out.
    options: Options,
    /// When the connection was last seen dropping (Unix ms), 0 while up.
    /// fred's own state still reads Connected for one reconnect delay after a
    /// drop; this closes that window. Events arrive on separate channels, so
    /// a late one could leave this stale: past [`STALE_DROP_MS`] fred's state
    /// is trusted again.
    dropped_at_ms: Arc<AtomicI64>,
}

fn unavailable(e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::Parse => StoreError::Protocol(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

impl RedisStore {
    /// Connects to `url` in the background. Waits up to `timeout` for the
    /// first connection; if Redis is not there yet the store still starts,
    /// answers UNAVAILABLE, and keeps reconnecting.
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Arc<Self>, StoreError> {
        let mut config =
            Config::from_url(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        config.version = RespVersion::RESP3;
        // Keep retrying in the background when Redis is down at start.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                // A command in flight when the socket drops fails instead of being replayed later.
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
                p.broadcast_channel_capacity = 4096;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 1_000, 2))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Not connected until the first on_reconnect.
        let dropped_at_ms = Arc::new(AtomicI64::new(now_ms()));
        let flag = dropped_at_ms.clone();
        let m = metrics.clone();
        client.on_error(move |(error, server)| {
            let flag = flag.clone();
            let m = m.clone();
            async move {
                m.store_error("connection");
                // With a server: an established connection dropped. Without one: a
                // failed reconnect attempt, while fred already reads disconnected; such
                // an event can be handled after the next successful reconnect, so it
                // must not clear the flag.
                if server.is_some() && flag.swap(now_ms(), Ordering::SeqCst) == 0 {
                    tracing::warn!(error = %error, "redis connection lost");
                }
                Ok(())
            }
        });
        let flag = dropped_at_ms.clone();
        client.on_reconnect(move |server| {
            let flag = flag.clone();
            let m = metrics.clone();
            async move {
                flag.store(0, Ordering::SeqCst);
                m.store_ok();
                tracing::info!(server = %server, "redis connected");
                Ok(())
            }
        });
        let _task = client.connect();
        if tokio::time::timeout(timeout, client.wait_for_connect())
            .await
            .is_err()
        {
            tracing::warn!("redis not reachable yet; serving UNAVAILABLE until it is");
        }
        Ok(Arc::new(RedisStore {
            client,
            prefix: prefix.to_owned(),
            options: Options {
                fail_fast: true,
                timeout: Some(timeout),
                ..Default::default()
            },
            dropped_at_ms,
        }))
    }

    /// The key of a revoked jti.
    pub fn jti_key(&self, jti: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 4 + jti.len());
        key.push_str(&self.prefix);
        key.push_str("jti:");
        key.push_str(jti);
        key
    }

    /// The underlying client (shared connection).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn check_connected(&self) -> Result<(), StoreError> {
        let dropped = self.dropped_at_ms.load(Ordering::SeqCst);
        if dropped == 0 || (now_ms() - dropped > STALE_DROP_MS && self.client.is_connected()) {
            Ok(())
        } else {
            Err(StoreError::Unavailable("not connected to redis".into()))
        }
    }
}

#[async_trait::async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(&self, jti: &str, until: i64) -> Result<bool, StoreError> {
        self.check_connected()?;
        let set: Option<String> = self
            .client
            .with_options(&self.options)
            .set(
                self.jti_key(jti),
                now_ms(),
                Some(Expiration::EXAT(until)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        self.check_connected()?;
        let n: i64 = self
            .client
            .with_options(&self.options)
            .exists(self.jti_key(jti))
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_connected()?;
        let _: String = self
            .client
            .with_options(&self.options)
            .ping(None)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
