//! Compiles `drover/agent/v1/agent.proto` with protox (pure Rust, no protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=drover");
    let fds = protox::compile(["drover/agent/v1/agent.proto"], ["."])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
