//! Compiles `drover/agent/v1/agent.proto` with protox (pure Rust, no protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=drover");
    let fds = protox::compile(["drover/agent/v1/agent.proto"], ["."])?;
    // Smaller per-stream buffers than tonic's 8 KiB (src/codec.rs).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
