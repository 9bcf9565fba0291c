//! Ending a run early (cancelled, or out of budget): what ran reads CANCELLED with its
//! attempts, what never started SKIPPED, saying why.

use super::*;

impl RunEngine {
    /// Ends the run as `state` (cancelled, or out of budget): attempts under way are told to
    /// stop; what had attempts reads CANCELLED with them (its record stored, an event said), and
    /// what never started reads SKIPPED, saying why (see [`RunEngine::skip_unstarted`]).
    pub(super) fn cancel(&mut self, state: RunState, now_us: u64, out: &mut Vec<Action>) {
        let why = match state {
            RunState::BudgetExceeded => "the run's budget ran out",
            _ => "the run was cancelled",
        };
        let mut ended = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.state == SubtaskState::Running
                && let Some(worker) = &slot.worker
            {
                out.push(Action::CancelAttempt { worker: worker.clone(), fence: slot.fence });
            }
            for b in slot.backups.drain(..) {
                out.push(Action::CancelAttempt { worker: b.worker, fence: b.fence });
            }
            let had_attempts = slot.attempt.0 > 0 || slot.state == SubtaskState::Waiting;
            if slot.state.is_terminal() || !had_attempts {
                continue;
            }
            if slot.state == SubtaskState::Running {
                let started = slot.dispatched_us.unwrap_or(now_us);
                let is_tool = matches!(self.dag.node(SubtaskIx(i as u32)).work, Work::Tool);
                slot.attempt_ended(started, now_us, is_tool);
            }
            let message = match slot.state {
                SubtaskState::Running => format!("{why} while attempt {} ran", slot.attempt.0),
                SubtaskState::Waiting => format!("{why} while it waited for a decision"),
                _ => format!("{why} after {} attempts", slot.attempt.0),
            };
            slot.state = SubtaskState::Cancelled;
            slot.error = Some(Failure { kind: FailureKind::Cancelled, message });
            ended.push(SubtaskIx(i as u32));
        }
        for i in ended {
            let (attempt, message) = {
                let slot = &self.slots[i.index()];
                (slot.attempt, slot.error.as_ref().map(|e| e.message.clone()).unwrap_or_default())
            };
            out.push(self.persist(i));
            out.push(Action::Publish(Update::Failed {
                subtask: i,
                attempt,
                kind: FailureKind::Cancelled,
                message,
                retry_in_us: None,
            }));
        }
        self.skip_unstarted(state);
        self.ready.clear();
        self.counts.running = 0;
        self.counts.open = 0;
        self.finish(state, now_us, out);
    }

    /// Every subtask that never started reads SKIPPED, saying the run ended as `state` before
    /// it did: kept in memory only (one record per subtask of a large run would be a write
    /// storm), and said again the same way when an ended run is rebuilt from its records.
    pub fn skip_unstarted(&mut self, state: RunState) {
        let message = match state {
            RunState::BudgetExceeded => "not started: the run's budget ran out",
            RunState::Cancelled => "not started: the run was cancelled",
            _ => return,
        };
        for slot in &mut self.slots {
            if !slot.state.is_terminal() {
                slot.state = SubtaskState::Skipped;
                slot.error = Some(Failure { kind: FailureKind::Cancelled, message: message.to_owned() });
                self.counts.skipped += 1;
            }
        }
    }
}
