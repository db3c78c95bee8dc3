//! WatchRevocations against the real server: the embedded store, and real
//! Redis with the mirror (changes made on another instance and by hand, a
//! burst a consumer does not read, a cut connection), and the modes and
//! moments it refuses or ends.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::rpc::{Client, issue, revoke};
use common::{RedisServer, TestServer};
use revokd::config::RevocationCheck;
use revokd::proto::v1::watch_revocations_response::Event;
use revokd::proto::v1::{RevocationKind, RevokeSubjectRequest, WatchRevocationsRequest, WatchRevocationsResponse};
use tonic::{Code, Streaming};

/// The watcher's copy of the set: (kind, id) -> (until, revoked before).
#[derive(Debug, Default)]
struct Copy {
    entries: HashMap<(i32, String), (i64, i64)>,
    synced: bool,
    heartbeats: usize,
    /// The kids of the last key set, and how many heartbeats had come when it came.
    kids: Vec<String>,
    kids_at_heartbeat: usize,
}

impl Copy {
    fn apply(&mut self, e: Event) {
        match e {
            Event::Started(_) => {}
            Event::Revocations(b) => {
                for r in b.revocations {
                    let key = (r.kind, r.id);
                    if r.removed {
                        self.entries.remove(&key);
                    } else {
                        self.entries.insert(key, (r.expires_at, r.revoked_before_us));
                    }
                }
            }
            Event::Synced(_) => self.synced = true,
            Event::Heartbeat(_) => self.heartbeats += 1,
            Event::Keys(k) => {
                self.kids = k.kids;
                self.kids_at_heartbeat = self.heartbeats;
            }
        }
    }

    fn has(&self, kind: RevocationKind, id: &str) -> bool {
        self.entries.contains_key(&(kind as i32, id.to_owned()))
    }
}

async fn watch(c: &mut Client) -> Streaming<WatchRevocationsResponse> {
    c.watch_revocations(WatchRevocationsRequest {})
        .await
        .expect("watch starts")
        .into_inner()
}

/// The next event, or the status the stream ended with.
async fn next(s: &mut Streaming<WatchRevocationsResponse>) -> Result<Event, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(20), s.message()).await {
        Ok(Ok(Some(m))) => Ok(m.event.expect("every message has an event")),
        Ok(Ok(None)) => panic!("the stream ended without a status"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no event within 20 s"),
    }
}

/// Applies events until `done` holds for the copy.
async fn until(s: &mut Streaming<WatchRevocationsResponse>, copy: &mut Copy, done: impl Fn(&Copy) -> bool) {
    while !done(copy) {
        copy.apply(next(s).await.expect("the stream goes on"));
    }
}

#[tokio::test]
async fn embedded_store_streams_settings_snapshot_changes_and_heartbeats() {
    let server = TestServer::start(None).await;
    let mut c = server.client().await;
    let before = issue(&mut c, "alice").await;
    revoke(&mut c, &before.token).await;

    let mut s = watch(&mut c).await;
    let Event::Started(started) = next(&mut s).await.unwrap() else {
        panic!("settings come first")
    };
    assert_eq!(started.issuer, "revokd");
    assert!(started.max_token_bytes > 0 && started.leeway.is_some() && started.max_lifetime.is_some());
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| c.synced).await;
    assert!(
        copy.has(RevocationKind::Jti, &before.jti),
        "the snapshot holds the earlier revocation"
    );
    let (until_s, _) = copy.entries[&(RevocationKind::Jti as i32, before.jti.clone())];
    assert!(
        until_s >= before.expires_at.unwrap().seconds,
        "kept at least until the token expires"
    );

    let after = issue(&mut c, "bob").await;
    revoke(&mut c, &after.token).await;
    c.revoke_subject(RevokeSubjectRequest {
        subject: "carol".into(),
        reason: String::new(),
    })
    .await
    .unwrap();
    until(&mut s, &mut copy, |c| {
        c.has(RevocationKind::Jti, &after.jti) && c.has(RevocationKind::Subject, "carol")
    })
    .await;
    let (_, before_us) = copy.entries[&(RevocationKind::Subject as i32, "carol".to_owned())];
    assert!(
        before_us > common::now() * 1_000_000 - 60_000_000,
        "a subject carries its instant in µs"
    );
    let seen = copy.heartbeats;
    until(&mut s, &mut copy, |c| c.heartbeats > seen + 2).await;

    // Shutdown ends the stream at once (UNAVAILABLE), not after the grace period.
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    let end = loop {
        match next(&mut s).await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    shutdown.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn mirror_streams_changes_from_another_instance_and_by_hand() {
    let redis = RedisServer::start();
    let a = TestServer::start(Some(&redis)).await;
    let b = TestServer::start(Some(&redis)).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    redis.cmd(&["SET", "revokd:jti:early", "1", "EX", "600"]).unwrap();

    let mut s = watch_when_fresh(&mut ca).await;
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| c.synced).await;
    assert!(copy.has(RevocationKind::Jti, "early"), "the snapshot reads Redis");

    // Revoked on B: announced on A's stream.
    let t = issue(&mut cb, "alice").await;
    revoke(&mut cb, &t.token).await;
    until(&mut s, &mut copy, |c| c.has(RevocationKind::Jti, &t.jti)).await;

    // By hand: a session key, then deleting the early key.
    redis.cmd(&["SET", "revokd:sid:{s1}", "1", "EX", "600"]).unwrap();
    until(&mut s, &mut copy, |c| c.has(RevocationKind::Session, "s1")).await;
    redis.cmd(&["DEL", "revokd:jti:early"]).unwrap();
    until(&mut s, &mut copy, |c| !c.has(RevocationKind::Jti, "early")).await;
    // Session state and heartbeat keys are not revocations.
    assert!(copy.entries.keys().all(|(_, id)| !id.contains("hb:")));
}

/// Watches once the mirror is proven fresh (UNAVAILABLE until then).
async fn watch_when_fresh(c: &mut Client) -> Streaming<WatchRevocationsResponse> {
    let started = std::time::Instant::now();
    loop {
        match c.watch_revocations(WatchRevocationsRequest {}).await {
            Ok(s) => return s.into_inner(),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the watch never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_consumer_that_falls_behind_is_cut_off_and_resyncs() {
    let redis = RedisServer::start();
    let server = TestServer::start(Some(&redis)).await;
    let mut c = server.client().await;
    let mut s = watch_when_fresh(&mut c).await;
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| c.synced).await;

    let mut eager = watch_when_fresh(&mut c).await;
    // 400,000 revocations written at once by another client, while this
    // consumer reads nothing: more than the feed keeps for one watcher.
    for part in 0..8 {
        let first = (part * 50_000 + 1).to_string();
        let last = ((part + 1) * 50_000).to_string();
        redis
            .cmd(&[
                "EVAL",
                "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', KEYS[1] .. i, 1, 'EX', 600) end",
                "1",
                "revokd:jti:burst-",
                &first,
                &last,
            ])
            .expect("the burst is written");
    }
    // Another watcher that keeps up shows when the mirror has announced the
    // whole burst (or is itself cut off, if the mirror had to resync).
    let mut seen = Copy::default();
    while !seen.has(RevocationKind::Jti, "burst-400000") {
        match next(&mut eager).await {
            Ok(e) => seen.apply(e),
            Err(_) => break,
        }
    }
    let reading = std::time::Instant::now();
    let end = loop {
        assert!(
            reading.elapsed() < Duration::from_secs(30),
            "the stream was never cut off"
        );
        match next(&mut s).await {
            Ok(e) => copy.apply(e),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert!(copy.entries.len() < 400_000, "the copy never got the whole burst");

    // Watching again: a snapshot with all of it.
    let mut s = watch_when_fresh(&mut c).await;
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| c.synced).await;
    until(&mut s, &mut copy, |c| c.heartbeats > 0).await;
    assert_eq!(copy.entries.len(), 400_000);
}

#[tokio::test]
async fn a_lost_mirror_connection_ends_the_stream_and_a_new_watch_sees_the_gap() {
    let redis = RedisServer::start();
    let server = TestServer::start(Some(&redis)).await;
    let mut c = server.client().await;
    redis
        .cmd(&["SET", "revokd:jti:deleted-in-gap", "1", "EX", "600"])
        .unwrap();
    let mut s = watch_when_fresh(&mut c).await;
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| {
        c.synced && c.has(RevocationKind::Jti, "deleted-in-gap")
    })
    .await;

    // Every connection cut, and changes made while revokd reconnects.
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    redis.cmd(&["DEL", "revokd:jti:deleted-in-gap"]).unwrap();
    redis
        .cmd(&["SET", "revokd:jti:added-in-gap", "1", "EX", "600"])
        .unwrap();
    let end = loop {
        match next(&mut s).await {
            Ok(e) => copy.apply(e),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Aborted, "{end:?}");

    let mut s = watch_when_fresh(&mut c).await;
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| c.synced).await;
    assert!(copy.has(RevocationKind::Jti, "added-in-gap"));
    assert!(!copy.has(RevocationKind::Jti, "deleted-in-gap"));
}

#[tokio::test]
async fn without_a_mirror_there_is_nothing_to_watch() {
    let redis = RedisServer::start();
    let server = TestServer::start_mode(Some(&redis), RevocationCheck::Redis).await;
    let status = server
        .client()
        .await
        .watch_revocations(WatchRevocationsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("VerifyToken"), "{}", status.message());
}

#[tokio::test]
async fn the_key_set_is_streamed_and_followed() {
    let (mut config, keys) = TestServer::config(None);
    config.keys_reload_interval = Duration::from_millis(50);
    let dir = keys.path().to_path_buf();
    let mut server = TestServer::start_with(config).await;
    server.keep(keys);
    let mut c = server.client().await;
    let mut s = watch(&mut c).await;
    let mut copy = Copy::default();
    until(&mut s, &mut copy, |c| c.synced).await;
    assert_eq!(copy.kids, ["test-ed", "test-hs"], "the kids in force, HMAC included");

    // A key added: announced before the heartbeat that covers it; then one removed.
    revokd::keys::keygen(revokd::config::KeygenAlg::EdDsa, "added", &dir).unwrap();
    until(&mut s, &mut copy, |c| c.kids.iter().any(|k| k == "added")).await;
    let announced_at = copy.kids_at_heartbeat;
    until(&mut s, &mut copy, |c| c.heartbeats > announced_at).await;
    std::fs::remove_file(dir.join("test-ed.pem")).unwrap();
    until(&mut s, &mut copy, |c| !c.kids.iter().any(|k| k == "test-ed")).await;
    assert_eq!(copy.kids, ["added", "test-hs"]);
    server.shutdown().await;
}
