//! A Redis Cluster on loopback: 3 primaries and 3 replicas
//! (`cluster-node-timeout 1000`, `cluster-replica-validity-factor 0`, AOF),
//! each a real `redis-server` (or `valkey-server`) child with its own
//! directory, created with `redis-cli --cluster create`. Readiness is polled,
//! never slept for. A node's port and its bus port (port + 10000) are both
//! free when it is picked. Every child is SIGKILLed by pid on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::resp::{Reply, query};
use super::{redis_cmd, redis_server_binary};

/// One cluster node.
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
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
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {}", self.port);
        }
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

/// A port whose bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
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
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One shard of `CLUSTER SHARDS`: slot ranges, and its online nodes as (port, primary).
struct Shard {
    ranges: Vec<(u16, u16)>,
    nodes: Vec<(u16, bool)>,
}

fn shards(port: u16) -> Option<Vec<Shard>> {
    let reply = query(port, &["CLUSTER", "SHARDS"])?;
    let mut out = Vec::new();
    for shard in reply.as_array()? {
        let items = shard.as_array()?;
        let get = |name: &str| {
            items
                .chunks(2)
                .find(|kv| kv[0].as_str() == Some(name))
                .map(|kv| kv[1].clone())
        };
        let slots: Vec<i64> = get("slots")?.as_array()?.iter().filter_map(Reply::as_int).collect();
        let ranges = slots.chunks(2).map(|r| (r[0] as u16, r[1] as u16)).collect();
        let mut nodes = Vec::new();
        for n in get("nodes")?.as_array()? {
            let field = |name: &str| {
                n.as_array()?
                    .chunks(2)
                    .find(|kv| kv[0].as_str() == Some(name))
                    .map(|kv| kv[1].clone())
            };
            if field("health")?.as_str() != Some("online") {
                continue;
            }
            let port = field("port")?.as_int()? as u16;
            nodes.push((port, field("role")?.as_str() == Some("master")));
        }
        out.push(Shard { ranges, nodes });
    }
    Some(out)
}

/// A 6-node Redis Cluster (3 primaries, 3 replicas).
pub struct RedisCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// The primaries when [`RedisCluster::kill_primary`] was called.
    primaries_before_kill: Vec<u16>,
    _dir: tempfile::TempDir,
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
                panic!("VALKEY_SERVER is not set: scripts/test installs Valkey and sets it")
            }
            None => None,
        }
    }

    /// Six nodes of `binary`, joined with `redis-cli --cluster create`; waits
    /// until every node reports `cluster_state:ok` and the same three shards.
    pub fn start_with(binary: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = RedisCluster {
            binary: binary.to_owned(),
            nodes: Vec::new(),
            primaries_before_kill: Vec::new(),
            _dir: dir,
        };
        for _ in 0..6 {
            cluster.spawn_node();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &cluster.nodes {
            wait_blocking(deadline, "node answers PING", || {
                (redis_cmd(n.port, &["PING"]).as_deref() == Some("+PONG"))
                    .then_some(())
                    .ok_or_else(|| n.log_tail())
            });
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new(redis_cli()).args(&args).output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok(Duration::from_secs(30), 3, 3);
        cluster
    }

    fn spawn_node(&mut self) -> u16 {
        let port = free_cluster_port();
        let dir = self._dir.path().join(format!("node-{port}"));
        std::fs::create_dir(&dir).unwrap();
        let mut node = Node { port, dir, child: None };
        node.spawn(&self.binary);
        self.nodes.push(node);
        port
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Waits until every live node says `cluster_state:ok` and reports
    /// `primaries` primaries (with slots or not) and `replicas` online replicas.
    fn wait_ok(&self, deadline: Duration, primaries: usize, replicas: usize) {
        let deadline = Instant::now() + deadline;
        wait_blocking(deadline, "cluster ok", || {
            for port in self.live_ports() {
                let info = query(port, &["CLUSTER", "INFO"])
                    .and_then(|r| r.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok") {
                    return Err(format!("{port} not ok: {info}"));
                }
                let shards = shards(port).ok_or(format!("{port}: no CLUSTER SHARDS"))?;
                let nodes: Vec<(u16, bool)> = shards.iter().flat_map(|s| s.nodes.clone()).collect();
                let p = nodes.iter().filter(|n| n.1).count();
                if p != primaries || nodes.len() - p != replicas {
                    return Err(format!("{port} sees {p} primaries and {} replicas", nodes.len() - p));
                }
            }
            Ok(())
        });
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

    /// The ports of the current primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.view()
            .iter()
            .flat_map(|s| s.nodes.iter().filter(|n| n.1).map(|n| n.0))
            .collect()
    }

    /// The port of the primary serving `slot`.
    pub fn owner_of_slot(&self, slot: u16) -> u16 {
        self.view()
            .iter()
            .find(|s| s.ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .and_then(|s| s.nodes.iter().find(|n| n.1).map(|n| n.0))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// kill -9 of the node on `port` (our child, by pid).
    pub fn kill_primary(&mut self, port: u16) {
        self.primaries_before_kill = self.primaries();
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("our node");
        node.kill();
    }

    /// SIGSTOP / SIGCONT of the node on `port`.
    pub fn pause(&self, port: u16) {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("our node")
            .signal("-STOP");
    }

    pub fn resume(&self, port: u16) {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("our node")
            .signal("-CONT");
    }

    /// Waits until the live nodes agree that another node serves the slots
    /// `old` served, with the cluster ok; returns the new primary's port.
    pub fn wait_failover(&self, old: u16, deadline: Duration) -> u16 {
        let deadline = Instant::now() + deadline;
        wait_blocking(deadline, "failover", || {
            let mut owners = Vec::new();
            for port in self.live_ports() {
                let info = query(port, &["CLUSTER", "INFO"])
                    .and_then(|r| r.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok") {
                    return Err(format!("{port} not ok"));
                }
                let shards = shards(port).ok_or("no shards")?;
                // The shard whose primary is not `old` any more: the one without a live `old`.
                let primaries: Vec<u16> = shards
                    .iter()
                    .filter(|s| !s.ranges.is_empty())
                    .filter_map(|s| s.nodes.iter().find(|n| n.1).map(|n| n.0))
                    .collect();
                if primaries.contains(&old) || primaries.len() < 3 {
                    return Err(format!("{port} still sees {primaries:?}"));
                }
                owners.push(primaries);
            }
            let first = owners.first().cloned().unwrap_or_default();
            if owners.iter().any(|o| {
                let (mut a, mut b) = (o.clone(), first.clone());
                a.sort_unstable();
                b.sort_unstable();
                a != b
            }) {
                return Err("nodes disagree".into());
            }
            first
                .iter()
                .copied()
                .find(|p| !self.primaries_before_kill.contains(p))
                .ok_or_else(|| "no new primary".into())
        })
    }

    /// Starts a 7th node and adds it as a primary without slots; returns its port.
    pub fn add_primary(&mut self) -> u16 {
        let port = self.spawn_node();
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_blocking(deadline, "new node answers PING", || {
            (redis_cmd(port, &["PING"]).as_deref() == Some("+PONG"))
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        });
        let out = Command::new(redis_cli())
            .args([
                "--cluster",
                "add-node",
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{}", self.primaries()[0]),
            ])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "add-node: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.wait_ok(Duration::from_secs(30), 4, 3);
        port
    }

    /// Starts moving `slots` slots from every primary to the one on `to`
    /// (`redis-cli --cluster reshard`, MIGRATE-based), in the background.
    pub fn reshard(&self, to: u16, slots: u32) -> Child {
        let id = redis_cmd(to, &["CLUSTER", "MYID"]).expect("CLUSTER MYID");
        let seed = self.primaries().into_iter().find(|p| *p != to).unwrap();
        Command::new(redis_cli())
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli reshard starts")
    }

    /// Whether the reshard is done (its redis-cli exited).
    pub fn reshard_finished(&self, reshard: &Child) -> bool {
        // A zero-signal kill fails once the child exited (it is not reaped yet: a zombie still
        // answers, so look at its state instead).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", reshard.id())).unwrap_or_default();
        stat.split(") ").nth(1).is_none_or(|rest| rest.starts_with('Z'))
    }

    /// Waits for the reshard to finish successfully and the cluster to agree.
    pub fn wait_reshard(&self, mut reshard: Child) {
        let status = reshard.wait().expect("reshard runs");
        assert!(status.success(), "redis-cli --cluster reshard failed");
        self.wait_ok(Duration::from_secs(30), 4, 3);
    }
}
