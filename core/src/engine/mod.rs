//! The run engine: a pure state machine for one run.
//!
//! The coordinator's run manager owns one `RunEngine` per active run. It feeds events in
//! ([`EngineEvent`]: an attempt was dispatched, succeeded, failed or lost; a retry timer fired; a
//! cancel was requested) together with the current time, and executes the [`Action`]s that come
//! out (publish to watchers, persist a subtask record, cancel an attempt on a worker, arm a
//! timer). The engine does no I/O and reads no clock, so every decision is reproducible.
//!
//! Subtask states:
//!
//! ```text
//!   Blocked ──deps succeeded──▶ Ready ──Dispatched──▶ Running ──Succeeded──▶ Succeeded
//!                                 ▲                     │
//!                                 │◀───────Lost─────────┤
//!                                 │                     ├─Failed, retryable, attempts left──▶ Backoff
//!                                 └─────RetryDue────────┼───────────────────────────────────────┘
//!                                                       └─Failed, otherwise──▶ Failed ══▶ dependents Skipped
//!   any non-terminal state ──CancelRequested──▶ Cancelled
//! ```
//!
//! A run is `Running` until no subtask is open; it then ends `Succeeded` when every subtask
//! succeeded, else `Failed` (independent branches still run to the end). `CancelRequested` ends
//! it `Cancelled` at once; reports that arrive later are stale and ignored.
//!
//! Agents and orchestrators are subtasks too: each model turn that calls tools arrives as
//! `StepRecorded` and extends the subtask's transcript, so a new attempt (after a lost worker)
//! continues from it. An orchestrator turn that assigns tasks arrives as `Spawned`: its attempt
//! ends, the subagents are added to the DAG (a new stage), the orchestrator waits
//! (`Waiting`), and becomes ready again — with their answers as tool results — once all of them
//! have ended. See [`agents`].
//!
//! Every attempt carries a [`Fence`] chosen by the shell (cluster-wide unique, only growing);
//! a report whose fence is not the subtask's current one is stale and changes nothing.

mod agents;
mod approvals;
mod cancel;
mod failure;
mod policy;
mod ready;
mod restore;
mod speculation;
mod timeouts;
pub mod types;

use std::sync::Arc;

pub use approvals::{Decided, SignalError, decision_in_transcript};
pub use policy::{PlacementNeeds, SILENT_BEATS, silence_limit_us};
pub use types::*;

use crate::dag::{Dag, Work};
use crate::error::{FailureKind, Retryable};
use crate::ids::{Fence, RunId, SubtaskIx, WorkerId};
use crate::retry::RetryPolicy;
use crate::summary::RunSummary;

/// One run's state machine. See the module docs.
#[derive(Debug)]
pub struct RunEngine {
    run_id: RunId,
    dag: Arc<Dag>,
    policy: RetryPolicy,
    state: RunState,
    slots: Vec<Slot>,
    ready: ready::ReadyQueue,
    /// Tool calls finished so far (for refreshing the critical-path estimates).
    finished_tools: u32,
    counts: Counts,
    submitted_us: u64,
    finished_us: Option<u64>,
    rng: fastrand::Rng,
    /// Speculation: per tool, the run's calls of it and the sorted durations of those finished.
    latency: std::collections::HashMap<Arc<str>, speculation::Latency>,
    /// Backups that count against the hedge budget (started and not preempted).
    hedges: u32,
    /// The DAG's approval subtasks.
    approvals: Vec<SubtaskIx>,
    /// Agents whose question (`request_approval`) is to be announced again (after a failover).
    announce: Vec<SubtaskIx>,
    /// Tokens used by model: (input, output).
    token_use: std::collections::BTreeMap<Arc<str>, (u64, u64)>,
    /// The time of the event being applied (µs): when subtasks become ready.
    clock_us: u64,
    /// Every running subtask, and some that stopped since (pruned as it grows): what the
    /// straggler check walks, so its cost follows the calls running, not the run's size.
    running: Vec<SubtaskIx>,
    /// The run a fork was made from: where its reused results came from.
    forked_from: Option<RunId>,
    /// A fork at an agent's step: that agent, and how many of its first turns were reused.
    fork_point: Option<(SubtaskIx, u32)>,
    /// When the run was held back by a placement (see [`RunEngine::held_by_placement`]).
    held: policy::HeldSpans,
}

impl RunEngine {
    /// A new running engine: every subtask without dependencies is ready.
    pub fn new(run_id: RunId, dag: Arc<Dag>, policy: RetryPolicy, submitted_us: u64, seed: u64) -> Self {
        let mut ready = ready::ReadyQueue::default();
        ready.reprioritize(ready::bottom_levels(&dag, |_| 1));
        let slots = dag
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let pending = node.deps.len() as u32;
                if pending == 0 {
                    ready.push_back(SubtaskIx(i as u32));
                }
                let mut slot = Slot::new(pending, matches!(node.work, Work::Agent(_) | Work::Orchestrator(_)));
                if pending == 0 {
                    slot.ready_since_us = Some(submitted_us);
                }
                slot
            })
            .collect::<Vec<_>>();
        let counts = Counts { open: slots.len() as u32, ..Counts::default() };
        Self {
            run_id,
            dag,
            policy,
            state: RunState::Running,
            slots,
            ready,
            finished_tools: 0,
            counts,
            submitted_us,
            finished_us: None,
            rng: fastrand::Rng::with_seed(seed),
            latency: Default::default(),
            hedges: 0,
            token_use: Default::default(),
            approvals: Vec::new(),
            announce: Vec::new(),
            clock_us: submitted_us,
            running: Vec::new(),
            forked_from: None,
            fork_point: None,
            held: policy::HeldSpans::default(),
        }
        .with_latency_model()
        .with_approvals()
    }

    /// Records where a subtask's output was offloaded to.
    pub fn set_output_ref(&mut self, subtask: SubtaskIx, reference: Arc<str>) {
        if let Some(slot) = self.slots.get_mut(subtask.index()) {
            slot.output_ref = Some(reference);
        }
    }

    /// Re-estimates every subtask's remaining critical path from measured durations: each
    /// tool's median, from the latency model the straggler check keeps (a sorted sample of at
    /// most `KEPT_SAMPLES` durations per tool, so a refresh costs one pass over the DAG).
    fn refresh_priorities(&mut self) {
        let dag = &self.dag;
        let slots = &self.slots;
        let medians: std::collections::HashMap<&str, u64> =
            self.latency.iter().filter_map(|(tool, m)| Some((tool.as_ref(), m.median_us()?.max(1)))).collect();
        let typical = medians.values().copied().max().unwrap_or(1);
        let bottom = ready::bottom_levels(dag, |i| {
            if ready::is_tool(dag, i) {
                medians.get(dag.node(i).tool.as_ref()).copied().unwrap_or(1)
            } else {
                // Agents: a step is worth roughly a tool call.
                typical * u64::from(slots[i.index()].steps.max(1))
            }
        });
        self.ready.reprioritize(bottom);
    }

    /// Ends the run if nothing is open (after [`RunEngine::restore`]).
    pub fn settle(&mut self, now_us: u64, out: &mut Vec<Action>) {
        if !self.state.is_terminal() {
            self.park_approvals(now_us, out);
            self.check_finished(now_us, out);
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }
    /// The run's DAG.
    pub fn dag(&self) -> &Arc<Dag> {
        &self.dag
    }
    /// Ready subtasks waiting for dispatch.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }
    /// The run's state.
    pub fn state(&self) -> RunState {
        self.state
    }
    /// Counters.
    pub fn counts(&self) -> Counts {
        self.counts
    }
    /// The runtime state of subtask `index`.
    pub fn slot(&self, index: SubtaskIx) -> &Slot {
        &self.slots[index.index()]
    }
    /// The estimated remaining critical path from subtask `index` (its bottom level).
    pub fn critical_path(&self, index: SubtaskIx) -> u64 {
        self.ready.bottom_level(index)
    }
    /// All slots, by subtask index.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
    /// When the run was submitted, µs since the Unix epoch.
    pub fn submitted_us(&self) -> u64 {
        self.submitted_us
    }
    /// When the run ended, µs since the Unix epoch.
    pub fn finished_us(&self) -> Option<u64> {
        self.finished_us
    }
    /// True when some subtask waits for dispatch.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes the next ready subtask, longest remaining critical path first (ties in the order
    /// they became ready; see `ready`). The shell either dispatches it
    /// ([`EngineEvent::Dispatched`]) or gives it back with [`RunEngine::unpop`].
    pub fn pop_ready(&mut self) -> Option<SubtaskIx> {
        while let Some(i) = self.ready.pop_front() {
            if self.slots[i.index()].state == SubtaskState::Ready {
                return Some(i);
            }
        }
        None
    }

    /// Gives back a subtask taken by [`RunEngine::pop_ready`] that could not be placed.
    pub fn unpop(&mut self, subtask: SubtaskIx) {
        if self.slots[subtask.index()].state == SubtaskState::Ready {
            self.ready.push_front(subtask);
        }
    }

    /// Applies one event at time `now_us`, appending the resulting actions to `out`.
    pub fn apply(&mut self, event: EngineEvent, now_us: u64, out: &mut Vec<Action>) {
        self.apply_event(event, now_us, out);
        if !self.approvals.is_empty() && !self.state.is_terminal() {
            self.park_approvals(now_us, out);
        }
    }

    fn apply_event(&mut self, event: EngineEvent, now_us: u64, out: &mut Vec<Action>) {
        self.clock_us = now_us;
        if self.state.is_terminal() {
            if !matches!(event, EngineEvent::CancelRequested | EngineEvent::RetryDue { .. }) {
                self.counts.stale_reports += 1;
            }
            return;
        }
        match event {
            EngineEvent::Dispatched { subtask, worker, fence } => {
                self.dispatched(subtask, worker, fence, out);
                if let Some(slot) = self.slots.get_mut(subtask.index()) {
                    slot.dispatched_us = Some(now_us);
                }
            }
            EngineEvent::BackupDispatched { subtask, worker, fence } => {
                self.backup_dispatched(subtask, worker, fence, now_us, out)
            }
            EngineEvent::BackupPreempted { subtask, fence } => self.backup_preempted(subtask, fence, out),
            EngineEvent::Succeeded { subtask, fence, started_us, finished_us, output, artifacts } => {
                if !self.settle_race(subtask, fence, true, out) || !self.is_current(subtask, fence) {
                    return;
                }
                self.record_latency(subtask, finished_us.saturating_sub(started_us));
                if ready::is_tool(&self.dag, subtask) {
                    self.finished_tools += 1;
                    if ready::refresh_due(self.finished_tools, self.dag.len()) {
                        self.refresh_priorities();
                    }
                }
                let is_tool = matches!(self.dag.node(subtask).work, Work::Tool);
                let slot = &mut self.slots[subtask.index()];
                slot.state = SubtaskState::Succeeded;
                slot.attempt_ended(started_us, finished_us, is_tool);
                slot.timing.done_us = Some(now_us);
                slot.timing.final_dispatched_us = slot.dispatched_us;
                slot.output = Some(output);
                slot.artifacts = artifacts;
                let attempt = slot.attempt;
                self.counts.running -= 1;
                self.counts.succeeded += 1;
                self.counts.open -= 1;
                out.push(Action::Publish(Update::Succeeded {
                    subtask,
                    attempt,
                    duration_us: finished_us.saturating_sub(started_us),
                }));
                out.push(self.persist(subtask));
                self.child_ended(subtask);
                self.release_dependents(subtask, now_us);
                self.check_finished(now_us, out);
            }
            EngineEvent::AskedApproval { subtask, fence, turn, call_id, question, started_us, finished_us } => {
                self.asked_approval(subtask, fence, turn, (call_id, question), (started_us, finished_us), now_us, out)
            }
            EngineEvent::Signal { subtask, approve, payload, reason } => {
                self.decide(subtask, approve, payload, reason, now_us, out)
            }
            EngineEvent::Failed { subtask, fence, kind, message, started_us, finished_us } => {
                if !self.settle_race(subtask, fence, false, out) || !self.is_current(subtask, fence) {
                    return;
                }
                let is_tool = matches!(self.dag.node(subtask).work, Work::Tool);
                self.slots[subtask.index()].attempt_ended(started_us, finished_us, is_tool);
                self.counts.running -= 1;
                self.failed(subtask, kind, message, now_us, out);
            }
            EngineEvent::Lost { subtask, fence, reason } => {
                if !self.settle_race(subtask, fence, false, out) || !self.is_current(subtask, fence) {
                    return;
                }
                self.counts.running -= 1;
                self.failed(subtask, FailureKind::WorkerLost, reason, now_us, out);
            }
            EngineEvent::RetryDue { subtask } => {
                let slot = &mut self.slots[subtask.index()];
                if slot.state == SubtaskState::Waiting {
                    self.approval_timer(subtask, now_us, out);
                } else if slot.state == SubtaskState::Backoff {
                    if let Some(since) = slot.timing.backoff_since_us.take() {
                        slot.timing.backoff_us += now_us.saturating_sub(since);
                    }
                    slot.state = SubtaskState::Ready;
                    slot.ready_since_us = Some(now_us);
                    self.ready.push_back(subtask);
                }
            }
            EngineEvent::CancelRequested => self.cancel(RunState::Cancelled, now_us, out),
            EngineEvent::StepRecorded { subtask, fence, seq, turn } => {
                self.step_recorded(subtask, fence, seq, turn, now_us, out)
            }
            EngineEvent::Spawned { subtask, fence, turn, spawns, started_us, finished_us } => {
                self.spawned(subtask, fence, turn, spawns, started_us, finished_us, now_us, out)
            }
            EngineEvent::Adopt { subtask, worker, fence, attempt } => {
                let Some(slot) = self.slots.get_mut(subtask.index()) else { return };
                // A blocked subtask was never dispatched: its dependencies' results are durable
                // before it starts (the manager waits for them), so this leader would know they
                // ended. A worker declaring one is confused or lying.
                if slot.state.is_terminal()
                    || matches!(slot.state, SubtaskState::Running | SubtaskState::Blocked)
                    || fence <= slot.fence
                {
                    self.counts.stale_reports += 1;
                    return;
                }
                // A ready slot may still sit in the queue; pop_ready skips it once running.
                slot.state = SubtaskState::Running;
                slot.attempt = attempt.max(slot.attempt);
                slot.fence = fence;
                slot.worker = Some(worker.clone());
                // Turns of this attempt the store already has were recorded by the last leader.
                if let Some(agent) = slot.agent.as_deref_mut() {
                    agent.next_seq = agent
                        .turns
                        .iter()
                        .filter(|t| t.fence == fence.0)
                        .map(|t| t.seq.saturating_add(1))
                        .max()
                        .unwrap_or(0);
                }
                self.counts.running += 1;
                self.counts.attempts += 1;
                out.push(Action::Publish(Update::Started { subtask, attempt: slot.attempt, worker, waited_us: None }));
                self.list_running(subtask);
            }
        }
    }

    fn dispatched(&mut self, subtask: SubtaskIx, worker: WorkerId, fence: Fence, out: &mut Vec<Action>) {
        let slot = &mut self.slots[subtask.index()];
        debug_assert_eq!(slot.state, SubtaskState::Ready, "only a popped ready subtask is dispatched");
        debug_assert!(fence > slot.fence, "fences only grow");
        if slot.state != SubtaskState::Ready {
            return;
        }
        slot.state = SubtaskState::Running;
        // From ready to dispatched (unknown for subtasks made ready before a restore).
        let waited_us = slot.ready_since_us.map(|since| self.clock_us.saturating_sub(since));
        if slot.first_ready_us.is_none() {
            slot.first_ready_us = slot.ready_since_us;
        }
        let held = match slot.ready_since_us {
            Some(since) => self.held.within(since, self.clock_us).min(waited_us.unwrap_or(0)),
            None => 0,
        };
        self.held.release(self.clock_us);
        slot.timing.placement_us += held;
        slot.timing.waited_us += waited_us.unwrap_or(0) - held;
        slot.ready_since_us = None;
        if slot.agent.is_some() && slot.attempt.0 > 0 && slot.worker.is_some() {
            self.counts.agent_resumes += 1;
            if slot.worker.as_ref() == Some(&worker) {
                self.counts.agent_resumes_sticky += 1;
            }
        }
        slot.attempt.0 = slot.attempt.0.saturating_add(1);
        slot.fence = fence;
        slot.worker = Some(worker.clone());
        let attempt = slot.attempt;
        self.counts.running += 1;
        self.counts.attempts += 1;
        out.push(Action::Publish(Update::Started { subtask, attempt, worker, waited_us }));
        if let Some(agent) = self.slots[subtask.index()].agent.as_deref_mut() {
            agent.next_seq = 0;
        }
        self.list_running(subtask);
        self.deliver_results(subtask, out);
    }

    fn is_current(&mut self, subtask: SubtaskIx, fence: Fence) -> bool {
        let ok = self.slots.get(subtask.index()).is_some_and(|s| s.state == SubtaskState::Running && s.fence == fence);
        if !ok {
            self.counts.stale_reports += 1;
        }
        ok
    }

    /// Marks every transitive dependent of a failed subtask as skipped.
    fn skip_dependents(&mut self, failed: SubtaskIx, out: &mut Vec<Action>) {
        let why = format!("not started: `{}`, which it depends on, failed", self.dag.node(failed).id);
        let mut stack = vec![failed];
        while let Some(i) = stack.pop() {
            for k in 0..self.dag.node(i).dependents.len() {
                let d = self.dag.node(i).dependents[k];
                let slot = &mut self.slots[d.index()];
                if slot.state == SubtaskState::Blocked {
                    slot.state = SubtaskState::Skipped;
                    slot.error = Some(Failure { kind: FailureKind::Permanent, message: why.clone() });
                    self.counts.skipped += 1;
                    self.counts.open -= 1;
                    out.push(Action::Publish(Update::Skipped { subtask: d, because: failed }));
                    out.push(self.persist(d));
                    stack.push(d);
                }
            }
        }
    }

    /// Subtask `subtask` succeeded: dependents whose last dependency it was become ready.
    fn release_dependents(&mut self, subtask: SubtaskIx, now_us: u64) {
        for k in 0..self.dag.node(subtask).dependents.len() {
            let d = self.dag.node(subtask).dependents[k];
            let dep = &mut self.slots[d.index()];
            dep.pending_deps -= 1;
            if dep.pending_deps == 0 && dep.state == SubtaskState::Blocked {
                dep.state = SubtaskState::Ready;
                dep.ready_since_us = Some(now_us);
                self.ready.push_back(d);
            }
        }
    }

    fn check_finished(&mut self, now_us: u64, out: &mut Vec<Action>) {
        if self.counts.open == 0 {
            let state =
                if self.counts.failed + self.counts.skipped == 0 { RunState::Succeeded } else { RunState::Failed };
            self.finish(state, now_us, out);
        }
    }

    fn finish(&mut self, state: RunState, now_us: u64, out: &mut Vec<Action>) {
        self.state = state;
        self.finished_us = Some(now_us);
        out.push(Action::Publish(Update::Finished { state }));
        out.push(Action::Finished { state });
    }

    /// The action that stores subtask `subtask`'s record as it stands.
    fn persist(&self, subtask: SubtaskIx) -> Action {
        Action::Persist { subtask, record: Box::new(self.slots[subtask.index()].outcome()) }
    }

    /// The run's accounting as of `now_us` (final once the run is terminal).
    pub fn summary(&self, now_us: u64) -> RunSummary {
        RunSummary::compute(self, now_us)
    }
}

impl crate::summary::RunView for RunEngine {
    fn tokens_by_model(&self) -> Vec<crate::summary::ModelTokens> {
        self.token_use
            .iter()
            .map(|(model, &(input_tokens, output_tokens))| crate::summary::ModelTokens {
                model: model.to_string(),
                input_tokens,
                output_tokens,
            })
            .collect()
    }
    fn run_id(&self) -> &RunId {
        &self.run_id
    }
    fn dag(&self) -> &Dag {
        &self.dag
    }
    fn slots(&self) -> &[Slot] {
        &self.slots
    }
    fn counts(&self) -> Counts {
        self.counts
    }
    fn state(&self) -> RunState {
        self.state
    }
    fn submitted_us(&self) -> u64 {
        self.submitted_us
    }
    fn finished_us(&self) -> Option<u64> {
        self.finished_us
    }
    fn critical_weight(&self, i: SubtaskIx) -> u64 {
        RunEngine::critical_weight(self, i)
    }
}

#[cfg(test)]
mod tests;
