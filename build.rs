//! Compiles `proto/` to Rust with protox (pure Rust), so no system `protoc` is needed.

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
    // tonic-prost-build 0.14 no longer emits this itself.
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
