//! TLS on revokd's own gRPC and HTTP API listeners (`--tls-cert`, `--tls-key`):
//! a client certificate verified against `--tls-client-ca` names a registered
//! client (mTLS), one from another CA is refused at the handshake, a
//! plaintext client gets nothing, the OAuth endpoints answer over HTTPS, and a
//! certificate rotated in place (cert-manager) is served without a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::tls::Pki;
use common::{RevokdProcess, eventually};
use revokd::proto::v1::token_service_client::TokenServiceClient;
use revokd::proto::v1::{IssueTokenRequest, Verdict, VerifyTokenRequest};
use tokio_rustls::rustls;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_revokd");

fn tls_config(ca: &Path, client: Option<(&Path, &Path)>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection to `port` as `localhost`; also the server's leaf certificate.
async fn connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((tls, leaf))
}

/// A gRPC client over TLS (ALPN h2).
async fn grpc(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<TokenServiceClient<Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let config = config.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connect(port, config).await?.0)) }
        }))
        .await?;
    Ok(TokenServiceClient::new(channel))
}

async fn issue(c: &mut TokenServiceClient<Channel>) -> Result<String, tonic::Code> {
    let req = IssueTokenRequest {
        subject: "alice".into(),
        ..Default::default()
    };
    c.issue_token(req)
        .await
        .map(|r| r.into_inner().token)
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_names_the_client_and_certificates_rotate_in_place() {
    let pki = Pki::new("revokd test CA");
    let (server_cert, server_key) = pki.issue("server", &["localhost", "127.0.0.1"], false);
    let (app_cert, app_key) = pki.issue("app", &["app.clients.example"], true);
    let (stranger_cert, stranger_key) = pki.issue("stranger", &["stranger.example"], true);
    let other = Pki::new("another CA");
    let (forged_cert, forged_key) = other.issue("forged", &["app.clients.example"], true);

    let clients = pki.dir.path().join("clients.json");
    let out = Command::new(BIN)
        .args(["client", "add", "--clients-file"])
        .arg(&clients)
        .args([
            "--id",
            "app",
            "--permission",
            "issue",
            "--permission",
            "verify",
            "--permission",
            "introspect",
        ])
        .args(["--tls-name", "app.clients.example"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let p = RevokdProcess::spawn_logged(&[
        "--tls-cert",
        server_cert.to_str().unwrap(),
        "--tls-key",
        server_key.to_str().unwrap(),
        "--tls-client-ca",
        pki.ca_file.to_str().unwrap(),
        "--clients-file",
        clients.to_str().unwrap(),
        "--require-caller-auth",
        "--keys-reload-interval",
        "100ms",
    ]);
    let port = p.grpc_addr.port();

    // The client certificate alone names client "app".
    let mut app = grpc(port, tls_config(&pki.ca_file, Some((&app_cert, &app_key)), b"h2"))
        .await
        .unwrap();
    let token = issue(&mut app).await.unwrap();
    let verified = app
        .verify_token(VerifyTokenRequest {
            token: token.clone(),
            audience: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.verdict, Verdict::Valid as i32);

    // A certificate of the right CA naming no client, or none: UNAUTHENTICATED.
    let mut stranger = grpc(
        port,
        tls_config(&pki.ca_file, Some((&stranger_cert, &stranger_key)), b"h2"),
    )
    .await
    .unwrap();
    assert_eq!(issue(&mut stranger).await, Err(tonic::Code::Unauthenticated));
    let mut anonymous = grpc(port, tls_config(&pki.ca_file, None, b"h2")).await.unwrap();
    assert_eq!(issue(&mut anonymous).await, Err(tonic::Code::Unauthenticated));

    // A certificate from another CA does not get through the handshake.
    let forged = tls_config(&pki.ca_file, Some((&forged_cert, &forged_key)), b"h2");
    let refused = match grpc(port, forged).await {
        Err(_) => true,
        Ok(mut c) => issue(&mut c).await.is_err(),
    };
    assert!(refused, "a foreign CA's client certificate was accepted");

    // Plaintext gRPC to the TLS port gets no answer.
    let plain = TokenServiceClient::connect(format!("http://127.0.0.1:{port}")).await;
    if let Ok(mut c) = plain {
        assert!(issue(&mut c).await.is_err());
    }

    // The OAuth endpoints over HTTPS (curl verifies the server against the CA).
    let http = p.http_addr.unwrap();
    let out = Command::new("curl")
        .args(["-s", "--cacert", pki.ca_file.to_str().unwrap()])
        .args(["-u", &format!("app:{secret}"), "-d", &format!("token={token}")])
        .arg(format!("https://localhost:{}/introspect", http.port()))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", http.port())])
        .output()
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["client_id"], "app");

    // cert-manager rotates the certificate in place: served without a restart.
    let before = connect(port, tls_config(&pki.ca_file, None, b"h2")).await.unwrap().1;
    let (new_cert, new_key) = pki.issue("server-next", &["localhost", "127.0.0.1"], false);
    std::fs::copy(&new_key, &server_key).unwrap();
    std::fs::copy(&new_cert, &server_cert).unwrap();
    let ca = pki.ca_file.clone();
    eventually(Duration::from_secs(10), "the rotated certificate is served", || {
        let (ca, before) = (ca.clone(), before.clone());
        async move {
            match connect(port, tls_config(&ca, None, b"h2")).await {
                Ok((_, leaf)) => leaf != before,
                Err(_) => false,
            }
        }
    })
    .await;
    // A broken pair is refused; the certificate in force stays.
    std::fs::write(&server_cert, "not a certificate").unwrap();
    let log = p.log();
    eventually(Duration::from_secs(10), "the broken certificate refused", || {
        let log = log.clone();
        async move { log.contains("new TLS certificate refused") }
    })
    .await;
    let mut app = grpc(port, tls_config(&pki.ca_file, Some((&app_cert, &app_key)), b"h2"))
        .await
        .unwrap();
    assert!(
        issue(&mut app).await.is_ok(),
        "still serving with the certificate in force"
    );
}
