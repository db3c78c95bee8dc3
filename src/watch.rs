//! `WatchRevocations`: the live revocation set streamed to a client that
//! answers verifies in-process (revokd_client's local mode).
//!
//! One task per stream: subscribe to the store's [`RevocationFeed`], send the
//! verification settings, the key set, a snapshot, `synced`, then every change
//! in batches, the key set again when it changes, and a heartbeat every
//! `max_staleness / 4` while the store proves its set fresh. Before a heartbeat the task drains every change already announced,
//! so a heartbeat saying "fresh as of T" always follows the changes made
//! before T.
//!
//! Bounded: the response channel holds [`STREAM_BUFFER`] messages, and a
//! watcher that falls [`FEED_CAPACITY`] changes behind is cut off (ABORTED)
//! rather than buffered; so is every watcher when the store's changes may have
//! had a gap. A client subscribes again and gets a new snapshot. Server
//! shutdown ends streams with UNAVAILABLE.
//!
//! [`RevocationFeed`]: crate::revocation::feed::RevocationFeed
//! [`FEED_CAPACITY`]: crate::revocation::feed::FEED_CAPACITY

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::authority::TokenAuthority;
use crate::error::{Error, StoreError};
use crate::keys::KeyRing;
use crate::metrics::Metrics;
use crate::proto::v1::watch_revocations_response::Event;
use crate::proto::v1::{
    KeySet, RevocationBatch, SnapshotComplete, WatchHeartbeat, WatchRevocationsResponse, WatchStarted,
};
use crate::revocation::RevocationStore;
use crate::revocation::feed::{Change, ChangeKind, FEED_CAPACITY};

/// Messages a stream may have waiting for its consumer.
pub(crate) const STREAM_BUFFER: usize = 16;

/// The most revocations in one message.
const MAX_BATCH: usize = 512;

/// A watch stream as tonic sends it: the task's messages, unless the task
/// cut the stream off; then its final status comes next, ahead of anything
/// still queued (the consumer must start over anyway).
pub(crate) struct WatchStream {
    rx: ReceiverStream<Result<WatchRevocationsResponse, Status>>,
    cut: Arc<std::sync::Mutex<Option<Status>>>,
    done: bool,
}

impl tokio_stream::Stream for WatchStream {
    type Item = Result<WatchRevocationsResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        let cut = self.cut.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(status) = cut {
            self.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        let next = std::pin::Pin::new(&mut self.rx).poll_next(cx);
        if let Poll::Ready(None) = next {
            // The task ended: it may have cut the stream off just now.
            self.done = true;
            let cut = self.cut.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Poll::Ready(cut.map(Err));
        }
        next
    }
}

/// Starts watch streams over one store.
#[derive(Clone)]
pub(crate) struct Watches {
    store: Arc<dyn RevocationStore>,
    keys: Arc<ArcSwap<KeyRing>>,
    started: WatchStarted,
    heartbeat_every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    metrics: Metrics,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("heartbeat_every", &self.heartbeat_every)
            .finish_non_exhaustive()
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

impl Watches {
    /// Watches of `authority`'s store, trusted up to `max_staleness`, ending when `stop` turns true.
    pub(crate) fn new(
        authority: &TokenAuthority,
        max_staleness: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
        metrics: Metrics,
    ) -> Self {
        let policy = authority.verifier.policy();
        let heartbeat_every = (max_staleness / 4).max(Duration::from_millis(5));
        Watches {
            store: authority.store.clone(),
            keys: authority.verifier.key_ring(),
            started: WatchStarted {
                issuer: policy.issuer.clone(),
                leeway: Some(duration(policy.leeway)),
                max_lifetime: Some(duration(policy.max_lifetime)),
                max_token_bytes: u32::try_from(policy.max_token_bytes).unwrap_or(u32::MAX),
                heartbeat_interval: Some(duration(heartbeat_every)),
                max_staleness: Some(duration(max_staleness)),
            },
            heartbeat_every,
            stop,
            metrics,
        }
    }

    /// A new stream, or why none can start now.
    pub(crate) fn start(&self) -> Result<WatchStream, Error> {
        let Some(feed) = self.store.feed() else {
            return Err(Error::Unsupported(
                "this revokd keeps no revocation feed (--revocation-check redis): verify with VerifyToken".into(),
            ));
        };
        if self.store.freshness().is_none() {
            return Err(Error::Store(StoreError::Unavailable(
                "the revocation set is not proven fresh yet".into(),
            )));
        }
        // Subscribed before the snapshot is read: nothing falls between them.
        let (changes, gaps) = feed.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let cut = Arc::new(std::sync::Mutex::new(None));
        let stream = Stream {
            watches: self.clone(),
            changes,
            gaps,
            tx,
            cut: cut.clone(),
        };
        tokio::spawn(stream.run());
        Ok(WatchStream {
            rx: ReceiverStream::new(rx),
            cut,
            done: false,
        })
    }
}

/// One watch stream's task.
struct Stream {
    watches: Watches,
    changes: broadcast::Receiver<Change>,
    /// The feed's gap count at subscription: any other means changes were missed.
    gaps: u64,
    tx: mpsc::Sender<Result<WatchRevocationsResponse, Status>>,
    /// Where the final status goes when the task cuts the stream off.
    cut: Arc<std::sync::Mutex<Option<Status>>>,
}

/// Why a stream ended.
enum End {
    /// The consumer left.
    Gone,
    /// Sent to the consumer as the stream's final status.
    Status(Status, &'static str),
}

fn event(event: Event) -> WatchRevocationsResponse {
    WatchRevocationsResponse { event: Some(event) }
}

impl From<&Change> for crate::proto::v1::Revocation {
    fn from(c: &Change) -> Self {
        use crate::proto::v1::RevocationKind as Kind;
        let kind = match c.kind {
            ChangeKind::Jti => Kind::Jti,
            ChangeKind::Session => Kind::Session,
            ChangeKind::Subject => Kind::Subject,
        };
        crate::proto::v1::Revocation {
            kind: kind as i32,
            id: c.id.clone(),
            expires_at: c.until.unwrap_or(0),
            revoked_before_us: c.revoked_before_us,
            removed: c.until.is_none(),
        }
    }
}

/// Completes when the server starts shutting down.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The consumer fell `n` changes behind.
fn cut_off(n: u64) -> End {
    End::Status(
        Status::aborted(format!("fell {n} revocations behind: watch again for a new snapshot")),
        "lagged",
    )
}

fn shutting_down() -> End {
    End::Status(Status::unavailable("revokd is shutting down"), "shutdown")
}

fn closed() -> End {
    End::Status(Status::unavailable("revocation feed closed"), "closed")
}

fn key_set(keys: &KeyRing) -> WatchRevocationsResponse {
    event(Event::Keys(KeySet {
        jwks_json: keys.jwks_json().to_owned(),
        kids: keys.verifying_keys().iter().map(|k| k.kid.clone()).collect(),
    }))
}

fn batch(changes: &[Change]) -> WatchRevocationsResponse {
    event(Event::Revocations(RevocationBatch {
        revocations: changes.iter().map(Into::into).collect(),
    }))
}

impl Stream {
    async fn run(mut self) {
        let metrics = self.watches.metrics.clone();
        metrics.watch_streams(1);
        let end = self.serve().await;
        metrics.watch_streams(-1);
        if let Err(End::Status(status, cause)) = end {
            metrics.watch_ended(cause);
            tracing::debug!(cause, "revocation watch ended");
            *self.cut.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        }
        // Dropping the sender wakes the stream, which then ends with the status.
    }

    /// Queues a message; while the consumer does not take it, checks every
    /// heartbeat period whether it has fallen too far behind (or the feed had a
    /// gap, or the server stops) and cuts it off then.
    async fn send(&self, message: WatchRevocationsResponse) -> Result<(), End> {
        self.send_with(move || message).await
    }

    /// [`Self::send`], the message made once there is room for it.
    async fn send_with(&self, message: impl FnOnce() -> WatchRevocationsResponse) -> Result<(), End> {
        loop {
            match tokio::time::timeout(self.watches.heartbeat_every, self.tx.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(Ok(message()));
                    return Ok(());
                }
                Ok(Err(_)) => return Err(End::Gone),
                Err(_) => {
                    let behind = self.changes.len();
                    if behind >= FEED_CAPACITY {
                        return Err(cut_off(behind as u64));
                    }
                    self.check_gaps()?;
                    if *self.watches.stop.borrow() {
                        return Err(shutting_down());
                    }
                }
            }
        }
    }

    /// Changes may have been missed since subscribing: the consumer starts over.
    fn check_gaps(&self) -> Result<(), End> {
        if self.watches.store.feed().is_some_and(|f| f.gaps() != self.gaps) {
            return Err(End::Status(
                Status::aborted("revocations may have been missed: watch again for a new snapshot"),
                "gap",
            ));
        }
        Ok(())
    }

    async fn serve(&mut self) -> Result<(), End> {
        self.send(event(Event::Started(self.watches.started.clone()))).await?;
        let mut keys = self.watches.keys.load_full();
        self.send(key_set(&keys)).await?;
        let count = self.snapshot().await?;
        self.send(event(Event::Synced(SnapshotComplete { revocations: count })))
            .await?;
        let mut tick = tokio::time::interval(self.watches.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = stopped(self.watches.stop.clone());
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return Err(shutting_down()),
                () = self.tx.closed() => return Err(End::Gone),
                // Before changes: a steady stream of them must not starve the heartbeat
                // (which sends the pending changes first anyway).
                _ = tick.tick() => {
                    // A key set change goes out before the heartbeat that covers it.
                    let now = self.watches.keys.load_full();
                    if !Arc::ptr_eq(&now, &keys) {
                        keys = now;
                        self.send(key_set(&keys)).await?;
                    }
                    self.heartbeat().await?;
                }
                change = self.changes.recv() => {
                    let first = self.received(change)?;
                    let mut pending = vec![first];
                    self.drain(&mut pending, MAX_BATCH)?;
                    self.send(batch(&pending)).await?;
                }
            }
        }
    }

    /// The snapshot, forwarded page by page; returns how many revocations it held.
    async fn snapshot(&mut self) -> Result<u64, End> {
        let (pages_tx, mut pages) = mpsc::channel::<Vec<Change>>(2);
        let store = self.watches.store.clone();
        let reader = tokio::spawn(async move { store.snapshot(&pages_tx).await });
        let mut count = 0u64;
        while let Some(page) = pages.recv().await {
            count += page.len() as u64;
            for chunk in page.chunks(MAX_BATCH) {
                self.send(batch(chunk)).await?;
            }
        }
        match reader.await {
            Ok(Ok(())) => Ok(count),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "revocation snapshot failed");
                Err(End::Status(
                    Status::unavailable("revocation store unavailable"),
                    "store",
                ))
            }
            Err(_) => Err(End::Status(Status::internal("internal error"), "store")),
        }
    }

    fn received(&self, change: Result<Change, broadcast::error::RecvError>) -> Result<Change, End> {
        match change {
            Ok(c) => Ok(c),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(cut_off(n)),
            Err(broadcast::error::RecvError::Closed) => Err(closed()),
        }
    }

    /// Moves the changes already announced into `pending`, up to `limit`.
    fn drain(&mut self, pending: &mut Vec<Change>, limit: usize) -> Result<(), End> {
        use broadcast::error::TryRecvError;
        while pending.len() < limit {
            match self.changes.try_recv() {
                Ok(c) => pending.push(c),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Lagged(n)) => return Err(cut_off(n)),
                Err(TryRecvError::Closed) => return Err(closed()),
            }
        }
        Ok(())
    }

    /// Proves the set fresh: the changes announced before the proof first.
    async fn heartbeat(&mut self) -> Result<(), End> {
        self.check_gaps()?;
        // Not fresh now: no heartbeat, and the client stops trusting its copy.
        let Some(staleness) = self.watches.store.freshness() else {
            return Ok(());
        };
        let measured = std::time::Instant::now();
        let mut pending = Vec::new();
        self.drain(&mut pending, usize::MAX)?;
        for chunk in pending.chunks(MAX_BATCH) {
            self.send(batch(chunk)).await?;
        }
        // The proof ages while the consumer makes no room: its age when queued.
        self.send_with(|| {
            event(Event::Heartbeat(WatchHeartbeat {
                staleness: Some(duration(staleness + measured.elapsed())),
            }))
        })
        .await
    }
}
