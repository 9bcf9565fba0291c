//! Run accounting: how parallel the run really was.
//!
//! * `critical_path_us`: the longest path through the DAG where each subtask weighs the measured
//!   duration of its last attempt, and `critical_path` the subtask ids along it;
//! * `critical_steps`: the longest path where each subtask weighs its steps (one tool call that
//!   ran to a result is one step), i.e. the steps no amount of parallelism can remove;
//! * `total_steps`: all steps taken; `parallelism = total_steps / critical_steps`.
//!
//! Agent stages (orchestrator + subagents) extend the step count per stage; for tool-call DAGs
//! each stage is one subtask, so the definition reduces to the above.

use serde::{Deserialize, Serialize};

use crate::engine::{RunEngine, RunState, SubtaskState};
use crate::ids::{RunId, SubtaskId};

/// The accounting of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// The run's name.
    pub name: String,
    /// Its state when the summary was taken.
    pub state: RunState,
    /// Subtasks in the run.
    pub total_subtasks: u32,
    /// Tool calls that succeeded.
    pub tool_calls_completed: u32,
    /// Tool calls that failed for good.
    pub tool_calls_failed: u32,
    /// Subtasks skipped because a dependency failed.
    pub tool_calls_skipped: u32,
    /// Attempts dispatched (retries included).
    pub attempts: u32,
    /// Submit to finish (or to now, while running), µs.
    pub wall_us: u64,
    /// Sum of all measured attempt durations, µs.
    pub total_work_us: u64,
    /// Longest path by measured durations, µs.
    pub critical_path_us: u64,
    /// The subtasks along that path, in execution order.
    pub critical_path: Vec<SubtaskId>,
    /// Longest path by steps.
    pub critical_steps: u64,
    /// All steps taken.
    pub total_steps: u64,
    /// `total_steps / critical_steps` (0 when nothing ran).
    pub parallelism: f64,
}

impl RunSummary {
    /// Computes the accounting of `engine` as of `now_us`.
    pub fn compute(engine: &RunEngine, now_us: u64) -> Self {
        let dag = engine.dag();
        let slots = engine.slots();
        let duration = |i: u32| {
            let s = &slots[i as usize];
            if s.steps > 0 { s.finished_us.saturating_sub(s.started_us) } else { 0 }
        };
        let (critical_path_us, path) = dag.longest_path(duration);
        let (critical_steps, _) = dag.longest_path(|i| u64::from(slots[i as usize].steps));
        let total_steps: u64 = slots.iter().map(|s| u64::from(s.steps)).sum();
        let total_work_us: u64 = (0..slots.len() as u32).map(duration).sum();
        let counts = engine.counts();
        let end = engine.finished_us().unwrap_or(now_us);
        Self {
            run_id: engine.run_id().clone(),
            name: dag.name().to_owned(),
            state: engine.state(),
            total_subtasks: dag.len() as u32,
            tool_calls_completed: counts.succeeded,
            tool_calls_failed: counts.failed,
            tool_calls_skipped: counts.skipped,
            attempts: counts.attempts,
            wall_us: end.saturating_sub(engine.submitted_us()),
            total_work_us,
            critical_path_us,
            critical_path: path
                .into_iter()
                .filter(|&i| slots[i as usize].state != SubtaskState::Blocked && slots[i as usize].steps > 0)
                .map(|i| dag.node(i).id.clone())
                .collect(),
            critical_steps,
            total_steps,
            parallelism: if critical_steps == 0 { 0.0 } else { total_steps as f64 / critical_steps as f64 },
        }
    }
}
