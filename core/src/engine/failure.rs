//! A running attempt that failed: retried after its policy's backoff, at once (a lost worker),
//! or failed for good (its dependents skipped); a subtask that failed on too many workers is
//! quarantined.

use super::*;

impl RunEngine {
    /// A running attempt ended in failure (already taken out of `running`).
    pub(super) fn failed(
        &mut self,
        subtask: SubtaskIx,
        kind: FailureKind,
        mut message: String,
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        let policy = match &self.dag.node(subtask).retry {
            Some(spec) => spec.resolve(&self.policy),
            None => self.policy.clone(),
        };
        let slot = &mut self.slots[subtask.index()];
        let attempt = slot.attempt;
        // Poison: a subtask that failed (or lost its worker) on POISON_WORKERS distinct workers
        // is quarantined instead of being tried on yet another one.
        if kind.is_retryable()
            && let Some(w) = &slot.worker
            && !slot.failed_on.contains(w)
        {
            slot.failed_on.push(w.clone());
        }
        let poisoned = slot.failed_on.len() >= POISON_WORKERS;
        if poisoned && kind.is_retryable() {
            message = format!("quarantined after failing on {POISON_WORKERS} distinct workers; last: {message}");
        }
        let retry_in_us = if kind.is_retryable()
            && !poisoned
            && !policy.non_retryable.contains(&kind)
            && policy.allows_another(attempt.0)
        {
            Some(if kind == FailureKind::WorkerLost {
                0
            } else {
                policy.delay(attempt.0.saturating_add(1), &mut self.rng).as_micros() as u64
            })
        } else {
            None
        };
        slot.error = Some(Failure { kind, message: message.clone() });
        if let Some(dispatched) = slot.dispatched_us {
            slot.timing.failed_us += now_us.saturating_sub(dispatched);
        }
        out.push(Action::Publish(Update::Failed { subtask, attempt, kind, message, retry_in_us }));
        match retry_in_us {
            Some(0) => {
                slot.state = SubtaskState::Ready;
                slot.ready_since_us = Some(now_us);
                self.ready.push_back(subtask);
            }
            Some(delay) => {
                slot.state = SubtaskState::Backoff;
                slot.timing.backoff_since_us = Some(now_us);
                out.push(Action::ArmTimer { subtask, at_us: now_us + delay });
            }
            None => {
                slot.state = SubtaskState::Failed;
                slot.timing.done_us = Some(now_us);
                slot.timing.final_dispatched_us = None;
                if self.dag.node(subtask).parent.is_some() {
                    self.counts.child_failed += 1;
                } else {
                    self.counts.failed += 1;
                }
                self.counts.open -= 1;
                out.push(self.persist(subtask));
                self.child_ended(subtask);
                self.skip_dependents(subtask, out);
                self.check_finished(now_us, out);
            }
        }
    }
}
