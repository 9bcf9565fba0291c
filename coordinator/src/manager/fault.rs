//! Panics, caught: a run whose event makes the engine (or the manager's handling of it) panic
//! is quarantined, and a panic the manager cannot pin on one run ends the coordinator's
//! leadership and process ([`Fatal`]). Also the test-only fault hook that provokes both.

use std::sync::{Arc, OnceLock};

use swarm_core::RunEngine;
use swarm_core::engine::EngineEvent;
use tokio_util::sync::CancellationToken;

/// The environment variable that arms the fault hook (test-only; see [`FaultHook`]).
pub const FAULT_ENV: &str = "SWARM_FAULT_INJECTION";

/// A test-only hook that makes the coordinator panic on purpose, so the tests can prove a
/// panic never wedges the cluster. Read from [`FAULT_ENV`] at startup:
///
/// - `engine-panic:SUBTASK`: handling a result of subtask `SUBTASK` (in any run) panics inside
///   the engine's guarded section: that run is quarantined;
/// - `manager-panic:RUN_NAME`: submitting a run named `RUN_NAME` panics in the manager itself:
///   the coordinator goes NOT_SERVING, resigns and exits non-zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultHook {
    EnginePanic { subtask: String },
    ManagerPanic { run_name: String },
}

impl FaultHook {
    /// The hook armed in this process's environment, if any.
    pub fn from_env() -> Option<Self> {
        let value = std::env::var(FAULT_ENV).ok()?;
        match value.split_once(':') {
            Some(("engine-panic", s)) => Some(Self::EnginePanic { subtask: s.to_owned() }),
            Some(("manager-panic", r)) => Some(Self::ManagerPanic { run_name: r.to_owned() }),
            _ => {
                tracing::warn!(value = %value, "{FAULT_ENV} not understood; no fault armed");
                None
            }
        }
    }

    /// Panics if the hook targets `event`'s subtask.
    pub(super) fn before_apply(hook: Option<&Self>, engine: &RunEngine, event: &EngineEvent) {
        let Some(Self::EnginePanic { subtask }) = hook else { return };
        let target = match event {
            EngineEvent::Succeeded { subtask, .. } | EngineEvent::Failed { subtask, .. } => *subtask,
            _ => return,
        };
        if engine.dag().node(target).id.as_str() == subtask {
            panic!("fault injection: engine panic on subtask `{subtask}`");
        }
    }

    /// Panics if the hook targets a run named `name`.
    pub(super) fn on_submit(hook: Option<&Self>, name: &str) {
        if let Some(Self::ManagerPanic { run_name }) = hook
            && run_name == name
        {
            panic!("fault injection: manager panic on run `{name}`");
        }
    }
}

pub use swarm_core::error::panic_message;

/// The process-wide "cannot go on" signal: set once by a manager that panicked outside any
/// run's guard. It cancels the node's root token (health goes NOT_SERVING, the leader resigns,
/// the servers stop) and keeps the reason for the process to exit non-zero with.
#[derive(Clone, Debug, Default)]
pub struct Fatal {
    reason: Arc<OnceLock<String>>,
    shutdown: Option<CancellationToken>,
}

impl Fatal {
    /// A signal that cancels `shutdown` when tripped.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { reason: Arc::default(), shutdown: Some(shutdown) }
    }

    /// Records `reason` (the first one wins) and shuts the node down.
    pub fn trip(&self, reason: String) {
        let _ = self.reason.set(reason);
        if let Some(s) = &self.shutdown {
            s.cancel();
        }
    }

    /// Why the node could not go on, once tripped.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}
