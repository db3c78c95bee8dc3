//! Prometheus metrics (metrics-exporter-prometheus), rendered at `/metrics`.
//!
//! Names follow Prometheus rules: prefix `revokd_`, base units, counters end
//! in `_total`, label values from small fixed sets (verdict, method, code,
//! result, target, op): never a subject, jti or token. Handles are created
//! once so the hot path does no registry lookup.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::tokens::Verdict;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                0.025, 0.05, 0.1, 0.5, 1.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!("revokd_verify_total", "VerifyToken calls by verdict.");
    describe_histogram!(
        "revokd_verify_duration_seconds",
        metrics::Unit::Seconds,
        "Time to reach a verdict (authentication, checks and revocation lookup), in seconds."
    );
    describe_counter!("revokd_issue_total", "IssueToken calls by result.");
    describe_counter!("revokd_revoke_total", "Revocations by target kind and result.");
    describe_counter!("revokd_grpc_requests_total", "gRPC calls by method and status code.");
    describe_counter!(
        "revokd_store_errors_total",
        "Failed revocation store operations by operation."
    );
    describe_gauge!(
        "revokd_store_up",
        "1 when the revocation store answered its last operation, else 0."
    );
    describe_gauge!("revokd_mirror_entries", "Revocations held in the in-process mirror.");
    describe_gauge!("revokd_watch_streams", "Open WatchRevocations streams.");
    describe_counter!(
        "revokd_watch_ends_total",
        "WatchRevocations streams the server ended, by cause (lagged, gap, store, shutdown, closed)."
    );
    describe_gauge!(
        "revokd_mirror_synced",
        "1 when the mirror receives every change under the prefix, else 0."
    );
    describe_gauge!(
        "revokd_mirror_last_resync_timestamp_seconds",
        metrics::Unit::Seconds,
        "Unix time of the mirror's last completed full resync."
    );
    describe_gauge!(
        "revokd_mirror_staleness_seconds",
        metrics::Unit::Seconds,
        "Age of the mirror's last freshness proof (a heartbeat write seen back and every change before it applied), in seconds."
    );
    describe_counter!(
        "revokd_mirror_stale_lookups_total",
        "Verifies answered by a Redis lookup because the mirror was not fresher than --max-staleness."
    );
    describe_counter!(
        "revokd_mirror_resyncs_total",
        "Times a Redis node's part of the mirror was rebuilt (tracking re-armed and the node rescanned), by cause."
    );
    describe_gauge!(
        "revokd_store_nodes",
        "Redis nodes revokd follows, by role (primary or replica)."
    );
    describe_counter!(
        "revokd_redis_data_loss_total",
        "Times Redis was found to have lost its data (restarted empty, flushed): revocations written before are gone."
    );
    describe_counter!(
        "revokd_redis_master_switches_total",
        "Redis master changes reported by Sentinel and followed."
    );
    describe_counter!("revokd_token_cache_hits_total", "Verified-token cache hits.");
    describe_counter!("revokd_token_cache_misses_total", "Verified-token cache misses.");
    describe_counter!(
        "revokd_token_cache_evictions_total",
        "Verified-token cache evictions to make room."
    );
    describe_gauge!("revokd_token_cache_entries", "Tokens held in the verified-token cache.");
    describe_histogram!(
        "revokd_revocation_propagation_seconds",
        metrics::Unit::Seconds,
        "Delay from a revocation being written to Redis to this instance's mirror having it, in seconds."
    );
    describe_counter!(
        "revokd_authz_checks_total",
        "Authorization checks for proxies (Envoy ext_authz, forward-auth) by result (allowed, denied, error) and verdict."
    );
    describe_histogram!(
        "revokd_authz_check_duration_seconds",
        metrics::Unit::Seconds,
        "Time to decide an authorization check for a proxy, in seconds."
    );
    describe_counter!(
        "revokd_oauth_requests_total",
        "Calls of the OAuth endpoints (/revoke, /introspect) by endpoint and result (ok or the OAuth error code)."
    );
    describe_counter!(
        "revokd_legacy_tokens_total",
        "Tokens verified with the legacy key of migration mode, by verdict; 0 for a while: turn migration mode off."
    );
    describe_gauge!("revokd_build_info", "Build information; the value is always 1.");
}

struct Inner {
    verify: Vec<Counter>,
    /// Per verdict, like `verify`: in migration mode most verifies are legacy ones.
    legacy: Vec<Counter>,
    verify_duration: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_entries: Gauge,
    store_up: Gauge,
}

/// Pre-registered metric handles, cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every handle with the installed recorder (no-ops if none is installed).
    pub fn new() -> Self {
        gauge!(
            "revokd_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "git_sha" => crate::GIT_SHA
        )
        .set(1.0);
        Metrics(Arc::new(Inner {
            verify: Verdict::ALL
                .iter()
                .map(|v| counter!("revokd_verify_total", "verdict" => v.as_str()))
                .collect(),
            legacy: Verdict::ALL
                .iter()
                .map(|v| counter!("revokd_legacy_tokens_total", "verdict" => v.as_str()))
                .collect(),
            verify_duration: histogram!("revokd_verify_duration_seconds"),
            cache_hits: counter!("revokd_token_cache_hits_total"),
            cache_misses: counter!("revokd_token_cache_misses_total"),
            cache_evictions: counter!("revokd_token_cache_evictions_total"),
            cache_entries: gauge!("revokd_token_cache_entries"),
            store_up: gauge!("revokd_store_up"),
        }))
    }

    /// One verification finished with `verdict` after `took`.
    pub fn verified(&self, verdict: Verdict, took: Duration) {
        let i = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        self.0.verify[i].increment(1);
        self.0.verify_duration.record(took.as_secs_f64());
    }

    /// An OAuth endpoint call ended with `result` (`ok` or the OAuth error code).
    pub fn oauth(&self, endpoint: &'static str, result: &'static str) {
        counter!("revokd_oauth_requests_total", "endpoint" => endpoint, "result" => result).increment(1);
    }

    /// A legacy token (migration mode) got `verdict`.
    pub fn legacy_verified(&self, verdict: Verdict) {
        let i = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(0);
        self.0.legacy[i].increment(1);
    }

    /// An IssueToken call ended with `result` (`ok`, `invalid_argument`, `error`).
    pub fn issued(&self, result: &'static str) {
        counter!("revokd_issue_total", "result" => result).increment(1);
    }

    /// A revocation of `target` (`token`, `jti`, ...) ended with `result`.
    pub fn revoked(&self, target: &'static str, result: &'static str) {
        counter!("revokd_revoke_total", "target" => target, "result" => result).increment(1);
    }

    /// A gRPC call to `method` ended with `code`.
    pub fn grpc(&self, method: &'static str, code: tonic::Code) {
        counter!("revokd_grpc_requests_total", "method" => method, "code" => code_name(code)).increment(1);
    }

    /// A store operation `op` failed.
    pub fn store_error(&self, op: &'static str) {
        counter!("revokd_store_errors_total", "op" => op).increment(1);
        self.0.store_up.set(0.0);
    }

    /// The store answered.
    pub fn store_ok(&self) {
        self.0.store_up.set(1.0);
    }

    /// Verified-token cache: a hit or a miss.
    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            self.0.cache_hits.increment(1);
        } else {
            self.0.cache_misses.increment(1);
        }
    }

    /// Verified-token cache: `n` entries evicted to make room.
    pub fn cache_evicted(&self, n: u64) {
        self.0.cache_evictions.increment(n);
    }

    /// Verified-token cache size.
    pub fn cache_entries(&self, entries: usize) {
        self.0.cache_entries.set(entries as f64);
    }

    // The mirror's metrics exist only where a mirror runs (so an alert on
    // `revokd_mirror_synced == 0` never fires in `--revocation-check redis`
    // mode); they change a few times a second at most, so no cached handle.

    /// WatchRevocations streams opened (+1) or closed (-1).
    pub fn watch_streams(&self, delta: i64) {
        gauge!("revokd_watch_streams").increment(delta as f64);
    }

    /// The server ended a WatchRevocations stream.
    pub fn watch_ended(&self, cause: &'static str) {
        counter!("revokd_watch_ends_total", "cause" => cause).increment(1);
    }

    /// Mirror size.
    pub fn mirror_entries(&self, n: usize) {
        gauge!("revokd_mirror_entries").set(n as f64);
    }

    /// Mirror sync state.
    pub fn mirror_synced(&self, synced: bool) {
        gauge!("revokd_mirror_synced").set(if synced { 1.0 } else { 0.0 });
    }

    /// A full resync finished at `at_ms` (Unix ms).
    pub fn mirror_resynced(&self, at_ms: i64) {
        gauge!("revokd_mirror_last_resync_timestamp_seconds").set(at_ms as f64 / 1000.0);
    }

    /// The age of the mirror's last freshness proof.
    pub fn mirror_staleness(&self, age: Duration) {
        gauge!("revokd_mirror_staleness_seconds").set(age.as_secs_f64());
    }

    /// Counts a verify the mirror could not answer because it was not fresh enough.
    pub fn mirror_stale_lookup(&self) {
        // Registered on first use: the series exists only where a mirror runs.
        counter!("revokd_mirror_stale_lookups_total").increment(1);
    }

    /// Counts a node's part of the mirror being rebuilt, by why.
    pub fn mirror_resync(&self, cause: &'static str) {
        counter!("revokd_mirror_resyncs_total", "cause" => cause).increment(1);
    }

    /// How many Redis nodes revokd follows, per role.
    pub fn store_nodes(&self, primaries: usize, replicas: usize) {
        gauge!("revokd_store_nodes", "role" => "primary").set(primaries as f64);
        gauge!("revokd_store_nodes", "role" => "replica").set(replicas as f64);
    }

    /// Counts one authorization check for a proxy, and how long it took.
    pub fn authz_check(&self, result: &'static str, verdict: &'static str, took: Duration) {
        counter!("revokd_authz_checks_total", "result" => result, "verdict" => verdict).increment(1);
        histogram!("revokd_authz_check_duration_seconds").record(took.as_secs_f64());
    }

    /// Counts `n` times Redis was found to have lost its data (its marker
    /// key changed); 0 registers the series.
    pub fn redis_data_loss(&self, n: u64) {
        counter!("revokd_redis_data_loss_total").increment(n);
    }

    /// Counts a Sentinel master switch followed.
    pub fn master_switch(&self) {
        counter!("revokd_redis_master_switches_total").increment(1);
    }

    /// A revocation reached the mirror `lag` after it was written.
    pub fn propagation(&self, lag: Duration) {
        histogram!("revokd_revocation_propagation_seconds").record(lag.as_secs_f64());
    }
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
