//! The run manager: the single owner of run state for one leadership term. It routes commands
//! to its parts, each a type with private state and its own tests:
//!
//! - the run engines (`swarm_core::RunEngine`, one per active run) decide;
//! - the [`registry`] holds connected workers and the attempts each one runs;
//! - the [`supervisor`] turns time (an injected clock) into events: retries due, the cadence of
//!   straggler, overdue and silence checks, the end of recovery;
//! - the [`outbox`] buffers a turn's store writes and the acknowledgements they make due, and
//!   writes them in batches (the only owner of acknowledgements).
//!
//! Commands arrive over a bounded channel (each with a oneshot reply where one is expected). One
//! loop turn handles every queued command, fires due timers, dispatches ready subtasks to workers
//! with free slots (fair round-robin across runs, one subtask per run per step), then flushes:
//! one message per worker with its new assignments and cancels, and one batch of store writes
//! (with the acknowledgements they make due) to the outbox's writer. Batching grows with load
//! and adds no delay when idle.
//!
//! After a failover the manager starts *recovering*: resumed runs do not dispatch until every
//! worker registered in the store has reconnected (declaring the attempts it holds, which are
//! adopted) or the grace period has passed, so no attempt running somewhere starts twice.

mod admission;
mod artifacts;
mod config;
mod dispatch;
mod durable;
mod fairness;
mod fault;
mod fork;
#[cfg(test)]
mod fuzz;
pub mod outbox;
mod reads;
pub mod registry;
mod runs;
mod signals;
mod stats;
pub mod supervisor;
#[cfg(test)]
mod tests;
mod workers;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use swarm_core::engine::{Action, RunEngine};
use swarm_core::fence::FenceSeq;
use swarm_core::{ConnId, Dag, RunId, RunKey, SubtaskIx, WorkerId};
use swarm_proto::{ApiError, pb};
use swarm_store::RunRepo;
use swarm_store::repo::RunHeader;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use admission::{AdmissionCaps, RunSize};
pub use artifacts::ArtifactAccess;
pub use config::ManagerConfig;
pub use fault::{FAULT_ENV, Fatal, FaultHook};
pub use registry::WorkerTx;
pub use runs::{Page, RunPage, run_view, subtask_page, subtask_status};
pub use signals::{ENDED, MAX_SIGNAL_PAYLOAD_BYTES};
pub use stats::ManagerStats;

use crate::clock::Clock;
use crate::recovery::Recovered;
use crate::watch::EventLog;
use outbox::Outbox;
use registry::WorkerRegistry;
use supervisor::Supervisor;

/// Commands queued for the manager before senders wait.
const COMMAND_QUEUE: usize = 4096;
/// Commands handled in one loop turn at most, so timers and dispatch are never starved.
const TURN_COMMANDS: usize = 1024;

/// The default of [`ManagerConfig::no_worker_timeout`].
pub const DEFAULT_NO_WORKER_TIMEOUT: Duration = Duration::from_secs(60);

/// A request to the manager.
pub enum Command {
    /// May a run of `subtasks` subtasks be admitted now? (Checked before it is stored.)
    Admit {
        size: RunSize,
        tenant: Option<String>,
        /// Its DAG, for placements no connected worker could satisfy.
        dag: Arc<swarm_core::Dag>,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Start a run that is already stored.
    Submit { run_id: RunId, dag: Arc<Dag>, header: Box<RunHeader>, span: tracing::Span, reply: oneshot::Sender<()> },
    /// Start a fork that is already stored, with the results it reuses.
    StartFork { run: Box<crate::recovery::RecoveredRun>, span: tracing::Span, reply: oneshot::Sender<()> },
    /// One run's view, with a page of its subtasks when `page` is set.
    Get { run_id: RunId, page: Option<Page>, reply: oneshot::Sender<Option<RunPage>> },
    /// Runs newest first, with ids below `before`.
    /// Runs, newest first, of one tenant (`Some(None)`: of no tenant) or of all (`None`).
    List {
        before: Option<RunId>,
        limit: usize,
        tenant: Option<Option<String>>,
        /// Only runs whose spec has this version label.
        spec_version: Option<String>,
        reply: oneshot::Sender<(Vec<pb::Run>, bool)>,
    },
    /// Cancel a run.
    Cancel { run_id: RunId, reason: String, reply: oneshot::Sender<Result<pb::Run, ApiError>> },
    /// Decide an approval (`SignalRun`).
    Signal { request: pb::SignalRunRequest, reply: oneshot::Sender<Result<pb::SignalRunResponse, ApiError>> },
    /// The event log of a run, for `WatchRun`.
    Watch { run_id: RunId, reply: oneshot::Sender<Option<Watchable>> },
    /// Whether anyone follows a run's partial output changed: tell its workers.
    OutputInterest { run_id: RunId },
    /// A worker opened its `Connect` stream.
    /// (`principal`: who it authenticated as; an id in use by another principal is refused.)
    WorkerJoined { conn: ConnId, hello: pb::WorkerHello, tx: WorkerTx, principal: String },
    /// Attempt results from a worker.
    WorkerReports { conn: ConnId, reports: Vec<pb::AttemptReport> },
    /// Turns of agents running on a worker.
    WorkerSteps { conn: ConnId, steps: Vec<pb::AgentStepReport> },
    /// Partial output of agents running on a worker.
    WorkerOutput { conn: ConnId, chunks: Vec<pb::AgentOutputChunk> },
    /// A worker's heartbeat: the fences of the attempts it runs.
    WorkerHeartbeat { conn: ConnId, fences: Vec<u64> },
    /// A worker is shutting down: no new attempts for it.
    WorkerDraining { conn: ConnId },
    /// A worker's stream ended.
    WorkerLeft { conn: ConnId },
    /// A worker's registration lease expired in the store.
    WorkerExpired { worker_id: WorkerId },
    /// A worker is registered under a live lease: its attempts go with the lease, not silence.
    WorkerRegistered { worker_id: WorkerId },
    /// Forget runs that ended before `ended_before_us` (their store records are deleted by the
    /// caller).
    Forget { ended_before_us: u64, reply: oneshot::Sender<Vec<(RunId, Option<String>)>> },
    /// Counters, for tests and benchmarks.
    Stats { reply: oneshot::Sender<ManagerStats> },
    /// The connected workers.
    Workers { reply: oneshot::Sender<Vec<pb::WorkerInfo>> },
    /// May worker `worker_id` (authenticated as `principal`) store `reserve` artifact bytes for
    /// its attempt `fence`, or read its run's artifacts?
    ArtifactAccess {
        worker_id: String,
        principal: String,
        fence: u64,
        reserve: u64,
        reply: oneshot::Sender<Result<ArtifactAccess, ApiError>>,
    },
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

    /// Sends a command if there is room now (for what may be dropped under load).
    pub fn try_send(&self, cmd: Command) -> bool {
        self.tx.try_send(cmd).is_ok()
    }
}

fn stopped() -> ApiError {
    ApiError::NotLeader { leader: None }
}

/// µs since the Unix epoch, now, by the system clock (for callers outside the manager).
pub fn now_us() -> u64 {
    crate::clock::unix_now_us()
}

struct RunEntry {
    engine: RunEngine,
    log: Arc<EventLog>,
    header: RunHeader,
    in_ring: bool,
    /// Resumed after a failover and waiting for workers to reconnect.
    recovering: bool,
    /// Ready subtasks whose tool no connected worker offers.
    parked: Vec<SubtaskIx>,
    /// Tools and models (as `Node::requirement`) already warned about as offered by no worker.
    unoffered_warned: HashSet<String>,
    /// When live accounting was last computed, and its (critical, total) steps.
    live: (u64, (u64, u64)),
    /// Its records not yet known durable: dependents wait for them.
    unsettled: durable::Unsettled,
    /// The run's `invoke_workflow` span (ends when the entry is dropped or the run finishes).
    span: tracing::Span,
    /// Its W3C trace context, sent with every assignment.
    trace_context: std::collections::HashMap<String, String>,
    /// Artifact bytes its attempts have stored or are storing (against its quota).
    artifact_bytes: u64,
    /// Whether its workers were last told that someone follows its partial output.
    output_told: bool,
}

/// A run in the listing: live (an engine) or ended (its header, and its event log for a while
/// after it ended in this term). An ended run keeps nothing else in memory.
enum Listed {
    Live(RunKey),
    Archived { header: Box<RunHeader>, log: Option<Arc<EventLog>> },
}

/// What `WatchRun` streams from.
pub enum Watchable {
    /// A log in memory.
    Log(Arc<EventLog>),
    /// A run that ended whose log is only in the store.
    Stored(Box<RunHeader>),
}

/// How long the event log of a run that ended stays in memory (for watchers that come late
/// or resume); after it, `WatchRun` reads the log from the store.
pub const ENDED_LOG_RETENTION: Duration = Duration::from_secs(600);

/// What the manager starts from.
#[derive(Default)]
pub struct Startup {
    /// Runs found in the store.
    pub recovered: Recovered,
    /// Workers registered in the store when the term began.
    pub expected_workers: HashSet<WorkerId>,
    /// The term's attempt fences: above every fence of earlier terms.
    pub fences: FenceSeq,
    /// The clock (default: the system clock; tests use tokio's paused time).
    pub clock: Option<Arc<dyn Clock>>,
    /// Tripped if the manager panics outside a run's guard (default: trips nothing).
    pub fatal: Fatal,
}

/// Spawns the manager (and its outbox writer) on the current runtime; both stop when `term` is
/// cancelled. The writer cancels `term` itself if its writes are fenced out.
pub fn spawn(
    config: ManagerConfig,
    repo: RunRepo,
    tracker: &tokio_util::task::TaskTracker,
    term: CancellationToken,
    startup: Startup,
) -> ManagerHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let limiter = crate::ratelimit::RateLimiter::new(&config.rate_limits);
    let tenant_rates = fairness::tenant_rates(&config.tenants);
    let repeatable_tools = config.operator_repeatable.clone();
    let clock = startup.clock.clone().unwrap_or_else(crate::clock::system);
    let mut manager = Manager {
        fences: startup.fences.clone(),
        term_token: term.clone(),
        outbox: Outbox::spawn(repo.clone(), tracker, term.clone()),
        supervisor: Supervisor::new(clock, config.heartbeat_interval),
        registry: WorkerRegistry::new(),
        config,
        repo,
        runs: HashMap::new(),
        next_run: 0,
        listing: BTreeMap::new(),
        ring: VecDeque::new(),
        actions: Vec::new(),
        stats: ManagerStats::default(),
        repeatable_tools,
        limiter,
        tenant_rates,
        prioritized: false,
        expected_workers: startup.expected_workers,
        ended: Vec::new(),
        log_expiry: VecDeque::new(),
        awaiting_writes: Vec::new(),
        durable_replies: Vec::new(),
        worker_principals: HashMap::new(),
        leased: HashSet::new(),
        backups: Vec::new(),
        preempted: Vec::new(),
    };
    let fatal = startup.fatal;
    tracker.spawn(async move {
        use futures_util::FutureExt;
        // A panic a run's guard did not catch: this manager cannot go on. Its channel closes
        // (callers get UNAVAILABLE), and the node is told to stop: NOT_SERVING, resign, exit
        // non-zero, so a supervisor restarts it and a standby takes over.
        let run = std::panic::AssertUnwindSafe(async move {
            manager.restore(startup.recovered);
            manager.run(rx, term).await;
        });
        if let Err(panic) = run.catch_unwind().await {
            let message = fault::panic_message(panic.as_ref());
            tracing::error!(%message, "run manager panicked; the coordinator stops");
            fatal.trip(format!("run manager panicked: {message}"));
        }
    });
    ManagerHandle { tx }
}

struct Manager {
    config: ManagerConfig,
    repo: RunRepo,
    runs: HashMap<RunKey, RunEntry>,
    next_run: u32,
    listing: BTreeMap<RunId, Listed>,
    /// Runs with ready subtasks, in round-robin order.
    ring: VecDeque<RunKey>,
    registry: WorkerRegistry,
    outbox: Outbox,
    supervisor: Supervisor,
    /// The term's attempt fences, handed out in order.
    fences: FenceSeq,
    /// Cancelled to end the term (when its fences run out).
    term_token: CancellationToken,
    actions: Vec<Action>,
    stats: ManagerStats,
    /// Tools that may run twice (read-only or idempotent), as workers declared them.
    repeatable_tools: HashSet<String>,
    /// Per-tool token buckets.
    limiter: crate::ratelimit::RateLimiter,
    /// Per-tenant buckets of `tool_calls_per_minute`.
    tenant_rates: crate::ratelimit::RateLimiter,
    /// A run with a priority was seen: dispatch looks for the highest (until then, the
    /// ring's head is as good, and cheaper).
    prioritized: bool,
    expected_workers: HashSet<WorkerId>,
    /// Runs that ended, with the outbox mark of their last write: archived once it is settled.
    ended: Vec<(RunKey, u64)>,
    /// Ended runs whose event logs are still kept, oldest first, with when they ended.
    log_expiry: VecDeque<(u64, RunId)>,
    /// Runs whose next subtask waits for a record to be durable (see `durable`).
    awaiting_writes: Vec<RunKey>,
    /// Answers to `SignalRun` and `CancelRun`, sent once the outbox has settled up to their
    /// mark: a decision or a cancel is told only once it is durable (a failover keeps it).
    durable_replies: Vec<(u64, signals::Answer)>,
    /// The principal each worker id was last used by.
    worker_principals: HashMap<WorkerId, String>,
    /// Workers registered under a live lease ([`Command::WorkerRegistered`]).
    leased: HashSet<WorkerId>,
    /// Backups started (newest last), preempted when ready primaries need their slots; entries
    /// of races already over are dropped as they are found.
    backups: Vec<(RunKey, swarm_core::SubtaskIx, swarm_core::Fence)>,
    /// Backups preempted whose slots the workers have not handed back yet.
    preempted: Vec<swarm_core::Fence>,
}

impl Manager {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, term: CancellationToken) {
        let clock = self.supervisor.clock();
        let settled = self.outbox.settle_signal();
        loop {
            // While attempts run or subtasks wait, look for stragglers and overdue waits often.
            let busy = self.registry.busy()
                || !self.ring.is_empty()
                || !self.ended.is_empty()
                || self.runs.values().any(|r| !r.parked.is_empty());
            // A tool at its rate limit: wake when its next token arrives.
            let token = if self.ring.is_empty() {
                None
            } else {
                let now = self.supervisor.now_us();
                [self.limiter.next_token_us(now), self.tenant_rates.next_token_us(now)].into_iter().flatten().min()
            };
            let wake = self.supervisor.next_wake(busy, token);
            tokio::select! {
                biased;
                _ = term.cancelled() => break,
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
                _ = crate::clock::sleep_until(clock.as_ref(), wake.unwrap_or(0)), if wake.is_some() => {}
                _ = settled.notified(), if !self.awaiting_writes.is_empty() || !self.durable_replies.is_empty() => {}
            }
            self.stats.turns += 1;
            let now = self.supervisor.now_us();
            for key in std::mem::take(&mut self.awaiting_writes) {
                self.enqueue(key);
            }
            for (key, subtask) in self.supervisor.due_retries(now) {
                self.apply(key, swarm_core::EngineEvent::RetryDue { subtask });
            }
            let due = self.supervisor.due(now);
            if due.recovery_over {
                self.end_recovery("grace period over");
            }
            self.dispatch();
            if due.tick {
                self.speculate(now);
                self.expire_unscheduled(now);
                self.expire_unplaceable(now);
                self.expire_silent(now);
            }
            self.flush().await;
            self.answer_settled();
            // Time this turn kept the manager from reading heartbeats (a slow store blocking
            // the flush, above all) is not the workers' silence: their beats wait in the queue.
            let held_up = self.supervisor.now_us().saturating_sub(now);
            if held_up > self.supervisor.silence_limit_us() / 20 {
                tracing::warn!(
                    held_up_ms = held_up / 1000,
                    "the manager was held up; heartbeat silence over that time is excused"
                );
                self.registry.excuse_silence(held_up);
            }
            self.archive_ended();
            if due.gauges {
                self.record_gauges();
            }
        }
        info!(term = self.config.term, "run manager stopped");
    }

    fn record_gauges(&self) {
        let m = swarm_telemetry::metrics();
        let (count, used, total) = self.registry.usage();
        m.workers.set(i64::from(count), &[]);
        m.slots.set(i64::from(used), &[("state", "used")]);
        m.slots.set(i64::from(total.saturating_sub(used)), &[("state", "free")]);
        let active = self.runs.values().filter(|r| !r.engine.state().is_terminal());
        let (runs, queued) = active.fold((0i64, 0i64), |(r, q), e| (r + 1, q + e.engine.ready_len() as i64));
        m.runs_active.set(runs, &[]);
        m.queue_depth.set(queued, &[]);
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { run_id, dag, header, span, reply } => {
                FaultHook::on_submit(self.config.fault.as_ref(), &header.name);
                self.add_run(run_id, dag, *header, None, Some(span), None);
                let _ = reply.send(());
            }
            Command::StartFork { run, span, reply } => {
                self.start_fork(*run, span);
                let _ = reply.send(());
            }
            Command::Admit { size, tenant, dag, reply } => {
                let _ = reply.send(self.admit(size, tenant.as_deref()).and_then(|()| self.placeable(&dag)));
            }
            Command::Get { run_id, page, reply } => _ = reply.send(self.get_durable(&run_id, page)),
            Command::List { before, limit, tenant, spec_version, reply } => {
                let iter: Box<dyn Iterator<Item = (&RunId, &Listed)>> = match &before {
                    Some(b) => Box::new(self.listing.range(..b.clone()).rev()),
                    None => Box::new(self.listing.iter().rev()),
                };
                let ids: Vec<RunId> = iter
                    .filter(|(_, listed)| tenant.as_ref().is_none_or(|t| self.tenant_of(listed) == t.as_deref()))
                    .filter(|(_, listed)| spec_version.as_ref().is_none_or(|v| self.version_of(listed) == Some(v)))
                    .take(limit + 1)
                    .map(|(id, _)| id.clone())
                    .collect();
                let more = ids.len() > limit;
                let runs = ids.iter().take(limit).filter_map(|id| self.view_by_id(id)).collect();
                let _ = reply.send((runs, more));
            }
            Command::Workers { reply } => {
                let _ = reply.send(self.registry.infos());
            }
            Command::ArtifactAccess { worker_id, principal, fence, reserve, reply } => {
                let _ = reply.send(self.artifact_access(&worker_id, &principal, fence, reserve));
            }
            Command::Cancel { run_id, reason, reply } => match self.cancel(&run_id, &reason) {
                Ok(run) => self.answer_when_durable(Box::new(move || drop(reply.send(Ok(run))))),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Signal { request, reply } => self.signal_command(request, reply),
            Command::Watch { run_id, reply } => {
                let log = match self.listing.get(&run_id) {
                    Some(Listed::Live(k)) => self.runs.get(k).map(|e| Watchable::Log(e.log.clone())),
                    Some(Listed::Archived { log: Some(log), .. }) => Some(Watchable::Log(log.clone())),
                    // Its events are no longer in memory: the caller reads them from the store.
                    Some(Listed::Archived { header, log: None }) => Some(Watchable::Stored(header.clone())),
                    None => None,
                };
                let _ = reply.send(log);
            }
            Command::WorkerJoined { conn, hello, tx, principal } => self.worker_joined(conn, hello, tx, principal),
            Command::WorkerReports { conn, reports } => {
                for report in reports {
                    self.report(conn, report);
                }
            }
            Command::WorkerSteps { conn, steps } => {
                for step in steps {
                    self.agent_step(conn, step);
                }
            }
            Command::WorkerOutput { conn, chunks } => self.agent_output(conn, chunks),
            Command::OutputInterest { run_id } => self.output_interest(&run_id),
            Command::WorkerDraining { conn } => {
                if let Some((id, running)) = self.registry.by_conn(conn).and_then(|w| self.registry.drain(w)) {
                    info!(worker_id = %id, running, "worker draining");
                }
            }
            Command::WorkerHeartbeat { conn, fences } => {
                let now = self.supervisor.now_us();
                if let Some(w) = self.registry.by_conn(conn) {
                    self.registry.heard(w, now);
                    for fence in fences {
                        self.registry.touch(w, swarm_core::Fence(fence), now);
                    }
                }
            }
            Command::WorkerLeft { conn } => {
                if let Some(w) = self.registry.by_conn(conn) {
                    let id = self.registry.id(w).cloned();
                    let principal = id.as_ref().and_then(|i| self.worker_principals.get(i)).map_or("", String::as_str);
                    info!(worker_id = %id.map(|i| i.to_string()).unwrap_or_default(), %principal, "worker left");
                    self.worker_detached(w);
                }
            }
            Command::WorkerRegistered { worker_id } => _ = self.leased.insert(worker_id),
            Command::WorkerExpired { worker_id } => {
                self.leased.remove(&worker_id);
                self.worker_expired(&worker_id);
                self.expected_workers.remove(&worker_id);
                self.check_recovery();
            }
            Command::Forget { ended_before_us, reply } => {
                let _ = reply.send(self.forget(ended_before_us));
            }
            Command::Stats { reply } => {
                let mut stats = self.stats;
                stats.workers = self.registry.usage().0;
                stats.active_runs = self.runs.values().filter(|r| !r.engine.state().is_terminal()).count() as u32;
                (stats.store_txns, stats.store_ops) = self.outbox.written();
                stats.recovering = self.supervisor.recovering();
                stats.followed_runs = self.runs.values().filter(|r| r.output_told).count() as u32;
                let _ = reply.send(stats);
            }
        }
    }

    fn enqueue(&mut self, key: RunKey) {
        if let Some(entry) = self.runs.get_mut(&key)
            && !entry.in_ring
            && !entry.recovering
            && entry.engine.has_ready()
        {
            entry.in_ring = true;
            self.ring.push_back(key);
        }
    }

    /// Ends recovery when every expected worker is back.
    fn check_recovery(&mut self) {
        if self.supervisor.recovering() {
            let connected = self.registry.alive_ids();
            if self.expected_workers.iter().all(|w| connected.contains(w)) {
                self.end_recovery("every registered worker reconnected");
            }
        }
    }

    fn end_recovery(&mut self, why: &str) {
        if !self.supervisor.end_recovery() {
            return;
        }
        info!(reason = why, "recovery over; resumed runs dispatch again");
        let keys: Vec<RunKey> = self.runs.keys().copied().collect();
        for key in keys {
            if let Some(e) = self.runs.get_mut(&key) {
                e.recovering = false;
            }
            self.enqueue(key);
        }
    }
}
