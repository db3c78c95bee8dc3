//! Redis Sentinel: one master, two replicas, three sentinels (real
//! `redis-server` processes). Under a steady load of revocations with
//! `--min-replica-acks 1`, a forced `SENTINEL FAILOVER` and then a kill -9 of
//! the master: every acknowledged revocation is on the final master (0 lost),
//! revokd writes again within 2 s of the sentinels agreeing on the new
//! master, and no revoked token is ever VALID.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rpc::{Client, by_token, issue, verify};
use common::sentinel::SentinelSet;
use common::{RevokdProcess, eventually, keys_dir, metric, serve_args};
use revokd::proto::v1::Verdict;

/// What the load saw.
#[derive(Default)]
struct Ledger {
    /// (jti, token, when acknowledged).
    acked: Vec<(String, String, Instant)>,
    refused: usize,
    /// Revoked tokens answered VALID (must stay empty).
    valid_after_revoke: Vec<String>,
    verifies: usize,
}

async fn revoke_loop(mut c: Client, ledger: Arc<Mutex<Ledger>>, stop: Arc<tokio::sync::Notify>) {
    loop {
        let issued = issue(&mut c, "alice").await;
        let revoked = tokio::select! {
            r = c.revoke_token(by_token(&issued.token)) => r,
            _ = stop.notified() => return,
        };
        let mut l = ledger.lock().unwrap();
        match revoked {
            Ok(_) => l.acked.push((issued.jti, issued.token, Instant::now())),
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                l.refused += 1;
            }
        }
    }
}

/// Verifies the latest acknowledged revocations over and over.
async fn verify_loop(mut c: Client, ledger: Arc<Mutex<Ledger>>, stop: Arc<tokio::sync::Notify>) {
    loop {
        let recent: Vec<String> = {
            let l = ledger.lock().unwrap();
            l.acked.iter().rev().take(8).map(|(_, t, _)| t.clone()).collect()
        };
        for token in recent {
            let verdict = tokio::select! {
                v = verify(&mut c, &token) => v,
                _ = stop.notified() => return,
            };
            let mut l = ledger.lock().unwrap();
            l.verifies += 1;
            if verdict == Ok(Verdict::Valid) {
                l.valid_after_revoke.push(token);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls until `master` reports a replica in state `online`.
async fn wait_replica_online(set: &SentinelSet, master: u16) {
    eventually(Duration::from_secs(20), "a replica in sync with the new master", || {
        let info = set
            .query(master, &["INFO", "replication"])
            .and_then(|r| r.as_str().map(str::to_owned))
            .unwrap_or_default();
        let online = info
            .lines()
            .any(|l| l.starts_with("slave") && l.contains("state=online"));
        async move { online }
    })
    .await;
}

/// How long after `since` the first revocation was acknowledged (polled).
async fn first_ack_after(ledger: &Arc<Mutex<Ledger>>, since: Instant) -> Duration {
    let mut took = None;
    eventually(
        Duration::from_secs(10),
        "a revocation acknowledged after the switch",
        || {
            let l = ledger.lock().unwrap();
            took = l
                .acked
                .iter()
                .rev()
                .find(|(_, _, at)| *at > since)
                .map(|(_, _, at)| *at - since);
            let found = took.is_some();
            async move { found }
        },
    )
    .await;
    took.unwrap()
}

async fn acked_count(ledger: &Arc<Mutex<Ledger>>) -> usize {
    ledger.lock().unwrap().acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_master_kill_lose_no_acknowledged_revocation() {
    let mut set = SentinelSet::start();
    set.fast_timing();
    let keys = keys_dir();
    let url = set.url();
    let revokd = RevokdProcess::spawn(&serve_args(
        &keys,
        &url,
        &["--min-replica-acks", "1", "--store-timeout", "500ms"],
    ));
    revokd.wait_synced().await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(tokio::spawn(revoke_loop(
            revokd.client().await,
            ledger.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(verify_loop(
        revokd.client().await,
        ledger.clone(),
        stop.clone(),
    )));
    eventually(Duration::from_secs(10), "load under way", || async {
        acked_count(&ledger).await > 50
    })
    .await;

    // 1. A forced failover: the old master stays up and keeps taking writes
    //    until the sentinels demote it.
    let old = set.master_port();
    let failover_at = Instant::now();
    set.failover();
    let new = set.wait_new_master(old, Duration::from_secs(20)).await;
    let switched = Instant::now();
    let back_after_failover = first_ack_after(&ledger, switched).await;
    set.wait_ready(Duration::from_secs(30)).await;

    // 2. The master killed (-9) under load.
    let before_kill = acked_count(&ledger).await;
    eventually(Duration::from_secs(10), "load continues", || async {
        acked_count(&ledger).await > before_kill + 20
    })
    .await;
    let kill_at = Instant::now();
    let killed = set.kill_master();
    assert_eq!(killed, new);
    let newest = set.wait_new_master(killed, Duration::from_secs(20)).await;
    // With --min-replica-acks 1 a write can be acknowledged once the new master
    // has a replica in sync again (after a kill the survivor may need a full
    // resync): that is the switch revokd must follow within 2 s.
    wait_replica_online(&set, newest).await;
    let switched = Instant::now();
    let back_after_kill = first_ack_after(&ledger, switched).await;
    let before_end = acked_count(&ledger).await;
    eventually(
        Duration::from_secs(10),
        "load continues on the newest master",
        || async { acked_count(&ledger).await > before_end + 20 },
    )
    .await;
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }

    let metrics = revokd.metrics().await;
    assert!(metric(&metrics, "revokd_redis_master_switches_total").unwrap_or(0.0) >= 2.0);

    // Every acknowledged revocation is on the final master.
    let l = ledger.lock().unwrap();
    let lost: Vec<&String> = l
        .acked
        .iter()
        .filter(|(jti, _, _)| set.cmd(newest, &["EXISTS", &format!("revokd:jti:{jti}")]).as_deref() != Some(":1"))
        .map(|(jti, _, _)| jti)
        .collect();
    eprintln!(
        "sentinel: {} acknowledged, {} refused (UNAVAILABLE), {} verifies; writes back {back_after_failover:?} after the failover, {back_after_kill:?} after the kill; lost {}",
        l.acked.len(),
        l.refused,
        l.verifies,
        lost.len()
    );
    for (jti, _, at) in l.acked.iter().filter(|(j, _, _)| lost.contains(&j)).take(5) {
        eprintln!(
            "lost {jti}: acked {:?} after the failover began, {:?} after the kill",
            at.checked_duration_since(failover_at),
            at.checked_duration_since(kill_at)
        );
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged revocations lost: {lost:?}",
        lost.len()
    );
    assert!(l.valid_after_revoke.is_empty(), "revoked tokens answered VALID");
    assert!(back_after_failover < Duration::from_secs(2), "{back_after_failover:?}");
    assert!(back_after_kill < Duration::from_secs(2), "{back_after_kill:?}");
}
