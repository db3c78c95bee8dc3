//! The real binary: usage errors, keygen, health and reflection, SIGTERM drain.

mod common;

use std::process::Command;

use common::rpc::{issue, verdict};
use common::{RevokdProcess, TestServer};
use revokd::proto::v1::Verdict;

const BIN: &str = env!("CARGO_BIN_EXE_revokd");

#[test]
fn bad_flag_values_are_named_and_exit_64() {
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
        // The first line says what is wrong and names the flag.
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(args[1]), "{args:?}: {stderr}");
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

    // v1, and v1alpha (grpcurl before 1.9, Python's grpcio-reflection).
    macro_rules! list_services {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let req = tonic_reflection::pb::$version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([req]))
                .await
                .unwrap()
                .into_inner();
            let resp = stream.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
                panic!("list services response")
            };
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }};
    }
    for names in [list_services!(v1), list_services!(v1alpha)] {
        assert!(names.contains(&"revokd.v1.TokenService".to_string()), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    }
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

/// A CR or LF in a caller's value (a subject, a reason) must not start a
/// line of its own: the default human format escapes control characters.
#[tokio::test]
async fn caller_values_cannot_forge_log_lines() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(common::LOOPBACK_LISTENERS)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let grpc = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("revokd logs");
        let addr = line
            .contains("revokd serving")
            .then(|| {
                line.split("grpc_addr=")
                    .nth(1)
                    .map(|r| r.split(' ').next().unwrap().to_owned())
            })
            .flatten();
        lines.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    let mut client = revokd::proto::v1::token_service_client::TokenServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let forged = "INFO revokd::audit: token revoked jti=FORGED";
    let t = issue(&mut client, &format!("eve\r\n{forged}")).await;
    client
        .revoke_token(revokd::proto::v1::RevokeTokenRequest {
            target: Some(revokd::proto::v1::revoke_token_request::Target::Token(t.token.clone())),
            reason: format!("bye\n{forged}\u{1b}[2K"),
        })
        .await
        .unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let audit = lines.iter().find(|l| l.contains("token revoked") && l.contains(&t.jti));
    let audit = audit.unwrap_or_else(|| panic!("no audit line in {lines:#?}"));
    assert!(audit.contains(r"bye\n"), "escaped in place: {audit}");
    assert!(audit.contains(r"\u{1b}[2K"), "no terminal escape: {audit}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("INFO revokd::audit") || l.contains("jti=FORGED") && !l.contains(&t.jti)),
        "a forged line: {lines:#?}"
    );
}
