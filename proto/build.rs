//! Compiles `flujo/v1/ingest.proto` with a pure-Rust protobuf compiler (protox), so
//! building flujo needs no `protoc` on the machine, and writes the descriptor set that
//! gRPC server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "flujo/v1/ingest.proto";
    println!("cargo:rerun-if-changed=flujo");
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file(proto)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("flujo_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
