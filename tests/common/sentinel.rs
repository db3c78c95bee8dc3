//! A Redis Sentinel deployment on loopback: one master, two replicas and three
//! sentinels, each a real `redis-server` child with its own writable config
//! file and data directory (sentinels rewrite theirs, and so do data nodes on
//! `REPLICAOF` during a failover). Readiness is polled, never slept for.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::resp::{self, Reply, info_field};
use super::{free_port, redis_cmd, redis_server_binary};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server` child (data node or sentinel) on a fixed port.
struct Node {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    sentinel: bool,
    child: Option<Child>,
}

impl Node {
    fn new(root: &std::path::Path, kind: &str, port: u16, conf: &str) -> Self {
        let dir = root.join(format!("{kind}-{port}"));
        std::fs::create_dir(&dir).unwrap();
        let log = root.join(format!("{kind}-{port}.log"));
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir \"{}\"\nlogfile \"{}\"\n{conf}",
            dir.display(),
            log.display()
        );
        let conf_path = root.join(format!("{kind}-{port}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let mut node = Node {
            port,
            conf: conf_path,
            log,
            sentinel: kind == "sentinel",
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(redis_server_binary());
        cmd.arg(&self.conf);
        if self.sentinel {
            cmd.arg("--sentinel");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
    }

    /// SIGKILL (by pid) and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// 1 master + 2 replicas (AOF, `appendfsync always`) watched by 3 sentinels
/// (quorum 2, `down-after-milliseconds 1000`, `failover-timeout 10000`).
/// Every child is SIGKILLed by pid on drop.
pub struct SentinelSet {
    /// Data nodes; `data[0]` started as the master, roles change on failover.
    data: Vec<Node>,
    sentinels: Vec<Node>,
    dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts everything and waits (up to 30 s) until the sentinels agree on the
    /// master, each knows both replicas and the two other sentinels, and both
    /// replicas are in sync. Blocking, like [`super::RedisServer::start`].
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let data_conf = "save \"\"\nappendonly yes\nappendfsync always\nrepl-diskless-sync no\n";
        let master_port = free_port();
        let mut data = vec![Node::new(root, "node", master_port, data_conf)];
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_blocking(deadline, "master answers PING", || {
            (redis_cmd(master_port, &["PING"]).as_deref() == Some("+PONG"))
                .then_some(())
                .ok_or_else(|| data[0].log_tail())
        });
        for _ in 0..2 {
            let conf = format!("{data_conf}replicaof 127.0.0.1 {master_port}\n");
            data.push(Node::new(root, "node", free_port(), &conf));
        }
        // Sentinels learn the replicas from the master's INFO: start them once
        // the replicas are attached, so the first INFO already lists both.
        wait_blocking(deadline, "both replicas in sync", || {
            for node in &data[1..] {
                if replica_of(node.port) != Some(master_port) {
                    return Err(format!("replica {} not in sync:\n{}", node.port, node.log_tail()));
                }
            }
            Ok(())
        });
        let sentinels = (0..3)
            .map(|_| {
                let conf = format!(
                    "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n"
                );
                Node::new(root, "sentinel", free_port(), &conf)
            })
            .collect();
        let set = SentinelSet { data, sentinels, dir };
        wait_blocking(deadline, "sentinel set ready", || set.check_ready().map(|_| ()));
        set
    }

    /// `redis-sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis-sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The ports of the three data nodes (master and replicas, dead or alive).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// The master's port according to the first sentinel that answers.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| master_addr(s.port))
            .expect("a sentinel knows the master")
    }

    /// `Some(port)` when every sentinel names the same master, `None` otherwise.
    pub fn agreed_master(&self) -> Option<u16> {
        let first = master_addr(self.sentinels[0].port)?;
        self.sentinels[1..]
            .iter()
            .all(|s| master_addr(s.port) == Some(first))
            .then_some(first)
    }

    /// Opt-in faster sentinel timers (`SENTINEL DEBUG`, Redis 7+): INFO to
    /// every node each 1 s instead of 10 s, hello messages each 500 ms instead
    /// of 2 s. A node that claims the wrong role is then corrected, and seen
    /// in sync by every sentinel, after ~3 s instead of ~20 s (an old master
    /// after a forced failover). Detection and election are unchanged.
    ///
    /// Keep to the order "agree, then act": restarting the old master while
    /// the leading sentinel was still finishing the failover (sentinels already
    /// naming the new master) made them fail over a second time in 3 of 8 runs
    /// with these timers; [`SentinelSet::wait_new_master`] therefore waits until
    /// no sentinel has a failover in progress (16 of 16 runs clean since).
    pub fn fast_timing(&self) {
        for s in &self.sentinels {
            let reply = redis_cmd(
                s.port,
                &["SENTINEL", "DEBUG", "INFO-PERIOD", "1000", "PUBLISH-PERIOD", "500"],
            );
            assert_eq!(reply.as_deref(), Some("+OK"), "SENTINEL DEBUG on {}", s.port);
        }
    }

    /// `SENTINEL FAILOVER mymaster` on the first sentinel (a forced failover, no
    /// agreement needed); panics unless it answers `+OK`.
    pub fn failover(&self) {
        let reply = redis_cmd(self.sentinels[0].port, &["SENTINEL", "FAILOVER", MASTER_NAME]);
        assert_eq!(reply.as_deref(), Some("+OK"), "SENTINEL FAILOVER");
    }

    /// SIGKILLs (by pid) the data node the sentinels currently call master;
    /// returns its port. It stays dead until [`SentinelSet::restart_node`].
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        self.kill_node(port);
        port
    }

    /// SIGKILLs (by pid) the data node on `port`.
    pub fn kill_node(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Starts the data node on `port` again from its config file (which the
    /// sentinels may have rewritten) and its AOF; it does not wait.
    pub fn restart_node(&mut self, port: u16) {
        let node = self.node_mut(port);
        node.kill();
        node.spawn();
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// Polls until every sentinel names the same master, other than
    /// `old_port`, none of them has a failover in progress or thinks that
    /// master is down, and the node says `role:master`; returns its port.
    pub async fn wait_new_master(&self, old_port: u16, deadline: Duration) -> u16 {
        let start = Instant::now();
        loop {
            if let Some(port) = self.agreed_master().filter(|p| *p != old_port)
                && self.sentinels.iter().all(|s| self.settled(s.port))
                && role(port).as_deref() == Some("master")
            {
                return port;
            }
            assert!(
                start.elapsed() < deadline,
                "no new master (old {old_port}) after {deadline:?}: {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the set is healthy again: the sentinels agree on a running
    /// master, each knows 2 replicas and 2 other sentinels, and every other
    /// running data node is a replica of it in sync. Returns the master's port.
    pub async fn wait_ready(&self, deadline: Duration) -> u16 {
        let start = Instant::now();
        loop {
            match self.check_ready() {
                Ok(port) => return port,
                Err(why) => assert!(start.elapsed() < deadline, "not ready after {deadline:?}: {why}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sentinel on `port` has no failover in progress and sees its master up.
    fn settled(&self, port: u16) -> bool {
        resp::query(port, &["SENTINEL", "MASTER", MASTER_NAME])
            .and_then(|m| m.field("flags").map(|f| f.split(',').all(|f| f == "master")))
            .unwrap_or(false)
    }

    fn check_ready(&self) -> Result<u16, String> {
        let master = self.agreed_master().ok_or_else(|| self.describe())?;
        if role(master).as_deref() != Some("master") {
            return Err(format!("{master} is not (yet) a master"));
        }
        let replicas: Vec<u16> = self
            .data
            .iter()
            .filter(|n| n.running() && n.port != master)
            .map(|n| n.port)
            .collect();
        for s in &self.sentinels {
            let m = resp::query(s.port, &["SENTINEL", "MASTER", MASTER_NAME]).ok_or("sentinel down")?;
            let (slaves, others) = (m.field("num-slaves"), m.field("num-other-sentinels"));
            if m.field("flags") != Some("master") || slaves != Some("2") || others != Some("2") {
                return Err(format!(
                    "sentinel {}: flags {:?}, num-slaves {slaves:?}, num-other-sentinels {others:?}",
                    s.port,
                    m.field("flags")
                ));
            }
            // Each running replica known, connected, and INFOed at least once
            // (else SENTINEL FAILOVER answers -NOGOODSLAVE); sentinels INFO
            // replicas every 10 s, so a fresh one is anything under 20 s.
            let known = resp::query(s.port, &["SENTINEL", "REPLICAS", MASTER_NAME]).ok_or("sentinel down")?;
            for port in &replicas {
                let entry = known
                    .as_array()
                    .unwrap_or_default()
                    .iter()
                    .find(|e| e.field("port") == Some(&port.to_string()));
                let good = entry.is_some_and(|e| {
                    e.field("flags") == Some("slave")
                        && e.field("master-link-status") == Some("ok")
                        && e.field("info-refresh")
                            .and_then(|ms| ms.parse::<u64>().ok())
                            .is_some_and(|ms| ms < 20_000)
                });
                if !good {
                    return Err(format!("sentinel {} on replica {port}: {entry:?}", s.port));
                }
            }
        }
        for port in &replicas {
            if replica_of(*port) != Some(master) {
                return Err(format!("replica {port} not in sync with {master}"));
            }
        }
        Ok(master)
    }

    /// What every sentinel says the master is, for failure messages.
    fn describe(&self) -> String {
        let views: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("sentinel {} says master {:?}", s.port, master_addr(s.port)))
            .collect();
        views.join("; ")
    }

    /// What the data node on `port` says it is: `master`, `slave`, or `None` when down.
    pub fn role(&self, port: u16) -> Option<String> {
        role(port)
    }

    /// One command to the data node or sentinel on `port`: the first reply line,
    /// like [`super::RedisServer::cmd`].
    pub fn cmd(&self, port: u16, args: &[&str]) -> Option<String> {
        redis_cmd(port, args)
    }

    /// One command to the data node or sentinel on `port`: the whole reply.
    pub fn query(&self, port: u16, args: &[&str]) -> Option<Reply> {
        resp::query(port, args)
    }

    /// How many keys on the node on `port` match `pattern` (a full `SCAN MATCH`).
    pub fn count_keys(&self, port: u16, pattern: &str) -> usize {
        let mut keys = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = resp::query(port, &["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
                .unwrap_or_else(|| panic!("SCAN on {port}"));
            let [next, batch] = reply.as_array().expect("SCAN reply") else {
                panic!("SCAN reply: {reply:?}");
            };
            keys.extend(
                batch
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string()),
            );
            cursor = next.as_str().unwrap().to_string();
            if cursor == "0" {
                return keys.len();
            }
        }
    }

    /// The directory holding every node's config, data directory and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Polls `check` every 20 ms, blocking, until it is `Ok` or `deadline` passes.
fn wait_blocking(deadline: Instant, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    loop {
        match check() {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < deadline, "timed out waiting for {what}: {why}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME mymaster` on the sentinel on `port`.
fn master_addr(sentinel_port: u16) -> Option<u16> {
    let reply = resp::query(sentinel_port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
    reply.as_array()?.get(1)?.as_str()?.parse().ok()
}

fn info_replication(port: u16) -> Option<String> {
    resp::query(port, &["INFO", "replication"])?
        .as_str()
        .map(str::to_string)
}

/// `role` in `INFO replication`: `master` or `slave`.
fn role(port: u16) -> Option<String> {
    info_field(&info_replication(port)?, "role").map(str::to_string)
}

/// The master port of the replica on `port`, when its link is up.
fn replica_of(port: u16) -> Option<u16> {
    let info = info_replication(port)?;
    if info_field(&info, "role") != Some("slave") || info_field(&info, "master_link_status") != Some("up") {
        return None;
    }
    info_field(&info, "master_port")?.parse().ok()
}
