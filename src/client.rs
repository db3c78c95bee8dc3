//! The command line client: `revokd token`, `session`, `jwks` and `status`,
//! for operators and scripts, so nobody needs grpcurl. Each call prints one
//! JSON object on stdout; errors go to stderr in full, with an exit status a
//! script can test ([`CliError::exit_code`]).

use std::time::Duration;

use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::config::{Endpoint, SessionAction, SessionArgs, StatusArgs, TokenAction, TokenArgs};
use crate::proto::v1::token_service_client::TokenServiceClient;
use crate::proto::v1::{
    GetJwksRequest, IssueSessionRequest, IssueTokenRequest, RefreshSessionRequest, RevokeSessionRequest,
    RevokeSubjectRequest, RevokeTokenRequest, Verdict, VerifyTokenRequest, revoke_session_request,
    revoke_token_request,
};

/// Exit status: the call worked but the answer is "no" (a verdict other than
/// VALID, a revokd that is not ready).
pub const EXIT_NO: u8 = 1;
/// Exit status: revokd unreachable or UNAVAILABLE (sysexits.h EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status: revokd refused the caller (sysexits.h EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;
/// Exit status: anything else revokd answered (sysexits.h EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A value the command cannot use (exit 64).
    #[error("{0}")]
    Usage(String),
    /// revokd could not be reached (exit 69).
    #[error("cannot reach revokd at {addr}: {cause}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Every cause in the chain, outermost first.
        cause: String,
    },
    /// revokd answered with an error status.
    #[error("{}: {}", .0.code().description(), .0.message())]
    Status(tonic::Status),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        use tonic::Code;
        match self {
            CliError::Usage(_) => crate::config::EXIT_USAGE as u8,
            CliError::Unreachable { .. } => EXIT_UNAVAILABLE,
            CliError::Status(s) => match s.code() {
                Code::InvalidArgument | Code::OutOfRange => crate::config::EXIT_USAGE as u8,
                Code::Unavailable | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
                Code::Unauthenticated | Code::PermissionDenied => EXIT_NOPERM,
                _ => EXIT_SOFTWARE,
            },
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Status(s)
    }
}

/// What a command printed, and whether its answer was "yes" (exit 0) or "no" (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Done; VALID; ready.
    Yes,
    /// Another verdict; not ready.
    No,
}

/// `HOST:PORT` or `http://HOST:PORT` (the form `REVOKD_ADDR` takes
/// everywhere) as the URI tonic connects to.
pub fn grpc_uri(addr: &str) -> Result<String, CliError> {
    let addr = addr.trim();
    if addr.starts_with("unix:") {
        return Err(CliError::Usage(format!(
            "--addr {addr:?}: this client connects over TCP only (give HOST:PORT or http://HOST:PORT)"
        )));
    }
    match addr.split_once("://") {
        None if !addr.is_empty() => Ok(format!("http://{addr}")),
        Some(("http", rest)) if !rest.is_empty() => Ok(addr.to_owned()),
        Some(("https", _)) => Err(CliError::Usage(format!(
            "--addr {addr:?}: this client speaks plaintext gRPC only (give HOST:PORT or http://HOST:PORT)"
        ))),
        _ => Err(CliError::Usage(format!(
            "--addr {addr:?}: expected HOST:PORT or http://HOST:PORT, e.g. 127.0.0.1:50051"
        ))),
    }
}

/// An error and its sources, outermost first, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

async fn connect(endpoint: &Endpoint) -> Result<TokenServiceClient<Channel>, CliError> {
    let uri = grpc_uri(&endpoint.addr)?;
    let unreachable = |e: &dyn std::error::Error| CliError::Unreachable {
        addr: uri.clone(),
        cause: chain(e),
    };
    let channel = Channel::from_shared(uri.clone())
        .map_err(|e| CliError::Usage(format!("--addr {:?}: {e}", endpoint.addr)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| unreachable(&e))?;
    Ok(TokenServiceClient::new(channel))
}

fn rfc3339(ts: Option<prost_types::Timestamp>) -> Value {
    ts.map(|t| {
        let when = std::time::UNIX_EPOCH + Duration::from_secs(t.seconds.max(0) as u64);
        humantime::format_rfc3339_seconds(when).to_string().into()
    })
    .unwrap_or(Value::Null)
}

fn duration(d: Option<Duration>) -> Option<prost_types::Duration> {
    d.map(|d| prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// Prints `out` as one JSON line.
fn print(out: Value) {
    println!("{out}");
}

/// Runs one `revokd token` action.
pub async fn token(args: TokenArgs) -> Result<Answer, CliError> {
    let mut client = connect(&args.endpoint).await?;
    match args.action {
        TokenAction::Issue { subject, ttl, audience } => {
            let r = client
                .issue_token(IssueTokenRequest {
                    subject,
                    ttl: duration(ttl),
                    audience,
                    claims: None,
                    claims_json: String::new(),
                })
                .await?
                .into_inner();
            print(json!({"token": r.token, "jti": r.jti, "expires_at": rfc3339(r.expires_at), "key_id": r.key_id}));
        }
        TokenAction::Verify { token, audience } => {
            let r = client
                .verify_token(VerifyTokenRequest {
                    token,
                    audience: audience.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let verdict = Verdict::try_from(r.verdict).unwrap_or(Verdict::Unspecified);
            print(json!({
                "verdict": verdict.as_str_name().trim_start_matches("VERDICT_"), "subject": r.subject, "jti": r.jti,
                "issued_at": rfc3339(r.issued_at), "expires_at": rfc3339(r.expires_at),
                "audience": r.audience, "key_id": r.key_id, "session_id": r.session_id,
            }));
            if verdict != Verdict::Valid {
                return Ok(Answer::No);
            }
        }
        TokenAction::Revoke { token, jti, reason } => {
            let target = match (token, jti) {
                (Some(t), _) => revoke_token_request::Target::Token(t),
                (None, Some(j)) => revoke_token_request::Target::Jti(j),
                (None, None) => return Err(CliError::Usage("give a token or --jti".into())),
            };
            let r = client
                .revoke_token(RevokeTokenRequest {
                    target: Some(target),
                    reason,
                })
                .await?
                .into_inner();
            print(json!({"jti": r.jti, "newly_revoked": r.newly_revoked, "expires_at": rfc3339(r.expires_at)}));
        }
        TokenAction::RevokeSubject { subject, reason } => {
            let r = client
                .revoke_subject(RevokeSubjectRequest { subject, reason })
                .await?
                .into_inner();
            print(json!({"revoked_before": rfc3339(r.revoked_before), "expires_at": rfc3339(r.expires_at)}));
        }
    }
    Ok(Answer::Yes)
}

/// Runs one `revokd session` action.
pub async fn session(args: SessionArgs) -> Result<Answer, CliError> {
    let mut client = connect(&args.endpoint).await?;
    // IssueSession and RefreshSession answer with the same fields.
    macro_rules! pair {
        ($r:expr) => {{
            let r = $r;
            json!({
                "access_token": r.access_token, "refresh_token": r.refresh_token, "session_id": r.session_id,
                "access_expires_at": rfc3339(r.access_expires_at),
                "refresh_expires_at": rfc3339(r.refresh_expires_at), "key_id": r.key_id,
            })
        }};
    }
    match args.action {
        SessionAction::Login {
            subject,
            audience,
            access_ttl,
            refresh_ttl,
        } => {
            let r = client
                .issue_session(IssueSessionRequest {
                    subject,
                    audience,
                    claims: None,
                    claims_json: String::new(),
                    access_ttl: duration(access_ttl),
                    refresh_ttl: duration(refresh_ttl),
                })
                .await?
                .into_inner();
            print(pair!(r));
        }
        SessionAction::Refresh { refresh_token } => {
            let r = client
                .refresh_session(RefreshSessionRequest { refresh_token })
                .await?
                .into_inner();
            print(pair!(r));
        }
        SessionAction::Logout {
            token,
            session_id,
            reason,
        } => {
            let target = match (token, session_id) {
                (Some(t), _) => revoke_session_request::Target::Token(t),
                (None, Some(s)) => revoke_session_request::Target::SessionId(s),
                (None, None) => return Err(CliError::Usage("give a token or --session-id".into())),
            };
            let r = client
                .revoke_session(RevokeSessionRequest {
                    target: Some(target),
                    reason,
                })
                .await?
                .into_inner();
            print(json!({
                "session_id": r.session_id, "newly_revoked": r.newly_revoked, "expires_at": rfc3339(r.expires_at),
            }));
        }
    }
    Ok(Answer::Yes)
}

/// `revokd jwks`: the JWK Set, as the JWKS endpoint serves it.
pub async fn jwks(endpoint: Endpoint) -> Result<Answer, CliError> {
    let mut client = connect(&endpoint).await?;
    let r = client.get_jwks(GetJwksRequest {}).await?.into_inner();
    println!("{}", r.jwks_json);
    Ok(Answer::Yes)
}

/// A plain HTTP/1.1 GET on the admin listener: (status, body).
async fn admin_get(admin: &str, path: &str) -> Result<(u16, String), CliError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = admin.trim().trim_start_matches("http://").trim_end_matches('/');
    let unreachable = |e: std::io::Error| CliError::Unreachable {
        addr: format!("http://{host}"),
        cause: e.to_string(),
    };
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.map_err(unreachable)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(unreachable)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(unreachable)?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .unwrap_or_else(|_| Err(unreachable(std::io::ErrorKind::TimedOut.into())))
}

/// The value of `sample` (a metric name with its labels, as exposed) in a
/// Prometheus text exposition.
fn metric<'a>(text: &'a str, sample: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map(str::trim)
}

/// `revokd status`: gRPC answering, the store ready, the mirror's state, the keys.
pub async fn status(args: StatusArgs) -> Result<Answer, CliError> {
    let mut client = connect(&args.endpoint).await?;
    let jwks = client.get_jwks(GetJwksRequest {}).await?.into_inner();
    let (ready_code, ready) = admin_get(&args.admin, "/readyz").await?;
    let (_, metrics) = admin_get(&args.admin, "/metrics").await?;
    let number = |sample: &str| metric(&metrics, sample).and_then(|v| v.parse::<f64>().ok());
    let build = metrics
        .lines()
        .find(|l| l.starts_with("revokd_build_info{"))
        .map(|l| l.split(' ').next().unwrap_or(l).trim_start_matches("revokd_build_info"));
    let ready_now = ready_code == 200;
    print(json!({
        "ready": ready_now,
        "readiness": ready.trim(),
        "build": build,
        "store_up": number("revokd_store_up").map(|v| v == 1.0),
        "mirror": {
            "synced": number("revokd_mirror_synced").map(|v| v == 1.0),
            "entries": number("revokd_mirror_entries"),
            "staleness_seconds": number("revokd_mirror_staleness_seconds"),
        },
        "keys": jwks.keys.iter().map(|k| json!({"kid": k.kid, "alg": k.alg})).collect::<Vec<_>>(),
    }));
    Ok(if ready_now { Answer::Yes } else { Answer::No })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_address_forms_are_accepted() {
        assert_eq!(grpc_uri("127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(grpc_uri("http://127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(grpc_uri(" localhost:1 ").unwrap(), "http://localhost:1");
        for bad in ["", "https://x:1", "unix:/x", "grpc://x:1", "http://"] {
            let e = grpc_uri(bad).map(|_| ()).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn the_error_chain_is_printed_whole() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(chain(&Outer(inner)), "transport error: Connection refused");
    }
}
