//! The test fixtures themselves: a Sentinel set fails over, a Redis Cluster
//! (and a Valkey one) fails over and grows, a TLS Redis trusts only its own
//! CA, and a silenced proxy holds bytes on open connections.

mod common;

use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::sentinel::SentinelSet;
use common::tls::TlsRedis;
use common::{RedisServer, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sentinel_set_fails_over_to_a_new_master() {
    let t = Instant::now();
    let set = SentinelSet::start();
    eprintln!("sentinel set ready in {:?}", t.elapsed());
    let old = set.master_port();
    assert!(set.data_ports().contains(&old));
    assert!(set.url().starts_with("redis-sentinel://127.0.0.1:"));
    assert!(set.url().ends_with("/mymaster"));
    assert_eq!(set.cmd(old, &["SET", "k:1", "v"]).as_deref(), Some("+OK"));
    assert_eq!(set.cmd(old, &["SET", "k:2", "v"]).as_deref(), Some("+OK"));

    let t = Instant::now();
    set.failover();
    let new = set.wait_new_master(old, Duration::from_secs(10)).await;
    eprintln!(
        "SENTINEL FAILOVER: all sentinels agree on {new} (was {old}) in {:?}",
        t.elapsed()
    );
    assert_ne!(new, old);
    assert!(set.data_ports().contains(&new));
    assert_eq!(set.count_keys(new, "k:*"), 2, "the writes survived the failover");
    assert_eq!(set.cmd(new, &["SET", "k:3", "v"]).as_deref(), Some("+OK"));
    // Sentinel demotes the old master only once it notices it still claims the
    // role (next INFO, then an 8 s grace period): until then there are two
    // writable masters. With stock timers that is ~10 s, and ~20 s until every
    // sentinel has seen it as a synced replica; fast_timing() cuts both.
    assert_eq!(set.role(old).as_deref(), Some("master"), "not demoted yet");
    set.fast_timing();
    let t = Instant::now();
    assert_eq!(set.wait_ready(Duration::from_secs(30)).await, new);
    eprintln!("with fast_timing: old master a synced replica after {:?}", t.elapsed());
    assert!(
        set.cmd(old, &["SET", "k:4", "v"]).unwrap().starts_with("-READONLY"),
        "the old master is now a replica"
    );
    assert_eq!(set.count_keys(old, "k:*"), 3, "and has the new master's writes");
}

#[tokio::test]
async fn sentinel_set_replaces_a_killed_master() {
    let mut set = SentinelSet::start();
    set.fast_timing();
    let old = set.master_port();
    assert_eq!(set.cmd(old, &["SET", "k", "v"]).as_deref(), Some("+OK"));
    let t = Instant::now();
    assert_eq!(set.kill_master(), old);
    assert_eq!(set.cmd(old, &["PING"]), None, "killed");
    let new = set.wait_new_master(old, Duration::from_secs(30)).await;
    eprintln!(
        "master SIGKILLed: all sentinels agree on {new} (was {old}) in {:?}",
        t.elapsed()
    );
    assert_eq!(set.cmd(new, &["GET", "k"]).as_deref(), Some("v"));

    let t = Instant::now();
    set.restart_node(old);
    set.wait_ready(Duration::from_secs(30)).await;
    eprintln!(
        "with fast_timing: old master restarted and resynced as a replica in {:?}",
        t.elapsed()
    );
    assert_eq!(set.master_port(), new);
}

/// Runs `$body(cluster, name)` on a Redis cluster and, if `VALKEY_SERVER` is
/// set, a Valkey one.
macro_rules! on_redis_and_valkey {
    ($body:ident: $redis:ident, $valkey:ident) => {
        #[test]
        fn $redis() {
            let t = Instant::now();
            let cluster = RedisCluster::start();
            eprintln!("redis cluster ready in {:?}", t.elapsed());
            $body(cluster);
        }

        #[test]
        fn $valkey() {
            let t = Instant::now();
            match RedisCluster::start_valkey() {
                Some(cluster) => {
                    eprintln!("valkey cluster ready in {:?}", t.elapsed());
                    $body(cluster);
                }
                None => eprintln!("VALKEY_SERVER not set: skipped"),
            }
        }
    };
}

/// Writes `k:0`, `k:1`, .. to their owners until every primary holds `per`
/// of them; returns the keys with the primary each went to.
fn spread_keys(cluster: &RedisCluster, per: usize) -> Vec<(String, u16)> {
    let primaries = cluster.primaries();
    let mut keys: Vec<(String, u16)> = Vec::new();
    for i in 0.. {
        let key = format!("k:{i}");
        let owner = cluster.owner_of_key(&key);
        if keys.iter().filter(|(_, o)| *o == owner).count() < per {
            assert_eq!(cluster.cmd(owner, &["SET", &key, &key]).as_deref(), Some("+OK"));
            keys.push((key, owner));
        }
        if primaries
            .iter()
            .all(|p| keys.iter().filter(|(_, o)| o == p).count() == per)
        {
            return keys;
        }
    }
    unreachable!()
}

fn cluster_fails_over(mut cluster: RedisCluster) {
    assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
    assert_eq!(cluster.url().matches(',').count(), 2, "three seeds");
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    let keys = spread_keys(&cluster, 3);
    // A node that does not serve the slot redirects.
    let (key, owner) = &keys[0];
    let other = *primaries.iter().find(|p| *p != owner).unwrap();
    let moved = cluster.cmd(other, &["GET", key]).unwrap();
    assert!(
        moved.starts_with(&format!("-MOVED {} ", cluster.slot_of(key))),
        "{moved}"
    );

    let victim = primaries[0];
    let [replica] = cluster.replicas_of(victim)[..] else {
        panic!("one replica of {victim}");
    };
    // Replicated before the kill (replication is asynchronous), so nothing is lost.
    let dbsize = cluster.cmd(victim, &["DBSIZE"]);
    let t = Instant::now();
    while cluster.cmd(replica, &["DBSIZE"]) != dbsize {
        assert!(t.elapsed() < Duration::from_secs(5), "{replica} never caught up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    cluster.kill_primary(victim);
    assert_eq!(cluster.cmd(victim, &["PING"]), None, "killed");
    let promoted = cluster.wait_failover(victim, Duration::from_secs(20));
    eprintln!(
        "primary {victim} SIGKILLed: {promoted} serves its slots in {:?}",
        t.elapsed()
    );
    assert_eq!(promoted, replica);
    assert!(!cluster.primaries().contains(&victim));
    for (key, owner) in &keys {
        let now = if *owner == victim { promoted } else { *owner };
        assert_eq!(cluster.owner_of_key(key), now);
        assert_eq!(cluster.cmd(now, &["GET", key]).as_deref(), Some(key.as_str()));
    }
    let (key, _) = keys.iter().find(|(_, o)| *o == victim).unwrap();
    assert_eq!(cluster.cmd(promoted, &["SET", key, "again"]).as_deref(), Some("+OK"));

    let t = Instant::now();
    cluster.restart(victim);
    eprintln!("{victim} restarted and back as a replica in {:?}", t.elapsed());
    assert_eq!(cluster.replicas_of(promoted), vec![victim]);
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(cluster.cmd(victim, &["DBSIZE"]), cluster.cmd(promoted, &["DBSIZE"]));
}

on_redis_and_valkey!(cluster_fails_over: redis_cluster_fails_over, valkey_cluster_fails_over);

fn cluster_grows(mut cluster: RedisCluster) {
    // Deterministic keys: which of them move depends only on the layout
    // `--cluster create` and `--cluster reshard` choose, which is fixed.
    let total = 2000;
    for i in 0..total {
        let key = format!("k:{i}");
        let owner = cluster.owner_of_key(&key);
        assert_eq!(cluster.cmd(owner, &["SET", &key, &key]).as_deref(), Some("+OK"));
    }
    let t = Instant::now();
    let fourth = cluster.add_primary();
    eprintln!("4th primary {fourth} added in {:?}", t.elapsed());
    assert_eq!(cluster.primaries().len(), 4);
    assert_eq!(cluster.slots_of(fourth), 0);

    let t = Instant::now();
    let reshard = cluster.reshard(fourth, 100);
    // Reads keep being answered meanwhile (by the owner, or -ASK during a move).
    let mut reads = 0;
    while !cluster.reshard_finished(&reshard) {
        let key = format!("k:{}", reads % total);
        let owner = cluster.owner_of_key(&key);
        let reply = cluster.cmd(owner, &["GET", &key]).unwrap();
        assert!(
            reply == key || reply.starts_with("-ASK") || reply.starts_with("-MOVED"),
            "{reply}"
        );
        reads += 1;
    }
    cluster.wait_reshard(reshard);
    eprintln!("100 slots resharded in {:?} ({reads} reads meanwhile)", t.elapsed());
    assert_eq!(cluster.slots_of(fourth), 100);
    let count = |port: u16| -> usize {
        let n = cluster.cmd(port, &["DBSIZE"]).unwrap();
        n.trim_start_matches(':').parse().unwrap()
    };
    let on_fourth = count(fourth);
    assert!(on_fourth > 0, "keys moved with their slots");
    assert_eq!(cluster.primaries().iter().map(|p| count(*p)).sum::<usize>(), total);
    for i in (0..total).step_by(7) {
        let key = format!("k:{i}");
        let owner = cluster.owner_of_key(&key);
        assert_eq!(cluster.cmd(owner, &["GET", &key]).as_deref(), Some(key.as_str()));
    }
    eprintln!("{on_fourth} of {total} keys now on {fourth}");
}

on_redis_and_valkey!(cluster_grows: redis_cluster_grows, valkey_cluster_grows);

#[test]
fn tls_redis_trusts_only_its_ca() {
    let t = Instant::now();
    let redis = TlsRedis::start();
    eprintln!("TLS redis ready in {:?}", t.elapsed());
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{}", redis.port));
    assert_eq!(
        redis.url_with_host("localhost"),
        format!("rediss://localhost:{}", redis.port)
    );
    assert!(redis.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(redis.cmd(&["PING"]), "PONG");
    assert_eq!(redis.cmd(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cmd(&["EXISTS", "k"]), "1");

    let err = redis
        .try_cmd_with_ca(&redis.other_ca_file(), &["PING"])
        .expect_err("another CA is refused");
    assert!(err.contains("certificate verify failed"), "{err}");
    // A plain-TCP client gets nowhere either: the TLS port speaks only TLS.
    assert_eq!(common::redis_cmd(redis.port, &["PING"]).as_deref(), None);
}

/// Sends PING on `s`; the reply, or `None` when none came within `wait`.
async fn ping(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    s.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    read_reply(s, wait).await
}

async fn read_reply(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.ok()?.unwrap();
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Whether the peer has closed `s` (EOF or reset) rather than just being quiet.
fn closed(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test]
async fn silenced_proxy_holds_bytes_on_open_connections() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port).await;
    assert_eq!(proxy.url_for("rediss"), format!("rediss://127.0.0.1:{}", proxy.port));
    let second = Duration::from_secs(1);
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(ping(&mut conn, second).await.as_deref(), Some("+PONG\r\n"));

    proxy.silence();
    assert_eq!(ping(&mut conn, Duration::from_millis(300)).await, None, "silenced");
    assert!(!closed(&conn), "the connection is still open");
    // New connections are accepted, but nothing gets through them either.
    let mut during = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(ping(&mut during, Duration::from_millis(300)).await, None);
    assert!(!closed(&during));

    proxy.unsilence();
    // The held PINGs are delivered now, in order.
    assert_eq!(read_reply(&mut conn, second).await.as_deref(), Some("+PONG\r\n"));
    assert_eq!(read_reply(&mut during, second).await.as_deref(), Some("+PONG\r\n"));
    let mut after = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(ping(&mut after, second).await.as_deref(), Some("+PONG\r\n"));

    // cut() still closes everything, and restore() lets new connections in.
    proxy.cut();
    assert_eq!(
        read_reply(&mut after, second).await.as_deref(),
        Some(""),
        "EOF after cut"
    );
    proxy.restore();
    let mut restored = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    assert_eq!(ping(&mut restored, second).await.as_deref(), Some("+PONG\r\n"));
}
