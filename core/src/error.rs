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
    /// The coordinator itself failed on this run (a bug: a panic, caught and quarantined): not
    /// retried. Only runs end with it.
    Internal,
}

impl FailureKind {
    /// Every failure class.
    pub const ALL: [Self; 7] = [
        Self::Transient,
        Self::Permanent,
        Self::Timeout,
        Self::Cancelled,
        Self::WorkerLost,
        Self::ToolReported,
        Self::Internal,
    ];

    /// The stable lowercase name used in events, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::WorkerLost => "worker_lost",
            Self::ToolReported => "tool_reported",
            Self::Internal => "internal",
        }
    }
}

/// The longest failure message kept: a longer one (an MCP error that embeds a whole output, a
/// stack trace) is cut at a character boundary and marked, so errors never make records or
/// messages large.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 16 * 1024;

/// `message` cut to [`MAX_ERROR_MESSAGE_BYTES`] (at a character boundary), saying how much was
/// cut.
pub fn bounded_message(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        let total = message.len();
        let mut cut = MAX_ERROR_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!("… ({} of {total} bytes cut)", total - cut));
    }
    message
}

/// The text of a caught panic's payload (`&str` or `String`; other payloads say so).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl Retryable for FailureKind {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient | Self::Timeout | Self::WorkerLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_char_boundary_and_say_so() {
        assert_eq!(bounded_message("short".into()), "short");
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES); // 2 bytes each
        let cut = bounded_message(long);
        assert!(cut.len() < MAX_ERROR_MESSAGE_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("({} of {} bytes cut)", MAX_ERROR_MESSAGE_BYTES, 2 * MAX_ERROR_MESSAGE_BYTES)));
    }
}
