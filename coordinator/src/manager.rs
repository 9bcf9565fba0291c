//! The run manager: the single owner of run state and of the worker registry.
//!
//! Commands arrive over a bounded channel (each with a oneshot reply where one is expected). One
//! loop turn handles every queued command, fires due retry timers, dispatches ready subtasks to
//! workers with free slots (fair round-robin across runs, one subtask per run per turn), then
//! flushes: one message per worker with all its new assignments and cancels, and one batch of
//! store writes. Batching falls out of load: under light load a turn holds one event and adds no
//! delay; under heavy load a turn holds many.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use swarm_core::engine::{Action, EngineEvent, RunEngine, Update};
use swarm_core::{ApiError, Dag, Fence, RetryPolicy, RunId, WorkerId};
use swarm_proto::convert::{self, duration_us, timestamp};
use swarm_proto::pb;
use swarm_store::repo::{RunHeader, SubtaskRecord};
use swarm_store::{Op, RunRepo};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::placement::{Candidate, NoPlacement, place};
use crate::watch::{EventLog, LogEntry};

/// Commands queued for the manager before senders wait.
const COMMAND_QUEUE: usize = 4096;
/// Commands handled in one loop turn at most, so timers and dispatch are never starved.
const TURN_COMMANDS: usize = 1024;

/// What the manager is configured with.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The default retry policy of runs.
    pub retry: RetryPolicy,
    /// The first fence handed out; fences only grow from there.
    pub fence_base: u64,
    /// How often workers should send heartbeats.
    pub heartbeat_interval: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self { retry: RetryPolicy::default(), fence_base: 1, heartbeat_interval: Duration::from_secs(5) }
    }
}

/// The outbound half of a worker's `Connect` stream.
pub type WorkerTx = mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>;

/// A request to the manager.
pub enum Command {
    /// Start a run that is already stored.
    Submit { run_id: RunId, dag: Arc<Dag>, header: RunHeader, reply: oneshot::Sender<()> },
    /// One run's view.
    Get { run_id: RunId, include_subtasks: bool, reply: oneshot::Sender<Option<pb::Run>> },
    /// Runs newest first, with ids below `before`.
    List { before: Option<RunId>, limit: usize, reply: oneshot::Sender<(Vec<pb::Run>, bool)> },
    /// Cancel a run.
    Cancel { run_id: RunId, reason: String, reply: oneshot::Sender<Result<pb::Run, ApiError>> },
    /// The event log of a run, for `WatchRun`.
    Watch { run_id: RunId, reply: oneshot::Sender<Option<Arc<EventLog>>> },
    /// A worker opened its `Connect` stream.
    WorkerJoined { conn: u64, hello: pb::WorkerHello, tx: WorkerTx },
    /// Attempt results from a worker.
    WorkerReports { conn: u64, reports: Vec<pb::AttemptReport> },
    /// A worker's stream ended.
    WorkerLeft { conn: u64 },
    /// Counters, for tests and benchmarks.
    Stats { reply: oneshot::Sender<ManagerStats> },
}

/// Manager counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagerStats {
    /// Attempts dispatched.
    pub dispatched: u64,
    /// Reports received.
    pub reports: u64,
    /// Reports for attempts that were no longer current.
    pub stale_reports: u64,
    /// Loop turns.
    pub turns: u64,
    /// Workers connected now.
    pub workers: u32,
    /// Runs not yet ended.
    pub active_runs: u32,
}

/// A cheap, cloneable handle to the manager.
#[derive(Clone)]
pub struct ManagerHandle {
    tx: mpsc::Sender<Command>,
}

impl ManagerHandle {
    /// Sends a command that expects a reply and waits for it.
    pub async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| stopped())
    }

    /// Sends a command without a reply.
    pub async fn send(&self, cmd: Command) -> Result<(), ApiError> {
        self.tx.send(cmd).await.map_err(|_| stopped())
    }
}

fn stopped() -> ApiError {
    ApiError::Unavailable {
        message: "the coordinator is shutting down".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

/// µs since the Unix epoch, now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

struct RunEntry {
    engine: RunEngine,
    log: Arc<EventLog>,
    header: RunHeader,
    in_ring: bool,
    /// Ready subtasks whose tool no connected worker offers.
    parked: Vec<u32>,
}

struct WorkerEntry {
    id: WorkerId,
    conn: u64,
    slots: u32,
    running: u32,
    tools: HashSet<String>,
    tx: WorkerTx,
    alive: bool,
    out_assign: Vec<pb::Assignment>,
    out_cancel: Vec<u64>,
}

impl Candidate for WorkerEntry {
    fn alive(&self) -> bool {
        self.alive
    }
    fn free_slots(&self) -> u32 {
        self.slots.saturating_sub(self.running)
    }
    fn offers(&self, tool: &str) -> bool {
        self.tools.contains(tool)
    }
}

#[derive(Clone, Copy)]
struct Inflight {
    run: u32,
    subtask: u32,
    worker: usize,
}

/// Spawns the manager on the current runtime; it stops when `shutdown` is cancelled.
pub fn spawn(
    config: ManagerConfig,
    repo: RunRepo,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> ManagerHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (sink_tx, sink_rx) = mpsc::channel(64);
    tracker.spawn(store_sink(repo.clone(), sink_rx));
    let manager = Manager {
        next_fence: config.fence_base.max(1),
        config,
        repo,
        sink: sink_tx,
        runs: Vec::new(),
        by_id: BTreeMap::new(),
        ring: VecDeque::new(),
        workers: Vec::new(),
        by_conn: HashMap::new(),
        inflight: HashMap::new(),
        timers: BinaryHeap::new(),
        actions: Vec::new(),
        writes: Vec::new(),
        dirty: Vec::new(),
        stats: ManagerStats::default(),
    };
    tracker.spawn(manager.run(rx, shutdown));
    ManagerHandle { tx }
}

/// Writes batches of store operations in the background, coalescing queued batches.
async fn store_sink(repo: RunRepo, mut rx: mpsc::Receiver<Vec<Op>>) {
    while let Some(mut ops) = rx.recv().await {
        while ops.len() < 8192 {
            match rx.try_recv() {
                Ok(more) => ops.extend(more),
                Err(_) => break,
            }
        }
        let n = ops.len();
        if let Err(e) = repo.write_batch(ops).await {
            warn!(error = %e, ops = n, "store write failed");
        }
    }
}

struct Manager {
    config: ManagerConfig,
    repo: RunRepo,
    sink: mpsc::Sender<Vec<Op>>,
    runs: Vec<RunEntry>,
    by_id: BTreeMap<RunId, u32>,
    /// Runs with ready subtasks, in round-robin order.
    ring: VecDeque<u32>,
    workers: Vec<WorkerEntry>,
    by_conn: HashMap<u64, usize>,
    inflight: HashMap<u64, Inflight>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    next_fence: u64,
    actions: Vec<Action>,
    writes: Vec<Op>,
    dirty: Vec<usize>,
    stats: ManagerStats,
}

impl Manager {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    for _ in 0..TURN_COMMANDS {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until_us(next_timer.unwrap_or(0)), if next_timer.is_some() => {}
            }
            self.stats.turns += 1;
            self.fire_timers(now_us());
            self.dispatch();
            self.flush().await;
        }
        info!("run manager stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { run_id, dag, header, reply } => {
                let now = now_us();
                let seed = header.submitted_us ^ self.runs.len() as u64;
                let engine =
                    RunEngine::new(run_id.clone(), dag.clone(), self.config.retry.clone(), header.submitted_us, seed);
                let log = EventLog::new(run_id.clone(), dag, now);
                let key = self.runs.len() as u32;
                self.runs.push(RunEntry { engine, log, header, in_ring: false, parked: Vec::new() });
                self.by_id.insert(run_id, key);
                self.enqueue(key);
                let _ = reply.send(());
            }
            Command::Get { run_id, include_subtasks, reply } => {
                let view = self.by_id.get(&run_id).map(|&k| self.view(k, include_subtasks));
                let _ = reply.send(view);
            }
            Command::List { before, limit, reply } => {
                let iter: Box<dyn Iterator<Item = (&RunId, &u32)>> = match &before {
                    Some(b) => Box::new(self.by_id.range(..b.clone()).rev()),
                    None => Box::new(self.by_id.iter().rev()),
                };
                let keys: Vec<u32> = iter.take(limit + 1).map(|(_, &k)| k).collect();
                let more = keys.len() > limit;
                let runs = keys.into_iter().take(limit).map(|k| self.view(k, false)).collect();
                let _ = reply.send((runs, more));
            }
            Command::Cancel { run_id, reason, reply } => {
                let Some(&key) = self.by_id.get(&run_id) else {
                    let _ = reply.send(Err(ApiError::NotFound(format!("run {run_id}"))));
                    return;
                };
                let state = self.runs[key as usize].engine.state();
                if state.is_terminal() {
                    let _ = reply.send(Err(ApiError::FailedPrecondition(format!(
                        "run {run_id} already ended {}",
                        state.as_str()
                    ))));
                    return;
                }
                info!(run_id = %run_id, reason = %reason, "cancelling run");
                self.apply(key, EngineEvent::CancelRequested);
                let _ = reply.send(Ok(self.view(key, false)));
            }
            Command::Watch { run_id, reply } => {
                let _ = reply.send(self.by_id.get(&run_id).map(|&k| self.runs[k as usize].log.clone()));
            }
            Command::WorkerJoined { conn, hello, tx } => self.worker_joined(conn, hello, tx),
            Command::WorkerReports { conn, reports } => {
                for report in reports {
                    self.report(conn, report);
                }
            }
            Command::WorkerLeft { conn } => {
                if let Some(w) = self.by_conn.remove(&conn) {
                    info!(worker_id = %self.workers[w].id, "worker left");
                    self.worker_lost(w);
                }
            }
            Command::Stats { reply } => {
                let mut stats = self.stats;
                stats.workers = self.workers.iter().filter(|w| w.alive).count() as u32;
                stats.active_runs = self.runs.iter().filter(|r| !r.engine.state().is_terminal()).count() as u32;
                let _ = reply.send(stats);
            }
        }
    }

    fn enqueue(&mut self, key: u32) {
        let entry = &mut self.runs[key as usize];
        if !entry.in_ring && entry.engine.has_ready() {
            entry.in_ring = true;
            self.ring.push_back(key);
        }
    }

    fn worker_joined(&mut self, conn: u64, hello: pb::WorkerHello, tx: WorkerTx) {
        let id = WorkerId::from(hello.worker_id);
        if let Some(old) = self.workers.iter().position(|w| w.alive && w.id == id) {
            warn!(worker_id = %id, "worker reconnected; its previous connection is dropped");
            self.by_conn.remove(&self.workers[old].conn);
            self.worker_lost(old);
        }
        let welcome = pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(pb::Welcome {
                coordinator_id: "swarm-coordinator".into(),
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
            tools: hello.tools.into_iter().map(|t| t.name).collect(),
            tx,
            alive: true,
            out_assign: Vec::new(),
            out_cancel: Vec::new(),
        };
        let slot = match self.workers.iter().position(|w| !w.alive) {
            Some(i) => {
                self.workers[i] = entry;
                i
            }
            None => {
                self.workers.push(entry);
                self.workers.len() - 1
            }
        };
        self.by_conn.insert(conn, slot);
        info!(worker_id = %id, slots = hello.slots, "worker joined");
        // Subtasks parked for want of a tool may now have a worker.
        for key in 0..self.runs.len() as u32 {
            let parked = std::mem::take(&mut self.runs[key as usize].parked);
            if !parked.is_empty() {
                for sub in parked.into_iter().rev() {
                    self.runs[key as usize].engine.unpop(sub);
                }
                self.enqueue(key);
            }
        }
    }

    fn worker_lost(&mut self, w: usize) {
        self.workers[w].alive = false;
        self.workers[w].out_assign.clear();
        self.workers[w].out_cancel.clear();
        let lost: Vec<(u64, Inflight)> =
            self.inflight.iter().filter(|(_, f)| f.worker == w).map(|(fence, f)| (*fence, *f)).collect();
        for (fence, f) in lost {
            self.inflight.remove(&fence);
            self.apply(f.run, EngineEvent::Lost { subtask: f.subtask, fence: Fence(fence) });
        }
        self.workers[w].running = 0;
    }

    fn report(&mut self, conn: u64, r: pb::AttemptReport) {
        self.stats.reports += 1;
        let Some(f) = self.inflight.get(&r.fence).copied() else {
            self.stats.stale_reports += 1;
            debug!(fence = r.fence, "report for an attempt no longer in flight");
            return;
        };
        if self.by_conn.get(&conn) != Some(&f.worker) {
            self.stats.stale_reports += 1;
            return;
        }
        self.inflight.remove(&r.fence);
        let worker = &mut self.workers[f.worker];
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

    /// Applies an event to a run's engine and carries out the resulting actions.
    fn apply(&mut self, key: u32, event: EngineEvent) {
        let now = now_us();
        let mut actions = std::mem::take(&mut self.actions);
        self.runs[key as usize].engine.apply(event, now, &mut actions);
        for action in actions.drain(..) {
            self.act(key, action, now);
        }
        self.actions = actions;
        self.enqueue(key);
    }

    fn act(&mut self, key: u32, action: Action, now: u64) {
        let entry = &mut self.runs[key as usize];
        match action {
            Action::Publish(update) => {
                let summary = matches!(update, Update::Finished { .. }).then(|| Arc::new(entry.engine.summary(now)));
                entry.log.append(LogEntry { time_us: now, update: Some(update), summary });
            }
            Action::Persist { subtask } => {
                let slot = entry.engine.slot(subtask);
                let record = SubtaskRecord {
                    state: slot.state,
                    attempt: slot.attempt.0,
                    worker: slot.worker.as_ref().map(ToString::to_string),
                    started_us: slot.started_us,
                    finished_us: slot.finished_us,
                    steps: slot.steps,
                    output: slot.output.as_deref().map(str::to_owned),
                    error_kind: slot.error.as_ref().map(|e| e.kind),
                    error_message: slot.error.as_ref().map(|e| e.message.clone()),
                };
                let op = self.repo.subtask_op(entry.engine.run_id(), &entry.engine.dag().node(subtask).id, &record);
                self.writes.push(op);
            }
            Action::CancelAttempt { worker, fence } => {
                if let Some(w) = self.workers.iter().position(|w| w.alive && w.id == worker) {
                    self.workers[w].out_cancel.push(fence.0);
                    self.dirty.push(w);
                }
            }
            Action::ArmTimer { subtask, at_us } => self.timers.push(Reverse((at_us, key, subtask))),
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
                entry.header.state = state;
                entry.header.finished_us = entry.engine.finished_us();
                entry.header.summary = Some(summary);
                let op = self.repo.header_op(&entry.header);
                self.writes.push(op);
            }
        }
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((at, key, subtask))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.apply(key, EngineEvent::RetryDue { subtask });
        }
    }

    /// Fills free worker slots from the ready subtasks of active runs, round-robin.
    fn dispatch(&mut self) {
        let mut free: u32 = self.workers.iter().filter(|w| w.alive).map(|w| w.free_slots()).sum();
        let mut misses = 0;
        while free > 0 && misses <= self.ring.len() {
            let Some(key) = self.ring.pop_front() else {
                break;
            };
            let entry = &mut self.runs[key as usize];
            entry.in_ring = false;
            if entry.engine.state().is_terminal() {
                continue;
            }
            let Some(sub) = entry.engine.pop_ready() else {
                continue;
            };
            let node = entry.engine.dag().node(sub);
            match place(&node.tool, &self.workers) {
                Ok(w) => {
                    misses = 0;
                    free -= 1;
                    self.start_attempt(key, sub, w);
                }
                Err(NoPlacement::Busy) => {
                    misses += 1;
                    entry.engine.unpop(sub);
                }
                Err(NoPlacement::NoWorkerOffers) => {
                    if entry.parked.is_empty() {
                        warn!(run_id = %entry.engine.run_id(), tool = %node.tool, "no connected worker offers the tool; waiting");
                    }
                    entry.parked.push(sub);
                }
            }
            self.enqueue(key);
        }
    }

    fn start_attempt(&mut self, key: u32, sub: u32, w: usize) {
        let fence = self.next_fence;
        self.next_fence += 1;
        self.stats.dispatched += 1;
        let worker_id = self.workers[w].id.clone();
        self.apply(key, EngineEvent::Dispatched { subtask: sub, worker: worker_id, fence: Fence(fence) });
        let entry = &self.runs[key as usize];
        let node = entry.engine.dag().node(sub);
        let assignment = pb::Assignment {
            run_id: entry.engine.run_id().to_string(),
            subtask_id: node.id.to_string(),
            attempt: entry.engine.slot(sub).attempt.0,
            fence,
            tool: node.tool.to_string(),
            args_json: node.args_json.to_string(),
            timeout: node.timeout.map(|d| duration_us(d.as_micros() as u64)),
        };
        let worker = &mut self.workers[w];
        worker.running += 1;
        worker.out_assign.push(assignment);
        self.dirty.push(w);
        self.inflight.insert(fence, Inflight { run: key, subtask: sub, worker: w });
    }

    async fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &w in &dirty {
            let worker = &mut self.workers[w];
            let mut failed = false;
            if !worker.out_assign.is_empty() {
                let msg = pb::coordinator_message::Msg::Assignments(pb::Assignments {
                    assignments: std::mem::take(&mut worker.out_assign),
                });
                failed |= worker.tx.try_send(Ok(pb::CoordinatorMessage { msg: Some(msg) })).is_err();
            }
            if !worker.out_cancel.is_empty() {
                let msg = pb::coordinator_message::Msg::Cancels(pb::Cancels {
                    fences: std::mem::take(&mut worker.out_cancel),
                });
                failed |= worker.tx.try_send(Ok(pb::CoordinatorMessage { msg: Some(msg) })).is_err();
            }
            if failed && worker.alive {
                warn!(worker_id = %worker.id, "worker stream closed or full; treating it as lost");
                let conn = worker.conn;
                self.by_conn.remove(&conn);
                self.worker_lost(w);
            }
        }
        dirty.clear();
        self.dirty = dirty;
        if !self.writes.is_empty() {
            let writes = std::mem::take(&mut self.writes);
            if self.sink.send(writes).await.is_err() {
                warn!("store sink stopped; writes dropped");
            }
        }
    }

    fn view(&self, key: u32, include_subtasks: bool) -> pb::Run {
        let entry = &self.runs[key as usize];
        let engine = &entry.engine;
        let summary = engine.summary(now_us());
        let subtasks = if include_subtasks {
            engine
                .slots()
                .iter()
                .zip(engine.dag().nodes())
                .map(|(slot, node)| pb::SubtaskStatus {
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
                })
                .collect()
        } else {
            Vec::new()
        };
        pb::Run {
            run_id: engine.run_id().to_string(),
            name: engine.dag().name().to_owned(),
            state: pb::RunState::from(engine.state()).into(),
            submitted_at: Some(timestamp(engine.submitted_us())),
            finished_at: engine.finished_us().map(timestamp),
            summary: Some(pb::RunSummary::from(&summary)),
            last_seq: entry.log.last_seq(),
            subtasks,
        }
    }
}

/// A view of a run that only exists in the store (e.g. from before a restart).
pub fn view_from_header(header: &RunHeader) -> pb::Run {
    pb::Run {
        run_id: header.run_id.to_string(),
        name: header.name.clone(),
        state: pb::RunState::from(header.state).into(),
        submitted_at: Some(timestamp(header.submitted_us)),
        finished_at: header.finished_us.map(timestamp),
        summary: header.summary.as_ref().map(pb::RunSummary::from),
        last_seq: 0,
        subtasks: Vec::new(),
    }
}

async fn sleep_until_us(at_us: u64) {
    let now = now_us();
    tokio::time::sleep(Duration::from_micros(at_us.saturating_sub(now))).await;
}
