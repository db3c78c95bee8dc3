//! The generated gRPC code (`revokd.v1`), and every conversion between its
//! messages and revokd's domain types: a request is decoded with `TryFrom`
//! (a bad field is INVALID_ARGUMENT naming it), an answer encoded with
//! `From`; protobuf well-known types (Duration, Timestamp, Struct) are
//! converted here too.

use std::time::Duration;

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::authority::{RevokeOutcome, RevokeTarget, VerifyOutcome};
use crate::error::Error;
use crate::sessions::{SessionParams, SessionTarget, SessionTokens, SubjectRevocation};
use crate::tokens::{IssueParams, IssuedToken, Verdict};
use v1::{revoke_session_request, revoke_token_request};

/// `revokd.v1`: messages, the `TokenService` server and client.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("revokd.v1");
}

/// Envoy's external authorization API v3 and what it imports (vendored in
/// `third_party/envoy-api`), as Envoy's package tree.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod envoy {
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
    }
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

/// `google.rpc` (the status in an ext_authz answer).
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// `xds.core.v3` (referenced by Envoy's core types).
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod xds {
    pub mod core {
        pub mod v3 {
            tonic::include_proto!("xds.core.v3");
        }
    }
}

/// The encoded descriptor set of every proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/revokd_descriptor.bin"));

/// A Unix time in seconds as a protobuf Timestamp.
pub fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// A Unix time in microseconds as a protobuf Timestamp.
pub fn timestamp_us(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// An optional, strictly positive protobuf Duration.
fn duration(field: &'static str, d: Option<prost_types::Duration>) -> Result<Option<Duration>, Error> {
    match d {
        None => Ok(None),
        // nanos beyond a second is not a protobuf Duration (and would carry into the seconds).
        Some(d) if d.nanos >= 1_000_000_000 => Err(Error::invalid(field, "nanos must be below 1e9")),
        Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
            Err(Error::invalid(field, "must be positive"))
        }
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

/// Optional claims, from a Struct or from JSON text (not both), as a JSON object.
fn claims(s: Option<prost_types::Struct>, json: &str) -> Result<Map<String, Value>, Error> {
    match (s, json.is_empty()) {
        (Some(_), false) => Err(Error::invalid("claims_json", "set claims or claims_json, not both")),
        (Some(s), true) => struct_to_json(s).map_err(|e| Error::invalid("claims", e)),
        (None, false) => serde_json::from_str(json).map_err(|_| Error::invalid("claims_json", "not a JSON object")),
        (None, true) => Ok(Default::default()),
    }
}

impl From<Verdict> for v1::Verdict {
    fn from(v: Verdict) -> Self {
        use v1::Verdict as P;
        match v {
            Verdict::Valid => P::Valid,
            Verdict::Revoked => P::Revoked,
            Verdict::Expired => P::Expired,
            Verdict::NotYetValid => P::NotYetValid,
            Verdict::BadSignature => P::BadSignature,
            Verdict::Malformed => P::Malformed,
            Verdict::WrongAudience => P::WrongAudience,
            Verdict::WrongIssuer => P::WrongIssuer,
            Verdict::UnknownKey => P::UnknownKey,
            Verdict::WrongTokenType => P::WrongTokenType,
        }
    }
}

impl TryFrom<v1::IssueTokenRequest> for IssueParams {
    type Error = Error;
    fn try_from(req: v1::IssueTokenRequest) -> Result<Self, Error> {
        Ok(IssueParams {
            subject: req.subject,
            ttl: duration("ttl", req.ttl)?,
            audience: req.audience,
            extra: claims(req.claims, &req.claims_json)?,
            session: None,
            client_id: None,
        })
    }
}

impl From<IssuedToken> for v1::IssueTokenResponse {
    fn from(t: IssuedToken) -> Self {
        v1::IssueTokenResponse {
            token: t.token,
            jti: t.jti,
            expires_at: Some(timestamp(t.expires_at)),
            key_id: t.kid,
        }
    }
}

impl From<VerifyOutcome> for v1::VerifyTokenResponse {
    fn from(outcome: VerifyOutcome) -> Self {
        let mut resp = v1::VerifyTokenResponse {
            verdict: v1::Verdict::from(outcome.verdict) as i32,
            ..Default::default()
        };
        if let Some(token) = outcome.token {
            let c = &token.claims;
            resp.subject = c.subject.clone();
            resp.jti = c.jti.clone();
            resp.issued_at = c.issued_at.map(timestamp);
            resp.expires_at = Some(timestamp(c.expires_at));
            resp.audience = c.audience.clone();
            resp.key_id = token.kid.clone();
            resp.session_id = c.session_id.clone().unwrap_or_default();
            if !c.extra.is_empty() {
                resp.claims = Some(json_to_struct(&c.extra));
                resp.claims_json = Value::Object(c.extra.clone()).to_string();
            }
        }
        resp
    }
}

impl TryFrom<Option<revoke_token_request::Target>> for RevokeTarget {
    type Error = Error;
    fn try_from(target: Option<revoke_token_request::Target>) -> Result<Self, Error> {
        match target {
            Some(revoke_token_request::Target::Token(t)) => Ok(RevokeTarget::Token(t)),
            Some(revoke_token_request::Target::Jti(j)) => Ok(RevokeTarget::Jti(j)),
            None => Err(Error::invalid("target", "set either token or jti")),
        }
    }
}

impl From<RevokeOutcome> for v1::RevokeTokenResponse {
    fn from(o: RevokeOutcome) -> Self {
        v1::RevokeTokenResponse {
            newly_revoked: o.newly_revoked,
            expires_at: Some(timestamp(o.until)),
            jti: o.jti,
        }
    }
}

impl TryFrom<v1::IssueSessionRequest> for SessionParams {
    type Error = Error;
    fn try_from(req: v1::IssueSessionRequest) -> Result<Self, Error> {
        Ok(SessionParams {
            subject: req.subject,
            audience: req.audience,
            extra: claims(req.claims, &req.claims_json)?,
            access_ttl: duration("access_ttl", req.access_ttl)?,
            refresh_ttl: duration("refresh_ttl", req.refresh_ttl)?,
            client_id: None,
        })
    }
}

/// IssueSession and RefreshSession answer with the same fields.
macro_rules! from_session_tokens {
    ($($response:ident),+) => {$(
        impl From<SessionTokens> for v1::$response {
            fn from(t: SessionTokens) -> Self {
                v1::$response {
                    access_token: t.access_token,
                    refresh_token: t.refresh_token,
                    session_id: t.session_id,
                    access_expires_at: Some(timestamp(t.access_expires_at)),
                    refresh_expires_at: Some(timestamp(t.refresh_expires_at)),
                    key_id: t.key_id,
                }
            }
        }
    )+};
}
from_session_tokens!(IssueSessionResponse, RefreshSessionResponse);

impl TryFrom<Option<revoke_session_request::Target>> for SessionTarget {
    type Error = Error;
    fn try_from(target: Option<revoke_session_request::Target>) -> Result<Self, Error> {
        match target {
            Some(revoke_session_request::Target::SessionId(s)) => Ok(SessionTarget::SessionId(s)),
            Some(revoke_session_request::Target::Token(t)) => Ok(SessionTarget::Token(t)),
            None => Err(Error::invalid("target", "set either session_id or token")),
        }
    }
}

impl From<RevokeOutcome> for v1::RevokeSessionResponse {
    fn from(o: RevokeOutcome) -> Self {
        v1::RevokeSessionResponse {
            session_id: o.jti,
            newly_revoked: o.newly_revoked,
            expires_at: Some(timestamp(o.until)),
        }
    }
}

impl From<SubjectRevocation> for v1::RevokeSubjectResponse {
    fn from(r: SubjectRevocation) -> Self {
        v1::RevokeSubjectResponse {
            revoked_before: Some(timestamp_us(r.revoked_before_us)),
            expires_at: Some(timestamp(r.until)),
        }
    }
}

/// A protobuf Struct as a JSON object. Fails on NaN or infinite numbers,
/// which JSON cannot hold.
pub fn struct_to_json(s: prost_types::Struct) -> Result<Map<String, Value>, String> {
    s.fields
        .into_iter()
        .map(|(k, v)| value_to_json(v).map(|v| (k, v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> Result<Value, String> {
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers stay integers, as a JWT library elsewhere expects.
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                Value::Number(Number::from(n as i64))
            } else {
                Value::Number(Number::from_f64(n).ok_or("numbers must be finite")?)
            }
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)?),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect::<Result<_, _>>()?),
    })
}

/// A JSON object as a protobuf Struct.
pub fn json_to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
    }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_round_trips_through_json() {
        let json: Map<String, Value> = serde_json::from_str(
            r#"{"role":"admin","level":3,"ratio":0.5,"tags":["a","b"],"nested":{"ok":true,"none":null}}"#,
        )
        .unwrap();
        let back = struct_to_json(json_to_struct(&json)).unwrap();
        assert_eq!(back, json);
    }

    #[test]
    fn durations_must_be_well_formed_and_positive() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        let field = |r: Result<Option<Duration>, Error>| match r {
            Err(Error::InvalidArgument { field, reason }) => (field, reason),
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert_eq!(duration("ttl", d(1, 500)).unwrap(), Some(Duration::new(1, 500)));
        assert_eq!(duration("ttl", None).unwrap(), None);
        // 0 s + 1e9 ns would be 1 s to Duration::new: not a protobuf Duration.
        assert_eq!(field(duration("ttl", d(0, 1_000_000_000))).0, "ttl");
        assert!(field(duration("ttl", d(60, 1_999_999_999))).1.contains("nanos"));
        assert_eq!(field(duration("access_ttl", d(-1, 0))).0, "access_ttl");
        assert_eq!(field(duration("ttl", d(0, 0))).0, "ttl");
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let s = prost_types::Struct {
            fields: [(
                "x".to_string(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        assert!(struct_to_json(s).is_err());
    }
}
