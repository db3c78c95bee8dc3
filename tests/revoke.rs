//! Revocation: what lands in Redis, with which TTL, idempotency, bad requests,
//! and failing closed while Redis is down.

mod common;

use revokd::config::RevocationCheck;

use std::time::Duration;

use common::rpc::{by_token, eventually_verify, issue, revoke, verdict, verify_req};
use common::{RedisServer, TestServer, eventually, http_get, now, sign_hs};
use revokd::proto::v1::{IssueTokenRequest, RevokeTokenRequest, Verdict, revoke_token_request};
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn revocation_ttl_matches_remaining_lifetime_and_is_idempotent() {
    let redis = RedisServer::start();
    let server = TestServer::start(Some(&redis)).await;
    let mut client = server.client().await;
    let issued = client
        .issue_token(IssueTokenRequest {
            subject: "alice".into(),
            ttl: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key = format!("revokd:jti:{}", issued.jti);
    assert_eq!(redis.cmd(&["EXISTS", &key]).as_deref(), Some(":0"));

    let first = revoke(&mut client, &issued.token).await;
    assert!(first.newly_revoked);
    assert_eq!(first.jti, issued.jti);
    let exp = issued.expires_at.unwrap().seconds;
    assert_eq!(first.expires_at.unwrap().seconds, exp + 30, "kept until exp + leeway");
    // Redis has it, with TTL = remaining lifetime + leeway (within 1 s).
    let ttl = redis.ttl(&key);
    let expected = exp + 30 - now();
    assert!((ttl - expected).abs() <= 1, "ttl {ttl}, expected {expected}");

    // Idempotent: a second revocation changes nothing and says so.
    let second = revoke(&mut client, &issued.token).await;
    assert!(!second.newly_revoked);
    assert!((redis.ttl(&key) - expected).abs() <= 1);

    // By jti: kept for the maximum token lifetime (the 7 d refresh lifetime by default) plus leeway.
    let by_jti = client
        .revoke_token(RevokeTokenRequest {
            target: Some(revoke_token_request::Target::Jti("operator-jti".into())),
            reason: "incident".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(by_jti.newly_revoked);
    let ttl = redis.ttl("revokd:jti:operator-jti");
    assert!((ttl - (7 * 24 * 3600 + 30)).abs() <= 1, "ttl {ttl}");
    let forged = sign_hs(
        &json!({"iss": "revokd", "sub": "bob", "exp": now() + 60, "jti": "operator-jti"}),
        Some("test-hs"),
    );
    assert_eq!(verdict(&mut client, &forged).await, Verdict::Revoked);

    // An expired token needs nothing stored.
    let expired = sign_hs(
        &json!({"iss": "revokd", "sub": "bob", "exp": now() - 120, "jti": "old-jti"}),
        Some("test-hs"),
    );
    let r = revoke(&mut client, &expired).await;
    assert!(!r.newly_revoked);
    assert_eq!(redis.cmd(&["EXISTS", "revokd:jti:old-jti"]).as_deref(), Some(":0"));

    server.shutdown().await;
}

#[tokio::test]
async fn key_prefix_is_configurable() {
    let redis = RedisServer::start();
    let (mut config, _keys) = TestServer::config(Some(&redis));
    config.key_prefix = "tenant-a:".into();
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    client
        .revoke_token(RevokeTokenRequest {
            target: Some(revoke_token_request::Target::Jti("x1".into())),
            reason: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(redis.cmd(&["EXISTS", "tenant-a:jti:x1"]).as_deref(), Some(":1"));
    server.shutdown().await;
}

async fn expect_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message {:?} must name {field}",
        status.message()
    );
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_naming_the_field() {
    let redis = RedisServer::start();
    let server = TestServer::start(Some(&redis)).await;
    let mut client = server.client().await;
    let issue = |req: IssueTokenRequest| {
        let mut c = client.clone();
        async move { c.issue_token(req).await }
    };
    expect_invalid(issue(IssueTokenRequest::default()).await, "subject").await;
    expect_invalid(
        issue(IssueTokenRequest {
            subject: "a".into(),
            ttl: Some(prost_types::Duration {
                seconds: 25 * 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await,
        "ttl",
    )
    .await;
    expect_invalid(
        issue(IssueTokenRequest {
            subject: "a".into(),
            ttl: Some(prost_types::Duration { seconds: -5, nanos: 0 }),
            ..Default::default()
        })
        .await,
        "ttl",
    )
    .await;
    for reserved in ["exp", "jti", "sub", "iat", "iss", "aud", "nbf"] {
        let mut extra = serde_json::Map::new();
        extra.insert(reserved.into(), json!(1));
        expect_invalid(
            issue(IssueTokenRequest {
                subject: "a".into(),
                claims: Some(revokd::proto::json_to_struct(&extra)),
                ..Default::default()
            })
            .await,
            "claims",
        )
        .await;
    }
    expect_invalid(
        client
            .revoke_token(RevokeTokenRequest {
                target: None,
                reason: String::new(),
            })
            .await,
        "target",
    )
    .await;
    expect_invalid(
        client
            .revoke_token(RevokeTokenRequest {
                target: Some(revoke_token_request::Target::Jti(String::new())),
                reason: String::new(),
            })
            .await,
        "jti",
    )
    .await;
    // A token without a valid signature from a known key: nothing stored.
    let foreign = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("test-hs".into());
        jsonwebtoken::encode(
            &h,
            &json!({"iss": "revokd", "sub": "x", "exp": now() + 60, "jti": "forged"}),
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the"),
        )
        .unwrap()
    };
    expect_invalid(client.revoke_token(by_token(&foreign)).await, "token").await;
    expect_invalid(client.revoke_token(by_token("garbage")).await, "token").await;
    // Nothing stored: the only key is revokd's data marker.
    assert_eq!(redis.cmd(&["DBSIZE"]).as_deref(), Some(":1"), "nothing stored");
    assert_eq!(redis.cmd(&["EXISTS", "revokd:marker"]).as_deref(), Some(":1"));
    server.shutdown().await;
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_with_the_mirror() {
    redis_down_fails_closed_and_recovers(RevocationCheck::Mirror).await;
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_with_redis_lookups() {
    redis_down_fails_closed_and_recovers(RevocationCheck::Redis).await;
}

async fn redis_down_fails_closed_and_recovers(mode: RevocationCheck) {
    let mut redis = RedisServer::start();
    let server = TestServer::start_mode(Some(&redis), mode).await;
    let mut client = server.client().await;
    let issued = issue(&mut client, "alice").await;
    let token = issued.token.as_str();
    assert_eq!(verdict(&mut client, token).await, Verdict::Valid);
    let (code, _) = http_get(server.admin_addr, "/readyz").await;
    assert_eq!(code, 200);

    redis.stop();
    // Never "valid" while the store cannot be asked: UNAVAILABLE.
    let status = client.verify_token(verify_req(token)).await.expect_err("fail closed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client
        .revoke_token(by_token(token))
        .await
        .expect_err("not acknowledged");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let (code, _) = http_get(server.admin_addr, "/readyz").await;
    assert_eq!(code, 503);
    let (code, _) = http_get(server.admin_addr, "/healthz").await;
    assert_eq!(code, 200, "liveness does not depend on Redis");
    // A bad token is still a verdict, with no store involved.
    assert_eq!(verdict(&mut client, "garbage").await, Verdict::Malformed);

    redis.restart();
    eventually_verify(
        Duration::from_secs(10),
        "verify serves again after Redis restarts",
        &client,
        token,
        Ok(Verdict::Valid),
    )
    .await;
    // The mirror's own connection may be back before the command connection: poll the write.
    eventually(Duration::from_secs(10), "revocations are accepted again", || {
        let mut c = client.clone();
        async move { matches!(c.revoke_token(by_token(token)).await, Ok(r) if r.get_ref().newly_revoked) }
    })
    .await;
    assert_eq!(verdict(&mut client, token).await, Verdict::Revoked);
    server.shutdown().await;
}

#[tokio::test]
async fn redis_down_at_start_is_not_ready_until_it_comes() {
    let mut redis = RedisServer::start();
    redis.stop();
    let (mut config, _keys) = TestServer::config(Some(&redis));
    config.store_timeout = Duration::from_millis(200);
    let server = TestServer::start_with(config).await;
    let (code, _) = http_get(server.admin_addr, "/readyz").await;
    assert_eq!(code, 503);
    redis.restart();
    eventually(Duration::from_secs(10), "ready once Redis is up", || async {
        http_get(server.admin_addr, "/readyz").await.0 == 200
    })
    .await;
    server.shutdown().await;
}

/// A Redis outage fails every request; the log says so once a second, with
/// how many failures each line stands for, not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once_a_second_not_once_a_request() {
    let mut redis = RedisServer::start();
    let keys = common::keys_dir();
    let url = redis.url();
    let p = common::RevokdProcess::spawn_logged(&common::serve_args(&keys, &url, &["--revocation-check", "redis"]));
    let mut client = p.client().await;
    let token = issue(&mut client, "alice").await.token;
    redis.stop();
    let started = std::time::Instant::now();
    let mut failed = 0;
    for _ in 0..500 {
        if client.verify_token(verify_req(&token)).await.is_err() {
            failed += 1;
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    assert_eq!(failed, 500, "fails closed");
    let warnings: Vec<String> = p
        .log()
        .lines()
        .into_iter()
        .filter(|l| l.contains("revocation store unavailable") && l.contains("WARN"))
        .collect();
    assert!(
        !warnings.is_empty() && warnings.len() as u64 <= seconds + 1,
        "{} warnings in {seconds} s: {warnings:#?}",
        warnings.len()
    );
    assert!(
        warnings.iter().skip(1).all(|l| l.contains("suppressed")),
        "{warnings:#?}"
    );
}
