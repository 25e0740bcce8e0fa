//! The generated gRPC types of `proto/invoicecase/v1`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("invoicecase.v1");

/// The descriptor set served by reflection (with the proto comments).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/invoicecase_descriptor.bin"));
