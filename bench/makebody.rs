//! Writes the request body h2load sends in `bench/run.sh`: one gRPC message
//! frame (byte 0 = not compressed, a 4-byte big-endian length, then the
//! protobuf-encoded `revokd.v1.VerifyTokenRequest { token, audience: "" }`).
//!
//! Usage: `cargo run --release --example makebody -- TOKEN OUT_FILE`.

use prost::Message;
use revokd::proto::v1::VerifyTokenRequest;

/// The gRPC length-prefixed frame of one uncompressed message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let len = u32::try_from(payload.len()).expect("a token fits in a gRPC frame");
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(token), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: makebody TOKEN OUT_FILE".into());
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    let body = grpc_frame(&VerifyTokenRequest {
        token,
        audience: String::new(),
    });
    std::fs::write(&out, &body).map_err(|e| format!("{out}: {e}"))?;
    eprintln!("makebody: wrote {} bytes to {out}", body.len());
    Ok(())
}
