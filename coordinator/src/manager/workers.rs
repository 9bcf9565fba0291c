//! Workers: joining (and adopting the attempts they hold), leaving, and their reports.

use std::collections::HashSet;

use swarm_core::agent::{AGENT_CAPABILITY, MODEL_CAPABILITY_PREFIX};
use swarm_core::engine::{EngineEvent, SubtaskState};
use swarm_core::{AttemptNo, Fence, WorkerId};
use swarm_proto::convert::{self, duration_us};
use swarm_proto::pb;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Inflight, Listed, Manager, WorkerEntry, WorkerTx};
use crate::placement::Candidate;

impl Candidate for WorkerEntry {
    fn alive(&self) -> bool {
        self.alive
    }
    fn free_slots(&self) -> u32 {
        if self.draining { 0 } else { self.slots.saturating_sub(self.running) }
    }
    /// A tool by name; a model as `@model:NAME` (exact, else the part before a `:`, as workers
    /// resolve it). A worker that runs agents but lists no models (an older version) is taken
    /// to serve every model.
    fn offers(&self, need: &str) -> bool {
        if self.tools.contains(need) {
            return true;
        }
        let Some(model) = need.strip_prefix(MODEL_CAPABILITY_PREFIX) else { return false };
        if !self.tools.contains(AGENT_CAPABILITY) {
            return false;
        }
        let lists_models = self.tools.iter().any(|t| t.starts_with(MODEL_CAPABILITY_PREFIX));
        !lists_models
            || model
                .split_once(':')
                .is_some_and(|(base, _)| self.tools.contains(&format!("{MODEL_CAPABILITY_PREFIX}{base}")))
    }
}

impl Manager {
    pub(super) fn worker_joined(&mut self, conn: u64, hello: pb::WorkerHello, tx: WorkerTx) {
        let id = WorkerId::from(hello.worker_id);
        if let Some(old) = self.workers.iter().position(|w| w.alive && w.id == id) {
            warn!(worker_id = %id, "worker reconnected; its previous connection is dropped");
            self.by_conn.remove(&self.workers[old].conn);
            self.worker_lost(old);
        }
        let welcome = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                coordinator_id: self.config.coordinator_id.clone(),
                heartbeat_interval: Some(duration_us(self.config.heartbeat_interval.as_micros() as u64)),
            })),
        };
        if tx.try_send(Ok(welcome)).is_err() {
            return;
        }
        let entry = WorkerEntry {
            id: id.clone(),
            conn,
            slots: hello.slots,
            running: 0,
            tools: hello
                .tools
                .into_iter()
                .map(|t| {
                    if t.read_only || t.idempotent {
                        self.repeatable_tools.insert(t.name.clone());
                    }
                    t.name
                })
                .collect::<HashSet<_>>(),
            tx,
            alive: true,
            draining: false,
            out_assign: Vec::new(),
            out_cancel: Vec::new(),
        };
        let w = match self.workers.iter().position(|w| !w.alive) {
            Some(i) => {
                self.workers[i] = entry;
                i
            }
            None => {
                self.workers.push(entry);
                self.workers.len() - 1
            }
        };
        self.by_conn.insert(conn, w);
        let held = hello.held.len();
        for h in hello.held {
            self.adopt(w, h);
        }
        info!(worker_id = %id, slots = hello.slots, held, "worker joined");
        // Subtasks parked for want of a tool may now have a worker.
        let keys: Vec<u32> = self.runs.iter().filter(|(_, e)| !e.parked.is_empty()).map(|(k, _)| *k).collect();
        for key in keys {
            if let Some(entry) = self.runs.get_mut(&key) {
                for sub in std::mem::take(&mut entry.parked).into_iter().rev() {
                    entry.engine.unpop(sub);
                }
            }
            self.enqueue(key);
        }
        self.dirty.push(w);
        self.check_recovery();
    }

    /// Takes over an attempt a reconnecting worker holds, or tells it to stop the attempt.
    fn adopt(&mut self, w: usize, h: pb::HeldAttempt) {
        let fence = Fence(h.fence);
        let target = match self.listing.get(&swarm_core::RunId::from(h.run_id.as_str())) {
            Some(Listed::Live(k)) => {
                self.runs.get(k).and_then(|e| e.engine.dag().index_of(&h.subtask_id).map(|i| (*k, i)))
            }
            _ => None,
        };
        let adopted = match target {
            Some((key, sub)) if !self.inflight.contains_key(&h.fence) => {
                let worker = self.workers[w].id.clone();
                self.apply(key, EngineEvent::Adopt { subtask: sub, worker, fence, attempt: AttemptNo(h.attempt) });
                let slot = self.runs.get(&key).map(|e| e.engine.slot(sub));
                let ok = slot.is_some_and(|s| s.state == SubtaskState::Running && s.fence == fence);
                if ok {
                    self.inflight
                        .insert(h.fence, Inflight { run: key, subtask: sub, worker: w, last_beat_us: super::now_us() });
                    self.workers[w].running += 1;
                    self.stats.adopted += 1;
                }
                ok
            }
            _ => false,
        };
        if !adopted {
            debug!(fence = h.fence, run_id = %h.run_id, subtask_id = %h.subtask_id, "held attempt not adopted; cancelling it");
            self.workers[w].out_cancel.push(h.fence);
        }
    }

    pub(super) fn worker_lost(&mut self, w: usize) {
        let worker = &mut self.workers[w];
        worker.alive = false;
        worker.out_assign.clear();
        worker.out_cancel.clear();
        // Dropping our sender ends the worker's stream, so a worker that is still there
        // reconnects.
        worker.tx = mpsc::channel(1).0;
        self.acks.remove(&w);
        self.step_acks.remove(&w);
        let lost: Vec<(u64, Inflight)> =
            self.inflight.iter().filter(|(_, f)| f.worker == w).map(|(fence, f)| (*fence, *f)).collect();
        for (fence, f) in lost {
            self.inflight.remove(&fence);
            let reason = "the worker running the attempt went away".to_owned();
            self.apply(f.run, EngineEvent::Lost { subtask: f.subtask, fence: Fence(fence), reason });
        }
        self.workers[w].running = 0;
    }

    pub(super) fn report(&mut self, conn: u64, r: pb::AttemptReport) {
        self.stats.reports += 1;
        let Some(&w) = self.by_conn.get(&conn) else { return };
        // Every report is acknowledged once this turn's writes are durable, stale ones too:
        // the worker may forget it either way.
        self.acks.entry(w).or_default().push(r.fence);
        let Some(f) = self.inflight.get(&r.fence).copied().filter(|f| f.worker == w) else {
            self.stats.stale_reports += 1;
            debug!(fence = r.fence, "report for an attempt no longer in flight");
            return;
        };
        self.inflight.remove(&r.fence);
        let worker = &mut self.workers[w];
        worker.running = worker.running.saturating_sub(1);
        let started_us = r.started_at.as_ref().map_or(0, convert::unix_us);
        let finished_us = r.finished_at.as_ref().map_or(0, convert::unix_us);
        let fence = Fence(r.fence);
        let event = match r.outcome {
            Some(pb::attempt_report::Outcome::OutputJson(out)) => {
                EngineEvent::Succeeded { subtask: f.subtask, fence, started_us, finished_us, output: out.into() }
            }
            Some(pb::attempt_report::Outcome::Error(e)) => EngineEvent::Failed {
                subtask: f.subtask,
                fence,
                kind: convert::failure_kind(e.kind),
                message: e.message,
                started_us,
                finished_us,
            },
            Some(pb::attempt_report::Outcome::Suspended(s)) => {
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
            None => EngineEvent::Failed {
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
    /// cancelled on their worker in case it is merely slow).
    pub(super) fn expire_silent(&mut self, now: u64) {
        let limit = 3 * self.config.heartbeat_interval.as_micros() as u64;
        let silent: Vec<(u64, Inflight)> = self
            .inflight
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last_beat_us) > limit)
            .map(|(fence, f)| (*fence, *f))
            .collect();
        for (fence, f) in silent {
            self.inflight.remove(&fence);
            let worker = &mut self.workers[f.worker];
            worker.running = worker.running.saturating_sub(1);
            worker.out_cancel.push(fence);
            self.dirty.push(f.worker);
            warn!(fence, worker_id = %worker.id, "no heartbeat for the attempt; it is declared lost");
            let reason = format!("no heartbeat for {} ms", limit / 1000);
            self.apply(f.run, EngineEvent::Lost { subtask: f.subtask, fence: Fence(fence), reason });
        }
    }

    /// A turn of a running agent: extend its transcript.
    pub(super) fn agent_step(&mut self, conn: u64, step: pb::AgentStepReport) {
        let Some(&w) = self.by_conn.get(&conn) else { return };
        // Acknowledged once this turn's writes are durable, whether recorded or stale.
        self.step_acks.entry(w).or_default().push(pb::StepAck { fence: step.fence, seq: step.seq });
        let Some(f) = self.inflight.get_mut(&step.fence).filter(|f| f.worker == w) else {
            self.stats.stale_reports += 1;
            return;
        };
        f.last_beat_us = super::now_us();
        let f = *f;
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
