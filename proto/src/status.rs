//! The one place where domain errors become gRPC statuses, with rich details
//! (`google.rpc.BadRequest`, `RetryInfo`) in `grpc-status-details-bin`.

use crate::ApiError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The most bytes of field violations a status carries (about 5.5 KiB once base64-encoded).
const DETAILS_BUDGET: usize = 4096;

/// Maps a domain error to a precise gRPC status.
pub fn to_status(err: &ApiError) -> Status {
    match err {
        ApiError::InvalidSpec(violations) => {
            // Statuses travel in HTTP/2 headers, which clients cap (grpcio at 8 KiB by
            // default): violations are listed up to a byte budget and the rest counted.
            let (listed, mut more) = violations.more();
            let mut details = ErrorDetails::new();
            let mut bytes = 0;
            let mut shown = 0;
            for v in listed {
                bytes += v.field.len() + v.description.len() + 8;
                if bytes > DETAILS_BUDGET {
                    more += listed.len() - shown;
                    break;
                }
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
                shown += 1;
            }
            if more > 0 {
                let last = swarm_core::SpecViolations::more_entry(more, shown);
                details.add_bad_request_violation(last.field, last.description);
            }
            Status::with_error_details(Code::InvalidArgument, err.to_string(), details)
        }
        ApiError::InvalidArgument { field, description } => Status::with_error_details(
            Code::InvalidArgument,
            err.to_string(),
            ErrorDetails::with_bad_request_violation(field.clone(), description.clone()),
        ),
        ApiError::NotFound(_) => Status::not_found(err.to_string()),
        ApiError::FailedPrecondition(_) => Status::failed_precondition(err.to_string()),
        ApiError::Unavailable { retry_after, .. } => {
            Status::with_error_details(Code::Unavailable, err.to_string(), ErrorDetails::with_retry_info(*retry_after))
        }
        ApiError::NotLeader { leader } => {
            let mut details = ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(500)));
            let metadata =
                leader.iter().map(|l| ("leader".to_owned(), l.clone())).collect::<std::collections::HashMap<_, _>>();
            details.set_error_info("NOT_LEADER", "swarm", metadata);
            Status::with_error_details(Code::Unavailable, err.to_string(), details)
        }
        ApiError::ResourceExhausted(_) => Status::resource_exhausted(err.to_string()),
        ApiError::Busy { retry_after, .. } => Status::with_error_details(
            Code::ResourceExhausted,
            err.to_string(),
            ErrorDetails::with_retry_info(Some(*retry_after)),
        ),
        ApiError::Internal(_) => Status::internal(err.to_string()),
    }
}

/// The delay a status's `RetryInfo` asks for, if it carries one.
pub fn retry_after(status: &Status) -> Option<std::time::Duration> {
    status.get_error_details().retry_info().and_then(|r| r.retry_delay)
}

/// The leader's address carried by a `NOT_LEADER` status from a standby.
pub fn leader_hint(status: &Status) -> Option<String> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    (info.reason == "NOT_LEADER").then(|| info.metadata.get("leader").cloned()).flatten()
}

/// The field violations carried by an `INVALID_ARGUMENT` status, as (field, description).
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect())
        .unwrap_or_default()
}
