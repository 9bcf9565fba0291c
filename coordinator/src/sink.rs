//! The store sink: writes the run manager's state changes in batches (group commit), then
//! acknowledges the reports they made durable to the workers that sent them.
//!
//! Batches queued while a commit is in flight are coalesced into the next one, so the number of
//! store transactions per tool call falls as load rises. Writes are fenced by the leadership
//! term (see `swarm_store::repo::Fence`); a fenced-out write means this coordinator is no longer
//! the leader, and the sink cancels the term. Unavailable stores are retried with backoff, never
//! dropped: the manager keeps going and the workers keep their unacknowledged reports meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use swarm_core::Retryable;
use swarm_proto::pb;
use swarm_store::{Op, RunRepo, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::manager::WorkerTx;

/// Most operations coalesced into one sink round.
const MAX_COALESCED_OPS: usize = 8192;

/// One manager turn's writes and the acknowledgements due once they are durable.
#[derive(Default)]
pub struct SinkBatch {
    /// Offloaded payloads to upload before `ops` (which reference them) are committed.
    pub blobs: Vec<(String, bytes::Bytes)>,
    pub ops: Vec<Op>,
    pub acks: Vec<(WorkerTx, pb::Acks)>,
}

/// Sink counters (shared with the manager's stats).
#[derive(Default, Debug)]
pub struct SinkStats {
    /// Store transactions committed.
    pub txns: AtomicU64,
    /// Operations written.
    pub ops: AtomicU64,
    /// Failed commit attempts (retried).
    pub retries: AtomicU64,
}

/// Runs the sink until the channel closes or the term is cancelled.
pub async fn run(repo: RunRepo, mut rx: mpsc::Receiver<SinkBatch>, term: CancellationToken, stats: Arc<SinkStats>) {
    while let Some(mut batch) = rx.recv().await {
        while batch.ops.len() < MAX_COALESCED_OPS {
            match rx.try_recv() {
                Ok(more) => {
                    batch.blobs.extend(more.blobs);
                    batch.ops.extend(more.ops);
                    batch.acks.extend(more.acks);
                }
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(50);
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
                Ok(()) => repo.write_batch(&batch.ops).await,
                Err(e) => Err(e),
            };
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
                Err(e) if e.is_retryable() => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, ops = batch.ops.len(), retry_in_ms = delay.as_millis() as u64, "store write failed; retrying");
                    tokio::select! {
                        _ = term.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    error!(error = %e, ops = batch.ops.len(), "store write failed for good; the batch is dropped");
                    batch.acks.clear();
                    break;
                }
            }
        }
        for (tx, acks) in batch.acks {
            let msg = pb::CoordinatorMessage { msg: Some(pb::coordinator_message::Msg::Acks(acks)) };
            // A full or closed stream only delays the ack: the worker re-sends, and the report is
            // recognised as stale and acknowledged again.
            let _ = tx.try_send(Ok(msg));
        }
    }
}
