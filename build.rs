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

    let fds = protox::compile([proto], ["proto"])?;
    // `compile_fds` ignores `file_descriptor_set_path`, so the set that
    // reflection serves (with source info: grpcurl shows the comments) is
    // written here.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("invoicecase_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

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
