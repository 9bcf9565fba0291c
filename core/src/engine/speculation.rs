//! Straggler speculation: backup attempts, first finisher wins.
//!
//! **Who is a straggler.** Each tool has a latency model: the sorted durations of its calls that
//! finished in this run. Once enough of them have (`quantile` of the tool's calls, at most
//! [`MIN_SAMPLES`]), a running attempt of that tool whose elapsed time, from *its own* dispatch
//! (a retried attempt starts its clock again), exceeds `multiplier` × the tool's median (and
//! `min_runtime_ms`) is late.
//!
//! **Which late attempts matter.** Only those whose chain may decide the run's end: the engine
//! projects each running or ready subtask's end of chain (its start, the larger of its elapsed
//! time and its tool's median, then the estimated path after it, as the ready queue ranks
//! subtasks) and hedges a late attempt only when its projection comes within one median of the
//! latest projection; the most critical go first. A late call on a chain with slack is left
//! alone until its lateness eats the slack, so natural slowness spends little of the budget.
//!
//! **What a backup may take.** Backups go only into slots left free after dispatch, and a ready
//! primary attempt that finds no free slot preempts a backup
//! ([`EngineEvent::BackupPreempted`](super::EngineEvent)): a backup never delays real work.
//! Whichever attempt finishes first wins; the other is cancelled. A failure of one of the two
//! only drops it: the other runs on, and neither counts as a retry.
//!
//! **How many.** At most `max_fraction` of the run's subtasks, opening with progress, and
//! *earned*: after [`WARMUP_HEDGES`] backups, each further one needs a win ([`HEDGES_PER_WIN`]
//! per win), so speculation that stops winning stops spending. Preempted backups are refunded.

use std::sync::Arc;

use crate::dag::Work;
use crate::ids::{Fence, SubtaskIx, WorkerId};

use super::{Action, Backup, RunEngine, SubtaskState, Update};

/// Samples a tool's latency model needs at most before its thresholds apply.
pub const MIN_SAMPLES: usize = 20;
/// Backups a run may start before its first win.
pub const WARMUP_HEDGES: u32 = 8;
/// Further backups each win earns.
pub const HEDGES_PER_WIN: u32 = 4;

/// One tool's calls in a run, and the sorted durations (µs) of those that finished.
#[derive(Clone, Debug, Default)]
pub(super) struct Latency {
    total: u32,
    done: Vec<u64>,
}

impl Latency {
    /// The median duration (µs) and the lateness threshold, once the model has enough samples.
    fn model_us(&self, policy: &crate::spec::Speculation) -> Option<(u64, u64)> {
        let needed = ((policy.quantile * f64::from(self.total)).ceil() as usize).clamp(1, MIN_SAMPLES);
        if self.done.len() < needed {
            return None;
        }
        let median = self.done[self.done.len() / 2];
        let late = ((median as f64 * policy.multiplier) as u64).max(policy.min_runtime_ms.saturating_mul(1000));
        Some((median, late))
    }
}

impl RunEngine {
    /// Counts each tool's calls (after construction).
    pub(super) fn with_latency_model(mut self) -> Self {
        let mut latency: std::collections::HashMap<Arc<str>, Latency> = Default::default();
        for node in self.dag.nodes() {
            if matches!(node.work, Work::Tool) {
                latency.entry(node.tool.clone()).or_default().total += 1;
            }
        }
        self.latency = latency;
        self
    }

    pub(super) fn record_latency(&mut self, subtask: SubtaskIx, duration_us: u64) {
        let node = self.dag.node(subtask);
        if matches!(node.work, Work::Tool)
            && let Some(model) = self.latency.get_mut(&node.tool)
        {
            // Kept sorted as they arrive, so a quantile costs nothing when speculation looks.
            let at = model.done.partition_point(|&x| x <= duration_us);
            model.done.insert(at, duration_us);
        }
    }

    /// The backups racing now, as (subtask, backup fence), for the shell to preempt.
    pub fn backups(&self) -> impl Iterator<Item = (SubtaskIx, Fence)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.backup.as_ref().map(|b| (SubtaskIx(i as u32), b.fence)))
    }

    /// A ready primary needs backup `fence`'s slot: cancel the backup, refund the budget.
    pub(super) fn backup_preempted(&mut self, subtask: SubtaskIx, fence: Fence, out: &mut Vec<Action>) {
        let Some(slot) = self.slots.get_mut(subtask.index()) else { return };
        if slot.backup.as_ref().is_none_or(|b| b.fence != fence) {
            return;
        }
        let Some(backup) = slot.backup.take() else { return };
        self.counts.running -= 1;
        self.hedges = self.hedges.saturating_sub(1);
        out.push(Action::CancelAttempt { worker: backup.worker, fence: backup.fence });
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
        self.hedges += 1;
        out.push(Action::Publish(Update::Speculated { subtask, worker, after_us }));
    }

    /// Running tool calls that qualify for a backup now, most critical first, within the hedge
    /// budget. `eligible` says whether a subtask's tool may run twice (read-only/idempotent).
    pub fn speculation_candidates(&self, now_us: u64, eligible: impl Fn(SubtaskIx) -> bool) -> Vec<SubtaskIx> {
        let policy = self.dag.speculation();
        if !policy.enabled || self.state.is_terminal() || self.counts.running == 0 {
            return Vec::new();
        }
        let total_budget = ((self.dag.len() as f64) * policy.max_fraction).ceil() as u32;
        let progress = self.counts.succeeded + self.counts.failed + self.counts.running;
        let earned = WARMUP_HEDGES.saturating_add(self.counts.speculative_wins.saturating_mul(HEDGES_PER_WIN));
        let budget = total_budget.min(((progress as f64) * policy.max_fraction).ceil() as u32).min(earned);
        if self.hedges >= budget {
            return Vec::new();
        }
        let models: std::collections::HashMap<&Arc<str>, (u64, u64)> =
            self.latency.iter().filter_map(|(tool, m)| Some((tool, m.model_us(policy)?))).collect();
        if models.is_empty() {
            return Vec::new();
        }
        // The estimated path after a subtask (the ready queue's bottom levels of its dependents).
        let after =
            |i: SubtaskIx| self.dag.node(i).dependents.iter().map(|&d| self.ready.priority_of(d)).max().unwrap_or(0);
        // Each running or ready subtask's projected end of chain; the run ends at the latest.
        let mut latest = 0u64;
        let mut late: Vec<(u64, u64, SubtaskIx)> = Vec::new(); // (projected end, its median, subtask)
        for (i, s) in self.slots.iter().enumerate() {
            let i = SubtaskIx(i as u32);
            let end = match s.state {
                SubtaskState::Ready => now_us.saturating_add(self.ready.priority_of(i)),
                SubtaskState::Running => {
                    let node = self.dag.node(i);
                    let model = models.get(&node.tool).filter(|_| matches!(node.work, Work::Tool));
                    let own = match model {
                        Some(&(median, _)) => median,
                        None => self.ready.priority_of(i).saturating_sub(after(i)),
                    };
                    let started = s.dispatched_us.unwrap_or(now_us);
                    let elapsed = now_us.saturating_sub(started);
                    let end = started.saturating_add(elapsed.max(own)).saturating_add(after(i));
                    if let Some(&(median, threshold)) = model
                        && s.backup.is_none()
                        && elapsed > threshold
                        && eligible(i)
                    {
                        late.push((end, median, i));
                    }
                    end
                }
                _ => continue,
            };
            latest = latest.max(end);
        }
        // Only late calls whose chains may decide the run's end; the most critical first.
        late.retain(|&(end, median, _)| end.saturating_add(median) >= latest);
        late.sort_unstable_by_key(|&(end, _, _)| std::cmp::Reverse(end));
        late.into_iter().take((budget - self.hedges) as usize).map(|(_, _, i)| i).collect()
    }
}
