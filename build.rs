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
    git_sha();
    // tonic-prost-build 0.14 no longer emits this itself.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=third_party/envoy-api");
    Ok(())
}

/// Sets `REVOKD_GIT_SHA` for the crate (`revokd --version`,
/// `revokd_build_info`): from the environment (the image build passes it as
/// a build argument, its context has no .git), else from `git`, else
/// "unknown". Re-run when HEAD moves.
fn git_sha() {
    println!("cargo:rerun-if-env-changed=REVOKD_GIT_SHA");
    let sha = std::env::var("REVOKD_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let sha = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !sha.is_empty()).then_some(sha)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Some(reference) = head.strip_prefix("ref: ") {
            let path = format!(".git/{}", reference.trim());
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
            println!("cargo:rerun-if-changed=.git/packed-refs");
        }
    }
    println!("cargo:rustc-env=REVOKD_GIT_SHA={}", sha.trim());
}
