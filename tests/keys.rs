//! Key rotation: the keys directory is reloaded on change (including a
//! Kubernetes Secret's `..data` link swap), a bad key set is refused, and
//! JWKS publishes the public keys over HTTP and gRPC.

mod common;

use std::path::Path;
use std::time::Duration;

use common::rpc::{issue, verdict};
use common::{Log, TestServer, eventually, http_get, now};
use revokd::config::{KeygenAlg, ServeConfig};
use revokd::proto::v1::{GetJwksRequest, Verdict};

/// A Secret volume's layout: `<kid>.pem -> ..data/<kid>.pem`, `..data -> ..<version>`.
fn secret_volume(root: &Path, version: &str, kids: &[(&str, KeygenAlg)]) -> Vec<(String, String)> {
    let dir = root.join(format!("..{version}"));
    std::fs::create_dir(&dir).unwrap();
    let mut written = Vec::new();
    for (kid, alg) in kids {
        let path = revokd::keys::keygen(*alg, kid, &dir).unwrap();
        written.push((kid.to_string(), std::fs::read_to_string(path).unwrap()));
    }
    // Swap `..data` atomically, as the kubelet does.
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
    for (kid, _) in kids {
        let link = root.join(format!("{kid}.pem"));
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{kid}.pem"), &link).unwrap();
        }
    }
    written
}

fn config(dir: &Path, signing: &str) -> ServeConfig {
    let mut c = ServeConfig::for_tests();
    c.keys_dir = Some(dir.to_path_buf());
    c.signing_kid = Some(signing.into());
    c.keys_reload_interval = Duration::from_millis(50);
    c
}

fn sign_with(pem: &str, kid: &str) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some(kid.into());
    let claims =
        serde_json::json!({"iss": "revokd", "sub": "x", "exp": now() + 600, "iat": now(), "jti": format!("j-{kid}")});
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn jwks_kids(server: &TestServer) -> Vec<String> {
    let (code, body) = http_get(server.admin_addr, "/.well-known/jwks.json").await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn secret_rotation_is_picked_up_and_bad_sets_are_refused() {
    // The server runs on this thread (current-thread runtime): its log lands here.
    let (log, _logging) = Log::capture();
    let root = tempfile::tempdir().unwrap();
    let v1 = secret_volume(root.path(), "v1", &[("k1", KeygenAlg::EdDsa)]);
    let server = TestServer::start_with(config(root.path(), "k1")).await;
    let mut c = server.client().await;
    assert_eq!(jwks_kids(&server).await, vec!["k1"]);
    let t1 = sign_with(&v1[0].1, "k1");
    assert_eq!(verdict(&mut c, &t1).await, Verdict::Valid);

    // v2 adds k2 (the Secret update): k2 tokens verify, k1 keeps verifying.
    let v2_dir = root.path().join("..v2");
    std::fs::create_dir(&v2_dir).unwrap();
    std::fs::write(v2_dir.join("k1.pem"), &v1[0].1).unwrap();
    let k2 = revokd::keys::keygen(KeygenAlg::EdDsa, "k2", &v2_dir).unwrap();
    let k2_pem = std::fs::read_to_string(k2).unwrap();
    let tmp = root.path().join("..data_tmp");
    std::os::unix::fs::symlink("..v2", &tmp).unwrap();
    std::fs::rename(&tmp, root.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/k2.pem", root.path().join("k2.pem")).unwrap();
    eventually(Duration::from_secs(5), "k2 published", || async {
        jwks_kids(&server).await == ["k1", "k2"]
    })
    .await;
    let t2 = sign_with(&k2_pem, "k2");
    assert_eq!(verdict(&mut c, &t2).await, Verdict::Valid);
    assert_eq!(verdict(&mut c, &t1).await, Verdict::Valid);

    // A broken key file: the new set is refused, the old one stays in force.
    std::fs::write(
        root.path().join("broken.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let issued_before = issue(&mut c, "s").await;
    // The watcher tries that set (its log says it refused it); the old one stays.
    eventually(Duration::from_secs(5), "the broken key set refused", || async {
        log.contains("new key set refused")
    })
    .await;
    assert_eq!(jwks_kids(&server).await, vec!["k1", "k2"]);
    assert_eq!(verdict(&mut c, &t2).await, Verdict::Valid);
    assert_eq!(verdict(&mut c, &issued_before.token).await, Verdict::Valid);
    std::fs::remove_file(root.path().join("broken.pem")).unwrap();

    // Retiring k2: its tokens stop verifying (the verified-token cache is dropped too).
    std::fs::remove_file(root.path().join("k2.pem")).unwrap();
    eventually(Duration::from_secs(5), "k2 retired", || async {
        jwks_kids(&server).await == ["k1"]
    })
    .await;
    assert_eq!(verdict(&mut c, &t2).await, Verdict::UnknownKey);
    assert_eq!(verdict(&mut c, &t1).await, Verdict::Valid);
    server.shutdown().await;
}

#[tokio::test]
async fn jwks_publishes_public_keys_only_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, kid) in [
        (KeygenAlg::EdDsa, "ed"),
        (KeygenAlg::Es256, "es"),
        (KeygenAlg::Rs256, "rs"),
        (KeygenAlg::Hs256, "hs"),
    ] {
        revokd::keys::keygen(alg, kid, dir.path()).unwrap();
    }
    let server = TestServer::start_with(config(dir.path(), "ed")).await;
    let raw = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server.admin_addr).await.unwrap();
        s.write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        buf
    };
    assert!(
        raw.to_ascii_lowercase().contains("cache-control: public, max-age="),
        "{raw}"
    );
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    let by_kid = |kid: &str| keys.iter().find(|k| k["kid"] == kid).cloned();
    assert!(by_kid("hs").is_none(), "HMAC secrets are never published");
    assert!(!body.contains("\"oct\""));
    let ed = by_kid("ed").unwrap();
    assert_eq!(
        (ed["kty"].as_str(), ed["crv"].as_str(), ed["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let es = by_kid("es").unwrap();
    assert_eq!(
        (es["kty"].as_str(), es["crv"].as_str(), es["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(es["y"].is_string());
    let rs = by_kid("rs").unwrap();
    assert_eq!(
        (rs["kty"].as_str(), rs["alg"].as_str(), rs["e"].as_str()),
        (Some("RSA"), Some("RS256"), Some("AQAB"))
    );
    for k in keys {
        assert_eq!(k["use"], "sig");
        assert!(k.get("d").is_none(), "no private parameters");
    }

    let grpc = server
        .client()
        .await
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&grpc.jwks_json).unwrap(), doc);
    let kids: Vec<_> = grpc.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, vec!["ed", "es", "rs"]);
    server.shutdown().await;
}

#[tokio::test]
async fn without_signing_kid_the_current_signer_survives_an_added_key() {
    let dir = tempfile::tempdir().unwrap();
    revokd::keys::keygen(KeygenAlg::EdDsa, "k1", dir.path()).unwrap();
    let mut c = config(dir.path(), "k1");
    c.signing_kid = None;
    let server = TestServer::start_with(c).await;
    revokd::keys::keygen(KeygenAlg::EdDsa, "k2", dir.path()).unwrap();
    eventually(Duration::from_secs(5), "k2 loaded", || async {
        jwks_kids(&server).await == ["k1", "k2"]
    })
    .await;
    let issued = issue(&mut server.client().await, "s").await;
    assert_eq!(issued.key_id, "k1", "the signer in force keeps signing");
    server.shutdown().await;
}
