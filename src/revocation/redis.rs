//! The shared store: revocations in Redis, through fred.
//!
//! Key layout (see [`key`]; every command or script touches one hash slot, so
//! it works on Redis Cluster):
//! - `<prefix>jti:<jti>` = the revocation time in Unix milliseconds, with an
//!   absolute expiry (`SET ... EXAT <until> NX`) equal to the token's own
//!   expiry plus the verify leeway;
//! - `<prefix>sid:{<sid>}` = likewise, for a whole session;
//! - `<prefix>sub:<subject>` = "revoked before" in Unix microseconds, kept for
//!   the maximum token lifetime;
//! - `<prefix>sess:{<sid>}` = a hash with the session's current and previous
//!   refresh jti, for single-use rotation.
//!
//! The client reconnects on its own. While it is disconnected every command
//! fails at once (or after the store timeout) with
//! [`StoreError::Unavailable`]: revokd fails closed and never guesses. On a
//! Redis Cluster every command goes to its key's node and fails on its own:
//! one shard down makes only the calls that touch it UNAVAILABLE.
//!
//! **Durable acknowledgements.** With `--min-replica-acks N`, every write
//! that revokes (token, session, subject, a rotation and its reuse detection)
//! is pipelined with `WAIT N <timeout>` on a connection of its own (WAIT
//! blocks the connection it runs on, and must run on the one that wrote);
//! fewer acknowledgements fail the call with UNAVAILABLE. The key is still on
//! the master then, so a retry is harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fred::clients::Client;
use fred::cmd;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, ServerInterface};
use fred::types::config::{Options, ReconnectPolicy};
use fred::types::{Builder, Expiration, RespVersion, SetOptions, Value};

use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::revocation::feed::{Change, ChangeKind};
use crate::revocation::journal::{AckJournal, Acked};
use crate::revocation::topology::{RedisTarget, WriteGate};
use crate::revocation::{RevocationKind, RevocationQuery, RevocationStore, Rotation, RotationOutcome};
use crate::tokens::now_ms;

/// After this long, fred's connection state outranks a drop event.
const STALE_DROP_MS: i64 = 500;

/// Revocations in Redis.
pub struct RedisStore {
    client: Client,
    /// Where writes that wait for replicas go (the same client when they do not wait).
    writer: Client,
    /// `--min-replica-acks`.
    min_replica_acks: i64,
    /// A Redis Cluster: errors are per command, not per client.
    cluster: bool,
    /// Closed while Sentinel reports a master change the clients have not followed yet.
    gate: Arc<WriteGate>,
    prefix: String,
    /// Per-command options: fail at once while disconnected, and time out.
    options: Options,
    /// When the connection was last seen dropping (Unix ms), 0 while up.
    /// fred's own state still reads Connected for one reconnect delay after a
    /// drop; this closes that window. Events arrive on separate channels, so
    /// a late one could leave this stale: past [`STALE_DROP_MS`] fred's state
    /// is trusted again.
    dropped_at_ms: Arc<AtomicI64>,
    /// Where (the target with its password redacted) and why the last
    /// connection attempt failed; `None` while connected.
    target: String,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    /// What this process acknowledged recently, written again after a reconnect.
    journal: AckJournal,
    metrics: Metrics,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("min_replica_acks", &self.min_replica_acks)
            .finish_non_exhaustive()
    }
}

/// A RESP3 client of `target` as revokd uses them: retries forever in the
/// background (also when Redis is down at start, with backoff from 20 ms to
/// 250 ms), every command bounded by `timeout`, and a command in flight when the
/// socket drops fails instead of being replayed later. `tune` adjusts the
/// connection settings further.
pub fn client(
    target: &RedisTarget,
    timeout: Duration,
    event_capacity: usize,
    tune: impl FnOnce(&mut fred::types::config::ConnectionConfig),
) -> Result<Client, StoreError> {
    let mut config = target
        .fred_config()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let cluster = target.is_cluster();
    config.version = RespVersion::RESP3;
    config.fail_fast = false;
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
            if cluster {
                // fred counts a write after a MOVED or ASK redirection as an attempt:
                // on a cluster a command must be able to follow two.
                c.max_command_attempts = 3;
            }
            tune(c);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            p.broadcast_channel_capacity = event_capacity;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 20, 250, 2))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl RedisStore {
    /// Connects to `url` in the background. Waits up to `timeout` for the
    /// first connection; if Redis is not there yet the store still starts,
    /// answers UNAVAILABLE, and keeps reconnecting.
    pub async fn connect(
        target: &RedisTarget,
        prefix: &str,
        timeout: Duration,
        min_replica_acks: u32,
        metrics: Metrics,
    ) -> Result<Arc<Self>, StoreError> {
        let store_metrics = metrics.clone();
        let client = client(target, timeout, 4096, |_| {})?;
        let writer = if min_replica_acks > 0 {
            let writer = self::client(target, timeout, 64, |_| {})?;
            let _task = writer.connect();
            writer
        } else {
            client.clone()
        };
        // Not connected until the first on_reconnect.
        let dropped_at_ms = Arc::new(AtomicI64::new(now_ms()));
        let flag = dropped_at_ms.clone();
        let m = metrics.clone();
        let last_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let last = last_error.clone();
        let where_ = target.to_string();
        let tls = target.uses_tls();
        client.on_error(move |(error, server)| {
            let flag = flag.clone();
            let m = m.clone();
            // Said once per distinct cause, not once per reconnect attempt.
            let cause = super::diagnose::cause(&error, tls);
            let changed = last.lock().unwrap().replace(cause.clone()).as_ref() != Some(&cause);
            if changed {
                let server = server.as_ref().map(|s| s.to_string()).unwrap_or_default();
                tracing::warn!(redis = %where_, server = %server, cause = %cause, "redis connection failed");
            }
            async move {
                m.store_error("connection");
                // With a server: an established connection dropped. Without one: a
                // failed reconnect attempt, while fred already reads disconnected; such
                // an event can be handled after the next successful reconnect, so it
                // must not clear the flag.
                if server.is_some() {
                    flag.store(now_ms(), Ordering::SeqCst);
                }
                Ok(())
            }
        });
        let flag = dropped_at_ms.clone();
        // One node (or Sentinel's master): a marker key tells a Redis that lost its data.
        let marker = (!target.is_cluster()).then(|| Arc::new(DataMarker::new(prefix, metrics.clone())));
        let marker_client = client.clone();
        let last = last_error.clone();
        client.on_reconnect(move |server| {
            last.lock().unwrap().take();
            let flag = flag.clone();
            let m = metrics.clone();
            let marker = marker.clone();
            let client = marker_client.clone();
            async move {
                flag.store(0, Ordering::SeqCst);
                m.store_ok();
                tracing::info!(server = %server, "redis connected");
                if let Some(marker) = marker {
                    tokio::spawn(async move { marker.check(&client).await });
                }
                Ok(())
            }
        });
        let replay_due = Arc::new(tokio::sync::Notify::new());
        let due = replay_due.clone();
        writer.on_reconnect(move |_| {
            // notify_one keeps a permit when the replay task is busy.
            due.notify_one();
            async { Ok(()) }
        });
        let _task = client.connect();
        let first = tokio::time::timeout(timeout, client.wait_for_connect()).await;
        if let Ok(Err(e)) = &first {
            last_error
                .lock()
                .unwrap()
                .get_or_insert_with(|| super::diagnose::cause(e, target.uses_tls()));
        }
        if !matches!(first, Ok(Ok(()))) {
            let cause = last_error
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "no answer yet".into());
            tracing::warn!(redis = %target, cause = %cause, "redis not reachable yet; serving UNAVAILABLE until it is");
        }
        if min_replica_acks > 0 {
            let _ = tokio::time::timeout(timeout, writer.wait_for_connect()).await;
        }
        let store = Arc::new(RedisStore {
            client,
            writer,
            min_replica_acks: i64::from(min_replica_acks),
            cluster: target.is_cluster(),
            gate: Arc::new(WriteGate::default()),
            prefix: prefix.to_owned(),
            options: Options {
                fail_fast: true,
                timeout: Some(timeout),
                ..Default::default()
            },
            dropped_at_ms,
            target: target.to_string(),
            last_error,
            journal: AckJournal::default(),
            metrics: store_metrics,
        });
        tokio::spawn(replay_on_reconnect(Arc::downgrade(&store), replay_due));
        Ok(store)
    }

    /// Writes every revocation in the journal again (idempotent), then waits
    /// for the replicas; returns how many were written.
    async fn replay(&self) -> Result<usize, StoreError> {
        let now = crate::tokens::unix_seconds(std::time::SystemTime::now());
        let entries: Vec<Acked> = self
            .journal
            .snapshot()
            .into_iter()
            .filter(|a| match a {
                Acked::Id { until, .. } | Acked::Subject { until, .. } => *until > now,
            })
            .collect();
        if entries.is_empty() {
            return Ok(0);
        }
        self.check_writable()?;
        // On a cluster each write waits for its own node's replicas.
        let wait_each = self.cluster && self.min_replica_acks > 0;
        for chunk in entries.chunks(500) {
            let pipeline = self.writer.with_options(&self.options).pipeline();
            for a in chunk {
                let key = match a {
                    Acked::Id { kind, id, until } => {
                        let key = self.key(id_key_kind(*kind), id);
                        let _: () = pipeline
                            .set(
                                key.as_str(),
                                now_ms(),
                                Some(Expiration::EXAT(*until)),
                                Some(SetOptions::NX),
                                false,
                            )
                            .await?;
                        key
                    }
                    Acked::Subject {
                        subject,
                        before_us,
                        until,
                    } => {
                        let key = self.key(KeyKind::Subject, subject);
                        let args = eval_args(REVOKE_SUBJECT, &[&key], &[before_us.to_string(), until.to_string()]);
                        let _: () = pipeline.custom(eval_cmd(&key), args).await?;
                        key
                    }
                };
                if wait_each {
                    let _: () = pipeline
                        .custom(self.wait_cmd(&key), vec![self.min_replica_acks, self.wait_ms()])
                        .await?;
                }
            }
            let replies: Vec<Value> = pipeline.all().await?;
            if wait_each
                && replies
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .any(|v| v.as_i64().unwrap_or(0) < self.min_replica_acks)
            {
                return Err(StoreError::Unavailable(
                    "replayed revocations not acknowledged by enough replicas".into(),
                ));
            }
        }
        if self.min_replica_acks > 0 && !self.cluster {
            let acked: i64 = self
                .writer
                .with_options(&self.options)
                .wait(self.min_replica_acks, self.wait_ms())
                .await?;
            if acked < self.min_replica_acks {
                return Err(StoreError::Unavailable(format!(
                    "replayed revocations acknowledged by {acked} replicas"
                )));
            }
        }
        Ok(entries.len())
    }

    /// How long a `WAIT` may block: within the store timeout.
    fn wait_ms(&self) -> i64 {
        let timeout = self.options.timeout.unwrap_or(Duration::from_secs(1));
        (timeout.as_millis() as i64 * 3 / 4).max(1)
    }

    /// `WAIT`, sent to the node of `key` (on a cluster, the node that took the write).
    fn wait_cmd(&self, key: &str) -> fred::types::CustomCommand {
        cmd!(
            "WAIT",
            hash: fred::types::ClusterHash::Custom(crate::revocation::slots::slot_of_key(key))
        )
    }

    /// The key of a revocation or of session state.
    pub fn key(&self, kind: KeyKind, id: &str) -> String {
        key(&self.prefix, kind, id)
    }

    /// Sends every live revocation into `out`, a page at a time: a SCAN of
    /// the node (of every primary, on a cluster), each page re-read.
    pub async fn snapshot(&self, out: &tokio::sync::mpsc::Sender<Vec<Change>>) -> Result<(), StoreError> {
        use fred::types::scan::{ScanResult, Scanner};
        use tokio_stream::{Stream, StreamExt};
        if !self.client.is_connected() {
            return Err(self.not_connected());
        }
        let pattern = format!("{}*", glob_escape(&self.prefix));
        type Pages = std::pin::Pin<Box<dyn Stream<Item = Result<ScanResult, RedisError>> + Send>>;
        let mut pages: Pages = if self.cluster {
            Box::pin(self.client.scan_cluster(pattern, Some(1000), None))
        } else {
            Box::pin(self.client.scan(pattern, Some(1000), None))
        };
        let page_timeout = self.options.timeout.unwrap_or(Duration::from_secs(1)) * 5;
        while let Some(page) = tokio::time::timeout(page_timeout, pages.next())
            .await
            .map_err(|_| StoreError::Unavailable("snapshot scan timed out".into()))?
        {
            let mut page = page?;
            let keys: Vec<String> = page
                .take_results()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|k| k.into_string())
                .collect();
            page.next();
            let changes: Vec<Change> = read_revocations(&self.client, &self.prefix, &keys)
                .await?
                .into_iter()
                .filter_map(|(change, _)| change.until.is_some().then_some(change))
                .collect();
            if !changes.is_empty() && out.send(changes).await.is_err() {
                // The watcher left.
                return Ok(());
            }
        }
        Ok(())
    }

    /// The client verifies and reads use.
    pub fn reader(&self) -> Client {
        self.client.clone()
    }

    /// The clients that must follow a Sentinel master switch (or a cluster's layout).
    pub fn clients(&self) -> Vec<Client> {
        let mut clients = vec![self.client.clone()];
        if self.min_replica_acks > 0 {
            clients.push(self.writer.clone());
        }
        clients
    }

    /// The gate a Sentinel watch closes while the master is changing.
    pub fn write_gate(&self) -> Arc<WriteGate> {
        self.gate.clone()
    }

    /// Whether a revocation may be written now.
    fn check_writable(&self) -> Result<(), StoreError> {
        self.check_connected()?;
        if !self.gate.is_open() {
            return Err(StoreError::Unavailable(
                "the redis master is changing (Sentinel failover); not written, retry".into(),
            ));
        }
        if self.min_replica_acks > 0 && !self.writer.is_connected() {
            return Err(self.not_connected());
        }
        Ok(())
    }

    /// Runs one write, pipelined with `WAIT` when replicas must acknowledge it.
    async fn write(&self, write: Write<'_>) -> Result<Value, StoreError> {
        self.check_writable()?;
        let pipeline = self.writer.with_options(&self.options).pipeline();
        let routed_by = match write {
            Write::SetNx { key, value, until } => {
                let _: () = pipeline
                    .set(
                        key.as_str(),
                        value,
                        Some(Expiration::EXAT(until)),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await?;
                key
            }
            Write::Eval { script, keys, args } => {
                let _: () = pipeline
                    .custom(
                        eval_cmd(keys.first().copied().unwrap_or_default()),
                        eval_args(script, keys, args),
                    )
                    .await?;
                keys.first().map(|k| k.to_string()).unwrap_or_default()
            }
        };
        if self.min_replica_acks == 0 {
            let mut replies: Vec<Value> = pipeline.all().await?;
            return Ok(replies.pop().unwrap_or(Value::Null));
        }
        // WAIT in the same pipeline, so on the same connection as the write: on
        // another connection (or node) it would wait for nothing.
        let wait_ms = self.wait_ms();
        let _: () = pipeline
            .custom(self.wait_cmd(&routed_by), vec![self.min_replica_acks, wait_ms])
            .await?;
        // try_all: a failed write must not be hidden behind WAIT's reply.
        let mut replies = pipeline.try_all::<Value>().await;
        let acked = match replies.pop() {
            Some(Ok(v)) => v.as_i64().unwrap_or(0),
            Some(Err(e)) => return Err(e.into()),
            None => 0,
        };
        let reply = match replies.pop() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(e.into()),
            None => Value::Null,
        };
        if acked < self.min_replica_acks {
            self.metrics.store_error("replica_acks");
            return Err(StoreError::Unavailable(format!(
                "written to the redis master but acknowledged by {acked} of the {} replicas --min-replica-acks requires within {wait_ms} ms; not acknowledged, retry",
                self.min_replica_acks
            )));
        }
        Ok(reply)
    }

    fn check_connected(&self) -> Result<(), StoreError> {
        if self.cluster {
            // One node down must not fail the others' commands: each fails on its own.
            return Ok(());
        }
        let dropped = self.dropped_at_ms.load(Ordering::SeqCst);
        if dropped == 0 || (now_ms() - dropped > STALE_DROP_MS && self.client.is_connected()) {
            Ok(())
        } else {
            Err(self.not_connected())
        }
    }

    /// UNAVAILABLE, saying where and, if known, why.
    fn not_connected(&self) -> StoreError {
        match self.last_error.lock().unwrap().as_deref() {
            Some(cause) => StoreError::Unavailable(format!("not connected to redis at {}: {cause}", self.target)),
            None => StoreError::Unavailable(format!("not connected to redis at {}", self.target)),
        }
    }

    /// EVAL of a writing script (see [`RedisStore::write`]).
    async fn eval(&self, script: &str, keys: &[&str], args: &[String]) -> Result<Value, StoreError> {
        self.write(Write::Eval { script, keys, args }).await
    }
}

/// Tells when Redis lost its data (restarted without persistence, flushed,
/// replaced by an empty node): `<prefix>marker` holds a random id, written
/// once (`SET NX`, no expiry) by whichever revokd connects first; each
/// process remembers the id it saw, and after every reconnect a different id
/// (or none) means every revocation written before is gone from Redis. That
/// is logged as an error and counted (`revokd_redis_data_loss_total`, alert
/// `RevokdRedisDataLoss`); the journal re-writes the last minute of this
/// process's revocations, older ones are lost.
#[derive(Debug)]
pub struct DataMarker {
    key: String,
    seen: tokio::sync::Mutex<Option<String>>,
    metrics: Metrics,
}

impl DataMarker {
    /// The marker under `prefix`.
    pub fn new(prefix: &str, metrics: Metrics) -> Self {
        metrics.redis_data_loss(0);
        DataMarker {
            key: format!("{prefix}marker"),
            seen: tokio::sync::Mutex::new(None),
            metrics,
        }
    }

    /// Writes the marker if absent, reads it, and compares it with the one seen before.
    pub async fn check(&self, client: &Client) {
        use std::hash::{BuildHasher, RandomState};
        let mine = format!("{:016x}", RandomState::new().hash_one(now_ms()));
        let pipeline = client.pipeline();
        let read = async {
            let _: () = pipeline
                .set(self.key.as_str(), mine.as_str(), None, Some(SetOptions::NX), false)
                .await?;
            let _: () = pipeline.get(self.key.as_str()).await?;
            let replies: Vec<Value> = pipeline.all().await?;
            Ok::<_, RedisError>(replies.get(1).and_then(|v| v.as_string()))
        };
        let current = match read.await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "reading the redis data marker failed");
                return;
            }
        };
        let mut seen = self.seen.lock().await;
        if let (Some(before), Some(now)) = (seen.as_ref(), current.as_ref())
            && before != now
        {
            self.metrics.redis_data_loss(1);
            tracing::error!(
                marker = %self.key,
                "redis lost its data (its marker key changed): every revocation written before is gone; \
                 the last 60 s of this instance's are written again. Configure persistence (appendonly yes) \
                 and replicas"
            );
        }
        *seen = current;
    }
}

/// Replays the journal after every (re)connect of the store's writer, until
/// it succeeds; ends with the store.
async fn replay_on_reconnect(store: std::sync::Weak<RedisStore>, due: Arc<tokio::sync::Notify>) {
    loop {
        due.notified().await;
        loop {
            let Some(store) = store.upgrade() else { return };
            match store.replay().await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(
                        revocations = n,
                        "re-asserted recently acknowledged revocations after a reconnect"
                    );
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "replay after reconnect failed; again"),
            }
            drop(store);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn id_key_kind(kind: RevocationKind) -> KeyKind {
    match kind {
        RevocationKind::Jti => KeyKind::Jti,
        RevocationKind::Session => KeyKind::Session,
    }
}

/// One write [`RedisStore::write`] can wait for replicas on.
enum Write<'a> {
    /// `SET key value EXAT until NX`.
    SetNx { key: String, value: i64, until: i64 },
    /// `EVAL script`; the first key routes it on a cluster.
    Eval {
        script: &'a str,
        keys: &'a [&'a str],
        args: &'a [String],
    },
}

/// `EVAL`, routed by its first key's slot. (fred's `ClusterHash::Offset` did
/// not route it there: measured, the script went to another node and came
/// back `MOVED`.)
fn eval_cmd(first_key: &str) -> fred::types::CustomCommand {
    cmd!(
        "EVAL",
        hash: fred::types::ClusterHash::Custom(crate::revocation::slots::slot_of_key(first_key))
    )
}

fn eval_args(script: &str, keys: &[&str], args: &[String]) -> Vec<String> {
    let mut all: Vec<String> = Vec::with_capacity(2 + keys.len() + args.len());
    all.push(script.to_owned());
    all.push(keys.len().to_string());
    all.extend(keys.iter().map(|k| k.to_string()));
    all.extend(args.iter().cloned());
    all
}

/// The kinds of keys revokd writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `<prefix>jti:<jti>`: a revoked token id.
    Jti,
    /// `<prefix>sid:{<sid>}`: a revoked session.
    Session,
    /// `<prefix>sub:<subject>`: a subject revoked before an instant.
    Subject,
    /// `<prefix>sess:{<sid>}`: a session's refresh rotation state (a hash).
    SessionState,
    /// `<prefix>succ:{<sid>}`: the pair a rotation returned, kept for the grace window only.
    Successor,
}

/// Escapes glob characters for a SCAN MATCH pattern.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What a full Redis key under `prefix` is, if it is a revocation.
pub fn classify<'k>(prefix: &str, key: &'k str) -> Option<(ChangeKind, &'k str)> {
    let rest = key.strip_prefix(prefix)?;
    if let Some(jti) = rest.strip_prefix("jti:") {
        Some((ChangeKind::Jti, jti))
    } else if let Some(sid) = rest.strip_prefix("sid:{").and_then(|r| r.strip_suffix('}')) {
        Some((ChangeKind::Session, sid))
    } else {
        rest.strip_prefix("sub:").map(|sub| (ChangeKind::Subject, sub))
    }
}

/// Reads revocation keys (full keys; any other key is skipped) in one
/// pipeline: each as the change it amounts to now (present until its expiry,
/// or gone), with its value (for a jti or session revokd wrote, the
/// revocation time in Unix ms).
pub async fn read_revocations(
    reader: &Client,
    prefix: &str,
    keys: &[String],
) -> Result<Vec<(Change, Option<i64>)>, RedisError> {
    let keys: Vec<(ChangeKind, &str)> = keys.iter().filter_map(|k| classify(prefix, k)).collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let pipeline = reader.pipeline();
    for (kind, id) in &keys {
        let kind = match kind {
            ChangeKind::Jti => KeyKind::Jti,
            ChangeKind::Session => KeyKind::Session,
            ChangeKind::Subject => KeyKind::Subject,
        };
        let full = key(prefix, kind, id);
        // Milliseconds: a hand-written sub-second expiry must not round down.
        let _: () = pipeline.pexpire_time(full.as_str()).await?;
        let _: () = pipeline.get(full.as_str()).await?;
    }
    let replies: Vec<Value> = pipeline.all().await?;
    Ok(keys
        .iter()
        .zip(replies.chunks(2))
        .map(|((kind, id), pair)| {
            let until = match pair[0].as_i64() {
                // -2: gone (deleted or expired).
                Some(-2) | None => None,
                // -1: no expiry (written by hand without EXAT): revoked for good.
                Some(-1) => Some(i64::MAX),
                Some(ms) => Some(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)),
            };
            let value = pair.get(1).and_then(Value::as_i64);
            let change = Change {
                kind: *kind,
                id: (*id).to_owned(),
                until,
                // A subject key without a readable instant revokes everything before "forever".
                revoked_before_us: if *kind == ChangeKind::Subject {
                    value.unwrap_or(i64::MAX)
                } else {
                    0
                },
            };
            (change, value)
        })
        .collect())
}

/// The key of `id` under `prefix`. Session keys carry the session id as a
/// hash tag, so the rotation script's two keys share a Redis Cluster slot.
pub fn key(prefix: &str, kind: KeyKind, id: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + id.len() + 8);
    k.push_str(prefix);
    match kind {
        KeyKind::Jti => {
            k.push_str("jti:");
            k.push_str(id);
        }
        KeyKind::Session | KeyKind::SessionState | KeyKind::Successor => {
            k.push_str(match kind {
                KeyKind::Session => "sid:{",
                KeyKind::SessionState => "sess:{",
                _ => "succ:{",
            });
            k.push_str(id);
            k.push('}');
        }
        KeyKind::Subject => {
            k.push_str("sub:");
            k.push_str(id);
        }
    }
    k
}

/// Raises a subject's "revoked before" instant, never lowers it.
const REVOKE_SUBJECT: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '')
if cur == nil or tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
end
return 1
"#;

/// Records a session's first refresh token.
const START_SESSION: &str = r#"
redis.call('HSET', KEYS[1], 'current', ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
"#;

/// One refresh-token rotation. KEYS: session state, session revocation, the
/// successor (all with the session's hash tag). ARGV: presented jti, next jti,
/// successor, now ms, grace ms, state EXAT, revocation EXAT. The successor
/// (live tokens) is kept only for the grace window, in its own key.
const ROTATE_REFRESH: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {'revoked', ''} end
local cur = redis.call('HGET', KEYS[1], 'current')
if not cur then return {'unknown', ''} end
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'current', ARGV[2], 'previous', ARGV[1], 'rotated_ms', ARGV[4])
  redis.call('EXPIREAT', KEYS[1], ARGV[6])
  if tonumber(ARGV[5]) > 0 and ARGV[3] ~= '' then
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5])
  end
  return {'rotated', ''}
end
if redis.call('HGET', KEYS[1], 'previous') == ARGV[1] and tonumber(ARGV[5]) > 0 then
  local at = tonumber(redis.call('HGET', KEYS[1], 'rotated_ms'))
  local successor = redis.call('GET', KEYS[3])
  if successor and tonumber(ARGV[4]) - at <= tonumber(ARGV[5]) then
    return {'retry', successor}
  end
end
redis.call('SET', KEYS[2], ARGV[4], 'EXAT', ARGV[7])
redis.call('DEL', KEYS[3])
return {'reuse', ''}
"#;

#[async_trait::async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(&self, kind: RevocationKind, id: &str, until: i64) -> Result<bool, StoreError> {
        let reply = self
            .write(Write::SetNx {
                key: self.key(id_key_kind(kind), id),
                value: now_ms(),
                until,
            })
            .await?;
        self.journal.record(Acked::Id {
            kind,
            id: id.to_owned(),
            until,
        });
        // NX: "OK" when newly set, nil when it was already revoked.
        Ok(!matches!(reply, Value::Null))
    }

    async fn revoke_subject(&self, subject: &str, revoked_before_us: i64, until: i64) -> Result<(), StoreError> {
        let key = self.key(KeyKind::Subject, subject);
        self.eval(
            REVOKE_SUBJECT,
            &[&key],
            &[revoked_before_us.to_string(), until.to_string()],
        )
        .await?;
        self.journal.record(Acked::Subject {
            subject: subject.to_owned(),
            before_us: revoked_before_us,
            until,
        });
        Ok(())
    }

    async fn exists_foreign(&self, key: &str) -> Result<bool, StoreError> {
        self.check_connected()?;
        let n: i64 = self.client.exists(key).await?;
        Ok(n > 0)
    }

    async fn is_revoked(&self, q: &RevocationQuery<'_>) -> Result<bool, StoreError> {
        self.check_connected()?;
        // One round trip; single-key commands, so it works on a cluster too.
        let pipeline = self.client.pipeline();
        let _: () = pipeline.exists(self.key(KeyKind::Jti, q.jti)).await?;
        let _: () = pipeline.get(self.key(KeyKind::Subject, q.subject)).await?;
        if let Some(sid) = q.session_id {
            let _: () = pipeline.exists(self.key(KeyKind::Session, sid)).await?;
        }
        let replies: Vec<Value> = pipeline.all().await?;
        let jti = replies.first().and_then(Value::as_i64).unwrap_or(0) > 0;
        // A subject key whose value is not an instant (written by hand) revokes everything.
        let subject = match replies.get(1) {
            None | Some(Value::Null) => false,
            Some(v) => q.covered_by_subject(v.as_i64().unwrap_or(i64::MAX)),
        };
        let session = replies.get(2).and_then(Value::as_i64).unwrap_or(0) > 0;
        // Redis may have lost what this process acknowledged (a failover, a
        // restart) and not had it written again yet.
        Ok(jti || subject || session || self.journal.covers(q))
    }

    async fn start_session(&self, session_id: &str, refresh_jti: &str, until: i64) -> Result<(), StoreError> {
        let key = self.key(KeyKind::SessionState, session_id);
        self.eval(START_SESSION, &[&key], &[refresh_jti.to_owned(), until.to_string()])
            .await?;
        Ok(())
    }

    async fn current_refresh(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        self.check_connected()?;
        let key = self.key(KeyKind::SessionState, session_id);
        // A custom HGET (revokd uses no other hash command), routed by the key's slot.
        let hget = cmd!(
            "HGET",
            hash: fred::types::ClusterHash::Custom(crate::revocation::slots::slot_of_key(&key))
        );
        let current: Option<String> = self.client.custom(hget, vec![key, "current".to_owned()]).await?;
        Ok(current)
    }

    async fn rotate_refresh(&self, r: &Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        let state = self.key(KeyKind::SessionState, r.session_id);
        let revoked = self.key(KeyKind::Session, r.session_id);
        let successor = self.key(KeyKind::Successor, r.session_id);
        let reply = self
            .eval(
                ROTATE_REFRESH,
                &[&state, &revoked, &successor],
                &[
                    r.presented_jti.to_owned(),
                    r.next_jti.to_owned(),
                    r.successor.to_owned(),
                    r.now_ms.to_string(),
                    r.grace_ms.to_string(),
                    r.state_until.to_string(),
                    r.revoke_until.to_string(),
                ],
            )
            .await?;
        let parts: Vec<String> = reply
            .convert()
            .map_err(|e: RedisError| StoreError::Protocol(format!("rotation reply: {e}")))?;
        Ok(match parts.first().map(String::as_str) {
            Some("rotated") => RotationOutcome::Rotated,
            Some("retry") => RotationOutcome::Retry(parts.get(1).cloned().unwrap_or_default()),
            Some("reuse") => {
                self.journal.record(Acked::Id {
                    kind: RevocationKind::Session,
                    id: r.session_id.to_owned(),
                    until: r.revoke_until,
                });
                RotationOutcome::Reused
            }
            Some("revoked") => RotationOutcome::SessionRevoked,
            Some("unknown") => RotationOutcome::UnknownSession,
            other => return Err(StoreError::Protocol(format!("rotation reply {other:?}"))),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_connected()?;
        if self.cluster {
            // Every primary must answer.
            use fred::interfaces::ClusterInterface;
            let primaries = self
                .client
                .cached_cluster_state()
                .map(|s| s.unique_primary_nodes())
                .unwrap_or_default();
            if primaries.is_empty() {
                return Err(StoreError::Unavailable("no redis cluster layout yet".into()));
            }
            for node in primaries {
                let name = node.to_string();
                let options = Options {
                    cluster_node: Some(node),
                    ..self.options.clone()
                };
                let pong: Result<String, _> = self.client.with_options(&options).ping(None).await;
                pong.map_err(|e| StoreError::Unavailable(format!("redis node {name}: {e}")))?;
            }
            return Ok(());
        }
        let _: String = self.client.with_options(&self.options).ping(None).await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
