//! Straggler speculation: backup attempts, first finisher wins.
//!
//! Siblings are the subtasks at the same depth of the DAG (longest path from a root, in
//! subtasks). Once a share (`quantile`, 0.75) of a depth's tool calls has finished, a running
//! attempt whose elapsed time exceeds `multiplier` (1.5) × their median duration and
//! `min_runtime_ms` is a straggler; the shell starts a backup on another worker
//! ([`EngineEvent::BackupDispatched`](super::EngineEvent)). Whichever attempt finishes first
//! wins; the other is cancelled. A failure of one of the two only drops it: the other runs on.
//! At most `max_fraction` of the run's subtasks are speculated (the hedge budget), and the budget
//! opens with progress (`max_fraction` of the attempts finished or running so far), so early
//! natural slowness cannot use it all up before the real stragglers come; candidates go in order
//! of how far past their threshold they are.

use crate::dag::Work;
use crate::ids::{Fence, SubtaskIx, WorkerId};

use super::{Action, Backup, RunEngine, SubtaskState, Update};

impl RunEngine {
    /// Computes each subtask's depth (after construction).
    pub(super) fn with_depths(mut self) -> Self {
        let n = self.dag.len();
        let mut depth = vec![0u32; n];
        for &i in self.dag.topo_order() {
            depth[i.index()] = self.dag.node(i).deps.iter().map(|&d| depth[d.index()] + 1).max().unwrap_or(0);
        }
        let levels = depth.iter().max().map_or(0, |&m| m as usize + 1);
        let mut totals = vec![0u32; levels];
        for (i, &d) in depth.iter().enumerate() {
            if matches!(self.dag.node(SubtaskIx(i as u32)).work, Work::Tool) {
                totals[d as usize] += 1;
            }
        }
        self.depth = depth;
        self.sibling_totals = totals;
        self.sibling_durations = vec![Vec::new(); levels];
        self
    }

    pub(super) fn record_sibling_duration(&mut self, subtask: SubtaskIx, duration_us: u64) {
        if matches!(self.dag.node(subtask).work, Work::Tool)
            && let Some(&d) = self.depth.get(subtask.index())
            && let Some(list) = self.sibling_durations.get_mut(d as usize)
        {
            // Kept sorted as they arrive, so a median costs nothing when speculation looks.
            let at = list.partition_point(|&x| x <= duration_us);
            list.insert(at, duration_us);
        }
    }

    /// Resolves a report for a subtask that has a backup attempt. Returns false when the event
    /// must be dropped (one of two racing attempts failed; the other runs on).
    pub(super) fn settle_race(
        &mut self,
        subtask: SubtaskIx,
        fence: Fence,
        success: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(subtask.index()) else { return true };
        let Some(backup) = slot.backup.clone() else { return true };
        if fence != slot.fence && fence != backup.fence {
            return true; // stale: the normal checks reject it
        }
        slot.backup = None;
        self.counts.running -= 1; // one of the two attempts is over either way
        let (winner_is_backup, loser) = if fence == backup.fence {
            (true, slot.worker.clone().map(|w| (w, slot.fence)))
        } else {
            (false, Some((backup.worker.clone(), backup.fence)))
        };
        if success {
            if let Some((worker, fence)) = loser {
                out.push(Action::CancelAttempt { worker, fence });
            }
            if winner_is_backup {
                // The original's time before the backup started was lost to a straggler.
                let original = slot.dispatched_us.unwrap_or(backup.dispatched_us);
                slot.timing.straggler_us += backup.dispatched_us.saturating_sub(original);
                slot.fence = backup.fence;
                slot.worker = Some(backup.worker);
                slot.dispatched_us = Some(backup.dispatched_us);
                self.counts.speculative_wins += 1;
            }
            true
        } else {
            if !winner_is_backup {
                // The original failed: the backup carries on as the current attempt, and the
                // original's time before the backup started counts as a failed attempt's.
                let original = slot.dispatched_us.unwrap_or(backup.dispatched_us);
                slot.timing.failed_us += backup.dispatched_us.saturating_sub(original);
                slot.fence = backup.fence;
                slot.worker = Some(backup.worker);
                slot.dispatched_us = Some(backup.dispatched_us);
            }
            false
        }
    }

    pub(super) fn backup_dispatched(
        &mut self,
        subtask: SubtaskIx,
        worker: WorkerId,
        fence: Fence,
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(slot) = self.slots.get_mut(subtask.index()) else { return };
        if slot.state != SubtaskState::Running || slot.backup.is_some() || fence <= slot.fence {
            return;
        }
        let after_us = now_us.saturating_sub(slot.dispatched_us.unwrap_or(now_us));
        slot.backup = Some(Backup { fence, worker: worker.clone(), dispatched_us: now_us });
        self.counts.running += 1;
        self.counts.attempts += 1;
        self.counts.speculative += 1;
        out.push(Action::Publish(Update::Speculated { subtask, worker, after_us }));
    }

    /// Running tool calls that qualify for a backup now, slowest first, within the hedge
    /// budget. `eligible` says whether a subtask's tool may run twice (read-only/idempotent).
    pub fn speculation_candidates(&self, now_us: u64, eligible: impl Fn(SubtaskIx) -> bool) -> Vec<SubtaskIx> {
        let policy = self.dag.speculation();
        if !policy.enabled || self.state.is_terminal() {
            return Vec::new();
        }
        let total_budget = ((self.dag.len() as f64) * policy.max_fraction).ceil() as u32;
        let progress = self.counts.succeeded + self.counts.failed + self.counts.running;
        let budget = total_budget.min(((progress as f64) * policy.max_fraction).ceil() as u32);
        if self.counts.speculative >= budget || self.counts.running == 0 {
            return Vec::new();
        }
        // Durations are kept sorted ([`Self::record_sibling_duration`]): a median is a lookup.
        let thresholds: Vec<Option<u64>> = self
            .sibling_durations
            .iter()
            .zip(&self.sibling_totals)
            .map(|(done, &total)| {
                if total == 0 || (done.len() as f64) < policy.quantile * total as f64 || done.is_empty() {
                    return None;
                }
                let median = done[done.len() / 2];
                Some(((median as f64 * policy.multiplier) as u64).max(policy.min_runtime_ms.saturating_mul(1000)))
            })
            .collect();
        if thresholds.iter().all(Option::is_none) {
            return Vec::new();
        }
        let mut found: Vec<(u64, SubtaskIx)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SubtaskState::Running && s.backup.is_none())
            .filter_map(|(i, s)| {
                let i = SubtaskIx(i as u32);
                let limit = thresholds.get(*self.depth.get(i.index())? as usize).copied().flatten()?;
                let elapsed = now_us.saturating_sub(s.dispatched_us.unwrap_or(now_us));
                // How far past its threshold, in thousandths: the worst stragglers first.
                let overrun = elapsed.saturating_mul(1000) / limit.max(1);
                (elapsed > limit && matches!(self.dag.node(i).work, Work::Tool) && eligible(i)).then_some((overrun, i))
            })
            .collect();
        found.sort_unstable_by_key(|&(overrun, _)| std::cmp::Reverse(overrun));
        found.into_iter().take((budget - self.counts.speculative) as usize).map(|(_, i)| i).collect()
    }
}
