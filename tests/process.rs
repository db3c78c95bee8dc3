//! The real binary: usage errors, keygen, health and reflection, SIGTERM drain.

mod common;

use std::process::Command;

use common::rpc::{issue, verdict};
use common::{RevokdProcess, TestServer};
use revokd::proto::v1::Verdict;

const BIN: &str = env!("CARGO_BIN_EXE_revokd");

#[test]
fn bad_flag_values_print_one_line_and_exit_64() {
    for args in [
        vec!["serve", "--leeway", "soon"],
        vec!["serve", "--grpc-addr", "nowhere"],
        vec!["serve", "--default-ttl", "2h", "--max-ttl", "1h"],
        vec!["serve", "--redis-url", "http://x"],
        vec!["serve", "--redis-url", "redis-sentinel://a:1,b:2"],
        vec!["serve", "--redis-url", "redis://h", "--redis-ca-file", "/ca.pem"],
        vec!["serve", "--key-prefix", "app:{x}:"],
        vec!["serve", "--max-staleness", "0s"],
    ] {
        let out = Command::new(BIN).args(&args).env_clear().output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .args(["serve"])
        .env_clear()
        .env("REVOKD_LEEWAY", "later")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "environment values are checked too");
}

#[test]
fn the_redis_password_is_never_printed() {
    // In --help (clap shows env values unless hidden) and in a startup error.
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env_clear()
        .env("REVOKD_REDIS_URL", "redis://:hunter2-url@10.0.0.1:6379")
        .env("REVOKD_REDIS_PASSWORD", "hunter2-env")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--redis-password"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
    let out = Command::new(BIN)
        .args(["serve", "--redis-url", "redis://:hunter2-url@h:notaport"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn keygen_cli_writes_a_loadable_key() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, kid) in [("EdDSA", "a"), ("ES256", "b"), ("RS256", "c"), ("HS256", "d")] {
        let out = Command::new(BIN)
            .args(["keygen", "--alg", alg, "--kid", kid, "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{alg}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ring = revokd::keys::KeyRing::load_dir(dir.path(), Some("a")).unwrap();
    assert_eq!(ring.verifying_keys().len(), 4);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let server = TestServer::start(None).await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "revokd.v1.TokenService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("list services response")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"revokd.v1.TokenService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let p = RevokdProcess::spawn_logged(&[]);
    let log = p.log();
    // The ephemeral key signs and verifies.
    let mut client = p.client().await;
    let t = issue(&mut client, "a").await;
    assert_eq!(verdict(&mut client, &t.token).await, Verdict::Valid);

    assert_eq!(p.terminate().await.code(), Some(0));
    let mut lines = log.lines();
    let serving = 1 + lines
        .iter()
        .position(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"] == "revokd serving")
        .unwrap();
    let rest = lines.split_off(serving);
    assert!(!lines.iter().any(|l| l.contains("PRIVATE")), "no key material in logs");
    assert!(rest.iter().any(|l| l.contains("drained")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains(&t.token)), "tokens never logged");
}
