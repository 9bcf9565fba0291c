//! Loading runs from the store when a coordinator becomes leader.
//!
//! Active runs come back as engines rebuilt from their spec and the subtask records that were
//! written (finished tool calls keep their results and are not re-run); ended runs come back
//! as headers, for listing and `GetRun`.

use std::collections::HashMap;
use std::sync::Arc;

use swarm_core::agent::Turn;
use swarm_core::engine::Update;
use swarm_core::engine::{Failure, RestoredSubtask};
use swarm_core::{AttemptNo, Dag, Limits, RunId, SubtaskIx, SubtaskState, WorkerId};
use swarm_proto::pb::{self, run_event::Event};
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
    /// Its event log as written so far.
    pub events: Vec<pb::RunEvent>,
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
        artifacts: (!record.artifacts.is_empty()).then(|| Arc::from(record.artifacts)),
        error: record.error_kind.map(|kind| Failure {
            kind,
            // Records always carry the message with the kind; one without says so.
            message: record.error_message.unwrap_or_else(|| "(no message was recorded)".to_owned()),
        }),
        ready_us: record.ready_us,
        first_started_us: record.first_started_us,
        reused: record.reused,
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
            match load_state(repo, &header, limits, true).await {
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

/// A page of a run's subtasks as the store has them (an ended run's, which the manager no
/// longer holds): rebuilt from its spec, spawn records and subtask records.
pub async fn stored_page(
    repo: &RunRepo,
    run: &swarm_proto::pb::Run,
    page: crate::manager::Page,
) -> Result<(Vec<swarm_proto::pb::SubtaskStatus>, Option<usize>), StoreError> {
    StoredPages::default().page(repo, run, page).await
}

/// How long [`StoredPages`] keeps the ended run it rebuilt last.
const KEEP_REBUILT: std::time::Duration = std::time::Duration::from_secs(30);

/// The ended run `GetRun` rebuilt from the store last, kept a while when it has more than one
/// page: a client paging through an ended run of 100,000 subtasks (100 pages) reads and rebuilds
/// it once, not once per page (which took 42 s). One run at a time, for [`KEEP_REBUILT`] after
/// its last page was read: an ended run is final, so what is kept cannot go stale.
#[derive(Default)]
pub struct StoredPages {
    last: std::sync::Mutex<Option<(RunId, std::time::Instant, Arc<swarm_core::RunEngine>)>>,
}

impl StoredPages {
    /// A page of an ended run's subtasks, as stored ([`stored_page`]).
    pub async fn page(
        &self,
        repo: &RunRepo,
        run: &swarm_proto::pb::Run,
        page: crate::manager::Page,
    ) -> Result<(Vec<swarm_proto::pb::SubtaskStatus>, Option<usize>), StoreError> {
        let run_id = RunId::from(run.run_id.as_str());
        let kept = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            match last.as_mut() {
                Some((id, at, engine)) if *id == run_id && at.elapsed() < KEEP_REBUILT => {
                    *at = std::time::Instant::now();
                    Some(engine.clone())
                }
                _ => None,
            }
        };
        let engine = match kept {
            Some(engine) => engine,
            None => {
                let submitted_us = run.submitted_at.as_ref().map_or(0, swarm_proto::convert::unix_us);
                let header = RunHeader::running(run_id.clone(), run.name.clone(), submitted_us);
                // Decoding a run of 100,000 subtasks takes the better part of a second of CPU:
                // on a thread of its own, so that the runtime's workers go on serving (a page
                // asking for the run's summary beside its first page waited for the rebuild).
                let (repo, handle) = (repo.clone(), tokio::runtime::Handle::current());
                let origin = (!run.forked_from_run.is_empty()).then(|| RunId::from(run.forked_from_run.as_str()));
                // What never started in a cancelled run (or one out of budget) reads so.
                let ended = match swarm_proto::pb::RunState::try_from(run.state) {
                    Ok(swarm_proto::pb::RunState::Cancelled) => Some(swarm_core::RunState::Cancelled),
                    Ok(swarm_proto::pb::RunState::BudgetExceeded) => Some(swarm_core::RunState::BudgetExceeded),
                    _ => None,
                };
                let rebuilt = tokio::task::spawn_blocking(move || {
                    let stored = handle.block_on(load_state(&repo, &header, &Limits::default(), false))?;
                    Ok::<_, StoreError>(stored.map(|stored| {
                        let mut engine = swarm_core::RunEngine::restore(
                            header.run_id,
                            stored.dag,
                            swarm_core::RetryPolicy::default(),
                            submitted_us,
                            0,
                            stored.records,
                        );
                        engine.set_forked_from(origin);
                        if let Some(state) = ended {
                            engine.skip_unstarted(state);
                        }
                        engine
                    }))
                })
                .await
                .map_err(|e| StoreError::Unavailable(format!("rebuilding the run: {e}")))??;
                let Some(engine) = rebuilt else { return Ok((Vec::new(), None)) };
                let engine = Arc::new(engine);
                if page.offset + page.size < engine.dag().len() {
                    *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((run_id, std::time::Instant::now(), engine.clone()));
                }
                engine
            }
        };
        let (mut subtasks, mut next) = crate::manager::subtask_page(&engine, page);
        // Offloaded outputs are served inline, as for live runs; the page stops at its byte budget.
        if let Some(payloads) = repo.payloads() {
            let mut bytes = 0usize;
            for k in 0..subtasks.len() {
                let s = &mut subtasks[k];
                if s.output_json.is_empty() && !s.output_ref.is_empty() {
                    let data = payloads.get(&s.output_ref).await?;
                    s.output_json = String::from_utf8_lossy(&data).into_owned();
                }
                bytes = bytes.saturating_add(s.output_json.len());
                if bytes >= page.max_bytes && k + 1 < subtasks.len() {
                    next = Some(page.offset + k + 1);
                    subtasks.truncate(k + 1);
                    break;
                }
            }
        }
        Ok((subtasks, next))
    }
}

/// Reads one run's spec and records (and, when `resuming`, its agents' transcripts); `None`
/// for a run that cannot be rebuilt as stored.
pub async fn load_state(
    repo: &RunRepo,
    header: &RunHeader,
    limits: &Limits,
    resuming: bool,
) -> Result<Option<RecoveredRun>, StoreError> {
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
            let i = dag.add_child(parent, child.id, stage, &child.name, child.agent, child.trace_context);
            calls.insert(i, child.call_id);
        }
    }
    let dag = Arc::new(dag);
    let mut turns: HashMap<SubtaskIx, Vec<Arc<Turn>>> = HashMap::new();
    let stored_turns = if resuming { repo.turns(&header.run_id).await? } else { Vec::new() };
    for (subtask, _n, turn) in stored_turns {
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
    if resuming {
        inline_offloaded(repo, &header.run_id, &mut records).await;
    }
    let events = if resuming { stored_events(repo, &header.run_id).await? } else { Vec::new() };
    if resuming {
        info!(run_id = %header.run_id, recorded = records.len(), total = dag.len(), events = events.len(), "resuming run");
    }
    Ok(Some(RecoveredRun { header: header.clone(), dag, records, turns, calls, events }))
}

/// Most offloaded outputs read at once while resuming.
const PAYLOAD_READS: usize = 16;

/// Reads the offloaded outputs of a resumed run's records back into them: the new leader
/// holds outputs as the last one did (orchestrators read their subagents' answers, GetRun
/// shows them inline). A payload that cannot be read is left as a reference, with a warning.
async fn inline_offloaded(repo: &RunRepo, run: &RunId, records: &mut [(SubtaskIx, RestoredSubtask)]) {
    use futures_util::StreamExt;
    let Some(payloads) = repo.payloads() else { return };
    let wanted: Vec<(usize, Arc<str>)> = records
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.output.is_none())
        .filter_map(|(k, (_, r))| r.output_ref.clone().map(|reference| (k, reference)))
        .collect();
    let reads = futures_util::stream::iter(wanted)
        .map(|(k, reference)| async move { (k, payloads.get(&reference).await, reference) })
        .buffer_unordered(PAYLOAD_READS);
    let read: Vec<_> = reads.collect().await;
    for (k, data, reference) in read {
        match data {
            Ok(data) => records[k].1.output = Some(Arc::from(String::from_utf8_lossy(&data).as_ref())),
            Err(e) => {
                warn!(run_id = %run, %reference, error = %e, "an offloaded output cannot be read; it stays a reference")
            }
        }
    }
}

/// A run's event log as stored. A chunk that does not decode is left out (with a warning):
/// events are a view of the run, its records are the truth.
pub async fn stored_events(repo: &RunRepo, run: &RunId) -> Result<Vec<pb::RunEvent>, StoreError> {
    let mut events = Vec::new();
    for chunk in repo.event_chunks(run).await? {
        match crate::watch::decode_chunk(&chunk) {
            Ok(mut decoded) => events.append(&mut decoded),
            Err(e) => warn!(run_id = %run, error = %e, "an undecodable chunk of a run's event log is left out"),
        }
    }
    Ok(events)
}

/// The events that say how the recorded subtasks ended, for those whose end is not in the
/// stored log (the last leader stopped between writing a record and writing its event).
pub fn unlogged_ends(dag: &Dag, records: &[(SubtaskIx, RestoredSubtask)], stored: &[pb::RunEvent]) -> Vec<Update> {
    let logged: std::collections::HashSet<&str> = stored
        .iter()
        .filter_map(|e| match e.event.as_ref()? {
            Event::SubtaskSucceeded(s) => Some(s.subtask_id.as_str()),
            Event::SubtaskFailed(f) if f.retry_in.is_none() => Some(f.subtask_id.as_str()),
            Event::SubtaskSkipped(s) => Some(s.subtask_id.as_str()),
            _ => None,
        })
        .collect();
    let states: HashMap<SubtaskIx, SubtaskState> = records.iter().map(|(i, r)| (*i, r.state)).collect();
    let mut out = Vec::new();
    for (i, r) in records {
        if logged.contains(dag.node(*i).id.as_str()) {
            continue;
        }
        let attempt = AttemptNo(r.attempt.0);
        match r.state {
            SubtaskState::Succeeded => out.push(Update::Succeeded {
                subtask: *i,
                attempt,
                duration_us: r.finished_us.saturating_sub(r.started_us),
            }),
            SubtaskState::Failed => out.push(Update::Failed {
                subtask: *i,
                attempt,
                kind: r.error.as_ref().map_or(swarm_core::FailureKind::Internal, |e| e.kind),
                message: r.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
                retry_in_us: None,
            }),
            SubtaskState::Skipped => {
                let dag_node = dag.node(*i);
                let because = dag_node
                    .deps
                    .iter()
                    .copied()
                    .find(|d| {
                        matches!(
                            states.get(d),
                            Some(SubtaskState::Failed | SubtaskState::Skipped | SubtaskState::Cancelled)
                        )
                    })
                    .unwrap_or(*i);
                out.push(Update::Skipped { subtask: *i, because });
            }
            _ => {}
        }
    }
    out
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
    async fn a_resumed_run_gets_its_offloaded_outputs_back_inline() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let payloads = swarm_store::payload::PayloadStore::memory(64 << 10);
        let repo = RunRepo::new(store.clone(), swarm_store::repo::DEFAULT_PREFIX).with_payloads(payloads.clone());
        let spec = RunSpec::new("n", vec![SubtaskSpec::tool("a", "echo", serde_json::json!({}))]);
        repo.create_run(&header("r"), &spec).await.expect("create");
        let big = "x".repeat(100 << 10);
        let reference = payloads.put("runs/r/a/1", big.clone().into()).await.expect("upload");
        let record = SubtaskRecord {
            state: SubtaskState::Succeeded,
            attempt: 1,
            worker: None,
            started_us: 1,
            finished_us: 2,
            steps: 1,
            output: None,
            error_kind: None,
            error_message: None,
            output_ref: Some(reference),
            artifacts: vec![],
            term: 0,
            ready_us: None,
            first_started_us: None,
            reused: false,
        };
        repo.write_batch(&[repo.subtask_op(&RunId::from("r"), &"a".into(), &record)]).await.expect("record");
        let recovered = load(&repo, &Limits::default()).await.expect("load");
        let (_, a) = &recovered.active[0].records[0];
        assert_eq!(a.output.as_deref(), Some(big.as_str()), "an orchestrator reading this answer gets it whole");
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
                outputs: Default::default(),
                placement: None,
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
