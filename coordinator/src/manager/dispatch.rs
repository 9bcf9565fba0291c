//! Dispatch (filling free worker slots from ready subtasks, round-robin across runs) and the
//! end-of-turn flush.

use swarm_core::engine::{Action, EngineEvent, Update};
use swarm_core::{Fence, RunKey, SubtaskIx};
use swarm_proto::convert::duration_us;
use swarm_proto::pb;
use tracing::{error, warn};

use super::Manager;
use super::registry::WorkerKey;
use crate::placement::{NoPlacement, place, place_except, place_preferring};

/// Ready subtasks of one run that a dispatch turn passes over when their placement finds no
/// room, to try the run's next ones (which may belong to another pool).
const PASS_OVER: usize = 8;

impl Manager {
    /// Fills free worker slots from the ready subtasks of active runs, round-robin.
    pub(super) fn dispatch(&mut self) {
        let mut warnings = Vec::new();
        let mut free = self.registry.free_slots();
        let mut misses = 0;
        let now = self.supervisor.now_us();
        // Counted only when a slot is free: a full cluster dispatches nothing this turn.
        let mut running = (free > 0 && self.shares_by_tenant()).then(|| self.running_by_tenant());
        // Ready primaries that found no free slot: they may take backups' slots.
        let mut starved = 0usize;
        if free == 0 && !self.backups.is_empty() {
            starved = self.ring.iter().filter_map(|k| self.runs.get(k)).map(|e| e.engine.ready_len()).sum();
        }
        // Ready subtasks passed over this turn because their pool (or resources) had no room,
        // so that the run's next ones, which may fit elsewhere, are tried: given back, in
        // order, when the turn ends. At most PASS_OVER per run and turn.
        let mut aside: Vec<(RunKey, SubtaskIx)> = Vec::new();
        // Placements (by address: alike subtasks share one) and needs found without room.
        let mut no_room: Vec<(usize, String, NoPlacement)> = Vec::new();
        while free > 0 && misses <= self.ring.len() {
            let next = match &running {
                Some(r) => self.next_fair_run(r, now),
                None => self.next_run(),
            };
            let Some(key) = next else { break };
            let Some(entry) = self.runs.get_mut(&key) else { continue };
            entry.in_ring = false;
            if entry.engine.state().is_terminal() || entry.recovering {
                continue;
            }
            // At its concurrency cap a run waits for its own attempts to end (they re-enqueue it).
            let Some(sub) = entry.engine.pop_dispatchable() else { continue };
            let node = entry.engine.dag().node(sub);
            entry.unsettled.settle(self.outbox.settled());
            if entry.unsettled.blocks(node) {
                // Its dependency's result is not durable yet: the run waits for the writer.
                entry.engine.unpop(sub);
                self.awaiting_writes.push(key);
                continue;
            }
            let needs = entry.engine.placement(sub);
            let need = needs.need;
            let placement = node.placement.as_deref();
            let has_placement = placement.is_some();
            // A retry goes to a worker the subtask has not failed on, when one is free.
            let workers = self.registry.candidates();
            let prefer = needs.prefer.and_then(|w| self.registry.indexes_of(std::slice::from_ref(w)).first().copied());
            // A placement found without room this turn has none for the rest of it (a turn only
            // fills slots): its next subtasks are passed over without another look.
            let key_of = |p: &swarm_core::placement::Placement| p as *const _ as usize;
            let full = placement
                .and_then(|p| no_room.iter().find(|(k, n, _)| *k == key_of(p) && **n == *need).map(|(_, _, why)| *why));
            let placed = if let Some(why) = full {
                Err(why)
            } else if needs.avoid.is_empty() {
                place_preferring(&need, placement, workers, &[], prefer)
            } else {
                let avoid = self.registry.indexes_of(needs.avoid);
                place_preferring(&need, placement, workers, &avoid, prefer)
                    .or_else(|_| place(&need, placement, workers))
            };
            let placed = match placed {
                // At its rate limit the tool waits like a busy one; the loop wakes for the token.
                Ok(_) if !self.limiter.try_take(&node.tool, now) => Err(NoPlacement::Busy),
                other => other.map(|i| self.registry.key_at(i)),
            };
            match placed {
                Ok(w) => {
                    misses = 0;
                    free -= 1;
                    if let Some(r) = running.as_mut() {
                        let tenant = self.tenant_of_run(key);
                        if let Some(t) = &tenant {
                            self.tenant_rates.try_take(t, now);
                        }
                        *r.entry(tenant).or_default() += 1;
                    }
                    if !self.start_attempt(key, sub, w, now) {
                        if let Some(entry) = self.runs.get_mut(&key) {
                            entry.engine.unpop(sub);
                        }
                        break;
                    }
                }
                Err(busy @ (NoPlacement::Busy | NoPlacement::Held)) => {
                    if let Some(p) = placement
                        && full.is_none()
                        && needs.avoid.is_empty()
                    {
                        no_room.push((key_of(p), need.clone().into_owned(), busy));
                    }
                    if busy == NoPlacement::Held {
                        entry.engine.held_by_placement(sub, now);
                    }
                    misses += 1;
                    starved = starved.max(entry.engine.ready_len() + 1);
                    if has_placement && aside.iter().filter(|(k, _)| *k == key).count() < PASS_OVER {
                        aside.push((key, sub));
                    } else {
                        entry.engine.unpop(sub);
                    }
                }
                Err(missing @ (NoPlacement::NoWorkerOffers | NoPlacement::NoWorkerMatches)) => {
                    // Said once per run and tool (or model, or placement), at once: a typo must
                    // not wait in silence.
                    let matches = missing == NoPlacement::NoWorkerMatches;
                    let held = matches && placement.is_some();
                    let said = match (matches, placement) {
                        (true, Some(p)) => format!("{need} placed by {}", p.describe()),
                        _ => need.clone().into_owned(),
                    };
                    if !entry.unoffered_warned.contains(&said) {
                        entry.unoffered_warned.insert(said);
                        let limit = self.config.no_worker_timeout;
                        let then = if limit.is_zero() {
                            "the subtask waits for one".to_owned()
                        } else {
                            format!("the subtask fails if none does within {} s", limit.as_secs())
                        };
                        let message = match (matches, placement) {
                            (true, Some(p)) => format!(
                                "no connected worker offering {} matches its placement ({}); {then}",
                                node.describe_requirement(),
                                p.describe()
                            ),
                            _ => format!("no connected worker offers {}; {then}", node.describe_requirement()),
                        };
                        warn!(run_id = %entry.engine.run_id(), subtask = %node.id, %message, "unplaceable subtask");
                        warnings.push((key, sub, message));
                    }
                    if held {
                        entry.engine.held_by_placement(sub, now);
                    }
                    entry.parked.push(sub);
                }
            }
            self.enqueue(key);
        }
        for &(key, sub) in aside.iter().rev() {
            if let Some(entry) = self.runs.get_mut(&key) {
                entry.engine.unpop(sub);
            }
        }
        for (key, _) in aside {
            self.enqueue(key);
        }
        for (key, subtask, message) in warnings {
            self.act(key, Action::Publish(Update::Warning { subtask, message }), now);
        }
        if starved > 0 {
            self.preempt_backups(starved);
        }
    }

    /// Cancels up to `wanted` running backups, newest first, so ready primaries get their
    /// slots (freed when the workers acknowledge; those already on their way count).
    fn preempt_backups(&mut self, wanted: usize) {
        let registry = &self.registry;
        self.preempted.retain(|f| registry.holds(*f));
        let mut wanted = wanted.saturating_sub(self.preempted.len());
        while wanted > 0 {
            let Some((key, sub, fence)) = self.backups.pop() else { break };
            let live = self.runs.get(&key).is_some_and(|e| e.engine.slot(sub).backups.iter().any(|b| b.fence == fence));
            if !live {
                continue; // the race is over
            }
            self.stats.preempted_backups += 1;
            self.apply(key, EngineEvent::BackupPreempted { subtask: sub, fence });
            self.preempted.push(fence);
            wanted -= 1;
        }
    }

    /// Fails parked subtasks (no connected worker offers their tool or model) that have waited
    /// longer than the coordinator's `no_worker_timeout`.
    pub(super) fn expire_unplaceable(&mut self, now: u64) {
        let limit_us = self.config.no_worker_timeout.as_micros() as u64;
        if limit_us == 0 {
            return;
        }
        let keys: Vec<RunKey> = self.runs.iter().filter(|(_, e)| !e.parked.is_empty()).map(|(k, _)| *k).collect();
        for key in keys {
            let mut actions = std::mem::take(&mut self.actions);
            if let Some(entry) = self.runs.get_mut(&key) {
                let engine = &mut entry.engine;
                entry.parked.retain(|&sub| {
                    let reason =
                        format!("no connected worker offers {}", engine.dag().node(sub).describe_requirement());
                    !engine.expire_unplaceable(sub, limit_us, &reason, now, &mut actions)
                });
            }
            for action in actions.drain(..) {
                self.act(key, action, now);
            }
            self.actions = actions;
        }
    }

    /// Fails subtasks that waited too long to start (runs with a schedule-to-start limit).
    pub(super) fn expire_unscheduled(&mut self, now: u64) {
        let keys: Vec<RunKey> = self
            .runs
            .iter()
            .filter(|(_, e)| {
                e.engine.dag().schedule_to_start_ms() > 0 && !e.engine.state().is_terminal() && !e.recovering
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let mut actions = std::mem::take(&mut self.actions);
            if let Some(entry) = self.runs.get_mut(&key) {
                entry.engine.expire_unscheduled(now, &mut actions);
            }
            for action in actions.drain(..) {
                self.act(key, action, now);
            }
            self.actions = actions;
        }
    }

    /// Starts backup attempts for stragglers (see `swarm_core::engine::speculation`).
    pub(super) fn speculate(&mut self, now: u64) {
        if self.backups.len() > 1024 {
            let runs = &self.runs;
            self.backups.retain(|(key, sub, fence)| {
                runs.get(key).is_some_and(|e| e.engine.slot(*sub).backups.iter().any(|b| b.fence == *fence))
            });
        }
        let keys: Vec<RunKey> = self
            .runs
            .iter()
            .filter(|(_, e)| !e.recovering && !e.engine.state().is_terminal())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(entry) = self.runs.get(&key) else { continue };
            let repeatable = &self.repeatable_tools;
            let engine = &entry.engine;
            let candidates =
                engine.speculation_candidates(now, |i| repeatable.contains(engine.dag().node(i).tool.as_ref()));
            for sub in candidates {
                let Some(entry) = self.runs.get(&key) else { break };
                let tool = entry.engine.dag().node(sub).tool.clone();
                let original = entry
                    .engine
                    .slot(sub)
                    .worker
                    .as_ref()
                    .and_then(|id| self.registry.indexes_of(std::slice::from_ref(id)).first().copied());
                let placement = entry.engine.dag().node(sub).placement.clone();
                let Ok(w) = place_except(&tool, placement.as_deref(), self.registry.candidates(), original) else {
                    continue;
                };
                let w = self.registry.key_at(w);
                let Some(Fence(fence)) = self.take_fence() else { return };
                self.stats.dispatched += 1;
                let Some(worker_id) = self.registry.id(w).cloned() else { continue };
                self.apply(key, EngineEvent::BackupDispatched { subtask: sub, worker: worker_id, fence: Fence(fence) });
                self.backups.push((key, sub, Fence(fence)));
                let Some(entry) = self.runs.get(&key) else { continue };
                let node = entry.engine.dag().node(sub);
                let (artifacts, artifact_bytes_left, inputs) = self.assignment_artifacts(entry, sub);
                let assignment = pb::Assignment {
                    run_id: entry.engine.run_id().to_string(),
                    subtask_id: node.id.to_string(),
                    attempt: entry.engine.slot(sub).attempt.0,
                    fence,
                    tool: node.tool.to_string(),
                    args_json: node.args_json.to_string(),
                    timeout: node.timeout.map(|d| duration_us(d.as_micros() as u64)),
                    agent: None,
                    speculative: true,
                    trace_context: trace_context(node, &entry.trace_context),
                    artifacts,
                    artifact_bytes_left,
                    inputs,
                    output_watched: entry.log.output().followed(),
                };
                self.registry.assign(w, (key, sub), assignment, placement.as_ref(), now);
            }
        }
    }

    /// The next attempt fence of this term. When the term's fences are used up (after 2⁴⁰
    /// attempts) the term ends, so the next one starts above them: nothing more is dispatched
    /// here and the node steps down and campaigns again.
    fn take_fence(&mut self) -> Option<Fence> {
        let fence = self.fences.next();
        if fence.is_none() && !self.term_token.is_cancelled() {
            error!(term = self.config.term, "this term's attempt fences are used up; ending the term");
            self.term_token.cancel();
        }
        fence
    }

    /// Dispatches subtask `sub` on worker `w`; false when no fence is left (the term ends).
    fn start_attempt(&mut self, key: RunKey, sub: SubtaskIx, w: WorkerKey, now: u64) -> bool {
        let Some(Fence(fence)) = self.take_fence() else { return false };
        let Some(worker_id) = self.registry.id(w).cloned() else { return true };
        self.stats.dispatched += 1;
        self.apply(key, EngineEvent::Dispatched { subtask: sub, worker: worker_id, fence: Fence(fence) });
        let Some(entry) = self.runs.get(&key) else { return true };
        let node = entry.engine.dag().node(sub);
        let agent = agent_task(&entry.engine, sub);
        let (artifacts, artifact_bytes_left, inputs) = self.assignment_artifacts(entry, sub);
        let assignment = pb::Assignment {
            run_id: entry.engine.run_id().to_string(),
            subtask_id: node.id.to_string(),
            attempt: entry.engine.slot(sub).attempt.0,
            fence,
            tool: if agent.is_some() { String::new() } else { node.tool.to_string() },
            args_json: node.args_json.to_string(),
            timeout: node.timeout.map(|d| duration_us(d.as_micros() as u64)),
            agent,
            speculative: false,
            trace_context: trace_context(node, &entry.trace_context),
            artifacts,
            artifact_bytes_left,
            inputs,
            output_watched: entry.log.output().followed(),
        };
        let placement = node.placement.clone();
        self.registry.assign(w, (key, sub), assignment, placement.as_ref(), now);
        true
    }

    /// Sends each worker its messages of this turn and hands the writes to the outbox.
    pub(super) async fn flush(&mut self) {
        for w in self.registry.flush() {
            warn!(worker_id = %self.registry.id(w).map(ToString::to_string).unwrap_or_default(), "worker stream closed or full; dropping it (the worker reconnects)");
            self.worker_detached(w);
        }
        self.outbox.flush(&self.registry).await;
    }
}

/// The agent part of an assignment: spec, transcript so far, caps.
fn agent_task(engine: &swarm_core::RunEngine, sub: SubtaskIx) -> Option<pb::AgentTask> {
    use swarm_core::dag::Work;
    let node = engine.dag().node(sub);
    let slot = engine.slot(sub);
    let limits = engine.dag().limits();
    let (orchestrator, spec_json, cap, max) = match &node.work {
        Work::Tool | Work::Approval(_) => return None,
        Work::Agent(a) => (false, serde_json::to_string(a.as_ref()), limits.subagent_max_steps, a.max_steps),
        Work::Orchestrator(o) => (true, serde_json::to_string(o.as_ref()), limits.orchestrator_max_steps, o.max_steps),
    };
    let turns: Vec<&swarm_core::agent::Turn> =
        slot.agent.as_ref().map(|a| a.turns.iter().map(|t| t.as_ref()).collect()).unwrap_or_default();
    // A subagent goes by the name its orchestrator gave it; others by their id.
    let name = if node.name.is_empty() { node.id.to_string() } else { node.name.to_string() };
    Some(pb::AgentTask {
        orchestrator,
        spec_json: spec_json.unwrap_or_default(),
        transcript_json: serde_json::to_string(&turns).unwrap_or_else(|_| "[]".into()),
        name,
        max_steps: max.unwrap_or(cap).min(cap),
        steps_taken: slot.steps,
        priority: engine.dag().priority(),
        critical_path: engine.critical_path(sub),
    })
}

/// The trace context an attempt's spans continue: a subagent's own (the call that started
/// it), else the run's.
fn trace_context(
    node: &swarm_core::dag::Node,
    run: &std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    match &node.trace_context {
        Some(own) => own.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => run.clone(),
    }
}
