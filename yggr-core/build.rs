//! Compiles the wire schema with prost-build. protoc comes from the `protoc-bin-vendored`
//! crate unless `PROTOC` names one, so a machine with only the Rust toolchain builds.
//!
//! The schema lives in the workspace's `proto/raft.proto`; `raft.proto` in this crate is a
//! symbolic link to it, so that `cargo package` puts the schema inside the crate's archive.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_file = manifest_dir.join("raft.proto");
    let proto_dir = manifest_dir.clone();
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
