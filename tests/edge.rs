//! Revocation enforced at the proxy, with the real proxies: Envoy (ext_authz
//! v3 over gRPC, to revokd's `--authz-addr` listener) and nginx
//! (`auth_request` to `/authz/check`) in front of an upstream that echoes
//! the headers it receives; revokd and Redis real too. And `/authz/check`
//! spoken to directly.

mod common;

use std::time::{Duration, Instant};

use common::edge::{Answer, Echo, Envoy, Nginx, envoy_binary, request};
use common::rpc::{issue, login, revoke};
use common::{RedisServer, RevokdProcess, keys_dir, metric, now, serve_args, sign_hs};
use serde_json::json;

const CHALLENGE: &str = r#"Bearer error="invalid_token""#;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What a proxy answers once Redis is down: `want` (503 from Envoy and
/// forward-auth, 500 from nginx) within 5 s, and then every time. The
/// mirror answers from what it proved fresh for up to `--max-staleness`
/// (100 ms) after the stop, so an early 200 is allowed; a check sent half a
/// second after the stop must not pass. Never a 401: an outage is not a denial.
/// Returns the last answer.
async fn closes_on_outage<F, Fut>(stopped: Instant, want: u16, send: F) -> Answer
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    loop {
        let sent = stopped.elapsed();
        let a = send().await;
        if a.status == want {
            break;
        }
        assert_eq!(a.status, 200, "neither {want} nor a pass while Redis is down: {a:?}");
        assert!(
            sent < Duration::from_millis(500),
            "a check sent {sent:?} after Redis stopped let the request through"
        );
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "no {want} within 5 s of the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        let a = send().await;
        assert_eq!(a.status, want, "once closed, stays closed: {a:?}");
    }
    send().await
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
            // Not a session token: revokd sets no session id, so this one must be removed.
            ("x-jwt-session-id", "forged-session"),
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
    assert!(
        !seen.contains_key("x-jwt-session-id"),
        "a forged session id reached the app: {seen:?}"
    );
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
    let stopped = Instant::now();
    redis.stop();
    closes_on_outage(stopped, 503, || {
        let fresh = fresh.clone();
        async move { request(envoy.addr, "GET", "/", &[("authorization", &bearer(&fresh))]).await }
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
    // Any method, any path below /authz/check (proxies append the original
    // path), the scheme in any case; exactly 200, revokd's identity only.
    for (method, path, auth) in [
        ("GET", "/authz/check", auth.clone()),
        ("POST", "/authz/check/orders/7?x=1", auth.clone()),
        ("HEAD", "/authz/check/", auth.clone()),
        ("GET", "/authz/check/x", format!("bearer {}", t.token)),
    ] {
        let a = request(
            http,
            method,
            path,
            &[
                ("authorization", &auth),
                ("x-jwt-role", "root"),
                ("x-jwt-session-id", "forged"),
            ],
        )
        .await;
        assert_eq!(a.status, 200, "{method} {path}: {a:?}");
        assert_eq!(
            a.headers.get("x-jwt-subject").map(String::as_str),
            Some("alice"),
            "{a:?}"
        );
        assert_eq!(a.headers.get("x-jwt-id"), Some(&t.jti), "{a:?}");
        assert!(
            !a.headers.contains_key("x-jwt-session-id") && !a.headers.contains_key("x-jwt-role"),
            "{method} {path}: a client header echoed as identity: {a:?}"
        );
    }
    // A session token carries its session id.
    let s = login(&mut c, "bob").await;
    let a = request(
        http,
        "GET",
        "/authz/check",
        &[("authorization", &bearer(&s.access_token))],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers.get("x-jwt-session-id"), Some(&s.session_id), "{a:?}");
    // The audience a route requires, from x-revokd-audience.
    let a = request(
        http,
        "GET",
        "/authz/check",
        &[("authorization", &auth), ("x-revokd-audience", "api-b")],
    )
    .await;
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
    let a = request(
        http,
        "GET",
        "/authz/check",
        &[("authorization", &bearer(&api_b)), ("x-revokd-audience", "api-b")],
    )
    .await;
    assert_eq!(a.status, 200, "right audience: {a:?}");
    // No token: a bare challenge; one in another scheme is no bearer token either.
    for headers in [vec![], vec![("authorization", "Basic YTpi")]] {
        let a = request(http, "GET", "/authz/check", &headers).await;
        assert_eq!(
            (a.status, a.headers.get("www-authenticate").map(String::as_str)),
            (401, Some("Bearer")),
            "{headers:?}: {a:?}"
        );
        assert_eq!(a.headers.get("cache-control").map(String::as_str), Some("no-store"));
    }
    // Revoked, expired: the invalid_token challenge and a body that says nothing of why.
    revoke(&mut c, &t.token).await;
    let expired = sign_hs(
        &json!({"iss": "revokd", "sub": "alice", "jti": "old", "iat": now() - 600, "exp": now() - 300}),
        Some("test-hs"),
    );
    for (what, auth) in [("revoked", auth.clone()), ("expired", bearer(&expired))] {
        for method in ["GET", "HEAD"] {
            let a = request(http, method, "/authz/check/orders", &[("authorization", &auth)]).await;
            assert_eq!(a.status, 401, "{what} {method}: {a:?}");
            assert_eq!(
                a.headers.get("www-authenticate").map(String::as_str),
                Some(CHALLENGE),
                "{what} {method}"
            );
            assert_eq!(a.headers.get("cache-control").map(String::as_str), Some("no-store"));
            assert!(!a.headers.contains_key("x-jwt-subject"), "{what} {method}: {a:?}");
            let want = if method == "HEAD" {
                ""
            } else {
                revokd::authz::DENIED_BODY
            };
            assert_eq!(a.body, want, "{what} {method}: the body is generic");
        }
    }

    // The store down: 503 with Retry-After: 1, never 200 or 401.
    let fresh = bearer(&issue(&mut c, "dave").await.token);
    let stopped = Instant::now();
    redis.stop();
    let last = closes_on_outage(stopped, 503, || {
        let fresh = fresh.clone();
        async move { request(http, "GET", "/authz/check", &[("authorization", &fresh)]).await }
    })
    .await;
    assert_eq!(
        last.headers.get("retry-after").map(String::as_str),
        Some("1"),
        "{last:?}"
    );
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("revokd_authz_checks_total{") && l.contains(r#"result="error""#)),
        "an outage is counted as an error:\n{m}"
    );
    assert!(
        metric(&m, "revokd_authz_check_duration_seconds_count").unwrap_or(0.0) >= 10.0,
        "{m}"
    );
}

/// The shipped Envoy sidecar config (deploy/edge/envoy/envoy-sidecar.yaml),
/// pointed at revokd's main gRPC listener (no `--authz-addr`): Check is
/// served there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_envoy_sidecar_config_enforces_revocation_on_the_main_listener() {
    let Some(envoy_bin) = envoy_binary() else {
        eprintln!("ENVOY_BIN not set: skipped");
        return;
    };
    let mut redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &["--store-timeout", "200ms"]));
    assert_eq!(p.authz_addr, None, "no --authz-addr, no ext_authz-only listener");
    p.wait_synced().await;
    let echo = Echo::start().await;
    let envoy = Envoy::shipped(&envoy_bin, "envoy-sidecar.yaml", p.grpc_addr, echo.addr).await;
    let mut c = p.client().await;

    // Health checks reach the app without a token; nothing else does.
    let a = request(envoy.addr, "GET", "/healthz", &[]).await;
    assert_eq!(a.status, 200, "/healthz is unchecked: {a:?}");
    let a = request(envoy.addr, "GET", "/orders", &[]).await;
    assert_eq!(
        (a.status, a.headers.get("www-authenticate").map(String::as_str)),
        (401, Some("Bearer")),
        "{a:?}"
    );

    let t = issue(&mut c, "alice").await;
    let a = request(
        envoy.addr,
        "GET",
        "/orders",
        &[("authorization", &bearer(&t.token)), ("x-jwt-subject", "admin")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.upstream_saw().get("x-jwt-subject").map(String::as_str), Some("alice"));
    // /billing/ wants tokens for audience "billing".
    let a = request(envoy.addr, "GET", "/billing/x", &[("authorization", &bearer(&t.token))]).await;
    assert_eq!(a.status, 401, "wrong audience: {a:?}");
    let billing = c
        .issue_token(revokd::proto::v1::IssueTokenRequest {
            subject: "alice".into(),
            audience: vec!["billing".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let a = request(envoy.addr, "GET", "/billing/x", &[("authorization", &bearer(&billing))]).await;
    assert_eq!(a.status, 200, "right audience: {a:?}");

    revoke(&mut c, &t.token).await;
    let a = request(envoy.addr, "GET", "/orders", &[("authorization", &bearer(&t.token))]).await;
    assert_eq!(a.status, 401, "revoked: {a:?}");
    assert_eq!(a.headers.get("www-authenticate").map(String::as_str), Some(CHALLENGE));

    // Fail closed, as its comments say.
    let stopped = Instant::now();
    redis.stop();
    closes_on_outage(stopped, 503, || {
        let t = billing.clone();
        async move { request(envoy.addr, "GET", "/", &[("authorization", &bearer(&t))]).await }
    })
    .await;
}

/// The shipped Envoy config with ext_authz over HTTP
/// (deploy/edge/envoy/envoy-forward-auth.yaml) against `/authz/check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_envoy_http_service_config_enforces_revocation() {
    let Some(envoy_bin) = envoy_binary() else {
        eprintln!("ENVOY_BIN not set: skipped");
        return;
    };
    let mut redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &["--store-timeout", "200ms"]));
    p.wait_synced().await;
    let echo = Echo::start().await;
    let envoy = Envoy::shipped(&envoy_bin, "envoy-forward-auth.yaml", p.http_addr.unwrap(), echo.addr).await;
    let mut c = p.client().await;

    let s = login(&mut c, "bob").await;
    let a = request(
        envoy.addr,
        "GET",
        "/orders?page=2",
        &[("authorization", &bearer(&s.access_token)), ("x-jwt-subject", "admin")],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.upstream_saw();
    assert_eq!(seen.get("x-jwt-subject").map(String::as_str), Some("bob"), "{seen:?}");
    assert_eq!(seen.get("x-jwt-session-id"), Some(&s.session_id), "{seen:?}");

    let a = request(envoy.addr, "GET", "/orders", &[]).await;
    assert_eq!(
        (a.status, a.headers.get("www-authenticate").map(String::as_str)),
        (401, Some("Bearer")),
        "{a:?}"
    );
    revoke(&mut c, &s.access_token).await;
    let a = request(
        envoy.addr,
        "GET",
        "/orders",
        &[("authorization", &bearer(&s.access_token))],
    )
    .await;
    assert_eq!(a.status, 401, "revoked: {a:?}");
    assert_eq!(a.headers.get("www-authenticate").map(String::as_str), Some(CHALLENGE));
    assert_eq!(a.headers.get("cache-control").map(String::as_str), Some("no-store"));

    let fresh = issue(&mut c, "carol").await.token;
    let stopped = Instant::now();
    redis.stop();
    closes_on_outage(stopped, 503, || {
        let t = fresh.clone();
        async move { request(envoy.addr, "GET", "/", &[("authorization", &bearer(&t))]).await }
    })
    .await;
}

/// `--authz-addr` is for a gateway outside the pod: Check and health only,
/// never Issue or Revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authz_listener_serves_only_check_and_health() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = revokd(&keys, &url);
    let authz = p.authz_addr.expect("--authz-addr");
    assert_ne!(authz, p.grpc_addr);
    let channel = tonic::transport::Channel::from_shared(format!("http://{authz}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut tokens = revokd::proto::v1::token_service_client::TokenServiceClient::new(channel.clone());
    let issued = tokens
        .issue_token(revokd::proto::v1::IssueTokenRequest {
            subject: "mallory".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(issued.map_err(|s| s.code()).err(), Some(tonic::Code::Unimplemented));
    let revoked = tokens.revoke_token(common::rpc::by_token("x")).await;
    assert_eq!(revoked.map_err(|s| s.code()).err(), Some(tonic::Code::Unimplemented));
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_enforces_revocation() {
    let mut redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &["--store-timeout", "200ms"]));
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
        &[
            ("authorization", &bearer(&t.token)),
            ("x-jwt-subject", "admin"),
            // Not a session token: the empty $revokd_session drops this header.
            ("x-jwt-session-id", "forged"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.upstream_saw();
    assert_eq!(seen.get("x-jwt-subject").map(String::as_str), Some("alice"), "{seen:?}");
    assert_eq!(seen.get("x-jwt-id"), Some(&t.jti));
    assert!(!seen.contains_key("x-jwt-session-id"), "{seen:?}");
    let s = login(&mut c, "bob").await;
    let a = request(nginx.addr, "GET", "/", &[("authorization", &bearer(&s.access_token))]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.upstream_saw().get("x-jwt-session-id"), Some(&s.session_id));

    revoke(&mut c, &t.token).await;
    let a = request(nginx.addr, "GET", "/orders", &[("authorization", &bearer(&t.token))]).await;
    assert_eq!(a.status, 401, "revoked: {a:?}");
    // auth_request passes revokd's WWW-Authenticate on with a 401.
    assert_eq!(a.headers.get("www-authenticate").map(String::as_str), Some(CHALLENGE));
    assert!(!a.body.contains("x-jwt"), "the upstream answered: {a:?}");
    let a = request(nginx.addr, "GET", "/orders", &[]).await;
    assert_eq!(a.status, 401, "missing: {a:?}");

    // The store down: revokd answers 503, and nginx turns any auth status but
    // 2xx, 401 and 403 into a 500. Closed all the same.
    let stopped = Instant::now();
    redis.stop();
    let fresh = bearer(&s.access_token);
    closes_on_outage(stopped, 500, || {
        let fresh = fresh.clone();
        async move { request(nginx.addr, "GET", "/", &[("authorization", &fresh)]).await }
    })
    .await;
    // revokd gone (connection refused): a 500 too.
    drop(p);
    let a = request(nginx.addr, "GET", "/", &[("authorization", &fresh)]).await;
    assert_eq!(a.status, 500, "{a:?}");
}
