//! Run accounting: how parallel the run really was.
//!
//! * `critical_path_us`: the longest path through the DAG where each subtask weighs the measured
//!   duration of its last attempt, and `critical_path` the subtask ids along it;
//! * `critical_steps`: the longest path where each subtask weighs its steps (each attempt of a
//!   tool call is one step: a retried call weighs its attempts), i.e. the steps no amount of
//!   parallelism can remove;
//! * `total_steps`: all steps taken; `parallelism = total_steps / critical_steps`.
//!
//! For agents a step is a model turn that called tools. An orchestrator weighs, on the path,
//! `Σ_t (1 + max_i S_sub,i^(t))` over its stages (Kimi's critical steps), and its time from its
//! first start to its end (its subagents run inside it); subagents count inside their
//! orchestrator, not on their own. For tool-call DAGs every subtask is its own stage, so this
//! reduces to the longest path counted in tool calls.

use crate::ids::SubtaskIx;
use serde::{Deserialize, Serialize};

pub use crate::breakdown::WallBreakdown;

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
    /// Tokens by model (the agents' and orchestrators' `model`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens_by_model: Vec<ModelTokens>,
    /// The run's token budget (`limits.max_tokens`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
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
    /// A fork's calls whose recorded results it reused (one per tool subtask, an agent's
    /// tool-calling steps); 0 for a run that is not a fork.
    #[serde(default)]
    pub calls_reused: u32,
    /// Calls this run made itself: its tool subtasks' attempts and its agents' tool calls.
    #[serde(default)]
    pub calls_made: u32,
    /// Agent and orchestrator attempts after their first whose previous worker was known, and
    /// those that ran on it again (its workspace and MCP sessions there): how often they stuck.
    #[serde(default)]
    pub agent_resumes: u32,
    #[serde(default)]
    pub agent_resumes_sticky: u32,
}

/// One model's token use in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTokens {
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
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
    /// Tokens used so far, by model.
    fn tokens_by_model(&self) -> Vec<ModelTokens>;
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
            tokens_by_model: Vec::new(),
            token_budget: None,
            speculative_attempts: 0,
            speculative_wins: 0,
            error: None,
            wall_breakdown: WallBreakdown::default(),
            calls_reused: 0,
            calls_made: 0,
            agent_resumes: 0,
            agent_resumes_sticky: 0,
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
        let tool_attempts: u32 = dag
            .indexes()
            .filter(|&i| matches!(dag.node(i).work, crate::dag::Work::Tool) && !slots[i.index()].reused)
            .map(|i| slots[i.index()].attempt.0)
            .fold(0u32, u32::saturating_add);
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
            tokens_by_model: engine.tokens_by_model(),
            token_budget: dag.limits().max_tokens,
            speculative_attempts: counts.speculative,
            speculative_wins: counts.speculative_wins,
            error: None,
            wall_breakdown: WallBreakdown::compute(dag, slots, wall_us),
            calls_reused: counts.calls_reused,
            calls_made: tool_attempts.saturating_add(counts.agent_tool_calls),
            agent_resumes: counts.agent_resumes,
            agent_resumes_sticky: counts.agent_resumes_sticky,
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
            outputs: Default::default(),
            id: "lead".into(),
            kind: SubtaskKind::Orchestrator(OrchestratorSpec {
                goal: "g".into(),
                model: "scripted".into(),
                tools: vec![],
                max_steps: None,
                subagent_tools: vec![],
                subagent_models: vec![],
                subagent_artifacts: vec![],
                subagent_placement: None,
            }),
            depends_on: vec![],
            timeout: None,
            placement: None,
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
                artifacts: None,
            };
            self.e.apply(ev, self.now, &mut self.out);
        }
        fn spawn(&mut self, i: SubtaskIx, fence: Fence, n: usize) -> Vec<SubtaskIx> {
            let spawns = (0..n)
                .map(|k| SpawnRequest {
                    call_id: format!("a{k}"),
                    name: "sub".into(),
                    agent: agent("task"),
                    trace_context: Default::default(),
                })
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
                outputs: Default::default(),
                id: "lead".into(),
                kind: SubtaskKind::Orchestrator(OrchestratorSpec {
                    goal: "g".into(),
                    model: "scripted".into(),
                    tools: vec![],
                    max_steps: None,
                    subagent_tools: vec![],
                    subagent_models: vec![],
                    subagent_artifacts: vec![],
                    subagent_placement: None,
                }),
                depends_on: vec![],
                timeout: None,
                placement: None,
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
                outputs: Default::default(),
                id: "a".into(),
                kind: SubtaskKind::Agent(agent("x")),
                depends_on: vec![],
                timeout: None,
                placement: None,
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
