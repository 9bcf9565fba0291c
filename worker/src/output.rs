//! Agents' partial output on its way to the coordinator: model text as it streams and tool
//! calls starting and ending, coalesced per attempt into at most one chunk per
//! [`FLUSH_EVERY`] (plus one when the attempt ends). Best effort: sent on whatever stream is up,
//! dropped when none is (the finished turn is in the transcript anyway; the offsets show gaps).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm_proto::pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The shortest time between two chunks of one attempt.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The most text one chunk carries; more within one interval is cut (the offset counts it).
pub const MAX_CHUNK_TEXT: usize = 32 << 10;

/// The current stream to the coordinator, if any, and whose output is wanted.
#[derive(Default)]
pub struct Uplink {
    out: Mutex<Option<mpsc::Sender<pb::WorkerMessage>>>,
    /// The coordinator says whose output someone follows (`Welcome.output_interest`): output
    /// goes only for those runs. Off (an older coordinator, or no stream yet): for every run.
    gated: AtomicBool,
    /// Per run: whether someone follows its output (shared with its attempts' sinks).
    followed: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uplink")
    }
}

impl Uplink {
    pub(crate) fn set(&self, out: Option<mpsc::Sender<pb::WorkerMessage>>) {
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = out;
    }

    /// Whether the coordinator tells whose output is followed (see [`Uplink::gated`]).
    pub(crate) fn set_gated(&self, gated: bool) {
        self.gated.store(gated, Ordering::SeqCst);
    }

    /// Run `run_id`'s flag: whether someone follows its output.
    pub(crate) fn followed(&self, run_id: &str) -> Arc<AtomicBool> {
        let mut map = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(run_id) {
            // Runs none of whose attempts run here any more are forgotten.
            map.retain(|_, flag| Arc::strong_count(flag) > 1);
        }
        map.entry(run_id.to_owned()).or_default().clone()
    }

    /// Someone follows run `run_id`'s output now, or nobody does.
    pub(crate) fn set_followed(&self, run_id: &str, followed: bool) {
        self.followed(run_id).store(followed, Ordering::SeqCst);
    }

    fn try_send(&self, msg: pb::WorkerMessage) {
        if let Some(out) = &*self.out.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = out.try_send(msg);
        }
    }
}

/// Chunks in one flush at most: beyond, what comes is merged into the last one (its order
/// within the chunk then follows the chunk's: finished tools, text, started tools).
pub const MAX_CHUNKS_PER_FLUSH: usize = 4;

/// Where an item goes in a chunk's order: finished tools, text, started tools.
fn phase(c: &pb::AgentOutput) -> u8 {
    if !c.tools_started.is_empty() {
        2
    } else if !c.text.is_empty() || !c.reasoning.is_empty() {
        1
    } else {
        0
    }
}

#[derive(Default)]
struct Pending {
    chunks: Vec<pb::AgentOutput>,
    turn: u32,
    /// Bytes of text this attempt produced so far.
    offset: u64,
    last_flush: Option<Instant>,
    scheduled: bool,
}

/// One agent attempt's partial output.
pub struct OutputSink {
    fence: u64,
    attempt: u32,
    uplink: Arc<Uplink>,
    /// Whether someone follows the run's output (when the coordinator gates it).
    followed: Arc<AtomicBool>,
    pending: Mutex<Pending>,
}

fn push_cut(into: &mut String, text: &str) {
    let room = MAX_CHUNK_TEXT.saturating_sub(into.len());
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    into.push_str(&text[..end]);
}

impl OutputSink {
    /// The sink of attempt `attempt` (`fence`) of run `run_id`.
    pub fn new(fence: u64, attempt: u32, run_id: &str, uplink: Arc<Uplink>) -> Arc<Self> {
        let followed = uplink.followed(run_id);
        Arc::new(Self { fence, attempt, uplink, followed, pending: Mutex::default() })
    }

    /// Adds to the pending chunk an item of `item_phase`; one that would come before what the
    /// chunk holds starts a new chunk, so a chunk's fixed order stays the order things happened.
    fn with(self: &Arc<Self>, item_phase: u8, f: impl FnOnce(&mut pb::AgentOutput, &mut u64)) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (turn, attempt, offset) = (p.turn, self.attempt, p.offset);
            let fits = p.chunks.last().is_some_and(|c| phase(c) <= item_phase);
            if !fits && p.chunks.len() < MAX_CHUNKS_PER_FLUSH {
                p.chunks.push(pb::AgentOutput { attempt, turn, offset, ..Default::default() });
            }
            let mut offset_now = offset;
            if let Some(chunk) = p.chunks.last_mut() {
                chunk.turn = turn;
                f(chunk, &mut offset_now);
            }
            p.offset = offset_now;
        }
        self.maybe_flush();
    }

    /// The model call of this turn starts.
    pub fn turn(&self, turn: u32) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).turn = turn;
    }

    /// Model output (and reasoning) text.
    pub fn text(self: &Arc<Self>, text: &str, reasoning: &str) {
        if text.is_empty() && reasoning.is_empty() {
            return;
        }
        self.with(1, |c, offset| {
            push_cut(&mut c.text, text);
            push_cut(&mut c.reasoning, reasoning);
            *offset += text.len() as u64;
        });
    }

    /// A tool call starts.
    pub fn tool_started(self: &Arc<Self>, tool: &str) {
        self.with(2, |c, _| c.tools_started.push(tool.to_owned()));
    }

    /// A tool call ended.
    pub fn tool_finished(self: &Arc<Self>, tool: &str, failed: bool) {
        self.with(0, |c, _| c.tools_finished.push(pb::ToolFinished { tool: tool.to_owned(), failed }));
    }

    fn maybe_flush(self: &Arc<Self>) {
        let wait = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let due = p.last_flush.map_or(Instant::now(), |t| t + FLUSH_EVERY);
            if due <= Instant::now() {
                None
            } else if p.scheduled {
                return;
            } else {
                p.scheduled = true;
                Some(due)
            }
        };
        match wait {
            None => self.flush(),
            Some(due) => {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    me.flush();
                });
            }
        }
    }

    /// Sends what is pending now (also when the attempt ends); drops it when nobody follows the
    /// run's output (the offsets still count it: a watcher who comes later sees the gap).
    pub fn flush(&self) {
        let pending = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.scheduled = false;
            if p.chunks.is_empty() {
                return;
            }
            p.last_flush = Some(Instant::now());
            std::mem::take(&mut p.chunks)
        };
        if self.uplink.gated.load(Ordering::SeqCst) && !self.followed.load(Ordering::SeqCst) {
            return;
        }
        let chunks = pending.into_iter().map(|c| pb::AgentOutputChunk { fence: self.fence, output: Some(c) }).collect();
        self.uplink
            .try_send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Outputs(pb::AgentOutputs { chunks })) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(rx: &mut mpsc::Receiver<pb::WorkerMessage>) -> Vec<pb::AgentOutput> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Some(pb::worker_message::Msg::Outputs(o)) = m.msg {
                out.extend(o.chunks.into_iter().filter_map(|c| c.output));
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_deltas_and_tool_calls_is_coalesced_to_one_chunk_per_interval() {
        let uplink = Arc::new(Uplink::default());
        let (tx, mut rx) = mpsc::channel(64);
        uplink.set(Some(tx));
        let sink = OutputSink::new(9, 2, "r", uplink);
        sink.turn(0);
        for word in ["Hel", "lo", " world"] {
            sink.text(word, "");
        }
        sink.tool_started("echo");
        sink.tool_finished("echo", false);
        sink.turn(1);
        sink.text("!", "hm");
        // The first delta went at once; the rest waits for the interval.
        let first = outputs(&mut rx);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].text.as_str(), first[0].offset, first[0].attempt), ("Hel", 0, 2));
        tokio::time::sleep(FLUSH_EVERY).await;
        tokio::task::yield_now().await;
        let second = outputs(&mut rx);
        // One message for the interval; a new chunk only where order would be lost (the tool
        // finished after it started, and the next turn's text came after that).
        assert_eq!(second.len(), 2, "{second:?}");
        let (a, b) = (&second[0], &second[1]);
        assert_eq!(
            (a.text.as_str(), a.offset, a.tools_started.as_slice()),
            ("lo world", 3, ["echo".to_owned()].as_slice())
        );
        assert_eq!(b.tools_finished, [pb::ToolFinished { tool: "echo".into(), failed: false }]);
        assert_eq!((b.text.as_str(), b.reasoning.as_str(), b.offset, b.turn), ("!", "hm", 11, 1));
        sink.flush();
        assert!(outputs(&mut rx).is_empty(), "nothing pending, nothing sent");
    }

    #[tokio::test(start_paused = true)]
    async fn output_goes_only_while_someone_follows_the_run_when_the_coordinator_says_so() {
        let uplink = Arc::new(Uplink::default());
        let (tx, mut rx) = mpsc::channel(64);
        uplink.set(Some(tx));
        let sink = OutputSink::new(3, 1, "r1", uplink.clone());
        // An older coordinator (not gated): everything goes.
        sink.text("a", "");
        assert_eq!(outputs(&mut rx).len(), 1);
        // Gated, nobody follows r1: nothing goes, but the offset counts it.
        uplink.set_gated(true);
        tokio::time::sleep(FLUSH_EVERY).await;
        sink.text("bb", "");
        sink.flush();
        assert!(outputs(&mut rx).is_empty(), "unwatched output is not sent");
        // Someone follows r1 (told for the run, not the attempt): it goes again.
        uplink.set_followed("r1", true);
        uplink.set_followed("r2", false);
        tokio::time::sleep(FLUSH_EVERY).await;
        sink.text("c", "");
        let sent = outputs(&mut rx);
        assert_eq!((sent[0].text.as_str(), sent[0].offset), ("c", 3), "the gap shows in the offset");
        uplink.set_followed("r1", false);
        tokio::time::sleep(FLUSH_EVERY).await;
        sink.text("d", "");
        sink.flush();
        assert!(outputs(&mut rx).is_empty());
        // Another run's sink starts with what is known for its run.
        uplink.set_followed("r2", true);
        let other = OutputSink::new(4, 1, "r2", uplink.clone());
        other.text("e", "");
        assert_eq!(outputs(&mut rx).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_text_is_cut_per_chunk_and_counted_in_the_offset() {
        let uplink = Arc::new(Uplink::default());
        let (tx, mut rx) = mpsc::channel(64);
        uplink.set(Some(tx));
        let sink = OutputSink::new(1, 1, "r", uplink);
        sink.text("a", "");
        sink.text(&"é".repeat(100_000), "");
        sink.text("z", "");
        tokio::time::sleep(FLUSH_EVERY).await;
        tokio::task::yield_now().await;
        let chunks = outputs(&mut rx);
        assert!(chunks[1].text.len() <= MAX_CHUNK_TEXT && chunks[1].text.starts_with('é'));
        // A flood of tiny turns: at most MAX_CHUNKS_PER_FLUSH chunks in one interval.
        for _ in 0..100 {
            sink.tool_started("t");
            sink.tool_finished("t", true);
        }
        tokio::time::sleep(FLUSH_EVERY).await;
        tokio::task::yield_now().await;
        let flood = outputs(&mut rx);
        assert!(flood.len() <= MAX_CHUNKS_PER_FLUSH, "{}", flood.len());
        assert_eq!(flood.iter().map(|c| c.tools_finished.len()).sum::<usize>(), 100, "merged, not lost");
        sink.text("next", "");
        tokio::time::sleep(FLUSH_EVERY).await;
        tokio::task::yield_now().await;
        assert_eq!(outputs(&mut rx)[0].offset, 1 + 200_000 + 1, "the offset counts what was cut");
    }
}
