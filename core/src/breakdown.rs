//! Where a run's wall time went: the chain of subtasks that decided its end, split into work,
//! waits, retries and stragglers (see [`WallBreakdown`]).

use serde::{Deserialize, Serialize};

use crate::dag::Dag;
use crate::engine::types::Slot;
use crate::ids::SubtaskIx;

/// The wall time split along the chain of subtasks that decided the run's end (the subtask
/// that ended last, the dependency that made it ready last, and so on back to a root), in µs.
/// The parts add up to `wall_us`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallBreakdown {
    /// Durations of the attempts that counted, as their workers measured them.
    pub work_us: u64,
    /// Ready → dispatched: no free slot (or a rate limit, a tenant's share).
    pub waiting_for_slot_us: u64,
    /// Ready → dispatched while no worker could take it for its placement: none with its
    /// labels connected, or its resources (`gpu: 1`) held by other attempts.
    #[serde(default)]
    pub waiting_for_placement_us: u64,
    /// Dispatched → started, and finished → result known (network, batching, the manager).
    pub dispatch_us: u64,
    /// Failure → retry due.
    pub retry_backoff_us: u64,
    /// Attempts that failed or were lost, from dispatch to the failure being known.
    pub failed_attempts_us: u64,
    /// A straggling attempt's time before the backup that beat it started.
    pub straggler_wait_us: u64,
    /// An approval on the chain, from parked to decided: waiting for a person.
    #[serde(default)]
    pub waiting_for_approval_us: u64,
    /// The rest: submit → first ready, the end of the run after its last subtask, time the
    /// coordinator cannot attribute (a failover, clock differences).
    pub other_us: u64,
    /// The part (other than `work`) that lost the most, and the chain subtask that lost most to
    /// it: `("retry_backoff", "a064-t06", 9_300_000)`.
    pub biggest_loss: Option<(String, String, u64)>,
}

impl WallBreakdown {
    /// The parts as (name, µs), in a fixed order.
    pub fn parts(&self) -> [(&'static str, u64); 9] {
        [
            ("work", self.work_us),
            ("waiting_for_slot", self.waiting_for_slot_us),
            ("waiting_for_placement", self.waiting_for_placement_us),
            ("dispatch", self.dispatch_us),
            ("retry_backoff", self.retry_backoff_us),
            ("failed_attempts", self.failed_attempts_us),
            ("straggler_wait", self.straggler_wait_us),
            ("waiting_for_approval", self.waiting_for_approval_us),
            ("other", self.other_us),
        ]
    }

    /// Walks the deciding chain back from the subtask that ended last.
    pub(crate) fn compute(dag: &Dag, slots: &[Slot], wall_us: u64) -> Self {
        let mut b = Self::default();
        let done = |i: SubtaskIx| slots[i.index()].timing.done_us;
        let last = dag.indexes().filter(|&i| dag.node(i).parent.is_none()).filter_map(|i| Some((done(i)?, i))).max();
        let mut per_subtask: Vec<(&'static str, SubtaskIx, u64)> = Vec::new();
        let mut cur = last.map(|(_, i)| i);
        let mut guard = dag.len();
        while let Some(i) = cur {
            let s = &slots[i.index()];
            let t = &s.timing;
            let lost = t.waited_us + t.placement_us + t.backoff_us + t.failed_us + t.straggler_us;
            let approval = match (&dag.node(i).work, t.done_us, s.ready_at_us()) {
                (crate::dag::Work::Approval(_), Some(d), Some(r)) => d.saturating_sub(r).saturating_sub(lost),
                _ => 0,
            };
            b.waiting_for_approval_us += approval;
            per_subtask.push(("waiting_for_approval", i, approval));
            let (final_us, work) = if matches!(dag.node(i).work, crate::dag::Work::Approval(_)) {
                (0, 0)
            } else if matches!(dag.node(i).work, crate::dag::Work::Tool) {
                let final_us = match (t.done_us, t.final_dispatched_us) {
                    (Some(d), Some(f)) => d.saturating_sub(f),
                    _ => 0,
                };
                let measured = if s.steps > 0 { s.finished_us.saturating_sub(s.started_us) } else { 0 };
                (final_us, measured.min(final_us))
            } else {
                // An agent or orchestrator works across turns (its subagents run inside it): from
                // first ready to its end, all but its own waits is its work.
                let span = match (t.done_us, s.ready_at_us()) {
                    (Some(d), Some(r)) => d.saturating_sub(r).saturating_sub(lost),
                    _ => 0,
                };
                (span, span)
            };
            b.work_us += work;
            b.dispatch_us += final_us - work;
            b.waiting_for_slot_us += t.waited_us;
            b.waiting_for_placement_us += t.placement_us;
            b.retry_backoff_us += t.backoff_us;
            b.failed_attempts_us += t.failed_us;
            b.straggler_wait_us += t.straggler_us;
            per_subtask.extend([
                ("waiting_for_slot", i, t.waited_us),
                ("waiting_for_placement", i, t.placement_us),
                ("retry_backoff", i, t.backoff_us),
                ("failed_attempts", i, t.failed_us),
                ("straggler_wait", i, t.straggler_us),
                ("dispatch", i, final_us - work),
            ]);
            // The dependency that ended last made this one ready.
            cur = dag.node(i).deps.iter().copied().filter_map(|d| Some((done(d)?, d))).max().map(|(_, d)| d);
            guard -= 1;
            if guard == 0 {
                break;
            }
        }
        let counted = b.work_us
            + b.dispatch_us
            + b.waiting_for_slot_us
            + b.waiting_for_placement_us
            + b.retry_backoff_us
            + b.failed_attempts_us
            + b.straggler_wait_us
            + b.waiting_for_approval_us;
        if counted > wall_us {
            // Only when clocks disagree (a failover restored a run): scale down, keep the shares.
            let k = wall_us as f64 / counted as f64;
            for v in [
                &mut b.work_us,
                &mut b.dispatch_us,
                &mut b.waiting_for_slot_us,
                &mut b.waiting_for_placement_us,
                &mut b.retry_backoff_us,
                &mut b.failed_attempts_us,
                &mut b.straggler_wait_us,
                &mut b.waiting_for_approval_us,
            ] {
                *v = (*v as f64 * k) as u64;
            }
        }
        b.other_us = wall_us.saturating_sub(
            b.work_us
                + b.dispatch_us
                + b.waiting_for_slot_us
                + b.waiting_for_placement_us
                + b.retry_backoff_us
                + b.failed_attempts_us
                + b.straggler_wait_us
                + b.waiting_for_approval_us,
        );
        let parts = b.parts();
        if let Some(&(part, total)) = parts.iter().skip(1).max_by_key(|(_, v)| *v).filter(|(_, v)| *v > 0) {
            let at = per_subtask
                .iter()
                .filter(|(p, _, _)| *p == part)
                .max_by_key(|(_, _, v)| *v)
                .map(|(_, i, _)| dag.node(*i).id.to_string())
                .unwrap_or_default();
            b.biggest_loss = Some((part.to_owned(), at, total));
        }
        b
    }

    /// The line for a run still going: where its time went is known once it ends (work under
    /// way is not yet on any chain).
    pub fn headline_running(wall_us: u64) -> String {
        format!("running for {}; where the wall time went is known once it ends", human(wall_us))
    }

    /// One line for people: the wall time and where the most of it went, beyond the work.
    pub fn headline(&self, wall_us: u64) -> String {
        let secs = human;
        let Some((part, at, us)) = &self.biggest_loss else {
            return format!("wall {}", secs(wall_us));
        };
        if (*us as f64) < 0.05 * wall_us as f64 {
            return format!(
                "wall {}: {:.0} % of it work on the deciding chain",
                secs(wall_us),
                100.0 * self.work_us as f64 / wall_us.max(1) as f64
            );
        }
        let what = match part.as_str() {
            "retry_backoff" => format!("waiting on a retry backoff of {at}"),
            "waiting_for_slot" => format!("waiting for a free slot (most before {at})"),
            "waiting_for_placement" => {
                format!("waiting for a worker its placement allows, or for its resources (most before {at})")
            }
            "failed_attempts" => format!("in failed attempts (most of {at})"),
            "straggler_wait" => format!("waiting on a straggler ({at}) before its backup"),
            "waiting_for_approval" => format!("waiting for a person to decide {at}"),
            "dispatch" => "in dispatch and reporting".to_owned(),
            _ => "outside the subtasks (before the first, after the last, or not attributable)".to_owned(),
        };
        format!("wall {}: {} {what}", secs(wall_us), secs(*us))
    }
}

/// A duration for people: `42 ms` under a second (`3.5 ms` under ten), else `1.2 s`.
fn human(us: u64) -> String {
    match us {
        0..10_000 => format!("{:.1} ms", us as f64 / 1e3),
        10_000..1_000_000 => format!("{:.0} ms", us as f64 / 1e3),
        _ => format!("{:.1} s", us as f64 / 1e6),
    }
}

/// The wall-time breakdown on runs whose losses are known by construction.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::engine::{Action, EngineEvent, RunEngine};
    use crate::error::FailureKind;
    use crate::ids::{Fence, RunId, WorkerId};
    use crate::retry::RetryPolicy;
    use crate::spec::{Limits, RunSpec, SubtaskSpec};
    use crate::{Dag, RunSummary};

    /// a → b → c, every call 100 ms of work; times in µs from 0.
    fn chain() -> RunEngine {
        let spec = RunSpec::new(
            "chain",
            vec![
                SubtaskSpec::tool("a", "sleep", serde_json::json!({})),
                SubtaskSpec::tool("b", "sleep", serde_json::json!({})).after(["a"]),
                SubtaskSpec::tool("c", "sleep", serde_json::json!({})).after(["b"]),
            ],
        );
        let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid"));
        let policy = RetryPolicy {
            jitter: 0.0,
            initial_interval: std::time::Duration::from_millis(700),
            ..RetryPolicy::default()
        };
        RunEngine::new(RunId::from("r"), dag, policy, 0, 7)
    }

    struct Clock {
        e: RunEngine,
        out: Vec<Action>,
        fence: u64,
    }

    impl Clock {
        fn at(&mut self, now: u64, event: EngineEvent) {
            self.e.apply(event, now, &mut self.out);
        }
        fn dispatch(&mut self, id: &str, now: u64) -> Fence {
            self.fence += 1;
            let subtask = self.e.dag().index_of(id).expect("id");
            self.at(now, EngineEvent::Dispatched { subtask, worker: WorkerId::from("w1"), fence: Fence(self.fence) });
            Fence(self.fence)
        }
        /// Started 1 ms after dispatch, 100 ms of work, known 1 ms after.
        fn succeed(&mut self, id: &str, fence: Fence, dispatched: u64) -> u64 {
            let subtask = self.e.dag().index_of(id).expect("id");
            let (started_us, finished_us) = (dispatched + 1_000, dispatched + 101_000);
            let output = Arc::from("{}");
            self.at(
                finished_us + 1_000,
                EngineEvent::Succeeded { subtask, fence, started_us, finished_us, output, artifacts: None },
            );
            finished_us + 1_000
        }
        fn summary(&self) -> RunSummary {
            self.e.summary(10_000_000)
        }
    }

    fn sums_to_wall(s: &RunSummary) {
        let total: u64 = s.wall_breakdown.parts().iter().map(|(_, v)| v).sum();
        assert_eq!(total, s.wall_us, "{:?}", s.wall_breakdown);
    }

    #[test]
    fn a_run_without_losses_is_work_and_dispatch() {
        let mut c = Clock { e: chain(), out: Vec::new(), fence: 0 };
        let mut t = 0;
        for id in ["a", "b", "c"] {
            let f = c.dispatch(id, t);
            t = c.succeed(id, f, t);
        }
        let s = c.summary();
        assert_eq!(s.wall_us, 306_000);
        let b = &s.wall_breakdown;
        assert_eq!((b.work_us, b.dispatch_us, b.other_us), (300_000, 6_000, 0), "{b:?}");
        sums_to_wall(&s);
        assert!(
            s.wall_breakdown.headline(s.wall_us).contains("work on the deciding chain"),
            "{}",
            s.wall_breakdown.headline(s.wall_us)
        );
    }

    #[test]
    fn a_retry_backoff_of_known_length_is_reported_as_such() {
        let mut c = Clock { e: chain(), out: Vec::new(), fence: 0 };
        let f = c.dispatch("a", 0);
        let t = c.succeed("a", f, 0);
        // b fails after 50 ms; its backoff is 700 ms (no jitter); then it succeeds.
        let f = c.dispatch("b", t);
        let b = c.e.dag().index_of("b").expect("b");
        let failed_at = t + 50_000;
        c.at(
            failed_at,
            EngineEvent::Failed {
                subtask: b,
                fence: f,
                kind: FailureKind::Transient,
                message: "x".into(),
                started_us: t + 1_000,
                finished_us: t + 49_000,
            },
        );
        c.at(failed_at + 700_000, EngineEvent::RetryDue { subtask: b });
        let f = c.dispatch("b", failed_at + 700_000);
        let t = c.succeed("b", f, failed_at + 700_000);
        let f = c.dispatch("c", t);
        c.succeed("c", f, t);
        let s = c.summary();
        let bd = &s.wall_breakdown;
        assert_eq!(bd.retry_backoff_us, 700_000, "{bd:?}");
        assert_eq!(bd.failed_attempts_us, 50_000, "{bd:?}");
        assert_eq!(bd.work_us, 300_000, "{bd:?}");
        sums_to_wall(&s);
        assert_eq!(bd.biggest_loss, Some(("retry_backoff".into(), "b".into(), 700_000)));
        assert_eq!(bd.headline(s.wall_us), "wall 1.1 s: 700 ms waiting on a retry backoff of b");
    }

    #[test]
    fn a_full_cluster_shows_as_waiting_for_a_slot_and_a_straggler_as_straggler_wait() {
        let mut c = Clock { e: chain(), out: Vec::new(), fence: 0 };
        // a waits 400 ms for a slot.
        let f = c.dispatch("a", 400_000);
        let t = c.succeed("a", f, 400_000);
        // b straggles: its backup starts 300 ms after it and wins.
        let f = c.dispatch("b", t);
        let b = c.e.dag().index_of("b").expect("b");
        c.fence += 1;
        let backup = Fence(c.fence);
        c.at(t + 300_000, EngineEvent::BackupDispatched { subtask: b, worker: WorkerId::from("w2"), fence: backup });
        let t = c.succeed("b", backup, t + 300_000);
        let _ = f;
        let f = c.dispatch("c", t);
        c.succeed("c", f, t);
        let s = c.summary();
        let bd = &s.wall_breakdown;
        assert_eq!(bd.waiting_for_slot_us, 400_000, "{bd:?}");
        assert_eq!(bd.straggler_wait_us, 300_000, "{bd:?}");
        assert_eq!(bd.work_us, 300_000, "{bd:?}");
        sums_to_wall(&s);
        assert_eq!(bd.biggest_loss.as_ref().map(|l| l.0.as_str()), Some("waiting_for_slot"));
    }
}
