//! `WatchRun`'s stream of a run's event log.

use std::sync::Arc;

use futures_util::Stream;
use swarm_proto::pb;
use tonic::Status;

use super::WATCH_BATCH;
use crate::manager::{Command, ManagerHandle};
use crate::watch::EventLog;

/// A watcher following a run's partial output: while one lives, the workers running the run's
/// agents send it (the manager tells them when the first comes and the last goes).
pub(super) struct Follower {
    log: Arc<EventLog>,
    manager: ManagerHandle,
}

impl Follower {
    pub(super) fn new(log: Arc<EventLog>, manager: ManagerHandle) -> Self {
        if log.output().follow() {
            tell(&manager, &log);
        }
        Self { log, manager }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.log.output().unfollow() {
            tell(&self.manager, &self.log);
        }
    }
}

/// Asks the manager to tell the run's workers whether its output is followed (the manager reads
/// the count itself, so a late message says what holds then).
fn tell(manager: &ManagerHandle, log: &EventLog) {
    let cmd = || Command::OutputInterest { run_id: log.run_id().clone() };
    if !manager.try_send(cmd())
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        let (manager, cmd) = (manager.clone(), cmd());
        rt.spawn(async move {
            let _ = manager.send(cmd).await;
        });
    }
}

/// Streams a log from `after` until the run's final event, with agents' partial output after
/// `(epoch, output_seq)` when `output` is set. The stream is pulled by the client: a slow
/// client only holds its own cursors.
pub(super) fn watch_stream(
    log: Arc<EventLog>,
    after: u64,
    output: Option<(u64, u64)>,
    catch_up_only: bool,
    stops: [tokio_util::sync::CancellationToken; 2],
    follower: Option<Follower>,
) -> impl Stream<Item = Result<pb::RunEvent, Status>> + Send {
    struct State {
        /// Held while the stream lives (dropped with it).
        _follower: Option<Follower>,
        log: Arc<EventLog>,
        cursor: u64,
        changes: tokio::sync::watch::Receiver<u64>,
        /// Partial output: its changes and the cursor (epoch, output_seq).
        output: Option<(tokio::sync::watch::Receiver<u64>, u64, u64)>,
        pending: std::collections::VecDeque<pb::RunEvent>,
        done: bool,
        catch_up_only: bool,
        stops: [tokio_util::sync::CancellationToken; 2],
    }
    let changes = log.subscribe();
    let output = output.map(|(epoch, seq)| (log.output().subscribe(), epoch, seq));
    let state = State {
        _follower: follower,
        log,
        cursor: after,
        changes,
        output,
        pending: Default::default(),
        done: false,
        catch_up_only,
        stops,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                return Some((Ok(ev), s));
            }
            if s.done {
                return None;
            }
            if let Some((changes, epoch, seq)) = &mut s.output {
                changes.borrow_and_update();
                let chunks = s.log.output().read(*epoch, *seq, WATCH_BATCH);
                if let Some(last) = chunks.last() {
                    (*epoch, *seq) = (last.output_epoch, last.output_seq);
                    let run_id = s.log.run_id().to_string();
                    s.pending.extend(chunks.into_iter().map(|c| pb::RunEvent {
                        run_id: run_id.clone(),
                        seq: 0,
                        time: None,
                        event: Some(pb::run_event::Event::AgentOutput(c)),
                    }));
                    continue;
                }
            }
            let (events, done) = s.log.read(s.cursor, WATCH_BATCH);
            if let Some(last) = events.last() {
                s.cursor = last.seq;
                s.done = done;
                s.pending.extend(events);
                continue;
            }
            s.changes.borrow_and_update();
            if s.log.last_seq() > s.cursor {
                continue;
            }
            // Resumed at or after the final event: nothing more will come.
            if s.log.ended_by(s.cursor) || s.catch_up_only {
                return None;
            }
            let output_changed = async {
                match &mut s.output {
                    Some((changes, _, _)) => changes.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = s.changes.changed() => if changed.is_err() { return None },
                alive = output_changed => if !alive { s.output = None },
                () = stopped(&s.stops) => {
                    let status = Status::unavailable("this coordinator stopped leading or is shutting down; resume with after_seq");
                    s.done = true;
                    return Some((Err(status), s));
                }
            }
        }
    })
}

/// Returns once either token is cancelled.
async fn stopped(stops: &[tokio_util::sync::CancellationToken; 2]) {
    tokio::select! {
        () = stops[0].cancelled() => {}
        () = stops[1].cancelled() => {}
    }
}
