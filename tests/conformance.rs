//! The conformance table (`tests/conformance/verify.json`) against revokd's
//! VerifyToken, over real Redis. The Python client's local mode runs the same
//! table (`clients/python/tests/test_conformance.py`), so the two agree.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use revokd::proto::v1::{
    RevokeSessionRequest, RevokeSubjectRequest, RevokeTokenRequest, Verdict, VerifyTokenRequest,
    revoke_session_request, revoke_token_request,
};
use serde_json::{Map, Value, json};

use common::{RedisServer, TestServer, now};

const TABLE: &str = include_str!("conformance/verify.json");

/// The server settings an expression may name.
struct Env {
    now: i64,
    leeway: i64,
    max_lifetime: i64,
    id: String,
}

/// `now+300`, `now-leeway+10`, `now+300.75`: a number; any other string stays.
fn expr(s: &str, env: &Env) -> Value {
    let Some(rest) = s.strip_prefix("now") else {
        return Value::String(if s == "$id" { env.id.clone() } else { s.into() });
    };
    let (mut int, mut frac, mut sign, mut term) = (env.now, 0.0f64, 1i64, String::new());
    let mut apply = |term: &str, sign: i64| match term {
        "leeway" => int += sign * env.leeway,
        "max_lifetime" => int += sign * env.max_lifetime,
        t if t.contains('.') => frac += sign as f64 * t.parse::<f64>().expect("a number"),
        t => int += sign * t.parse::<i64>().unwrap_or_else(|_| panic!("bad term {t:?} in {s:?}")),
    };
    for c in rest.chars() {
        if c == '+' || c == '-' {
            if !term.is_empty() {
                apply(&term, sign);
                term.clear();
            }
            sign = if c == '+' { 1 } else { -1 };
        } else {
            term.push(c);
        }
    }
    if !term.is_empty() {
        apply(&term, sign);
    }
    if frac == 0.0 {
        json!(int)
    } else {
        json!(int as f64 + frac)
    }
}

fn resolve(v: &Value, env: &Env) -> Value {
    match v {
        Value::String(s) => expr(s, env),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), resolve(v, env))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(v, env)).collect()),
        v => v.clone(),
    }
}

fn sign(key: &Value, message: &str) -> String {
    let (alg, encoding) = match key["alg"].as_str().unwrap() {
        "HS256" => (
            Algorithm::HS256,
            EncodingKey::from_secret(key["secret"].as_str().unwrap().as_bytes()),
        ),
        "EdDSA" => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(key["pem"].as_str().unwrap().as_bytes()).unwrap(),
        ),
        other => panic!("table key alg {other}"),
    };
    jsonwebtoken::crypto::sign(message.as_bytes(), &encoding, alg).unwrap()
}

/// The token a case describes, and its resolved claims (if given as JSON).
fn build(case: &Value, keys: &Map<String, Value>, env: &Env) -> (String, Map<String, Value>) {
    if let Some(t) = case["token"].as_str() {
        return (t.into(), Map::new());
    }
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s.as_bytes());
    let kid = case["sign"].as_str().unwrap_or("conf-hs");
    let key = &keys[kid];
    let header = match (&case["header_b64"], &case["header_json"], &case["header"]) {
        (Value::String(h), _, _) => h.clone(),
        (_, Value::String(j), _) => b64(j),
        (_, _, Value::Object(h)) => b64(&Value::Object(h.clone()).to_string()),
        _ => b64(&json!({"alg": key["alg"], "kid": kid}).to_string()),
    };
    let mut claims = Map::new();
    let payload = match (&case["payload_b64"], &case["claims_json"], &case["claims"]) {
        (Value::String(p), _, _) => p.clone(),
        (_, Value::String(j), _) => b64(j),
        (_, _, c @ Value::Object(_)) => {
            claims = resolve(c, env).as_object().unwrap().clone();
            if let Some(n) = case["pad"].as_u64() {
                claims.insert("pad".into(), "x".repeat(n as usize).into());
            }
            b64(&Value::Object(claims.clone()).to_string())
        }
        _ => panic!("case {} has no payload", case["name"]),
    };
    let message = format!("{header}.{payload}");
    let signature = match case["signature_b64"].as_str() {
        Some(s) => s.to_string(),
        None => sign(key, &message),
    };
    let suffix = case["suffix"].as_str().unwrap_or("");
    (format!("{message}.{signature}{suffix}"), claims)
}

#[tokio::test]
async fn verify_token_gives_every_verdict_of_the_conformance_table() {
    let table: Value = serde_json::from_str(TABLE).unwrap();
    let keys = table["keys"].as_object().unwrap();
    let redis = RedisServer::start();
    let (config, dir) = TestServer::config(Some(&redis));
    // revokd holds the table's keys, except the one meant to be foreign.
    std::fs::write(
        dir.path().join("conf-hs.secret"),
        keys["conf-hs"]["secret"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("conf-ed.pem"), keys["conf-ed"]["pem"].as_str().unwrap()).unwrap();
    let leeway = config.leeway.as_secs() as i64;
    let max_lifetime = config.max_ttl.max(config.refresh_ttl).as_secs() as i64;
    let mut server = TestServer::start_with(config).await;
    server.keep(dir);
    let mut c = server.client().await;

    let mut failures = Vec::new();
    let cases = table["cases"].as_array().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let env = Env {
            now: now(),
            leeway,
            max_lifetime,
            id: format!("conf-rs-{}-{i}", std::process::id()),
        };
        let name = case["name"].as_str().unwrap();
        let (token, claims) = build(case, keys, &env);
        let id = || env.id.clone();
        match case["revoke"].as_str() {
            None => {}
            Some("jti") => {
                c.revoke_token(RevokeTokenRequest {
                    target: Some(revoke_token_request::Target::Jti(id())),
                    reason: "conformance".into(),
                })
                .await
                .unwrap();
            }
            Some("session") => {
                c.revoke_session(RevokeSessionRequest {
                    target: Some(revoke_session_request::Target::SessionId(id())),
                    reason: "conformance".into(),
                })
                .await
                .unwrap();
            }
            Some("subject") => {
                c.revoke_subject(RevokeSubjectRequest {
                    subject: id(),
                    reason: "conformance".into(),
                })
                .await
                .unwrap();
            }
            Some(other) => panic!("{name}: revoke {other}"),
        }
        let resp = c
            .verify_token(VerifyTokenRequest {
                token,
                audience: case["audience"].as_str().unwrap_or("").into(),
            })
            .await
            .unwrap()
            .into_inner();
        let got = Verdict::try_from(resp.verdict).unwrap();
        let want = Verdict::from_str_name(&format!("VERDICT_{}", case["expect"].as_str().unwrap())).unwrap();
        if got != want {
            failures.push(format!("{name}: {got:?}, want {want:?}"));
        } else if matches!(got, Verdict::Valid | Verdict::Revoked) {
            let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
            let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
            if resp.subject != sub || resp.jti != jti {
                failures.push(format!(
                    "{name}: principal {}/{}, want {sub}/{jti}",
                    resp.subject, resp.jti
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    server.shutdown().await;
}
