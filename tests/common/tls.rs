//! A TLS-only `redis-server` whose certificate comes from a throwaway test CA
//! made with rcgen. Readiness is polled with `redis-cli --tls`, never slept for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{free_port, redis_server_binary};

/// A self-signed CA (CA:true) named `common_name`: its issuer (to sign with) and its PEM.
fn make_ca(common_name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "revokd tests");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

/// A TLS-only (`--port 0`) `redis-server` on a free loopback port, with a fresh
/// test CA and a server certificate for `localhost` and `127.0.0.1` (ECDSA
/// P-256) signed by it. Clients are not asked for certificates. Killed on drop.
pub struct TlsRedis {
    /// The TLS port (there is no plain-TCP port).
    pub port: u16,
    child: Option<Child>,
    /// ca.pem, server.pem, server.key, redis.log (and other-ca.pem once asked for).
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TlsRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_pem) = make_ca("revokd test CA");

        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();

        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();

        let mut s = TlsRedis {
            port: free_port(),
            child: None,
            dir,
            ca_pem,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let file = |name: &str| d.join(name).to_str().unwrap().to_string();
        let child = Command::new(redis_server_binary())
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--tls-cert-file", &file("server.pem")])
            .args(["--tls-key-file", &file("server.key")])
            .args(["--tls-ca-cert-file", &file("ca.pem")])
            .args(["--tls-auth-clients", "no"])
            // `-::1`: also on IPv6 loopback when there is one, so `localhost` works either way.
            .args(["--bind", "127.0.0.1 -::1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", d.to_str().unwrap(), "--logfile", &file("redis.log")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while self.try_cmd_with_ca(&self.ca_file(), &["PING"]).as_deref() != Ok("PONG") {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("TLS redis-server exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "TLS redis-server did not answer PING; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The test CA's certificate (PEM file) that signed the server's.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The test CA's certificate, PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `rediss://127.0.0.1:PORT` (the certificate has an IP SAN for it).
    pub fn url(&self) -> String {
        self.url_with_host("127.0.0.1")
    }

    /// `rediss://HOST:PORT`, e.g. `url_with_host("localhost")` (a DNS SAN).
    pub fn url_with_host(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }

    /// Writes a fresh, unrelated self-signed CA (a different key and name) and
    /// returns its path: trusting it instead of [`TlsRedis::ca_file`] must fail.
    pub fn other_ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("other-ca.pem");
        std::fs::write(&path, make_ca("revokd OTHER test CA").1).unwrap();
        path
    }

    /// Runs `redis-cli --tls` trusting the test CA; returns its trimmed stdout
    /// (`PONG`, `1`, a bulk value). Panics when redis-cli fails.
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd_with_ca(&self.ca_file(), args)
            .unwrap_or_else(|e| panic!("redis-cli --tls {args:?}: {e}"))
    }

    /// Runs `redis-cli --tls` trusting only `ca`: `Ok(trimmed stdout)` when it
    /// exits 0, else `Err(its stderr and stdout)`, e.g. `SSL_connect failed:
    /// certificate verify failed` with the wrong CA.
    pub fn try_cmd_with_ca(&self, ca: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", ca.to_str().unwrap()])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{} {stdout}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// The server's log file so far (TLS handshake failures are logged there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL, by pid) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same certificates (empty).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway CA in a temporary directory that issues server and client
/// certificates as PEM files, for revokd's own TLS listeners.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
    /// The CA certificate's file.
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(common_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_pem) = make_ca(common_name);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        Pki { dir, ca, ca_file }
    }

    /// A certificate for `names` (DNS names or IP addresses) with a new key,
    /// for a server or a client; written as `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_file, key_file) = (
            self.dir.path().join(format!("{file}.pem")),
            self.dir.path().join(format!("{file}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}
