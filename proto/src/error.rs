//! Why a request to the cluster was refused ([`ApiError`]): the API's error vocabulary, next
//! to the one place that maps it to gRPC statuses ([`crate::status`]).

/// Why a request to the cluster was refused; mapped to a gRPC status at the edge
/// (`swarm_proto::status`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The run spec has errors; every one is listed.
    #[error(transparent)]
    InvalidSpec(#[from] swarm_core::SpecViolations),
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
    /// The cluster is at an admission cap (active runs, queued subtasks): nothing was
    /// stored; the same request may be accepted after `retry_after`.
    #[error("{message}")]
    Busy {
        /// Which cap, and its value.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
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

impl swarm_core::Retryable for ApiError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::NotLeader { .. } | Self::Busy { .. })
    }
}
