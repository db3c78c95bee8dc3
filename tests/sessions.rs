//! Sessions: token pairs, single-use refresh rotation with reuse detection and
//! a grace window, logout of a session, logout everywhere (to the microsecond),
//! for both store kinds.

mod common;

use std::time::Duration;

use common::rpc::{issue, login, refresh, verdict, verify_req};
use common::{RedisServer, RevokdProcess, TestServer, eventually, keys_dir, redis_cli, serve_args};
use revokd::config::RevocationCheck;
use revokd::proto::v1::{RevokeSessionRequest, RevokeSubjectRequest, Verdict, revoke_session_request};
use tonic::Code;

/// Runs `$body(redis: Option<&RedisServer>, mode: RevocationCheck)` as three
/// tests, one a store: `$memory` (no Redis), `$redis` (Redis, with the
/// revocation mirror), each with the test attribute given, and `$lookups`
/// (Redis, a lookup each verify) on a multi-thread runtime.
macro_rules! on_every_store {
    (#[$test:meta] $body:ident: $memory:ident, $redis:ident, $lookups:ident) => {
        #[$test]
        async fn $memory() {
            $body(None, RevocationCheck::Mirror).await;
        }

        #[$test]
        async fn $redis() {
            let redis = RedisServer::start();
            $body(Some(&redis), RevocationCheck::Mirror).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $lookups() {
            let redis = RedisServer::start();
            $body(Some(&redis), RevocationCheck::Redis).await;
        }
    };
}

async fn pairs_and_rotation(redis: Option<&RedisServer>, mode: RevocationCheck) {
    let server = TestServer::start_mode(redis, mode).await;
    let mut c = server.client().await;
    let s = login(&mut c, "alice").await;
    assert_eq!(s.session_id.len(), 22);
    let v = c.verify_token(verify_req(&s.access_token)).await.unwrap().into_inner();
    assert_eq!(v.verdict, Verdict::Valid as i32);
    assert_eq!(v.session_id, s.session_id);
    // Each token only where it belongs.
    assert_eq!(verdict(&mut c, &s.refresh_token).await, Verdict::WrongTokenType);
    assert_eq!(refresh(&mut c, &s.access_token).await, Err(Code::Unauthenticated));

    // Rotation: a new pair, the old refresh token is used up.
    let (a2, r2) = refresh(&mut c, &s.refresh_token).await.unwrap();
    assert_ne!(r2, s.refresh_token);
    assert_eq!(verdict(&mut c, &a2).await, Verdict::Valid);
    let (a3, r3) = refresh(&mut c, &r2).await.unwrap();
    assert_eq!(verdict(&mut c, &a3).await, Verdict::Valid);

    // Reuse of a used refresh token: a distinct status, and the whole session dies.
    assert_eq!(refresh(&mut c, &r2).await, Err(Code::PermissionDenied));
    for access in [&s.access_token, &a2, &a3] {
        assert_eq!(verdict(&mut c, access).await, Verdict::Revoked);
    }
    assert_eq!(
        refresh(&mut c, &r3).await,
        Err(Code::Unauthenticated),
        "the newest refresh token died too"
    );
    server.shutdown().await;
}

on_every_store!(
    #[tokio::test]
    pairs_and_rotation:
    pairs_and_rotation_in_memory,
    pairs_and_rotation_with_redis,
    pairs_and_rotation_with_redis_lookups
);

async fn concurrent_refreshes_yield_one_success(redis: Option<&RedisServer>, mode: RevocationCheck) {
    let server = TestServer::start_mode(redis, mode).await;
    let mut c = server.client().await;
    let s = login(&mut c, "alice").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut c = c.clone();
            let r = s.refresh_token.clone();
            tokio::spawn(async move { refresh(&mut c, &r).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(code) => assert!(
                matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                "{code:?}"
            ),
        }
    }
    assert_eq!(ok, 1, "exactly one of 50 concurrent refreshes succeeds");
    server.shutdown().await;
}

on_every_store!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_refreshes_yield_one_success:
    concurrent_refreshes_yield_one_success_in_memory,
    concurrent_refreshes_yield_one_success_with_redis,
    concurrent_refreshes_yield_one_success_with_redis_lookups
);

#[tokio::test]
async fn grace_window_retries_only_the_previous_token() {
    let redis = RedisServer::start();
    let (mut config, _keys) = TestServer::config(Some(&redis));
    config.refresh_grace = Duration::from_secs(30);
    let server = TestServer::start_with(config).await;
    let mut c = server.client().await;
    let s = login(&mut c, "alice").await;
    let first = refresh(&mut c, &s.refresh_token).await.unwrap();
    // The successor (live tokens) is kept in Redis for the grace window only.
    let succ = format!("revokd:succ:{{{}}}", s.session_id);
    let pttl: i64 = redis
        .cmd(&["PTTL", &succ])
        .unwrap()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 30_000, "PTTL {pttl}");
    let state = format!("revokd:sess:{{{}}}", s.session_id);
    assert_eq!(redis.cmd(&["HEXISTS", &state, "successor"]).as_deref(), Some(":0"));
    // A retry of the same token (a lost response) gets the same successor.
    assert_eq!(refresh(&mut c, &s.refresh_token).await.unwrap(), first);
    let second = refresh(&mut c, &first.1).await.unwrap();
    // Now the first token is two rotations old: reuse.
    assert_eq!(refresh(&mut c, &s.refresh_token).await, Err(Code::PermissionDenied));
    assert_eq!(verdict(&mut c, &second.0).await, Verdict::Revoked);
    server.shutdown().await;
}

async fn logout_of_one_session(redis: Option<&RedisServer>, mode: RevocationCheck) {
    let server = TestServer::start_mode(redis, mode).await;
    let mut c = server.client().await;
    let by_id = login(&mut c, "alice").await;
    let by_token = login(&mut c, "alice").await;
    let untouched = login(&mut c, "alice").await;
    let r = c
        .revoke_session(RevokeSessionRequest {
            target: Some(revoke_session_request::Target::SessionId(by_id.session_id.clone())),
            reason: "logout".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.newly_revoked);
    assert_eq!(r.session_id, by_id.session_id);
    c.revoke_session(RevokeSessionRequest {
        target: Some(revoke_session_request::Target::Token(by_token.access_token.clone())),
        reason: "logout".into(),
    })
    .await
    .unwrap();
    for s in [&by_id, &by_token] {
        assert_eq!(verdict(&mut c, &s.access_token).await, Verdict::Revoked);
        assert_eq!(refresh(&mut c, &s.refresh_token).await, Err(Code::Unauthenticated));
    }
    assert_eq!(verdict(&mut c, &untouched.access_token).await, Verdict::Valid);
    assert!(refresh(&mut c, &untouched.refresh_token).await.is_ok());
    // Bad requests name the field.
    let e = c
        .revoke_session(RevokeSessionRequest {
            target: Some(revoke_session_request::Target::SessionId("no spaces{}".into())),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("session_id"), "{}", e.message());
    let plain = issue(&mut c, "alice").await;
    let e = c
        .revoke_session(RevokeSessionRequest {
            target: Some(revoke_session_request::Target::Token(plain.token)),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "a token without sid names no session");
    server.shutdown().await;
    if let (Some(redis), RevocationCheck::Mirror) = (redis, mode) {
        // Cluster-friendly layout (checked on Redis with the mirror): the session's keys share a hash tag.
        let keys = redis_cli(redis, &["--scan", "--pattern", "revokd:*"]);
        assert!(keys.lines().any(|k| k.starts_with("revokd:sid:{")), "{keys}");
        assert!(keys.lines().any(|k| k.starts_with("revokd:sess:{")), "{keys}");
    }
}

on_every_store!(
    #[tokio::test]
    logout_of_one_session:
    logout_of_one_session_in_memory,
    logout_of_one_session_with_redis,
    logout_of_one_session_with_redis_lookups
);

async fn logout_everywhere(redis: Option<&RedisServer>, mode: RevocationCheck) {
    let server = TestServer::start_mode(redis, mode).await;
    let mut c = server.client().await;
    let phone = login(&mut c, "alice").await;
    let laptop = login(&mut c, "alice").await;
    let bob = login(&mut c, "bob").await;
    let r = c
        .revoke_subject(RevokeSubjectRequest {
            subject: "alice".into(),
            reason: "password changed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.revoked_before.is_some());
    for s in [&phone, &laptop] {
        assert_eq!(verdict(&mut c, &s.access_token).await, Verdict::Revoked);
        assert_eq!(refresh(&mut c, &s.refresh_token).await, Err(Code::Unauthenticated));
    }
    assert_eq!(verdict(&mut c, &bob.access_token).await, Verdict::Valid);
    // A login right after the call returns is valid.
    let again = login(&mut c, "alice").await;
    assert_eq!(verdict(&mut c, &again.access_token).await, Verdict::Valid);

    // The same-second edge: a token issued just before the call is revoked, one issued
    // just after is valid, even when all three instants share one second.
    let mut same_second_seen = false;
    for _ in 0..50 {
        let before = login(&mut c, "carol").await;
        let cut = c
            .revoke_subject(RevokeSubjectRequest {
                subject: "carol".into(),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .revoked_before
            .unwrap();
        let after = login(&mut c, "carol").await;
        assert_eq!(verdict(&mut c, &before.access_token).await, Verdict::Revoked);
        assert_eq!(verdict(&mut c, &after.access_token).await, Verdict::Valid);
        let before_s = before.access_expires_at.unwrap().seconds;
        let after_s = after.access_expires_at.unwrap().seconds;
        if before_s == after_s && after_s - 900 == cut.seconds {
            same_second_seen = true;
            break;
        }
    }
    assert!(same_second_seen, "the edge was exercised within one second");
    server.shutdown().await;
}

on_every_store!(
    #[tokio::test]
    logout_everywhere:
    logout_everywhere_in_memory,
    logout_everywhere_with_redis,
    logout_everywhere_with_redis_lookups
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_subject_revocations_reach_other_instances() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let args = serve_args(&keys, &url, &[]);
    let a = RevokdProcess::spawn(&args);
    let b = RevokdProcess::spawn(&args);
    a.wait_synced().await;
    b.wait_synced().await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let s1 = login(&mut ca, "dave").await;
    let s2 = login(&mut ca, "erin").await;
    assert_eq!(verdict(&mut cb, &s1.access_token).await, Verdict::Valid);
    assert_eq!(verdict(&mut cb, &s2.access_token).await, Verdict::Valid);
    ca.revoke_session(RevokeSessionRequest {
        target: Some(revoke_session_request::Target::SessionId(s1.session_id.clone())),
        reason: String::new(),
    })
    .await
    .unwrap();
    ca.revoke_subject(RevokeSubjectRequest {
        subject: "erin".into(),
        reason: String::new(),
    })
    .await
    .unwrap();
    for token in [&s1.access_token, &s2.access_token] {
        eventually(Duration::from_secs(1), "B enforces A's revocation", || {
            let mut cb = cb.clone();
            let token = token.clone();
            async move { verdict(&mut cb, &token).await == Verdict::Revoked }
        })
        .await;
    }
}
