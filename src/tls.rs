//! TLS for the gRPC and HTTP API listeners (`--tls-cert`, `--tls-key`):
//! the certificate and key are read again when their files change (cert-manager
//! rotates them in place; a pair that does not load is refused with a log
//! line and the pair in force stays), and with `--tls-client-ca` client
//! certificates are verified against that CA (mTLS). A client certificate is
//! optional at the TLS layer; a verified one names a registered client
//! ([`crate::callers`], `tls_names`) for the gRPC API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// The files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads the certificate chain and key at `files`.
fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let shown = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| shown(&files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| shown(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(shown(&files.cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| shown(&files.key, &e))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| format!("--tls-cert and --tls-key: {e}"))
}

/// The certificate in force, swapped on reload.
#[derive(Debug)]
struct Reloading(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The TLS side of the listeners: one certificate, two acceptors (ALPN `h2`
/// for gRPC, `http/1.1` for the HTTP API).
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    certificate: Arc<Reloading>,
    /// For the gRPC listener.
    pub grpc: TlsAcceptor,
    /// For the HTTP API listener.
    pub http: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.files.cert)
            .field("client_ca", &self.files.client_ca)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `files`; an error names the file.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let certificate = Arc::new(Reloading(ArcSwap::from_pointee(certified_key(&files)?)));
        let verifier = match &files.client_ca {
            None => WebPkiClientVerifier::no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{}: no certificate in it", path.display()));
                }
                // Optional at this layer: a caller may still present a secret instead.
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("--tls-client-ca: {e}"))?
            }
        };
        let config = |alpn: &[u8]| -> Result<TlsAcceptor, String> {
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(verifier.clone())
                .with_cert_resolver(certificate.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(ServerTls {
            grpc: config(b"h2")?,
            http: config(b"http/1.1")?,
            files,
            certificate,
        })
    }

    /// Reads the certificate and key again whenever their files change
    /// (checked every `every`).
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let files = self.files.clone();
        let certificate = self.certificate.clone();
        tokio::spawn(async move {
            let read = |files: &TlsFiles| (std::fs::read(&files.cert).ok(), std::fs::read(&files.key).ok());
            let mut last = read(&files);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = read(&files);
                if now == last {
                    continue;
                }
                last = now;
                match certified_key(&files) {
                    Ok(key) => {
                        certificate.0.store(Arc::new(key));
                        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "new TLS certificate refused; keeping the one in force"),
                }
            }
        })
    }
}

/// What tonic puts in each request's extensions for a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    /// The peer's address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The client certificate (DER), verified against `--tls-client-ca`, if one was presented.
    pub peer_certificate: Option<Arc<Vec<u8>>>,
}

/// A TLS connection of a capped gRPC listener.
pub type TlsConnection = crate::http_serve::Held<tokio_rustls::server::TlsStream<TcpStream>, TlsConnectInfo>;

/// The TLS connections of a gRPC listener: at most `cap` open at once, each
/// handshake in a task of its own (bounded by `handshake_timeout`), so a
/// client that never finishes its handshake holds up no other.
pub fn tls_incoming(
    listener: TcpListener,
    cap: usize,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    tokio::spawn(async move {
        loop {
            let closed = std::pin::pin!(tx.closed());
            let Some((stream, slot)) = crate::http_serve::accept_within(&listener, &slots, closed).await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let remote_addr = stream.peer_addr().ok();
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let peer_certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|c| Arc::new(c.to_vec()));
                        let info = TlsConnectInfo {
                            remote_addr,
                            peer_certificate,
                        };
                        let _ = tx.send(Ok(TlsConnection::new(stream, info, slot))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Whether the certificate `der` is valid for `name` (a DNS name or an IP
/// address in its subject alternative names).
pub fn certificate_names(der: &[u8], name: &str) -> bool {
    use tokio_rustls::rustls::pki_types::ServerName;
    let cert = CertificateDer::from(der);
    let Ok(cert) = webpki::EndEntityCert::try_from(&cert) else {
        return false;
    };
    ServerName::try_from(name).is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
}
