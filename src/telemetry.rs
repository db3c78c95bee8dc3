//! Logging setup (tracing): human lines by default, JSON with `--log-format json`.
//! The level comes from `RUST_LOG` (default `info`). Each RPC span (method,
//! code, jti or session, verdict; never a token) is logged when it closes:
//! every call but VerifyToken at `info`, VerifyToken at `debug`. Revocation
//! audit events go to the `revokd::audit` target.
//!
//! A field value can come from a caller (a subject, a reason): every control
//! character in a log line is escaped (`\n`, `\r`, `\u{1b}`, ...) before it
//! reaches stderr, so no value can start a forged line or drive the terminal.
//! Colours are used only when stderr is a terminal.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// Writes log lines to stderr with control characters escaped. The fmt
/// layer writes one whole event per call, ending in its one real newline.
#[derive(Debug, Clone, Copy)]
pub struct EscapingWriter {
    /// Colour escapes (ESC) are the formatter's own: keep them.
    ansi: bool,
}

impl Write for EscapingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let escaped = escape_controls(buf, self.ansi);
        std::io::stderr().lock().write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `buf` with every control character escaped but a final newline (and ESC
/// when `keep_esc`).
pub fn escape_controls(buf: &[u8], keep_esc: bool) -> Vec<u8> {
    let (body, end) = match buf.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (buf, &b""[..]),
    };
    let mut out = Vec::with_capacity(buf.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x1b if keep_esc => out.push(b),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = format == LogFormat::Human && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(ansi)
        .with_writer(move || EscapingWriter { ansi });
    // try_init: tests may have installed one already.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_line() {
        let line = b"INFO revoked subject=\"x\r\nINFO forged\" reason=a\x07b\n";
        let out = String::from_utf8(escape_controls(line, false)).unwrap();
        assert_eq!(out, "INFO revoked subject=\"x\\r\\nINFO forged\" reason=a\\u{7}b\n");
        assert_eq!(out.matches('\n').count(), 1);
        assert_eq!(escape_controls(b"\x1b[1mx\x1b[0m\n", true), b"\x1b[1mx\x1b[0m\n");
        assert_eq!(escape_controls(b"\x1b[1m", false), b"\\u{1b}[1m");
        assert_eq!(escape_controls(b"caf\xc3\xa9", false), b"caf\xc3\xa9", "UTF-8 stays");
    }
}
