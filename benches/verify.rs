//! Criterion microbenchmarks of token verification, one per key algorithm:
//! `TokenVerifier::verify(token, None, now)`, i.e. size cap, header, key by
//! kid, signature, claims, time window and issuer. No revocation lookup and no
//! gRPC: what a never-seen token costs revokd's CPU beyond the transport.
//! Also the revocation mirror's lookup (`RevocationMirror::lookup`), which
//! every verify pays with `--revocation-check mirror`, for a miss (the usual
//! case: the token is not revoked) and a hit, in a mirror of 100,000 entries;
//! and the verified-token cache: a hit, and a never-seen token's miss + insert.
//!
//! Run: `cargo bench --bench verify`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use revokd::cache::VerifiedTokenCache;
use revokd::config::KeygenAlg;
use revokd::keys::KeyRing;
use revokd::metrics::Metrics;
use revokd::revocation::mirror::RevocationMirror;
use revokd::revocation::{RevocationKind, RevocationQuery};
use revokd::tokens::{IssueParams, IssuePolicy, TokenIssuer, TokenVerifier, VerifyPolicy};

const NOW: i64 = 1_800_000_000;

/// A verifier whose ring holds one key of `alg`, and a token it signed.
fn setup(alg: KeygenAlg, kid: &str) -> (TokenVerifier, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    revokd::keys::keygen(alg, kid, dir.path()).expect("keygen");
    let keys = Arc::new(ArcSwap::from_pointee(
        KeyRing::load_dir(dir.path(), None).expect("load keys"),
    ));
    let issuer = TokenIssuer::new(
        keys.clone(),
        IssuePolicy {
            issuer: "revokd".into(),
            default_ttl: Duration::from_secs(900),
            max_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(7200),
            max_token_bytes: 8192,
        },
    );
    let verifier = TokenVerifier::new(
        keys,
        VerifyPolicy {
            issuer: "revokd".into(),
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
            max_lifetime: Duration::from_secs(7200),
        },
    );
    let params = IssueParams {
        subject: "bench".into(),
        audience: vec!["web".into()],
        ..Default::default()
    };
    let token = issuer.issue(params, NOW * 1_000_000).expect("issue").token;
    assert!(verifier.verify(&token, None, NOW).is_ok(), "token verifies");
    (verifier, token)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for (alg, name) in [
        (KeygenAlg::Hs256, "HS256"),
        (KeygenAlg::EdDsa, "EdDSA"),
        (KeygenAlg::Es256, "ES256"),
        (KeygenAlg::Rs256, "RS256"),
    ] {
        let (verifier, token) = setup(alg, name);
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify(std::hint::black_box(&token), None, NOW).expect("valid"))
        });
    }
    group.finish();
}

/// A jti shaped like revokd's (22 base64url characters), distinct per `i`.
fn jti(i: u64) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    bytes[8..].copy_from_slice(&i.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A verify's revocation lookup: the token's jti, session and subject.
fn query(jti: &str) -> RevocationQuery<'_> {
    RevocationQuery {
        jti,
        session_id: Some("session-of-the-token"),
        subject: "alice",
        issued_at_us: Some(NOW * 1_000_000),
        now: NOW,
    }
}

fn mirror(c: &mut Criterion) {
    const ENTRIES: u64 = 100_000;
    let mirror = RevocationMirror::new();
    for i in 0..ENTRIES {
        mirror.insert(RevocationKind::Jti, &jti(i), NOW + 3600);
    }
    let revoked = jti(ENTRIES / 2);
    let not_revoked = jti(ENTRIES + 7);
    assert!(mirror.lookup(&query(&revoked)).any());
    assert!(!mirror.lookup(&query(&not_revoked)).any());
    let mut group = c.benchmark_group("mirror_lookup_100k");
    group.bench_function("miss", |b| {
        b.iter(|| mirror.lookup(std::hint::black_box(&query(&not_revoked))))
    });
    group.bench_function("hit", |b| {
        b.iter(|| mirror.lookup(std::hint::black_box(&query(&revoked))))
    });
    group.finish();
}

/// The verified-token cache (10,000 entries, full): a hit, and what a
/// never-seen token pays on top of verification when the cache is on (a miss,
/// then an insert that must evict). The load harness measures "unique tokens"
/// with the cache off, so this is the part it leaves out.
fn token_cache(c: &mut Criterion) {
    const CAPACITY: usize = 10_000;
    let (verifier, token) = setup(KeygenAlg::Hs256, "hs");
    let value = Arc::new(verifier.authenticate(&token).expect("valid"));
    let cache = VerifiedTokenCache::new(CAPACITY, Metrics::new());
    for i in 0..2 * CAPACITY {
        cache.insert(&format!("{token}.filler{i}"), value.clone(), NOW + 3600, NOW, 0);
    }
    cache.insert(&token, value.clone(), NOW + 3600, NOW, 0);
    assert!(cache.get(&token, NOW).is_some());
    let mut group = c.benchmark_group("token_cache_10k");
    group.bench_function("hit", |b| b.iter(|| cache.get(std::hint::black_box(&token), NOW)));
    let mut i = 0u64;
    group.bench_function("unique_miss_then_insert", |b| {
        b.iter_batched(
            || {
                i += 1;
                format!("{token}.unique{i}")
            },
            |t| {
                assert!(cache.get(&t, NOW).is_none());
                cache.insert(&t, value.clone(), NOW + 3600, NOW, 0);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = verify, mirror, token_cache
}
criterion_main!(benches);
