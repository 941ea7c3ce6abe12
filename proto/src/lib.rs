//! # flujo-proto
//!
//! flujo's gRPC contract, shared by the server (`flujo`) and the load generator
//! (`flujo-loadgen`).
//!
//! # Layout
//! - `flujo/v1/ingest.proto`: the `flujo.v1.Ingest` service (compiled by `build.rs`
//!   with protox, so no `protoc` is needed).
//! - [`v1`]: the generated messages, client and server.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors that server reflection serves.
//! - [`code_name`]: the canonical name of a gRPC status code, as acks and logs spell it.

use tonic::Code;

/// Code generated from `flujo/v1/ingest.proto`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("flujo.v1");
}

/// Encoded descriptors of the proto files, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("flujo_descriptor");

/// The canonical name of a gRPC status code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_canonical_spelling() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
    }

    #[test]
    fn the_descriptor_set_names_the_ingest_service() {
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        assert!(text.contains("flujo.v1"), "package missing");
        assert!(text.contains("Ingest"), "service missing");
    }
}
