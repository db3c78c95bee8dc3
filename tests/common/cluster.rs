//! A Redis Cluster on loopback: 3 primaries and 3 replicas
//! (`cluster-node-timeout 1000`, `cluster-replica-validity-factor 0`, AOF),
//! each a real `redis-server` (or `valkey-server`) child with its own
//! directory, created with `redis-cli --cluster create`. Readiness is polled,
//! never slept for: every node says `cluster_state:ok` with all 16384 slots,
//! every node reports the same shards, and every replica's link is up.
//!
//! Ports: a node needs its port and its bus port (port + 10000). Both are
//! taken below the kernel's ephemeral range, so neither can be handed out by
//! `bind(0)` (the other fixtures' `free_port`) or be the source port of some
//! connection; a process-wide registry keeps the clusters of parallel tests
//! apart, and a node that still loses a race for a port is started again on
//! another. Every child is SIGKILLed by pid on drop, then the directory goes.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::resp::{Reply, info_field, query};
use super::{redis_cmd, redis_server_binary};

/// The distance from a node's port to its cluster bus port.
const BUS_OFFSET: u16 = 10_000;

/// How long a node may take to answer PING, and the cluster to settle.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Every port (and bus port) a cluster of this test process has taken; never
/// released, so a killed node's port is still its own when it restarts.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// One cluster node.
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// SIGSTOPped by [`RedisCluster::pause`]: running, but not answering.
    /// Atomic because pausing takes `&self` (a test pauses a cluster it lends out).
    paused: AtomicBool,
}

impl Node {
    fn spawn(&mut self, binary: &Path) {
        let child = Command::new(binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
                // A replica shows as `loading` (not `online`) in the other
                // nodes' CLUSTER SHARDS until its replication offset moves; on
                // an idle primary that is its PING to replicas, every 10 s by
                // default.
                "--repl-ping-replica-period",
                "1",
                // A full sync (a new replica, a restarted node) starts at
                // once rather than after waiting 5 s for more replicas.
                "--repl-diskless-sync-delay",
                "0",
                "--appendonly",
                "yes",
                "--save",
                "",
                "--dir",
                self.dir.to_str().unwrap(),
                "--logfile",
                "node.log",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        self.child = Some(child);
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Waits until it answers PING; `Err` with its log's tail if it exited.
    fn wait_pong(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if redis_cmd(self.port, &["PING"]).as_deref() == Some("+PONG") {
                return Ok(());
            }
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("{status}: {}", self.log_tail()));
            }
            assert!(
                Instant::now() < deadline,
                "node {} does not answer PING: {}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to our child, by pid.
    fn signal(&self, sig: &str) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.port));
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.port);
    }

    /// Up and not paused.
    fn live(&self) -> bool {
        self.child.is_some() && !self.paused.load(Ordering::Relaxed)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where node ports come from: below the ephemeral range with room for the
/// bus port under it too (10000..22768 with Linux's default 32768..60999).
fn port_range() -> Range<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let end = ephemeral_start.saturating_sub(BUS_OFFSET);
    assert!(
        end > 11_000,
        "ephemeral ports start at {ephemeral_start}: no room for cluster ports below them"
    );
    10_000..end
}

/// A port whose bus port is free too, neither taken by another cluster of
/// this process; both are recorded as taken.
fn free_cluster_port() -> u16 {
    let range = port_range();
    let span = u64::from(range.end - range.start);
    // A random start, so that parallel test processes rarely probe the same ports.
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let start = seed.finish() % span;
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = range.start + ((start + i) % span) as u16;
        let bus = port + BUS_OFFSET;
        if taken.contains(&port) || taken.contains(&bus) {
            continue;
        }
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(bus) {
            taken.extend([port, bus]);
            return port;
        }
    }
    panic!("no free cluster port in {range:?}");
}

fn redis_cli() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("redis-cli");
        if p.is_file() {
            return p;
        }
    }
    panic!("redis-cli not found: install it (apt-get install redis-tools) or run scripts/test");
}

/// Polls `check` until it returns `Ok`, panicking with its last error after `deadline`.
fn wait_blocking<T>(deadline: Instant, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: not after the deadline: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One shard as a node sees it (`CLUSTER SHARDS`): its slot ranges and its
/// online nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shard {
    ranges: Vec<(u16, u16)>,
    primary: Option<u16>,
    replicas: Vec<u16>,
}

impl Shard {
    fn has_slot(&self, slot: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    fn slots(&self) -> usize {
        self.ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum()
    }
}

/// In a flat `[name, value, ..]` array, the value of `name`.
fn entry<'a>(map: &'a Reply, name: &str) -> Option<&'a Reply> {
    map.as_array()?
        .chunks(2)
        .find(|kv| kv[0].as_str() == Some(name))
        .and_then(|kv| kv.get(1))
}

/// The node on `port`'s view of the shards, sorted, leaving out shards with
/// neither slots nor online nodes (a failed primary whose slots moved on).
fn shards(port: u16) -> Option<Vec<Shard>> {
    let reply = query(port, &["CLUSTER", "SHARDS"])?;
    let mut out = Vec::new();
    for shard in reply.as_array()? {
        let slots: Vec<i64> = entry(shard, "slots")?
            .as_array()?
            .iter()
            .filter_map(Reply::as_int)
            .collect();
        let mut ranges: Vec<(u16, u16)> = slots.chunks(2).map(|r| (r[0] as u16, r[1] as u16)).collect();
        ranges.sort_unstable();
        let (mut primary, mut replicas) = (None, Vec::new());
        for n in entry(shard, "nodes")?.as_array()? {
            if entry(n, "health")?.as_str() != Some("online") {
                continue;
            }
            let port = entry(n, "port")?.as_int()? as u16;
            match entry(n, "role")?.as_str()? {
                "master" if primary.is_none() => primary = Some(port),
                // Two online primaries in one shard: not settled; keep both visible.
                "master" => replicas.push(port),
                _ => replicas.push(port),
            }
        }
        replicas.sort_unstable();
        if !ranges.is_empty() || primary.is_some() || !replicas.is_empty() {
            out.push(Shard {
                ranges,
                primary,
                replicas,
            });
        }
    }
    out.sort();
    Some(out)
}

fn cluster_info(port: u16) -> String {
    query(port, &["CLUSTER", "INFO"])
        .and_then(|r| r.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A 6-node Redis Cluster (3 primaries, 3 replicas).
pub struct RedisCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// The slot ranges of each primary when it was killed or paused, for
    /// [`RedisCluster::wait_failover`].
    slots_before: Mutex<HashMap<u16, Vec<(u16, u16)>>>,
    /// Dropped after `nodes`: every child is dead before its files go.
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// On Debian's redis-server.
    pub fn start() -> Self {
        Self::start_with(&redis_server_binary())
    }

    /// On the valkey-server `VALKEY_SERVER` names; `None` when unset (and a
    /// panic under CI, where scripts/test always sets it).
    pub fn start_valkey() -> Option<Self> {
        match std::env::var_os("VALKEY_SERVER") {
            Some(p) => Some(Self::start_with(Path::new(&p))),
            None if std::env::var_os("CI").is_some() => {
                panic!("VALKEY_SERVER is not set under CI: scripts/test installs Valkey and sets it")
            }
            None => None,
        }
    }

    /// Six nodes of `binary`, joined with `redis-cli --cluster create`; waits
    /// until the cluster is settled with 3 primaries and 3 replicas.
    pub fn start_with(binary: &Path) -> Self {
        let mut cluster = RedisCluster {
            binary: binary.to_owned(),
            nodes: Vec::new(),
            slots_before: Mutex::default(),
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..6 {
            cluster.spawn_node();
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new(redis_cli()).args(&args).output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(START_DEADLINE, 3, 3);
        cluster
    }

    /// Starts a node on a fresh port and waits for its PING; a node that lost
    /// its port to another process in the meantime is started on another.
    fn spawn_node(&mut self) -> u16 {
        for _ in 0..5 {
            let port = free_cluster_port();
            let dir = self.dir.path().join(format!("node-{port}"));
            std::fs::create_dir(&dir).unwrap();
            let mut node = Node {
                port,
                dir,
                child: None,
                paused: AtomicBool::new(false),
            };
            node.spawn(&self.binary);
            match node.wait_pong() {
                Ok(()) => {
                    self.nodes.push(node);
                    return port;
                }
                Err(log) if log.contains("in use") => eprintln!("cluster port {port} was taken: {log}"),
                Err(log) => panic!("node {port} ({}) exited: {log}", self.binary.display()),
            }
        }
        panic!("five cluster ports in a row were taken");
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"))
    }

    /// The ports of the nodes running and not paused.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.live()).map(|n| n.port).collect()
    }

    /// The settled layout: every live node says `cluster_state:ok` with all
    /// 16384 slots ok and reports the same shards; every live node is online
    /// in them exactly once; every shard with slots has one primary; every
    /// replica's link to its primary is up.
    fn settled(&self) -> Result<Vec<Shard>, String> {
        let live = self.live_ports();
        let mut agreed: Option<(u16, Vec<Shard>)> = None;
        for &port in &live {
            let info = cluster_info(port);
            for (field, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", "16384"),
                ("cluster_slots_ok", "16384"),
            ] {
                if info_field(&info, field) != Some(want) {
                    return Err(format!("{port}: {field}:{:?}", info_field(&info, field)));
                }
            }
            let view = shards(port).ok_or(format!("{port}: no CLUSTER SHARDS"))?;
            match &agreed {
                Some((first, seen)) if *seen != view => {
                    return Err(format!("{port} sees {view:?}, {first} sees {seen:?}"));
                }
                Some(_) => {}
                None => agreed = Some((port, view)),
            }
        }
        let (_, view) = agreed.ok_or("no live node")?;
        let mut online: Vec<u16> = view
            .iter()
            .flat_map(|s| s.primary.iter().chain(&s.replicas).copied())
            .collect();
        online.sort_unstable();
        let mut want = live.clone();
        want.sort_unstable();
        if online != want {
            return Err(format!("online {online:?}, live {want:?}"));
        }
        for shard in &view {
            let Some(primary) = shard.primary else {
                return Err(format!("no primary: {shard:?}"));
            };
            if shard.slots() > 0 && redis_cmd(primary, &["ROLE"]).is_none() {
                return Err(format!("primary {primary} does not answer"));
            }
            for &replica in &shard.replicas {
                let info = query(replica, &["INFO", "replication"])
                    .and_then(|r| r.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let up = info_field(&info, "role") == Some("slave")
                    && info_field(&info, "master_link_status") == Some("up")
                    && info_field(&info, "master_port") == Some(&primary.to_string());
                if !up {
                    return Err(format!("replica {replica} of {primary} not in sync"));
                }
            }
        }
        Ok(view)
    }

    /// Waits until the cluster is settled with `primaries` primaries (with
    /// slots or not) and `replicas` replicas.
    fn wait_ok(&self, deadline: Duration, primaries: usize, replicas: usize) -> Vec<Shard> {
        wait_blocking(Instant::now() + deadline, "cluster settled", || {
            let view = self.settled()?;
            let p = view.iter().filter(|s| s.primary.is_some()).count();
            let r: usize = view.iter().map(|s| s.replicas.len()).sum();
            if (p, r) != (primaries, replicas) {
                return Err(format!("{p} primaries and {r} replicas: {view:?}"));
            }
            Ok(view)
        })
    }

    /// `redis-cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// Some live node's view of the shards.
    fn view(&self) -> Vec<Shard> {
        self.live_ports()
            .into_iter()
            .find_map(shards)
            .expect("a live node answers CLUSTER SHARDS")
    }

    /// The ports of the current primaries (with slots or not), as a live node sees them.
    pub fn primaries(&self) -> Vec<u16> {
        self.view().iter().filter_map(|s| s.primary).collect()
    }

    /// The ports of the current online replicas, as a live node sees them.
    pub fn replicas(&self) -> Vec<u16> {
        self.view().iter().flat_map(|s| s.replicas.clone()).collect()
    }

    /// The online replicas of the primary on `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        self.view()
            .into_iter()
            .find(|s| s.primary == Some(port))
            .map(|s| s.replicas)
            .unwrap_or_default()
    }

    /// How many slots the primary on `port` serves.
    pub fn slots_of(&self, port: u16) -> usize {
        self.view()
            .iter()
            .filter(|s| s.primary == Some(port))
            .map(Shard::slots)
            .sum()
    }

    /// The port of the primary serving `slot`.
    pub fn owner_of_slot(&self, slot: u16) -> u16 {
        self.view()
            .iter()
            .find(|s| s.has_slot(slot))
            .and_then(|s| s.primary)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT` on a live node).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        redis_cmd(port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|r| r.strip_prefix(':')?.parse().ok())
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {key} on {port}"))
    }

    /// The port of the primary serving `key`.
    pub fn owner_of_key(&self, key: &str) -> u16 {
        self.owner_of_slot(self.slot_of(key))
    }

    /// `CLUSTER MYID` of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        redis_cmd(port, &["CLUSTER", "MYID"]).unwrap_or_else(|| panic!("CLUSTER MYID on {port}"))
    }

    /// One command to the node on `port`: the first reply line, as [`redis_cmd`].
    pub fn cmd(&self, port: u16, args: &[&str]) -> Option<String> {
        redis_cmd(port, args)
    }

    /// One command to the node on `port`: the whole reply.
    pub fn query(&self, port: u16, args: &[&str]) -> Option<Reply> {
        query(port, args)
    }

    /// Remembers the slots `port` serves now, for [`RedisCluster::wait_failover`].
    fn remember_slots(&self, port: u16) -> bool {
        let ranges: Vec<(u16, u16)> = self
            .view()
            .into_iter()
            .filter(|s| s.primary == Some(port))
            .flat_map(|s| s.ranges)
            .collect();
        if ranges.is_empty() {
            return false;
        }
        self.slots_before.lock().unwrap().insert(port, ranges);
        true
    }

    /// kill -9 of the primary on `port` (our child, by pid).
    pub fn kill_primary(&mut self, port: u16) {
        assert!(self.remember_slots(port), "{port} is not a primary with slots");
        self.kill(port);
    }

    /// kill -9 of the node on `port` (our child, by pid), primary or not.
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Starts the killed node on `port` again (same port, same nodes.conf);
    /// waits until it rejoined (a former primary as a replica of its
    /// successor) and the cluster is settled.
    pub fn restart(&mut self, port: u16) {
        let binary = self.binary.clone();
        let node = self.node_mut(port);
        assert!(node.child.is_none(), "node {port} is running");
        node.spawn(&binary);
        if let Err(log) = node.wait_pong() {
            panic!("node {port} did not restart: {log}");
        }
        // A primary whose slots moved on comes back claiming them, until the
        // others' newer config epoch makes it a replica.
        let was_replaced = self.slots_before.lock().unwrap().contains_key(&port);
        wait_blocking(Instant::now() + START_DEADLINE, "restarted node rejoined", || {
            let view = self.settled()?;
            let replica = view.iter().any(|s| s.replicas.contains(&port));
            let primary = view.iter().any(|s| s.primary == Some(port));
            (replica || (primary && !was_replaced))
                .then_some(())
                .ok_or(format!("{port} not back as a replica: {view:?}"))
        });
    }

    /// SIGSTOP of the node on `port`: it keeps its sockets but answers nothing
    /// (for longer than `cluster-node-timeout`, its replica takes over).
    pub fn pause(&self, port: u16) {
        self.remember_slots(port);
        let node = self.node(port);
        node.signal("-STOP");
        node.paused.store(true, Ordering::Relaxed);
    }

    /// SIGCONT of the node [`RedisCluster::pause`] stopped.
    pub fn resume(&self, port: u16) {
        let node = self.node(port);
        node.signal("-CONT");
        node.paused.store(false, Ordering::Relaxed);
    }

    /// Waits until the cluster is settled without the node on `old` (killed
    /// or paused while a primary) and another primary serves its slots;
    /// returns that primary's port.
    pub fn wait_failover(&self, old: u16, deadline: Duration) -> u16 {
        let slot = self
            .slots_before
            .lock()
            .unwrap()
            .get(&old)
            .unwrap_or_else(|| panic!("{old} was not a primary killed or paused"))[0]
            .0;
        wait_blocking(Instant::now() + deadline, "failover", || {
            let view = self.settled()?;
            let owner = view
                .iter()
                .find(|s| s.has_slot(slot))
                .and_then(|s| s.primary)
                .ok_or(format!("slot {slot} unserved"))?;
            if owner == old {
                return Err(format!("{old} still serves slot {slot}"));
            }
            Ok(owner)
        })
    }

    /// Starts a 7th node and adds it as a primary without slots
    /// (`redis-cli --cluster add-node`); returns its port once every node
    /// knows it.
    pub fn add_primary(&mut self) -> u16 {
        let before = self.wait_ok(START_DEADLINE, 3, 3);
        let seed = before[0].primary.unwrap();
        let port = self.spawn_node();
        let out = Command::new(redis_cli())
            .args([
                "--cluster",
                "add-node",
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{seed}"),
            ])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "add-node: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let view = self.wait_ok(START_DEADLINE, 4, 3);
        assert!(
            view.iter().any(|s| s.primary == Some(port) && s.ranges.is_empty()),
            "{port} is a primary without slots: {view:?}"
        );
        port
    }

    /// Starts moving `slots` slots from every primary to the one on `to`
    /// (`redis-cli --cluster reshard`, MIGRATE-based), in the background;
    /// its output goes to `reshard-<pid>.log` in [`RedisCluster::dir`].
    pub fn reshard(&self, to: u16, slots: u32) -> Child {
        let id = self.node_id(to);
        let seed = self.primaries().into_iter().find(|p| *p != to).unwrap();
        let tmp = self.dir.path().join("reshard.log");
        let log = std::fs::File::create(&tmp).unwrap();
        let child = Command::new(redis_cli())
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{seed}"),
                "--cluster-from",
                "all",
                "--cluster-to",
                &id,
                "--cluster-slots",
                &slots.to_string(),
                "--cluster-yes",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-cli reshard starts");
        std::fs::rename(tmp, self.reshard_log(&child)).unwrap();
        child
    }

    fn reshard_log(&self, reshard: &Child) -> PathBuf {
        self.dir.path().join(format!("reshard-{}.log", reshard.id()))
    }

    /// Whether the reshard is done (its redis-cli exited).
    pub fn reshard_finished(&self, reshard: &Child) -> bool {
        // Not reaped yet (that takes &mut): an exited child is a zombie, so
        // look at its state rather than whether its pid answers.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", reshard.id())).unwrap_or_default();
        stat.split(") ").nth(1).is_none_or(|rest| rest.starts_with('Z'))
    }

    /// Waits for the reshard to finish successfully and the cluster to settle.
    pub fn wait_reshard(&self, mut reshard: Child) {
        let status = reshard.wait().expect("reshard runs");
        if !status.success() {
            let log = std::fs::read_to_string(self.reshard_log(&reshard)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "redis-cli --cluster reshard: {status}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let primaries = self.primaries().len();
        let replicas = self.replicas().len();
        self.wait_ok(START_DEADLINE, primaries, replicas);
    }

    /// The directory holding every node's directory (nodes.conf, AOF, node.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
