//! Swarm's wire types (package `swarm.v1`), their conversions to and from the domain in
//! `swarm-core`, and the one mapping of domain errors to `tonic::Status`.

pub mod chunked;
pub mod compat;
pub mod convert;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod status;

pub use error::ApiError;

/// Generated code for `swarm.v1`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("swarm.v1");

    /// The encoded descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("swarm_descriptor");
}
