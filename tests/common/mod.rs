//! Test harness: a real `redis-server` on a free port, the real revokd server
//! on port 0, and a real tonic client. Readiness is polled, never slept for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use revokd::config::ServeConfig;
use revokd::proto::v1::token_service_client::TokenServiceClient;
use revokd::server::Server;
use tonic::transport::Channel;

/// Polls `cond` every 10 ms until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("REVOKD_TEST_REDIS_SERVER") {
        return p.into();
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("redis-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "redis-server not found: install it (apt-get install redis-server) or run scripts/test, which does"
    );
}

/// A `redis-server` child process on a free loopback port; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_server_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while self.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends one command (RESP2, inline array) and returns the first reply line.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        stream.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let mut lines = text.split("\r\n");
        let first = lines.next()?.to_string();
        // A bulk string: return its payload instead of the length line.
        if first.starts_with('$') && first != "$-1" {
            return lines.next().map(str::to_string);
        }
        Some(first)
    }

    /// `TTL key` as a number.
    pub fn ttl(&self, key: &str) -> i64 {
        let reply = self.cmd(&["TTL", key]).expect("TTL reply");
        reply
            .trim_start_matches(':')
            .parse()
            .expect("TTL is an integer")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The HS256 secret tests sign their own tokens with (kid `test-hs`).
pub const TEST_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

/// A keys directory with an HMAC key `test-hs` (signing) and a fresh Ed25519 key `test-ed`.
pub fn keys_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test-hs.secret"), TEST_SECRET).unwrap();
    revokd::keys::keygen(revokd::config::KeygenAlg::EdDsa, "test-ed", dir.path()).unwrap();
    dir
}

/// A running in-process revokd.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _keys: Option<tempfile::TempDir>,
}

impl TestServer {
    /// The test configuration: port 0, HS256 `test-hs` signs, issuer `revokd`.
    pub fn config(redis: Option<&RedisServer>) -> (ServeConfig, tempfile::TempDir) {
        let keys = keys_dir();
        let mut config = ServeConfig::for_tests();
        config.keys_dir = Some(keys.path().to_path_buf());
        config.signing_kid = Some("test-hs".into());
        config.redis_url = redis.map(RedisServer::url);
        (config, keys)
    }

    /// Starts revokd with the test configuration.
    pub async fn start(redis: Option<&RedisServer>) -> Self {
        let (config, keys) = Self::config(redis);
        let mut s = Self::start_with(config).await;
        s._keys = Some(keys);
        s
    }

    /// Starts revokd with `config`.
    pub async fn start_with(config: ServeConfig) -> Self {
        let server = Server::bind(config).await.expect("server binds");
        let grpc_addr = server.grpc_addr();
        let admin_addr = server.admin_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            grpc_addr,
            admin_addr,
            stop: Some(tx),
            task: Some(task),
            _keys: None,
        }
    }

    pub async fn client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("client connects")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Sends the shutdown signal and waits for the server to finish draining.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

/// A minimal HTTP/1.1 GET: returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connects");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Signs arbitrary claims with the test HMAC key (or another header).
pub fn sign_hs(claims: &serde_json::Value, kid: Option<&str>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET),
    )
    .unwrap()
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
