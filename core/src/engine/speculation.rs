//! Straggler speculation: backup attempts, first finisher wins.
//!
//! **Who is a straggler.** Each tool has a latency model: the durations of its calls that
//! finished in this run, and its calls still running, counted as *censored* (they have taken at
//! least their elapsed time; the quantiles are Kaplan–Meier estimates). Once enough have finished
//! (`quantile` of the tool's calls, at most [`MIN_SAMPLES`]) and the median is known, a running
//! attempt of that tool is late when its elapsed time, from *its own* dispatch (a retried
//! attempt starts its clock again), exceeds the largest of `multiplier` × the median, the 95th
//! percentile ([`TAIL_QUANTILE`]; while over 5 % still run, [`UNKNOWN_TAIL_FACTOR`] × the longest
//! finished call), and `min_runtime_ms`. The high quantile keeps natural slowness (a
//! heavy-tailed latency, where a backup of a merely long call cannot win) from passing for
//! straggling; counting the running calls keeps the first finishers of a batch, the fastest,
//! from making the rest look late. The latest go first, by how far past their threshold they
//! are, so a 10× straggler outranks a call that is merely long. A backup that is late too, on
//! its own clock, gets a second one beside it ([`MAX_BACKUPS`]): each attempt straggles on its
//! own, and none is cancelled for being late (it may be a long call about to finish).
//!
//! **What a backup may take.** Backups go only into slots left free after dispatch, and a ready
//! primary attempt that finds no free slot preempts a backup
//! ([`EngineEvent::BackupPreempted`](super::EngineEvent)): a backup never delays real work.
//! Whichever attempt finishes first wins; the others are cancelled. A failure of one only drops
//! it: the others run on, and none counts as a retry.
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
/// A late attempt has run past this quantile of the tool's durations (and `multiplier` × its
/// median): "The Tail at Scale" hedges at the 95th percentile.
pub const TAIL_QUANTILE: f64 = 0.95;
/// Backups one attempt may have running: when its backup is late too, on its own clock,
/// another starts beside it (each attempt straggles independently, and one that is merely long
/// may be about to finish: none is cancelled for being late).
pub const MAX_BACKUPS: u8 = 2;
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
    /// The median of the finished calls' durations (µs), once one finished.
    pub(super) fn median_us(&self) -> Option<u64> {
        self.done.get(self.done.len() / 2).copied()
    }

    /// The lateness threshold (µs), once the model has enough samples. `running` holds the
    /// elapsed times (µs, sorted) of the tool's attempts still running: each is *censored*, a
    /// lower bound of its duration. Leaving them out would build the model from the first
    /// finishers — the fastest — and make every call still running look late; taking their
    /// elapsed time as their duration would make the slowest of a batch started together look
    /// late as soon as it is the slowest. The quantiles are Kaplan–Meier estimates, which count
    /// them as what they are. No threshold while the median is unknown (half the calls still
    /// running); while the 95th percentile is, late means twice the longest finished call.
    fn threshold_us(&self, policy: &crate::spec::Speculation, running: &[u64]) -> Option<u64> {
        let needed = ((policy.quantile * f64::from(self.total)).ceil() as usize).clamp(1, MIN_SAMPLES);
        if self.done.len() < needed {
            return None;
        }
        let km = self.kaplan_meier(running);
        let median = km.quantile(0.5)?;
        let tail = km.quantile(TAIL_QUANTILE).unwrap_or(km.longest.saturating_mul(UNKNOWN_TAIL_FACTOR));
        let late =
            ((median as f64 * policy.multiplier) as u64).max(tail).max(policy.min_runtime_ms.saturating_mul(1000));
        Some(late)
    }

    /// The Kaplan–Meier estimate of the tool's duration from the finished calls (each kept
    /// sample stands for `seen / kept` of them) and the running ones, censored at their elapsed
    /// time: the survival function's steps, up to the longest finished call.
    fn kaplan_meier(&self, running: &[u64]) -> KaplanMeier {
        let weight = self.seen as f64 / self.done.len().max(1) as f64;
        let mut at_risk = weight * self.done.len() as f64 + running.len() as f64;
        let mut survival = 1.0f64;
        let mut steps = Vec::with_capacity(self.done.len());
        let mut r = running.iter().peekable();
        for &x in &self.done {
            // Ties: a call still running at x was at risk at x like one that finished then.
            while r.next_if(|&&e| e < x).is_some() {
                at_risk -= 1.0;
            }
            survival *= 1.0 - weight / at_risk.max(weight);
            at_risk -= weight;
            steps.push((x, survival));
        }
        KaplanMeier { longest: self.done.last().copied().unwrap_or(0), steps }
    }
}

/// When a tool's 95th percentile is not known yet (over 5 % of its calls still running), late
/// means this many times its longest finished call.
pub const UNKNOWN_TAIL_FACTOR: u64 = 2;

/// A duration's estimated survival function: (duration µs, share of calls taking longer).
struct KaplanMeier {
    longest: u64,
    steps: Vec<(u64, f64)>,
}

impl KaplanMeier {
    /// The `q` quantile, when known: the first duration that at least `q` of calls take no
    /// longer than.
    fn quantile(&self, q: f64) -> Option<u64> {
        let k = self.steps.partition_point(|&(_, s)| s > 1.0 - q + 1e-9);
        self.steps.get(k).map(|&(x, _)| x)
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

    /// Adds a subtask that started running to the running list; drops the stopped ones once
    /// they outnumber the running (amortised O(1) per dispatch).
    pub(super) fn list_running(&mut self, subtask: SubtaskIx) {
        let slot = &mut self.slots[subtask.index()];
        if !slot.listed {
            slot.listed = true;
            self.running.push(subtask);
        }
        if self.running.len() > 2 * self.counts.running as usize + 16 {
            let slots = &mut self.slots;
            self.running.retain(|i| {
                let s = &mut slots[i.index()];
                s.listed = s.state == SubtaskState::Running;
                s.listed
            });
        }
    }

    /// The subtasks running now.
    pub fn running(&self) -> impl Iterator<Item = SubtaskIx> + '_ {
        self.running.iter().copied().filter(|i| self.slots[i.index()].state == SubtaskState::Running)
    }

    /// A ready primary needs backup `fence`'s slot: cancel the backup, refund the budget.
    pub(super) fn backup_preempted(&mut self, subtask: SubtaskIx, fence: Fence, out: &mut Vec<Action>) {
        let Some(slot) = self.slots.get_mut(subtask.index()) else { return };
        let Some(k) = slot.backups.iter().position(|b| b.fence == fence) else { return };
        let backup = slot.backups.remove(k);
        self.counts.running -= 1;
        self.hedges = self.hedges.saturating_sub(1);
        out.push(Action::CancelAttempt { worker: backup.worker, fence: backup.fence });
    }

    /// Resolves a report for a subtask that has backup attempts. Returns false when the event
    /// must be dropped (one of the racing attempts failed; the others run on).
    pub(super) fn settle_race(
        &mut self,
        subtask: SubtaskIx,
        fence: Fence,
        success: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(subtask.index()) else { return true };
        if slot.backups.is_empty() {
            return true;
        }
        let backup = slot.backups.iter().position(|b| b.fence == fence);
        if fence != slot.fence && backup.is_none() {
            return true; // stale: the normal checks reject it
        }
        let original = slot.dispatched_us;
        if success {
            // Every other attempt is cancelled; the winner goes on as the current attempt.
            self.counts.running -= slot.backups.len() as u32;
            let mut losers: Vec<(WorkerId, Fence)> = Vec::with_capacity(slot.backups.len());
            if let Some(k) = backup {
                let won = slot.backups.remove(k);
                // The original's time before the winning backup started was lost to a straggler.
                slot.timing.straggler_us += won.dispatched_us.saturating_sub(original.unwrap_or(won.dispatched_us));
                losers.extend(slot.worker.replace(won.worker).map(|w| (w, slot.fence)));
                slot.fence = won.fence;
                slot.dispatched_us = Some(won.dispatched_us);
                self.counts.speculative_wins += 1;
            }
            losers.extend(slot.backups.drain(..).map(|b| (b.worker, b.fence)));
            for (worker, fence) in losers {
                out.push(Action::CancelAttempt { worker, fence });
            }
            return true;
        }
        // A failure drops that attempt only; the others run on. When the original failed, the
        // oldest backup carries on as the current attempt, and the original's time before it
        // started counts as a failed attempt's.
        self.counts.running -= 1;
        match backup {
            Some(k) => {
                slot.backups.remove(k);
            }
            None => {
                let next = slot.backups.remove(0);
                slot.timing.failed_us += next.dispatched_us.saturating_sub(original.unwrap_or(next.dispatched_us));
                slot.fence = next.fence;
                slot.worker = Some(next.worker);
                slot.dispatched_us = Some(next.dispatched_us);
            }
        }
        false
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
        if slot.state != SubtaskState::Running
            || fence <= slot.fence
            || slot.backups.len() >= usize::from(MAX_BACKUPS)
            || slot.backups.iter().any(|b| fence <= b.fence)
        {
            return;
        }
        let after_us = now_us.saturating_sub(slot.dispatched_us.unwrap_or(now_us));
        slot.backups.push(Backup { fence, worker: worker.clone(), dispatched_us: now_us });
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
        // No threshold is below `min_runtime_ms`: while no running call is older, none is late,
        // and the models need not be built (this runs every tick, for every run).
        let floor_us = policy.min_runtime_ms.saturating_mul(1000);
        let oldest = self.running().filter_map(|i| self.slots[i.index()].dispatched_us).min().unwrap_or(now_us);
        if now_us.saturating_sub(oldest) <= floor_us {
            return Vec::new();
        }
        // Each tool's running attempts, at their elapsed time (see `Latency::threshold_us`).
        let mut running: std::collections::HashMap<&Arc<str>, Vec<u64>> = Default::default();
        for i in self.running() {
            let (node, s) = (self.dag.node(i), &self.slots[i.index()]);
            if matches!(node.work, Work::Tool) {
                let elapsed = now_us.saturating_sub(s.dispatched_us.unwrap_or(now_us));
                running.entry(&node.tool).or_default().push(elapsed);
            }
        }
        let thresholds: std::collections::HashMap<&Arc<str>, u64> = self
            .latency
            .iter()
            .filter_map(|(tool, m)| {
                let running = running.get_mut(tool).map(|r| {
                    r.sort_unstable();
                    &r[..]
                });
                Some((tool, m.threshold_us(policy, running.unwrap_or(&[]))?))
            })
            .collect();
        if thresholds.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<(u64, SubtaskIx)> = self
            .running()
            .filter_map(|i| {
                let s = &self.slots[i.index()];
                let node = self.dag.node(i);
                if s.backups.len() >= usize::from(MAX_BACKUPS) || !matches!(node.work, Work::Tool) {
                    return None;
                }
                let limit = *thresholds.get(&node.tool)?;
                // From this attempt's own dispatch (a retry is not late for its earlier
                // attempts), or its latest backup's: a backup late too gets another beside it.
                let since = s.backups.last().map(|b| b.dispatched_us).or(s.dispatched_us).unwrap_or(now_us);
                let elapsed = now_us.saturating_sub(since);
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
                artifacts: None,
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
