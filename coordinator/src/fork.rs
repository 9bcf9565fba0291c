//! `ForkRun`: a new run from a recorded one (see [`swarm_core::fork`]).
//!
//! What the new run reuses is read from the store (the original's spec, subtask records,
//! orchestrators' stages and, for a fork at an agent's step, its transcript) and written
//! under the new run before its header: a fork is visible whole or not at all. Reused outputs
//! and artifacts held in the payload store are copied under the new run, so the fork keeps
//! them when the original is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use swarm_core::agent::Turn;
use swarm_core::dag::Work;
use swarm_core::{Dag, Limits, RunId, RunSpec, SubtaskIx, SubtaskState};
use swarm_proto::ApiError;
use swarm_store::repo::{ForkOrigin, RunHeader, RunRepo, SubtaskRecord};
use swarm_store::{Op, StoreError};

use crate::recovery::RecoveredRun;

/// The longest patch accepted (it is a partial spec).
pub const MAX_PATCH_BYTES: usize = 4 << 20;

/// What a fork asks for, decoded.
pub struct ForkRequest {
    pub run_id: RunId,
    pub from: String,
    pub patch: String,
    pub from_step: Option<u32>,
}

/// A fork ready to be stored and started.
pub struct ForkPlan {
    pub spec: RunSpec,
    pub run: RecoveredRun,
    /// Writes of the reused records, stages and transcript, under the new run.
    pub ops: Vec<Op>,
    pub reused: u32,
    pub rerun: u32,
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => ApiError::Unavailable {
            message: format!("state store unavailable: {m}"),
            retry_after: Some(std::time::Duration::from_secs(1)),
        },
        StoreError::TooLarge(m) => ApiError::ResourceExhausted(m),
        StoreError::Fenced(_) => ApiError::NotLeader { leader: None },
        other => ApiError::Internal(other.to_string()),
    }
}

/// The new spec: the original's with `patch` merged in, validated; and the subtasks it changed.
pub fn patched(original: &RunSpec, patch: &str, limits: &Limits) -> Result<(RunSpec, Dag, Vec<String>), ApiError> {
    if patch.len() > MAX_PATCH_BYTES {
        return Err(ApiError::invalid("patch", format!("longer than {MAX_PATCH_BYTES} bytes")));
    }
    let patch: serde_json::Value = if patch.trim().is_empty() {
        serde_json::Value::Null
    } else {
        crate::yaml::from_str(patch)
            .map_err(|e| ApiError::invalid("patch", swarm_core::error::bounded_message(e.to_string())))?
    };
    let stored = serde_json::to_value(original).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (merged, touched) =
        swarm_core::fork::merge(stored, patch).map_err(|e| ApiError::invalid(&e.field, e.description))?;
    let spec: RunSpec = serde_json::from_value(merged)
        .map_err(|e| ApiError::invalid("patch", format!("the patched spec does not read as a spec: {e}")))?;
    let dag = Dag::build(&spec, limits)?;
    Ok((spec, dag, touched))
}

/// Reads what the fork reuses and lays out the new run (stored by the caller).
pub async fn plan(
    repo: &RunRepo,
    limits: &Limits,
    req: &ForkRequest,
    new_id: RunId,
    submitted_us: u64,
) -> Result<ForkPlan, ApiError> {
    let gone = || ApiError::NotFound(format!("run {} (or its records were deleted)", req.run_id));
    let original = repo.spec(&req.run_id).await.map_err(store_error)?.ok_or_else(gone)?;
    let (spec, mut dag, touched) = patched(&original, &req.patch, limits)?;
    let spawns = repo.spawns(&req.run_id).await.map_err(store_error)?;
    let Some(from) = dag.index_of(&req.from) else {
        if let Some((parent, _, _)) = spawns.iter().find(|(_, _, cs)| cs.iter().any(|c| c.id.as_str() == req.from)) {
            return Err(ApiError::invalid(
                "from_subtask",
                format!("`{}` is a subagent; fork from its orchestrator `{parent}`", req.from),
            ));
        }
        let hint = swarm_core::text::did_you_mean(&req.from, dag.nodes().iter().map(|n| n.id.as_str()))
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        return Err(ApiError::NotFound(format!("subtask `{}` of run {}{hint}", req.from, req.run_id)));
    };
    let mut roots = vec![from];
    roots.extend(touched.iter().filter_map(|id| dag.index_of(id)));
    let again = swarm_core::fork::downstream(&dag, &roots);
    let records: HashMap<String, SubtaskRecord> =
        repo.subtasks(&req.run_id).await.map_err(store_error)?.into_iter().map(|(id, r)| (id.to_string(), r)).collect();
    if records.is_empty() && !again.iter().all(|&a| a) {
        return Err(ApiError::FailedPrecondition(format!(
            "run {} has no subtask records left to reuse (deleted or never written)",
            req.run_id
        )));
    }
    let new_header = header(new_id, &spec, req, submitted_us);
    let new_id = &new_header.run_id;
    let mut ops = Vec::new();
    // Orchestrators that are reused keep their subagents (their records and stages).
    let mut children_of_reused = Vec::new();
    for (parent, stage, children) in spawns {
        let Some(p) = dag.index_of(parent.as_str()) else { continue };
        if again[p.index()] || records.get(parent.as_str()).is_none_or(|r| r.state != SubtaskState::Succeeded) {
            continue;
        }
        ops.push(repo.spawn_op(new_id, &parent, stage, children.clone()));
        for child in children {
            let i = dag.add_child(p, child.id, stage, &child.name, child.agent, child.trace_context);
            children_of_reused.push(i);
        }
    }
    let mut restored = Vec::new();
    let mut reused = 0u32;
    for i in dag.indexes() {
        let id = dag.node(i).id.clone();
        let is_child = dag.node(i).parent.is_some();
        if (!is_child && again[i.index()]) || (is_child && !children_of_reused.contains(&i)) {
            continue;
        }
        let Some(record) = records.get(id.as_str()) else { continue };
        // Only results are reused: what failed or never ran runs again.
        if !record.state.is_terminal() || (record.state != SubtaskState::Succeeded && !is_child) {
            continue;
        }
        let mut record = record.clone();
        record.reused = true;
        record.term = 0;
        copy_payloads(repo, &req.run_id, new_id, &id, &mut record).await?;
        ops.push(repo.subtask_op(new_id, &id, &record));
        restored.push((i, crate::recovery::restored(record)));
        reused += 1;
    }
    // Transcripts: a reused agent's whole (what it did, for `swarm replay` and the count of
    // calls reused), and for a fork at a step, the forked agent's first turns.
    let mut recorded: HashMap<String, Vec<(u32, Turn)>> = HashMap::new();
    for (id, n, turn) in repo.turns(&req.run_id).await.map_err(store_error)? {
        recorded.entry(id.to_string()).or_default().push((n, turn));
    }
    let mut kept: Vec<(SubtaskIx, Vec<(u32, Turn)>)> = Vec::new();
    for &(i, _) in &restored {
        let id = dag.node(i).id.as_str();
        if let Some(ts) = recorded.remove(id) {
            kept.push((i, ts));
        }
    }
    if let Some(step) = req.from_step {
        if !matches!(dag.node(from).work, Work::Agent(_)) {
            return Err(ApiError::invalid(
                "from_step",
                format!("only an agent's transcript forks at a step; `{}` is not an agent", req.from),
            ));
        }
        let mut ts = recorded.remove(req.from.as_str()).unwrap_or_default();
        if step as usize > ts.len() {
            return Err(ApiError::invalid(
                "from_step",
                format!("agent `{}` recorded {} steps; fork at 0 to {}", req.from, ts.len(), ts.len()),
            ));
        }
        ts.truncate(step as usize);
        kept.push((from, ts));
    }
    let mut turns: HashMap<SubtaskIx, Vec<Arc<Turn>>> = HashMap::new();
    for (i, ts) in kept {
        let id = dag.node(i).id.clone();
        let mut list = Vec::with_capacity(ts.len());
        for (n, turn) in ts {
            let (op, offload) = repo.turn_write(new_id, &id, n, &turn);
            if let (Some((path, value)), Some(payloads)) = (offload, repo.payloads()) {
                payloads.put(&path, value).await.map_err(store_error)?;
            }
            ops.push(op);
            list.push(Arc::new(turn));
        }
        turns.insert(i, list);
    }
    let rerun = (dag.len() as u32).saturating_sub(reused);
    let run = RecoveredRun {
        header: new_header,
        dag: Arc::new(dag),
        records: restored,
        turns,
        calls: HashMap::new(),
        events: Vec::new(),
    };
    Ok(ForkPlan { spec, run, ops, reused, rerun })
}

/// Copies a reused record's offloaded output and artifacts under the new run.
async fn copy_payloads(
    repo: &RunRepo,
    from: &RunId,
    to: &RunId,
    subtask: &swarm_core::SubtaskId,
    record: &mut SubtaskRecord,
) -> Result<(), ApiError> {
    let Some(payloads) = repo.payloads() else { return Ok(()) };
    let (old_prefix, new_prefix) = (RunRepo::payload_prefix(from), RunRepo::payload_prefix(to));
    let moved = |key: &str| match key.strip_prefix(old_prefix.as_str()) {
        Some(rest) => format!("{new_prefix}{rest}"),
        None => format!("{new_prefix}/reused/{}/{}", subtask.as_str().replace(':', "_"), key.replace('/', "_")),
    };
    if let Some(reference) = record.output_ref.clone() {
        let data = payloads.get(&reference).await.map_err(store_error)?;
        record.output_ref = Some(payloads.put(&moved(&reference), data).await.map_err(store_error)?);
    }
    for artifact in &mut record.artifacts {
        let data = payloads.get(&artifact.key).await.map_err(store_error)?;
        artifact.key = payloads.put(&moved(&artifact.key), data).await.map_err(store_error)?;
    }
    Ok(())
}

/// The new run's header (the caller adds who submitted it).
fn header(new_id: RunId, spec: &RunSpec, req: &ForkRequest, submitted_us: u64) -> RunHeader {
    RunHeader {
        spec_version: spec.version.clone(),
        spec_hash: spec.hash(),
        forked_from: Some(ForkOrigin { run_id: req.run_id.clone(), subtask: req.from.clone(), step: req.from_step }),
        ..RunHeader::running(new_id, spec.name.clone(), submitted_us)
    }
}

/// Tells a fork's engine where it came from, before its transcripts are restored (see
/// [`swarm_core::RunEngine::set_fork_point`]).
pub fn set_origin(engine: &mut swarm_core::RunEngine, dag: &Dag, origin: Option<&ForkOrigin>) {
    let Some(origin) = origin else { return };
    engine.set_forked_from(Some(origin.run_id.clone()));
    if let (Some(step), Some(at)) = (origin.step, dag.index_of(&origin.subtask)) {
        engine.set_fork_point(at, step);
    }
}
