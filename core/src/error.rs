//! Failure classification shared by the engine, workers and the API.

use serde::{Deserialize, Serialize};

/// Whether an error is worth retrying. Every error type of the project implements it.
pub trait Retryable {
    /// True when the same operation may succeed if tried again.
    fn is_retryable(&self) -> bool;
}

/// Why an attempt failed. The class decides whether the engine retries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A passing fault (connection reset, 503, a flaky tool): retried.
    Transient,
    /// Will fail again (bad arguments, unknown tool): not retried.
    Permanent,
    /// The attempt ran past its timeout: retried.
    Timeout,
    /// The attempt was cancelled: not retried.
    Cancelled,
    /// The worker running the attempt went away: retried at once, on another worker if possible.
    WorkerLost,
    /// The tool ran and reported an error itself (an MCP `isError` result): not retried.
    ToolReported,
}

impl FailureKind {
    /// The stable lowercase name used in events, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::WorkerLost => "worker_lost",
            Self::ToolReported => "tool_reported",
        }
    }
}

impl Retryable for FailureKind {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient | Self::Timeout | Self::WorkerLost)
    }
}

/// Why a request to the cluster was refused; mapped to a gRPC status at the edge
/// (`swarm_proto::status`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The run spec has errors; every one is listed.
    #[error(transparent)]
    InvalidSpec(#[from] crate::dag::SpecViolations),
    /// One request field is wrong.
    #[error("{field}: {description}")]
    InvalidArgument {
        /// The field path.
        field: String,
        /// What is wrong.
        description: String,
    },
    /// The named resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request does not fit the resource's state (e.g. cancelling a finished run).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The cluster cannot serve now; try again later.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// When to try again.
        retry_after: Option<std::time::Duration>,
    },
    /// This coordinator is a standby; `leader` is the leader's address when known.
    #[error("not the leader{}", .leader.as_deref().map(|l| format!("; the leader is at {l}")).unwrap_or_default())]
    NotLeader {
        /// The leader's advertised address.
        leader: Option<String>,
    },
    /// A quota or size limit was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An [`ApiError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), description: description.into() }
    }
}

impl Retryable for ApiError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::NotLeader { .. })
    }
}
