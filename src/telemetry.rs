//! Logging setup (tracing): human lines by default, JSON with `--log-format json`.
//! The level comes from `RUST_LOG` (default `info`). Each RPC span (method,
//! code, jti or session, verdict; never a token) is logged when it closes:
//! every call but VerifyToken at `info`, VerifyToken at `debug`. Revocation
//! audit events go to the `revokd::audit` target.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr);
    // try_init: tests may have installed one already.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
