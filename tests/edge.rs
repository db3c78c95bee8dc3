//! Revocation enforced at the proxy, with the real proxies: Envoy (ext_authz
//! v3 over gRPC, to revokd's `--authz-addr` listener) and nginx
//! (`auth_request` to `/authz/check`) in front of an upstream that echoes
//! the headers it receives; revokd and Redis real too. And `/authz/check`
//! spoken to directly.

mod common;

use std::time::Duration;

use common::edge::{Echo, Envoy, Nginx, envoy_binary, request};
use common::rpc::{issue, login, revoke};
use common::{RedisServer, RevokdProcess, eventually, keys_dir, metric, now, serve_args, sign_hs};
use serde_json::json;

const CHALLENGE: &str = r#"Bearer error="invalid_token""#;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// revokd with an ext_authz-only listener, on `redis`.
fn revokd(keys: &tempfile::TempDir, url: &str) -> RevokdProcess {
    RevokdProcess::spawn(&serve_args(
        keys,
        url,
        &["--authz-addr", "127.0.0.1:0", "--store-timeout", "300ms"],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_lets_valid_tokens_through_with_identity_and_stops_the_rest() {
    let Some(envoy_bin) = envoy_binary() else {
        eprintln!("ENVOY_BIN not set: skipped");
        return;
    };
    let mut redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = revokd(&keys, &url);
    p.wait_synced().await;
    let echo = Echo::start().await;
    let envoy = Envoy::start(&envoy_bin, p.authz_addr.expect("--authz-addr"), echo.addr, false).await;
    let mut c = p.client().await;

    // Valid: through, with revokd's identity; a client's forged identity never arrives.
    let t = issue(&mut c, "alice").await;
    let a = request(
        envoy.addr,
        "GET",
        "/orders",
        &[
            ("authorization", &bearer(&t.token)),
            ("x-jwt-subject", "admin"),
            ("X-Jwt-Role", "root"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.upstream_saw();
    assert_eq!(seen.get("x-jwt-subject").map(String::as_str), Some("alice"), "{seen:?}");
    assert_eq!(seen.get("x-jwt-id"), Some(&t.jti));
    assert!(
        !seen.contains_key("x-jwt-role"),
        "a forged x-jwt-* header reached the app: {seen:?}"
    );
    assert!(!seen.contains_key("x-jwt-session-id"));
    // The scheme in any case; a session token carries its session id.
    let s = login(&mut c, "bob").await;
    let a = request(
        envoy.addr,
        "GET",
        "/",
        &[("authorization", &format!("bEaReR {}", s.access_token))],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.upstream_saw().get("x-jwt-session-id"), Some(&s.session_id));

    // Revoked, expired, missing, garbage: 401 with a challenge, nothing reaches the app.
    revoke(&mut c, &t.token).await;
    let expired = sign_hs(
        &json!({"iss": "revokd", "sub": "alice", "jti": "old", "iat": now() - 600, "exp": now() - 300}),
        Some("test-hs"),
    );
    for (what, auth) in [
        ("revoked", Some(bearer(&t.token))),
        ("expired", Some(bearer(&expired))),
        ("garbage", Some(bearer("not.a.token"))),
        ("another scheme", Some(format!("Basic {}", t.token))),
        ("missing", None),
    ] {
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
        let a = request(envoy.addr, "GET", "/orders", &headers).await;
        assert_eq!(a.status, 401, "{what}: {a:?}");
        let challenge = if auth.is_none() || what == "another scheme" {
            "Bearer"
        } else {
            CHALLENGE
        };
        assert_eq!(
            a.headers.get("www-authenticate").map(String::as_str),
            Some(challenge),
            "{what}"
        );
        assert_eq!(
            a.headers.get("cache-control").map(String::as_str),
            Some("no-store"),
            "{what}"
        );
        assert!(!a.body.contains("x-jwt"), "{what}: the upstream answered");
    }

    // A route that requires another audience.
    let other = issue(&mut c, "carol").await.token;
    let a = request(envoy.addr, "GET", "/aud/x", &[("authorization", &bearer(&other))]).await;
    assert_eq!(a.status, 401, "wrong audience: {a:?}");
    let api_b = c
        .issue_token(revokd::proto::v1::IssueTokenRequest {
            subject: "carol".into(),
            audience: vec!["api-b".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let a = request(envoy.addr, "GET", "/aud/x", &[("authorization", &bearer(&api_b))]).await;
    assert_eq!(a.status, 200, "right audience: {a:?}");

    let m = p.metrics().await;
    assert!(metric(&m, r#"revokd_authz_checks_total{result="allowed",verdict="valid"}"#).unwrap_or(0.0) >= 3.0);
    assert!(metric(&m, r#"revokd_authz_checks_total{result="denied",verdict="revoked"}"#).unwrap_or(0.0) >= 1.0);

    // Redis down: never a denial from revokd but an error, so Envoy's failure
    // mode decides: closed (503) here, open (through, marked) with failure_mode_allow.
    let fresh = issue(&mut c, "dave").await.token;
    let open = Envoy::start(&envoy_bin, p.authz_addr.unwrap(), echo.addr, true).await;
    redis.stop();
    eventually(Duration::from_secs(5), "Envoy fails closed while Redis is down", || {
        let fresh = fresh.clone();
        async move {
            let a = request(envoy.addr, "GET", "/", &[("authorization", &bearer(&fresh))]).await;
            assert_ne!(a.status, 200, "a revocation check that failed let the request through");
            assert_ne!(a.status, 401, "a store outage is not a denial");
            a.status == 503
        }
    })
    .await;
    let a = request(open.addr, "GET", "/", &[("authorization", &bearer(&fresh))]).await;
    assert_eq!(a.status, 200, "failure_mode_allow lets it through: {a:?}");
    assert!(
        a.upstream_saw().contains_key("x-envoy-auth-failure-mode-allowed"),
        "{a:?}"
    );

    // revokd gone: closed too.
    drop(p);
    let a = request(envoy.addr, "GET", "/", &[("authorization", &bearer(&fresh))]).await;
    assert_eq!(a.status, 503, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_200_401_or_503() {
    let mut redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &["--store-timeout", "300ms"]));
    p.wait_synced().await;
    let http = p.http_addr.expect("--http-addr");
    let mut c = p.client().await;
    let t = issue(&mut c, "alice").await;
    let auth = bearer(&t.token);
    // Any method, any path below /authz/check (proxies append the original path).
    for (method, path) in [
        ("GET", "/authz/check"),
        ("POST", "/authz/check/orders/7?x=1"),
        ("HEAD", "/authz/check/"),
    ] {
        let a = request(http, method, path, &[("authorization", &auth), ("x-jwt-role", "root")]).await;
        assert_eq!(a.status, 200, "{method} {path}: {a:?}");
        assert_eq!(a.headers.get("x-jwt-subject").map(String::as_str), Some("alice"));
        assert_eq!(a.headers.get("x-jwt-id"), Some(&t.jti));
    }
    let a = request(
        http,
        "GET",
        "/authz/check",
        &[("authorization", &auth), ("x-revokd-audience", "api-b")],
    )
    .await;
    assert_eq!(a.status, 401, "wrong audience");
    let a = request(http, "GET", "/authz/check", &[]).await;
    assert_eq!(
        (a.status, a.headers.get("www-authenticate").map(String::as_str)),
        (401, Some("Bearer"))
    );
    revoke(&mut c, &t.token).await;
    let a = request(http, "GET", "/authz/check", &[("authorization", &auth)]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.headers.get("www-authenticate").map(String::as_str), Some(CHALLENGE));
    assert_eq!(a.headers.get("cache-control").map(String::as_str), Some("no-store"));

    // The store down: 503 with Retry-After, never 200 or 401.
    let fresh = bearer(&issue(&mut c, "bob").await.token);
    redis.stop();
    eventually(Duration::from_secs(5), "503 while Redis is down", || {
        let fresh = fresh.clone();
        async move {
            let a = request(http, "GET", "/authz/check", &[("authorization", &fresh)]).await;
            assert_ne!(a.status, 401, "a store outage is not a denial");
            a.status == 503 && a.headers.contains_key("retry-after")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_enforces_revocation() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    p.wait_synced().await;
    let echo = Echo::start().await;
    let Some(nginx) = Nginx::start(p.http_addr.unwrap(), echo.addr).await else {
        eprintln!("nginx not installed: skipped");
        return;
    };
    let mut c = p.client().await;
    let t = issue(&mut c, "alice").await;
    let a = request(
        nginx.addr,
        "GET",
        "/orders",
        &[("authorization", &bearer(&t.token)), ("x-jwt-subject", "admin")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.upstream_saw();
    assert_eq!(seen.get("x-jwt-subject").map(String::as_str), Some("alice"), "{seen:?}");
    assert_eq!(seen.get("x-jwt-id"), Some(&t.jti));
    revoke(&mut c, &t.token).await;
    let a = request(nginx.addr, "GET", "/orders", &[("authorization", &bearer(&t.token))]).await;
    assert_eq!(a.status, 401, "revoked: {a:?}");
    let a = request(nginx.addr, "GET", "/orders", &[]).await;
    assert_eq!(a.status, 401, "missing: {a:?}");
}
