//! TLS to Redis: a real `redis-server` with `tls-port` and a test CA. revokd
//! verifies the server certificate against `--redis-ca-file`, sends the URL's
//! host as SNI, refuses a server its CA did not sign, and never falls back to
//! plaintext.

mod common;

use std::time::Duration;

use common::rpc::{by_token, eventually_verify, issue, revoke, verify};
use common::tls::TlsRedis;
use common::{TestServer, eventually, http_get};
use revokd::config::RevocationCheck;
use revokd::proto::v1::Verdict;
use revokd::server::{Server, StartError};

async fn start(url: String, ca: Option<std::path::PathBuf>, mode: RevocationCheck) -> TestServer {
    let (mut config, keys) = TestServer::config(None);
    config.redis_url = Some(url.into());
    config.redis_ca_file = ca;
    config.revocation_check = mode;
    config.store_timeout = Duration::from_millis(500);
    let mut s = TestServer::start_with(config).await;
    s.keep(keys);
    s
}

async fn revoke_roundtrip(server: &TestServer, redis: &TlsRedis) {
    let mut c = server.client().await;
    let issued = issue(&mut c, "alice").await;
    revoke(&mut c, &issued.token).await;
    // The revocation went over TLS into this server.
    assert_eq!(redis.cmd(&["EXISTS", &format!("revokd:jti:{}", issued.jti)]), "1");
    eventually_verify(
        Duration::from_secs(10),
        "verify says REVOKED",
        &c,
        &issued.token,
        Ok(Verdict::Revoked),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_and_verifies_the_server_against_the_ca_file() {
    let redis = TlsRedis::start();
    for mode in [RevocationCheck::Mirror, RevocationCheck::Redis] {
        let server = start(redis.url(), Some(redis.ca_file()), mode).await;
        eventually(Duration::from_secs(10), "ready over TLS", || async {
            http_get(server.admin_addr, "/readyz").await.0 == 200
        })
        .await;
        revoke_roundtrip(&server, &redis).await;
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_host_is_the_name_checked_and_sent_as_sni() {
    let redis = TlsRedis::start();
    // The certificate names `localhost` (DNS) and 127.0.0.1 (IP); both verify.
    let server = start(
        redis.url_with_host("localhost"),
        Some(redis.ca_file()),
        RevocationCheck::Redis,
    )
    .await;
    eventually(Duration::from_secs(10), "ready over TLS by name", || async {
        http_get(server.admin_addr, "/readyz").await.0 == 200
    })
    .await;
    revoke_roundtrip(&server, &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_ca_did_not_sign_is_refused() {
    let redis = TlsRedis::start();
    let server = start(redis.url(), Some(redis.other_ca_file()), RevocationCheck::Redis).await;
    let mut c = server.client().await;
    let issued = issue(&mut c, "alice").await;
    // Never connected: fail closed, nothing written, not ready.
    let err = c.revoke_token(by_token(&issued.token)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(verify(&mut c, &issued.token).await, Err(tonic::Code::Unavailable));
    assert_eq!(http_get(server.admin_addr, "/readyz").await.0, 503);
    assert_eq!(redis.cmd(&["DBSIZE"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_never_reaches_a_tls_port() {
    let redis = TlsRedis::start();
    // redis:// to the TLS port: no fallback, no connection.
    let server = start(
        format!("redis://127.0.0.1:{}", redis.port),
        None,
        RevocationCheck::Redis,
    )
    .await;
    let mut c = server.client().await;
    let issued = issue(&mut c, "alice").await;
    let err = c.revoke_token(by_token(&issued.token)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_rediss_url_that_cannot_do_tls_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for (url, ca) in [
        ("rediss://127.0.0.1:1".to_string(), Some(not_pem.clone())),
        ("rediss://127.0.0.1:1".to_string(), Some(dir.path().join("missing.pem"))),
        // A CA file only makes sense with TLS.
        ("redis://127.0.0.1:1".to_string(), Some(not_pem.clone())),
    ] {
        let (mut config, _keys) = TestServer::config(None);
        config.redis_url = Some(url.clone().into());
        config.redis_ca_file = ca;
        match Server::bind(config).await {
            Err(StartError::Config(e)) => assert!(e.to_string().contains("--redis-ca-file"), "{url}: {e}"),
            Err(e) => panic!("{url}: unexpected error {e}"),
            Ok(_) => panic!("{url}: started"),
        }
    }
}
