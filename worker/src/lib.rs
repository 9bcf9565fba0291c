//! Swarm's worker: connects to the leading coordinator's `WorkerService.Connect` stream,
//! declares its slots and tools, runs the attempts it is assigned (each under its own
//! cancellation token and timeout) and reports results in batches.
//!
//! Results are kept until the coordinator acknowledges them (after writing them to its store),
//! and attempts keep running across reconnections: when the stream breaks — the coordinator
//! failed over, say — the worker reconnects (to the new leader, found through the store's
//! election when configured with a store), declares the attempts it holds, and re-sends the
//! unacknowledged reports. The new leader adopts what it can and cancels the rest, so a finished
//! tool call is neither lost nor run twice.
//!
//! With a store, the worker also registers under a lease (`{prefix}workers/{id}`); if the lease
//! is lost the coordinator re-queues the worker's attempts, so the worker stops them itself
//! before the lease can expire ([`hold`]).

pub mod agent;
pub mod artifacts;
mod attempt;
#[cfg(test)]
mod fuzz;
pub mod gate;
pub mod hold;
mod lease;
pub mod model;
pub mod output;
pub mod telemetry;
pub mod tls;
pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use swarm_core::{FailureKind, WorkerId};
use swarm_proto::convert::{duration_to_us, timestamp};
use swarm_proto::pb::{self, coordinator_message::Msg, worker_service_client::WorkerServiceClient};
use swarm_store::election::{Election, LeaderInfo};
use swarm_store::{Op, StateStore, Txn};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use attempt::{AttemptCtx, Held, Up, start_attempt};
pub use tools::{Tool, ToolContext, ToolError, ToolInfo, ToolRegistry};

/// Reports sent in one message at most.
const REPORT_BATCH: usize = 1024;
/// A batch of reports or steps grows up to about this many bytes; one larger report (an
/// output of up to [`MAX_OUTPUT_BYTES`]) goes alone. The coordinator decodes messages of up
/// to `MAX_OUTPUT_BYTES` + 1 MiB, so a batch never exceeds what it accepts.
const BATCH_BYTES: usize = 1 << 20;
/// Largest tool output reported; larger ones fail the attempt (permanently).
pub const MAX_OUTPUT_BYTES: usize = 32 * 1024 * 1024;

/// Where the worker finds its coordinator.
#[derive(Clone)]
pub enum CoordinatorSource {
    /// A fixed URL, e.g. `http://127.0.0.1:7070`.
    Static(String),
    /// The leader elected in the store under `prefix`; the worker also registers there.
    Store { store: Arc<dyn StateStore>, prefix: String },
}

impl std::fmt::Debug for CoordinatorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(url) => write!(f, "Static({url})"),
            Self::Store { prefix, .. } => write!(f, "Store({prefix})"),
        }
    }
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique in the cluster.
    pub worker_id: WorkerId,
    /// Where the coordinator is.
    pub source: CoordinatorSource,
    /// Attempts run at once (default 64).
    pub slots: u32,
    /// Labels sent with the hello, for placements to match (`--label pool=gpu`).
    pub labels: HashMap<String, String>,
    /// Resources attempts may hold, as quantities (`--resource gpu=1`), sent with the hello.
    pub resources: HashMap<String, String>,
    /// TTL of the registration lease (with a store).
    pub lease_ttl: Duration,
    /// Models for agent subtasks; with none, the worker runs no agents.
    pub models: Arc<model::ModelRegistry>,
    /// Send heartbeats (only tests turn them off, to play a silent worker).
    pub heartbeats: bool,
    /// On shutdown, how long in-flight attempts may run on before they are handed back.
    pub drain_timeout: Duration,
    /// The bearer token the worker authenticates with (`--token`; the coordinator's auth file
    /// gives it the `worker` role). Never logged.
    pub token: Option<String>,
    /// TLS towards the coordinator (`https://` URLs; `--tls-ca`, `--tls-cert`, `--tls-key`).
    pub tls: tls::ClientTls,
    /// How much faster or slower this worker's clock may run than the store's (a ratio): the
    /// worker stops its attempts that much earlier before its lease could expire ([`hold`]).
    pub max_clock_drift: f64,
    /// With a store: how long the worker may be without any coordinator stream before it gives
    /// its attempts (and lease) back ([`hold`]).
    pub link_hold: Duration,
}

impl WorkerConfig {
    /// A worker of a coordinator at a fixed URL, with 64 slots and a generated id.
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            worker_id: WorkerId::from(format!("w-{:08x}", fastrand::u32(..))),
            source: CoordinatorSource::Static(coordinator.into()),
            slots: 64,
            labels: HashMap::new(),
            resources: HashMap::new(),
            lease_ttl: Duration::from_secs(2),
            models: Arc::new(model::ModelRegistry::new()),
            heartbeats: true,
            drain_timeout: Duration::from_secs(20),
            token: None,
            tls: tls::ClientTls::default(),
            max_clock_drift: hold::DEFAULT_DRIFT,
            link_hold: Duration::from_secs(30),
        }
    }
}

/// Why a worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator URL cannot be used.
    #[error("invalid coordinator url `{0}`: {1}")]
    BadUrl(String, String),
}

/// Runs the worker until `shutdown` is cancelled, reconnecting whenever the stream breaks.
///
/// Shutdown drains: the worker tells the coordinator to assign it nothing more, lets its
/// in-flight attempts finish and their reports be acknowledged (at most
/// [`WorkerConfig::drain_timeout`]), then closes the stream and cancels what is left, which the
/// coordinator re-queues elsewhere. Its registration lease is kept until then.
pub async fn run(
    config: WorkerConfig,
    tools: Arc<ToolRegistry>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    run_with_abort(config, tools, shutdown, CancellationToken::new()).await
}

/// [`run`], with an `abort` token that ends the drain at once: attempts are cancelled and
/// handed back without reports, as if the process had died (tests use it to lose a worker).
pub async fn run_with_abort(
    config: WorkerConfig,
    tools: Arc<ToolRegistry>,
    shutdown: CancellationToken,
    abort: CancellationToken,
) -> Result<(), WorkerError> {
    if let CoordinatorSource::Static(url) = &config.source {
        config.tls.endpoint(url).map_err(|e| WorkerError::BadUrl(url.clone(), e))?;
    }
    let held = Arc::new(Held::default());
    let attempts = TaskTracker::new();
    let (report_tx, mut report_rx) = mpsc::channel::<Up>(config.slots as usize * 4 + 64);
    let background = TaskTracker::new();
    let mut lease_hold = None;
    if let CoordinatorSource::Store { store, prefix } = &config.source {
        // The margin covers the time cancelling takes and the scheduler's lateness.
        let margin = (config.lease_ttl / 10).min(Duration::from_millis(500));
        let hold = Arc::new(hold::LeaseHold::new(config.lease_ttl, config.max_clock_drift, margin));
        background.spawn(lease::register(
            store.clone(),
            prefix.clone(),
            config.clone(),
            tools.clone(),
            held.clone(),
            hold.clone(),
            abort.clone(),
        ));
        background.spawn(lease::enforce_hold(hold.clone(), held.clone(), config.clone(), abort.clone()));
        lease_hold = Some(hold);
    }
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let mut delays = backoff.build();
    let ctx = AttemptCtx {
        tools,
        models: config.models.clone(),
        gate: Arc::default(),
        uplink: Arc::default(),
        attempts: attempts.clone(),
        held: held.clone(),
        reports: report_tx,
        shutdown: shutdown.clone(),
        abort: abort.clone(),
        hold: lease_hold.clone(),
        artifacts: Arc::default(),
        worker_id: config.worker_id.to_string(),
    };
    while !shutdown.is_cancelled() {
        // A fenced worker (or one not registered yet) connects once it holds a lease again.
        if let Some(hold) = &lease_hold
            && !hold.valid()
        {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = hold.restored() => {}
            }
        }
        let started = tokio::time::Instant::now();
        let leader_changed = CancellationToken::new();
        let mut tried: Option<(Election, Option<LeaderInfo>)> = None;
        let url = match &config.source {
            CoordinatorSource::Static(url) => Some(url.clone()),
            CoordinatorSource::Store { store, prefix } => {
                let election = Election::new(store.clone(), &format!("{prefix}leader"));
                let leader = match election.leader().await {
                    Ok((leader, _)) => leader,
                    Err(e) => {
                        debug!(error = %e, "cannot read the leader");
                        None
                    }
                };
                if let Some(l) = &leader {
                    background.spawn(lease::watch_leader(election.clone(), l.clone(), leader_changed.clone()));
                }
                let url = leader.as_ref().map(|l| l.value.clone());
                tried = Some((election, leader));
                url
            }
        };
        if let Some(url) = url {
            let ended = session(&url, &config, &ctx, &mut report_rx, &leader_changed).await;
            if let Some(hold) = &lease_hold {
                hold.link_down();
            }
            ctx.gate.disconnected();
            ctx.uplink.set(None);
            ctx.artifacts.set(None, None);
            match ended {
                Ok(()) if shutdown.is_cancelled() => {
                    leader_changed.cancel();
                    break;
                }
                Ok(()) => info!(worker_id = %config.worker_id, "stream ended; reconnecting"),
                Err(status) => debug!(worker_id = %config.worker_id, %status, "connection failed"),
            }
        }
        leader_changed.cancel();
        if started.elapsed() > Duration::from_secs(10) {
            delays = backoff.build();
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        // With a store, a new leader ends the wait at once.
        let new_leader = async {
            match &tried {
                Some((election, known)) => {
                    let _ = election.changed(known.as_ref()).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
            _ = new_leader => delays = backoff.build(),
        }
    }
    let left = held.running.lock().unwrap_or_else(|e| e.into_inner()).len();
    if left > 0 {
        warn!(worker_id = %config.worker_id, attempts = left, "handing back unfinished attempts");
    }
    abort.cancel();
    held.cancel_all();
    attempts.close();
    if tokio::time::timeout(Duration::from_secs(5), attempts.wait()).await.is_err() {
        warn!(worker_id = %config.worker_id, "attempts did not stop within 5 s of cancellation");
    }
    background.close();
    background.wait().await;
    Ok(())
}

/// One connection: hello (declaring held attempts), unacknowledged reports again, then
/// assignments in and reports out until the stream ends.
async fn session(
    url: &str,
    config: &WorkerConfig,
    ctx: &AttemptCtx,
    reports: &mut mpsc::Receiver<Up>,
    leader_changed: &CancellationToken,
) -> Result<(), tonic::Status> {
    let endpoint = config
        .tls
        .endpoint(url)
        .map_err(tonic::Status::invalid_argument)?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(256);
    // Everything queued is also kept unacknowledged, and re-sent below.
    while reports.try_recv().is_ok() {}
    let hello = pb::WorkerHello {
        worker_id: config.worker_id.to_string(),
        slots: config.slots,
        tools: ctx
            .tools
            .infos()
            .map(|t| pb::ToolInfo {
                name: t.name.clone(),
                description: t.description.clone(),
                read_only: t.read_only,
                idempotent: t.idempotent,
            })
            .chain((!ctx.models.is_empty()).then(|| pb::ToolInfo {
                name: swarm_core::agent::AGENT_CAPABILITY.into(),
                description: "runs agent and orchestrator loops".into(),
                read_only: false,
                idempotent: false,
            }))
            .chain(ctx.models.names().map(|name| pb::ToolInfo {
                name: format!("{}{name}", swarm_core::agent::MODEL_CAPABILITY_PREFIX),
                description: "a model endpoint for agents".into(),
                read_only: false,
                idempotent: false,
            }))
            .collect(),
        labels: config.labels.clone(),
        held: ctx.held.declare(),
        resources: config.resources.clone(),
    };
    let _ = out_tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Hello(hello)) }).await;
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    let mut bearer = None;
    if let Some(token) = &config.token {
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("the token must be printable ASCII"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value.clone());
        bearer = Some(value);
    }
    let mut inbound = client.connect(request).await?.into_inner();
    ctx.artifacts.set(Some(client.clone()), bearer);
    ctx.uplink.set(Some(out_tx.clone()));
    if let Some(hold) = &ctx.hold {
        hold.link_up();
    }
    info!(worker_id = %config.worker_id, coordinator = %url, slots = config.slots, "connected");
    // Unacknowledged agent turns first, then reports: an attempt's turns precede its outcome.
    let steps: Vec<pb::AgentStepReport> =
        ctx.held.unacked_steps.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
    let resend: Vec<pb::AttemptReport> =
        ctx.held.unacked.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
    let queued = steps.into_iter().map(Up::Step).chain(resend.into_iter().map(Up::Report)).collect();
    for msg in batch_in_order(queued) {
        if out_tx.send(pb::WorkerMessage { msg: Some(msg) }).await.is_err() {
            return Ok(());
        }
    }
    let mut drain_until: Option<tokio::time::Instant> = None;
    // One future for the whole session (not a fresh subscription per message handled).
    let hold_lapsed = lapsed(ctx.hold.as_deref());
    tokio::pin!(hold_lapsed);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Assignments(a)) })) => {
                    debug!(worker_id = %config.worker_id, count = a.assignments.len(), "assignments received");
                    for assignment in a.assignments {
                        start_attempt(assignment, ctx);
                    }
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Interest(i)) })) => {
                    for run in &i.watched {
                        ctx.uplink.set_followed(run, true);
                    }
                    for run in &i.unwatched {
                        ctx.uplink.set_followed(run, false);
                    }
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Cancels(c)) })) => {
                    let running = ctx.held.running.lock().unwrap_or_else(|e| e.into_inner());
                    let mut unacked = ctx.held.unacked.lock().unwrap_or_else(|e| e.into_inner());
                    let mut steps = ctx.held.unacked_steps.lock().unwrap_or_else(|e| e.into_inner());
                    for fence in c.fences {
                        if let Some(r) = running.get(&fence) {
                            r.token.cancel();
                        }
                        unacked.remove(&fence);
                        steps.retain(|(f, _), _| *f != fence);
                    }
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Acks(a)) })) => {
                    let mut unacked = ctx.held.unacked.lock().unwrap_or_else(|e| e.into_inner());
                    let mut steps = ctx.held.unacked_steps.lock().unwrap_or_else(|e| e.into_inner());
                    for ack in a.steps {
                        steps.remove(&(ack.fence, ack.seq));
                    }
                    for fence in a.fences {
                        unacked.remove(&fence);
                        // The attempt's outcome is durable: its turns no longer matter.
                        steps.retain(|(f, _), _| *f != fence);
                    }
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Grants(g)) })) => ctx.gate.granted(&g.ids),
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Welcome(w)) })) => {
                    ctx.uplink.set_gated(w.output_interest);
                    ctx.gate.configure(w.gateway_endpoints, out_tx.clone());
                    if let Some(d) = w.heartbeat_interval.as_ref().map(duration_to_us).filter(|&us| us > 0) {
                        heartbeat = tokio::time::interval(Duration::from_micros(d));
                        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            },
            Some(first) = reports.recv() => {
                // Batch whatever queued meanwhile, keeping the order of steps and reports.
                let mut queued = vec![first];
                while queued.len() < REPORT_BATCH {
                    match reports.try_recv() {
                        Ok(r) => queued.push(r),
                        Err(_) => break,
                    }
                }
                for msg in batch_in_order(queued) {
                    if out_tx.send(pb::WorkerMessage { msg: Some(msg) }).await.is_err() {
                        return Ok(());
                    }
                }
            }
            _ = heartbeat.tick(), if config.heartbeats => {
                let fences: Vec<u64> = ctx.held.running.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
                let beat = pb::Heartbeat { running: fences.len() as u32, fences };
                let _ = out_tx.try_send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Heartbeat(beat)) });
            }
            _ = leader_changed.cancelled() => return Ok(()),
            _ = ctx.abort.cancelled() => return Ok(()),
            // Fenced: the attempts are being stopped; leave until registered again.
            _ = &mut hold_lapsed => {
                warn!(worker_id = %config.worker_id, "lease hold lapsed; leaving the coordinator");
                return Ok(());
            }
            _ = ctx.shutdown.cancelled(), if drain_until.is_none() => {
                let running = ctx.held.running.lock().unwrap_or_else(|e| e.into_inner()).len();
                info!(worker_id = %config.worker_id, running, "draining: no new attempts; finishing those in flight");
                drain_until = Some(tokio::time::Instant::now() + config.drain_timeout);
                let drain = pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Drain(pb::Drain {})) };
                if out_tx.send(drain).await.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                warn!(worker_id = %config.worker_id, "drain timeout");
                return Ok(());
            }
        }
        if drain_until.is_some() && ctx.held.idle() {
            info!(worker_id = %config.worker_id, "drained");
            return Ok(());
        }
    }
}

/// Resolves when `hold` lapses; never without one.
async fn lapsed(hold: Option<&hold::LeaseHold>) {
    match hold {
        Some(h) => h.lapsed().await,
        None => std::future::pending().await,
    }
}

/// Consecutive reports go in one message, consecutive steps in another, each message up to
/// [`REPORT_BATCH`] entries and about [`BATCH_BYTES`].
fn batch_in_order(queued: Vec<Up>) -> Vec<pb::worker_message::Msg> {
    use prost::Message;
    let mut out = Vec::new();
    // The encoded size of the last message so far.
    let mut size = 0usize;
    for up in queued {
        let len = match &up {
            Up::Report(r) => r.encoded_len(),
            Up::Step(s) => s.encoded_len(),
        };
        let room = size + len <= BATCH_BYTES;
        match (up, out.last_mut()) {
            (Up::Report(r), Some(pb::worker_message::Msg::Reports(b))) if room && b.reports.len() < REPORT_BATCH => {
                b.reports.push(r);
                size += len;
            }
            (Up::Step(s), Some(pb::worker_message::Msg::Steps(b))) if room && b.steps.len() < REPORT_BATCH => {
                b.steps.push(s);
                size += len;
            }
            (Up::Report(r), _) => {
                out.push(pb::worker_message::Msg::Reports(pb::AttemptReports { reports: vec![r] }));
                size = len;
            }
            (Up::Step(s), _) => {
                out.push(pb::worker_message::Msg::Steps(pb::AgentSteps { steps: vec![s] }));
                size = len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(fence: u64) -> Up {
        Up::Report(pb::AttemptReport { fence, ..Default::default() })
    }

    fn step(fence: u64, seq: u32) -> Up {
        Up::Step(pb::AgentStepReport { fence, seq, turn_json: String::new() })
    }

    #[test]
    fn reports_and_steps_are_batched_without_reordering_across_kinds() {
        let batches = batch_in_order(vec![report(1), report(2), step(3, 0), step(3, 1), report(4)]);
        let shape: Vec<(char, Vec<u64>)> = batches
            .iter()
            .map(|b| match b {
                pb::worker_message::Msg::Reports(r) => ('r', r.reports.iter().map(|x| x.fence).collect()),
                pb::worker_message::Msg::Steps(s) => ('s', s.steps.iter().map(|x| x.fence).collect()),
                _ => ('?', vec![]),
            })
            .collect();
        // A step must not overtake the report before it (nor a report the step before it).
        assert_eq!(shape, [('r', vec![1, 2]), ('s', vec![3, 3]), ('r', vec![4])]);
    }

    #[test]
    fn batches_stay_under_the_byte_budget_and_a_large_report_goes_alone() {
        let big = |fence: u64, bytes: usize| {
            Up::Report(pb::AttemptReport {
                fence,
                outcome: Some(pb::attempt_report::Outcome::OutputJson("x".repeat(bytes))),
                ..Default::default()
            })
        };
        let queued = vec![big(1, 600_000), big(2, 600_000), big(3, 5_000_000), big(4, 10), big(5, 10)];
        let sizes: Vec<Vec<u64>> = batch_in_order(queued)
            .iter()
            .map(|b| match b {
                pb::worker_message::Msg::Reports(r) => r.reports.iter().map(|x| x.fence).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(sizes, [vec![1], vec![2], vec![3], vec![4, 5]]);
    }

    #[test]
    fn a_worker_declares_what_it_runs_and_what_is_not_yet_acknowledged() {
        let held = Held::default();
        assert!(held.idle());
        let token = CancellationToken::new();
        held.running.lock().expect("lock").insert(
            5,
            attempt::Running { run_id: "r".into(), subtask_id: "a".into(), attempt: 1, token: token.clone() },
        );
        held.unacked.lock().expect("lock").insert(
            3,
            pb::AttemptReport {
                run_id: "r".into(),
                subtask_id: "b".into(),
                attempt: 2,
                fence: 3,
                ..Default::default()
            },
        );
        let mut declared: Vec<(String, u64)> = held.declare().into_iter().map(|h| (h.subtask_id, h.fence)).collect();
        declared.sort();
        assert_eq!(declared, [("a".to_owned(), 5), ("b".to_owned(), 3)]);
        assert!(!held.idle());
        held.cancel_all();
        assert!(token.is_cancelled(), "cancelling all reaches each attempt's token");
    }
}
