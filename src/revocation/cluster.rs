//! A Redis Cluster's layout, followed by polling: [`ClusterWatch`] asks one
//! node for `CLUSTER SHARDS` every heartbeat, and when the answer changes
//! (a failover, a reshard, a node added or gone) it tells fred to re-read
//! its routing table (fred only does on a redirect) and publishes the new
//! [`Layout`] to the mirror, which re-arms and rescans the nodes whose role
//! or slots changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::cmd;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::{ClusterHash, Value};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::revocation::slots::SLOTS;

/// A node of the cluster as the layout names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// The host (the node's preferred endpoint, else its IP).
    pub host: String,
    /// The port (the TLS port on `rediss-cluster://`).
    pub port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One node and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRole {
    /// Where it is.
    pub addr: NodeAddr,
    /// Whether it is a primary (else a replica).
    pub primary: bool,
}

/// Which node serves each slot, and every node revokd should follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Every online node, primaries and replicas, sorted by address.
    pub nodes: Vec<NodeRole>,
    /// Per slot, the index in `nodes` of its primary; `None` if unassigned.
    pub owners: Vec<Option<u16>>,
}

impl Layout {
    /// The slots `node` (an index in `nodes`) serves, as a sorted list.
    pub fn slots_of(&self, node: usize) -> Vec<u16> {
        (0..SLOTS as u16)
            .filter(|&s| self.owners[usize::from(s)] == Some(node as u16))
            .collect()
    }

    /// How many primaries and replicas.
    pub fn counts(&self) -> (usize, usize) {
        let primaries = self.nodes.iter().filter(|n| n.primary).count();
        (primaries, self.nodes.len() - primaries)
    }

    /// Parses a `CLUSTER SHARDS` reply (RESP3 maps or RESP2 flat pairs).
    /// Nodes that are not `online` are left out; `tls` picks `tls-port`.
    pub fn from_shards(reply: Value, tls: bool) -> Result<Layout, String> {
        let mut nodes: Vec<NodeRole> = Vec::new();
        let mut ranges: Vec<(u16, u16, NodeAddr)> = Vec::new();
        for shard in reply.into_array() {
            let mut shard = fields(shard)?;
            let slots: Vec<i64> = shard
                .remove("slots")
                .ok_or("a shard without slots")?
                .into_array()
                .iter()
                .map(|v| v.as_i64().ok_or("a slot that is not a number"))
                .collect::<Result<_, _>>()?;
            let mut primary: Option<NodeAddr> = None;
            for node in shard.remove("nodes").ok_or("a shard without nodes")?.into_array() {
                let mut node = fields(node)?;
                let text = |node: &mut HashMap<String, Value>, k: &str| -> Option<String> {
                    node.remove(k)
                        .and_then(|v| v.as_string())
                        .filter(|s| !s.is_empty() && s != "?")
                };
                if text(&mut node, "health").as_deref() != Some("online") {
                    continue;
                }
                let port_key = if tls { "tls-port" } else { "port" };
                let Some(port) = node
                    .remove(port_key)
                    .and_then(|v| v.as_i64())
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                let Some(host) = text(&mut node, "endpoint").or_else(|| text(&mut node, "ip")) else {
                    continue;
                };
                let is_primary = text(&mut node, "role").as_deref() == Some("master");
                let addr = NodeAddr { host, port };
                if is_primary {
                    primary = Some(addr.clone());
                }
                nodes.push(NodeRole {
                    addr,
                    primary: is_primary,
                });
            }
            if let Some(primary) = primary {
                for pair in slots.chunks(2) {
                    let (Some(&a), Some(&b)) = (pair.first(), pair.get(1)) else {
                        return Err("an odd slot range list".into());
                    };
                    let in_range = |s: i64| (0..SLOTS as i64).contains(&s);
                    if !in_range(a) || !in_range(b) || a > b {
                        return Err(format!("a bad slot range {a}-{b}"));
                    }
                    ranges.push((a as u16, b as u16, primary.clone()));
                }
            }
        }
        nodes.sort_by(|a, b| a.addr.cmp(&b.addr));
        nodes.dedup_by(|a, b| a.addr == b.addr);
        let index: HashMap<&NodeAddr, u16> = nodes.iter().enumerate().map(|(i, n)| (&n.addr, i as u16)).collect();
        let mut owners = vec![None; SLOTS];
        for (a, b, addr) in &ranges {
            for slot in *a..=*b {
                owners[usize::from(slot)] = index.get(addr).copied();
            }
        }
        Ok(Layout { nodes, owners })
    }
}

/// A map reply as `name -> value`.
fn fields(v: Value) -> Result<HashMap<String, Value>, String> {
    let map = v.into_map().map_err(|e| format!("not a map: {e}"))?;
    Ok(map
        .inner()
        .into_iter()
        .filter_map(|(k, v)| k.into_string().map(|k| (k, v)))
        .collect())
}

/// Asks the cluster for its layout (any node that answers).
pub async fn fetch_layout(client: &Client, tls: bool) -> Result<Layout, String> {
    let mut last = String::new();
    // A random node each time: a dead one must not stop the polls.
    for _ in 0..3 {
        let reply: Result<Value, _> = client
            .custom(cmd!("CLUSTER", hash: ClusterHash::Random), vec!["SHARDS"])
            .await;
        match reply {
            Ok(v) => return Layout::from_shards(v, tls),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Polls the layout and publishes every change.
#[derive(Debug)]
pub struct ClusterWatch {
    layouts: watch::Receiver<Option<Arc<Layout>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl ClusterWatch {
    /// Starts polling through `client` (a clustered client) every `interval`;
    /// `clients` re-read their routing whenever the layout changes.
    pub fn start(client: Client, clients: Vec<Client>, tls: bool, interval: Duration, metrics: Metrics) -> Self {
        let (tx, layouts) = watch::channel(None);
        let handle = tokio::spawn(poll(client, clients, tls, interval, tx, metrics));
        ClusterWatch { layouts, handle }
    }

    /// The latest layout and its changes.
    pub fn layouts(&self) -> watch::Receiver<Option<Arc<Layout>>> {
        self.layouts.clone()
    }
}

async fn poll(
    client: Client,
    clients: Vec<Client>,
    tls: bool,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Layout>>>,
    metrics: Metrics,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let layout = match fetch_layout(&client, tls).await {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the redis cluster layout; retrying");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        let changed = tx.borrow().as_deref() != Some(&layout);
        if !changed {
            continue;
        }
        let (primaries, replicas) = layout.counts();
        let unassigned = layout.owners.iter().filter(|o| o.is_none()).count();
        tracing::info!(
            primaries,
            replicas,
            unassigned_slots = unassigned,
            "redis cluster layout"
        );
        metrics.store_nodes(primaries, replicas);
        tx.send_replace(Some(Arc::new(layout)));
        for c in &clients {
            let c = c.clone();
            tokio::spawn(async move {
                let _ = c.sync_cluster().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ip: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            "id".into(),
            "x".into(),
            "port".into(),
            port.into(),
            "ip".into(),
            ip.into(),
            "endpoint".into(),
            ip.into(),
            "role".into(),
            role.into(),
            "health".into(),
            health.into(),
        ])
    }

    #[test]
    fn parses_shards_with_online_nodes_only() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                "slots".into(),
                Value::Array(vec![0.into(), 5460.into(), 10923.into(), 10923.into()]),
                "nodes".into(),
                Value::Array(vec![
                    node("10.0.0.1", 7000, "master", "online"),
                    node("10.0.0.4", 7003, "replica", "online"),
                ]),
            ]),
            Value::Array(vec![
                "slots".into(),
                Value::Array(vec![5461.into(), 10922.into()]),
                "nodes".into(),
                Value::Array(vec![
                    node("10.0.0.2", 7001, "master", "failed"),
                    node("10.0.0.5", 7004, "master", "online"),
                ]),
            ]),
        ]);
        let layout = Layout::from_shards(reply, false).unwrap();
        assert_eq!(layout.nodes.len(), 3, "{layout:?}");
        assert_eq!(layout.counts(), (2, 1));
        let owner = |slot: usize| layout.owners[slot].map(|i| layout.nodes[usize::from(i)].addr.to_string());
        assert_eq!(owner(0).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(owner(10923).as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(owner(6000).as_deref(), Some("10.0.0.5:7004"));
        assert_eq!(owner(16383), None);
        let first = layout.nodes.iter().position(|n| n.addr.port == 7000).unwrap();
        assert_eq!(layout.slots_of(first).len(), 5461 + 1);
    }

    #[test]
    fn refuses_nonsense() {
        let bad = Value::Array(vec![Value::Array(vec![
            "slots".into(),
            Value::Array(vec![5.into(), 2.into()]),
            "nodes".into(),
            Value::Array(vec![node("h", 1, "master", "online")]),
        ])]);
        assert!(Layout::from_shards(bad, false).is_err());
        assert!(Layout::from_shards(Value::Array(vec![1.into()]), false).is_err());
    }
}
