//! Loading runs from the store when a coordinator becomes leader.
//!
//! Active runs come back as engines rebuilt from their spec and the subtask records that were
//! written (finished tool calls keep their results and are not re-run); ended runs come back
//! as headers, for listing and `GetRun`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use swarm_core::agent::{AgentSpec, Turn};
use swarm_core::engine::{Failure, RestoredSubtask};
use swarm_core::{AttemptNo, Dag, Limits, RunId, SubtaskId, WorkerId};
use swarm_store::repo::{RunHeader, SubtaskRecord};
use swarm_store::{RunRepo, StoreError};
use tracing::{info, warn};

/// An active run to resume.
pub struct RecoveredRun {
    pub header: RunHeader,
    pub dag: Arc<Dag>,
    pub records: Vec<(u32, RestoredSubtask)>,
    /// Agent transcripts, by subtask index.
    pub turns: HashMap<u32, Vec<Arc<Turn>>>,
    /// The `assign_task` call each spawned subagent answers.
    pub calls: HashMap<u32, String>,
}

/// One spawned subagent, as written by the manager.
#[derive(Deserialize)]
struct SpawnRecord {
    id: String,
    agent: AgentSpec,
    #[serde(default)]
    call_id: String,
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
            let mut dag = match Dag::build(&spec, &lenient) {
                Ok(dag) => dag,
                Err(e) => {
                    warn!(run_id = %header.run_id, error = %e, "stored spec no longer valid; skipped");
                    continue;
                }
            };
            // Subagents spawned at run time come back first, so their records find them.
            let mut calls = HashMap::new();
            for (key, value) in repo.run_prefix_values(&header.run_id, "spawns").await? {
                let parent = key.split('/').next().unwrap_or_default();
                let Some(parent) = dag.index_of(parent) else { continue };
                let children: Vec<SpawnRecord> = serde_json::from_slice(&value).unwrap_or_default();
                for child in children {
                    let i = dag.add_child(parent, SubtaskId::from(child.id), child.agent);
                    calls.insert(i, child.call_id);
                }
            }
            let dag = Arc::new(dag);
            let mut turns: HashMap<u32, Vec<Arc<Turn>>> = HashMap::new();
            for (key, value) in repo.run_prefix_values(&header.run_id, "turns").await? {
                let subtask = key.rsplit_once('/').map_or(key.as_str(), |(s, _)| s);
                if let (Some(i), Ok(turn)) = (dag.index_of(subtask), serde_json::from_slice::<Turn>(&value)) {
                    turns.entry(i).or_default().push(Arc::new(turn));
                }
            }
            let mut records = Vec::new();
            for (id, record) in repo.subtasks(&header.run_id).await? {
                if let Some(i) = dag.index_of(id.as_str()) {
                    records.push((i, restored(record)));
                }
            }
            info!(run_id = %header.run_id, recorded = records.len(), total = dag.len(), "resuming run");
            out.active.push(RecoveredRun { header, dag, records, turns, calls });
        }
        if !more {
            return Ok(out);
        }
    }
}
