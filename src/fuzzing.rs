//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with
//! `cargo +nightly fuzz run <target>`), here so that `tests/fuzz_corpus.rs`
//! replays every seed and every input a fuzz run saved on stable Rust, in
//! `scripts/test`. Each takes arbitrary bytes and must neither panic nor
//! hang: whatever the input, the answer is a verdict, `None` or an error.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prost::Message;

use crate::keys::KeyRing;
use crate::tokens::{TokenUse, TokenVerifier, VerifyPolicy};

/// The names of the targets, as in `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [&str; 4] = ["token", "claims", "key_file", "requests"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "token" => token(data),
        "claims" => claims(data),
        "key_file" => key_file(data),
        "requests" => requests(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// A verifier over one fixed HS256 key (`fuzz`), built once.
fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("revokd-fuzz-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a key directory");
        std::fs::write(dir.join("fuzz.secret"), "fuzzing-secret-fuzzing-secret-32b").expect("the key");
        let ring = KeyRing::load_dir(&dir, Some("fuzz")).expect("the fuzz key loads");
        let _ = std::fs::remove_dir_all(&dir);
        TokenVerifier::new(
            Arc::new(ArcSwap::from_pointee(ring)),
            VerifyPolicy {
                issuer: "revokd".into(),
                leeway: Duration::from_secs(30),
                max_token_bytes: 8192,
                max_lifetime: Duration::from_secs(86_400),
            },
        )
    })
}

/// A token string (the bytes as UTF-8, lossily) through both verification stages.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let v = verifier();
    if let Ok(t) = v.authenticate(&text) {
        for expected in [TokenUse::Access, TokenUse::Refresh] {
            let _ = v.check(&t, expected, Some("aud"), 1_800_000_000);
        }
    }
    let _ = v.verify(&text, None, 1_800_000_000);
}

/// A token payload (JSON) into claims.
pub fn claims(data: &[u8]) {
    let _ = crate::tokens::parse_claims(data);
}

/// A key file: the first byte picks `.pem` (even) or `.secret` (odd).
pub fn key_file(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let ext = if first % 2 == 0 { "pem" } else { "secret" };
    let _ = crate::keys::parse_key_file("fuzz", ext, rest, "<fuzz>");
}

/// A protobuf request (the first byte picks which) decoded into the domain request.
pub fn requests(data: &[u8]) {
    use crate::proto::v1;
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    match first % 4 {
        0 => {
            if let Ok(r) = v1::IssueTokenRequest::decode(rest) {
                let _ = crate::tokens::IssueParams::try_from(r);
            }
        }
        1 => {
            if let Ok(r) = v1::RevokeTokenRequest::decode(rest) {
                let _ = crate::authority::RevokeTarget::try_from(r.target);
            }
        }
        2 => {
            if let Ok(r) = v1::IssueSessionRequest::decode(rest) {
                let _ = crate::sessions::SessionParams::try_from(r);
            }
        }
        _ => {
            if let Ok(r) = v1::RevokeSessionRequest::decode(rest) {
                let _ = crate::sessions::SessionTarget::try_from(r.target);
            }
        }
    }
}
