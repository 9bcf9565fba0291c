//! The run manager's counters.

/// Manager counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagerStats {
    /// Attempts dispatched.
    pub dispatched: u64,
    /// Attempts adopted from workers after a failover.
    pub adopted: u64,
    /// Reports received.
    pub reports: u64,
    /// Reports for attempts that were no longer current.
    pub stale_reports: u64,
    /// Loop turns.
    pub turns: u64,
    /// Workers connected now.
    pub workers: u32,
    /// Runs not yet ended.
    pub active_runs: u32,
    /// Store transactions committed by the outbox.
    pub store_txns: u64,
    /// Store operations written by the outbox.
    pub store_ops: u64,
    /// True while resumed runs wait for workers.
    pub recovering: bool,
    /// Backups cancelled because ready primary attempts needed their slots.
    pub preempted_backups: u64,
    /// Chunks of agents' partial output received from workers.
    pub output_chunks: u64,
    /// Their encoded size (bytes on the wire, before HTTP/2 framing).
    pub output_bytes: u64,
    /// Live runs whose workers were told that someone follows their output.
    pub followed_runs: u32,
}
