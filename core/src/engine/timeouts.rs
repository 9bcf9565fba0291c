//! Waiting-time rules: a subtask that waits too long to start fails, saying why — past the
//! run's schedule-to-start limit, or past the coordinator's limit when no connected worker
//! offers what it needs. Its dependents are skipped.

use super::RunEngine;
use super::types::{Action, Failure, SubtaskState, Update};
use crate::error::FailureKind;
use crate::ids::SubtaskIx;

impl RunEngine {
    /// Fails subtasks that have waited to start longer than the run's schedule-to-start limit
    /// (for example because no connected worker offers their tool). Waiting is observed at each
    /// call, so the precision is the caller's period.
    pub fn expire_unscheduled(&mut self, now_us: u64, out: &mut Vec<Action>) {
        let limit_ms = self.dag.schedule_to_start_ms();
        if limit_ms == 0 || self.state.is_terminal() {
            return;
        }
        let mut expired = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.state != SubtaskState::Ready {
                continue;
            }
            match slot.ready_since_us {
                None => slot.ready_since_us = Some(now_us),
                Some(since) if now_us.saturating_sub(since) > limit_ms.saturating_mul(1000) => {
                    expired.push(SubtaskIx(i as u32));
                }
                Some(_) => {}
            }
        }
        for subtask in expired {
            let message = format!("not started within {limit_ms} ms (schedule-to-start)");
            self.fail_unstarted(subtask, FailureKind::Timeout, message, out);
        }
        self.check_finished(now_us, out);
    }

    /// Fails a ready subtask that no connected worker can run (its tool or model is offered by
    /// none) once it has waited `limit_us` since it became ready; returns whether it failed.
    /// The coordinator calls this for the subtasks it parked for want of a worker.
    pub fn expire_unplaceable(
        &mut self,
        subtask: SubtaskIx,
        limit_us: u64,
        reason: &str,
        now_us: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(slot) = self.slots.get(subtask.index()) else { return false };
        let Some(since) =
            slot.ready_since_us.filter(|_| !self.state.is_terminal() && slot.state == SubtaskState::Ready)
        else {
            return false;
        };
        let waited_us = now_us.saturating_sub(since);
        if waited_us <= limit_us {
            return false;
        }
        let message = format!("{reason} (waited {} s for one)", waited_us / 1_000_000);
        self.fail_unstarted(subtask, FailureKind::Permanent, message, out);
        self.check_finished(now_us, out);
        true
    }

    /// Fails a subtask that never started its current wait; its dependents are skipped.
    fn fail_unstarted(&mut self, subtask: SubtaskIx, kind: FailureKind, message: String, out: &mut Vec<Action>) {
        let slot = &mut self.slots[subtask.index()];
        slot.state = SubtaskState::Failed;
        slot.error = Some(Failure { kind, message: message.clone() });
        let attempt = slot.attempt;
        self.counts.failed += 1;
        self.counts.open -= 1;
        out.push(Action::Publish(Update::Failed { subtask, attempt, kind, message, retry_in_us: None }));
        out.push(self.persist(subtask));
        self.skip_dependents(subtask, out);
    }
}
