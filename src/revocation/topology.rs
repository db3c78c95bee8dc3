//! Where Redis is: one node (`redis://`, `rediss://`), a master found
//! through Sentinel (`redis-sentinel://`, `rediss-sentinel://`) or a Redis
//! Cluster reached through seed nodes (`redis-cluster://`, `rediss-cluster://`;
//! the cluster's own layout is followed by [`super::cluster`]), with TLS
//! verified against a CA file or the system roots, and the password from the
//! URL or `REVOKD_REDIS_PASSWORD`. [`RedisTarget`] is parsed once at start
//! (a bad URL is a configuration error, exit 64) and builds every fred client
//! revokd opens; it never prints a password.
//!
//! [`SentinelWatch`] follows a Sentinel failover: it asks every sentinel for
//! the master each heartbeat and moves the clients to the new master at once,
//! instead of waiting for the old one to fail. While the sentinels disagree
//! with the master revokd writes to, revocations are refused (UNAVAILABLE):
//! the old master of a failover still takes writes that the new one will
//! never see.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::clients::SentinelClient;
use fred::interfaces::{ClientLike, SentinelInterface};
use fred::types::Builder as FredBuilder;
use fred::types::config::{
    Config as FredConfig, SentinelConfig, Server, ServerConfig, TlsConfig, TlsConnector, TlsHostMapping,
};

use crate::metrics::Metrics;

/// A Redis deployment revokd talks to, parsed from `--redis-url`.
#[derive(Clone)]
pub struct RedisTarget {
    /// One node, or the sentinels of a master.
    pub nodes: Nodes,
    /// TLS (the `rediss` schemes), with the roots to verify the server against.
    tls: Option<TlsRoots>,
    username: Option<String>,
    password: Option<String>,
    sentinel_password: Option<String>,
    database: Option<u8>,
}

/// Which servers a [`RedisTarget`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// One Redis server.
    Single {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// Seed nodes of a Redis Cluster (any nodes; the rest is discovered).
    Cluster {
        /// Seed `(host, port)` pairs.
        seeds: Vec<(String, u16)>,
    },
    /// The sentinels that know the master of `service`.
    Sentinel {
        /// Sentinel `(host, port)` pairs.
        sentinels: Vec<(String, u16)>,
        /// The monitored master's name (`sentinel monitor <name> ...`).
        service: String,
    },
}

#[derive(Clone)]
enum TlsRoots {
    System,
    CaFile(PathBuf),
}

/// Why `--redis-url` (or a TLS option) cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

fn err(msg: impl Into<String>) -> TargetError {
    TargetError(msg.into())
}

/// Decodes `%XX` escapes (a password may contain `@`, `:` or `/`).
fn percent_decode(s: &str) -> Result<String, TargetError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| err("a bad %-escape in the credentials"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| err("a bad %-escape in the credentials"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err("credentials are not UTF-8"))
}

fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), TargetError> {
    if s.is_empty() {
        return Err(err("a host is missing"));
    }
    // [v6]:port, host:port, host.
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| err(format!("bad host {s:?}")))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| err(format!("bad port in {s:?}")))?,
        None => default_port,
    };
    if host.is_empty() {
        return Err(err(format!("a host is missing in {s:?}")));
    }
    Ok((host.to_owned(), port))
}

/// The schemes `--redis-url` accepts.
const SCHEMES: &str =
    "redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Sentinel,
    Cluster,
}

impl RedisTarget {
    /// Parses `url`. `password` (from `REVOKD_REDIS_PASSWORD`) is used when the
    /// URL carries none; `ca_file` is only valid with a `rediss` scheme.
    pub fn parse(
        url: &str,
        password: Option<&str>,
        sentinel_password: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Self, TargetError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err(format!("expected {SCHEMES}")))?;
        let (tls, kind) = match scheme {
            "redis" => (false, Kind::Single),
            "rediss" => (true, Kind::Single),
            "redis-sentinel" => (false, Kind::Sentinel),
            "rediss-sentinel" => (true, Kind::Sentinel),
            "redis-cluster" => (false, Kind::Cluster),
            "rediss-cluster" => (true, Kind::Cluster),
            other => return Err(err(format!("unknown scheme {other:?}: expected {SCHEMES}"))),
        };
        if rest.contains('?') {
            return Err(err("query parameters are not supported"));
        }
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (username, url_password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(percent_decode(user)?), Some(percent_decode(pass)?)),
                None => (None, Some(percent_decode(u)?)),
            },
        };
        let username = username.filter(|u| !u.is_empty());
        let url_password = url_password.filter(|p| !p.is_empty());
        let (hosts, path) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        let (nodes, database) = if kind == Kind::Cluster {
            if !path.trim_end_matches('/').is_empty() {
                return Err(err(
                    "a Redis Cluster has no databases: redis-cluster://HOST:PORT[,HOST:PORT...]",
                ));
            }
            let seeds = hosts
                .split(',')
                .map(|h| parse_host_port(h, 6379))
                .collect::<Result<Vec<_>, _>>()?;
            (Nodes::Cluster { seeds }, None)
        } else if kind == Kind::Sentinel {
            let sentinels = hosts
                .split(',')
                .map(|h| parse_host_port(h, 26379))
                .collect::<Result<Vec<_>, _>>()?;
            let service = path.trim_end_matches('/');
            if service.is_empty() || service.contains('/') {
                return Err(err(
                    "a Sentinel URL ends with the service name: redis-sentinel://HOST:PORT[,HOST:PORT...]/SERVICE",
                ));
            }
            (
                Nodes::Sentinel {
                    sentinels,
                    service: service.to_owned(),
                },
                None,
            )
        } else {
            if hosts.contains(',') {
                return Err(err(
                    "several hosts need redis-sentinel://HOSTS/SERVICE or redis-cluster://HOSTS",
                ));
            }
            let (host, port) = parse_host_port(hosts, 6379)?;
            let database = match path.trim_end_matches('/') {
                "" => None,
                db => Some(db.parse::<u8>().map_err(|_| err(format!("bad database {db:?}")))?),
            };
            (Nodes::Single { host, port }, database)
        };
        if ca_file.is_some() && !tls {
            return Err(err(
                "--redis-ca-file needs a rediss://, rediss-sentinel:// or rediss-cluster:// URL",
            ));
        }
        let tls = tls.then(|| match ca_file {
            Some(p) => TlsRoots::CaFile(p.to_owned()),
            None => TlsRoots::System,
        });
        let target = RedisTarget {
            nodes,
            tls,
            username,
            password: url_password.or(password.map(str::to_owned)),
            sentinel_password: sentinel_password.map(str::to_owned),
            database,
        };
        // Load the roots now: a rediss:// that cannot do TLS fails at start.
        target.tls_config()?;
        Ok(target)
    }

    /// Whether connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.nodes, Nodes::Cluster { .. })
    }

    /// One node of this deployment (a cluster node the layout names), with
    /// the same credentials and TLS.
    pub fn node(&self, host: &str, port: u16) -> RedisTarget {
        RedisTarget {
            nodes: Nodes::Single {
                host: host.to_owned(),
                port,
            },
            ..self.clone()
        }
    }

    fn tls_config(&self) -> Result<Option<TlsConfig>, TargetError> {
        use fred::rustls::{ClientConfig, RootCertStore};
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let Some(roots) = &self.tls else {
            return Ok(None);
        };
        let mut store = RootCertStore::empty();
        match roots {
            TlsRoots::CaFile(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| err(format!("--redis-ca-file {}: {e}", path.display())))?;
                for cert in certs {
                    let cert = cert.map_err(|e| err(format!("--redis-ca-file {}: {e}", path.display())))?;
                    store
                        .add(cert)
                        .map_err(|e| err(format!("--redis-ca-file {}: {e}", path.display())))?;
                }
                if store.is_empty() {
                    return Err(err(format!("--redis-ca-file {}: no certificate in it", path.display())));
                }
            }
            TlsRoots::System => {
                let found = fred::rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = store.add(cert);
                }
                if store.is_empty() {
                    return Err(err(
                        "rediss://: no system root certificates found; pass --redis-ca-file with the CA that signed Redis' certificate",
                    ));
                }
            }
        }
        let config = ClientConfig::builder()
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Some(TlsConfig {
            connector: TlsConnector::from(config),
            // The host name of the URL (or the address a sentinel reports) is the SNI name and what the
            // certificate must name.
            hostnames: TlsHostMapping::None,
        }))
    }

    /// The fred configuration of a client of this deployment.
    pub fn fred_config(&self) -> Result<FredConfig, TargetError> {
        let server = match &self.nodes {
            Nodes::Single { host, port } => ServerConfig::new_centralized(host.as_str(), *port),
            Nodes::Cluster { seeds } => ServerConfig::new_clustered(seeds.clone()),
            Nodes::Sentinel { sentinels, service } => ServerConfig::Sentinel {
                hosts: sentinels.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect(),
                service_name: service.clone(),
                username: None,
                password: self.sentinel_password.clone(),
            },
        };
        Ok(FredConfig {
            server,
            username: self.username.clone(),
            password: self.password.clone(),
            database: self.database,
            tls: self.tls_config()?,
            ..FredConfig::default()
        })
    }
}

/// The URL with the password masked, for logs.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (&self.nodes, self.tls.is_some()) {
            (Nodes::Single { .. }, false) => "redis",
            (Nodes::Single { .. }, true) => "rediss",
            (Nodes::Sentinel { .. }, false) => "redis-sentinel",
            (Nodes::Sentinel { .. }, true) => "rediss-sentinel",
            (Nodes::Cluster { .. }, false) => "redis-cluster",
            (Nodes::Cluster { .. }, true) => "rediss-cluster",
        };
        write!(f, "{scheme}://")?;
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => write!(f, ":***@")?,
            (None, None) => {}
        }
        match &self.nodes {
            Nodes::Single { host, port } => {
                write!(f, "{host}:{port}")?;
                if let Some(db) = self.database {
                    write!(f, "/{db}")?;
                }
                Ok(())
            }
            Nodes::Sentinel { sentinels, service } => {
                let hosts: Vec<String> = sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(f, "{}/{service}", hosts.join(","))
            }
            Nodes::Cluster { seeds } => {
                let hosts: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(f, "{}", hosts.join(","))
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether revocation writes may go to the master the clients are on. Shared
/// by the [`SentinelWatch`] (which closes it while a failover is under way)
/// and the store (which refuses writes while it is closed).
#[derive(Debug, Default)]
pub struct WriteGate {
    closed: AtomicBool,
}

impl WriteGate {
    /// Whether writes are allowed now.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    fn set_open(&self, open: bool) {
        self.closed.store(!open, Ordering::SeqCst);
    }
}

/// Follows the master of a Sentinel deployment and moves `clients` to it.
#[derive(Debug)]
pub struct SentinelWatch {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for SentinelWatch {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// After a switch has been asked for, how long before asking again.
const RECONNECT_AGAIN_AFTER: Duration = Duration::from_millis(200);
/// How long one sentinel disagreeing on its own closes the write gate.
const LONE_DISSENT_LIMIT: Duration = Duration::from_secs(5);

impl SentinelWatch {
    /// Starts polling every sentinel of `target` each `interval`; `clients`
    /// are the fred clients that must follow the master (they reconnect
    /// through the sentinels when told to).
    pub fn start(
        target: &RedisTarget,
        clients: Vec<fred::clients::Client>,
        gate: Arc<WriteGate>,
        interval: Duration,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Option<Self>, TargetError> {
        let Nodes::Sentinel { sentinels, service } = &target.nodes else {
            return Ok(None);
        };
        let tls = target.tls_config()?;
        let mut watchers = Vec::with_capacity(sentinels.len());
        for (host, port) in sentinels {
            let config = SentinelConfig {
                host: host.clone(),
                port: *port,
                username: None,
                password: target.sentinel_password.clone(),
                tls: tls.clone(),
            };
            let mut builder = FredBuilder::default_centralized();
            builder
                .set_sentinel_config(config)
                .with_connection_config(|c| {
                    c.connection_timeout = timeout;
                    c.internal_command_timeout = timeout;
                    c.max_command_attempts = 1;
                })
                .with_performance_config(|p| p.default_command_timeout = timeout)
                .set_policy(fred::types::config::ReconnectPolicy::new_exponential(0, 20, 250, 2));
            let client = builder
                .build_sentinel_client()
                .map_err(|e| err(format!("sentinel {host}:{port}: {e}")))?;
            let _task = client.connect();
            watchers.push(client);
        }
        let service = service.clone();
        let handle = tokio::spawn(watch(watchers, service, clients, gate, interval, metrics));
        Ok(Some(SentinelWatch { handle }))
    }
}

async fn ask(sentinel: &SentinelClient, service: &str) -> Option<(String, u16)> {
    if !sentinel.is_connected() {
        return None;
    }
    let reply: Result<Option<(String, u16)>, _> = sentinel.get_master_addr_by_name(service).await;
    reply.ok().flatten()
}

async fn watch(
    sentinels: Vec<SentinelClient>,
    service: String,
    clients: Vec<fred::clients::Client>,
    gate: Arc<WriteGate>,
    interval: Duration,
    metrics: Metrics,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked_at: Option<Instant> = None;
    let mut dissent_since: Option<Instant> = None;
    let mut last_target: Option<(String, u16)> = None;
    loop {
        tick.tick().await;
        let answers = ask_all(&sentinels, &service).await;
        // The clients' current server; a client between connections has none.
        let on: Vec<Option<(String, u16)>> = clients
            .iter()
            .map(|c| c.active_connections().first().map(|s| (s.host.to_string(), s.port)))
            .collect();
        // The master a majority of the configured sentinels reports.
        let quorum = sentinels.len() / 2 + 1;
        let majority = answers
            .iter()
            .find(|a| answers.iter().filter(|b| b == a).count() >= quorum)
            .cloned();
        let dissent = on
            .iter()
            .any(|o| o.as_ref().is_some_and(|o| answers.iter().any(|a| a != o)));
        let now = Instant::now();
        dissent_since = if dissent { dissent_since.or(Some(now)) } else { None };
        let behind = match &majority {
            Some(m) => on.iter().any(|o| o.as_ref() != Some(m)),
            None => false,
        };
        // Writes stop while the majority points elsewhere, and while any sentinel
        // does (a failover's leader reports the promoted replica before the others).
        let lone_dissent_fresh = dissent_since.is_some_and(|t| now - t < LONE_DISSENT_LIMIT);
        gate.set_open(!(behind || lone_dissent_fresh));
        if behind
            && let Some(m) = &majority
            && asked_at.is_none_or(|t| now - t >= RECONNECT_AGAIN_AFTER)
        {
            if last_target.as_ref() != Some(m) {
                metrics.master_switch();
                tracing::warn!(master = %format!("{}:{}", m.0, m.1), "sentinels report a new redis master; moving to it");
                last_target = Some(m.clone());
            }
            asked_at = Some(now);
            for c in &clients {
                let c = c.clone();
                tokio::spawn(async move {
                    let _ = c.force_reconnection().await;
                });
            }
        }
        if !behind {
            asked_at = None;
            if last_target.is_none() {
                last_target = majority;
            }
        }
    }
}

/// Asks every sentinel at once; the answers of those that replied.
async fn ask_all(sentinels: &[SentinelClient], service: &str) -> Vec<(String, u16)> {
    let mut set = tokio::task::JoinSet::new();
    for s in sentinels {
        let (s, service) = (s.clone(), service.to_owned());
        set.spawn(async move { ask(&s, &service).await });
    }
    let mut answers = Vec::with_capacity(sentinels.len());
    while let Some(r) = set.join_next().await {
        if let Ok(Some(a)) = r {
            answers.push(a);
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_sentinel_urls() {
        let t = RedisTarget::parse("redis://:s3cr%40t@10.0.0.1:6380/2", None, None, None).unwrap();
        assert_eq!(
            t.nodes,
            Nodes::Single {
                host: "10.0.0.1".into(),
                port: 6380
            }
        );
        assert_eq!(t.password.as_deref(), Some("s3cr@t"));
        assert_eq!(t.database, Some(2));
        assert_eq!(t.to_string(), "redis://:***@10.0.0.1:6380/2");

        let t = RedisTarget::parse(
            "redis-sentinel://a:26379,b,[::1]:26380/mymaster",
            Some("pw"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.nodes,
            Nodes::Sentinel {
                sentinels: vec![("a".into(), 26379), ("b".into(), 26379), ("::1".into(), 26380)],
                service: "mymaster".into()
            }
        );
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert!(!t.to_string().contains("pw"));

        let t = RedisTarget::parse("rediss-cluster://:pw@n1:7000,n2", None, None, None);
        // No system roots in every test environment: only the shape matters here.
        if let Ok(t) = t {
            assert!(t.is_cluster());
            assert_eq!(t.to_string(), "rediss-cluster://:***@n1:7000,n2:6379");
        }
        let t = RedisTarget::parse("redis-cluster://n1:7000,n2:7001/", None, None, None).unwrap();
        assert_eq!(
            t.nodes,
            Nodes::Cluster {
                seeds: vec![("n1".into(), 7000), ("n2".into(), 7001)]
            }
        );
        assert_eq!(
            t.node("10.0.0.9", 7005).to_string(),
            "redis://10.0.0.9:7005",
            "a node of the cluster, same credentials"
        );
    }

    #[test]
    fn url_password_wins_over_the_environment() {
        let t = RedisTarget::parse("redis://user:fromurl@h", Some("fromenv"), None, None).unwrap();
        assert_eq!(t.password.as_deref(), Some("fromurl"));
        assert_eq!(t.username.as_deref(), Some("user"));
        assert_eq!(t.to_string(), "redis://user:***@h:6379");
    }

    #[test]
    fn rejects_what_cannot_work() {
        for bad in [
            "http://h",
            "h:6379",
            "redis-sentinel://a:1,b:2",
            "redis-sentinel://a:1/",
            "redis://a,b",
            "redis://h:notaport",
            "redis://h/x",
            "redis://h?db=1",
            "redis-cluster://a:1/0",
            "redis-cluster://",
        ] {
            assert!(RedisTarget::parse(bad, None, None, None).is_err(), "{bad} accepted");
        }
        let e = RedisTarget::parse("redis://h", None, None, Some(Path::new("/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        let e = RedisTarget::parse("rediss://h", None, None, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("--redis-ca-file"), "{e}");
    }
}
