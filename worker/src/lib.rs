//! Swarm's worker: connects to a coordinator's `WorkerService.Connect` stream, declares its
//! slots and tools, runs the attempts it is assigned (each under its own cancellation token and
//! timeout) and reports results in batches. When the stream breaks it cancels what it was
//! running (the coordinator re-queues those attempts under new fences) and reconnects with
//! jittered exponential backoff.

pub mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use swarm_core::{FailureKind, WorkerId};
use swarm_proto::convert::{duration_to_us, timestamp};
use swarm_proto::pb::{self, coordinator_message::Msg, worker_service_client::WorkerServiceClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use tools::{Tool, ToolContext, ToolError, ToolInfo, ToolRegistry};

/// Reports sent in one message at most.
const REPORT_BATCH: usize = 1024;

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique in the cluster.
    pub worker_id: WorkerId,
    /// The coordinator's URL, e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    /// Attempts run at once (default 64).
    pub slots: u32,
    /// Free-form labels sent with the hello.
    pub labels: HashMap<String, String>,
}

impl WorkerConfig {
    /// A config with 64 slots and a generated id.
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            worker_id: WorkerId::from(format!("w-{:08x}", fastrand::u32(..))),
            coordinator: coordinator.into(),
            slots: 64,
            labels: HashMap::new(),
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

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Runs the worker until `shutdown` is cancelled, reconnecting whenever the stream breaks.
pub async fn run(
    config: WorkerConfig,
    tools: Arc<ToolRegistry>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let endpoint = tonic::transport::Endpoint::from_shared(config.coordinator.clone())
        .map_err(|e| WorkerError::BadUrl(config.coordinator.clone(), e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let mut delays = backoff.build();
    loop {
        let started = tokio::time::Instant::now();
        match session(&endpoint, &config, &tools, &shutdown).await {
            Ok(()) if shutdown.is_cancelled() => return Ok(()),
            Ok(()) => info!(worker_id = %config.worker_id, "coordinator closed the stream"),
            Err(status) => debug!(worker_id = %config.worker_id, %status, "connection failed"),
        }
        if started.elapsed() > Duration::from_secs(10) {
            delays = backoff.build();
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection: hello, then assignments in and reports out until the stream ends.
async fn session(
    endpoint: &tonic::transport::Endpoint,
    config: &WorkerConfig,
    tools: &Arc<ToolRegistry>,
    shutdown: &CancellationToken,
) -> Result<(), tonic::Status> {
    let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(256);
    let hello = pb::WorkerHello {
        worker_id: config.worker_id.to_string(),
        slots: config.slots,
        tools: tools
            .infos()
            .map(|t| pb::ToolInfo {
                name: t.name.clone(),
                description: t.description.clone(),
                read_only: t.read_only,
                idempotent: t.idempotent,
            })
            .collect(),
        labels: config.labels.clone(),
    };
    let _ = out_tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Hello(hello)) }).await;
    let mut inbound = client.connect(ReceiverStream::new(out_rx)).await?.into_inner();
    info!(worker_id = %config.worker_id, coordinator = %config.coordinator, slots = config.slots, "connected");

    let tracker = TaskTracker::new();
    let session_cancel = shutdown.child_token();
    let running: Arc<Mutex<HashMap<u64, CancellationToken>>> = Arc::default();
    let (report_tx, report_rx) = mpsc::channel::<pb::AttemptReport>(config.slots as usize + 16);
    tracker.spawn(uplink(report_rx, out_tx.clone()));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let result = loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Assignments(a)) })) => {
                    for assignment in a.assignments {
                        start_attempt(assignment, tools, &tracker, &session_cancel, &running, &report_tx);
                    }
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Cancels(c)) })) => {
                    let running = running.lock().unwrap_or_else(|e| e.into_inner());
                    for fence in c.fences {
                        if let Some(token) = running.get(&fence) {
                            token.cancel();
                        }
                    }
                }
                Ok(Some(pb::CoordinatorMessage { msg: Some(Msg::Welcome(w)) })) => {
                    if let Some(d) = w.heartbeat_interval.as_ref().map(duration_to_us).filter(|&us| us > 0) {
                        heartbeat = tokio::time::interval(Duration::from_micros(d));
                        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            },
            _ = heartbeat.tick() => {
                let n = running.lock().unwrap_or_else(|e| e.into_inner()).len() as u32;
                let _ = out_tx.try_send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Heartbeat(pb::Heartbeat { running: n })) });
            }
            _ = shutdown.cancelled() => break Ok(()),
        }
    };
    // The coordinator re-queues whatever was in flight on this connection.
    session_cancel.cancel();
    drop(report_tx);
    drop(out_tx);
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        warn!(worker_id = %config.worker_id, "attempts did not stop within 5 s of cancellation");
    }
    result
}

fn start_attempt(
    a: pb::Assignment,
    tools: &Arc<ToolRegistry>,
    tracker: &TaskTracker,
    session_cancel: &CancellationToken,
    running: &Arc<Mutex<HashMap<u64, CancellationToken>>>,
    reports: &mpsc::Sender<pb::AttemptReport>,
) {
    let token = session_cancel.child_token();
    running.lock().unwrap_or_else(|e| e.into_inner()).insert(a.fence, token.clone());
    let tool = tools.get(&a.tool).cloned();
    let running = running.clone();
    let reports = reports.clone();
    tracker.spawn(async move {
        let started_us = now_us();
        let outcome = match tool {
            None => Err(ToolError::permanent(format!("tool `{}` is not offered by this worker", a.tool))),
            Some(tool) => {
                let timeout = a.timeout.as_ref().map(|d| Duration::from_micros(duration_to_us(d))).or(tool.info().timeout);
                match serde_json::from_str::<serde_json::Value>(if a.args_json.is_empty() { "{}" } else { &a.args_json }) {
                    Err(e) => Err(ToolError::permanent(format!("args are not JSON: {e}"))),
                    Ok(args) => {
                        let ctx = ToolContext {
                            run_id: a.run_id.clone(),
                            subtask_id: a.subtask_id.clone(),
                            attempt: a.attempt,
                            cancel: token.clone(),
                        };
                        let call = tool.call(args, ctx);
                        tokio::select! {
                            biased;
                            _ = token.cancelled() => Err(ToolError { kind: FailureKind::Cancelled, message: "cancelled".into() }),
                            r = with_timeout(call, timeout) => r,
                        }
                    }
                }
            }
        };
        let finished_us = now_us();
        running.lock().unwrap_or_else(|e| e.into_inner()).remove(&a.fence);
        let outcome = match outcome {
            Ok(value) => pb::attempt_report::Outcome::OutputJson(value.to_string()),
            Err(e) => pb::attempt_report::Outcome::Error(pb::AttemptError { kind: pb::FailureKind::from(e.kind).into(), message: e.message }),
        };
        let _ = reports
            .send(pb::AttemptReport {
                run_id: a.run_id,
                subtask_id: a.subtask_id,
                attempt: a.attempt,
                fence: a.fence,
                started_at: Some(timestamp(started_us)),
                finished_at: Some(timestamp(finished_us)),
                outcome: Some(outcome),
            })
            .await;
    });
}

async fn with_timeout(call: tools::ToolFuture, timeout: Option<Duration>) -> Result<serde_json::Value, ToolError> {
    match timeout {
        None => call.await,
        Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
            Err(ToolError { kind: FailureKind::Timeout, message: format!("no result within {} ms", t.as_millis()) })
        }),
    }
}

/// Sends reports upstream, batching whatever has queued up meanwhile.
async fn uplink(mut rx: mpsc::Receiver<pb::AttemptReport>, tx: mpsc::Sender<pb::WorkerMessage>) {
    while let Some(first) = rx.recv().await {
        let mut reports = vec![first];
        while reports.len() < REPORT_BATCH {
            match rx.try_recv() {
                Ok(r) => reports.push(r),
                Err(_) => break,
            }
        }
        let msg = pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Reports(pb::AttemptReports { reports })) };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
}
