//! `GetRun` tells only what is durable: a result, or the run's end, whose record is still on
//! its way to the store is shown as not yet there (the subtask `RUNNING` without its output,
//! the run `RUNNING`), so a client that reads a run as ended, then reads it again through the
//! next leader after a failover, sees the same end and the same results (read-your-writes
//! across failover). The answer never waits for the store: while etcd is full or out of reach,
//! `GetRun` still answers, with what it holds.

use swarm_core::RunId;
use swarm_proto::pb;

use super::{Listed, Manager, Page, RunPage};

impl Manager {
    /// `Command::Get`: the run as the store would tell it (see the module docs).
    pub(super) fn get_durable(&self, run_id: &RunId, page: Option<Page>) -> Option<RunPage> {
        let mut found = self.page_by_id(run_id, page)?;
        let Some(Listed::Live(key)) = self.listing.get(run_id) else { return Some(found) };
        let settled = self.outbox.settled();
        let run = &mut found.run;
        if self.ended.iter().any(|&(k, mark)| k == *key && mark > settled) {
            run.state = pb::RunState::Running as i32;
            run.finished_at = None;
        }
        if let Some(entry) = self.runs.get(key) {
            let dag = entry.engine.dag();
            for s in &mut run.subtasks {
                let pending = dag.index_of(&s.id).is_some_and(|i| entry.unsettled.pending(i, settled));
                if pending && s.state == pb::SubtaskState::Succeeded as i32 {
                    s.state = pb::SubtaskState::Running as i32;
                    s.finished_at = None;
                    s.output_json.clear();
                    s.output_ref.clear();
                }
            }
        }
        Some(found)
    }
}
