//! [`ClusterMirror`]: the mirror over a Redis Cluster, complete over every
//! shard. One [`MirrorSync`] per node the layout names, replicas included
//! (so a promoted replica's connection and tracking are already up), each on
//! a connection of its own: tracking is per node, a scan is pinned to its
//! node, and a primary's heartbeat carries a hash tag of one of its slots so
//! that it proves that node. Invalidated keys are re-read through a routed
//! client (a key may have moved).
//!
//! Trust is per hash slot: a verify is answered from the mirror only if the
//! primaries serving its keys' slots (jti, subject, session) are each synced
//! and fresh; otherwise it looks those keys up, routed to their nodes. A
//! node whose role or slots change in the polled layout is untrusted at
//! once, then re-armed and rescanned; a node that leaves is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use fred::clients::Client;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::revocation::RevocationQuery;
use crate::revocation::cluster::{Layout, NodeAddr};
use crate::revocation::mirror::freshness::{Coverage, NodeState};
use crate::revocation::mirror::sync::{MirrorSync, Role, Shared, SyncTasks};
use crate::revocation::mirror::table::RevocationMirror;
use crate::revocation::slots::{slot_of, tag_for_slot};
use crate::revocation::topology::RedisTarget;

/// Which node's state answers for each slot.
#[derive(Debug, Default)]
struct SlotOwners {
    /// The primaries that serve slots.
    nodes: Vec<Arc<NodeState>>,
    /// Per slot, an index in `nodes`; `u16::MAX` if unassigned (never trusted).
    owners: Vec<u16>,
}

impl SlotOwners {
    /// The nodes that serve at least one slot.
    fn serving(&self) -> Vec<&Arc<NodeState>> {
        let mut used = vec![false; self.nodes.len()];
        for &i in &self.owners {
            if let Some(u) = used.get_mut(usize::from(i)) {
                *u = true;
            }
        }
        self.nodes
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(n, _)| n)
            .collect()
    }

    fn trusted(&self, slot: u16, max_staleness: Duration) -> bool {
        match self.owners.get(usize::from(slot)) {
            Some(&i) if i != u16::MAX => self.nodes[usize::from(i)].is_trusted(max_staleness),
            _ => false,
        }
    }
}

/// The mirror over every node of a Redis Cluster.
pub struct ClusterMirror {
    target: RedisTarget,
    shared: Shared,
    /// Re-reads invalidated keys, routed by slot.
    reader: Client,
    prefix: String,
    owners: ArcSwap<SlotOwners>,
    mirror: Arc<RevocationMirror>,
    metrics: Metrics,
}

impl std::fmt::Debug for ClusterMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMirror")
            .field("primaries", &self.owners.load().nodes.len())
            .finish_non_exhaustive()
    }
}

/// What the mirror knows of one node.
struct Followed {
    sync: Arc<MirrorSync>,
    _tasks: SyncTasks,
    primary: bool,
    slots: Vec<u16>,
}

impl ClusterMirror {
    /// Starts following every node of each layout `layouts` publishes;
    /// `reader` is a routed client of the cluster.
    pub fn start(
        target: &RedisTarget,
        shared: Shared,
        reader: Client,
        mirror: Arc<RevocationMirror>,
        layouts: watch::Receiver<Option<Arc<Layout>>>,
        metrics: Metrics,
    ) -> (Arc<Self>, SyncTasks) {
        metrics.mirror_synced(false);
        metrics.mirror_entries(0);
        let cluster = Arc::new(ClusterMirror {
            target: target.clone(),
            prefix: shared.prefix().to_owned(),
            shared,
            reader,
            owners: ArcSwap::from_pointee(SlotOwners::default()),
            mirror,
            metrics,
        });
        let every = cluster.shared.heartbeat_every();
        let tasks = SyncTasks::new(vec![
            tokio::spawn(cluster.clone().follow(layouts)).abort_handle(),
            tokio::spawn(cluster.clone().gauges(every)).abort_handle(),
        ]);
        (cluster, tasks)
    }

    /// Applies each new layout.
    async fn follow(self: Arc<Self>, mut layouts: watch::Receiver<Option<Arc<Layout>>>) {
        let mut followed: HashMap<NodeAddr, Followed> = HashMap::new();
        loop {
            let layout = layouts.borrow_and_update().clone();
            if let Some(layout) = layout {
                self.apply(&layout, &mut followed);
            }
            if layouts.changed().await.is_err() {
                return;
            }
        }
    }

    fn apply(&self, layout: &Layout, followed: &mut HashMap<NodeAddr, Followed>) {
        followed.retain(|addr, f| {
            let keep = layout.nodes.iter().any(|n| &n.addr == addr);
            if !keep {
                tracing::info!(node = %addr, "redis node left the cluster layout; no longer followed");
                f.sync.stop();
            }
            keep
        });
        let mut states: Vec<Arc<NodeState>> = Vec::with_capacity(layout.nodes.len());
        for (i, node) in layout.nodes.iter().enumerate() {
            let slots = if node.primary { layout.slots_of(i) } else { Vec::new() };
            let role = if node.primary {
                Role::Primary(slots.last().map(|&s| tag_for_slot(s)))
            } else {
                Role::Replica
            };
            match followed.get_mut(&node.addr) {
                Some(f) => {
                    // Role first, then slots: a promoted replica counts as a role change.
                    let cause = if f.primary != node.primary {
                        Some("role_change")
                    } else if f.slots != slots {
                        Some("slot_change")
                    } else {
                        None
                    };
                    if let Some(cause) = cause {
                        tracing::info!(node = %node.addr, primary = node.primary, slots = slots.len(), cause, "redis node changed; rescanning its part of the mirror");
                        f.sync.reassign(role, cause);
                        f.primary = node.primary;
                        f.slots = slots;
                    }
                }
                None => {
                    let target = self.target.node(&node.addr.host, node.addr.port);
                    match MirrorSync::start_node(&target, self.shared.clone(), Some(self.reader.clone()), role) {
                        Ok((sync, tasks)) => {
                            followed.insert(
                                node.addr.clone(),
                                Followed {
                                    sync,
                                    _tasks: tasks,
                                    primary: node.primary,
                                    slots,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.addr, error = %e, "cannot follow redis node");
                        }
                    }
                }
            }
            states.push(match followed.get(&node.addr) {
                Some(f) => f.sync.node(),
                // Not followed: never trusted.
                None => Arc::new(NodeState::new()),
            });
        }
        // Only after the changed nodes were marked untrusted does the new map apply.
        let owners = layout
            .owners
            .iter()
            .map(|o| o.unwrap_or(u16::MAX))
            .collect::<Vec<u16>>();
        self.owners.store(Arc::new(SlotOwners { nodes: states, owners }));
    }

    /// The mirror's gauges, for all nodes at once; expiry purge.
    async fn gauges(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge = std::time::Instant::now();
        loop {
            tick.tick().await;
            let owners = self.owners.load();
            let serving = owners.serving();
            let complete = !serving.is_empty() && !owners.owners.contains(&u16::MAX);
            let synced = complete && serving.iter().all(|n| n.is_synced());
            self.metrics.mirror_synced(synced);
            if let Some(stalest) = serving.iter().map(|n| n.staleness()).max() {
                self.metrics.mirror_staleness(stalest);
            }
            if let Some(last) = serving.iter().map(|n| n.last_resync_ms()).max()
                && last > 0
            {
                self.metrics.mirror_resynced(last);
            }
            if last_purge.elapsed() >= Duration::from_secs(10) {
                self.mirror.purge(crate::tokens::unix_seconds(SystemTime::now()));
                last_purge = std::time::Instant::now();
            }
            self.metrics.mirror_entries(self.mirror.len());
        }
    }
}

impl Coverage for ClusterMirror {
    fn covers(&self, q: &RevocationQuery<'_>, max_staleness: Duration) -> bool {
        let owners = self.owners.load();
        let p = self.prefix.as_bytes();
        let trusted = |parts: &[&[u8]]| owners.trusted(slot_of(parts), max_staleness);
        trusted(&[p, b"jti:", q.jti.as_bytes()])
            && trusted(&[p, b"sub:", q.subject.as_bytes()])
            && q.session_id
                .is_none_or(|sid| trusted(&[p, b"sid:{", sid.as_bytes(), b"}"]))
    }

    fn complete(&self, max_staleness: Duration) -> bool {
        let owners = self.owners.load();
        let serving = owners.serving();
        !serving.is_empty() && !owners.owners.contains(&u16::MAX) && serving.iter().all(|n| n.is_trusted(max_staleness))
    }

    fn staleness(&self) -> Duration {
        self.owners
            .load()
            .serving()
            .iter()
            .map(|n| n.staleness())
            .max()
            .unwrap_or_default()
    }
}
