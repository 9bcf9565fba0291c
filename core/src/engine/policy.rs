//! Dispatch policies the engine owns, so that every shell applies the same rules: a run's
//! concurrency cap, where a retry should go, and when a silent attempt counts as lost.

use std::borrow::Cow;

use super::RunEngine;
use crate::ids::{SubtaskIx, WorkerId};

/// Heartbeat intervals of silence after which a running attempt is declared lost.
pub const SILENT_BEATS: u64 = 3;

/// How long an attempt may go unheard of before it is declared lost, for workers that beat
/// every `heartbeat_interval_us`.
pub fn silence_limit_us(heartbeat_interval_us: u64) -> u64 {
    heartbeat_interval_us.saturating_mul(SILENT_BEATS)
}

/// What placing a subtask needs: the capability a worker must offer, and the workers to avoid
/// when another one is free.
#[derive(Debug)]
pub struct PlacementNeeds<'a> {
    /// A tool's name, or `@model:NAME` for an agent (see `Node::requirement`).
    pub need: Cow<'a, str>,
    /// Workers the subtask failed on (a retry goes elsewhere when it can).
    pub avoid: &'a [WorkerId],
}

impl RunEngine {
    /// The next ready subtask to dispatch, unless the run is at its `max_concurrency` (it then
    /// waits for its own attempts to end). Give it back with [`RunEngine::unpop`] if it cannot
    /// be placed now.
    pub fn pop_dispatchable(&mut self) -> Option<SubtaskIx> {
        let cap = self.dag.max_concurrency();
        if cap > 0 && self.counts.running >= cap {
            return None;
        }
        self.pop_ready()
    }

    /// What placing `subtask` needs (see [`PlacementNeeds`]).
    pub fn placement(&self, subtask: SubtaskIx) -> PlacementNeeds<'_> {
        let slot = &self.slots[subtask.index()];
        PlacementNeeds { need: self.dag.node(subtask).requirement(), avoid: &slot.failed_on }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::dag::Dag;
    use crate::engine::EngineEvent;
    use crate::ids::{Fence, RunId, SubtaskIx};
    use crate::retry::RetryPolicy;
    use crate::spec::{Limits, RunSpec, SubtaskSpec};

    #[test]
    fn the_concurrency_cap_holds_back_dispatch_until_an_attempt_ends() {
        let subtasks = (0..3).map(|i| SubtaskSpec::tool(format!("s{i}").as_str(), "echo", json!({}))).collect();
        let mut spec = RunSpec::new("cap", subtasks);
        spec.max_concurrency = 2;
        let dag = Dag::build(&spec, &Limits::default()).expect("valid");
        let mut e = RunEngine::new(RunId::from("r"), Arc::new(dag), RetryPolicy::default(), 0, 1);
        let mut out = Vec::new();
        for fence in 1..=2 {
            let s = e.pop_dispatchable().expect("under the cap");
            e.apply(
                EngineEvent::Dispatched { subtask: s, worker: WorkerId::from("w"), fence: Fence(fence) },
                0,
                &mut out,
            );
        }
        assert_eq!(e.pop_dispatchable(), None, "two running: at the cap");
        e.apply(
            EngineEvent::Succeeded {
                subtask: SubtaskIx(0),
                fence: Fence(1),
                started_us: 0,
                finished_us: 5,
                output: "1".into(),
                artifacts: None,
            },
            5,
            &mut out,
        );
        assert!(e.pop_dispatchable().is_some(), "one ended: room again");
        assert_eq!(e.placement(SubtaskIx(0)).need, "echo");
        assert!(e.placement(SubtaskIx(0)).avoid.is_empty());
        assert_eq!(silence_limit_us(5_000_000), 15_000_000);
        assert_eq!(silence_limit_us(u64::MAX), u64::MAX);
    }
}
