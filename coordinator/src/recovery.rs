//! Loading runs from the store when a coordinator becomes leader.
//!
//! Active runs come back as engines rebuilt from their spec and the subtask records that were
//! written (finished tool calls keep their results and are not re-run); ended runs come back
//! as headers, for listing and `GetRun`.

use std::collections::HashMap;
use std::sync::Arc;

use swarm_core::agent::Turn;
use swarm_core::engine::{Failure, RestoredSubtask};
use swarm_core::{AttemptNo, Dag, Limits, RunId, SubtaskIx, WorkerId};
use swarm_store::repo::{RunHeader, SubtaskRecord};
use swarm_store::{RunRepo, StoreError};
use tracing::{error, info, warn};

/// An active run to resume.
pub struct RecoveredRun {
    pub header: RunHeader,
    pub dag: Arc<Dag>,
    pub records: Vec<(SubtaskIx, RestoredSubtask)>,
    /// Agent transcripts, by subtask index.
    pub turns: HashMap<SubtaskIx, Vec<Arc<Turn>>>,
    /// The `assign_task` call each spawned subagent answers.
    pub calls: HashMap<SubtaskIx, String>,
}

/// What the store holds.
#[derive(Default)]
pub struct Recovered {
    pub active: Vec<RecoveredRun>,
    pub ended: Vec<RunHeader>,
    /// Runs not resumed because a record of theirs is corrupt, with the key.
    pub corrupt: Vec<(RunId, String)>,
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
        error: record.error_kind.map(|kind| Failure {
            kind,
            // Records always carry the message with the kind; one without says so.
            message: record.error_message.unwrap_or_else(|| "(no message was recorded)".to_owned()),
        }),
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
            match load_run(repo, &header, limits).await {
                Ok(Some(run)) => out.active.push(run),
                Ok(None) => {}
                // One run's damaged record must not stop the cluster from leading: that run is
                // not resumed (it stays listed as it was last written), the others are.
                Err(StoreError::Corrupt { key, message }) => {
                    error!(run_id = %header.run_id, %key, %message, "corrupt record; the run is not resumed");
                    out.corrupt.push((header.run_id.clone(), key));
                    out.ended.push(header);
                }
                Err(e) => return Err(e),
            }
        }
        if !more {
            return Ok(out);
        }
    }
}

/// Reads one active run's spec and records; `None` for a run that cannot be resumed as stored.
async fn load_run(repo: &RunRepo, header: &RunHeader, limits: &Limits) -> Result<Option<RecoveredRun>, StoreError> {
    let Some(spec) = repo.spec(&header.run_id).await? else {
        warn!(run_id = %header.run_id, "active run without a spec; skipped");
        return Ok(None);
    };
    // Stored specs passed validation once; limits may have shrunk since, so allow them.
    let lenient = Limits { max_subtasks: usize::MAX, max_args_bytes: usize::MAX, ..limits.clone() };
    let mut dag = match Dag::build(&spec, &lenient) {
        Ok(dag) => dag,
        Err(e) => {
            warn!(run_id = %header.run_id, error = %e, "stored spec no longer valid; skipped");
            return Ok(None);
        }
    };
    // Subagents spawned at run time come back first, so their records find them.
    let mut calls = HashMap::new();
    for (parent, stage, children) in repo.spawns(&header.run_id).await? {
        let Some(parent) = dag.index_of(parent.as_str()) else { continue };
        for child in children {
            let i = dag.add_child(parent, child.id, stage, &child.name, child.agent);
            calls.insert(i, child.call_id);
        }
    }
    let dag = Arc::new(dag);
    let mut turns: HashMap<SubtaskIx, Vec<Arc<Turn>>> = HashMap::new();
    for (subtask, _n, turn) in repo.turns(&header.run_id).await? {
        if let Some(i) = dag.index_of(subtask.as_str()) {
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
    Ok(Some(RecoveredRun { header: header.clone(), dag, records, turns, calls }))
}

#[cfg(test)]
mod tests {

    use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
    use swarm_store::{MemoryStore, Op, StateStore, Txn};

    use super::*;

    fn header(run: &str) -> RunHeader {
        RunHeader::running(RunId::from(run), "n", 1)
    }

    #[tokio::test]
    async fn a_corrupt_record_keeps_its_run_from_resuming_and_names_the_key_while_others_resume() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let repo = RunRepo::new(store.clone(), swarm_store::repo::DEFAULT_PREFIX);
        let spec = RunSpec::new(
            "n",
            vec![SubtaskSpec {
                id: "a".into(),
                kind: SubtaskKind::Tool { tool: "echo".into(), args: serde_json::json!({"text": "x"}) },
                depends_on: vec![],
                timeout: None,
                retry: None,
            }],
        );
        for run in ["r1", "r2"] {
            repo.create_run(&header(run), &spec).await.expect("create");
        }
        let bad_key = "/swarm/v1/turns/r1/a/000000";
        store.commit(Txn::new().then(Op::put(bad_key, "{truncated"))).await.expect("corrupt");
        let recovered = load(&repo, &Limits::default()).await.expect("the term can still begin");
        let active: Vec<&str> = recovered.active.iter().map(|r| r.header.run_id.as_str()).collect();
        assert_eq!(active, ["r2"]);
        assert_eq!(recovered.corrupt, vec![(RunId::from("r1"), bad_key.to_owned())]);
        assert_eq!(recovered.ended.len(), 1, "the corrupt run stays listed");
    }
}
