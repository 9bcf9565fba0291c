//! Runs: adding and restoring them, applying engine events and carrying out their actions,
//! cancelling, forgetting, and views for the API.

use std::collections::HashSet;
use std::sync::Arc;

use swarm_core::engine::{Action, EngineEvent, RunEngine, Update};
use swarm_core::{Dag, RunId, RunKey};
use swarm_proto::ApiError;
use swarm_proto::convert::timestamp;
use swarm_proto::pb;
use swarm_store::RunRepo;
use swarm_store::agent_records::SpawnedChild;
use swarm_store::repo::{RunHeader, SubtaskRecord};

use tracing::info;

use super::artifacts;
use super::{Listed, Manager, RunEntry};
use crate::recovery::{Recovered, RecoveredRun};
use crate::watch::{EventLog, LogEntry};

/// Which subtasks a `Get` returns: from index `offset`, at most `size` of them and about
/// `max_bytes` of outputs (always at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub size: usize,
    pub max_bytes: usize,
}

impl Page {
    /// Every subtask (tests).
    pub fn all() -> Self {
        Self { offset: 0, size: usize::MAX, max_bytes: usize::MAX }
    }
}

/// A run's view and where its next page of subtasks starts.
#[derive(Clone, Debug)]
pub struct RunPage {
    pub run: pb::Run,
    /// The index the next page starts at, when more subtasks follow.
    pub next: Option<usize>,
    /// The run ended and its engine is no longer in memory: its subtasks are in the store.
    pub archived: bool,
}

impl Manager {
    pub(super) fn add_run(
        &mut self,
        run_id: RunId,
        dag: Arc<Dag>,
        header: RunHeader,
        engine: Option<RunEngine>,
        span: Option<tracing::Span>,
        log: Option<Arc<EventLog>>,
    ) -> RunKey {
        let seed = header.submitted_us ^ u64::from(self.next_run);
        let engine = engine.unwrap_or_else(|| {
            RunEngine::new(run_id.clone(), dag.clone(), self.config.retry.clone(), header.submitted_us, seed)
        });
        self.prioritized |= dag.priority() > 0;
        let log = log.unwrap_or_else(|| {
            EventLog::new(run_id.clone(), &dag, self.supervisor.now_us(), self.config.caps.max_run_events)
        });
        if log.dirty() {
            self.outbox.events(log.clone());
        }
        let key = RunKey(self.next_run);
        self.next_run += 1;
        // A run resumed by a new leader continues its trace from the stored context.
        let span = span.unwrap_or_else(|| {
            let span = crate::telemetry::workflow_span(None, &header.name, run_id.as_str());
            swarm_telemetry::set_parent(&span, &header.trace_context.clone().into_iter().collect());
            span
        });
        let trace_context = swarm_telemetry::inject(&span);
        swarm_telemetry::metrics().runs_started.add(1, &[]);
        self.runs.insert(
            key,
            RunEntry {
                engine,
                log,
                header,
                in_ring: false,
                recovering: false,
                parked: Vec::new(),
                unoffered_warned: HashSet::new(),
                live: (0, (0, 0)),
                unsettled: Default::default(),
                span,
                trace_context,
                artifact_bytes: 0,
                output_told: false,
            },
        );
        if let Some(entry) = self.runs.get_mut(&key) {
            entry.artifact_bytes = artifacts::stored_bytes(&entry.engine);
        }
        self.listing.insert(run_id, Listed::Live(key));
        self.enqueue(key);
        // Approvals with nothing to wait for are parked and announced at once.
        if self.runs.get(&key).is_some_and(|e| e.engine.has_approvals()) {
            self.settle(key);
        }
        key
    }

    /// Lets run `key`'s engine act on what it was built with (ready approvals park; a run whose
    /// every subtask is recorded ends); a panic quarantines the run, as in `apply`.
    pub(super) fn settle(&mut self, key: RunKey) {
        let mut actions = std::mem::take(&mut self.actions);
        let now = self.supervisor.now_us();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(entry) = self.runs.get_mut(&key) {
                entry.engine.settle(now, &mut actions);
            }
            for action in actions.drain(..) {
                self.act(key, action, now);
            }
        }));
        actions.clear();
        self.actions = actions;
        if let Err(panic) = outcome {
            self.quarantine(key, &super::fault::panic_message(panic.as_ref()));
        }
    }

    /// Loads what the store held at the start of the term.
    pub(super) fn restore(&mut self, recovered: Recovered) {
        for header in recovered.ended {
            self.listing.insert(header.run_id.clone(), Listed::Archived { header: Box::new(header), log: None });
        }
        let resumed = !recovered.active.is_empty();
        for RecoveredRun { header, dag, records, turns, calls, events } in recovered.active {
            let now = self.supervisor.now_us();
            let log = EventLog::resume(header.run_id.clone(), &dag, events, now, self.config.caps.max_run_events);
            // Records whose events were not written before the last leader stopped.
            let missing = crate::recovery::unlogged_ends(&dag, &records, log.stored());
            let engine = self.rebuilt_engine(&header, &dag, records, turns, calls);
            let key = self.add_run(header.run_id.clone(), dag, header, Some(engine), None, Some(log.clone()));
            if let Some(entry) = self.runs.get_mut(&key) {
                entry.recovering = true;
                entry.in_ring = false;
            }
            let mut dirty = false;
            for update in missing {
                dirty |= log.append(LogEntry { time_us: now, update: Some(update), summary: None, live: None });
            }
            if dirty {
                self.outbox.events(log);
            }
            self.ring.retain(|&k| k != key);
            // A run whose every subtask was recorded ends now.
            self.settle(key);
        }
        if resumed {
            let grace = self.config.recovery_grace;
            self.supervisor.start_recovery(grace);
            info!(
                workers = self.expected_workers.len(),
                grace_ms = grace.as_millis() as u64,
                "waiting for workers to reconnect"
            );
            self.check_recovery();
        }
    }

    /// Applies an event to a run's engine and carries out the resulting actions.
    /// A panic in the engine or in carrying out its actions quarantines the run (see
    /// [`Manager::quarantine`]); the manager goes on.
    pub(super) fn apply(&mut self, key: RunKey, event: EngineEvent) {
        let now = self.supervisor.now_us();
        let mut actions = std::mem::take(&mut self.actions);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(entry) = self.runs.get_mut(&key) {
                super::FaultHook::before_apply(self.config.fault.as_ref(), &entry.engine, &event);
                entry.engine.apply(event, now, &mut actions);
            }
            for action in actions.drain(..) {
                self.act(key, action, now);
            }
        }));
        actions.clear();
        self.actions = actions;
        if let Err(panic) = outcome {
            self.quarantine(key, &super::fault::panic_message(panic.as_ref()));
            return;
        }
        if let Some(entry) = self.runs.get(&key)
            && entry.log.known_ids() < entry.engine.dag().len()
        {
            entry.log.sync_ids(entry.engine.dag());
        }
        self.enqueue(key);
    }

    pub(super) fn act(&mut self, key: RunKey, action: Action, now: u64) {
        let term = self.repo.term();
        let Some(entry) = self.runs.get_mut(&key) else { return };
        match action {
            Action::Publish(update) => {
                if entry.log.known_ids() < entry.engine.dag().len() {
                    entry.log.sync_ids(entry.engine.dag());
                }
                let summary = matches!(update, Update::Finished { .. }).then(|| Arc::new(entry.engine.summary(now)));
                crate::telemetry::count_update(&update);
                let live = match update {
                    Update::Step { .. } => {
                        // Live accounting is a longest-path pass: refresh it at most every 20 ms.
                        if now.saturating_sub(entry.live.0) > 20_000 {
                            let s = entry.engine.summary(now);
                            entry.live = (now, (s.critical_steps, s.total_steps));
                        }
                        Some(entry.live.1)
                    }
                    _ => None,
                };
                if entry.log.append(LogEntry { time_us: now, update: Some(update), summary, live }) {
                    self.outbox.events(entry.log.clone());
                }
            }
            Action::PersistTurn { subtask, index } => {
                let turn = entry.engine.slot(subtask).agent.as_ref().and_then(|a| a.turns.get(index as usize));
                if let Some(turn) = turn {
                    let (op, offload) = self.repo.turn_write(
                        entry.engine.run_id(),
                        &entry.engine.dag().node(subtask).id,
                        index,
                        turn.as_ref(),
                    );
                    self.outbox.write(op);
                    if let Some((path, value)) = offload {
                        self.outbox.upload(path, value);
                    }
                }
            }
            Action::PersistSpawn { subtask, stage } => {
                let engine = &entry.engine;
                let children = engine
                    .slot(subtask)
                    .agent
                    .as_ref()
                    .and_then(|a| a.stages.get(stage.saturating_sub(1) as usize))
                    .map(|s| s.children.clone())
                    .unwrap_or_default();
                let calls = engine.slot(subtask).agent.as_ref().map(|a| &a.child_calls);
                let record: Vec<SpawnedChild> = children
                    .iter()
                    .filter_map(|&c| {
                        let node = engine.dag().node(c);
                        let swarm_core::dag::Work::Agent(agent) = &node.work else { return None };
                        Some(SpawnedChild {
                            id: node.id.clone(),
                            name: node.name.to_string(),
                            agent: agent.as_ref().clone(),
                            call_id: calls.and_then(|m| m.get(&c)).cloned().unwrap_or_default(),
                            trace_context: node.trace_context.as_deref().cloned().unwrap_or_default(),
                        })
                    })
                    .collect();
                let (op, offload) =
                    self.repo.spawn_write(engine.run_id(), &engine.dag().node(subtask).id, stage, record);
                self.outbox.write(op);
                if let Some((path, value)) = offload {
                    self.outbox.upload(path, value);
                }
                entry.unsettled.written(subtask, self.outbox.queued());
            }
            Action::Persist { subtask, record: slot } => {
                let offload = match (slot.output.as_deref(), self.repo.payloads()) {
                    (Some(out), Some(p)) if p.should_offload(out.len()) => {
                        let id = entry.engine.dag().node(subtask).id.as_str().replace(':', "_");
                        let path = format!("{}/{id}/{}", RunRepo::payload_prefix(entry.engine.run_id()), slot.attempt);
                        Some((path, bytes::Bytes::copy_from_slice(out.as_bytes())))
                    }
                    _ => None,
                };
                let record = SubtaskRecord {
                    state: slot.state,
                    attempt: slot.attempt.0,
                    worker: slot.worker.as_ref().map(ToString::to_string),
                    started_us: slot.started_us,
                    finished_us: slot.finished_us,
                    steps: slot.steps,
                    output: if offload.is_some() { None } else { slot.output.as_deref().map(str::to_owned) },
                    error_kind: slot.error.as_ref().map(|e| e.kind),
                    error_message: slot.error.as_ref().map(|e| e.message.clone()),
                    output_ref: offload.as_ref().map(|(path, _)| path.clone()),
                    artifacts: slot.artifacts.as_deref().map(<[_]>::to_vec).unwrap_or_default(),
                    term,
                    ready_us: slot.ready_us,
                    first_started_us: slot.first_started_us,
                    reused: slot.reused,
                };
                let op = self.repo.subtask_op(entry.engine.run_id(), &entry.engine.dag().node(subtask).id, &record);
                self.outbox.write(op);
                if record.state == swarm_core::SubtaskState::Succeeded {
                    entry.unsettled.written(subtask, self.outbox.queued());
                }
                if let Some((path, value)) = offload {
                    entry.engine.set_output_ref(subtask, path.as_str().into());
                    self.outbox.upload(path, value);
                }
            }
            Action::CancelAttempt { worker, fence } => {
                if let Some(w) = self.registry.find_alive(&worker) {
                    self.registry.cancel(w, fence);
                }
            }
            Action::ArmTimer { subtask, at_us } => self.supervisor.arm_retry(at_us, key, subtask),
            Action::Finished { state } => {
                let summary = entry.engine.summary(now);
                info!(
                    run_id = %entry.engine.run_id(),
                    state = state.as_str(),
                    tool_calls = summary.tool_calls_completed,
                    wall_ms = summary.wall_us / 1000,
                    critical_steps = summary.critical_steps,
                    "run finished"
                );
                crate::telemetry::run_finished(&entry.span, state, &summary);
                self.supervisor.gauges_soon();
                entry.span = tracing::Span::none();
                entry.header.state = state;
                entry.header.finished_us = entry.engine.finished_us();
                entry.header.summary = Some(summary);
                entry.header.term = term;
                entry.header.last_seq = entry.log.appended_seq();
                let op = self.repo.header_op(&entry.header);
                self.outbox.write(op);
                // Archived once this and every earlier write is durable: until then GetRun
                // serves the run from memory (the store may not have its last records yet).
                self.ended.push((key, self.outbox.queued()));
            }
        }
    }

    /// Ends run `key` `FAILED` (class `internal`, with `message`) after a panic on it: its
    /// engine is dropped, its attempts are cancelled, and its final header is written, so no
    /// leader resumes it and dies the same way. Other runs are not touched.
    pub(super) fn quarantine(&mut self, key: RunKey, message: &str) {
        let Some(entry) = self.runs.remove(&key) else { return };
        let now = self.supervisor.now_us();
        let run_id = entry.engine.run_id().clone();
        tracing::error!(run_id = %run_id, %message, "panic on a run: quarantined, it ends FAILED (internal)");
        // The engine may be inconsistent: its summary is a best effort.
        let summary = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.engine.summary(now)));
        let mut summary = summary.unwrap_or_else(|_| {
            swarm_core::RunSummary::empty(run_id.clone(), entry.header.name.clone(), entry.engine.dag().len() as u32)
        });
        summary.state = swarm_core::RunState::Failed;
        summary.error = Some(swarm_core::summary::RunError {
            kind: swarm_core::FailureKind::Internal,
            message: format!("the coordinator failed on this run and quarantined it: {message}"),
        });
        for (w, fence) in self.registry.held_for_run(key) {
            self.registry.cancel(w, fence);
        }
        self.ring.retain(|&k| k != key);
        crate::telemetry::run_finished(&entry.span, swarm_core::RunState::Failed, &summary);
        let mut header = entry.header;
        header.state = swarm_core::RunState::Failed;
        header.finished_us = Some(now);
        header.summary = Some(summary.clone());
        header.term = self.repo.term();
        let state = swarm_core::RunState::Failed;
        let dirty = entry.log.append(LogEntry {
            time_us: now,
            update: Some(Update::Finished { state }),
            summary: Some(Arc::new(summary)),
            live: None,
        });
        header.last_seq = entry.log.appended_seq();
        self.outbox.write(self.repo.header_op(&header));
        if dirty {
            self.outbox.events(entry.log.clone());
        }
        self.supervisor.gauges_soon();
        self.log_expiry.push_back((now, run_id.clone()));
        self.listing.insert(run_id, Listed::Archived { header: Box::new(header), log: Some(entry.log) });
    }

    pub(super) fn cancel(&mut self, run_id: &RunId, reason: &str) -> Result<pb::Run, ApiError> {
        let key = match self.listing.get(run_id) {
            Some(Listed::Live(k)) => *k,
            Some(Listed::Archived { header: h, .. }) => {
                return Err(ApiError::FailedPrecondition(format!("run {run_id} already ended {}", h.state.as_str())));
            }
            None => return Err(ApiError::NotFound(format!("run {run_id}"))),
        };
        let state = self.runs.get(&key).map(|e| e.engine.state());
        if let Some(state) = state.filter(|s| s.is_terminal()) {
            return Err(ApiError::FailedPrecondition(format!("run {run_id} already ended {}", state.as_str())));
        }
        info!(run_id = %run_id, reason = %reason, "cancelling run");
        self.apply(key, EngineEvent::CancelRequested);
        self.view_by_id(run_id).ok_or_else(|| ApiError::Internal("cancelled run vanished".into()))
    }

    /// Drops ended runs older than the cutoff from memory; returns their ids and idempotency
    /// keys.
    pub(super) fn forget(&mut self, ended_before_us: u64) -> Vec<(RunId, Option<String>)> {
        let mut gone = Vec::new();
        self.listing.retain(|id, listed| {
            let (finished, key) = match listed {
                Listed::Live(k) => {
                    let e = self.runs.get(k);
                    (e.and_then(|e| e.engine.finished_us()), e.and_then(|e| e.header.idempotency_key.clone()))
                }
                Listed::Archived { header: h, .. } => (h.finished_us, h.idempotency_key.clone()),
            };
            let expired = finished.is_some_and(|f| f < ended_before_us);
            if expired {
                if let Listed::Live(k) = listed {
                    self.runs.remove(k);
                }
                gone.push((id.clone(), key));
            }
            !expired
        });
        gone
    }

    /// The tenant a listed run belongs to.
    pub(super) fn tenant_of<'a>(&'a self, listed: &'a Listed) -> Option<&'a str> {
        match listed {
            Listed::Live(k) => self.runs.get(k).and_then(|e| e.header.tenant.as_deref()),
            Listed::Archived { header, .. } => header.tenant.as_deref(),
        }
    }

    /// The spec version label of a listed run.
    pub(super) fn version_of<'a>(&'a self, listed: &'a Listed) -> Option<&'a str> {
        match listed {
            Listed::Live(k) => self.runs.get(k).and_then(|e| e.header.spec_version.as_deref()),
            Listed::Archived { header, .. } => header.spec_version.as_deref(),
        }
    }

    pub(super) fn view_by_id(&self, run_id: &RunId) -> Option<pb::Run> {
        self.page_by_id(run_id, None).map(|p| p.run)
    }

    pub(super) fn page_by_id(&self, run_id: &RunId, page: Option<Page>) -> Option<RunPage> {
        match self.listing.get(run_id)? {
            Listed::Live(k) => {
                let e = self.runs.get(k)?;
                let mut run = run_view(&e.engine, self.supervisor.now_us());
                run.last_seq = e.log.last_seq();
                header_fields(&mut run, &e.header);
                let next = page.and_then(|p| {
                    let (subtasks, next) = subtask_page(&e.engine, p);
                    run.subtasks = subtasks;
                    next
                });
                Some(RunPage { run, next, archived: false })
            }
            Listed::Archived { header: h, log } => {
                let mut run = view_from_header(h);
                run.last_seq = log.as_ref().map_or(h.last_seq, |l| l.last_seq());
                Some(RunPage { run, next: None, archived: true })
            }
        }
    }

    /// Moves runs that ended out of the engines' map: only the header (with the summary) and,
    /// for [`super::ENDED_LOG_RETENTION`], the event log stay in memory.
    pub(super) fn archive_ended(&mut self) {
        let settled = self.outbox.settled();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.ended).into_iter().partition(|&(_, mark)| mark <= settled);
        self.ended = waiting;
        for (key, _) in ready {
            let Some(entry) = self.runs.remove(&key) else { continue };
            self.ring.retain(|&k| k != key);
            let mut header = entry.header;
            header.last_seq = entry.log.appended_seq();
            let run_id = header.run_id.clone();
            self.log_expiry.push_back((self.supervisor.now_us(), run_id.clone()));
            self.listing.insert(run_id, Listed::Archived { header: Box::new(header), log: Some(entry.log) });
        }
        let cutoff = self.supervisor.now_us().saturating_sub(super::ENDED_LOG_RETENTION.as_micros() as u64);
        while self.log_expiry.front().is_some_and(|(at, _)| *at < cutoff) {
            let Some((_, run_id)) = self.log_expiry.pop_front() else { break };
            if let Some(Listed::Archived { log, .. }) = self.listing.get_mut(&run_id) {
                *log = None;
            }
        }
    }
}

/// A run's view without subtasks.
pub fn run_view(engine: &RunEngine, now_us: u64) -> pb::Run {
    let summary = engine.summary(now_us);
    pb::Run {
        run_id: engine.run_id().to_string(),
        name: engine.dag().name().to_owned(),
        state: pb::RunState::from(engine.state()).into(),
        submitted_at: Some(timestamp(engine.submitted_us())),
        finished_at: engine.finished_us().map(timestamp),
        summary: Some(pb::RunSummary::from(&summary)),
        last_seq: 0,
        subtasks: Vec::new(),
        ..Default::default()
    }
}

/// One page of a run's subtasks, and the index the next page starts at.
pub fn subtask_page(engine: &RunEngine, page: Page) -> (Vec<pb::SubtaskStatus>, Option<usize>) {
    let n = engine.dag().len();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut i = page.offset.min(n);
    while i < n && out.len() < page.size && (out.is_empty() || bytes < page.max_bytes) {
        let status = subtask_status(engine, swarm_core::SubtaskIx(i as u32));
        bytes = bytes.saturating_add(status.output_json.len() + status.error_message.len());
        out.push(status);
        i += 1;
    }
    (out, (i < n).then_some(i))
}

/// One subtask's status.
pub fn subtask_status(engine: &RunEngine, i: swarm_core::SubtaskIx) -> pb::SubtaskStatus {
    let (slot, node) = (engine.slot(i), engine.dag().node(i));
    pb::SubtaskStatus {
        id: node.id.to_string(),
        state: pb::SubtaskState::from(slot.state).into(),
        attempt: slot.attempt.0,
        worker_id: slot.worker.as_ref().map(ToString::to_string).unwrap_or_default(),
        started_at: (slot.steps > 0).then(|| timestamp(slot.started_us)),
        finished_at: (slot.steps > 0).then(|| timestamp(slot.finished_us)),
        output_json: slot.output.as_deref().unwrap_or_default().to_owned(),
        error_kind: slot.error.as_ref().map_or(pb::FailureKind::Unspecified, |e| e.kind.into()).into(),
        error_message: slot.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
        tool: node.tool.to_string(),
        output_ref: slot.output_ref.as_deref().unwrap_or_default().to_owned(),
        depends_on: node.deps.iter().map(|&d| engine.dag().node(d).id.to_string()).collect(),
        kind: match node.work {
            swarm_core::dag::Work::Tool => "tool",
            swarm_core::dag::Work::Agent(_) => "agent",
            swarm_core::dag::Work::Orchestrator(_) => "orchestrator",
            swarm_core::dag::Work::Approval(_) => "approval",
        }
        .to_owned(),
        parent: node.parent.map(|p| engine.dag().node(p).id.to_string()).unwrap_or_default(),
        stage: node.stage,
        ready_at: slot.ready_at_us().map(timestamp),
        first_started_at: slot.first_started_us.map(timestamp),
        approval_prompt: match &node.work {
            swarm_core::dag::Work::Approval(a) => a.prompt.clone(),
            _ => engine.question(i).unwrap_or_default().to_owned(),
        },
        artifacts: slot.artifacts.iter().flat_map(|a| a.iter()).map(pb::Artifact::from).collect(),
        reused_from: match (slot.reused, engine.forked_from()) {
            (true, Some(origin)) => origin.to_string(),
            _ => String::new(),
        },
    }
}

/// What a run's view takes from its header (tenant, spec version and hash, fork origin).
pub fn header_fields(run: &mut pb::Run, header: &RunHeader) {
    run.tenant = header.tenant.clone().unwrap_or_default();
    run.spec_version = header.spec_version.clone().unwrap_or_default();
    run.spec_hash = header.spec_hash.clone();
    if let Some(origin) = &header.forked_from {
        run.forked_from_run = origin.run_id.to_string();
        run.forked_from_subtask = origin.subtask.clone();
        run.forked_from_step = origin.step;
    }
}

/// A view of a run known only by its stored header.
pub fn view_from_header(header: &RunHeader) -> pb::Run {
    let mut run = pb::Run {
        run_id: header.run_id.to_string(),
        name: header.name.clone(),
        state: pb::RunState::from(header.state).into(),
        submitted_at: Some(timestamp(header.submitted_us)),
        finished_at: header.finished_us.map(timestamp),
        summary: header.summary.as_ref().map(pb::RunSummary::from),
        last_seq: 0,
        subtasks: Vec::new(),
        ..Default::default()
    };
    header_fields(&mut run, header);
    run
}
