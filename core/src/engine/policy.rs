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
    /// For an agent's later attempt, the worker of its last one, which holds its workspace
    /// and warm MCP sessions: preferred when it fits and has a free slot (soft).
    pub prefer: Option<&'a WorkerId>,
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
        let prefer =
            slot.worker.as_ref().filter(|w| slot.agent.is_some() && slot.attempt.0 > 0 && !slot.failed_on.contains(w));
        PlacementNeeds { need: self.dag.node(subtask).requirement(), avoid: &slot.failed_on, prefer }
    }

    /// Tells the engine that `subtask`, at the head of the run's queue, could not be placed
    /// now for its placement (no worker has its labels, or its resources are held). The run
    /// is held back until it dispatches again (its other ready subtasks wait behind this one),
    /// so the ready subtasks' waits in that span are `waiting_for_placement` in the wall
    /// breakdown rather than waiting for a slot.
    pub fn held_by_placement(&mut self, subtask: SubtaskIx, now_us: u64) {
        if self.slots.get(subtask.index()).is_some_and(|s| s.state == crate::SubtaskState::Ready) {
            self.held.hold(now_us);
        }
    }
}

/// The spans in which a run was held back by a placement: closed spans with the held time
/// before each (so the held time within any window is two binary searches), and an open one.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldSpans {
    /// (start, end, held before start), in time order.
    closed: Vec<(u64, u64, u64)>,
    open: Option<u64>,
}

impl HeldSpans {
    pub(crate) fn hold(&mut self, now_us: u64) {
        self.open.get_or_insert(now_us);
    }

    /// The run dispatched: the open span (if any) ends.
    pub(crate) fn release(&mut self, now_us: u64) {
        if let Some(start) = self.open.take() {
            let before = self.until(start);
            self.closed.push((start, now_us.max(start), before));
        }
    }

    /// Held time in [0, t].
    fn until(&self, t: u64) -> u64 {
        let k = self.closed.partition_point(|&(start, _, _)| start <= t);
        let closed = match k.checked_sub(1).map(|k| self.closed[k]) {
            Some((start, end, before)) => before + t.min(end) - start,
            None => 0,
        };
        let open = self.open.filter(|&s| t > s).map_or(0, |s| t - s);
        closed + open
    }

    /// Held time in [from, to].
    pub(crate) fn within(&self, from: u64, to: u64) -> u64 {
        self.until(to).saturating_sub(self.until(from))
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
    fn held_spans_count_only_the_time_inside_the_window() {
        let mut h = HeldSpans::default();
        h.hold(100);
        h.hold(150); // already held
        h.release(300);
        h.release(350); // not held
        h.hold(500);
        assert_eq!(h.within(0, 1000), 200 + 500);
        assert_eq!(h.within(200, 600), 100 + 100);
        assert_eq!(h.within(300, 500), 0);
        h.release(700);
        assert_eq!(h.within(0, 1000), 200 + 200);
        assert_eq!(h.within(650, 800), 50);
    }

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
