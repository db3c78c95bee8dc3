//! Redis connection failures say what failed and where: refused, unknown
//! host, wrong password, TLS on one side only; in the log (once per cause),
//! and in /readyz, while callers get UNAVAILABLE; never with the password.

mod common;

use std::time::Duration;

use common::tls::TlsRedis;
use common::{RedisServer, RevokdProcess, free_port, http_get};
use revokd::proto::v1::VerifyTokenRequest;

/// Starts revokd on `url` and returns the cause it gives, once /readyz
/// names `place` and a cause containing `want`; checks that the log says the
/// same, that a verify is UNAVAILABLE, and that `secret` shows nowhere.
async fn diagnosis(url: &str, place: &str, want: &str, secret: &str) -> String {
    let args = [
        "--redis-url",
        url,
        "--revocation-check",
        "redis",
        "--store-timeout",
        "500ms",
    ];
    let p = RevokdProcess::spawn_logged(&args);
    let admin = p.admin_addr;
    common::eventually(
        Duration::from_secs(10),
        &format!("/readyz names {place} and {want:?}"),
        || async move {
            let (code, body) = http_get(admin, "/readyz").await;
            code == 503 && body.contains(place) && body.contains(want)
        },
    )
    .await;
    let (_, body) = http_get(admin, "/readyz").await;
    let cause = body
        .split_once(&format!("{place}: "))
        .expect("a cause after the place")
        .1
        .trim()
        .to_owned();

    // Callers learn only that the store is unavailable (fail closed); where
    // and why are for the operator: the log and /readyz.
    let mut client = p.client().await;
    let token = common::rpc::issue_token(&mut client, "alice").await;
    let request = VerifyTokenRequest {
        token,
        audience: String::new(),
    };
    assert_eq!(
        client.verify_token(request).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );

    let log = p.log();
    p.terminate().await;
    let said = log.lines().into_iter().any(|line| {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["redis"].as_str().is_some_and(|r| r.contains(place)) && v["cause"] == cause.as_str()
    });
    assert!(said, "the log names {place} and {cause:?}: {:?}", log.lines());
    if !secret.is_empty() {
        assert!(!log.contains(secret), "the password is never logged");
        assert!(!body.contains(secret));
    }
    cause
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_unknown_host_auth_and_tls_are_told_apart() {
    // Nothing listens.
    let port = free_port();
    let place = format!("127.0.0.1:{port}");
    diagnosis(&format!("redis://{place}"), &place, "connection refused", "").await;

    // No such host (.invalid never resolves, RFC 6761).
    diagnosis(
        "redis://no-such-host.invalid:6379",
        "no-such-host.invalid:6379",
        "DNS",
        "",
    )
    .await;

    // A wrong password, given in the URL.
    let redis = RedisServer::start();
    redis.cmd(&["CONFIG", "SET", "requirepass", "the-right-one"]);
    let place = format!("127.0.0.1:{}", redis.port);
    let secret = "wrong-pw-4711";
    diagnosis(
        &format!("redis://:{secret}@{place}"),
        &place,
        "authentication failed",
        secret,
    )
    .await;

    // rediss:// to a plain Redis, and redis:// to a TLS-only one.
    diagnosis(&format!("rediss://{place}"), &place, "TLS", "").await;
    let tls = TlsRedis::start();
    let place = format!("127.0.0.1:{}", tls.port);
    diagnosis(&format!("redis://{place}"), &place, "TLS", "").await;
}
