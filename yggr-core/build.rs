//! Compiles `proto/raft.proto` with prost-build. protoc comes from the `protoc-bin-vendored`
//! crate unless `PROTOC` names one, so a machine with only the Rust toolchain builds.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("..").join("proto");
    let proto_file = proto_dir.join("raft.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    config.bytes(["."]);
    config.compile_protos(&[proto_file], &[proto_dir])?;
    Ok(())
}
