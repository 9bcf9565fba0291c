//! Straggler speculation: backup attempts, first finisher wins.
//!
//! **Who is a straggler.** Each tool has a latency model: the sorted durations of its calls that
//! finished in this run. Once enough of them have (`quantile` of the tool's calls, at most
//! [`MIN_SAMPLES`]), a running attempt of that tool is late when its elapsed time, from *its
//! own* dispatch (a retried attempt starts its clock again), exceeds the largest of `multiplier`
//! × the median, [`TAIL_MARGIN`] × the 95th percentile, and `min_runtime_ms`. The high quantile
//! keeps natural slowness (a heavy-tailed latency, where a backup of a merely long call cannot
//! win) from passing for straggling. The latest go first, by how far past their threshold they
//! are, so a 10× straggler outranks a call that is merely long.
//!
//! **What a backup may take.** Backups go only into slots left free after dispatch, and a ready
//! primary attempt that finds no free slot preempts a backup
//! ([`EngineEvent::BackupPreempted`](super::EngineEvent)): a backup never delays real work.
//! Whichever attempt finishes first wins; the other is cancelled. A failure of one of the two
//! only drops it: the other runs on, and neither counts as a retry.
//!
//! **How many.** At most `max_fraction` of the run's subtasks running as backups, opening with
//! progress (preempted backups are refunded here), and *earned*: after [`WARMUP_HEDGES`] backups
//! started, each further one needs wins ([`HEDGES_PER_WIN`] per win), so speculation that stops
//! winning stops spending.

use std::sync::Arc;

use crate::dag::Work;
use crate::ids::{Fence, SubtaskIx, WorkerId};

use super::{Action, Backup, RunEngine, SubtaskState, Update};

/// Samples a tool's latency model needs at most before its thresholds apply.
pub const MIN_SAMPLES: usize = 20;
/// A late attempt has run past this many times the tool's 95th-percentile duration (or
/// `multiplier` × its median, whichever is later).
pub const TAIL_MARGIN: f64 = 1.25;
/// Backups a run may start before its first win.
pub const WARMUP_HEDGES: u32 = 16;
/// Further backups each win earns.
pub const HEDGES_PER_WIN: u32 = 8;

/// One tool's calls in a run, and the sorted durations (µs) of those that finished.
#[derive(Clone, Debug, Default)]
pub(super) struct Latency {
    total: u32,
    /// Finished calls seen; `done` holds a uniform sample of at most [`KEPT_SAMPLES`] of them.
    seen: u64,
    done: Vec<u64>,
}

/// Durations kept per tool: quantiles of a uniform sample this size are as good as of all, and
/// keeping it sorted stays cheap in a run of 250,000 calls of one tool.
pub const KEPT_SAMPLES: usize = 2048;

impl Latency {
    /// The lateness threshold (µs), once the model has enough samples.
    fn threshold_us(&self, policy: &crate::spec::Speculation) -> Option<u64> {
        let needed = ((policy.quantile * f64::from(self.total)).ceil() as usize).clamp(1, MIN_SAMPLES);
        if self.done.len() < needed {
            return None;
        }
        let median = self.done[self.done.len() / 2];
        let p95 = self.done[((self.done.len() - 1) as f64 * 0.95).round() as usize];
        let late = ((median as f64 * policy.multiplier) as u64)
            .max((p95 as f64 * TAIL_MARGIN) as u64)
            .max(policy.min_runtime_ms.saturating_mul(1000));
        Some(late)
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
            model.seen += 1;
            if model.done.len() >= KEPT_SAMPLES {
                // Reservoir sampling: the k-th duration replaces a random kept one with
                // probability KEPT_SAMPLES / k.
                if self.rng.u64(..model.seen) >= KEPT_SAMPLES as u64 {
                    return;
                }
                model.done.remove(self.rng.usize(..model.done.len()));
            }
            // Kept sorted as they arrive, so a quantile costs nothing when speculation looks.
            let at = model.done.partition_point(|&x| x <= duration_us);
            model.done.insert(at, duration_us);
        }
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

    /// Running tool calls that qualify for a backup now, the worst first, within the hedge
    /// budget. `eligible` says whether a subtask's tool may run twice (read-only/idempotent).
    pub fn speculation_candidates(&self, now_us: u64, eligible: impl Fn(SubtaskIx) -> bool) -> Vec<SubtaskIx> {
        let policy = self.dag.speculation();
        if !policy.enabled || self.state.is_terminal() || self.counts.running == 0 {
            return Vec::new();
        }
        let total_budget = ((self.dag.len() as f64) * policy.max_fraction).ceil() as u32;
        let progress = self.counts.succeeded + self.counts.failed + self.counts.running;
        // The cap counts backups that ran (preempted ones are refunded); what wins earn counts
        // every backup started, so a run whose backups never win stops, preempted or not.
        let earned = WARMUP_HEDGES.saturating_add(self.counts.speculative_wins.saturating_mul(HEDGES_PER_WIN));
        let cap = total_budget.min(((progress as f64) * policy.max_fraction).ceil() as u32);
        let room = cap.saturating_sub(self.hedges).min(earned.saturating_sub(self.counts.speculative));
        if room == 0 {
            return Vec::new();
        }
        let thresholds: std::collections::HashMap<&Arc<str>, u64> =
            self.latency.iter().filter_map(|(tool, m)| Some((tool, m.threshold_us(policy)?))).collect();
        if thresholds.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<(u64, SubtaskIx)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SubtaskState::Running && s.backup.is_none())
            .filter_map(|(i, s)| {
                let i = SubtaskIx(i as u32);
                let node = self.dag.node(i);
                if !matches!(node.work, Work::Tool) {
                    return None;
                }
                let limit = *thresholds.get(&node.tool)?;
                // From this attempt's own dispatch: a retry is not late for its earlier attempts.
                let elapsed = now_us.saturating_sub(s.dispatched_us.unwrap_or(now_us));
                // How far past its threshold, in thousandths: the worst stragglers first (a 10×
                // straggler outranks a call that is merely long).
                let overrun = elapsed.saturating_mul(1000) / limit.max(1);
                (elapsed > limit && eligible(i)).then_some((overrun, i))
            })
            .collect();
        found.sort_unstable_by_key(|&(overrun, _)| std::cmp::Reverse(overrun));
        found.into_iter().take(room as usize).map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::{EngineEvent, RunEngine};
    use crate::ids::{Fence, RunId, WorkerId};
    use crate::spec::{Limits, RunSpec, SubtaskSpec};
    use crate::{Dag, RetryPolicy};

    #[test]
    fn a_tool_with_many_calls_keeps_a_bounded_uniform_sample() {
        let n = 6000u64;
        let calls = (0..n).map(|i| SubtaskSpec::tool(format!("c{i}"), "echo", serde_json::json!({}))).collect();
        let dag = Arc::new(Dag::build(&RunSpec::new("many", calls), &Limits::default()).expect("valid"));
        let mut e = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 3);
        let mut out = Vec::new();
        for k in 0..n {
            let i = e.pop_ready().expect("ready");
            e.apply(
                EngineEvent::Dispatched { subtask: i, worker: WorkerId::from("w"), fence: Fence(k + 1) },
                0,
                &mut out,
            );
            // Durations 1..=6000 µs in a shuffled-enough order.
            let d = (k * 7919) % n + 1;
            let ev = EngineEvent::Succeeded {
                subtask: i,
                fence: Fence(k + 1),
                started_us: 0,
                finished_us: d,
                output: "1".into(),
            };
            e.apply(ev, d, &mut out);
            out.clear();
        }
        let model = e.latency.values().next().expect("echo");
        assert_eq!((model.seen, model.done.len()), (n, super::KEPT_SAMPLES));
        assert!(model.done.windows(2).all(|w| w[0] <= w[1]), "kept sorted");
        let median = model.done[model.done.len() / 2] as f64;
        assert!((median - 3000.0).abs() < 300.0, "median {median} of a uniform 1..6000");
    }
}
