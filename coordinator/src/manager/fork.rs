//! Starting a fork ([`crate::fork`]): a new run whose reused results are already recorded.

use std::collections::HashMap;
use std::sync::Arc;

use swarm_core::agent::Turn;
use swarm_core::engine::RestoredSubtask;
use swarm_core::{Dag, RunEngine, SubtaskIx};
use swarm_store::repo::RunHeader;

use super::Manager;
use crate::recovery::RecoveredRun;
use crate::watch::EventLog;

impl Manager {
    /// Adds a stored fork: its engine restored from the results it reuses (and, for a fork at
    /// an agent's step, that agent's transcript so far), the rest ready to run.
    pub(super) fn start_fork(&mut self, run: RecoveredRun, span: tracing::Span) {
        let RecoveredRun { header, dag, records, turns, calls, .. } = run;
        let engine = self.rebuilt_engine(&header, &dag, records, turns, calls);
        let log = EventLog::new(header.run_id.clone(), &dag, self.supervisor.now_us(), self.config.caps.max_run_events);
        let key = self.add_run(header.run_id.clone(), dag, header, Some(engine), Some(span), Some(log));
        // A fork whose every subtask was reused ends now.
        self.settle(key);
    }

    /// A run's engine rebuilt from its records and transcripts (after a failover, or for a
    /// fork), told where a fork came from before its transcripts are counted.
    pub(super) fn rebuilt_engine(
        &self,
        header: &RunHeader,
        dag: &Arc<Dag>,
        records: Vec<(SubtaskIx, RestoredSubtask)>,
        turns: HashMap<SubtaskIx, Vec<Arc<Turn>>>,
        calls: HashMap<SubtaskIx, String>,
    ) -> RunEngine {
        let seed = header.submitted_us ^ u64::from(self.next_run);
        let mut engine = RunEngine::restore(
            header.run_id.clone(),
            dag.clone(),
            self.config.retry.clone(),
            header.submitted_us,
            seed,
            records,
        );
        crate::fork::set_origin(&mut engine, dag, header.forked_from.as_ref());
        engine.restore_agents(turns, calls);
        engine
    }
}
