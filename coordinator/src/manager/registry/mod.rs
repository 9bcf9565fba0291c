//! The worker registry: connected workers (their streams, slots and tools), the attempts each
//! one holds, and when each attempt was last heard of.
//!
//! Workers are addressed by a generational [`WorkerKey`]: the slot of a worker that left is
//! reused, with a new generation, so a key of an earlier connection never reaches the
//! worker that took its place. Outgoing assignments and cancels are queued per worker and sent
//! once per manager turn ([`WorkerRegistry::flush`]).
//!
//! May not touch: runs, engines or the store. It reports what changed (attempts lost with a
//! worker, silent attempts) and the manager turns that into engine events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use swarm_core::agent::{AGENT_CAPABILITY, MODEL_CAPABILITY_PREFIX};
use swarm_core::{ConnId, Fence, RunKey, SubtaskIx, WorkerId};
use swarm_proto::pb;
use tokio::sync::mpsc;

use swarm_core::placement::{Fit, Placement};

use crate::placement::Candidate;

/// The outbound half of a worker's `Connect` stream.
pub type WorkerTx = mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>;

/// A worker connection: its slot in the registry and that slot's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey {
    index: u32,
    generation: u32,
}

/// An attempt in flight on a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The run (the manager's key) and subtask index.
    pub run: RunKey,
    pub subtask: SubtaskIx,
    pub worker: WorkerKey,
    /// When the attempt was last heard of (dispatch, heartbeat, turn), µs.
    pub last_beat_us: u64,
    /// When it was dispatched (0: adopted, started under an earlier leader), µs.
    pub dispatched_us: u64,
}

/// One connected (or departed) worker.
#[derive(Debug)]
pub struct WorkerEntry {
    id: WorkerId,
    conn: ConnId,
    generation: u32,
    slots: u32,
    running: u32,
    tools: HashSet<String>,
    tx: WorkerTx,
    alive: bool,
    /// Shutting down: it finishes what it runs and gets nothing new.
    draining: bool,
    /// Its labels (placements match them; operators see them), when it connected and when it
    /// was last heard of (µs).
    labels: std::collections::HashMap<String, String>,
    /// Resources attempts may hold (thousandths, `--resource`), and what running ones hold.
    capacity: BTreeMap<String, u64>,
    used: BTreeMap<String, u64>,
    joined_us: u64,
    heard_us: u64,
    out_assign: Vec<pb::Assignment>,
    out_cancel: Vec<Fence>,
}

impl WorkerEntry {
    /// The worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }
}

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
    fn fit(&self, placement: &Placement) -> Fit {
        placement.fit(
            |k: &str| self.labels.get(k).map(String::as_str),
            |r| self.capacity.get(r).copied().unwrap_or(0),
            |r| self.used.get(r).copied().unwrap_or(0),
        )
    }
}

impl WorkerEntry {
    /// Adds (or, `add` false, takes back) what `placement` holds.
    fn hold(&mut self, placement: &Placement, add: bool) {
        for (name, q) in &placement.resources {
            // No allocation but the first time a resource is held here.
            let used = match self.used.get_mut(name) {
                Some(used) => used,
                None => self.used.entry(name.clone()).or_default(),
            };
            *used = if add { used.saturating_add(q.0) } else { used.saturating_sub(q.0) };
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct WorkerRegistry {
    workers: Vec<WorkerEntry>,
    by_conn: HashMap<ConnId, WorkerKey>,
    inflight: HashMap<Fence, Held>,
    /// The attempts in flight that hold resources (their placement asks for some).
    holding: HashMap<Fence, Arc<Placement>>,
    dirty: Vec<WorkerKey>,
    /// Connections that ended while their worker may still be alive, by key, with the worker's
    /// id: their attempts stay in flight (aging towards the silence limit) so the worker can
    /// reconnect and take them back ([`WorkerRegistry::reattach`]).
    detached: HashMap<WorkerKey, WorkerId>,
}

impl WorkerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a worker that opened stream `conn`. The caller has already dropped any live
    /// connection with the same id ([`WorkerRegistry::find_alive`], [`WorkerRegistry::lose`]).
    pub fn join(&mut self, conn: ConnId, id: WorkerId, slots: u32, tools: HashSet<String>, tx: WorkerTx) -> WorkerKey {
        // A slot is reused only once no attempt is held by its departed connection.
        let index =
            (0..self.workers.len()).find(|&i| !self.workers[i].alive && !self.detached.contains_key(&self.key_at(i)));
        let generation = index.map_or(0, |i| self.workers[i].generation.wrapping_add(1));
        let entry = WorkerEntry {
            id,
            conn,
            generation,
            slots,
            running: 0,
            tools,
            tx,
            alive: true,
            draining: false,
            labels: Default::default(),
            capacity: BTreeMap::new(),
            used: BTreeMap::new(),
            joined_us: 0,
            heard_us: 0,
            out_assign: Vec::new(),
            out_cancel: Vec::new(),
        };
        let index = match index {
            Some(i) => {
                self.workers[i] = entry;
                i
            }
            None => {
                self.workers.push(entry);
                self.workers.len() - 1
            }
        };
        let key = WorkerKey { index: index as u32, generation };
        self.by_conn.insert(conn, key);
        self.dirty.push(key);
        key
    }

    /// The live connection of worker `id`, if any.
    pub fn find_alive(&self, id: &WorkerId) -> Option<WorkerKey> {
        self.workers.iter().position(|w| w.alive && &w.id == id).map(|i| self.key_at(i))
    }

    /// The worker on stream `conn`.
    pub fn by_conn(&self, conn: ConnId) -> Option<WorkerKey> {
        self.by_conn.get(&conn).copied().filter(|&k| self.get(k).is_some())
    }

    /// The live worker `key` names (none once that connection is gone).
    pub fn get(&self, key: WorkerKey) -> Option<&WorkerEntry> {
        self.workers.get(key.index as usize).filter(|w| w.alive && w.generation == key.generation)
    }

    fn get_mut(&mut self, key: WorkerKey) -> Option<&mut WorkerEntry> {
        self.workers.get_mut(key.index as usize).filter(|w| w.alive && w.generation == key.generation)
    }

    /// Every worker slot, for placement (whose answers are indexes: see [`Self::key_at`]).
    pub fn candidates(&self) -> &[WorkerEntry] {
        &self.workers
    }

    /// The key of the worker at placement index `i`.
    pub fn key_at(&self, i: usize) -> WorkerKey {
        WorkerKey { index: i as u32, generation: self.workers[i].generation }
    }

    /// Placement indexes of the live workers among `ids`.
    pub fn indexes_of(&self, ids: &[WorkerId]) -> Vec<usize> {
        (0..self.workers.len()).filter(|&i| self.workers[i].alive && ids.contains(&self.workers[i].id)).collect()
    }

    /// The live worker's id.
    pub fn id(&self, key: WorkerKey) -> Option<&WorkerId> {
        self.get(key).map(|w| &w.id)
    }

    /// Its stream, for acknowledgements.
    pub fn tx(&self, key: WorkerKey) -> Option<&WorkerTx> {
        self.get(key).map(|w| &w.tx)
    }

    /// Free slots over every live worker.
    pub fn free_slots(&self) -> u32 {
        self.workers.iter().filter(|w| w.alive).map(Candidate::free_slots).fold(0, u32::saturating_add)
    }

    /// (live workers, slots in use, slots in all).
    pub fn usage(&self) -> (u32, u32, u32) {
        self.workers.iter().filter(|w| w.alive).fold((0u32, 0u32, 0u32), |(n, u, t), w| {
            (n.saturating_add(1), u.saturating_add(w.running), t.saturating_add(w.slots))
        })
    }

    /// The ids of the live workers.
    pub fn alive_ids(&self) -> HashSet<&WorkerId> {
        self.workers.iter().filter(|w| w.alive).map(|w| &w.id).collect()
    }

    /// The live workers, for `ListWorkers`.
    pub fn infos(&self) -> Vec<pb::WorkerInfo> {
        self.workers
            .iter()
            .filter(|w| w.alive)
            .map(|w| {
                let mut tools: Vec<String> = w.tools.iter().cloned().collect();
                tools.sort_unstable();
                pb::WorkerInfo {
                    worker_id: w.id.to_string(),
                    slots: w.slots,
                    running: w.running,
                    tools,
                    labels: w.labels.clone(),
                    last_heard: Some(swarm_proto::convert::timestamp(w.heard_us)),
                    connected_at: Some(swarm_proto::convert::timestamp(w.joined_us)),
                    draining: w.draining,
                }
            })
            .collect()
    }

    /// A worker that joined at `now_us`: its labels and resources (thousandths).
    pub fn describe(
        &mut self,
        key: WorkerKey,
        labels: std::collections::HashMap<String, String>,
        capacity: BTreeMap<String, u64>,
        now_us: u64,
    ) {
        if let Some(w) = self.get_mut(key) {
            w.labels = labels;
            w.capacity = capacity;
            w.joined_us = now_us;
            w.heard_us = now_us;
        }
    }

    /// The worker was heard of (a heartbeat, a report, a turn).
    pub fn heard(&mut self, key: WorkerKey, now_us: u64) {
        if let Some(w) = self.get_mut(key) {
            w.heard_us = now_us;
        }
    }

    /// The worker is shutting down: nothing new goes to it. Returns (id, attempts running).
    pub fn drain(&mut self, key: WorkerKey) -> Option<(WorkerId, u32)> {
        let w = self.get_mut(key)?;
        w.draining = true;
        Some((w.id.clone(), w.running))
    }

    /// The worker is gone: its stream is dropped (a worker still there reconnects), its queued
    /// messages discarded, and the attempts it held are returned, no longer in flight.
    pub fn lose(&mut self, key: WorkerKey) -> Vec<(Fence, Held)> {
        if !self.close(key) {
            return Vec::new();
        }
        let lost: Vec<Fence> = self.inflight.iter().filter(|(_, h)| h.worker == key).map(|(f, _)| *f).collect();
        lost.into_iter().filter_map(|f| self.remove(f).map(|h| (f, h))).collect()
    }

    /// The worker's connection ended, but the worker may be alive (a dropped connection, a proxy's
    /// idle timeout): the stream is dropped like [`Self::lose`], but its attempts stay in flight,
    /// held by the old key, until the worker reconnects and declares them, its lease expires, or
    /// they fall silent. Returns how many attempts it held.
    pub fn detach(&mut self, key: WorkerKey) -> usize {
        let Some(id) = self.get(key).map(|w| w.id.clone()) else { return 0 };
        let held = self.inflight.values().filter(|h| h.worker == key).count();
        self.close(key);
        if held > 0 {
            self.detached.insert(key, id);
        }
        held
    }

    /// The reconnected worker `key` declares attempt `fence`: if an earlier connection of the
    /// same worker held it, it is held by `key` now (nothing re-runs). False otherwise.
    pub fn reattach(&mut self, key: WorkerKey, fence: Fence, now_us: u64) -> bool {
        let Some(id) = self.get(key).map(|w| w.id.clone()) else { return false };
        let Some(held) = self.inflight.get_mut(&fence) else { return false };
        if self.detached.get(&held.worker) != Some(&id) {
            return false;
        }
        held.worker = key;
        held.last_beat_us = now_us;
        let holds = self.holding.get(&fence).cloned();
        if let Some(w) = self.get_mut(key) {
            w.running += 1;
            if let Some(p) = holds {
                w.hold(&p, true);
            }
        }
        true
    }

    /// Attempts still held by earlier, ended connections of worker `id` (after it reconnected
    /// without declaring them, or its lease expired): released and returned.
    pub fn take_detached(&mut self, id: &WorkerId) -> Vec<(Fence, Held)> {
        let keys: HashSet<WorkerKey> = self.detached.iter().filter(|(_, w)| *w == id).map(|(k, _)| *k).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        self.detached.retain(|k, _| !keys.contains(k));
        let gone: Vec<Fence> =
            self.inflight.iter().filter(|(_, h)| keys.contains(&h.worker)).map(|(f, _)| *f).collect();
        gone.into_iter().filter_map(|f| self.remove(f).map(|h| (f, h))).collect()
    }

    /// Drops worker `key`'s stream and queued messages and marks it departed; false if it was
    /// not live.
    fn close(&mut self, key: WorkerKey) -> bool {
        let Some(w) = self.get_mut(key) else { return false };
        let conn = w.conn;
        w.alive = false;
        w.running = 0;
        w.out_assign.clear();
        w.out_cancel.clear();
        w.tx = mpsc::channel(1).0;
        if self.by_conn.get(&conn) == Some(&key) {
            self.by_conn.remove(&conn);
        }
        true
    }

    /// Queues an assignment for the worker and holds its attempt (and the resources its
    /// `placement` asks for).
    pub fn assign(
        &mut self,
        key: WorkerKey,
        (run, subtask): (RunKey, SubtaskIx),
        assignment: pb::Assignment,
        placement: Option<&Arc<Placement>>,
        now_us: u64,
    ) {
        let fence = Fence(assignment.fence);
        let Some(w) = self.get_mut(key) else { return };
        w.running += 1;
        w.out_assign.push(assignment);
        self.dirty.push(key);
        self.inflight.insert(fence, Held { run, subtask, worker: key, last_beat_us: now_us, dispatched_us: now_us });
        self.hold_resources(key, fence, placement);
    }

    /// Holds an attempt a reconnecting worker already runs.
    pub fn adopt(
        &mut self,
        key: WorkerKey,
        fence: Fence,
        (run, subtask): (RunKey, SubtaskIx),
        placement: Option<&Arc<Placement>>,
        now_us: u64,
    ) {
        let Some(w) = self.get_mut(key) else { return };
        w.running += 1;
        self.inflight.insert(fence, Held { run, subtask, worker: key, last_beat_us: now_us, dispatched_us: 0 });
        self.hold_resources(key, fence, placement);
    }

    fn hold_resources(&mut self, key: WorkerKey, fence: Fence, placement: Option<&Arc<Placement>>) {
        let Some(p) = placement.filter(|p| !p.resources.is_empty()) else { return };
        if let Some(w) = self.get_mut(key) {
            w.hold(p, true);
        }
        self.holding.insert(fence, p.clone());
    }

    /// The connected workers' labels and resources, for messages: `cpu0 {pool=cpu}; gpu0
    /// {pool=gpu} gpu=1`, at most 10 workers.
    pub fn placement_summary(&self) -> String {
        let mut parts: Vec<String> = self
            .workers
            .iter()
            .filter(|w| w.alive)
            .take(10)
            .map(|w| {
                let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                let resources: Vec<String> = w
                    .capacity
                    .iter()
                    .map(|(k, q)| format!("{k}={}", swarm_core::placement::Quantity(*q).to_text()))
                    .collect();
                format!("{} {{{}}} {}", w.id, labels.join(","), resources.join(",")).trim_end().to_owned()
            })
            .collect();
        if self.workers.iter().filter(|w| w.alive).count() > 10 {
            parts.push("…".into());
        }
        parts.join("; ")
    }

    /// Attempt `fence` is no longer in flight: its resources go back to its worker.
    fn remove(&mut self, fence: Fence) -> Option<Held> {
        let held = self.inflight.remove(&fence)?;
        if let Some(p) = self.holding.remove(&fence)
            && let Some(w) = self.get_mut(held.worker)
        {
            w.hold(&p, false);
        }
        Some(held)
    }

    /// Queues a cancel of attempt `fence` for the worker.
    pub fn cancel(&mut self, key: WorkerKey, fence: Fence) {
        if let Some(w) = self.get_mut(key) {
            w.out_cancel.push(fence);
            self.dirty.push(key);
        }
    }

    /// The attempts held for run `run`, and the workers holding them.
    pub fn held_for_run(&self, run: RunKey) -> Vec<(WorkerKey, Fence)> {
        self.inflight.iter().filter(|(_, h)| h.run == run).map(|(f, h)| (h.worker, *f)).collect()
    }

    /// True when attempt `fence` is held by some worker.
    pub fn holds(&self, fence: Fence) -> bool {
        self.inflight.contains_key(&fence)
    }

    /// The attempt, if it is held.
    pub fn held(&self, fence: Fence) -> Option<&Held> {
        self.inflight.get(&fence)
    }

    /// True while any attempt is in flight.
    pub fn busy(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// The worker `key` ended attempt `fence` (it reported): no longer held. `None` when the
    /// attempt is not held by that worker (a stale or forged report).
    /// The run of every attempt in flight.
    pub fn inflight_runs(&self) -> impl Iterator<Item = RunKey> + '_ {
        self.inflight.values().map(|h| h.run)
    }

    /// Whether a departed connection of worker `id` still holds attempts (it may reconnect).
    pub fn holds_detached(&self, id: &WorkerId) -> bool {
        self.detached.values().any(|w| w == id)
    }

    pub fn release(&mut self, key: WorkerKey, fence: Fence) -> Option<Held> {
        self.inflight.get(&fence).filter(|h| h.worker == key)?;
        let held = self.remove(fence)?;
        if let Some(w) = self.get_mut(key) {
            w.running = w.running.saturating_sub(1);
        }
        Some(held)
    }

    /// Attempt `fence` of worker `key` was heard of (a heartbeat or a turn).
    pub fn touch(&mut self, key: WorkerKey, fence: Fence, now_us: u64) -> Option<Held> {
        let held = self.inflight.get_mut(&fence).filter(|h| h.worker == key)?;
        held.last_beat_us = now_us;
        Some(*held)
    }

    /// Moves every held attempt's last heartbeat `us` later: the manager could not read
    /// heartbeats for that long.
    pub fn excuse_silence(&mut self, us: u64) {
        for held in self.inflight.values_mut() {
            held.last_beat_us = held.last_beat_us.saturating_add(us);
        }
    }

    /// Attempts not heard of for longer than `limit_us` are released and returned, and a cancel
    /// is queued for each on its worker (in case it is merely slow), except the attempts of a
    /// worker in `leased` that is itself silent (disconnected, or no heartbeat within the limit):
    /// its lease decides when they go.
    pub fn silent(&mut self, now_us: u64, limit_us: u64, leased: &HashSet<WorkerId>) -> Vec<(Fence, Held)> {
        let spared = |key: WorkerKey| match self.get(key) {
            Some(w) => leased.contains(&w.id) && now_us.saturating_sub(w.heard_us) > limit_us,
            // Its connection ended (detached): the worker may still run them.
            None => self.detached.get(&key).is_some_and(|id| leased.contains(id)),
        };
        let silent: Vec<Fence> = self
            .inflight
            .iter()
            .filter(|(_, h)| now_us.saturating_sub(h.last_beat_us) > limit_us && !spared(h.worker))
            .map(|(f, _)| *f)
            .collect();
        let mut out = Vec::with_capacity(silent.len());
        for fence in silent {
            let Some(held) = self.remove(fence) else { continue };
            if let Some(w) = self.get_mut(held.worker) {
                w.running = w.running.saturating_sub(1);
            }
            self.cancel(held.worker, fence);
            out.push((fence, held));
        }
        if !out.is_empty() && !self.detached.is_empty() {
            let holding: HashSet<WorkerKey> = self.inflight.values().map(|h| h.worker).collect();
            self.detached.retain(|k, _| holding.contains(k));
        }
        out
    }

    /// Sends each worker its queued assignments and cancels; returns the workers whose stream
    /// is closed or full (the caller treats them as lost).
    pub fn flush(&mut self) -> Vec<WorkerKey> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut failed = Vec::new();
        for &key in &dirty {
            let Some(w) = self.get_mut(key) else { continue };
            let mut broken = false;
            if !w.out_assign.is_empty() {
                let assignments = std::mem::take(&mut w.out_assign);
                let msg = pb::coordinator_message::Msg::Assignments(pb::Assignments { assignments });
                broken |= w.tx.try_send(Ok(pb::CoordinatorMessage { msg: Some(msg) })).is_err();
            }
            if !w.out_cancel.is_empty() {
                let fences = std::mem::take(&mut w.out_cancel).into_iter().map(|f| f.0).collect();
                let msg = pb::coordinator_message::Msg::Cancels(pb::Cancels { fences });
                broken |= w.tx.try_send(Ok(pb::CoordinatorMessage { msg: Some(msg) })).is_err();
            }
            if broken {
                failed.push(key);
            }
        }
        dirty.clear();
        self.dirty = dirty;
        failed
    }
}

#[cfg(test)]
mod tests;
