//! Migration mode (docs/MIGRATING.md): tokens an app signed itself with
//! PyJWT before revokd (no kid, perhaps no jti, its own iss) stay VALID until
//! they expire, the app's old blocklist keys still revoke them, revokd can
//! revoke them (by jti, or by a digest of the token when it has none), and
//! every legacy verify is counted. Against a real redis-server and binary.

mod common;

use std::process::Command;

use common::rpc::{by_token, issue_token, revoke, verdict};
use common::{RedisServer, RevokdProcess, keys_dir, metric, now, redis_cli, serve_args};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revokd::proto::v1::Verdict;
use serde_json::json;

/// The old app's secret and its tokens (PyJWT's `jwt.encode(claims, SECRET)`: HS256, no kid).
const LEGACY_SECRET: &[u8] = b"the-old-app-secret";

fn legacy_token(alg: Algorithm, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(LEGACY_SECRET)).unwrap()
}

fn old_claims(jti: Option<&str>) -> serde_json::Value {
    let mut c = json!({"sub": "alice", "iss": "legacy-app", "iat": now(), "exp": now() + 600});
    if let Some(jti) = jti {
        c["jti"] = jti.into();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_tokens_keep_working_and_old_logouts_hold() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("legacy.secret");
    std::fs::write(&secret_file, LEGACY_SECRET).unwrap();
    let url = redis.url();
    let legacy = [
        "--legacy-key-file",
        secret_file.to_str().unwrap(),
        "--legacy-alg",
        "HS256",
        "--legacy-issuer",
        "legacy-app",
        "--legacy-blocklist-key",
        "blocklist:{jti}",
    ];
    let p = RevokdProcess::spawn(&serve_args(&keys, &url, &legacy));
    let mut c = p.client().await;

    // An old token with a jti: VALID.
    let old = legacy_token(Algorithm::HS256, old_claims(Some("old-1")));
    assert_eq!(verdict(&mut c, &old).await, Verdict::Valid);
    // A logout the old app made before the cut-over (its blocklist key) still holds.
    redis_cli(&redis, &["SET", "blocklist:old-2", "1", "EX", "600"]);
    let logged_out = legacy_token(Algorithm::HS256, old_claims(Some("old-2")));
    assert_eq!(verdict(&mut c, &logged_out).await, Verdict::Revoked);
    // revokd revokes an old token by its jti, and by a digest of the token without one.
    revoke(&mut c, &old).await;
    assert_eq!(verdict(&mut c, &old).await, Verdict::Revoked);
    let no_jti = legacy_token(Algorithm::HS256, old_claims(None));
    assert_eq!(verdict(&mut c, &no_jti).await, Verdict::Valid);
    let revoked = c.revoke_token(by_token(&no_jti)).await.unwrap().into_inner();
    assert!(revoked.jti.starts_with("legacy-"), "{}", revoked.jti);
    assert_eq!(verdict(&mut c, &no_jti).await, Verdict::Revoked);
    let other_no_jti = legacy_token(
        Algorithm::HS256,
        json!({"sub": "bob", "iss": "legacy-app", "exp": now() + 600}),
    );
    assert_eq!(
        verdict(&mut c, &other_no_jti).await,
        Verdict::Valid,
        "the digest is per token"
    );
    // Logout everywhere covers old tokens too.
    c.revoke_subject(revokd::proto::v1::RevokeSubjectRequest {
        subject: "bob".into(),
        reason: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(verdict(&mut c, &other_no_jti).await, Verdict::Revoked);

    // The legacy key's rules are strict: its algorithm only, its issuer only, exp required.
    assert_eq!(
        verdict(&mut c, &legacy_token(Algorithm::HS512, old_claims(Some("x")))).await,
        Verdict::BadSignature
    );
    let mut wrong_iss = old_claims(Some("y"));
    wrong_iss["iss"] = "revokd".into();
    assert_eq!(
        verdict(&mut c, &legacy_token(Algorithm::HS256, wrong_iss)).await,
        Verdict::WrongIssuer
    );
    let mut no_exp = old_claims(Some("z"));
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verdict(&mut c, &legacy_token(Algorithm::HS256, no_exp)).await,
        Verdict::Malformed
    );
    let none = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        old.split('.').nth(1).unwrap()
    );
    assert_eq!(verdict(&mut c, &none).await, Verdict::BadSignature, "alg none");
    // A token with a kid never goes to the legacy key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("legacy".into());
    let with_kid = jsonwebtoken::encode(
        &header,
        &old_claims(Some("k")),
        &EncodingKey::from_secret(LEGACY_SECRET),
    )
    .unwrap();
    assert_eq!(verdict(&mut c, &with_kid).await, Verdict::UnknownKey);

    // New tokens come from revokd, as before.
    let new = issue_token(&mut c, "alice").await;
    assert_eq!(verdict(&mut c, &new).await, Verdict::Valid);

    // Counted, so operators see when migration mode can go.
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, "revokd_legacy_tokens_total{verdict=\"valid\"}"),
        Some(3.0),
        "{m}"
    );
    assert!(
        metric(&m, "revokd_legacy_tokens_total{verdict=\"revoked\"}").unwrap() >= 4.0,
        "{m}"
    );

    // Without migration mode the same old token is UNKNOWN_KEY.
    drop(p);
    let plain = RevokdProcess::spawn(&serve_args(&keys, &url, &[]));
    let mut c = plain.client().await;
    let fresh = legacy_token(Algorithm::HS256, old_claims(Some("old-3")));
    assert_eq!(verdict(&mut c, &fresh).await, Verdict::UnknownKey);
}

#[test]
fn migration_flags_that_cannot_work_are_refused() {
    let bin = env!("CARGO_BIN_EXE_revokd");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("old.pem");
    std::fs::write(
        &pem,
        revokd::keys::generate_private_pem(revokd::config::KeygenAlg::EdDsa).unwrap(),
    )
    .unwrap();
    for (args, want) in [
        (vec!["--legacy-issuer", "x"], "--legacy-key-file"),
        (
            vec![
                "--legacy-key-file",
                pem.to_str().unwrap(),
                "--legacy-blocklist-key",
                "bl:{jti}",
            ],
            "--redis-url",
        ),
        (
            vec![
                "--legacy-key-file",
                pem.to_str().unwrap(),
                "--redis-url",
                "redis://127.0.0.1:1",
                "--legacy-blocklist-key",
                "blocklist",
            ],
            "{jti}",
        ),
        (
            vec!["--legacy-key-file", pem.to_str().unwrap(), "--legacy-alg", "RS256"],
            "EdDSA",
        ),
    ] {
        let out = Command::new(bin)
            .arg("serve")
            .args(common::LOOPBACK_LISTENERS)
            .args(&args)
            .env_clear()
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
