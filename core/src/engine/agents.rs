//! The engine's agent rules: recording turns, spawning stages, waking orchestrators, budgets.
//!
//! An orchestrator's life, in stages:
//!
//! ```text
//!   Ready ─dispatch─▶ Running ─StepRecorded (tools)─▶ Running ─Spawned (assign_task)─▶ Waiting
//!     ▲                                                                                  │
//!     └────────── every subagent of the stage ended (answers become tool results) ◀─────┘
//! ```
//!
//! Each tool-calling turn of an orchestrator is one stage; a stage's critical steps are the
//! orchestrator's step plus the steps of its slowest subagent, summed over stages (Kimi's
//! `Σ_t (S_main^(t) + max_i S_sub,i^(t))`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::agent::{Message, SpawnRequest, Turn};
use crate::dag::Work;
use crate::ids::{Fence, SubtaskId, SubtaskIx};

use super::RunEngine;
use super::types::{Action, AgentState, RunState, Slot, Stage, SubtaskState, Update};

/// Stages in a row with at most one subagent before a serial-collapse warning.
const COLLAPSE_STAGES: usize = 3;

impl RunEngine {
    fn agent_mut(&mut self, subtask: SubtaskIx) -> Option<&mut AgentState> {
        self.slots.get_mut(subtask.index()).and_then(|s| s.agent.as_deref_mut())
    }

    /// Appends a turn; counts a step (and an orchestrator stage) when it called tools.
    pub(super) fn record_turn(
        &mut self,
        subtask: SubtaskIx,
        turn: Arc<Turn>,
        stage_children: Option<Vec<SubtaskIx>>,
        out: &mut Vec<Action>,
    ) {
        let calls = turn.tool_calls() as u32;
        let work_calls = turn.work_calls() as u32;
        let tokens = turn.usage.input_tokens.saturating_add(turn.usage.output_tokens);
        let turn_usage = turn.usage;
        let is_orchestrator = matches!(self.dag.node(subtask).work, Work::Orchestrator(_));
        let slot = &mut self.slots[subtask.index()];
        if calls > 0 {
            slot.steps += 1;
        }
        let steps = slot.steps;
        let Some(agent) = slot.agent.as_deref_mut() else { return };
        agent.turns.push(turn);
        let index = agent.turns.len() as u32 - 1;
        if is_orchestrator && calls > 0 {
            agent.stages.push(Stage { children: stage_children.unwrap_or_default() });
        }
        self.counts.agent_tool_calls += work_calls;
        self.counts.tokens = self.counts.tokens.saturating_add(tokens);
        self.count_tokens(subtask, std::slice::from_ref(&turn_usage));
        out.push(Action::PersistTurn { subtask, index });
        if calls > 0 {
            out.push(Action::Publish(Update::Step { subtask, steps, tool_calls: calls }));
        }
    }

    pub(super) fn step_recorded(
        &mut self,
        subtask: SubtaskIx,
        fence: Fence,
        seq: u32,
        turn: Arc<Turn>,
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        if !self.is_current(subtask, fence) {
            return;
        }
        let Some(agent) = self.agent_mut(subtask) else { return };
        if seq < agent.next_seq {
            return; // re-sent after a reconnection: already recorded
        }
        agent.next_seq = seq.saturating_add(1);
        let mut turn = Arc::unwrap_or_clone(turn);
        turn.fence = fence.0;
        turn.seq = seq;
        self.record_turn(subtask, Arc::new(turn), None, out);
        self.check_budgets(now_us, out);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawned(
        &mut self,
        subtask: SubtaskIx,
        fence: Fence,
        turn: Arc<Turn>,
        spawns: Vec<SpawnRequest>,
        started_us: u64,
        finished_us: u64,
        now_us: u64,
        out: &mut Vec<Action>,
    ) {
        if !self.is_current(subtask, fence) || !matches!(self.dag.node(subtask).work, Work::Orchestrator(_)) {
            return;
        }
        self.slots[subtask.index()].attempt_ended(started_us, finished_us, false);
        self.counts.running -= 1;
        let stage = self.agent_mut(subtask).map_or(0, |a| a.stages.len() as u32 + 1);
        let limit = self.dag.limits().max_subagents;
        let cap = self.dag.limits().subagent_max_steps;
        let mut children = Vec::new();
        let mut refused = Vec::new();
        let grant = match &self.dag.node(subtask).work {
            Work::Orchestrator(o) => o.clone(),
            _ => return,
        };
        for (k, spawn) in spawns.into_iter().enumerate() {
            if let Some(why) = grant.refuses(&spawn.agent) {
                refused.push(Message::tool_result(&spawn.call_id, format!("error: {why}; the task was not assigned")));
                continue;
            }
            if self.counts.spawned >= limit {
                refused.push(Message::tool_result(
                    &spawn.call_id,
                    format!("error: the run's subagent budget ({limit}) is exhausted; the task was not assigned"),
                ));
                continue;
            }
            self.counts.spawned += 1;
            let parent_id = self.dag.node(subtask).id.as_str();
            let name: String = spawn
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .take(40)
                .collect();
            let id = SubtaskId::from(format!("{parent_id}:{stage}:{name}:{k}"));
            let mut agent = spawn.agent;
            agent.max_steps = Some(agent.max_steps.unwrap_or(cap).min(cap));
            let child =
                Arc::make_mut(&mut self.dag).add_child(subtask, id, stage, &spawn.name, agent, spawn.trace_context);
            let mut slot = Slot::new(0, true);
            slot.ready_since_us = Some(now_us);
            self.slots.push(slot);
            self.counts.open += 1;
            self.ready.push_back(child);
            if let Some(a) = self.agent_mut(subtask) {
                a.child_calls.insert(child, spawn.call_id);
            }
            children.push(child);
        }
        let accepted = children.len() as u32;
        self.record_turn(subtask, turn, Some(children.clone()), out);
        let stage_no = self.agent_mut(subtask).map_or(0, |a| a.stages.len() as u32);
        out.push(Action::PersistSpawn { subtask, stage: stage_no });
        out.push(Action::Publish(Update::Spawned {
            subtask,
            stage: stage_no,
            children,
            refused: refused.len() as u32,
        }));
        let agent = self.agent_mut(subtask).expect("orchestrators have agent state");
        agent.pending_results.extend(refused);
        agent.waiting = accepted;
        let slot = &mut self.slots[subtask.index()];
        if accepted == 0 {
            slot.state = SubtaskState::Ready;
            slot.ready_since_us = Some(now_us);
            self.ready.push_back(subtask);
        } else {
            slot.state = SubtaskState::Waiting;
        }
        self.check_collapse(subtask, out);
        self.check_budgets(now_us, out);
    }

    /// What an ended subagent tells its orchestrator.
    fn answer_of(&self, child: SubtaskIx) -> String {
        let slot = &self.slots[child.index()];
        match (slot.state, &slot.output, &slot.error) {
            (SubtaskState::Succeeded, Some(out), _) => answer_text(out),
            (_, _, Some(e)) => format!("error: the subagent failed ({}): {}", e.kind.as_str(), e.message),
            _ => "error: the subagent ended without an answer".to_owned(),
        }
    }

    /// Rebuilds agent state after a failover, once [`RunEngine::restore`] has applied the
    /// recorded subtask ends: transcripts (`turns`, by subtask), and for spawned subagents (which
    /// the caller added to the DAG before restoring) the `assign_task` call each answers.
    pub fn restore_agents(&mut self, turns: HashMap<SubtaskIx, Vec<Arc<Turn>>>, calls: HashMap<SubtaskIx, String>) {
        for (i, ts) in turns {
            let Some(terminal) = self.slots.get(i.index()).map(|s| s.state.is_terminal()) else { continue };
            let steps = ts.iter().filter(|t| t.tool_calls() > 0).count() as u32;
            // Turns a fork reused were paid for by the original run: they count as reused and
            // toward no budget of this one.
            let reused = match self.fork_point {
                _ if self.slots[i.index()].reused => ts.len(),
                Some((at, step)) if at == i => (step as usize).min(ts.len()),
                _ => 0,
            };
            let (old, new) = ts.split_at(reused);
            let calls = |turns: &[Arc<Turn>]| turns.iter().map(|t| t.work_calls() as u32).sum::<u32>();
            self.counts.calls_reused = self.counts.calls_reused.saturating_add(calls(old));
            self.counts.agent_tool_calls += calls(new);
            let tokens = new
                .iter()
                .fold(0u64, |n, t| n.saturating_add(t.usage.input_tokens).saturating_add(t.usage.output_tokens));
            self.counts.tokens = self.counts.tokens.saturating_add(tokens);
            let usage: Vec<crate::agent::Usage> = new.iter().map(|t| t.usage).collect();
            self.count_tokens(i, &usage);
            let Some(slot) = self.slots.get_mut(i.index()) else { continue };
            if !terminal {
                slot.steps = steps;
            }
            if let Some(agent) = slot.agent.as_deref_mut() {
                agent.turns = ts;
            }
        }
        let agents: Vec<SubtaskIx> = self.dag.indexes().filter(|&i| self.slots[i.index()].agent.is_some()).collect();
        for i in agents {
            self.restore_question(i);
        }
        let orchestrators: Vec<SubtaskIx> =
            self.dag.indexes().filter(|&i| matches!(self.dag.node(i).work, Work::Orchestrator(_))).collect();
        for o in orchestrators {
            let children: Vec<SubtaskIx> = self.dag.indexes().filter(|&c| self.dag.node(c).parent == Some(o)).collect();
            self.counts.spawned += children.len() as u32;
            let stage_of = |c: SubtaskIx| self.dag.node(c).stage;
            let Some(agent) = self.slots[o.index()].agent.as_deref() else { continue };
            let answered: std::collections::HashSet<String> =
                agent.turns.iter().flat_map(|t| &t.messages).filter_map(|m| m.tool_call_id.clone()).collect();
            let stage_turns = agent.turns.iter().filter(|t| t.tool_calls() > 0).count() as u32;
            let stages: Vec<Stage> = (1..=stage_turns)
                .map(|s| Stage { children: children.iter().copied().filter(|&c| stage_of(c) == s).collect() })
                .collect();
            let mut waiting = 0;
            let mut child_calls = HashMap::new();
            let mut pending = Vec::new();
            for &c in &children {
                let Some(call) = calls.get(&c) else { continue };
                if answered.contains(call) {
                    continue;
                }
                if self.slots[c.index()].state.is_terminal() {
                    pending.push(Message::tool_result(call, self.answer_of(c)));
                } else {
                    waiting += 1;
                    child_calls.insert(c, call.clone());
                }
            }
            let orchestrator_open = !self.slots[o.index()].state.is_terminal();
            if let Some(agent) = self.agent_mut(o) {
                agent.stages = stages;
                agent.waiting = waiting;
                agent.child_calls = child_calls;
                agent.pending_results = pending;
            }
            if orchestrator_open && waiting > 0 {
                self.slots[o.index()].state = SubtaskState::Waiting;
            }
        }
    }

    /// A subtask ended: if it is a subagent, hand its answer to its orchestrator.
    pub(super) fn child_ended(&mut self, child: SubtaskIx) {
        let Some(parent) = self.dag.node(child).parent else { return };
        let answer = self.answer_of(child);
        let Some(agent) = self.agent_mut(parent) else { return };
        let Some(call_id) = agent.child_calls.remove(&child) else { return };
        agent.pending_results.push(Message::tool_result(call_id, answer));
        agent.waiting = agent.waiting.saturating_sub(1);
        if agent.waiting == 0 && self.slots[parent.index()].state == SubtaskState::Waiting {
            self.slots[parent.index()].state = SubtaskState::Ready;
            self.slots[parent.index()].ready_since_us = Some(self.clock_us);
            self.ready.push_back(parent);
        }
    }

    /// Moves an orchestrator's pending answers into its transcript as it is dispatched again.
    pub(super) fn deliver_results(&mut self, subtask: SubtaskIx, out: &mut Vec<Action>) {
        let Some(agent) = self.agent_mut(subtask) else { return };
        if agent.pending_results.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut agent.pending_results);
        agent.turns.push(Arc::new(Turn { messages, usage: Default::default(), fence: 0, seq: 0 }));
        let index = agent.turns.len() as u32 - 1;
        out.push(Action::PersistTurn { subtask, index });
    }

    fn check_collapse(&mut self, subtask: SubtaskIx, out: &mut Vec<Action>) {
        let Some(agent) = self.agent_mut(subtask) else { return };
        let n = agent.stages.len();
        if agent.warned || n < COLLAPSE_STAGES {
            return;
        }
        if agent.stages[n - COLLAPSE_STAGES..].iter().all(|s| s.children.len() <= 1) {
            agent.warned = true;
            let message = format!(
                "serial collapse: the last {COLLAPSE_STAGES} stages ran at most one subagent each; the swarm is working serially"
            );
            out.push(Action::Publish(Update::Warning { subtask, message }));
        }
    }

    /// Adds `usage` to the token use of subtask `i`'s model.
    fn count_tokens(&mut self, i: SubtaskIx, usage: &[crate::agent::Usage]) {
        let Some(model) = self.dag.node(i).model() else { return };
        let (input, output) = usage
            .iter()
            .fold((0u64, 0u64), |(a, b), u| (a.saturating_add(u.input_tokens), b.saturating_add(u.output_tokens)));
        if input == 0 && output == 0 {
            return;
        }
        let entry = self.token_use.entry(Arc::from(model)).or_default();
        entry.0 = entry.0.saturating_add(input);
        entry.1 = entry.1.saturating_add(output);
    }

    pub(super) fn check_budgets(&mut self, now_us: u64, out: &mut Vec<Action>) {
        if self.state.is_terminal() {
            return;
        }
        let limits = self.dag.limits();
        let what = if self.counts.agent_tool_calls > limits.max_tool_calls {
            Some(format!("tool calls: {} used of {}", self.counts.agent_tool_calls, limits.max_tool_calls))
        } else {
            limits
                .max_tokens
                .filter(|&max| self.counts.tokens > max)
                .map(|max| format!("tokens: {} used of {max}", self.counts.tokens))
        };
        if let Some(what) = what {
            out.push(Action::Publish(Update::BudgetExceeded { what }));
            self.cancel(RunState::BudgetExceeded, now_us, out);
        }
    }

    /// Critical steps of a subtask as a node of the DAG: for an orchestrator, the sum over its
    /// stages of one step plus its slowest subagent's steps; subagents count inside their
    /// orchestrator, not on their own; others, their steps.
    pub(crate) fn critical_weight(&self, i: SubtaskIx) -> u64 {
        let node = self.dag.node(i);
        if node.parent.is_some() {
            return 0;
        }
        let slot = &self.slots[i.index()];
        match (&node.work, slot.agent.as_deref()) {
            (Work::Orchestrator(_), Some(agent)) => agent
                .stages
                .iter()
                .map(|s| 1 + s.children.iter().map(|&c| u64::from(self.slots[c.index()].steps)).max().unwrap_or(0))
                .sum(),
            _ => u64::from(slot.steps),
        }
    }
}

/// The answer an agent's output carries (its final message), as text for its orchestrator.
fn answer_text(output: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(output) {
        Ok(serde_json::Value::Object(o)) => match o.get("answer") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => output.to_owned(),
        },
        Ok(serde_json::Value::String(s)) => s,
        _ => output.to_owned(),
    }
}
