//! Compiles `proto/` (revokd's API) and the vendored Envoy external
//! authorization API (`third_party/envoy-api`) to Rust with protox (pure
//! Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/revokd/v1/token_service.proto"];
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The reflection service serves this descriptor set.
    std::fs::write(
        out_dir.join("revokd_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    // Envoy's ext_authz v3: the server, and a client for the tests.
    let envoy = protox::compile(["envoy/service/auth/v3/external_auth.proto"], ["third_party/envoy-api"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(envoy)?;
    // tonic-prost-build 0.14 no longer emits this itself.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party/envoy-api");
    Ok(())
}
