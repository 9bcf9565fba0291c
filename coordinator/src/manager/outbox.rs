//! The outbox: everything the manager's turn must make durable or tell workers afterwards.
//! Store writes and offloaded payloads are buffered per turn and written by a writer task in
//! batches (group commit); the acknowledgements of the reports those writes made durable are
//! sent to the workers only after the commit. It is the only owner of acknowledgements.
//!
//! Batches queued while a commit is in flight are coalesced into the next one, so the number of
//! store transactions per tool call falls as load rises. Writes are fenced by the leadership
//! term (see `swarm_store::repo::LeaderFence`); a fenced-out write means this coordinator is no longer
//! the leader, and the writer cancels the term. Unavailable stores are retried with backoff,
//! never dropped: the manager keeps going and the workers keep their unacknowledged reports
//! meanwhile.
//!
//! Runs' event logs are written after the records of the same turn, and published to their
//! watchers once written: a watcher never sees an event a later leader would not have.
//!
//! May not touch: runs, engines or workers' attempts; it only reads the registry for streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use swarm_core::Retryable;
use swarm_proto::pb;
use swarm_store::repo::BatchFailure;
use swarm_store::{Op, RunRepo, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use super::registry::{WorkerKey, WorkerRegistry, WorkerTx};
use crate::watch::EventLog;

/// What one manager turn must make durable, and whom to tell once it is.
#[derive(Debug)]
pub struct Outbox {
    writes: Vec<Op>,
    /// Offloaded outputs to upload with `writes`.
    blobs: Vec<(String, bytes::Bytes)>,
    /// Fences to acknowledge per worker once this turn's writes are durable.
    acks: HashMap<WorkerKey, Vec<u64>>,
    /// Agent steps to acknowledge per worker, likewise.
    step_acks: HashMap<WorkerKey, Vec<pb::StepAck>>,
    writer: mpsc::Sender<SinkBatch>,
    stats: Arc<SinkStats>,
    /// Event logs with events appended this turn.
    logs: Vec<Arc<EventLog>>,
    /// Operations handed to this outbox so far (see [`Outbox::settled`]).
    queued: u64,
}

impl Outbox {
    /// An outbox whose writer task runs on `tracker` until `term` ends.
    pub fn spawn(repo: RunRepo, tracker: &TaskTracker, term: CancellationToken) -> Self {
        let (writer, rx) = mpsc::channel(64);
        let stats = Arc::new(SinkStats::default());
        tracker.spawn(write_loop(repo, rx, term, stats.clone()));
        Self {
            writes: Vec::new(),
            blobs: Vec::new(),
            acks: HashMap::new(),
            step_acks: HashMap::new(),
            writer,
            stats,
            logs: Vec::new(),
            queued: 0,
        }
    }

    /// A store write of this turn.
    pub fn write(&mut self, op: Op) {
        self.writes.push(op);
        self.queued += 1;
    }

    /// How many writes have been handed to the outbox so far: a mark to compare with
    /// [`Outbox::settled`].
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// How many of the writes handed over are settled (committed, or dropped for good), in
    /// order: every write up to this count is behind us.
    pub fn settled(&self) -> u64 {
        self.stats.settled.load(Ordering::Acquire)
    }

    /// An event log with new events: they are written after this turn's writes, then shown
    /// to watchers. Called once per log until the next flush (see [`EventLog::append`]).
    pub fn events(&mut self, log: Arc<EventLog>) {
        self.logs.push(log);
    }

    /// Signalled whenever [`Outbox::settled`] moves on.
    pub fn settle_signal(&self) -> Arc<tokio::sync::Notify> {
        self.stats.settle_signal.clone()
    }

    /// A payload to upload before this turn's writes (which reference it).
    pub fn upload(&mut self, path: String, value: bytes::Bytes) {
        self.blobs.push((path, value));
    }

    /// Acknowledge attempt report `fence` to `worker` once this turn is durable.
    pub fn ack(&mut self, worker: WorkerKey, fence: u64) {
        self.acks.entry(worker).or_default().push(fence);
    }

    /// Acknowledge an agent step likewise.
    pub fn ack_step(&mut self, worker: WorkerKey, step: pb::StepAck) {
        self.step_acks.entry(worker).or_default().push(step);
    }

    /// The worker is gone: nothing is acknowledged to that connection (it re-sends).
    pub fn forget(&mut self, worker: WorkerKey) {
        self.acks.remove(&worker);
        self.step_acks.remove(&worker);
    }

    /// (store transactions, operations) written so far.
    pub fn written(&self) -> (u64, u64) {
        (self.stats.txns.load(Ordering::Relaxed), self.stats.ops.load(Ordering::Relaxed))
    }

    /// Hands this turn's writes and acknowledgements to the writer (waits while it is busy
    /// with earlier turns' batches: back-pressure on the manager, never a drop).
    pub async fn flush(&mut self, registry: &WorkerRegistry) {
        if self.writes.is_empty() && self.acks.is_empty() && self.step_acks.is_empty() && self.logs.is_empty() {
            return;
        }
        let mut per_worker: HashMap<WorkerKey, pb::Acks> = HashMap::new();
        for (w, fences) in self.acks.drain() {
            per_worker.entry(w).or_default().fences = fences;
        }
        for (w, steps) in self.step_acks.drain() {
            per_worker.entry(w).or_default().steps = steps;
        }
        let acks = per_worker.into_iter().filter_map(|(w, acks)| registry.tx(w).map(|tx| (tx.clone(), acks))).collect();
        // Up to the events appended by now: later ones come with their turn's records.
        let logs = self.logs.drain(..).map(|log| {
            let upto = log.take_dirty();
            (log, upto)
        });
        let logs = logs.collect();
        let batch =
            SinkBatch { blobs: std::mem::take(&mut self.blobs), ops: std::mem::take(&mut self.writes), acks, logs };
        if self.writer.send(batch).await.is_err() {
            warn!("store writer stopped; writes dropped");
        }
    }
}

/// The longest wait between two tries of a write.
const MAX_WRITE_DELAY: Duration = Duration::from_secs(2);

/// Retries of a failed write: 50 ms doubling to 2 s, jittered, for as long as the term lasts.
fn write_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(MAX_WRITE_DELAY)
        .with_jitter()
        .without_max_times()
}

/// Tries of a write that fails with an error of no known kind before its batch is dropped.
const MAX_UNKNOWN_TRIES: u32 = 5;

/// Most operations coalesced into one sink round.
const MAX_COALESCED_OPS: usize = 8192;

/// One manager turn's writes and the acknowledgements due once they are durable.
#[derive(Default)]
struct SinkBatch {
    /// Offloaded payloads to upload before `ops` (which reference them) are committed.
    blobs: Vec<(String, bytes::Bytes)>,
    ops: Vec<Op>,
    acks: Vec<(WorkerTx, pb::Acks)>,
    /// Event logs to write (after `ops`) up to a seq, and then publish.
    logs: Vec<(Arc<EventLog>, u64)>,
}

/// Writer counters.
#[derive(Default, Debug)]
struct SinkStats {
    /// Store transactions committed.
    txns: AtomicU64,
    /// Operations written.
    ops: AtomicU64,
    /// Failed commit attempts (retried).
    retries: AtomicU64,
    /// Records dropped because one alone exceeds the store's request limit.
    dropped: AtomicU64,
    /// Operations settled (written or dropped), counted as batches finish, in order.
    settled: AtomicU64,
    /// Signalled whenever `settled` moves.
    settle_signal: Arc<tokio::sync::Notify>,
}

/// Writes batches until the channel closes or the term is cancelled, then acknowledges.
async fn write_loop(repo: RunRepo, mut rx: mpsc::Receiver<SinkBatch>, term: CancellationToken, stats: Arc<SinkStats>) {
    while let Some(mut batch) = rx.recv().await {
        while batch.ops.len() < MAX_COALESCED_OPS {
            match rx.try_recv() {
                Ok(more) => {
                    batch.blobs.extend(more.blobs);
                    batch.ops.extend(more.ops);
                    batch.acks.extend(more.acks);
                    batch.logs.extend(more.logs);
                }
                Err(_) => break,
            }
        }
        let total = batch.ops.len() as u64;
        for (log, upto) in &batch.logs {
            for (first, chunk) in log.encode_unsaved(*upto) {
                batch.ops.push(repo.events_op(log.run_id(), first, chunk));
            }
        }
        let mut delays = write_backoff().build();
        let mut unknown_tries = 0;
        loop {
            if batch.ops.is_empty() {
                break;
            }
            let uploaded = match repo.payloads() {
                Some(payloads) if !batch.blobs.is_empty() => {
                    let uploads = batch.blobs.iter().map(|(path, value)| payloads.put(path, value.clone()));
                    futures_util::future::try_join_all(uploads).await.map(|_| ())
                }
                _ => Ok(()),
            };
            let started = std::time::Instant::now();
            let written = match uploaded {
                Ok(()) => repo.write_batch_from(&batch.ops).await,
                Err(error) => Err(BatchFailure { committed: 0, error }),
            };
            // What was committed is never written again: a retry takes the rest.
            let written = written.map_err(|f| {
                batch.ops.drain(..f.committed.min(batch.ops.len()));
                f.error
            });
            match written {
                Ok(txns) => {
                    let m = swarm_telemetry::metrics();
                    m.store_batch_size.record(batch.ops.len() as f64, &[]);
                    m.store_commit_duration.record(started.elapsed().as_secs_f64(), &[]);
                    batch.blobs.clear();
                    stats.txns.fetch_add(txns as u64, Ordering::Relaxed);
                    stats.ops.fetch_add(batch.ops.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(StoreError::Fenced(term_rev)) => {
                    error!(term = term_rev, "writes fenced out: this coordinator is no longer the leader");
                    term.cancel();
                    return;
                }
                Err(StoreError::TooLarge(message)) => {
                    // Too large as a transaction: write the first operation alone; if it alone is
                    // over the store's request limit, it cannot be written at all, and only it is
                    // dropped (every other record of the batch, other runs' included, goes on).
                    match repo.write_batch_from(&batch.ops[..1]).await {
                        Ok(_) => {
                            batch.ops.remove(0);
                        }
                        Err(BatchFailure { error: StoreError::TooLarge(_), .. }) => {
                            let op = batch.ops.remove(0);
                            error!(key = %op.key_text(), bytes = op.size(), %message, "a record over the store's request limit is dropped");
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {} // retried with the rest below
                    }
                }
                Err(e) if e.is_retryable() => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = delays.next().unwrap_or(MAX_WRITE_DELAY);
                    if matches!(e, StoreError::NoSpace(_)) {
                        error!(error = %e, ops = batch.ops.len(), retry_in_ms = delay.as_millis() as u64,
                            "the store is full (etcd NOSPACE): writes are kept and retried until an operator compacts, defragments or raises the quota");
                    } else {
                        warn!(error = %e, ops = batch.ops.len(), retry_in_ms = delay.as_millis() as u64, "store write failed; retrying");
                    }
                    tokio::select! {
                        _ = term.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                // An error of no known kind may still be passing (a connection torn mid-request
                // can surface as one): tried a few more times before the batch is given up.
                Err(e) if unknown_tries < MAX_UNKNOWN_TRIES => {
                    unknown_tries += 1;
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = delays.next().unwrap_or(MAX_WRITE_DELAY);
                    warn!(error = %e, ops = batch.ops.len(), try_no = unknown_tries, "store write failed; retrying");
                    tokio::select! {
                        _ = term.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    error!(error = %e, ops = batch.ops.len(), "store write failed for good; the batch is dropped");
                    batch.acks.clear();
                    break;
                }
            }
        }
        stats.settled.fetch_add(total, Ordering::Release);
        stats.settle_signal.notify_one();
        for (log, upto) in batch.logs {
            log.publish(upto);
        }
        for (tx, acks) in batch.acks {
            let msg = pb::CoordinatorMessage { msg: Some(pb::coordinator_message::Msg::Acks(acks)) };
            // A full or closed stream only delays the ack: the worker re-sends, and the report is
            // recognised as stale and acknowledged again.
            let _ = tx.try_send(Ok(msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use swarm_core::WorkerId;
    use swarm_store::repo::LeaderFence;
    use swarm_store::{MemoryStore, StateStore, Txn};

    use super::*;
    use crate::clock::TokioClock;

    fn worker(
        registry: &mut WorkerRegistry,
    ) -> (WorkerKey, mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>) {
        let (tx, rx) = mpsc::channel(8);
        (registry.join(swarm_core::ConnId(1), WorkerId::from("w"), 4, HashSet::new(), tx), rx)
    }

    type Inbox = mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>;

    /// An outbox on `repo` and a registry with one worker.
    fn rig(repo: RunRepo) -> (TaskTracker, CancellationToken, Outbox, WorkerRegistry, WorkerKey, Inbox) {
        let tracker = TaskTracker::new();
        let term = CancellationToken::new();
        let outbox = Outbox::spawn(repo, &tracker, term.clone());
        let mut registry = WorkerRegistry::new();
        let (w, rx) = worker(&mut registry);
        (tracker, term, outbox, registry, w, rx)
    }

    async fn acks(rx: &mut mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>) -> pb::Acks {
        loop {
            let msg = rx.recv().await.expect("open").expect("message");
            if let Some(pb::coordinator_message::Msg::Acks(a)) = msg.msg {
                return a;
            }
        }
    }

    #[tokio::test]
    async fn acks_go_out_only_once_the_writes_are_in_the_store() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let repo = RunRepo::new(store.clone(), swarm_store::repo::DEFAULT_PREFIX);
        let (tracker, _term, mut outbox, registry, w, mut rx) = rig(repo);
        let mut registry = registry;
        outbox.write(Op::put("/swarm/v1/x", "1"));
        outbox.ack(w, 7);
        outbox.ack_step(w, pb::StepAck { fence: 7, seq: 2 });
        outbox.flush(&registry).await;
        let got = acks(&mut rx).await;
        assert_eq!(got.fences, [7]);
        assert_eq!(got.steps, [pb::StepAck { fence: 7, seq: 2 }]);
        assert!(store.get(b"/swarm/v1/x").await.expect("get").is_some(), "written before the ack was sent");
        assert_eq!(outbox.written(), (1, 1));
        // A worker that left is forgotten: nothing is acknowledged to it.
        outbox.ack(w, 8);
        outbox.forget(w);
        outbox.write(Op::put("/swarm/v1/y", "2"));
        outbox.ack(w, 9);
        registry.lose(w);
        outbox.flush(&registry).await;
        drop(outbox); // the writer ends once its last batch is written
        tracker.close();
        tracker.wait().await;
        assert!(store.get(b"/swarm/v1/y").await.expect("get").is_some());
        assert!(rx.try_recv().is_err(), "no acks for a lost worker");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_out_write_ends_the_term_and_acknowledges_nothing() {
        let _clock = TokioClock::new();
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let out = store.commit(Txn::new().then(Op::put("/leader/1", "me"))).await.expect("leader");
        let repo = RunRepo::new(store.clone(), swarm_store::repo::DEFAULT_PREFIX)
            .fenced(LeaderFence { key: b"/leader/1".to_vec(), revision: out.revision });
        store.commit(Txn::new().then(Op::Delete { key: b"/leader/1".to_vec() })).await.expect("deposed");
        let (tracker, term, mut outbox, registry, w, mut rx) = rig(repo);
        outbox.write(Op::put("/swarm/v1/x", "1"));
        outbox.ack(w, 7);
        outbox.flush(&registry).await;
        term.cancelled().await;
        tracker.close();
        tracker.wait().await;
        assert!(store.get(b"/swarm/v1/x").await.expect("get").is_none());
        assert!(rx.try_recv().is_err(), "a report whose write failed is never acknowledged");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_keeps_writes_until_space_returns_and_only_then_acknowledges() {
        let memory = Arc::new(MemoryStore::new().with_quota(64));
        let store: Arc<dyn StateStore> = memory.clone();
        let repo = RunRepo::new(store.clone(), swarm_store::repo::DEFAULT_PREFIX);
        let (_tracker, _term, mut outbox, registry, w, mut rx) = rig(repo);
        outbox.write(Op::put("/swarm/v1/x", "x".repeat(100)));
        outbox.ack(w, 7);
        outbox.flush(&registry).await;
        // Full: retried with backoff for a while (paused time passes quickly); nothing acked.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(rx.try_recv().is_err(), "not acknowledged while the write waits");
        assert!(store.get(b"/swarm/v1/x").await.expect("get").is_none());
        memory.set_quota(None); // the operator compacts and defragments
        assert_eq!(acks(&mut rx).await.fences, [7]);
        assert!(store.get(b"/swarm/v1/x").await.expect("get").is_some(), "the write was kept, not dropped");
    }

    #[tokio::test]
    async fn one_record_over_the_request_limit_is_dropped_alone_and_nothing_is_written_twice() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let repo = RunRepo::new(store.clone(), swarm_store::repo::DEFAULT_PREFIX);
        let (_tracker, _term, mut outbox, registry, w, mut rx) = rig(repo);
        // 300 small records around one of 2 MiB (over etcd's 1.5 MiB request limit).
        for i in 0..150 {
            outbox.write(Op::put(format!("/swarm/v1/a{i:03}"), "1"));
        }
        outbox.write(Op::put("/swarm/v1/huge", "x".repeat(2 << 20)));
        for i in 0..150 {
            outbox.write(Op::put(format!("/swarm/v1/b{i:03}"), "1"));
        }
        outbox.ack(w, 7);
        outbox.flush(&registry).await;
        assert_eq!(acks(&mut rx).await.fences, [7]);
        let page = store.range(b"/swarm/v1/", None, 0).await.expect("range");
        assert_eq!(page.kvs.len(), 300, "every other record written");
        assert!(page.kvs.iter().all(|kv| kv.version == 1), "none written twice");
        assert!(store.get(b"/swarm/v1/huge").await.expect("get").is_none());
    }
}
