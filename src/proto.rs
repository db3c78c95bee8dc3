//! The generated gRPC code (`revokd.v1`) and conversions between protobuf
//! well-known types and the JSON values claims are made of.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

/// `revokd.v1`: messages, the `TokenService` server and client.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("revokd.v1");
}

/// The encoded descriptor set of every proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/revokd_descriptor.bin"));

/// A Unix time in seconds as a protobuf Timestamp.
pub fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
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
