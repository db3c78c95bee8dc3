//! Startup and shutdown: build the parts from the configuration, bind both
//! listeners, serve gRPC (TokenService, health, reflection) and admin HTTP
//! until the shutdown future completes, then drain within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fred::interfaces::ClientLike;
use tokio::net::TcpListener;

use crate::admin::{self, AdminState};
use crate::authority::TokenAuthority;
use crate::authz::Authorizer;
use crate::cache::VerifiedTokenCache;
use crate::callers::{CallerPolicy, Registries, Registry};
use crate::config::{ConfigError, ListenAddr, RevocationCheck, ServeConfig};
use crate::error::StoreError;
use crate::ext_authz::{AuthorizationServer, ExtAuthz};
use crate::http_serve::{Caps, Limits, capped_incoming};
use crate::keys::{KeyError, KeyRing};
use crate::metrics::Metrics;
use crate::proto::v1::token_service_server::TokenServiceServer;
use crate::revocation::RevocationStore;
use crate::revocation::cluster::ClusterWatch;
use crate::revocation::memory::MemoryStore;
use crate::revocation::mirror::{
    AllNodes, ClusterMirror, MirrorSync, MirroredStore, RevocationMirror, Shared, SyncTasks,
};
use crate::revocation::redis::RedisStore;
use crate::revocation::topology::{RedisTarget, SentinelWatch};
use crate::service::TokenGrpcService;
use crate::tokens::{IssuePolicy, Legacy, TokenIssuer, TokenVerifier, VerifyPolicy};
use crate::watch::Watches;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A Unix socket could not be bound.
    #[error("cannot listen on unix:{}: {source}", path.display())]
    BindUnix {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Keys could not be loaded.
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// The clients file could not be loaded.
    #[error("clients: {0}")]
    Clients(String),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The configuration cannot work.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The Redis clients could not be built.
    #[error("redis: {0}")]
    Store(#[from] StoreError),
    /// A server failed while running.
    #[error("{0}")]
    Serve(String),
}

/// The key ring from `--keys-dir` (or an ephemeral key), and the directory's
/// fingerprint at load time, for the watcher to start from.
fn load_keys(config: &ServeConfig) -> Result<(Arc<ArcSwap<KeyRing>>, Option<u64>), StartError> {
    let fingerprint = config
        .keys_dir
        .as_deref()
        .and_then(|d| crate::keys::fingerprint(d).ok());
    let ring = match &config.keys_dir {
        Some(dir) => KeyRing::load_dir(dir, config.signing_kid.as_deref())?,
        None => {
            let ring = KeyRing::ephemeral()?;
            tracing::warn!(
                kid = %ring.signing().kid,
                "no --keys-dir: signing with an ephemeral Ed25519 key; its tokens die with this process"
            );
            ring
        }
    };
    tracing::info!(keys = ?ring, "keys loaded");
    Ok((Arc::new(ArcSwap::from_pointee(ring)), fingerprint))
}

/// The revocation store: Redis (with its background tasks) or memory.
async fn connect_store(
    config: &ServeConfig,
    target: Option<&RedisTarget>,
    metrics: &Metrics,
) -> Result<(Arc<dyn RevocationStore>, Background), StartError> {
    match target {
        Some(target) => connect_redis(config, target, metrics).await,
        None => {
            tracing::warn!(
                "no --redis-url: revocations are kept in this process only, neither shared with other replicas nor durable"
            );
            metrics.store_ok();
            Ok((MemoryStore::start(Duration::from_secs(1)), Background::default()))
        }
    }
}

/// Issuer, verifier and cache over the key ring, and the store.
fn build_authority(
    config: &ServeConfig,
    keys: &Arc<ArcSwap<KeyRing>>,
    store: Arc<dyn RevocationStore>,
    legacy: Option<Legacy>,
    metrics: &Metrics,
) -> TokenAuthority {
    let issuer = TokenIssuer::new(
        keys.clone(),
        IssuePolicy {
            issuer: config.issuer.clone(),
            default_ttl: config.default_ttl,
            max_ttl: config.max_ttl,
            refresh_ttl: config.refresh_ttl,
            max_token_bytes: config.max_token_bytes,
        },
    );
    let verifier = TokenVerifier::new(
        keys.clone(),
        VerifyPolicy {
            issuer: config.issuer.clone(),
            leeway: config.leeway,
            max_token_bytes: config.max_token_bytes,
            max_lifetime: config.max_ttl.max(config.refresh_ttl),
        },
    )
    .with_legacy(legacy);
    let cache = VerifiedTokenCache::new(config.token_cache_size, metrics.clone());
    TokenAuthority::new(issuer, verifier, store, cache, metrics.clone(), config.refresh_grace)
        .with_legacy_blocklist(config.legacy.legacy_blocklist_key.clone())
}

/// The registered callers from `--clients-file`, if given.
fn load_callers(config: &ServeConfig) -> Result<Registries, StartError> {
    let registry = match &config.clients_file {
        Some(path) => {
            let registry = Registry::load(path).map_err(StartError::Clients)?;
            tracing::info!(
                clients = registry.len(),
                require_caller_auth = config.require_caller_auth,
                "callers loaded"
            );
            Some(Arc::new(registry))
        }
        None => None,
    };
    Ok(Arc::new(ArcSwap::from_pointee(registry)))
}

/// How a listener on `addr` treats callers: without credentials only on
/// loopback, unless `--require-caller-auth`.
fn caller_policy(config: &ServeConfig, callers: &Registries, local: bool) -> CallerPolicy {
    CallerPolicy::new(callers.clone(), local && !config.require_caller_auth)
}

/// The gRPC API's listener.
#[derive(Debug)]
enum GrpcListener {
    Tcp(TcpListener),
    /// A Unix domain socket, and its path (removed at exit).
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// Binds a Unix domain socket at `path`, replacing a stale socket left by a
/// previous run (never any other kind of file).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, StartError> {
    use std::os::unix::fs::FileTypeExt;
    let failed = |source| StartError::BindUnix {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path).map_err(failed)?;
    }
    tokio::net::UnixListener::bind(path).map_err(failed)
}

/// Migration mode's key and issuer, when `--legacy-key-file` is given.
fn load_legacy(config: &ServeConfig) -> Result<Option<Legacy>, StartError> {
    let Some(path) = &config.legacy.legacy_key_file else {
        return Ok(None);
    };
    let key = crate::keys::load_legacy_key(path, config.legacy.legacy_alg.algorithm())?;
    let issuer = config.legacy.legacy_issuer.clone().unwrap_or_default();
    tracing::warn!(
        alg = crate::keys::alg_name(key.alg),
        issuer = %issuer,
        blocklist = config.legacy.legacy_blocklist_key.as_deref().unwrap_or(""),
        "migration mode: tokens without a kid are verified with the legacy key (watch revokd_legacy_tokens_total)"
    );
    Ok(Some(Legacy { key, issuer }))
}

async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Connects the Redis store, and the mirror and Sentinel watch when configured.
async fn connect_redis(
    config: &ServeConfig,
    target: &RedisTarget,
    metrics: &Metrics,
) -> Result<(Arc<dyn RevocationStore>, Background), StartError> {
    tracing::info!(redis = %target, min_replica_acks = config.min_replica_acks, "connecting to redis");
    let redis = RedisStore::connect(
        target,
        &config.key_prefix,
        config.store_timeout,
        config.min_replica_acks,
        metrics.clone(),
    )
    .await?;
    let mut clients = redis.clients();
    let gate = redis.write_gate();
    let mut background = Background::default();
    // Layout polls and heartbeats share one period.
    let heartbeat_every = (config.max_staleness / 5).max(Duration::from_millis(20));
    if target.is_cluster() {
        let reader = crate::revocation::redis::client(target, config.store_timeout, 64, |_| {})?;
        let _task = reader.connect();
        let _ = tokio::time::timeout(config.store_timeout, reader.wait_for_connect()).await;
        clients.push(reader.clone());
        let watch = ClusterWatch::start(
            redis.reader(),
            clients,
            target.uses_tls(),
            heartbeat_every,
            metrics.clone(),
        );
        let store: Arc<dyn RevocationStore> = match config.revocation_check {
            RevocationCheck::Redis => redis,
            RevocationCheck::Mirror => {
                let mirror = Arc::new(RevocationMirror::new());
                let shared = Shared::new(
                    mirror.clone(),
                    &config.key_prefix,
                    config.store_timeout,
                    config.max_staleness,
                    metrics.clone(),
                );
                let (cluster, tasks) =
                    ClusterMirror::start(target, shared, reader, mirror.clone(), watch.layouts(), metrics.clone());
                background.mirror = Some(tasks);
                Arc::new(MirroredStore::new(
                    redis,
                    mirror,
                    cluster,
                    config.max_staleness,
                    metrics.clone(),
                ))
            }
        };
        background.cluster = Some(watch);
        return Ok((store, background));
    }
    metrics.store_nodes(1, 0);
    let store: Arc<dyn RevocationStore> = match config.revocation_check {
        RevocationCheck::Redis => redis,
        RevocationCheck::Mirror => {
            let mirror = Arc::new(RevocationMirror::new());
            let (sync, tasks) = MirrorSync::start(
                target,
                &config.key_prefix,
                config.store_timeout,
                config.max_staleness,
                mirror.clone(),
                metrics.clone(),
            )?;
            clients.push(sync.client());
            background.mirror = Some(tasks);
            Arc::new(MirroredStore::new(
                redis,
                mirror,
                Arc::new(AllNodes(vec![sync.node()])),
                config.max_staleness,
                metrics.clone(),
            ))
        }
    };
    background.sentinel = SentinelWatch::start(
        target,
        clients,
        gate,
        heartbeat_every,
        config.store_timeout,
        metrics.clone(),
    )
    .map_err(|e| StartError::Serve(format!("sentinel watch: {e}")))?;
    Ok((store, background))
}

/// The gRPC server settings of both gRPC listeners: bounded streams per
/// connection and header lists, HTTP/2 keepalive pings (a peer that
/// vanished without closing is dropped), TCP keepalive. Messages are capped
/// at tonic's 4 MiB decoding limit (a 10 MiB request is refused).
fn grpc_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(256))
        .http2_max_header_list_size(Some(16 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
}

/// A server with its listeners bound, ready to [`Server::run`].
pub struct Server {
    config: ServeConfig,
    grpc: GrpcListener,
    admin: TcpListener,
    http: TcpListener,
    /// `--authz-addr`: ext_authz Check and health only.
    authz: Option<TcpListener>,
    authority: Arc<TokenAuthority>,
    store: Arc<dyn RevocationStore>,
    keys: Arc<ArcSwap<KeyRing>>,
    keys_fingerprint: Option<u64>,
    /// The registered callers (`--clients-file`), if any.
    callers: Registries,
    /// TLS for the gRPC and HTTP API listeners (`--tls-cert`).
    tls: Option<crate::tls::ServerTls>,
    metrics: Metrics,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    /// What runs beside the listeners (mirror sync, Sentinel watch); dropped, they stop.
    _background: Background,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("grpc", &self.grpc_listen_addr().to_string())
            .field("admin", &self.admin.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// The background tasks of the store, owned by the [`Server`].
#[derive(Debug, Default)]
struct Background {
    mirror: Option<SyncTasks>,
    sentinel: Option<SentinelWatch>,
    cluster: Option<ClusterWatch>,
}

impl Server {
    /// Validates the configuration, loads keys, connects the store, builds the
    /// authority and binds both listeners.
    pub async fn bind(config: ServeConfig) -> Result<Self, StartError> {
        let target = config.validate()?;
        let (keys, keys_fingerprint) = load_keys(&config)?;
        let legacy = load_legacy(&config)?;
        let callers = load_callers(&config)?;
        let tls = match config.tls_files() {
            Some(files) => Some(crate::tls::ServerTls::load(files).map_err(StartError::Tls)?),
            None => None,
        };
        let prometheus = crate::metrics::install();
        let metrics = Metrics::new();
        let (store, background) = connect_store(&config, target.as_ref(), &metrics).await?;
        let authority = Arc::new(build_authority(&config, &keys, store.clone(), legacy, &metrics));
        let grpc = match &config.grpc_addr {
            ListenAddr::Tcp(addr) => GrpcListener::Tcp(bind_listener(*addr).await?),
            ListenAddr::Unix(path) => GrpcListener::Unix(bind_unix(path)?, path.clone()),
        };
        let admin = bind_listener(config.admin_addr).await?;
        let http = bind_listener(config.http_addr).await?;
        let authz = match config.authz_addr {
            Some(addr) => Some(bind_listener(addr).await?),
            None => None,
        };
        Ok(Server {
            config,
            grpc,
            admin,
            http,
            authz,
            authority,
            store,
            keys,
            keys_fingerprint,
            callers,
            tls,
            metrics,
            prometheus,
            _background: background,
        })
    }

    /// The bound gRPC address (useful with port 0). Panics when the gRPC API
    /// listens on a Unix socket ([`Server::grpc_listen_addr`] then).
    pub fn grpc_addr(&self) -> SocketAddr {
        match &self.grpc {
            GrpcListener::Tcp(l) => l.local_addr().expect("bound listener has an address"),
            GrpcListener::Unix(_, path) => panic!("the gRPC API listens on unix:{}", path.display()),
        }
    }

    /// Where the gRPC API listens: the bound TCP address, or its Unix socket.
    pub fn grpc_listen_addr(&self) -> ListenAddr {
        match &self.grpc {
            GrpcListener::Tcp(l) => ListenAddr::Tcp(l.local_addr().expect("bound listener has an address")),
            GrpcListener::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener has an address")
    }

    /// The bound HTTP API address (forward-auth).
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener has an address")
    }

    /// The bound ext_authz-only gRPC address, if configured.
    pub fn authz_addr(&self) -> Option<SocketAddr> {
        self.authz
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, stops
    /// accepting, and lets in-flight calls finish within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let grpc_addr = self.grpc_listen_addr();
        let admin_addr = self.admin_addr();
        let http_addr = self.http_addr();
        let authz_addr = self.authz_addr();
        let grace = self.config.shutdown_grace;
        let authorizer = Authorizer::new(self.authority.clone(), self.metrics.clone());
        let fd_limit = crate::http_serve::fd_limit();
        let caps = Caps::for_fd_limit(fd_limit);
        tracing::debug!(fd_limit, ?caps, "connection caps");

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<TokenServiceServer<TokenGrpcService>>().await;
        health.set_serving::<AuthorizationServer<ExtAuthz>>().await;
        // Reflection v1, and v1alpha for grpcurl before 1.9 and Python's reflection client.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e| StartError::Serve(format!("reflection: {e}"));
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;

        // One shutdown signal fans out to both servers.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let authz_health = health_service.clone();
        let grpc_server = grpc_builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(TokenServiceServer::new(TokenGrpcService::new(
                self.authority.clone(),
                self.metrics.clone(),
                caller_policy(&self.config, &self.callers, grpc_addr.is_local()),
                Watches::new(
                    &self.authority,
                    self.config.max_staleness,
                    stop_rx.clone(),
                    self.metrics.clone(),
                ),
            )))
            .add_service(AuthorizationServer::new(ExtAuthz::new(authorizer.clone())));
        let mut socket_path = None;
        let grpc_server: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match self.grpc {
                // Capped, and Nagle off: small unary replies must not wait.
                GrpcListener::Tcp(listener) => {
                    match &self.tls {
                        Some(tls) => Box::pin(grpc_server.serve_with_incoming_shutdown(
                            crate::tls::tls_incoming(listener, caps.grpc, tls.grpc.clone(), Duration::from_secs(5)),
                            stopped(stop_rx.clone()),
                        )),
                        None => Box::pin(grpc_server.serve_with_incoming_shutdown(
                            capped_incoming(listener, caps.grpc),
                            stopped(stop_rx.clone()),
                        )),
                    }
                }
                GrpcListener::Unix(listener, path) => {
                    socket_path = Some(path);
                    Box::pin(grpc_server.serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        stopped(stop_rx.clone()),
                    ))
                }
            };
        // Check and health only: what a proxy outside the pod may reach.
        let authz_server = self.authz.map(|listener| {
            grpc_builder()
                .add_service(authz_health)
                .add_service(AuthorizationServer::new(ExtAuthz::new(authorizer.clone())))
                .serve_with_incoming_shutdown(capped_incoming(listener, caps.grpc), stopped(stop_rx.clone()))
        });
        let http_server = crate::http_serve::serve(
            self.http,
            crate::http_api::router(
                authorizer.clone(),
                self.authority.clone(),
                caller_policy(&self.config, &self.callers, http_addr.ip().is_loopback()),
            ),
            Limits::api(caps),
            self.tls.as_ref().map(|tls| tls.http.clone()),
            stopped(stop_rx.clone()),
        );
        let admin_router = admin::router(AdminState {
            store: self.store.clone(),
            keys: self.keys.clone(),
            metrics: self.metrics.clone(),
            prometheus: self.prometheus.clone(),
        });
        let admin_server = crate::http_serve::serve(
            self.admin,
            admin_router,
            Limits::admin(caps),
            None,
            stopped(stop_rx.clone()),
        );

        let watcher = match &self.config.keys_dir {
            Some(dir) if !self.config.keys_reload_interval.is_zero() => {
                let authority = self.authority.clone();
                Some(crate::keys::watch(
                    dir.clone(),
                    self.config.signing_kid.clone(),
                    self.keys.clone(),
                    self.config.keys_reload_interval,
                    self.keys_fingerprint,
                    move |_| authority.cache().clear(),
                ))
            }
            _ => None,
        };
        let tls_watcher = match &self.tls {
            Some(tls) if !self.config.keys_reload_interval.is_zero() => {
                Some(tls.watch(self.config.keys_reload_interval))
            }
            _ => None,
        };
        let callers_watcher = match &self.config.clients_file {
            Some(path) if !self.config.keys_reload_interval.is_zero() => Some(crate::callers::watch(
                path.clone(),
                self.callers.clone(),
                self.config.keys_reload_interval,
            )),
            _ => None,
        };
        match authz_addr {
            Some(authz_addr) => {
                tracing::info!(%grpc_addr, %admin_addr, %http_addr, %authz_addr, store = self.store.kind(), "revokd serving")
            }
            None => tracing::info!(%grpc_addr, %admin_addr, %http_addr, store = self.store.kind(), "revokd serving"),
        }
        let mut grpc_task = tokio::spawn(grpc_server);
        let mut admin_task = tokio::spawn(admin_server);
        let mut http_task = tokio::spawn(http_server);
        let mut authz_task = tokio::spawn(async move {
            match authz_server {
                Some(server) => server.await.map_err(|e| e.to_string()),
                None => std::future::pending().await,
            }
        });

        tokio::select! {
            _ = shutdown => {}
            r = &mut grpc_task => return Err(StartError::Serve(format!("gRPC server stopped: {r:?}"))),
            r = &mut admin_task => return Err(StartError::Serve(format!("admin server stopped: {r:?}"))),
            r = &mut http_task => return Err(StartError::Serve(format!("HTTP API server stopped: {r:?}"))),
            r = &mut authz_task => return Err(StartError::Serve(format!("ext_authz server stopped: {r:?}"))),
        }
        if let Some(w) = callers_watcher {
            w.abort();
        }
        if let Some(w) = tls_watcher {
            w.abort();
        }
        if let Some(w) = watcher {
            w.abort();
        }
        health.set_not_serving::<TokenServiceServer<TokenGrpcService>>().await;
        health.set_not_serving::<AuthorizationServer<ExtAuthz>>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut grpc_task).await;
            let _ = (&mut admin_task).await;
            let _ = (&mut http_task).await;
            if authz_addr.is_some() {
                let _ = (&mut authz_task).await;
            }
        })
        .await;
        authz_task.abort();
        match drained {
            Ok(()) => tracing::info!("drained, bye"),
            Err(_) => {
                tracing::warn!(grace = ?grace, "grace period over with calls in flight; stopping anyway");
                grpc_task.abort();
                admin_task.abort();
                http_task.abort();
            }
        }
        if let Some(path) = socket_path {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}
