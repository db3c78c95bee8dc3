//! Redis Cluster (and Valkey in cluster mode): 6 real nodes, 3 primaries and
//! 3 replicas, and two real revokd processes, A and B, each with the mirror.
//! - Revocations spread over every primary's slots on A are REVOKED on B; no
//!   verify sent later than `--max-staleness` after A acknowledged answers
//!   VALID; the propagation delay is measured.
//! - kill -9 of a primary while verifies run: never VALID for a revoked token,
//!   every revocation still there, and serving again once its replica took over.
//! - Slots resharded to a 4th primary while verifies and revocations run: the
//!   same invariant, and the moved revocations are still enforced.
//! - Sessions (rotation, reuse detection, logout everywhere) across A and B.
//!
//! Each scenario runs on Redis and, when `VALKEY_SERVER` names a
//! valkey-server (scripts/test installs one), on Valkey.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::rpc::{Client, issue, login, refresh, revoke, verdict, verify};
use common::{RevokdProcess, eventually, keys_dir, metric, serve_args};
use revokd::proto::v1::{RevokeSubjectRequest, Verdict};
use revokd::revocation::slots::slot_of_key;
use tonic::Code;

const MAX_STALENESS: Duration = Duration::from_millis(100);
const ARGS: &[&str] = &["--max-staleness", "100ms", "--store-timeout", "500ms"];

/// Runs `$body(cluster)` on a Redis cluster and, if available, a Valkey one.
macro_rules! on_every_server {
    ($body:ident: $redis:ident, $valkey:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis() {
            $body(RedisCluster::start()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $valkey() {
            match RedisCluster::start_valkey() {
                Some(cluster) => $body(cluster).await,
                None => eprintln!("VALKEY_SERVER not set: skipped"),
            }
        }
    };
}

/// Waits until `p`'s mirror covers every slot, synced and proven fresh.
async fn wait_fresh(p: &RevokdProcess) {
    eventually(Duration::from_secs(20), "mirror synced and fresh", || async {
        let m = p.metrics().await;
        metric(&m, "revokd_mirror_synced") == Some(1.0)
            && metric(&m, "revokd_mirror_staleness_seconds").is_some_and(|s| s < MAX_STALENESS.as_secs_f64())
    })
    .await;
}

/// Two instances on the cluster, fresh.
async fn two_instances(cluster: &RedisCluster, extra: &[&str]) -> (RevokdProcess, RevokdProcess, tempfile::TempDir) {
    let keys = keys_dir();
    let url = cluster.url();
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(extra);
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, &args));
    let b = RevokdProcess::spawn(&serve_args(&keys, &url, &args));
    wait_fresh(&a).await;
    wait_fresh(&b).await;
    (a, b, keys)
}

/// One revoked token, and when A acknowledged it.
#[derive(Clone)]
struct Revoked {
    token: String,
    jti: String,
    acked: Instant,
}

/// Issues and revokes `n` tokens on `a`; their jtis land on every primary.
async fn revoke_many(a: &mut Client, cluster: &RedisCluster, n: usize) -> Vec<Revoked> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let issued = issue(a, &format!("user-{i}")).await;
        revoke(a, &issued.token).await;
        out.push(Revoked {
            token: issued.token,
            jti: issued.jti,
            acked: Instant::now(),
        });
    }
    let mut owners: Vec<u16> = out
        .iter()
        .map(|r| cluster.owner_of_slot(slot_of_key(&format!("revokd:jti:{}", r.jti))))
        .collect();
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), 3, "the revocations span every primary");
    out
}

/// What a verify loop saw.
#[derive(Debug, Default)]
struct Seen {
    verifies: usize,
    unavailable: usize,
    /// Revoked tokens answered VALID by a verify sent after the bound.
    valid_after_bound: Vec<String>,
}

/// Verifies every token it was given, over and over, in the background.
struct VerifyLoop {
    tokens: Arc<Mutex<Vec<Revoked>>>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl VerifyLoop {
    fn start(c: Client, tokens: &[Revoked]) -> Self {
        let tokens = Arc::new(Mutex::new(tokens.to_vec()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(Self::run(c, tokens.clone(), seen.clone()));
        VerifyLoop { tokens, seen, task }
    }

    async fn run(mut c: Client, tokens: Arc<Mutex<Vec<Revoked>>>, seen: Arc<Mutex<Seen>>) {
        loop {
            let batch: Vec<Revoked> = tokens.lock().unwrap().clone();
            for r in batch {
                let sent = Instant::now();
                let v = verify(&mut c, &r.token).await;
                let mut s = seen.lock().unwrap();
                s.verifies += 1;
                match v {
                    Ok(Verdict::Valid) if sent.duration_since(r.acked) > MAX_STALENESS => {
                        s.valid_after_bound.push(r.jti.clone())
                    }
                    Err(Code::Unavailable) => s.unavailable += 1,
                    _ => {}
                }
            }
            tokio::task::yield_now().await;
        }
    }

    fn add(&self, more: &[Revoked]) {
        self.tokens.lock().unwrap().extend_from_slice(more);
    }

    fn verifies(&self) -> usize {
        self.seen.lock().unwrap().verifies
    }

    /// Stops the loop; what it saw.
    fn finish(self) -> Seen {
        self.task.abort();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Everything in `tokens` is REVOKED on `c` (not UNAVAILABLE), eventually.
async fn all_revoked(c: &Client, tokens: &[Revoked], deadline: Duration) {
    eventually(deadline, "every revoked token answered REVOKED", || {
        let mut c = c.clone();
        let tokens = tokens.to_vec();
        async move {
            for r in &tokens {
                if verify(&mut c, &r.token).await != Ok(Verdict::Revoked) {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn propagation(cluster: RedisCluster) {
    let (a, b, _keys) = two_instances(&cluster, &[]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // Each revocation on A, then B polled until it answers REVOKED.
    let mut delays = Vec::new();
    let mut jtis = Vec::new();
    let mut verifies = 0usize;
    // 150 in the suite; BENCHMARKS.md runs 1,000 (REVOKD_BENCH_REVOCATIONS=1000).
    let n: usize = std::env::var("REVOKD_BENCH_REVOCATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(150);
    for i in 0..n {
        let issued = issue(&mut ca, &format!("spread-{i}")).await;
        assert_eq!(verify(&mut cb, &issued.token).await, Ok(Verdict::Valid));
        verifies += 1;
        revoke(&mut ca, &issued.token).await;
        let acked = Instant::now();
        loop {
            let sent = Instant::now();
            verifies += 1;
            match verify(&mut cb, &issued.token).await {
                Ok(Verdict::Revoked) => break,
                Ok(Verdict::Valid) => assert!(
                    sent.duration_since(acked) <= MAX_STALENESS,
                    "VALID on B {:?} after A acknowledged",
                    sent.duration_since(acked)
                ),
                other => panic!("B answered {other:?}"),
            }
        }
        delays.push(acked.elapsed());
        jtis.push(issued.jti);
    }
    let owners: std::collections::BTreeSet<u16> = jtis
        .iter()
        .map(|j| cluster.owner_of_slot(slot_of_key(&format!("revokd:jti:{j}"))))
        .collect();
    assert_eq!(owners.len(), 3, "the revocations span every primary");
    delays.sort();
    eprintln!(
        "cluster propagation A->B over {} revocations: p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );
    // B answered from its mirror, not by lookups.
    let m = b.metrics().await;
    assert_eq!(metric(&m, "revokd_store_nodes{role=\"primary\"}"), Some(3.0));
    assert_eq!(metric(&m, "revokd_store_nodes{role=\"replica\"}"), Some(3.0));
    let lookups = metric(&m, "revokd_mirror_stale_lookups_total").unwrap_or(0.0);
    // (A loaded machine delays some heartbeats past the bound: those verifies look up, correctly.)
    assert!(
        lookups * 2.0 < verifies as f64,
        "{lookups} of {verifies} verifies fell back to lookups"
    );

    // Sessions across the two instances.
    let s = login(&mut ca, "carol").await;
    let (a2, r2) = refresh(&mut cb, &s.refresh_token).await.unwrap();
    assert_eq!(verdict(&mut ca, &a2).await, Verdict::Valid);
    // Reuse of the used refresh token kills the session everywhere.
    assert_eq!(refresh(&mut ca, &s.refresh_token).await, Err(Code::PermissionDenied));
    eventually(Duration::from_secs(2), "reuse revokes the session on B", || {
        let mut cb = cb.clone();
        let a2 = a2.clone();
        async move { verdict(&mut cb, &a2).await == Verdict::Revoked }
    })
    .await;
    assert_eq!(refresh(&mut cb, &r2).await, Err(Code::Unauthenticated));
    // Logout everywhere on A: every token of the subject revoked on B.
    let t1 = issue(&mut ca, "dave").await.token;
    let t2 = login(&mut cb, "dave").await.access_token;
    ca.revoke_subject(RevokeSubjectRequest {
        subject: "dave".into(),
        reason: "test".into(),
    })
    .await
    .unwrap();
    for t in [&t1, &t2] {
        eventually(Duration::from_secs(2), "logout everywhere on B", || {
            let mut cb = cb.clone();
            let t = t.clone();
            async move { verdict(&mut cb, &t).await == Verdict::Revoked }
        })
        .await;
    }
    assert_eq!(
        verdict(&mut cb, &issue(&mut ca, "dave").await.token).await,
        Verdict::Valid
    );
}

on_every_server!(propagation: propagation_and_sessions_on_redis, propagation_and_sessions_on_valkey);

async fn primary_killed(mut cluster: RedisCluster) {
    let (a, b, _keys) = two_instances(&cluster, &["--min-replica-acks", "1"]).await;
    let mut ca = a.client().await;
    let revoked = revoke_many(&mut ca, &cluster, 60).await;
    let looper = VerifyLoop::start(b.client().await, &revoked);
    eventually(Duration::from_secs(5), "verifies running", || async {
        looper.verifies() > 100
    })
    .await;

    let victim = cluster.owner_of_slot(slot_of_key(&format!("revokd:jti:{}", revoked[0].jti)));
    let killed_at = Instant::now();
    cluster.kill_primary(victim);
    let promoted = cluster.wait_failover(victim, Duration::from_secs(30));
    eprintln!("failover {victim} -> {promoted} took {:?}", killed_at.elapsed());
    // Serving again: every revocation REVOKED on B, and A revokes into the moved slots.
    let cb = b.client().await;
    all_revoked(&cb, &revoked, Duration::from_secs(20)).await;
    eprintln!(
        "B serves every revoked token again {:?} after the kill",
        killed_at.elapsed()
    );
    let more = eventually_revoke_many(&mut ca, &cluster, 30).await;
    looper.add(&more);
    all_revoked(&cb, &more, Duration::from_secs(10)).await;
    let seen = looper.finish();
    eprintln!("{seen:?}");
    assert!(seen.valid_after_bound.is_empty(), "revoked tokens VALID: {seen:?}");
    let m = b.metrics().await;
    assert!(
        metric(&m, "revokd_mirror_resyncs_total{cause=\"role_change\"}").unwrap_or(0.0) >= 1.0,
        "the promoted replica was rescanned"
    );
}

/// [`revoke_many`], retrying while A still refuses (UNAVAILABLE) after a fault.
async fn eventually_revoke_many(a: &mut Client, cluster: &RedisCluster, n: usize) -> Vec<Revoked> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let issued = issue(a, &format!("after-{}", out.len())).await;
        match a.revoke_token(common::rpc::by_token(&issued.token)).await {
            Ok(_) => out.push(Revoked {
                token: issued.token,
                jti: issued.jti,
                acked: Instant::now(),
            }),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(Instant::now() < deadline, "A still refuses revocations: {s:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = cluster;
    out
}

on_every_server!(primary_killed: primary_killed_on_redis, primary_killed_on_valkey);

async fn resharded(mut cluster: RedisCluster) {
    let fourth = cluster.add_primary();
    let (a, b, _keys) = two_instances(&cluster, &[]).await;
    let mut ca = a.client().await;
    let revoked = revoke_many(&mut ca, &cluster, 60).await;
    let looper = VerifyLoop::start(b.client().await, &revoked);

    // Move slots to the 4th primary while B verifies and A keeps revoking.
    let reshard = cluster.reshard(fourth, 800);
    let mut during = Vec::new();
    let mut i = 0;
    while !cluster.reshard_finished(&reshard) {
        let issued = issue(&mut ca, &format!("during-{i}")).await;
        i += 1;
        if ca.revoke_token(common::rpc::by_token(&issued.token)).await.is_ok() {
            let r = Revoked {
                token: issued.token,
                jti: issued.jti,
                acked: Instant::now(),
            };
            looper.add(std::slice::from_ref(&r));
            during.push(r);
        }
    }
    cluster.wait_reshard(reshard);
    let moved = revoked
        .iter()
        .chain(&during)
        .filter(|r| cluster.owner_of_slot(slot_of_key(&format!("revokd:jti:{}", r.jti))) == fourth)
        .count();
    assert!(moved > 0, "some revocations moved to the new primary");
    let cb = b.client().await;
    all_revoked(&cb, &revoked, Duration::from_secs(20)).await;
    all_revoked(&cb, &during, Duration::from_secs(20)).await;
    let seen = looper.finish();
    eprintln!(
        "reshard: {} revocations during it, {moved} moved; {seen:?}",
        during.len()
    );
    assert!(seen.valid_after_bound.is_empty(), "revoked tokens VALID: {seen:?}");
    let m = b.metrics().await;
    assert_eq!(metric(&m, "revokd_store_nodes{role=\"primary\"}"), Some(4.0));
    assert!(metric(&m, "revokd_mirror_resyncs_total{cause=\"slot_change\"}").unwrap_or(0.0) >= 1.0);
}

on_every_server!(resharded: resharded_on_redis, resharded_on_valkey);

/// The primary serving `key`.
fn owner(cluster: &RedisCluster, key: &str) -> u16 {
    cluster.owner_of_slot(slot_of_key(key))
}

async fn one_shard_paused(cluster: RedisCluster) {
    let (a, b, _keys) = two_instances(&cluster, &[]).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let victim = cluster.primaries()[0];
    let revoked = revoke_many(&mut ca, &cluster, 60).await;
    let on = |r: &Revoked, i: usize| {
        owner(&cluster, &format!("revokd:jti:{}", r.jti)) == victim
            || owner(&cluster, &format!("revokd:sub:user-{i}")) == victim
    };
    let healthy: Vec<Revoked> = revoked
        .iter()
        .enumerate()
        .filter(|(i, r)| !on(r, *i))
        .map(|(_, r)| r.clone())
        .take(5)
        .collect();
    let sick: Vec<Revoked> = revoked
        .iter()
        .enumerate()
        .filter(|(i, r)| on(r, *i))
        .map(|(_, r)| r.clone())
        .take(3)
        .collect();
    // Unrevoked tokens whose keys are all on healthy shards.
    let mut valid = Vec::new();
    for i in 0.. {
        let subject = format!("live-{i}");
        if owner(&cluster, &format!("revokd:sub:{subject}")) == victim {
            continue;
        }
        let t = issue(&mut ca, &subject).await;
        if owner(&cluster, &format!("revokd:jti:{}", t.jti)) != victim {
            valid.push(t.token);
        }
        if valid.len() == 3 {
            break;
        }
    }
    assert!(healthy.len() == 5 && !sick.is_empty());

    let lookups = || async { metric(&b.metrics().await, "revokd_mirror_stale_lookups_total").unwrap_or(0.0) };
    let lookups_before = lookups().await;
    // SIGSTOP one primary for less than cluster-node-timeout: the cluster does
    // not fail it over, so only its slots are out.
    cluster.pause(victim);
    let paused = Instant::now();
    let sick_answers = {
        let cb = cb.clone();
        let sick = sick.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for r in &sick {
                out.push(verify(&mut cb.clone(), &r.token).await);
            }
            out
        })
    };
    let mut rounds = 0;
    while paused.elapsed() < Duration::from_millis(400) {
        for r in &healthy {
            assert_eq!(
                verify(&mut cb, &r.token).await,
                Ok(Verdict::Revoked),
                "a revoked token on a healthy shard"
            );
        }
        for t in &valid {
            assert_eq!(
                verify(&mut cb, t).await,
                Ok(Verdict::Valid),
                "a live token on healthy shards"
            );
        }
        rounds += 1;
    }
    let sick_answers = sick_answers.await.unwrap();
    cluster.resume(victim);
    eprintln!("{rounds} rounds on healthy shards while one was paused; its tokens: {sick_answers:?}");
    assert!(rounds >= 1);
    // Trust is per slot: the healthy shards' verifies were answered by the
    // mirror (a few may look up on a loaded machine), the paused one's looked up.
    let healthy_verifies = rounds * (healthy.len() + valid.len());
    let looked_up = lookups().await - lookups_before;
    assert!(
        looked_up < (sick.len() + healthy_verifies / 2) as f64,
        "{looked_up} lookups for {healthy_verifies} verifies on healthy shards"
    );
    for v in &sick_answers {
        assert!(
            matches!(v, Ok(Verdict::Revoked) | Err(Code::Unavailable)),
            "a revoked token on the paused shard answered {v:?}"
        );
    }
    // Back: every revocation enforced.
    all_revoked(&cb, &revoked, Duration::from_secs(10)).await;
}

on_every_server!(one_shard_paused: one_shard_paused_on_redis, one_shard_paused_on_valkey);
