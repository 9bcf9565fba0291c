//! Per-run event logs: the source of `WatchRun` streams.
//!
//! The run manager appends compact domain events; each watcher reads the log from its own
//! cursor and converts to wire events itself, so a slow watcher costs the manager nothing and a
//! reconnecting watcher resumes from any `after_seq` without gaps or duplicates.
//!
//! Logs are durable: the outbox writes each run's new events to the store after the records of
//! the same turn (`{prefix}events/{run}/{first seq}`), and watchers see an event only once it is
//! written. A leader that takes over reads the log back and goes on numbering after it, so a
//! watcher resumes on the new leader from the seq it saw last, with nothing missing or repeated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
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

/// Most bytes of encoded events in one stored chunk (well under etcd's request limit).
const CHUNK_BYTES: usize = 256 << 10;

/// The ordered events of one run. Seq numbers start at 1.
///
/// Events come in two parts: `stored`, events read back from the store (wire form, ascending
/// seq), then `entries`, appended in this term: entry `k` has seq `base + k + 1`.
pub struct EventLog {
    run_id: RunId,
    name: String,
    /// Subtask ids by index; grows as orchestrators spawn subagents.
    ids: Mutex<Vec<Arc<str>>>,
    total: u32,
    stored: Vec<pb::RunEvent>,
    entries: Mutex<Vec<LogEntry>>,
    /// The seq of the latest event watchers may see: the latest one written to the store.
    last_seq: watch::Sender<u64>,
    /// The seq up to which events were handed to the store writer.
    saved: Mutex<u64>,
    /// Events were appended since the manager last handed the log to the outbox.
    dirty: AtomicBool,
    /// The most entries kept; later progress events are counted in `dropped`.
    max_entries: usize,
    dropped: std::sync::atomic::AtomicU64,
    base: u64,
    /// The seq of the final event, once appended.
    final_seq: Mutex<Option<u64>>,
    /// Agents' partial output (not stored; see [`crate::output`]).
    output: crate::output::OutputRing,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("run_id", &self.run_id).field("last_seq", &self.last_seq()).finish()
    }
}

impl EventLog {
    fn empty(run_id: RunId, name: String, total: u32, stored: Vec<pb::RunEvent>, max_entries: usize) -> Self {
        let base = stored.last().map_or(0, |e| e.seq);
        let final_seq = stored.last().filter(|e| matches!(e.event, Some(Event::RunFinished(_)))).map(|e| e.seq);
        Self {
            run_id,
            name,
            ids: Mutex::new(Vec::new()),
            total,
            entries: Mutex::new(Vec::new()),
            last_seq: watch::Sender::new(base),
            saved: Mutex::new(base),
            dirty: AtomicBool::new(false),
            max_entries: max_entries.saturating_sub(stored.len()).max(2),
            dropped: Default::default(),
            base,
            final_seq: Mutex::new(final_seq),
            stored,
            // A new epoch per leader term: the log is built again by each leader.
            output: crate::output::OutputRing::new(crate::clock::unix_now_us()),
        }
    }

    /// A log whose first event says the run started, keeping at most `max_entries` events
    /// (and the final one, always).
    pub fn new(run_id: RunId, dag: &Dag, time_us: u64, max_entries: usize) -> Arc<Self> {
        let log = Arc::new(Self::empty(run_id, dag.name().to_owned(), dag.len() as u32, Vec::new(), max_entries));
        log.sync_ids(dag);
        log.append(LogEntry { time_us, update: None, summary: None, live: None });
        log
    }

    /// The log of a resumed run: the events `stored` by earlier leaders (see [`decode_chunk`]),
    /// numbered on after them. With nothing stored, it starts with a run-started event.
    pub fn resume(run_id: RunId, dag: &Dag, stored: Vec<pb::RunEvent>, time_us: u64, max_entries: usize) -> Arc<Self> {
        if stored.is_empty() {
            return Self::new(run_id, dag, time_us, max_entries);
        }
        let stored = with_run_id(stored, &run_id);
        let log = Arc::new(Self::empty(run_id, dag.name().to_owned(), dag.len() as u32, stored, max_entries));
        log.sync_ids(dag);
        log
    }

    /// The log of a run that ended, read back from the store: its stored events, ending with
    /// the final one (made from `header` if it was not written).
    pub fn stored_ended(header: &swarm_store::repo::RunHeader, stored: Vec<pb::RunEvent>) -> Arc<Self> {
        if stored.is_empty() {
            return Self::ended(header);
        }
        let mut stored = with_run_id(stored, &header.run_id);
        let last = stored.last().map_or(0, |e| e.seq);
        if !matches!(stored.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_))) {
            stored.push(pb::RunEvent {
                run_id: header.run_id.to_string(),
                seq: header.last_seq.max(last + 1),
                time: Some(timestamp(header.finished_us.unwrap_or(header.submitted_us))),
                event: Some(Event::RunFinished(pb::RunFinished {
                    state: pb::RunState::from(header.state).into(),
                    summary: header.summary.as_ref().map(pb::RunSummary::from),
                })),
            });
        }
        let total = header.summary.as_ref().map_or(0, |s| s.total_subtasks);
        Arc::new(Self::empty(header.run_id.clone(), header.name.clone(), total, stored, 1))
    }

    /// The log of a run whose events are no longer kept: its final event only, with the seq it
    /// had (`header.last_seq`), so watchers resuming after an earlier seq end cleanly.
    pub fn ended(header: &swarm_store::repo::RunHeader) -> Arc<Self> {
        let last = header.last_seq.max(1);
        let event = pb::RunEvent {
            run_id: header.run_id.to_string(),
            seq: last,
            time: Some(timestamp(header.finished_us.unwrap_or(header.submitted_us))),
            event: Some(Event::RunFinished(pb::RunFinished {
                state: pb::RunState::from(header.state).into(),
                summary: header.summary.as_ref().map(pb::RunSummary::from),
            })),
        };
        let total = header.summary.as_ref().map_or(0, |s| s.total_subtasks);
        Arc::new(Self::empty(header.run_id.clone(), header.name.clone(), total, vec![event], 1))
    }

    /// The run this log is of.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The events read back from the store, for a resumed run's bookkeeping.
    pub fn stored(&self) -> &[pb::RunEvent] {
        &self.stored
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

    /// Appends an event. Watchers see it once it is written (see [`EventLog::publish`]).
    /// Returns `true` if the log had nothing unsaved before: the caller hands it to the outbox.
    /// A full log keeps only the final event; the first event it cannot keep is replaced by a
    /// warning saying so.
    pub fn append(&self, entry: LogEntry) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let last = matches!(entry.update, Some(Update::Finished { .. }));
        if entries.len() >= self.max_entries && !last {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped > 0 {
                return false;
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
        if last {
            *self.final_seq.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.base + entries.len() as u64);
        }
        !self.dirty.swap(true, Ordering::AcqRel)
    }

    /// The seq of the latest event appended (written or not).
    pub fn appended_seq(&self) -> u64 {
        self.base + self.entries.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    /// Whether events were appended since the log was last handed to the outbox.
    pub fn dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Marks the log handed to the outbox; returns the seq of its latest event, up to which
    /// the store writer is to write it.
    pub fn take_dirty(&self) -> u64 {
        self.dirty.store(false, Ordering::Release);
        self.appended_seq()
    }

    /// The events after the last ones handed over, up to seq `upto`, encoded in chunks of at
    /// most [`CHUNK_BYTES`]: (seq of the chunk's first event, bytes). Called by the store
    /// writer only, in order.
    pub fn encode_unsaved(&self, upto: u64) -> Vec<(u64, Vec<u8>)> {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if upto <= *saved {
            return Vec::new();
        }
        let (events, _) = self.read_upto(*saved, upto, usize::MAX);
        *saved = upto;
        let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
        for mut event in events {
            event.run_id.clear(); // the key names the run
            let len = event.encoded_len();
            match chunks.last_mut() {
                Some((_, buf)) if buf.len() + len < CHUNK_BYTES => {
                    let _ = event.encode_length_delimited(buf);
                }
                _ => {
                    let mut buf = Vec::with_capacity(len.min(CHUNK_BYTES) + 8);
                    let _ = event.encode_length_delimited(&mut buf);
                    chunks.push((event.seq, buf));
                }
            }
        }
        chunks
    }

    /// Events up to `seq` are written: watchers may see them.
    pub fn publish(&self, seq: u64) {
        self.last_seq.send_if_modified(|last| {
            let newer = seq > *last;
            if newer {
                *last = seq;
            }
            newer
        });
    }

    /// Progress events not kept because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Agents' partial output (not stored).
    pub fn output(&self) -> &crate::output::OutputRing {
        &self.output
    }

    /// The seq of the latest event.
    pub fn last_seq(&self) -> u64 {
        *self.last_seq.borrow()
    }

    /// A receiver that changes whenever an event is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Whether the run's final event is visible and no later than `seq`: a watcher at `seq`
    /// has seen everything there is.
    pub fn ended_by(&self, seq: u64) -> bool {
        let last = self.last_seq();
        self.final_seq.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|f| f <= last && f <= seq)
    }

    /// Up to `max` visible wire events with seq > `after`, and whether the last of them ends
    /// the run.
    pub fn read(&self, after: u64, max: usize) -> (Vec<pb::RunEvent>, bool) {
        self.read_upto(after, self.last_seq(), max)
    }

    fn read_upto(&self, after: u64, upto: u64, max: usize) -> (Vec<pb::RunEvent>, bool) {
        let mut out = Vec::new();
        let from = self.stored.partition_point(|e| e.seq <= after);
        out.extend(self.stored[from..].iter().take_while(|e| e.seq <= upto).take(max).cloned());
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(after.saturating_sub(self.base)).unwrap_or(usize::MAX).min(entries.len());
        let end = usize::try_from(upto.saturating_sub(self.base)).unwrap_or(usize::MAX).min(entries.len());
        let room = max.saturating_sub(out.len());
        if start < end && room > 0 {
            let end = end.min(start.saturating_add(room));
            out.extend(
                entries[start..end]
                    .iter()
                    .enumerate()
                    .map(|(k, e)| self.to_wire(self.base + (start + k + 1) as u64, e)),
            );
        }
        let done = matches!(out.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)));
        (out, done)
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
            Some(Update::ApprovalRequested { subtask, prompt, deadline_us, on_timeout }) => {
                Event::ApprovalRequested(pb::ApprovalRequested {
                    subtask_id: self.id(*subtask),
                    prompt: prompt.clone(),
                    deadline: deadline_us.map(timestamp),
                    on_timeout: match on_timeout {
                        swarm_core::spec::OnTimeout::Approve => pb::Decision::Approve,
                        swarm_core::spec::OnTimeout::Reject => pb::Decision::Reject,
                    }
                    .into(),
                })
            }
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

/// Decodes one stored chunk (see [`EventLog::encode_unsaved`]).
pub fn decode_chunk(mut bytes: &[u8]) -> Result<Vec<pb::RunEvent>, prost::DecodeError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(pb::RunEvent::decode_length_delimited(&mut bytes)?);
    }
    Ok(out)
}

fn with_run_id(mut events: Vec<pb::RunEvent>, run_id: &RunId) -> Vec<pb::RunEvent> {
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    for e in &mut events {
        e.run_id = run_id.to_string();
    }
    events
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
        assert_eq!(log.read(0, 100).0.len(), 0, "nothing is visible before it is written");
        let upto = log.take_dirty();
        let chunks = log.encode_unsaved(upto);
        log.publish(upto);
        let (events, done) = log.read(0, 100);
        assert!(done);
        assert_eq!(events.len(), 5, "start, two steps, the warning, the end");
        let Some(pb::run_event::Event::Warning(w)) = &events[3].event else { panic!("{:?}", events[3]) };
        assert!(w.message.contains("event log is full (3 events"), "{}", w.message);
        assert!(w.subtask_id.is_empty(), "a run-level warning");
        assert!(matches!(events[4].event, Some(pb::run_event::Event::RunFinished(_))));
        assert!(log.ended_by(5) && !log.ended_by(4));

        // Written and read back, the log is the same, and a resumed log numbers on after it.
        let stored: Vec<_> = chunks.iter().flat_map(|(_, c)| decode_chunk(c).expect("decodes")).collect();
        assert_eq!(chunks[0].0, 1, "a chunk is keyed by its first seq");
        let resumed = EventLog::resume(RunId::from("r"), &dag, stored, 12, 100);
        assert_eq!(resumed.read(0, 100).0, events, "the same events, run ids restored");
        assert!(resumed.append(LogEntry { time_us: 12, update: None, summary: None, live: None }), "now unsaved");
        assert_eq!(resumed.appended_seq(), 6);
        resumed.publish(resumed.take_dirty());
        let (after, _) = resumed.read(4, 100);
        assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    }
}
