//! Who may call what: `revokd client add`, caller credentials on gRPC
//! (Basic and Bearer), permissions and audiences, the `client_id` claim, the
//! defaults that cannot be misconfigured into an open door, and the clients
//! file reloaded (a bad one refused, the clients in force kept). Against the
//! real binary.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{RevokdProcess, eventually, metric};
use revokd::proto::v1::token_service_client::TokenServiceClient;
use revokd::proto::v1::{IssueTokenRequest, Verdict, VerifyTokenRequest};
use tonic::Code;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_revokd");

/// `revokd client add`; returns the secret it printed.
fn add_client(file: &Path, id: &str, permissions: &[&str], audiences: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["client", "add", "--clients-file"])
        .arg(file)
        .args(["--id", id]);
    for p in permissions {
        cmd.args(["--permission", p]);
    }
    for a in audiences {
        cmd.args(["--audience", a]);
    }
    let out = cmd.env_clear().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["id"], id);
    printed["secret"].as_str().unwrap().to_owned()
}

fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(a) = authorization {
        r.metadata_mut().insert("authorization", a.parse().unwrap());
    }
    r
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn issue(c: &mut TokenServiceClient<Channel>, auth: Option<&str>, audience: &[&str]) -> Result<String, Code> {
    let req = IssueTokenRequest {
        subject: "alice".into(),
        audience: audience.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    c.issue_token(with_auth(req, auth))
        .await
        .map(|r| r.into_inner().token)
        .map_err(|s| s.code())
}

async fn verify(c: &mut TokenServiceClient<Channel>, auth: Option<&str>, token: &str) -> Result<Verdict, Code> {
    let req = VerifyTokenRequest {
        token: token.into(),
        audience: String::new(),
    };
    c.verify_token(with_auth(req, auth))
        .await
        .map(|r| Verdict::try_from(r.into_inner().verdict).unwrap())
        .map_err(|s| s.code())
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_listener_beyond_loopback_needs_registered_callers() {
    for args in [
        vec!["--grpc-addr", "0.0.0.0:0"],
        vec!["--http-addr", "0.0.0.0:0"],
        vec!["--require-caller-auth"],
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--admin-addr", "127.0.0.1:0"])
            .args(&args)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--clients-file"),
            "{args:?}: says how to fix it: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_authenticate_and_stay_within_their_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients.json");
    let app = add_client(&file, "app", &["issue", "verify", "revoke"], &["web"]);
    let checker = add_client(&file, "checker", &["verify"], &[]);
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains(&app),
        "only hashes are stored"
    );
    let p = RevokdProcess::spawn_logged(&[
        "--clients-file",
        file.to_str().unwrap(),
        "--require-caller-auth",
        "--keys-reload-interval",
        "100ms",
    ]);
    let log = p.log();
    let mut c = p.client().await;
    let app_bearer = format!("Bearer {app}");

    // Who: none, wrong, Basic, Bearer.
    assert_eq!(issue(&mut c, None, &["web"]).await, Err(Code::Unauthenticated));
    assert_eq!(
        issue(&mut c, Some("Bearer app.wrong"), &["web"]).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        issue(&mut c, Some(&basic("app", "nope")), &["web"]).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        issue(&mut c, Some("Digest x"), &["web"]).await,
        Err(Code::Unauthenticated)
    );
    let token = issue(&mut c, Some(&app_bearer), &["web"]).await.unwrap();
    assert_eq!(claims(&token)["client_id"], "app", "tokens name the client that asked");
    assert!(issue(&mut c, Some(&basic("app", &app)), &["web"]).await.is_ok());

    // What: permissions and audiences.
    assert_eq!(
        issue(&mut c, Some(&app_bearer), &["admin"]).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(issue(&mut c, Some(&app_bearer), &[]).await, Err(Code::PermissionDenied));
    let checker_bearer = format!("Bearer {checker}");
    assert_eq!(
        issue(&mut c, Some(&checker_bearer), &["web"]).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(verify(&mut c, Some(&checker_bearer), &token).await, Ok(Verdict::Valid));
    assert_eq!(verify(&mut c, None, &token).await, Err(Code::Unauthenticated));

    // Counted, and audit-logged with the client id, never the secret.
    let m = p.metrics().await;
    assert!(
        metric(
            &m,
            "revokd_grpc_requests_total{method=\"IssueToken\",code=\"PERMISSION_DENIED\"}"
        )
        .unwrap()
            >= 3.0,
        "{m}"
    );
    assert!(
        log.lines()
            .iter()
            .any(|l| l.contains("call refused") && l.contains("checker"))
    );
    assert!(!log.contains(&app) && !log.contains(&checker), "secrets never logged");

    // Reloaded: a new client works without a restart; a broken file is refused.
    let late = add_client(&file, "late", &["verify"], &[]);
    let late_bearer = format!("Bearer {late}");
    eventually(Duration::from_secs(10), "the new client is accepted", || {
        let mut c = c.clone();
        let (auth, token) = (late_bearer.clone(), token.clone());
        async move { verify(&mut c, Some(&auth), &token).await == Ok(Verdict::Valid) }
    })
    .await;
    std::fs::write(&file, "{ not json").unwrap();
    eventually(Duration::from_secs(10), "the broken file refused", || {
        let log = log.clone();
        async move { log.contains("new clients file refused") }
    })
    .await;
    assert_eq!(
        verify(&mut c, Some(&late_bearer), &token).await,
        Ok(Verdict::Valid),
        "clients in force kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_callers_without_credentials_may_do_everything_unless_required() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients.json");
    let app = add_client(&file, "app", &["verify"], &[]);
    let p = RevokdProcess::spawn(&["--clients-file", file.to_str().unwrap()]);
    let mut c = p.client().await;
    let token = issue(&mut c, None, &[]).await.unwrap();
    assert!(
        claims(&token).get("client_id").is_none(),
        "an anonymous caller is no client"
    );
    // Credentials, once presented, are checked.
    assert_eq!(
        verify(&mut c, Some("Bearer app.wrong"), &token).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        issue(&mut c, Some(&format!("Bearer {app}")), &[]).await,
        Err(Code::PermissionDenied)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_every_caller_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients.json");
    let app = add_client(&file, "app", &["issue", "verify"], &[]);
    let p = RevokdProcess::spawn(&["--clients-file", file.to_str().unwrap(), "--grpc-addr", "0.0.0.0:0"]);
    let mut c = TokenServiceClient::connect(format!("http://127.0.0.1:{}", p.grpc_addr.port()))
        .await
        .unwrap();
    assert_eq!(issue(&mut c, None, &[]).await, Err(Code::Unauthenticated));
    assert!(issue(&mut c, Some(&format!("Bearer {app}")), &[]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_api_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("revokd.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let arg = format!("unix:{}", socket.display());
    let p = RevokdProcess::spawn(&["--grpc-addr", &arg]);
    assert_eq!(p.grpc_unix.as_deref(), Some(socket.as_path()));
    let path = socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut c = TokenServiceClient::new(channel);
    // Local, like loopback: no credentials needed without --require-caller-auth.
    let token = issue(&mut c, None, &[]).await.unwrap();
    assert_eq!(verify(&mut c, None, &token).await, Ok(Verdict::Valid));
    assert_eq!(p.terminate().await.code(), Some(0));
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refreshed_only_by_its_client() {
    use revokd::proto::v1::{IssueSessionRequest, RefreshSessionRequest};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients.json");
    let app = format!("Bearer {}", add_client(&file, "app", &["issue"], &[]));
    let other = format!("Bearer {}", add_client(&file, "other", &["issue"], &[]));
    let p = RevokdProcess::spawn(&["--clients-file", file.to_str().unwrap(), "--require-caller-auth"]);
    let mut c = p.client().await;
    let login = IssueSessionRequest {
        subject: "alice".into(),
        ..Default::default()
    };
    let s = c
        .issue_session(with_auth(login, Some(&app)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims(&s.refresh_token)["client_id"], "app");
    let refresh = |token: &str| RefreshSessionRequest {
        refresh_token: token.into(),
    };
    let refused = c
        .refresh_session(with_auth(refresh(&s.refresh_token), Some(&other)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Refused before anything happened: the owner's refresh still works, and keeps the claim.
    let next = c
        .refresh_session(with_auth(refresh(&s.refresh_token), Some(&app)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims(&next.access_token)["client_id"], "app");
}
