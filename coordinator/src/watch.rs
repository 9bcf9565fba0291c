//! Per-run event logs: the source of `WatchRun` streams.
//!
//! The run manager appends compact domain events; each watcher reads the log from its own
//! cursor and converts to wire events itself, so a slow watcher costs the manager nothing and a
//! reconnecting watcher resumes from any `after_seq` without gaps or duplicates.

use std::sync::{Arc, Mutex};

use swarm_core::engine::Update;
use swarm_core::{Dag, RunId, RunSummary};
use swarm_proto::convert::{duration_us, timestamp};
use swarm_proto::pb::{self, run_event::Event};
use tokio::sync::watch;

/// One logged event.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// When it happened, µs since the Unix epoch.
    pub time_us: u64,
    /// What happened (`None`: the run started).
    pub update: Option<Update>,
    /// The final summary, on the `Finished` update.
    pub summary: Option<Arc<RunSummary>>,
    /// Live (critical steps, total steps), on agent steps.
    pub live: Option<(u64, u64)>,
}

/// The ordered events of one run. Seq numbers start at 1: entry `k` has seq `k + 1`.
pub struct EventLog {
    run_id: RunId,
    name: String,
    /// Subtask ids by index; grows as orchestrators spawn subagents.
    ids: Mutex<Vec<Arc<str>>>,
    total: u32,
    entries: Mutex<Vec<LogEntry>>,
    last_seq: watch::Sender<u64>,
    /// The most entries kept; later progress events are counted in `dropped`.
    max_entries: usize,
    dropped: std::sync::atomic::AtomicU64,
    /// Entry `k` has seq `base + k + 1` (non-zero only for [`EventLog::ended`]).
    base: u64,
}

impl EventLog {
    /// A log whose first event says the run started, keeping at most `max_entries` events
    /// (and the final one, always).
    pub fn new(run_id: RunId, dag: &Dag, time_us: u64, max_entries: usize) -> Arc<Self> {
        let log = Arc::new(Self {
            run_id,
            name: dag.name().to_owned(),
            ids: Mutex::new(Vec::new()),
            total: dag.len() as u32,
            entries: Mutex::new(Vec::new()),
            last_seq: watch::Sender::new(0),
            max_entries: max_entries.max(2),
            dropped: Default::default(),
            base: 0,
        });
        log.sync_ids(dag);
        log.append(LogEntry { time_us, update: None, summary: None, live: None });
        log
    }

    /// The log of a run whose events are no longer kept: its final event only, with the seq it
    /// had (`header.last_seq`), so watchers resuming after an earlier seq end cleanly.
    pub fn ended(header: &swarm_store::repo::RunHeader) -> Arc<Self> {
        let last = header.last_seq.max(1);
        let log = Arc::new(Self {
            run_id: header.run_id.clone(),
            name: header.name.clone(),
            ids: Mutex::new(Vec::new()),
            total: header.summary.as_ref().map_or(0, |s| s.total_subtasks),
            entries: Mutex::new(Vec::new()),
            last_seq: watch::Sender::new(0),
            max_entries: 1,
            dropped: Default::default(),
            base: last - 1,
        });
        let entry = LogEntry {
            time_us: header.finished_us.unwrap_or(header.submitted_us),
            update: Some(Update::Finished { state: header.state }),
            summary: header.summary.clone().map(Arc::new),
            live: None,
        };
        log.entries.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        log.last_seq.send_replace(last);
        log
    }

    /// Learns the ids of subtasks added to the DAG since the last call.
    pub fn sync_ids(&self, dag: &Dag) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        for i in ids.len()..dag.len() {
            ids.push(Arc::from(dag.node(swarm_core::SubtaskIx(i as u32)).id.as_str()));
        }
    }

    /// How many subtask ids the log knows.
    pub fn known_ids(&self) -> usize {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Appends an event and wakes the watchers. A full log keeps only the final event; the
    /// first event it cannot keep is replaced by a warning saying so.
    pub fn append(&self, entry: LogEntry) {
        let seq = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let last = matches!(entry.update, Some(Update::Finished { .. }));
            if entries.len() >= self.max_entries && !last {
                let dropped = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if dropped > 0 {
                    return;
                }
                let message = format!(
                    "the run's event log is full ({} events, --max-run-events): later progress events are not \
                     kept (the run goes on; GetRun shows its state)",
                    self.max_entries
                );
                let subtask = swarm_core::SubtaskIx(u32::MAX);
                entries.push(LogEntry {
                    time_us: entry.time_us,
                    update: Some(Update::Warning { subtask, message }),
                    summary: None,
                    live: None,
                });
            } else {
                entries.push(entry);
            }
            self.base + entries.len() as u64
        };
        self.last_seq.send_replace(seq);
    }

    /// Progress events not kept because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The seq of the latest event.
    pub fn last_seq(&self) -> u64 {
        *self.last_seq.borrow()
    }

    /// A receiver that changes whenever an event is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Up to `max` wire events with seq > `after`, and whether the last of them ends the run.
    pub fn read(&self, after: u64, max: usize) -> (Vec<pb::RunEvent>, bool) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(after.saturating_sub(self.base)).unwrap_or(usize::MAX).min(entries.len());
        let end = (start + max).min(entries.len());
        let mut done = false;
        let events = entries[start..end]
            .iter()
            .enumerate()
            .map(|(k, e)| {
                done |= matches!(e.update, Some(Update::Finished { .. }));
                self.to_wire(self.base + (start + k + 1) as u64, e)
            })
            .collect();
        (events, done)
    }

    fn id(&self, subtask: swarm_core::SubtaskIx) -> String {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subtask.index())
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    fn to_wire(&self, seq: u64, e: &LogEntry) -> pb::RunEvent {
        let event = match &e.update {
            None => Event::RunStarted(pb::RunStarted { name: self.name.clone(), total_subtasks: self.total }),
            Some(Update::Started { subtask, attempt, worker, .. }) => Event::SubtaskStarted(pb::SubtaskStarted {
                subtask_id: self.id(*subtask),
                attempt: attempt.0,
                worker_id: worker.to_string(),
            }),
            Some(Update::Succeeded { subtask, attempt, duration_us: d }) => {
                Event::SubtaskSucceeded(pb::SubtaskSucceeded {
                    subtask_id: self.id(*subtask),
                    attempt: attempt.0,
                    duration: Some(duration_us(*d)),
                })
            }
            Some(Update::Failed { subtask, attempt, kind, message, retry_in_us }) => {
                Event::SubtaskFailed(pb::SubtaskFailed {
                    subtask_id: self.id(*subtask),
                    attempt: attempt.0,
                    kind: pb::FailureKind::from(*kind).into(),
                    message: message.clone(),
                    retry_in: retry_in_us.map(duration_us),
                })
            }
            Some(Update::Skipped { subtask, because }) => {
                Event::SubtaskSkipped(pb::SubtaskSkipped { subtask_id: self.id(*subtask), because: self.id(*because) })
            }
            Some(Update::Step { subtask, steps, tool_calls }) => Event::AgentStep(pb::AgentStep {
                subtask_id: self.id(*subtask),
                steps: *steps,
                tool_calls: *tool_calls,
                critical_steps: e.live.map_or(0, |l| l.0),
                total_steps: e.live.map_or(0, |l| l.1),
            }),
            Some(Update::Spawned { subtask, stage, children, refused }) => Event::StageStarted(pb::StageStarted {
                subtask_id: self.id(*subtask),
                stage: *stage,
                subagent_ids: children.iter().map(|&c| self.id(c)).collect(),
                refused: *refused,
            }),
            Some(Update::Speculated { subtask, worker, after_us }) => Event::Speculated(pb::Speculated {
                subtask_id: self.id(*subtask),
                worker_id: worker.to_string(),
                after: Some(duration_us(*after_us)),
            }),
            Some(Update::BudgetExceeded { what }) => Event::BudgetExceeded(pb::BudgetExceeded { what: what.clone() }),
            Some(Update::Warning { subtask, message }) => {
                Event::Warning(pb::Warning { subtask_id: self.id(*subtask), message: message.clone() })
            }
            Some(Update::Finished { state }) => Event::RunFinished(pb::RunFinished {
                state: pb::RunState::from(*state).into(),
                summary: e.summary.as_deref().map(pb::RunSummary::from),
            }),
        };
        pb::RunEvent { run_id: self.run_id.to_string(), seq, time: Some(timestamp(e.time_us)), event: Some(event) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_core::{RunSpec, SubtaskIx, SubtaskSpec};

    #[test]
    fn a_full_log_keeps_one_warning_and_the_final_event() {
        let spec = RunSpec::new("t", vec![SubtaskSpec::tool("a", "echo", serde_json::json!({}))]);
        let dag = Dag::build(&spec, &swarm_core::Limits::default()).expect("valid");
        let log = EventLog::new(RunId::from("r"), &dag, 0, 3);
        let step = |t| LogEntry {
            time_us: t,
            update: Some(Update::Step { subtask: SubtaskIx(0), steps: 1, tool_calls: 1 }),
            summary: None,
            live: None,
        };
        for t in 1..=10 {
            log.append(step(t));
        }
        let finished = Update::Finished { state: swarm_core::RunState::Succeeded };
        log.append(LogEntry { time_us: 11, update: Some(finished), summary: None, live: None });
        assert_eq!(log.dropped(), 8, "two steps fit after the start");
        let (events, done) = log.read(0, 100);
        assert!(done);
        assert_eq!(events.len(), 5, "start, two steps, the warning, the end");
        let Some(pb::run_event::Event::Warning(w)) = &events[3].event else { panic!("{:?}", events[3]) };
        assert!(w.message.contains("event log is full (3 events"), "{}", w.message);
        assert!(w.subtask_id.is_empty(), "a run-level warning");
        assert!(matches!(events[4].event, Some(pb::run_event::Event::RunFinished(_))));
    }
}
