//! What went wrong talking to Redis, in words an operator can act on:
//! refused, unknown host, authentication, TLS on one side only, timeout.
//! The text names the cause and what to check; the caller adds where (the
//! redacted target, host and port). Never a password: fred's errors carry
//! none, and the target prints as `:***@`.

use fred::error::{Error, ErrorKind};

/// Why a connection to Redis failed, with what to check; `tls` when the
/// target is a `rediss` URL.
pub fn cause(error: &Error, tls: bool) -> String {
    let details = error.details();
    let text = details.to_ascii_lowercase();
    let has = |needle: &str| text.contains(needle);
    let why = if matches!(error.kind(), ErrorKind::Auth)
        || has("wrongpass")
        || has("noauth")
        || has("invalid username-password")
    {
        "authentication failed (WRONGPASS/NOAUTH): check the URL's user, --redis-password or REVOKD_REDIS_PASSWORD"
    } else if has("connection refused") {
        "connection refused: nothing listens on that host and port (is Redis running, is the port right?)"
    } else if has("failed to lookup address") || has("name or service not known") || has("no address") || has("dns") {
        "host name not resolved (DNS): check the host in --redis-url"
    } else if matches!(error.kind(), ErrorKind::Tls)
        || has("tls")
        || has("certificate")
        || has("handshake")
        || has("invalidcontenttype")
        || has("corrupt message")
    {
        "TLS handshake failed: rediss:// to a Redis without TLS, or a certificate not trusted (--redis-ca-file) or not issued for that host"
    } else if has("connection reset") || has("broken pipe") || has("unexpected eof") || has("early eof") {
        "the server closed the connection during the handshake: redis:// (no TLS) to a TLS-only Redis?"
    } else if (matches!(error.kind(), ErrorKind::Timeout) || has("timed out") || has("timeout")) && tls {
        // A Redis without TLS reads the ClientHello as a command and waits for more.
        "timed out: no TLS handshake answer (rediss:// to a Redis without TLS?), or a firewall dropping packets, or a paused Redis"
    } else if matches!(error.kind(), ErrorKind::Timeout) || has("timed out") || has("timeout") {
        "timed out: a firewall dropping packets, a paused or overloaded Redis, or --store-timeout too short"
    } else {
        return format!("{:?}: {details}", error.kind());
    };
    format!("{why} ({details})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_gets_its_cause() {
        for (kind, details, want) in [
            (ErrorKind::IO, "Connection refused (os error 111)", "connection refused"),
            (
                ErrorKind::Auth,
                "WRONGPASS invalid username-password pair",
                "authentication failed",
            ),
            (
                ErrorKind::IO,
                "failed to lookup address information: Name or service not known",
                "DNS",
            ),
            (
                ErrorKind::Tls,
                "received corrupt message of type InvalidContentType",
                "TLS handshake failed",
            ),
            (
                ErrorKind::IO,
                "Connection reset by peer (os error 104)",
                "TLS-only Redis",
            ),
            (ErrorKind::Timeout, "Request timed out.", "timed out"),
        ] {
            let text = cause(&Error::new(kind, details), false);
            assert!(text.contains(want), "{details}: {text}");
            assert!(text.contains(details), "keeps the details: {text}");
        }
        assert!(cause(&Error::new(ErrorKind::Timeout, "Request timed out."), true).contains("without TLS"));
        assert_eq!(cause(&Error::new(ErrorKind::Protocol, "odd"), false), "Protocol: odd");
    }
}
