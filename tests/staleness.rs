//! The mirror's staleness bound under the faults that used to break it: a
//! silent network partition between one instance and Redis, and a burst of
//! revocation keys written by another client. Two real revokd processes on
//! one real Redis; a token revoked on A must never be VALID on B for a verify
//! sent later than `--max-staleness` after A acknowledged the revocation.

mod common;

use std::time::{Duration, Instant};

use common::rpc::{Client, eventually_verify, issue_token, revoke, verify};
use common::{RedisServer, RevokdProcess, TcpProxy, eventually, keys_dir, metric, serve_args};
use revokd::proto::v1::Verdict;

const MAX_STALENESS: Duration = Duration::from_millis(100);

/// The staleness bound under test, and a store timeout short enough to fail closed within the tests.
const FAULT_ARGS: &[&str] = &["--max-staleness", "100ms", "--store-timeout", "300ms"];

/// Waits until the instance's mirror is synced and proven fresh.
async fn wait_fresh(p: &RevokdProcess) {
    wait_fresh_within(p, Duration::from_secs(10)).await
}

async fn wait_fresh_within(p: &RevokdProcess, deadline: Duration) {
    eventually(deadline, "mirror synced", || async {
        metric(&p.metrics().await, "revokd_mirror_synced") == Some(1.0)
    })
    .await;
    eventually(deadline, "mirror fresh", || async {
        metric(&p.metrics().await, "revokd_mirror_staleness_seconds").is_some_and(|s| s < MAX_STALENESS.as_secs_f64())
    })
    .await;
}

/// What B answered for the revoked token, by when the verify was sent.
#[derive(Debug, Default)]
struct Observed {
    valid_sent_after_bound: Vec<Duration>,
    /// The latest send time (after the ack) of a VALID answer.
    last_valid: Option<Duration>,
    revoked: usize,
    unavailable: usize,
    valid: usize,
}

/// Verifies `token` on `c` in a loop for `how_long`, classifying each answer
/// by when its request was sent relative to `acked`.
async fn watch(c: &mut Client, token: &str, acked: Instant, how_long: Duration) -> Observed {
    let mut o = Observed::default();
    while acked.elapsed() < how_long {
        let sent = Instant::now();
        let since_ack = sent.saturating_duration_since(acked);
        match verify(c, token).await {
            Ok(Verdict::Valid) => {
                o.valid += 1;
                o.last_valid = Some(since_ack);
                if since_ack > MAX_STALENESS {
                    o.valid_sent_after_bound.push(since_ack);
                }
            }
            Ok(Verdict::Revoked) => o.revoked += 1,
            Ok(other) => panic!("unexpected verdict {other:?}"),
            Err(code) => {
                assert_eq!(code, tonic::Code::Unavailable);
                o.unavailable += 1;
            }
        }
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partition_never_answers_valid_beyond_the_bound() {
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let proxy = TcpProxy::start(redis.port).await;
    let proxy_url = proxy.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, FAULT_ARGS));
    let b = RevokdProcess::spawn(&serve_args(&keys, &proxy_url, FAULT_ARGS));
    wait_fresh(&a).await;
    wait_fresh(&b).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let token = issue_token(&mut ca, "alice").await;
    assert_eq!(verify(&mut cb, &token).await, Ok(Verdict::Valid));

    // The link goes quiet without closing: no error, no reconnect, nothing.
    proxy.silence();
    revoke(&mut ca, &token).await;
    let acked = Instant::now();
    let o = watch(&mut cb, &token, acked, Duration::from_secs(2)).await;
    eprintln!("silent partition: {o:?}");
    assert!(
        o.valid_sent_after_bound.is_empty(),
        "VALID for a revoked token on verifies sent {:?} after the acknowledgement (bound {MAX_STALENESS:?})",
        o.valid_sent_after_bound
    );
    // Without Redis, B cannot prove anything: it fails closed.
    assert!(o.unavailable > 0, "B kept answering through a silent partition: {o:?}");
    let stale = metric(&b.metrics().await, "revokd_mirror_staleness_seconds").unwrap();
    assert!(stale > MAX_STALENESS.as_secs_f64(), "staleness gauge {stale}");
    assert!(metric(&b.metrics().await, "revokd_mirror_stale_lookups_total").unwrap_or(0.0) > 0.0);

    // Service back after the fault, with the revocation enforced.
    proxy.unsilence();
    eventually_verify(
        Duration::from_secs(15),
        "B enforces the revocation again",
        &cb,
        &token,
        Ok(Verdict::Revoked),
    )
    .await;
    wait_fresh(&b).await;
    let fresh_token = issue_token(&mut ca, "alice").await;
    assert_eq!(verify(&mut cb, &fresh_token).await, Ok(Verdict::Valid));
}

/// Writes `n` revocation-shaped keys with `redis-cli --pipe` in the background.
fn burst(redis: &RedisServer, n: usize) -> std::process::Child {
    use std::io::Write;
    let mut payload = Vec::with_capacity(n * 80);
    for i in 0..n {
        let key = format!("revokd:jti:burst-{i}");
        write!(
            payload,
            "*5\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n$2\r\nEX\r\n$3\r\n600\r\n",
            key.len()
        )
        .unwrap();
    }
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    child
}

fn dbsize(redis: &RedisServer) -> usize {
    redis
        .cmd(&["DBSIZE"])
        .and_then(|r| r.trim_start_matches(':').parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_revocations_never_hides_one_beyond_the_bound() {
    const BURST: usize = 500_000;
    let redis = RedisServer::start();
    let keys = keys_dir();
    let url = redis.url();
    let a = RevokdProcess::spawn(&serve_args(&keys, &url, FAULT_ARGS));
    let b = RevokdProcess::spawn(&serve_args(&keys, &url, FAULT_ARGS));
    wait_fresh(&a).await;
    wait_fresh(&b).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let token = issue_token(&mut ca, "alice").await;
    assert_eq!(verify(&mut cb, &token).await, Ok(Verdict::Valid));

    let mut writer = burst(&redis, BURST);
    // Revoke while the burst is under way, so its invalidation queues behind thousands.
    eventually(Duration::from_secs(30), "the burst under way", || async {
        dbsize(&redis) > 20_000
    })
    .await;
    revoke(&mut ca, &token).await;
    let acked = Instant::now();
    let o = watch(&mut cb, &token, acked, Duration::from_secs(3)).await;
    eprintln!("burst: {o:?}");
    assert!(
        o.valid_sent_after_bound.is_empty(),
        "VALID for a revoked token on verifies sent {:?} after the acknowledgement (bound {MAX_STALENESS:?})",
        o.valid_sent_after_bound
    );
    assert!(writer.wait().unwrap().success());
    assert!(dbsize(&redis) >= BURST);
    // B catches up and is fresh again, and every burst key is enforced.
    let started = Instant::now();
    wait_fresh_within(&b, Duration::from_secs(120)).await;
    eprintln!("burst: B fresh again {:?} after the burst ended", started.elapsed());
    assert_eq!(verify(&mut cb, &token).await, Ok(Verdict::Revoked));
    assert!(metric(&b.metrics().await, "revokd_mirror_entries").unwrap() >= BURST as f64);
}
