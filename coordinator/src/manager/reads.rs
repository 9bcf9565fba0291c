//! `GetRun` tells only what is durable: an answer that shows results (or the run's end) whose
//! records are still on their way to the store waits until the outbox has written them. A
//! client that reads a run as ended, then reads it again through the next leader after a
//! failover, sees the same results (read-your-writes across failover); a leader that dies
//! before the write sends no answer, and the client asks the next one.

use swarm_core::RunId;
use tokio::sync::oneshot;

use super::{Listed, Manager, Page, RunPage};

/// Where a `GetRun` answer goes.
pub(super) type GetReply = oneshot::Sender<Option<RunPage>>;

impl Manager {
    /// `Command::Get`: answered now, or once the writes it shows are durable.
    pub(super) fn get_command(&mut self, run_id: RunId, page: Option<Page>, reply: GetReply) {
        let answer = self.page_by_id(&run_id, page);
        match self.durable_mark(&run_id) {
            Some(mark) if mark > self.outbox.settled() => self.read_replies.push((mark, reply, answer)),
            _ => {
                let _ = reply.send(answer);
            }
        }
    }

    /// The outbox mark of the last write a view of `run_id` may show (its results, spawns and,
    /// once it ended, its final header); `None`: nothing of it is in flight.
    fn durable_mark(&self, run_id: &RunId) -> Option<u64> {
        let Some(Listed::Live(key)) = self.listing.get(run_id) else { return None };
        let ended = self.ended.iter().filter(|(k, _)| k == key).map(|&(_, mark)| mark).max();
        let written = self.runs.get(key).and_then(|e| e.unsettled.last_mark());
        ended.max(written)
    }

    /// Whether an answer waits for the outbox.
    pub(super) fn waits_for_writes(&self) -> bool {
        !self.awaiting_writes.is_empty() || !self.signal_replies.is_empty() || !self.read_replies.is_empty()
    }

    /// Sends the `GetRun` answers whose writes the outbox has settled.
    pub(super) fn answer_reads(&mut self) {
        if self.read_replies.is_empty() {
            return;
        }
        let settled = self.outbox.settled();
        let (due, wait): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.read_replies).into_iter().partition(|(mark, _, _)| *mark <= settled);
        self.read_replies = wait;
        for (_, reply, answer) in due {
            let _ = reply.send(answer);
        }
    }
}
