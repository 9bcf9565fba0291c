//! Run accounting: how parallel the run really was.
//!
//! * `critical_path_us`: the longest path through the DAG where each subtask weighs the measured
//!   duration of its last attempt, and `critical_path` the subtask ids along it;
//! * `critical_steps`: the longest path where each subtask weighs its steps (one tool call that
//!   ran to a result is one step), i.e. the steps no amount of parallelism can remove;
//! * `total_steps`: all steps taken; `parallelism = total_steps / critical_steps`.
//!
//! For agents a step is a model turn that called tools. An orchestrator weighs, on the path,
//! `Σ_t (1 + max_i S_sub,i^(t))` over its stages (Kimi's critical steps), and its time from its
//! first start to its end (its subagents run inside it); subagents count inside their
//! orchestrator, not on their own. For tool-call DAGs every subtask is its own stage, so this
//! reduces to the longest path counted in tool calls.

use crate::ids::SubtaskIx;
use serde::{Deserialize, Serialize};

use crate::dag::Dag;
use crate::engine::types::{Counts, RunState, Slot, SubtaskState};
use crate::ids::{RunId, SubtaskId};

/// The accounting of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// The run's name.
    pub name: String,
    /// Its state when the summary was taken.
    pub state: RunState,
    /// Subtasks in the run.
    pub total_subtasks: u32,
    /// Tool calls that succeeded.
    pub tool_calls_completed: u32,
    /// Tool calls that failed for good.
    pub tool_calls_failed: u32,
    /// Subtasks skipped because a dependency failed.
    pub tool_calls_skipped: u32,
    /// Attempts dispatched (retries included).
    pub attempts: u32,
    /// Submit to finish (or to now, while running), µs.
    pub wall_us: u64,
    /// Sum of all measured attempt durations, µs.
    pub total_work_us: u64,
    /// Longest path by measured durations, µs.
    pub critical_path_us: u64,
    /// The subtasks along that path, in execution order.
    pub critical_path: Vec<SubtaskId>,
    /// Longest path by steps.
    pub critical_steps: u64,
    /// All steps taken.
    pub total_steps: u64,
    /// `total_steps / critical_steps` (0 when nothing ran).
    pub parallelism: f64,
    /// Tool calls made by agents and orchestrators.
    #[serde(default)]
    pub agent_tool_calls: u32,
    /// Subagents spawned by orchestrators.
    #[serde(default)]
    pub subagents: u32,
    /// Model tokens used (input + output).
    #[serde(default)]
    pub tokens: u64,
    /// Backup attempts started for stragglers.
    #[serde(default)]
    pub speculative_attempts: u32,
    /// Backup attempts that finished first.
    #[serde(default)]
    pub speculative_wins: u32,
    /// Why the run itself failed, when not through its subtasks (a quarantined run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Where the wall time went, along the chain of subtasks that decided the run's end.
    #[serde(default)]
    pub wall_breakdown: WallBreakdown,
}

/// The wall time split along the chain of subtasks that decided the run's end (the subtask
/// that ended last, the dependency that made it ready last, and so on back to a root), in µs.
/// The parts add up to `wall_us`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallBreakdown {
    /// Durations of the attempts that counted, as their workers measured them.
    pub work_us: u64,
    /// Ready → dispatched: no free slot (or a rate limit, a tenant's share).
    pub waiting_for_slot_us: u64,
    /// Dispatched → started, and finished → result known (network, batching, the manager).
    pub dispatch_us: u64,
    /// Failure → retry due.
    pub retry_backoff_us: u64,
    /// Attempts that failed or were lost, from dispatch to the failure being known.
    pub failed_attempts_us: u64,
    /// A straggling attempt's time before the backup that beat it started.
    pub straggler_wait_us: u64,
    /// The rest: submit → first ready, the end of the run after its last subtask, time the
    /// coordinator cannot attribute (a failover, clock differences).
    pub other_us: u64,
    /// The part (other than `work`) that lost the most, and the chain subtask that lost most to
    /// it: `("retry_backoff", "a064-t06", 9_300_000)`.
    pub biggest_loss: Option<(String, String, u64)>,
}

impl WallBreakdown {
    /// The parts as (name, µs), in a fixed order.
    pub fn parts(&self) -> [(&'static str, u64); 7] {
        [
            ("work", self.work_us),
            ("waiting_for_slot", self.waiting_for_slot_us),
            ("dispatch", self.dispatch_us),
            ("retry_backoff", self.retry_backoff_us),
            ("failed_attempts", self.failed_attempts_us),
            ("straggler_wait", self.straggler_wait_us),
            ("other", self.other_us),
        ]
    }

    /// Walks the deciding chain back from the subtask that ended last.
    fn compute(dag: &Dag, slots: &[Slot], wall_us: u64) -> Self {
        let mut b = Self::default();
        let done = |i: SubtaskIx| slots[i.index()].timing.done_us;
        let last = dag.indexes().filter(|&i| dag.node(i).parent.is_none()).filter_map(|i| Some((done(i)?, i))).max();
        let mut per_subtask: Vec<(&'static str, SubtaskIx, u64)> = Vec::new();
        let mut cur = last.map(|(_, i)| i);
        let mut guard = dag.len();
        while let Some(i) = cur {
            let s = &slots[i.index()];
            let t = &s.timing;
            let final_us = match (t.done_us, t.final_dispatched_us) {
                (Some(d), Some(f)) => d.saturating_sub(f),
                _ => 0,
            };
            let measured =
                if s.steps > 0 || s.agent.is_some() { s.finished_us.saturating_sub(s.started_us) } else { 0 };
            let work = measured.min(final_us);
            b.work_us += work;
            b.dispatch_us += final_us - work;
            b.waiting_for_slot_us += t.waited_us;
            b.retry_backoff_us += t.backoff_us;
            b.failed_attempts_us += t.failed_us;
            b.straggler_wait_us += t.straggler_us;
            per_subtask.extend([
                ("waiting_for_slot", i, t.waited_us),
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
            + b.retry_backoff_us
            + b.failed_attempts_us
            + b.straggler_wait_us;
        if counted > wall_us {
            // Only when clocks disagree (a failover restored a run): scale down, keep the shares.
            let k = wall_us as f64 / counted as f64;
            for v in [
                &mut b.work_us,
                &mut b.dispatch_us,
                &mut b.waiting_for_slot_us,
                &mut b.retry_backoff_us,
                &mut b.failed_attempts_us,
                &mut b.straggler_wait_us,
            ] {
                *v = (*v as f64 * k) as u64;
            }
        }
        b.other_us = wall_us.saturating_sub(
            b.work_us
                + b.dispatch_us
                + b.waiting_for_slot_us
                + b.retry_backoff_us
                + b.failed_attempts_us
                + b.straggler_wait_us,
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

    /// One line for people: the wall time and where the most of it went, beyond the work.
    pub fn headline(&self, wall_us: u64) -> String {
        let secs = |us: u64| format!("{:.1} s", us as f64 / 1e6);
        let Some((part, at, us)) = &self.biggest_loss else {
            return format!("wall {}", secs(wall_us));
        };
        if (*us as f64) < 0.05 * wall_us as f64 {
            return format!(
                "wall {}: {:.0} % of it tool work on the deciding chain",
                secs(wall_us),
                100.0 * self.work_us as f64 / wall_us.max(1) as f64
            );
        }
        let what = match part.as_str() {
            "retry_backoff" => format!("waiting on a retry backoff of {at}"),
            "waiting_for_slot" => format!("waiting for a free slot (most before {at})"),
            "failed_attempts" => format!("in failed attempts (most of {at})"),
            "straggler_wait" => format!("waiting on a straggler ({at}) before its backup"),
            "dispatch" => "in dispatch and reporting".to_owned(),
            _ => "outside the subtasks (before the first, after the last, or not attributable)".to_owned(),
        };
        format!("wall {}: {} {what}", secs(wall_us), secs(*us))
    }
}

/// A failure of the run as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// Its class ([`crate::FailureKind::Internal`] for a quarantined run).
    pub kind: crate::FailureKind,
    /// What happened.
    pub message: String,
}

/// What a summary reads of a run: a read-only view (the engine provides it), so the
/// accounting cannot change the run and depends on nothing but these facts.
pub trait RunView {
    fn run_id(&self) -> &RunId;
    fn dag(&self) -> &Dag;
    fn slots(&self) -> &[Slot];
    fn counts(&self) -> Counts;
    fn state(&self) -> RunState;
    fn submitted_us(&self) -> u64;
    fn finished_us(&self) -> Option<u64>;
    /// Critical steps of subtask `i` as a node of the DAG (an orchestrator: per stage, one
    /// step plus its slowest subagent's; subagents count inside their orchestrator).
    fn critical_weight(&self, i: SubtaskIx) -> u64;
}

impl RunSummary {
    /// A summary with no accounting: for a run whose engine cannot give one.
    pub fn empty(run_id: RunId, name: String, total_subtasks: u32) -> Self {
        Self {
            run_id,
            name,
            state: RunState::Failed,
            total_subtasks,
            tool_calls_completed: 0,
            tool_calls_failed: 0,
            tool_calls_skipped: 0,
            attempts: 0,
            wall_us: 0,
            total_work_us: 0,
            critical_path_us: 0,
            critical_path: Vec::new(),
            critical_steps: 0,
            total_steps: 0,
            parallelism: 0.0,
            agent_tool_calls: 0,
            subagents: 0,
            tokens: 0,
            speculative_attempts: 0,
            speculative_wins: 0,
            error: None,
            wall_breakdown: WallBreakdown::default(),
        }
    }

    /// Computes the accounting of a run as of `now_us`.
    pub fn compute(engine: &impl RunView, now_us: u64) -> Self {
        let dag = engine.dag();
        let slots = engine.slots();
        let measured = |i: SubtaskIx| {
            let s = &slots[i.index()];
            match dag.node(i).work {
                crate::dag::Work::Tool if s.steps > 0 => s.finished_us.saturating_sub(s.started_us),
                crate::dag::Work::Tool => 0,
                _ if s.finished_us > 0 => s.finished_us.saturating_sub(s.first_started_us.unwrap_or(s.finished_us)),
                _ => 0,
            }
        };
        let on_path = |i: SubtaskIx| if dag.node(i).parent.is_some() { 0 } else { measured(i) };
        let (critical_path_us, path) = dag.longest_path(on_path);
        let (critical_steps, _) = dag.longest_path(|i| engine.critical_weight(i));
        let duration = measured;
        let total_steps: u64 = slots.iter().map(|s| u64::from(s.steps)).sum();
        let total_work_us = dag.indexes().map(duration).fold(0u64, u64::saturating_add);
        let counts = engine.counts();
        let end = engine.finished_us().unwrap_or(now_us);
        let wall_us = end.saturating_sub(engine.submitted_us());
        Self {
            run_id: engine.run_id().clone(),
            name: dag.name().to_owned(),
            state: engine.state(),
            total_subtasks: dag.len() as u32,
            tool_calls_completed: counts.succeeded,
            tool_calls_failed: counts.failed,
            tool_calls_skipped: counts.skipped,
            attempts: counts.attempts,
            wall_us,
            total_work_us,
            critical_path_us,
            critical_path: path
                .into_iter()
                .filter(|&i| slots[i.index()].state != SubtaskState::Blocked && measured(i) > 0)
                .map(|i| dag.node(i).id.clone())
                .collect(),
            critical_steps,
            total_steps,
            parallelism: if critical_steps == 0 { 0.0 } else { total_steps as f64 / critical_steps as f64 },
            agent_tool_calls: counts.agent_tool_calls,
            subagents: counts.spawned,
            tokens: counts.tokens,
            speculative_attempts: counts.speculative,
            speculative_wins: counts.speculative_wins,
            error: None,
            wall_breakdown: WallBreakdown::compute(dag, slots, wall_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::agent::{AgentSpec, Message, OrchestratorSpec, Role, SpawnRequest, ToolCallRequest, Turn};
    use crate::engine::{Action, EngineEvent, RunEngine, RunState};
    use crate::ids::{Fence, RunId, SubtaskIx, WorkerId};
    use crate::spec::{Limits, RunSpec, SubtaskKind, SubtaskSpec};
    use crate::{Dag, RetryPolicy};

    fn turn(calls: usize) -> Arc<Turn> {
        let tool_calls = (0..calls)
            .map(|k| ToolCallRequest { id: format!("c{k}"), name: "echo".into(), arguments: "{}".into() })
            .collect();
        let assistant =
            Message { role: Role::Assistant, content: None, reasoning_content: None, tool_calls, tool_call_id: None };
        Arc::new(Turn { messages: vec![assistant], usage: Default::default(), fence: 0, seq: 0 })
    }

    fn agent(input: &str) -> AgentSpec {
        AgentSpec {
            instructions: String::new(),
            input: input.into(),
            model: "scripted".into(),
            tools: vec![],
            max_steps: None,
        }
    }

    struct Sim {
        e: RunEngine,
        fence: u64,
        now: u64,
        out: Vec<Action>,
    }

    fn lead_spec() -> SubtaskSpec {
        SubtaskSpec {
            retry: None,
            id: "lead".into(),
            kind: SubtaskKind::Orchestrator(OrchestratorSpec {
                goal: "g".into(),
                model: "scripted".into(),
                tools: vec![],
                max_steps: None,
                subagent_tools: vec![],
                subagent_models: vec![],
            }),
            depends_on: vec![],
            timeout: None,
        }
    }

    impl Sim {
        fn new(spec: RunSpec) -> Self {
            let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid"));
            Sim {
                e: RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 1),
                fence: 0,
                now: 1,
                out: vec![],
            }
        }

        fn dispatch(&mut self, i: SubtaskIx) -> Fence {
            self.fence += 1;
            let fence = Fence(self.fence);
            self.e.apply(
                EngineEvent::Dispatched { subtask: i, worker: WorkerId::from("w"), fence },
                self.now,
                &mut self.out,
            );
            fence
        }
        fn steps(&mut self, i: SubtaskIx, fence: Fence, n: usize) {
            let first = self.e.slot(i).agent.as_ref().map_or(0, |a| a.next_seq);
            for k in 0..n as u32 {
                self.now += 10;
                let ev = EngineEvent::StepRecorded { subtask: i, fence, seq: first + k, turn: turn(1) };
                self.e.apply(ev, self.now, &mut self.out);
            }
        }
        fn answer(&mut self, i: SubtaskIx, fence: Fence) {
            self.now += 10;
            let ev = EngineEvent::Succeeded {
                subtask: i,
                fence,
                started_us: self.now - 5,
                finished_us: self.now,
                output: Arc::from(json!({"answer": "done"}).to_string()),
            };
            self.e.apply(ev, self.now, &mut self.out);
        }
        fn spawn(&mut self, i: SubtaskIx, fence: Fence, n: usize) -> Vec<SubtaskIx> {
            let spawns = (0..n)
                .map(|k| SpawnRequest { call_id: format!("a{k}"), name: "sub".into(), agent: agent("task") })
                .collect();
            let before = self.e.dag().len() as u32;
            self.now += 10;
            let ev = EngineEvent::Spawned {
                subtask: i,
                fence,
                turn: turn(n),
                spawns,
                started_us: self.now - 5,
                finished_us: self.now,
            };
            self.e.apply(ev, self.now, &mut self.out);
            (before..self.e.dag().len() as u32).map(SubtaskIx).collect()
        }
    }

    #[test]
    fn critical_steps_follow_kimis_definition() {
        let mut sim = Sim::new(RunSpec::new("swarm", vec![lead_spec()]));
        let lead = sim.e.pop_ready().expect("lead is ready");
        // Stage 1: five subagents taking 12, 30, 8, 30 and 9 steps.
        let f = sim.dispatch(lead);
        let kids = sim.spawn(lead, f, 5);
        assert_eq!(kids.len(), 5);
        for (&kid, steps) in kids.iter().zip([12, 30, 8, 30, 9]) {
            assert_eq!(sim.e.pop_ready(), Some(kid));
            let f = sim.dispatch(kid);
            sim.steps(kid, f, steps);
            sim.answer(kid, f);
        }
        // The orchestrator wakes with five answers, makes one direct tool call (stage 2)...
        assert_eq!(sim.e.pop_ready(), Some(lead));
        let f = sim.dispatch(lead);
        let delivered = sim.e.slot(lead).agent.as_ref().expect("agent").turns.last().expect("turn").messages.len();
        assert_eq!(delivered, 5, "the subagents' answers are the orchestrator's next tool results");
        sim.steps(lead, f, 1);
        // ...then stage 3: two subagents taking 4 and 6 steps.
        let kids = sim.spawn(lead, f, 2);
        for (&kid, steps) in kids.iter().zip([4, 6]) {
            assert_eq!(sim.e.pop_ready(), Some(kid));
            let f = sim.dispatch(kid);
            sim.steps(kid, f, steps);
            sim.answer(kid, f);
        }
        let again = sim.e.pop_ready().expect("lead again");
        let f = sim.dispatch(again);
        sim.answer(lead, f);
        assert_eq!(sim.e.state(), RunState::Succeeded);
        let s = sim.e.summary(sim.now);
        assert_eq!(s.critical_steps, (1 + 30) + 1 + (1 + 6));
        assert_eq!(s.critical_steps, 39);
        assert_eq!(s.total_steps, 3 + 12 + 30 + 8 + 30 + 9 + 4 + 6);
        assert_eq!(s.subagents, 7);
    }

    #[test]
    fn serial_stages_raise_a_collapse_warning_once() {
        let mut sim = Sim::new(RunSpec::new("serial", vec![lead_spec()]));
        let lead = sim.e.pop_ready().expect("ready");
        for _ in 0..4 {
            let f = sim.dispatch(lead);
            let kid = sim.spawn(lead, f, 1)[0];
            assert_eq!(sim.e.pop_ready(), Some(kid));
            let kf = sim.dispatch(kid);
            sim.steps(kid, kf, 2);
            sim.answer(kid, kf);
            assert_eq!(sim.e.pop_ready(), Some(lead));
        }
        let warnings =
            sim.out.iter().filter(|a| matches!(a, Action::Publish(crate::engine::Update::Warning { .. }))).count();
        assert_eq!(warnings, 1, "one warning after three one-subagent stages");
        assert!((sim.e.summary(sim.now).parallelism - 1.0).abs() < 1e-9, "a serial swarm has parallelism 1");
    }

    #[test]
    fn spawns_beyond_the_budget_are_refused_with_an_error_result() {
        let mut spec = RunSpec::new(
            "tight",
            vec![SubtaskSpec {
                retry: None,
                id: "lead".into(),
                kind: SubtaskKind::Orchestrator(OrchestratorSpec {
                    goal: "g".into(),
                    model: "scripted".into(),
                    tools: vec![],
                    max_steps: None,
                    subagent_tools: vec![],
                    subagent_models: vec![],
                }),
                depends_on: vec![],
                timeout: None,
            }],
        );
        spec.limits.max_subagents = 2;
        let mut sim = Sim::new(spec);
        let lead = sim.e.pop_ready().expect("ready");
        let f = sim.dispatch(lead);
        let kids = sim.spawn(lead, f, 3);
        assert_eq!(kids.len(), 2, "only two subagents fit the budget");
        let pending = &sim.e.slot(lead).agent.as_ref().expect("agent").pending_results;
        assert_eq!(pending.len(), 1);
        assert!(pending[0].content.as_deref().unwrap_or("").contains("subagent budget (2) is exhausted"));
    }

    #[test]
    fn the_tool_call_budget_stops_the_run() {
        let mut spec = RunSpec::new(
            "budget",
            vec![SubtaskSpec {
                retry: None,
                id: "a".into(),
                kind: SubtaskKind::Agent(agent("x")),
                depends_on: vec![],
                timeout: None,
            }],
        );
        spec.limits.max_tool_calls = 3;
        let mut sim = Sim::new(spec);
        let a = sim.e.pop_ready().expect("ready");
        let f = sim.dispatch(a);
        sim.steps(a, f, 4);
        assert_eq!(sim.e.state(), RunState::BudgetExceeded);
        assert!(sim.out.iter().any(|x| matches!(x, Action::CancelAttempt { .. })), "the running agent is stopped");
    }
}

/// The wall-time breakdown on runs whose losses are known by construction.
#[cfg(test)]
mod breakdown {
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
            self.at(finished_us + 1_000, EngineEvent::Succeeded { subtask, fence, started_us, finished_us, output });
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
        assert!(s.wall_breakdown.headline(s.wall_us).contains("tool work"), "{}", s.wall_breakdown.headline(s.wall_us));
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
        assert_eq!(bd.headline(s.wall_us), "wall 1.1 s: 0.7 s waiting on a retry backoff of b");
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
