//! Generates the CSI v1 messages and the tonic server/client glue from proto/csi.proto.
//!
//! protoc must be installed: Debian's `protobuf-compiler` package (ci/test.sh installs it),
//! or a protoc named by the PROTOC environment variable.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = std::env::var_os("PROTOC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("protoc"));
    // A clear message instead of prost-build's generic one when protoc is missing.
    if Command::new(&protoc).arg("--version").output().is_err() {
        panic!(
            "ballast-csi needs protoc to build: `apt-get install protobuf-compiler` \
             (Debian), or set PROTOC to a protoc binary (tried {})",
            protoc.display()
        );
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // JSON for `ballast-csi call` (requests in, answers out): every field optional as
        // in protobuf, oneofs as {"mount": {...}}, enum fields as their numbers.
        .message_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .enum_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
        )
        .compile_protos(&["proto/csi.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("protoc on proto/csi.proto: {e}"));
}
