//! Loading runs from the store when a coordinator becomes leader.
//!
//! Active runs come back as engines rebuilt from their spec and the subtask records that were
//! written (finished tool calls keep their results and are not re-run); ended runs come back
//! as headers, for listing and `GetRun`.

use std::sync::Arc;

use swarm_core::engine::{Failure, RestoredSubtask};
use swarm_core::{AttemptNo, Dag, Limits, RunId, WorkerId};
use swarm_store::repo::{RunHeader, SubtaskRecord};
use swarm_store::{RunRepo, StoreError};
use tracing::{info, warn};

/// An active run to resume.
pub struct RecoveredRun {
    pub header: RunHeader,
    pub dag: Arc<Dag>,
    pub records: Vec<(u32, RestoredSubtask)>,
}

/// What the store holds.
#[derive(Default)]
pub struct Recovered {
    pub active: Vec<RecoveredRun>,
    pub ended: Vec<RunHeader>,
}

/// A stored subtask record as the engine's restored state.
pub fn restored(record: SubtaskRecord) -> RestoredSubtask {
    RestoredSubtask {
        state: record.state,
        attempt: AttemptNo(record.attempt),
        worker: record.worker.map(WorkerId::from),
        started_us: record.started_us,
        finished_us: record.finished_us,
        steps: record.steps,
        output: record.output.map(Arc::from),
        output_ref: record.output_ref.map(Arc::from),
        error: record.error_kind.map(|kind| Failure { kind, message: record.error_message.unwrap_or_default() }),
    }
}

/// Reads every run header, and spec and records of the active ones.
pub async fn load(repo: &RunRepo, limits: &Limits) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let mut after: Option<RunId> = None;
    loop {
        let (headers, more) = repo.headers(after.as_ref(), 500).await?;
        after = headers.last().map(|h| h.run_id.clone());
        for header in headers {
            if header.state.is_terminal() {
                out.ended.push(header);
                continue;
            }
            let Some(spec) = repo.spec(&header.run_id).await? else {
                warn!(run_id = %header.run_id, "active run without a spec; skipped");
                continue;
            };
            // Stored specs passed validation once; limits may have shrunk since, so allow them.
            let lenient = Limits { max_subtasks: usize::MAX, max_args_bytes: usize::MAX, ..limits.clone() };
            let dag = match Dag::build(&spec, &lenient) {
                Ok(dag) => Arc::new(dag),
                Err(e) => {
                    warn!(run_id = %header.run_id, error = %e, "stored spec no longer valid; skipped");
                    continue;
                }
            };
            let mut records = Vec::new();
            for (id, record) in repo.subtasks(&header.run_id).await? {
                if let Some(i) = dag.index_of(id.as_str()) {
                    records.push((i, restored(record)));
                }
            }
            info!(run_id = %header.run_id, recorded = records.len(), total = dag.len(), "resuming run");
            out.active.push(RecoveredRun { header, dag, records });
        }
        if !more {
            return Ok(out);
        }
    }
}
