//! Rebuilding an engine from what was recorded: after a failover, and for a fork (whose
//! reused results are recorded under the new run before it starts).

use std::sync::Arc;

use super::*;

impl RunEngine {
    /// Rebuilds an engine from recorded subtask ends (by subtask index). Subtasks without a
    /// record start over: ready if their dependencies succeeded, else blocked. Call
    /// [`RunEngine::settle`] afterwards: the run may already be complete.
    pub fn restore(
        run_id: RunId,
        dag: Arc<Dag>,
        policy: RetryPolicy,
        submitted_us: u64,
        seed: u64,
        records: impl IntoIterator<Item = (SubtaskIx, RestoredSubtask)>,
    ) -> Self {
        let mut engine = Self::new(run_id, dag, policy, submitted_us, seed);
        engine.ready.clear();
        for (i, r) in records {
            let Some(slot) = engine.slots.get_mut(i.index()) else { continue };
            if r.state == SubtaskState::Waiting {
                // A parked approval: parked again, its timeout counting from the first time.
                slot.first_ready_us = r.ready_us;
                slot.first_started_us = r.first_started_us;
                continue;
            }
            if !r.state.is_terminal() {
                continue;
            }
            slot.state = r.state;
            slot.attempt = r.attempt;
            slot.worker = r.worker;
            slot.started_us = r.started_us;
            slot.finished_us = r.finished_us;
            slot.steps = r.steps;
            slot.output = r.output;
            slot.output_ref = r.output_ref;
            slot.artifacts = r.artifacts;
            slot.error = r.error;
            slot.first_ready_us = r.ready_us;
            slot.first_started_us = r.first_started_us;
            slot.reused = r.reused;
            engine.counts.open -= 1;
            if r.reused {
                // Made by the run this one was forked from: no attempt of this run, no budget.
                // (An agent's reused calls are counted from its transcript, in `restore_agents`.)
                if matches!(engine.dag.node(i).work, crate::dag::Work::Tool) {
                    engine.counts.calls_reused = engine.counts.calls_reused.saturating_add(1);
                }
            } else {
                engine.counts.attempts = engine.counts.attempts.saturating_add(r.attempt.0);
            }
            match r.state {
                SubtaskState::Succeeded => engine.counts.succeeded += 1,
                SubtaskState::Failed => engine.counts.failed += 1,
                // Cancelled with its run (only an ended run has such records).
                SubtaskState::Cancelled => {}
                _ => engine.counts.skipped += 1,
            }
        }
        for i in 0..engine.slots.len() {
            if engine.slots[i].state == SubtaskState::Succeeded {
                for k in 0..engine.dag.node(SubtaskIx(i as u32)).dependents.len() {
                    let d = engine.dag.node(SubtaskIx(i as u32)).dependents[k].index();
                    engine.slots[d].pending_deps -= 1;
                }
            }
        }
        for i in 0..engine.slots.len() {
            let slot = &mut engine.slots[i];
            if !slot.state.is_terminal() {
                slot.state = if slot.pending_deps == 0 { SubtaskState::Ready } else { SubtaskState::Blocked };
                if slot.state == SubtaskState::Ready {
                    engine.ready.push_back(SubtaskIx(i as u32));
                }
            }
        }
        engine
    }

    /// The run this one was forked from (see [`Slot::reused`]).
    pub fn forked_from(&self) -> Option<&RunId> {
        self.forked_from.as_ref()
    }
    /// Records the run this one was forked from.
    pub fn set_forked_from(&mut self, origin: Option<RunId>) {
        self.forked_from = origin;
    }
    /// Records a fork at agent `at`'s step `step`: its first `step` turns were made by the
    /// original run (counted as reused by [`RunEngine::restore_agents`], which comes after).
    pub fn set_fork_point(&mut self, at: SubtaskIx, step: u32) {
        self.fork_point = Some((at, step));
    }
}
