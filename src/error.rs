//! Domain errors, and the one place they become gRPC statuses.
//!
//! A bad token is never an error here: it is a [`crate::tokens::Verdict`].
//! Errors are what the caller must handle differently: a bad request
//! (INVALID_ARGUMENT, naming the field), a store that cannot be reached
//! (UNAVAILABLE: fail closed), or a bug (INTERNAL, details only in the log).

use tonic::{Code, Status};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, or did not answer in time (revokd's own finding).
    #[error("revocation store unavailable: {0}")]
    Unavailable(String),
    /// Redis, through fred, failed; fred's error is kept as the source.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The store answered something revokd did not expect.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Whether the store could not answer (UNAVAILABLE: fail closed), as
    /// opposed to answering nonsense (INTERNAL).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Redis(e) => *e.kind() != fred::error::ErrorKind::Parse,
            StoreError::Protocol(_) => false,
        }
    }
}

/// An error a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or out of range. The message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field, as named in the proto.
        field: &'static str,
        /// What is wrong with it, safe to show the client.
        reason: String,
    },
    /// The presented credential (a refresh token) is not usable. The message
    /// is safe to show the client.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (a registered client without the permission
    /// or the audience): PERMISSION_DENIED.
    #[error("{0}")]
    Denied(#[from] crate::callers::Denied),
    /// A used refresh token was presented again; its session is now revoked.
    #[error("refresh token reuse detected: the session is revoked")]
    RefreshTokenReused,
    /// The revocation store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else; the detail goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
    /// This revokd is not configured for the call (FAILED_PRECONDITION).
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// A bad request field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

/// Lets one log line through per interval, and counts the ones it holds back.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: i64,
    last_ms: std::sync::atomic::AtomicI64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    /// At most one line per `interval_ms`.
    pub const fn new(interval_ms: i64) -> Self {
        LogLimiter {
            interval_ms,
            last_ms: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` if this line may be logged.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = crate::tokens::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now - last >= self.interval_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The "store unavailable" warning: once a second at most.
static UNAVAILABLE_LOG: LogLimiter = LogLimiter::new(1000);

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { .. } => Status::new(Code::InvalidArgument, err.to_string()),
            Error::Unauthenticated(_) => Status::new(Code::Unauthenticated, err.to_string()),
            Error::Denied(d) => Status::from(d),
            // Distinct from UNAUTHENTICATED so a client can tell theft from expiry.
            Error::RefreshTokenReused => Status::new(Code::PermissionDenied, err.to_string()),
            Error::Unsupported(_) => Status::new(Code::FailedPrecondition, err.to_string()),
            // Fail closed: the client must not treat this as "valid".
            Error::Store(e) if e.is_unavailable() => {
                // An outage fails every request: one line a second, with how many it stands for.
                if let Some(suppressed) = UNAVAILABLE_LOG.allow() {
                    tracing::warn!(detail = %e, suppressed, "revocation store unavailable");
                }
                Status::new(Code::Unavailable, "revocation store unavailable")
            }
            Error::Store(e) => {
                tracing::error!(detail = %e, "unexpected store reply");
                Status::new(Code::Internal, "internal error")
            }
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let limiter = LogLimiter::new(60_000);
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..20_000 {
            assert_eq!(limiter.allow(), None);
        }
        assert_eq!(limiter.suppressed.load(std::sync::atomic::Ordering::Relaxed), 20_000);
        let every_time = LogLimiter::new(0);
        assert_eq!(every_time.allow(), Some(0));
        assert_eq!(every_time.allow(), Some(0));
    }
}
