//! The test fixtures themselves: a Sentinel set fails over, a TLS Redis trusts
//! only its own CA, and a silenced proxy holds bytes on open connections.

mod common;

use std::time::{Duration, Instant};

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
