//! A tiny blocking RESP2 client for assertions that need a whole reply (arrays,
//! `SENTINEL MASTER`, `INFO`), where [`super::redis_cmd`]'s first line is not enough.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the nil bulk string (`$-1`).
    Bulk(Option<String>),
    /// `None` is the nil array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A simple or bulk string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// In a flat `[name, value, name, value, ..]` array (a `SENTINEL MASTER`
    /// reply, one entry of `SENTINEL REPLICAS`), the value of `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.as_array()?
            .chunks(2)
            .find(|kv| kv[0].as_str() == Some(name))
            .and_then(|kv| kv.get(1)?.as_str())
    }
}

/// In an `INFO` text, the value of `name` (`info_field(&info, "role")`).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Sends one command to the plain-TCP Redis (or Sentinel) on `port` and reads
/// its whole reply; `None` when it cannot connect or does not answer within 2 s.
pub fn query(port: u16, args: &[&str]) -> Option<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    stream.write_all(req.as_bytes()).ok()?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut impl BufRead) -> Option<Reply> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.strip_suffix("\r\n")?;
    let (kind, rest) = line.split_at_checked(1)?;
    Some(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(rest.parse().ok()?),
        "$" => match rest.parse::<i64>().ok()? {
            n if n < 0 => Reply::Bulk(None),
            n => {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf).ok()?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        },
        "*" => match rest.parse::<i64>().ok()? {
            n if n < 0 => Reply::Array(None),
            n => Reply::Array(Some((0..n).map(|_| read_reply(r)).collect::<Option<_>>()?)),
        },
        _ => return None,
    })
}
