//! Workers: joining (and adopting the attempts they hold), leaving, and their reports.

use std::collections::HashSet;

use swarm_core::engine::{EngineEvent, SubtaskState};
use swarm_core::{AttemptNo, ConnId, Fence, RunKey, WorkerId};
use swarm_proto::convert::{self, duration_us};
use swarm_proto::pb;
use tracing::{debug, info, warn};

use super::registry::WorkerKey;
use super::{Listed, Manager, WorkerTx};

/// The built-in tools and whether each may run twice (read-only or idempotent).
const BUILTIN_TOOLS: &[(&str, bool)] =
    &[("sleep", true), ("echo", true), ("flaky", true), ("http_get", true), ("append", false)];

impl Manager {
    pub(super) fn worker_joined(&mut self, conn: ConnId, hello: pb::WorkerHello, tx: WorkerTx, principal: String) {
        let id = WorkerId::from(hello.worker_id);
        // A worker id is bound to the principal that uses it while it is in use: another
        // principal cannot take over a live worker's id (and its attempts).
        let in_use = self.registry.find_alive(&id).is_some() || self.registry.holds_detached(&id);
        if let Some(owner) = self.worker_principals.get(&id).filter(|o| **o != principal && in_use) {
            warn!(worker_id = %id, %principal, owner = %owner, "worker id in use by another principal; refused");
            let status = tonic::Status::permission_denied(format!("worker id {id} is in use by another principal"));
            self.audit_join(&principal, &id, Err(&status));
            let _ = tx.try_send(Err(status));
            return;
        }
        self.worker_principals.insert(id.clone(), principal.clone());
        if let Some(old) = self.registry.find_alive(&id) {
            warn!(worker_id = %id, "worker reconnected; its previous connection is dropped");
            self.worker_detached(old);
        }
        let welcome = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                coordinator_id: self.config.coordinator_id.clone(),
                heartbeat_interval: Some(duration_us(self.config.heartbeat_interval.as_micros() as u64)),
                gateway_endpoints: self.config.gateway_endpoints.clone(),
                output_interest: true,
            })),
        };
        if tx.try_send(Ok(welcome)).is_err() {
            return;
        }
        let tools = hello
            .tools
            .into_iter()
            .map(|t| {
                // Built-in tools' flags are fixed here, whatever a worker says.
                let repeatable = match BUILTIN_TOOLS.iter().find(|(name, _)| *name == t.name) {
                    Some(&(_, repeatable)) => repeatable,
                    None => {
                        self.config.operator_repeatable.contains(&t.name)
                            || (self.config.trust_worker_tool_flags && (t.read_only || t.idempotent))
                    }
                };
                if repeatable {
                    self.repeatable_tools.insert(t.name.clone());
                }
                t.name
            })
            .collect::<HashSet<_>>();
        let w = self.registry.join(conn, id.clone(), hello.slots, tools, tx);
        let held = hello.held.len();
        let now = self.supervisor.now_us();
        // Bounded like everything a worker says: at most 64 labels of 256 bytes.
        let labels = hello
            .labels
            .iter()
            .take(64)
            .map(|(k, v)| (k.chars().take(256).collect(), v.chars().take(256).collect()))
            .collect();
        // Resources as quantities; one that does not parse is left out, and said.
        let mut capacity = std::collections::BTreeMap::new();
        for (name, text) in hello.resources.iter().take(64) {
            match swarm_core::placement::Quantity::parse(text) {
                Ok(q) if swarm_core::placement::valid_resource_name(name) => {
                    capacity.insert(name.clone(), q.0);
                }
                Ok(_) => warn!(worker_id = %id, resource = %name, "not a resource name; left out"),
                Err(e) => warn!(worker_id = %id, resource = %name, error = %e, "resource amount left out"),
            }
        }
        self.registry.describe(w, labels, capacity, now);
        let mut reattached = 0;
        for h in hello.held {
            // Held by an earlier connection of this worker (a dropped stream): it goes on, the
            // same attempt, and nothing runs twice. Otherwise (after a failover) it is adopted.
            if self.registry.reattach(w, Fence(h.fence), now) {
                reattached += 1;
            } else {
                self.adopt(w, h);
            }
        }
        // What an earlier connection held and the worker no longer declares is gone with it.
        for (fence, held) in self.registry.take_detached(&id) {
            let reason = "the worker reconnected without the attempt".to_owned();
            self.apply(held.run, EngineEvent::Lost { subtask: held.subtask, fence, reason });
        }
        info!(worker_id = %id, %principal, slots = hello.slots, held, reattached, "worker joined");
        self.audit_join(&principal, &id, Ok(()));
        // Subtasks parked for want of a tool may now have a worker.
        let keys: Vec<RunKey> = self.runs.iter().filter(|(_, e)| !e.parked.is_empty()).map(|(k, _)| *k).collect();
        for key in keys {
            if let Some(entry) = self.runs.get_mut(&key) {
                for sub in std::mem::take(&mut entry.parked).into_iter().rev() {
                    entry.engine.unpop(sub);
                }
            }
            self.enqueue(key);
        }
        self.check_recovery();
    }

    fn audit_join(&self, principal: &str, id: &WorkerId, outcome: Result<(), &tonic::Status>) {
        let who = crate::auth::Principal { name: principal.to_owned(), tenant: None, roles: vec![] };
        let extra = [("worker_id", serde_json::json!(id.to_string()))];
        self.config.audit.record(&who, crate::audit::Action::WorkerJoin, "", outcome, &extra);
    }

    /// Takes over an attempt a reconnecting worker holds, or tells it to stop the attempt.
    fn adopt(&mut self, w: WorkerKey, h: pb::HeldAttempt) {
        let fence = Fence(h.fence);
        let target = match self.listing.get(&swarm_core::RunId::from(h.run_id.as_str())) {
            Some(Listed::Live(k)) => {
                self.runs.get(k).and_then(|e| e.engine.dag().index_of(&h.subtask_id).map(|i| (*k, i)))
            }
            _ => None,
        };
        // Only an attempt of an earlier term can be adopted: this term's fences are handed out
        // here, and one this leader did not give to this worker is forged.
        let forged = swarm_core::fence::FenceSeq::term_of(fence) >= self.fences.term();
        if forged && self.fences.handed_out(fence) {
            // Handed out here and no longer held: it ended (its report was taken, and the
            // acknowledgement was lost with the stream), or it was re-queued meanwhile.
            debug!(fence = h.fence, run_id = %h.run_id, subtask_id = %h.subtask_id, "a declared attempt that ended here already; the worker forgets it");
        } else if forged {
            warn!(fence = h.fence, run_id = %h.run_id, subtask_id = %h.subtask_id, "a declared attempt of a fence never handed out; refused");
        }
        let adopted = match (target, self.registry.id(w).cloned()) {
            (Some((key, sub)), Some(worker)) if !forged && !self.registry.holds(fence) => {
                self.apply(key, EngineEvent::Adopt { subtask: sub, worker, fence, attempt: AttemptNo(h.attempt) });
                let slot = self.runs.get(&key).map(|e| e.engine.slot(sub));
                let ok = slot.is_some_and(|s| s.state == SubtaskState::Running && s.fence == fence);
                if ok {
                    let now = self.supervisor.now_us();
                    let placement = self.runs.get(&key).and_then(|e| e.engine.dag().node(sub).placement.clone());
                    self.registry.adopt(w, fence, (key, sub), placement.as_ref(), now);
                    self.stats.adopted += 1;
                }
                ok
            }
            _ => false,
        };
        if !adopted {
            debug!(fence = h.fence, run_id = %h.run_id, subtask_id = %h.subtask_id, "held attempt not adopted; cancelling it");
            self.registry.cancel(w, fence);
        }
    }

    /// The worker's connection ended (or is unusable), the worker perhaps alive: its attempts
    /// stay in flight for it to reconnect and declare them (until they fall silent, or its
    /// lease expires); nothing more is acknowledged to that connection.
    pub(super) fn worker_detached(&mut self, w: WorkerKey) {
        self.outbox.forget(w);
        let id = self.registry.id(w).cloned();
        let held = self.registry.detach(w);
        if held > 0 {
            info!(
                worker_id = %id.map(|i| i.to_string()).unwrap_or_default(),
                held,
                wait_ms = self.supervisor.silence_limit_us() / 1000,
                "worker disconnected; its attempts wait for it to reconnect"
            );
        }
    }

    /// The worker is gone for good (its lease expired): the attempts of its connections go back
    /// to their runs as lost.
    pub(super) fn worker_expired(&mut self, id: &WorkerId) {
        let connected = self.registry.find_alive(id);
        if let Some(w) = connected {
            self.worker_lost(w);
        }
        let detached = self.registry.take_detached(id);
        if connected.is_some() || !detached.is_empty() {
            warn!(worker_id = %id, detached = detached.len(), "worker lease expired; its attempts are re-queued");
        }
        for (fence, held) in detached {
            let reason = "the worker running the attempt went away (its lease expired)".to_owned();
            self.apply(held.run, EngineEvent::Lost { subtask: held.subtask, fence, reason });
        }
    }

    /// The worker is gone: its attempts go back to their runs as lost, and nothing more is
    /// acknowledged to that connection.
    pub(super) fn worker_lost(&mut self, w: WorkerKey) {
        self.outbox.forget(w);
        for (fence, held) in self.registry.lose(w) {
            let reason = "the worker running the attempt went away".to_owned();
            self.apply(held.run, EngineEvent::Lost { subtask: held.subtask, fence, reason });
        }
    }

    pub(super) fn report(&mut self, conn: ConnId, mut r: pb::AttemptReport) {
        self.stats.reports += 1;
        let Some(w) = self.registry.by_conn(conn) else { return };
        // Every report is acknowledged once this turn's writes are durable, stale ones too:
        // the worker may forget it either way.
        self.outbox.ack(w, r.fence);
        let Some(f) = self.registry.release(w, Fence(r.fence)) else {
            self.stats.stale_reports += 1;
            debug!(fence = r.fence, "report for an attempt no longer in flight");
            return;
        };
        let (started_us, finished_us) = coordinator_times(
            r.started_at.as_ref().map_or(0, convert::unix_us),
            r.finished_at.as_ref().map_or(0, convert::unix_us),
            f.dispatched_us,
            self.supervisor.now_us(),
        );
        let fence = Fence(r.fence);
        let stored = match self.runs.get(&f.run) {
            Some(entry) if !r.artifacts.is_empty() => {
                let id = entry.engine.dag().node(f.subtask).id.to_string();
                super::artifacts::reported(entry.engine.run_id(), &id, fence, std::mem::take(&mut r.artifacts))
            }
            _ => Ok(None),
        };
        // An orchestrator that answered hands on what its subagents did.
        let stored = match (stored, self.runs.get(&f.run)) {
            (Ok(own), Some(entry))
                if matches!(r.outcome, Some(pb::attempt_report::Outcome::OutputJson(_)))
                    && matches!(entry.engine.dag().node(f.subtask).work, swarm_core::dag::Work::Orchestrator(_)) =>
            {
                Ok(super::artifacts::with_subagents(&entry.engine, f.subtask, own))
            }
            (other, _) => other,
        };
        let event = match (r.outcome, stored) {
            (Some(pb::attempt_report::Outcome::OutputJson(_)), Err(why)) => EngineEvent::Failed {
                subtask: f.subtask,
                fence,
                kind: swarm_core::FailureKind::Permanent,
                message: why,
                started_us,
                finished_us,
            },
            (Some(pb::attempt_report::Outcome::OutputJson(out)), Ok(artifacts)) => EngineEvent::Succeeded {
                subtask: f.subtask,
                fence,
                started_us,
                finished_us,
                output: out.into(),
                artifacts,
            },
            // An attempt the coordinator did not cancel (those are no longer current, and their
            // reports are ignored), cancelled by its worker (a drain that timed out, a worker
            // shutting down): not the call's failure, so it runs again.
            (Some(pb::attempt_report::Outcome::Error(e)), _)
                if convert::failure_kind(e.kind) == swarm_core::FailureKind::Cancelled =>
            {
                let reason =
                    format!("the worker cancelled the attempt: {}", swarm_core::error::bounded_message(e.message));
                EngineEvent::Lost { subtask: f.subtask, fence, reason }
            }
            (Some(pb::attempt_report::Outcome::Error(e)), _) => EngineEvent::Failed {
                subtask: f.subtask,
                fence,
                kind: convert::failure_kind(e.kind),
                message: swarm_core::error::bounded_message(e.message),
                started_us,
                finished_us,
            },
            (Some(pb::attempt_report::Outcome::Suspended(s)), _) if !s.approval_call_id.is_empty() => {
                match serde_json::from_str::<swarm_core::agent::Turn>(&s.turn_json) {
                    Ok(turn) => EngineEvent::AskedApproval {
                        subtask: f.subtask,
                        fence,
                        turn: std::sync::Arc::new(turn),
                        call_id: s.approval_call_id,
                        question: s.approval_question,
                        started_us,
                        finished_us,
                    },
                    Err(e) => EngineEvent::Failed {
                        subtask: f.subtask,
                        fence,
                        kind: swarm_core::FailureKind::Transient,
                        message: format!("the worker's approval request was malformed: {e}"),
                        started_us,
                        finished_us,
                    },
                }
            }
            (Some(pb::attempt_report::Outcome::Suspended(s)), _) => {
                let parsed = serde_json::from_str::<swarm_core::agent::Turn>(&s.turn_json).and_then(|turn| {
                    serde_json::from_str::<Vec<swarm_core::agent::SpawnRequest>>(&s.spawns_json)
                        .map(|spawns| (turn, spawns))
                });
                match parsed {
                    Ok((turn, spawns)) => EngineEvent::Spawned {
                        subtask: f.subtask,
                        fence,
                        turn: std::sync::Arc::new(turn),
                        spawns,
                        started_us,
                        finished_us,
                    },
                    Err(e) => EngineEvent::Failed {
                        subtask: f.subtask,
                        fence,
                        kind: swarm_core::FailureKind::Transient,
                        message: format!("the worker's spawn request was malformed: {e}"),
                        started_us,
                        finished_us,
                    },
                }
            }
            (None, _) => EngineEvent::Failed {
                subtask: f.subtask,
                fence,
                kind: swarm_core::FailureKind::Transient,
                message: "the worker's report had no outcome".into(),
                started_us,
                finished_us,
            },
        };
        self.apply(f.run, event);
    }

    /// Attempts not heard of for three heartbeat intervals are declared lost (re-queued, and
    /// cancelled on their worker in case it is merely slow). Not those of a worker that is
    /// silent as a whole while its lease in the store lives: it may be cut off from this
    /// coordinator only and still running them, so they go when the lease ends (the worker
    /// stops them before it can; see `swarm_worker::hold`).
    pub(super) fn expire_silent(&mut self, now: u64) {
        let limit = self.supervisor.silence_limit_us();
        for (fence, f) in self.registry.silent(now, limit, &self.leased) {
            let worker = self.registry.id(f.worker).map(ToString::to_string).unwrap_or_default();
            warn!(fence = fence.0, worker_id = %worker, "no heartbeat for the attempt; it is declared lost");
            let reason = format!("no heartbeat for {} ms", limit / 1000);
            self.apply(f.run, EngineEvent::Lost { subtask: f.subtask, fence, reason });
        }
    }

    /// A turn of a running agent: extend its transcript.
    pub(super) fn agent_step(&mut self, conn: ConnId, step: pb::AgentStepReport) {
        let Some(w) = self.registry.by_conn(conn) else { return };
        // Acknowledged once this turn's writes are durable, whether recorded or stale.
        self.outbox.ack_step(w, pb::StepAck { fence: step.fence, seq: step.seq });
        let now = self.supervisor.now_us();
        let Some(f) = self.registry.touch(w, Fence(step.fence), now) else {
            self.stats.stale_reports += 1;
            return;
        };
        match serde_json::from_str::<swarm_core::agent::Turn>(&step.turn_json) {
            Ok(turn) => {
                let event = EngineEvent::StepRecorded {
                    subtask: f.subtask,
                    fence: Fence(step.fence),
                    seq: step.seq,
                    turn: std::sync::Arc::new(turn),
                };
                self.apply(f.run, event);
            }
            Err(e) => warn!(fence = step.fence, error = %e, "malformed agent step ignored"),
        }
    }
}

impl Manager {
    /// Partial output of agents running on a worker: kept for watchers, only for attempts the
    /// worker holds (the subtask is the coordinator's own idea of the fence's, never the
    /// worker's say). Also proof that the attempt is alive.
    pub(super) fn agent_output(&mut self, conn: ConnId, chunks: Vec<pb::AgentOutputChunk>) {
        let Some(w) = self.registry.by_conn(conn) else { return };
        let now = self.supervisor.now_us();
        for chunk in chunks {
            self.stats.output_chunks += 1;
            self.stats.output_bytes += prost::Message::encoded_len(&chunk) as u64;
            let Some(f) = self.registry.touch(w, Fence(chunk.fence), now) else { continue };
            let (Some(mut output), Some(entry)) = (chunk.output, self.runs.get(&f.run)) else { continue };
            output.subtask_id = entry.engine.dag().node(f.subtask).id.to_string();
            entry.log.output().push(output);
        }
    }

    /// Tells the workers holding attempts of `run_id` whether anyone follows its partial output
    /// now (when that changed since they were last told). Later attempts learn it from their
    /// assignment (`output_watched`).
    pub(super) fn output_interest(&mut self, run_id: &swarm_core::RunId) {
        let Some(Listed::Live(key)) = self.listing.get(run_id) else { return };
        let key = *key;
        let Some(entry) = self.runs.get_mut(&key) else { return };
        let followed = entry.log.output().followed();
        if entry.output_told == followed {
            return;
        }
        entry.output_told = followed;
        let run = run_id.to_string();
        let interest = if followed {
            pb::OutputInterest { watched: vec![run], unwatched: vec![] }
        } else {
            pb::OutputInterest { watched: vec![], unwatched: vec![run] }
        };
        let workers: HashSet<WorkerKey> = self.registry.held_for_run(key).into_iter().map(|(w, _)| w).collect();
        for w in workers {
            if let Some(tx) = self.registry.tx(w) {
                let msg =
                    pb::CoordinatorMessage { msg: Some(pb::coordinator_message::Msg::Interest(interest.clone())) };
                let _ = tx.try_send(Ok(msg));
            }
        }
    }
}

/// How far a worker's clock may be off before its times are not taken as they are.
const CLOCK_TOLERANCE_US: u64 = 1_000_000;

/// A worker's (started, finished) times on the coordinator's clock. Times that fit between the
/// dispatch and now (give or take [`CLOCK_TOLERANCE_US`]) are kept, clamped into that window.
/// Otherwise the worker's clock is off (skew, a jump): its duration is kept (one clock measured
/// both ends), capped by the time since dispatch, and placed to end now. `dispatched_us` 0: an
/// adopted attempt, started under an earlier leader. Durations computed from the result stay
/// within the run's life.
pub(super) fn coordinator_times(started_us: u64, finished_us: u64, dispatched_us: u64, now_us: u64) -> (u64, u64) {
    let duration = finished_us.saturating_sub(started_us);
    let duration = if dispatched_us == 0 { duration } else { duration.min(now_us.saturating_sub(dispatched_us)) };
    let fits = started_us <= finished_us
        && started_us.saturating_add(CLOCK_TOLERANCE_US) >= dispatched_us
        && finished_us <= now_us.saturating_add(CLOCK_TOLERANCE_US);
    if fits {
        let finished = finished_us.clamp(dispatched_us, now_us);
        (started_us.clamp(dispatched_us, finished), finished)
    } else {
        (now_us.saturating_sub(duration), now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::coordinator_times;

    const S: u64 = 1_000_000;

    #[test]
    fn a_worker_clock_that_is_off_keeps_its_durations_but_not_its_times() {
        let (dispatched, now) = (1_000 * S, 1_010 * S);
        // In step (within a second): kept as reported.
        assert_eq!(coordinator_times(1_001 * S, 1_009 * S, dispatched, now), (1_001 * S, 1_009 * S));
        // Five minutes ahead, or behind: the 8 s it took, ending now.
        assert_eq!(coordinator_times(1_301 * S, 1_309 * S, dispatched, now), (1_002 * S, now));
        assert_eq!(coordinator_times(701 * S, 709 * S, dispatched, now), (1_002 * S, now));
        // A duration longer than the time since dispatch is a lie: capped.
        assert_eq!(coordinator_times(0, 1_000_000 * S, dispatched, now), (dispatched, now));
        // Finished before started: zero long, now.
        assert_eq!(coordinator_times(1_009 * S, 1_001 * S, dispatched, now), (now, now));
        // An adopted attempt (dispatched under an earlier leader) may have started long ago.
        assert_eq!(coordinator_times(500 * S, 1_009 * S, 0, now), (500 * S, 1_009 * S));
    }
}
