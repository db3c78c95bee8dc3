//! Every verdict, reached through the gRPC API, for both store kinds.

mod common;

use revokd::config::RevocationCheck;

use common::rpc::{revoke, verdict, verdict_for};
use common::{RedisServer, TestServer, now, sign_hs};
use revokd::proto::v1::{IssueTokenRequest, Verdict, VerifyTokenRequest};
use serde_json::json;

fn claims(exp_offset: i64) -> serde_json::Value {
    let now = now();
    json!({"iss": "revokd", "sub": "alice", "iat": now, "nbf": now, "exp": now + exp_offset, "jti": format!("j-{}", rand_suffix())})
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

async fn every_verdict(redis: Option<&RedisServer>, mode: RevocationCheck) {
    let server = TestServer::start_mode(redis, mode).await;
    let mut client = server.client().await;

    // VALID, with claims echoed back.
    let issued = client
        .issue_token(IssueTokenRequest {
            subject: "alice".into(),
            audience: vec!["web".into(), "api".into()],
            claims: Some(revokd::proto::json_to_struct(
                json!({"role": "admin"}).as_object().unwrap(),
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.key_id, "test-hs");
    let resp = client
        .verify_token(VerifyTokenRequest {
            token: issued.token.clone(),
            audience: "api".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.verdict, Verdict::Valid as i32);
    assert_eq!(resp.subject, "alice");
    assert_eq!(resp.jti, issued.jti);
    assert_eq!(resp.audience, vec!["web", "api"]);
    assert_eq!(resp.key_id, "test-hs");
    assert_eq!(resp.expires_at, issued.expires_at);
    let extra = revokd::proto::struct_to_json(resp.claims.unwrap()).unwrap();
    assert_eq!(extra.get("role"), Some(&json!("admin")));

    // WRONG_AUDIENCE.
    assert_eq!(
        verdict_for(&mut client, &issued.token, "billing").await,
        Verdict::WrongAudience
    );

    // REVOKED.
    revoke(&mut client, &issued.token).await;
    assert_eq!(verdict(&mut client, &issued.token).await, Verdict::Revoked);

    // EXPIRED: past exp by more than the 30 s leeway; within the leeway it is still valid.
    assert_eq!(
        verdict(&mut client, &sign_hs(&claims(-31), Some("test-hs"))).await,
        Verdict::Expired
    );
    assert_eq!(
        verdict(&mut client, &sign_hs(&claims(-20), Some("test-hs"))).await,
        Verdict::Valid
    );

    // NOT_YET_VALID: nbf beyond the leeway.
    let mut c = claims(600);
    c["nbf"] = json!(now() + 120);
    assert_eq!(
        verdict(&mut client, &sign_hs(&c, Some("test-hs"))).await,
        Verdict::NotYetValid
    );

    // WRONG_ISSUER.
    let mut c = claims(600);
    c["iss"] = json!("someone-else");
    assert_eq!(
        verdict(&mut client, &sign_hs(&c, Some("test-hs"))).await,
        Verdict::WrongIssuer
    );

    // UNKNOWN_KEY: no kid, or a kid nobody has.
    assert_eq!(
        verdict(&mut client, &sign_hs(&claims(600), None)).await,
        Verdict::UnknownKey
    );
    assert_eq!(
        verdict(&mut client, &sign_hs(&claims(600), Some("nope"))).await,
        Verdict::UnknownKey
    );

    // BAD_SIGNATURE: a flipped signature; and the right secret under the Ed25519 key's kid.
    let good = sign_hs(&claims(600), Some("test-hs"));
    let (msg, sig) = good.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{msg}.{flipped}{}", &sig[1..]);
    assert_eq!(verdict(&mut client, &tampered).await, Verdict::BadSignature);
    assert_eq!(
        verdict(&mut client, &sign_hs(&claims(600), Some("test-ed"))).await,
        Verdict::BadSignature
    );

    // alg none is refused, whatever the kid.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "test-hs"})),
        b64(claims(600))
    );
    assert_eq!(verdict(&mut client, &none).await, Verdict::BadSignature);

    // RFC 7515 `crit`: revokd implements no extension, so a correctly signed
    // token that names one (or an empty list) is MALFORMED, not VALID.
    let sign_with_header = |header: serde_json::Value| {
        let message = format!("{}.{}", b64(header), b64(claims(600)));
        let key = jsonwebtoken::EncodingKey::from_secret(common::TEST_SECRET);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    };
    let plain = sign_with_header(json!({"alg": "HS256", "kid": "test-hs"}));
    assert_eq!(
        verdict(&mut client, &plain).await,
        Verdict::Valid,
        "the hand-signed control"
    );
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let t = sign_with_header(json!({"alg": "HS256", "kid": "test-hs", "crit": crit, "b64": true, "exp": 1}));
        assert_eq!(verdict(&mut client, &t).await, Verdict::Malformed, "crit {crit}");
    }

    // MALFORMED: not a JWT, bad base64, missing jti, and above the size cap.
    assert_eq!(verdict(&mut client, "not-a-token").await, Verdict::Malformed);
    assert_eq!(verdict(&mut client, "a.b.c").await, Verdict::Malformed);
    let mut c = claims(600);
    c.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        verdict(&mut client, &sign_hs(&c, Some("test-hs"))).await,
        Verdict::Malformed
    );
    let mut c = claims(600);
    c["pad"] = json!("x".repeat(9000));
    assert_eq!(
        verdict(&mut client, &sign_hs(&c, Some("test-hs"))).await,
        Verdict::Malformed
    );

    server.shutdown().await;
}

#[tokio::test]
async fn every_verdict_with_redis() {
    let redis = RedisServer::start();
    every_verdict(Some(&redis), RevocationCheck::Mirror).await;
}

#[tokio::test]
async fn every_verdict_in_memory() {
    every_verdict(None, RevocationCheck::Mirror).await;
}

#[tokio::test]
async fn every_verdict_with_redis_lookups() {
    let redis = RedisServer::start();
    every_verdict(Some(&redis), RevocationCheck::Redis).await;
}

/// Claims as JSON text keep their numbers exact both ways; a Struct carries
/// every number as a double (42 becomes 42.0, 2^53 + 1 is rounded).
#[tokio::test]
async fn claims_as_json_keep_integers() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let issued = client
        .issue_token(IssueTokenRequest {
            subject: "alice".into(),
            claims_json: r#"{"n": 42, "big": 9007199254740993, "nested": {"k": [1, 2.5]}}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let resp = client
        .verify_token(VerifyTokenRequest {
            token: issued.token,
            audience: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let exact: serde_json::Value = serde_json::from_str(&resp.claims_json).unwrap();
    assert_eq!(
        exact,
        json!({"n": 42, "big": 9007199254740993u64, "nested": {"k": [1, 2.5]}})
    );
    assert!(resp.claims_json.contains("\"n\":42") && resp.claims_json.contains("9007199254740993"));
    let lossy = revokd::proto::struct_to_json(resp.claims.unwrap()).unwrap();
    assert_ne!(
        lossy["big"],
        json!(9007199254740993u64),
        "the Struct form went through a double"
    );

    for (claims, claims_json, field) in [
        (None, "[1]", "claims_json"),
        (None, "{not json", "claims_json"),
        (Some(json!({"a": 1})), r#"{"a": 1}"#, "claims_json"),
        (None, r#"{"client_id": "x"}"#, "claims"),
    ] {
        let status = client
            .issue_token(IssueTokenRequest {
                subject: "alice".into(),
                claims: claims.map(|c| revokd::proto::json_to_struct(c.as_object().unwrap())),
                claims_json: claims_json.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{claims_json}");
        assert!(
            status.message().starts_with(field),
            "{claims_json}: {}",
            status.message()
        );
    }
    server.shutdown().await;
}
