//! Starting a fork ([`crate::fork`]): a new run whose reused results are already recorded.

use swarm_core::RunEngine;

use super::Manager;
use crate::recovery::RecoveredRun;
use crate::watch::EventLog;

impl Manager {
    /// Adds a stored fork: its engine restored from the results it reuses (and, for a fork at
    /// an agent's step, that agent's transcript so far), the rest ready to run.
    pub(super) fn start_fork(&mut self, run: RecoveredRun, span: tracing::Span) {
        let RecoveredRun { header, dag, records, turns, calls, .. } = run;
        let seed = header.submitted_us ^ u64::from(self.next_run);
        let mut engine = RunEngine::restore(
            header.run_id.clone(),
            dag.clone(),
            self.config.retry.clone(),
            header.submitted_us,
            seed,
            records,
        );
        crate::fork::set_origin(&mut engine, &dag, header.forked_from.as_ref());
        engine.restore_agents(turns, calls);
        let log = EventLog::new(header.run_id.clone(), &dag, self.supervisor.now_us(), self.config.caps.max_run_events);
        let key = self.add_run(header.run_id.clone(), dag, header, Some(engine), Some(span), Some(log));
        // A fork whose every subtask was reused ends now.
        self.settle(key);
    }
}
