//! The revocation mirror across processes: two real revokd processes on one
//! real Redis, propagation delay, partitions, Redis restarts, and revocations
//! written or deleted behind revokd's back with redis-cli.

mod common;

use std::time::{Duration, Instant};

use common::rpc::{eventually_verify, issue, issue_token, revoke, verify};
use common::{RedisServer, RevokdProcess, TcpProxy, eventually, keys_dir, metric, redis_cli, serve_args};
use revokd::proto::v1::{IssueTokenResponse, RevokeTokenRequest, Verdict, revoke_token_request};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_a_is_seen_by_b_quickly_and_never_unseen() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    let b = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    a.wait_synced().await;
    b.wait_synced().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);

    let mut delays = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let token = issue_token(&mut ca, "alice").await;
        assert_eq!(verify(&mut cb, &token).await, Ok(Verdict::Valid));
        revoke(&mut ca, &token).await;
        let returned = Instant::now();
        loop {
            match verify(&mut cb, &token).await {
                Ok(Verdict::Revoked) => break,
                Ok(Verdict::Valid) => assert!(
                    returned.elapsed() < Duration::from_secs(1),
                    "not REVOKED on B within 1 s"
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        delays.push(returned.elapsed());
        // Once B has seen it, B never says VALID again.
        for _ in 0..3 {
            assert_eq!(verify(&mut cb, &token).await, Ok(Verdict::Revoked));
        }
    }
    delays.sort();
    let text = b.metrics().await;
    let propagated = metric(&text, "revokd_revocation_propagation_seconds_count").unwrap_or(0.0);
    eprintln!(
        "propagation A.RevokeToken returned -> B first REVOKED over {} revocations: p50 {:?}, p99 {:?}, max {:?}; B's mirror received {propagated} by push",
        delays.len(),
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );
    assert!(propagated >= 1000.0, "B learnt of revocations through invalidations");
    // Steady state is mirror-only: no fallback to per-request lookups happened.
    assert_eq!(metric(&text, "revokd_mirror_synced"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_instance_fails_closed_then_catches_up() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let proxy = TcpProxy::start(redis.port).await;
    let proxy_url = proxy.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    let b = RevokdProcess::spawn(&serve_args(&keys, &proxy_url, &[]));
    a.wait_synced().await;
    b.wait_synced().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let IssueTokenResponse { token, jti, .. } = issue(&mut ca, "alice").await;
    assert_eq!(verify(&mut cb, &token).await, Ok(Verdict::Valid));

    proxy.cut();
    // B can no longer learn of revocations: it must not answer VALID.
    eventually_verify(
        Duration::from_secs(5),
        "B fails closed while cut off",
        &cb,
        &token,
        Err(tonic::Code::Unavailable),
    )
    .await;
    assert_eq!(metric(&b.metrics().await, "revokd_mirror_synced"), Some(0.0));
    revoke(&mut ca, &token).await;
    assert_eq!(redis_cli(&redis, &["EXISTS", &format!("revokd:jti:{jti}")]), "1");
    for _ in 0..20 {
        assert_ne!(verify(&mut cb, &token).await, Ok(Verdict::Valid));
    }

    proxy.restore();
    // After reconnecting (both connections: the mirror's and the lookups'), B
    // resyncs and enforces what it missed.
    b.wait_synced().await;
    eventually_verify(
        Duration::from_secs(10),
        "B enforces the revocation it missed",
        &cb,
        &token,
        Ok(Verdict::Revoked),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_both_instances_resync() {
    let mut redis = RedisServer::start_persistent();
    let keys = keys_dir();
    let url = redis.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    let b = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    a.wait_synced().await;
    b.wait_synced().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let before = issue_token(&mut ca, "alice").await;
    revoke(&mut ca, &before).await;

    redis.restart();
    for p in [&a, &b] {
        eventually(Duration::from_secs(10), "resynced after the restart", || async {
            let text = p.metrics().await;
            metric(&text, "revokd_mirror_synced") == Some(1.0)
                && metric(&text, "revokd_mirror_entries").unwrap_or(0.0) >= 1.0
        })
        .await;
    }
    eventually(Duration::from_secs(10), "A can revoke again", || {
        let mut ca = ca.clone();
        async move {
            ca.revoke_token(RevokeTokenRequest {
                target: Some(revoke_token_request::Target::Jti("probe".into())),
                reason: String::new(),
            })
            .await
            .is_ok()
        }
    })
    .await;
    assert_eq!(verify(&mut ca, &before).await, Ok(Verdict::Revoked));
    assert_eq!(verify(&mut cb, &before).await, Ok(Verdict::Revoked));
    let after = issue_token(&mut ca, "alice").await;
    assert_eq!(verify(&mut cb, &after).await, Ok(Verdict::Valid));
    revoke(&mut ca, &after).await;
    eventually_verify(
        Duration::from_secs(1),
        "B enforces a revocation made after the restart",
        &cb,
        &after,
        Ok(Verdict::Revoked),
    )
    .await;
    // A restart that kept the data is no data loss.
    for p in [&a, &b] {
        assert_eq!(metric(&p.metrics().await, "revokd_redis_data_loss_total"), Some(0.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_recent_revocations_written_again() {
    // No persistence: the restart loses every key.
    let mut redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    let b = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    a.wait_synced().await;
    b.wait_synced().await;
    let (mut ca, cb) = (a.client().await, b.client().await);
    let IssueTokenResponse { token, jti, .. } = issue(&mut ca, "alice").await;
    revoke(&mut ca, &token).await;
    let key = format!("revokd:jti:{jti}");

    redis.restart();
    // A wrote it again after reconnecting; B learns it from Redis as any other write.
    eventually(Duration::from_secs(10), "A re-asserted its revocation", || async {
        redis_cli(&redis, &["EXISTS", &key]) == "1"
    })
    .await;
    assert_eq!(verify(&mut ca, &token).await, Ok(Verdict::Revoked));
    // Both noticed that Redis lost its data (the marker key changed).
    for p in [&a, &b] {
        eventually(Duration::from_secs(10), "the data loss is counted", || async {
            metric(&p.metrics().await, "revokd_redis_data_loss_total") == Some(1.0)
        })
        .await;
    }
    eventually_verify(
        Duration::from_secs(10),
        "B enforces it again",
        &cb,
        &token,
        Ok(Verdict::Revoked),
    )
    .await;
}

async fn redis_cli_writes_are_enforced(mode: &str) {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, &["--revocation-check", mode]));
    if mode == "mirror" {
        a.wait_synced().await;
    }
    let mut ca = a.client().await;
    let IssueTokenResponse { token, jti, .. } = issue(&mut ca, "alice").await;
    assert_eq!(verify(&mut ca, &token).await, Ok(Verdict::Valid));
    let key = format!("revokd:jti:{jti}");
    let exat = (common::now() + 3600).to_string();

    redis_cli(&redis, &["SET", &key, "by-hand", "EXAT", &exat]);
    eventually_verify(
        Duration::from_secs(1),
        "a key set with redis-cli is enforced",
        &ca,
        &token,
        Ok(Verdict::Revoked),
    )
    .await;

    redis_cli(&redis, &["DEL", &key]);
    eventually_verify(
        Duration::from_secs(1),
        "a key deleted with redis-cli stops being enforced",
        &ca,
        &token,
        Ok(Verdict::Valid),
    )
    .await;

    // FLUSHALL sends no per-key invalidation; a stale mirror entry is confirmed against Redis.
    redis_cli(&redis, &["SET", &key, "by-hand", "EXAT", &exat]);
    eventually_verify(Duration::from_secs(1), "set again", &ca, &token, Ok(Verdict::Revoked)).await;
    redis_cli(&redis, &["FLUSHALL"]);
    assert_eq!(verify(&mut ca, &token).await, Ok(Verdict::Valid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_writes_are_enforced_with_the_mirror() {
    redis_cli_writes_are_enforced("mirror").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_writes_are_enforced_with_redis_lookups() {
    redis_cli_writes_are_enforced("redis").await;
}
