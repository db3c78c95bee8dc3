//! Test harness: a real `redis-server` on a free port, the real revokd server
//! on port 0, and a real tonic client. Readiness is polled, never slept for.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod edge;
pub mod resp;
pub mod rpc;
pub mod sentinel;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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

/// Every listener of `revokd serve` on loopback port 0.
pub const LOOPBACK_LISTENERS: [&str; 6] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
];

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    panic!("redis-server not found: install it (apt-get install redis-server) or run scripts/test, which does");
}

/// Sends one command (RESP2) to the plain-TCP Redis on `port` and returns the
/// first reply line (`+PONG`, `:1`, `-ERR ..`, `*3`), or a bulk string's payload.
/// For arrays and whole replies use [`resp::query`].
pub fn redis_cmd(port: u16, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
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

/// A `redis-server` child process on a free loopback port; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With a data directory, writes survive a restart (AOF, fsync always).
    data: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            data: None,
        };
        s.spawn();
        s
    }

    /// A server whose data survives [`RedisServer::restart`].
    pub fn start_persistent() -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            data: Some(tempfile::tempdir().unwrap()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        match &self.data {
            Some(dir) => args.extend([
                "--dir",
                dir.path().to_str().unwrap(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new(redis_server_binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while self.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
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

    /// Starts it again on the same port (empty unless persistent).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends one command (RESP2, inline array) and returns the first reply line.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        redis_cmd(self.port, args)
    }

    /// `TTL key` as a number.
    pub fn ttl(&self, key: &str) -> i64 {
        let reply = self.cmd(&["TTL", key]).expect("TTL reply");
        reply.trim_start_matches(':').parse().expect("TTL is an integer")
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
        config.redis_url = redis.map(|r| r.url().into());
        (config, keys)
    }

    /// Starts revokd with the test configuration and the given revocation check mode.
    pub async fn start_mode(redis: Option<&RedisServer>, mode: revokd::config::RevocationCheck) -> Self {
        let (mut config, keys) = Self::config(redis);
        config.revocation_check = mode;
        let mut s = Self::start_with(config).await;
        s._keys = Some(keys);
        s
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

    /// Keeps `keys` alive as long as the server.
    pub fn keep(&mut self, keys: tempfile::TempDir) {
        self._keys = Some(keys);
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
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin connects");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
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
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET)).unwrap()
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs the real `redis-cli` against `redis`; returns its trimmed stdout.
pub fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (it comes with redis-server)");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `metric(&text, "revokd_verify_total{verdict=\"valid\"}")`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
}

/// The arguments of a `revokd serve` on the Redis at `url` with the test keys
/// (HS256 `test-hs` signs), then `extra`.
pub fn serve_args<'a>(keys: &'a tempfile::TempDir, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--keys-dir",
        keys.path().to_str().unwrap(),
        "--signing-kid",
        "test-hs",
        "--redis-url",
        url,
    ];
    a.extend_from_slice(extra);
    a
}

/// Log lines, shared between what writes them and the test reading them.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Captures what `tracing` logs on this thread until the guard drops. An
    /// in-process [`TestServer`] on a current-thread runtime (plain
    /// `#[tokio::test]`) logs on the test's thread.
    pub fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Whether any line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// Appends each write (the fmt subscriber writes one event at a time) as a line.
struct LogWriter(Log);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(String::from_utf8_lossy(buf).trim_end().to_string());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The real `revokd serve` binary as a child process; SIGTERMed and reaped on
/// drop, or by [`RevokdProcess::terminate`].
pub struct RevokdProcess {
    pub grpc_addr: SocketAddr,
    /// The gRPC API's Unix socket, with `--grpc-addr unix:/path` (then `grpc_addr` is a placeholder).
    pub grpc_unix: Option<std::path::PathBuf>,
    pub admin_addr: SocketAddr,
    /// The HTTP API listener (forward-auth).
    pub http_addr: Option<SocketAddr>,
    /// The ext_authz-only gRPC listener, when `--authz-addr` was given.
    pub authz_addr: Option<SocketAddr>,
    child: Child,
    /// Its log (JSON lines), with [`RevokdProcess::spawn_logged`].
    log: Option<Log>,
    /// The thread draining its stderr; done once it exited.
    drain: Option<std::thread::JoinHandle<()>>,
}

impl RevokdProcess {
    /// Starts `revokd serve` on port 0 with `args`; returns once it logged its addresses.
    pub fn spawn(args: &[&str]) -> Self {
        Self::start(args, None)
    }

    /// [`RevokdProcess::spawn`], keeping every line it logs in [`RevokdProcess::log`].
    pub fn spawn_logged(args: &[&str]) -> Self {
        Self::start(args, Some(Log::default()))
    }

    /// [`RevokdProcess::spawn`] allowed at most `nofile` open file
    /// descriptors (through util-linux `prlimit`).
    pub fn spawn_with_fd_limit(args: &[&str], nofile: u32) -> Self {
        Self::start_with(args, None, Some(nofile))
    }

    fn start(args: &[&str], log: Option<Log>) -> Self {
        Self::start_with(args, log, None)
    }

    fn start_with(args: &[&str], log: Option<Log>, nofile: Option<u32>) -> Self {
        use std::io::BufRead;
        let bin = env!("CARGO_BIN_EXE_revokd");
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .arg("serve")
            .args(LOOPBACK_LISTENERS)
            .args(["--log-format", "json"])
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn revokd");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let keep = log.clone();
        let keep_line = move |line: String| {
            if let Some(log) = &keep {
                log.push(line);
            }
        };
        let (grpc, grpc_unix, admin, http, authz) = loop {
            let line = lines.next().expect("revokd logs its addresses").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            keep_line(line);
            if v["message"] == "revokd serving" {
                let addr = |name: &str| v[name].as_str().map(|a| a.parse::<SocketAddr>().unwrap());
                // A Unix socket has no TCP address: a placeholder, and the path.
                let grpc_text = v["grpc_addr"].as_str().unwrap().to_owned();
                let grpc_unix = grpc_text.strip_prefix("unix:").map(std::path::PathBuf::from);
                break (
                    if grpc_unix.is_some() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        addr("grpc_addr").unwrap()
                    },
                    grpc_unix,
                    addr("admin_addr").unwrap(),
                    addr("http_addr"),
                    addr("authz_addr"),
                );
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        let drain = std::thread::spawn(move || lines.map_while(Result::ok).for_each(keep_line));
        RevokdProcess {
            grpc_addr: grpc,
            grpc_unix,
            admin_addr: admin,
            http_addr: http,
            authz_addr: authz,
            child,
            log,
            drain: Some(drain),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log: with [`RevokdProcess::spawn_logged`], the lines so far, and
    /// after [`RevokdProcess::terminate`] all of them.
    pub fn log(&self) -> Log {
        self.log.clone().expect("started with spawn_logged")
    }

    pub async fn client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("client connects")
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin_addr, "/metrics").await.1
    }

    /// Waits until its revocation mirror reports synced.
    pub async fn wait_synced(&self) {
        eventually(Duration::from_secs(10), "mirror synced", || async {
            metric(&self.metrics().await, "revokd_mirror_synced") == Some(1.0)
        })
        .await;
    }

    /// `kill -TERM <pid>`.
    fn sigterm(&self) -> std::io::Result<ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
    }

    /// Sends SIGTERM, waits for it to exit and returns its exit status; its log
    /// is read to the end by then. Waits on a blocking thread, so clients on
    /// this runtime keep being served while it drains.
    pub async fn terminate(mut self) -> ExitStatus {
        tokio::task::spawn_blocking(move || {
            let kill = self.sigterm().expect("kill runs");
            assert!(kill.success(), "kill -TERM {}", self.child.id());
            let status = self.child.wait().expect("revokd exits");
            if let Some(drain) = self.drain.take() {
                drain.join().expect("log drained");
            }
            status
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

impl Drop for RevokdProcess {
    fn drop(&mut self) {
        // Not once reaped (terminate): the pid may be another process's by now.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.sigterm();
        }
        let _ = self.child.wait();
    }
}

/// A TCP proxy on a free loopback port that can cut every connection through
/// it (and refuse new ones) to simulate a network partition, or silence them
/// (connections stay open, nothing gets through) to simulate a silent one.
pub struct TcpProxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `true` while silenced; every pump holds its next chunk until it is `false`.
    silent: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

/// Copies `from` to `to` chunk by chunk; while `silent` is `true` the chunk
/// just read (and the end of stream) is held, and nothing more is read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if silent.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl TcpProxy {
    pub async fn start(target_port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let silent = std::sync::Arc::new(tokio::sync::watch::Sender::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (o, s, c) = (open.clone(), silent.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (up, down) = (s.subscribe(), s.subscribe());
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await {
                        let (client_r, client_w) = inbound.into_split();
                        let (server_r, server_w) = outbound.into_split();
                        tokio::join!(pump(client_r, server_w, up), pump(server_r, client_w, down));
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        TcpProxy {
            port,
            open,
            silent,
            conns,
            accept,
        }
    }

    pub fn url(&self) -> String {
        self.url_for("redis")
    }

    /// `{scheme}://127.0.0.1:{port}`, e.g. `url_for("rediss")` in front of a TLS Redis.
    pub fn url_for(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A silent partition: every connection stays open and new ones are still
    /// accepted (and connected to the target), but no byte and no end of stream
    /// gets through in either direction. What was sent meanwhile is held, not
    /// dropped, and delivered in order on [`TcpProxy::unsilence`], as TCP would
    /// after a healed partition; the senders block once socket buffers fill.
    pub fn silence(&self) {
        self.silent.send_replace(true);
    }

    /// Ends [`TcpProxy::silence`]: held bytes flow, then everything as before.
    pub fn unsilence(&self) {
        self.silent.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
