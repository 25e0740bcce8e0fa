//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes
//! the descriptor set that server reflection serves; generates the server of
//! `grpc.health.v1.Health` again, from tonic-health's own descriptor, so that
//! it decodes with the service's codec.

use std::{env, fs, path::PathBuf};

use prost::Message;
use tonic_prost_build::FileDescriptorSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/invoicecase/v1/invoice_case.proto";
    println!("cargo:rerun-if-changed=proto");
    // embed_migrations! reads migrations/ at compile time.
    println!("cargo:rerun-if-changed=migrations");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files([proto])?;
    // `compile_fds` ignores `file_descriptor_set_path`, so the set that
    // reflection serves is written here: with source info (grpcurl shows
    // the comments), and encoded by protox itself, which keeps the custom
    // options (`google.api.field_behavior`) that a prost
    // `FileDescriptorSet` would drop.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("invoicecase_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .codec_path("crate::codec::ValidatingCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;

    // tonic-health's generated server decodes with prost's codec, which
    // answers a malformed body INTERNAL. Only the server is generated here:
    // the messages stay tonic-health's (extern_path), so that its
    // HealthService, which the HealthReporter drives, answers the calls.
    let health = FileDescriptorSet::decode(tonic_health::pb::FILE_DESCRIPTOR_SET)?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::ValidatingCodec")
        .extern_path(".grpc.health.v1", "::tonic_health::pb")
        .build_server(true)
        .build_client(false)
        .compile_fds(health)?;
    Ok(())
}
