//! /metrics on the admin listener moves with real calls, and names stay within
//! Prometheus rules (no token, jti or subject in any label).

mod common;

use common::rpc::{issue, revoke, verify_req};
use common::{RedisServer, RevokdProcess, keys_dir, metric, serve_args};
use revokd::proto::v1::IssueTokenRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_calls() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    p.wait_synced().await;
    let mut c = p.client().await;
    let t = issue(&mut c, "subject-never-in-metrics").await;
    for _ in 0..3 {
        c.verify_token(verify_req(&t.token)).await.unwrap();
    }
    c.verify_token(verify_req("junk")).await.unwrap();
    assert!(c.issue_token(IssueTokenRequest::default()).await.is_err());
    revoke(&mut c, &t.token).await;
    c.verify_token(verify_req(&t.token)).await.unwrap();

    let text = p.metrics().await;
    let m = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("{s} missing in:\n{text}"));
    assert_eq!(m("revokd_verify_total{verdict=\"valid\"}"), 3.0);
    assert_eq!(m("revokd_verify_total{verdict=\"malformed\"}"), 1.0);
    assert_eq!(m("revokd_verify_total{verdict=\"revoked\"}"), 1.0);
    assert_eq!(m("revokd_verify_duration_seconds_count"), 5.0);
    assert_eq!(m("revokd_issue_total{result=\"ok\"}"), 1.0);
    assert_eq!(m("revokd_issue_total{result=\"invalid_argument\"}"), 1.0);
    assert_eq!(m("revokd_revoke_total{target=\"token\",result=\"newly_revoked\"}"), 1.0);
    assert_eq!(m("revokd_grpc_requests_total{method=\"VerifyToken\",code=\"OK\"}"), 5.0);
    assert_eq!(
        m("revokd_grpc_requests_total{method=\"IssueToken\",code=\"INVALID_ARGUMENT\"}"),
        1.0
    );
    // The same token four times: one signature check, then the cache; "junk" misses too.
    assert_eq!(m("revokd_token_cache_misses_total"), 2.0);
    assert_eq!(m("revokd_token_cache_hits_total"), 3.0);
    assert_eq!(m("revokd_store_up"), 1.0);
    assert_eq!(m("revokd_mirror_synced"), 1.0);
    assert!(m("revokd_mirror_entries") >= 1.0);
    assert!(m("revokd_mirror_last_resync_timestamp_seconds") > 1.7e9);
    assert!(m("revokd_revocation_propagation_seconds_count") >= 1.0);
    assert!(text.contains("revokd_build_info{"), "{text}");
    for needle in [t.token.as_str(), t.jti.as_str(), "subject-never-in-metrics"] {
        assert!(!text.contains(needle), "{needle} leaked into /metrics");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("revokd_"), "{line}");
        assert!(text.contains(&format!("# HELP {name} ")), "HELP for {name}");
        if line.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_metrics_exist_only_with_a_mirror() {
    let redis = RedisServer::start();
    let url = redis.url();
    let p = RevokdProcess::spawn(&["--redis-url", &url, "--revocation-check", "redis"]);
    common::eventually(std::time::Duration::from_secs(5), "store up", || async {
        metric(&p.metrics().await, "revokd_store_up") == Some(1.0)
    })
    .await;
    let text = p.metrics().await;
    assert!(
        !text.contains("revokd_mirror_synced"),
        "no mirror, no mirror alert: {text}"
    );
}
