//! Swarm's domain, free of I/O: ids, run specs, DAG validation, retry policy, the pure
//! [`RunEngine`](engine::RunEngine) state machine and run accounting ([`RunSummary`](summary::RunSummary)).
//!
//! Nothing here talks to the network, a store or a clock: time comes in as arguments, so every
//! decision the cluster makes can be unit- and property-tested.

pub mod agent;
pub mod artifact;
pub mod breakdown;
pub mod dag;
pub mod engine;
pub mod error;
pub mod fence;
pub mod fork;
pub mod ids;
pub mod placement;
pub mod retry;
pub mod spec;
pub mod summary;
pub mod text;
pub mod time;
pub mod violation;

pub use dag::Dag;
pub use engine::{Action, EngineEvent, RestoredSubtask, RunEngine, RunState, SubtaskState};
pub use error::{FailureKind, Retryable};
pub use ids::{AttemptNo, ConnId, Fence, RunId, RunKey, Seq, SubtaskId, SubtaskIx, WorkerId};
pub use retry::RetryPolicy;
pub use spec::{Limits, RunSpec, SubtaskKind, SubtaskSpec};
pub use summary::{RunSummary, WallBreakdown};
pub use violation::{SpecViolation, SpecViolations};
