//! Agents' partial output on the leader: a bounded ring per run, numbered within this leader's
//! epoch, read by the watchers that asked for it (`WatchRun.follow_output`).
//!
//! Nothing here is stored: a finished turn is in the transcript, and partial output is for
//! people watching. A watcher resumes after the last `(output_epoch, output_seq)` it saw; a new
//! leader has a new epoch and replays what it holds, which the old one never had (workers send
//! each chunk once, to whoever leads), so nothing is repeated.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use swarm_proto::pb;
use tokio::sync::watch;

/// Chunks kept per run.
pub const RING_CHUNKS: usize = 512;
/// Bytes of text kept per run.
pub const RING_BYTES: usize = 1 << 20;
/// The most text one chunk may carry; a larger one is cut (its offset still says how much
/// there was).
pub const MAX_CHUNK_BYTES: usize = 64 << 10;
/// The most tool names one chunk may list.
pub const MAX_CHUNK_TOOLS: usize = 256;

#[derive(Default)]
struct Ring {
    chunks: VecDeque<pb::AgentOutput>,
    bytes: usize,
    next: u64,
}

/// One run's partial output.
pub struct OutputRing {
    epoch: u64,
    ring: Mutex<Ring>,
    latest: watch::Sender<u64>,
    /// Watchers following it now: workers send a run's output only while there are some.
    followers: AtomicUsize,
}

impl std::fmt::Debug for OutputRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputRing").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

fn cut(text: &mut String) {
    if text.len() > MAX_CHUNK_BYTES {
        let mut end = MAX_CHUNK_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

impl OutputRing {
    /// An empty ring of epoch `epoch` (the leader's term start, µs).
    pub fn new(epoch: u64) -> Self {
        Self { epoch, ring: Mutex::default(), latest: watch::Sender::new(0), followers: AtomicUsize::new(0) }
    }

    /// A watcher follows the output from now on; true when it is the first.
    pub fn follow(&self) -> bool {
        self.followers.fetch_add(1, Ordering::SeqCst) == 0
    }

    /// A watcher stopped following; true when it was the last.
    pub fn unfollow(&self) -> bool {
        self.followers.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Whether anyone follows the output now.
    pub fn followed(&self) -> bool {
        self.followers.load(Ordering::SeqCst) > 0
    }

    /// This leader's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Appends a chunk (numbered here), dropping the oldest beyond the ring's bounds.
    pub fn push(&self, mut chunk: pb::AgentOutput) {
        cut(&mut chunk.text);
        cut(&mut chunk.reasoning);
        chunk.tools_started.truncate(MAX_CHUNK_TOOLS);
        chunk.tools_finished.truncate(MAX_CHUNK_TOOLS);
        let size = |c: &pb::AgentOutput| c.text.len() + c.reasoning.len() + 64;
        let seq = {
            let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            r.next += 1;
            chunk.output_seq = r.next;
            chunk.output_epoch = self.epoch;
            r.bytes += size(&chunk);
            r.chunks.push_back(chunk);
            while r.chunks.len() > RING_CHUNKS || r.bytes > RING_BYTES {
                let Some(old) = r.chunks.pop_front() else { break };
                r.bytes -= size(&old);
            }
            r.next
        };
        self.latest.send_replace(seq);
    }

    /// Chunks after `(epoch, after)`: all it holds for another epoch.
    pub fn read(&self, epoch: u64, after: u64, max: usize) -> Vec<pb::AgentOutput> {
        let after = if epoch == self.epoch { after } else { 0 };
        let r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        r.chunks.iter().filter(|c| c.output_seq > after).take(max).cloned().collect()
    }

    /// Changes as they happen (the latest output_seq).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> pb::AgentOutput {
        pb::AgentOutput { subtask_id: "a".into(), text: text.into(), ..Default::default() }
    }

    #[test]
    fn a_watcher_resumes_after_what_it_saw_and_a_new_epoch_replays_the_ring() {
        let ring = OutputRing::new(7);
        for t in ["a", "b", "c"] {
            ring.push(chunk(t));
        }
        let texts = |v: Vec<pb::AgentOutput>| v.into_iter().map(|c| c.text).collect::<Vec<_>>();
        assert_eq!(texts(ring.read(7, 1, 10)), ["b", "c"]);
        assert_eq!(texts(ring.read(7, 3, 10)), Vec::<String>::new());
        assert_eq!(texts(ring.read(6, 3, 10)), ["a", "b", "c"], "an older leader's cursor means nothing here");
        assert!(ring.read(7, 0, 10).iter().all(|c| c.output_epoch == 7));
    }

    #[test]
    fn followers_are_counted_and_the_first_and_last_are_told() {
        let ring = OutputRing::new(1);
        assert!(!ring.followed());
        assert!(ring.follow(), "the first");
        assert!(!ring.follow());
        assert!(!ring.unfollow());
        assert!(ring.followed());
        assert!(ring.unfollow(), "the last");
        assert!(!ring.followed());
    }

    #[test]
    fn the_ring_is_bounded_in_chunks_and_bytes_and_a_huge_chunk_is_cut() {
        let ring = OutputRing::new(1);
        for _ in 0..RING_CHUNKS + 10 {
            ring.push(chunk("x"));
        }
        let held = ring.read(1, 0, usize::MAX);
        assert_eq!(held.len(), RING_CHUNKS);
        assert_eq!(held[0].output_seq, 11, "the oldest went first");
        // A worker sending 10 MB of multi-byte text in one chunk: cut on a character boundary.
        ring.push(chunk(&"é".repeat(5_000_000)));
        let last = ring.read(1, 0, usize::MAX).pop().expect("kept");
        assert!(last.text.len() <= MAX_CHUNK_BYTES && last.text.chars().all(|c| c == 'é'));
        let total: usize = ring.read(1, 0, usize::MAX).iter().map(|c| c.text.len()).sum();
        assert!(total <= RING_BYTES);
    }
}
