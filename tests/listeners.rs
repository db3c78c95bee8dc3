//! The HTTP listeners under hostile clients: a client that never finishes
//! its request headers is cut after the header deadline (5 s), and the admin
//! listener's probes keep answering while another listener is flooded with
//! idle connections, even when the process may open only a few hundred
//! descriptors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{RevokdProcess, http_get};

/// Opens a connection, sends half a request head, and returns how long the
/// server kept it open (`None` if still open after `limit`).
fn slow_header_held(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            // Closed (possibly after a 408): cut.
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return None;
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_cut() {
    let p = RevokdProcess::spawn(&[]);
    let (admin, http) = (p.admin_addr, p.http_addr.expect("an HTTP API listener"));
    let held =
        tokio::task::spawn_blocking(move || [admin, http].map(|addr| slow_header_held(addr, Duration::from_secs(12))))
            .await
            .unwrap();
    for (name, held) in ["admin", "http api"].iter().zip(held) {
        let held = held.unwrap_or_else(|| panic!("{name}: a slow-header client held past 12 s"));
        assert!(held >= Duration::from_secs(4), "{name}: cut too early ({held:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_another_listener_is_flooded() {
    let p = RevokdProcess::spawn(&[]);
    let http = p.http_addr.expect("an HTTP API listener");
    // 1,500 idle connections to the HTTP API (its cap is 1,024: the rest wait
    // in the backlog, holding no descriptor of revokd's).
    let flood: Vec<TcpStream> = (0..1500).filter_map(|_| TcpStream::connect(http).ok()).collect();
    assert!(flood.len() >= 1000, "opened {}", flood.len());
    for path in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let (code, _) = tokio::time::timeout(Duration::from_secs(2), http_get(p.admin_addr, path))
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer within 2 s"));
        assert_eq!(code, 200, "{path}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    drop(flood);
}

/// Opens up to `n` idle connections to `addr`, stopping at the first that
/// the kernel does not complete within 500 ms (its backlog full).
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
        .collect()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_stay_within_a_small_descriptor_limit() {
    // 256 descriptors: every listener is capped at 64 connections, so all of
    // them flooded at once still leave room for the probes.
    const LIMIT: usize = 256;
    let p = RevokdProcess::spawn_with_fd_limit(&[], LIMIT as u32);
    let (grpc, http) = (p.grpc_addr, p.http_addr.expect("an HTTP API listener"));
    let floods = tokio::task::spawn_blocking(move || (flood(grpc, 300), flood(http, 300)))
        .await
        .unwrap();
    assert!(
        floods.0.len() > 64 && floods.1.len() > 64,
        "flooded {} + {}",
        floods.0.len(),
        floods.1.len()
    );
    for path in ["/healthz", "/readyz"] {
        let (code, _) = tokio::time::timeout(Duration::from_secs(2), http_get(p.admin_addr, path))
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer within 2 s under the flood"));
        assert_eq!(code, 200, "{path}");
    }
    let open = open_descriptors(p.pid());
    assert!(open < LIMIT - 16, "{open} descriptors open of {LIMIT}");
    // The flood gone, the gRPC API answers again.
    drop(floods);
    let mut client = tokio::time::timeout(Duration::from_secs(10), p.client())
        .await
        .expect("gRPC connects");
    let token = tokio::time::timeout(Duration::from_secs(10), common::rpc::issue_token(&mut client, "alice"))
        .await
        .expect("gRPC answers after the flood");
    assert_eq!(
        common::rpc::verify(&mut client, &token).await,
        Ok(revokd::proto::v1::Verdict::Valid)
    );
}
