//! `swarm replay`: a recorded run's agents run again through this build's agent loop, against
//! their recorded model responses and tool results (no model and no tool is called), and the
//! first step where the code now decides differently is reported.
//!
//! A step is one model call. At step k the loop's request must carry what the run recorded:
//! the agent's instructions and input, then the transcript's first k turns, message for
//! message. The replayed model answers with the recorded assistant message of turn k; a tool
//! the loop calls answers with the recorded result of that call. A request that differs, a
//! step the run never took, a tool call the run never made, or an orchestrator stage whose
//! decisions differ is the divergence. Orchestrators replay attempt by attempt: after a stage,
//! the recorded answers of its subagents are handed back as the run handed them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use swarm_core::FailureKind;
use swarm_core::agent::{
    ASSIGN_TASK, AgentSpec, CREATE_SUBAGENT, MARK_ARTIFACT, Message, OrchestratorSpec, REQUEST_APPROVAL, Role, Turn,
};
use swarm_proto::pb;
use swarm_worker::agent::{AgentOutcome, AgentRun};
use swarm_worker::model::{ChatRequest, ChatResponse, ModelError, ModelProvider, ModelRegistry};
use swarm_worker::tools::{Tool, ToolContext, ToolError, ToolFuture, ToolInfo, ToolRegistry};

use crate::client::{self, Client};

/// What replaying one agent found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentVerdict {
    pub subtask_id: String,
    /// `same`: every recorded step decided as recorded; `diverged`: see `step` and `reason`;
    /// `skipped`: nothing recorded to replay.
    pub outcome: String,
    /// Recorded model calls (steps), and the ones replayed as recorded.
    pub recorded_steps: u32,
    pub replayed_steps: u32,
    /// The first step (0-based model call) that decided differently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The verdicts of a run's agents.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    pub run_id: String,
    pub agents: Vec<AgentVerdict>,
    /// Agents that replayed as recorded, and those that diverged.
    pub same: u32,
    pub diverged: u32,
}

impl ReplayReport {
    /// Whether any agent decided differently.
    pub fn diverged(&self) -> bool {
        self.diverged > 0
    }

    /// For people: one line per agent and a total.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.agents {
            out.push(match (&a.step, &a.reason) {
                (Some(step), Some(reason)) => format!("{}: DIVERGED at step {step}: {reason}", a.subtask_id),
                _ if a.outcome == "skipped" => {
                    format!("{}: skipped ({})", a.subtask_id, a.reason.as_deref().unwrap_or(""))
                }
                _ => format!("{}: same ({} steps)", a.subtask_id, a.replayed_steps),
            });
        }
        out.push(format!(
            "replay of run {}: {} agents decided as recorded, {} diverged",
            self.run_id, self.same, self.diverged
        ));
        out
    }
}

/// Replays the agents of run `run_id` (all, or those named in `only`).
pub async fn replay_run(c: &mut Client, run_id: &str, only: &[String]) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport { run_id: run_id.to_owned(), ..Default::default() };
    let run = client::get(c, run_id, true).await.map_err(|s| client::status_error(&s))?;
    let agents: Vec<&pb::SubtaskStatus> = run
        .subtasks
        .iter()
        .filter(|s| s.kind == "agent" || s.kind == "orchestrator")
        .filter(|s| only.is_empty() || only.contains(&s.id))
        .collect();
    if let Some(missing) = only.iter().find(|id| !agents.iter().any(|a| &a.id == *id)) {
        anyhow::bail!("run {run_id} has no agent `{missing}`");
    }
    for status in agents {
        let req = pb::GetTranscriptRequest { run_id: run_id.to_owned(), subtask_id: status.id.clone() };
        let t = c.get_transcript(client::request(req)).await.map_err(|s| client::status_error(&s))?.into_inner();
        let turns: Vec<Turn> = serde_json::from_str(&t.turns_json)?;
        let verdict = replay_agent(&status.id, status.kind == "orchestrator", &t.agent_json, &turns).await;
        match verdict.outcome.as_str() {
            "same" => report.same += 1,
            "diverged" => report.diverged += 1,
            _ => {}
        }
        report.agents.push(verdict);
    }
    Ok(report)
}

/// Replays one agent's recorded `turns` through this build's agent loop.
pub async fn replay_agent(subtask_id: &str, orchestrator: bool, spec_json: &str, turns: &[Turn]) -> AgentVerdict {
    let recorded_steps = turns.iter().filter(|t| assistant(t).is_some()).count() as u32;
    let mut verdict = AgentVerdict {
        subtask_id: subtask_id.to_owned(),
        outcome: "same".into(),
        recorded_steps,
        replayed_steps: 0,
        step: None,
        reason: None,
    };
    let parsed = if orchestrator {
        serde_json::from_str::<OrchestratorSpec>(spec_json).map(|o| (String::new(), o.goal, o.model, o.tools))
    } else {
        serde_json::from_str::<AgentSpec>(spec_json).map(|a| (a.instructions, a.input, a.model, a.tools))
    };
    let (instructions, input, model_name, tools) = match parsed {
        Ok(p) => p,
        Err(e) => {
            verdict.outcome = "skipped".into();
            verdict.reason = Some(format!("its spec does not read: {e}"));
            return verdict;
        }
    };
    if turns.is_empty() {
        verdict.outcome = "skipped".into();
        verdict.reason = Some("no recorded steps".into());
        return verdict;
    }
    let recorded: Arc<[Turn]> = Arc::from(turns.to_vec());
    let model = Arc::new(ReplayModel {
        instructions: (!orchestrator).then_some(instructions),
        input,
        turns: recorded.clone(),
        divergence: Mutex::new(None),
        calls: Mutex::new(0),
    });
    let mut models = ModelRegistry::new();
    models.register(&model_name, model.clone());
    let gate = Arc::new(swarm_worker::gate::Gate::default());
    // Attempt by attempt: an orchestrator's stage (or an approval) ends one; the recorded
    // answers follow it in the transcript.
    let mut start = 0usize;
    loop {
        let registry = replay_tools(&tools, &recorded[start..]);
        let task = pb::AgentTask {
            orchestrator,
            spec_json: spec_json.to_owned(),
            transcript_json: serde_json::to_string(&recorded[..start]).unwrap_or_default(),
            name: subtask_id.to_owned(),
            max_steps: u32::MAX,
            steps_taken: recorded[..start].iter().filter(|t| t.tool_calls() > 0).count() as u32,
            priority: 0,
            critical_path: 0,
        };
        let run = AgentRun {
            task: &task,
            run_id: "replay",
            subtask_id,
            attempt: 1,
            tools: &registry,
            models: &models,
            gate: &gate,
            output: None,
            cancel: tokio_util::sync::CancellationToken::new(),
            hold: None,
        };
        let outcome = swarm_worker::agent::run(run, |_| {}).await;
        verdict.replayed_steps = *model.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((step, reason)) = model.divergence.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return diverged(verdict, step, reason);
        }
        let at = verdict.replayed_steps.saturating_sub(1);
        let ended_turn = match outcome {
            Ok(AgentOutcome::Answer(..)) => return verdict,
            Ok(AgentOutcome::Suspend { turn, .. }) | Ok(AgentOutcome::AskApproval { turn, .. }) => turn,
            Err(e) => return diverged(verdict, at, format!("the loop failed where the run went on: {}", e.message)),
        };
        // The stage's turn must be the recorded one (the same subagents, the same tasks).
        let k = recorded_index(&recorded, at as usize);
        match k.and_then(|k| recorded.get(k).map(|t| (k, t))) {
            Some((k, t)) if t.messages == ended_turn.messages => {
                start = k + 1;
                // The answers the run handed back (a turn of tool results alone).
                if recorded.get(start).is_some_and(|t| assistant(t).is_none()) {
                    start += 1;
                }
                if start >= recorded.len() {
                    return verdict;
                }
            }
            _ => return diverged(verdict, at, "the stage's decisions (subagents, tasks, results) differ".into()),
        }
    }
}

fn diverged(mut v: AgentVerdict, step: u32, reason: String) -> AgentVerdict {
    v.outcome = "diverged".into();
    v.step = Some(step);
    v.reason = Some(reason);
    v
}

/// A turn's assistant message (none: a turn of handed-back results).
fn assistant(t: &Turn) -> Option<&Message> {
    t.messages.first().filter(|m| m.role == Role::Assistant)
}

/// The index in `turns` of model call `step` (counting the turns with an assistant message).
fn recorded_index(turns: &[Turn], step: usize) -> Option<usize> {
    turns.iter().enumerate().filter(|(_, t)| assistant(t).is_some()).nth(step).map(|(k, _)| k)
}

/// A model that answers with the recorded responses, checking each request against the record.
struct ReplayModel {
    instructions: Option<String>,
    input: String,
    turns: Arc<[Turn]>,
    /// The first divergence: (step, what).
    divergence: Mutex<Option<(u32, String)>>,
    calls: Mutex<u32>,
}

impl ReplayModel {
    fn check(&self, messages: &[Message]) -> Result<Message, String> {
        let mut expected: Vec<Message> = Vec::new();
        if let Some(system) = self.instructions.as_ref().filter(|s| !s.is_empty()) {
            expected.push(Message::text(Role::System, system.clone()));
        }
        let head = messages.iter().position(|m| m.role == Role::User).map_or(0, |u| u + 1);
        if self.instructions.is_some() {
            expected.push(Message::text(Role::User, self.input.clone()));
            if messages.len() < expected.len() || messages[..expected.len()] != expected[..] {
                return Err("the instructions and input sent to the model differ from the spec's".into());
            }
        }
        let head = if self.instructions.is_some() { expected.len() } else { head };
        // The transcript so far: whole recorded turns, in order.
        let mut at = head;
        for t in self.turns.iter() {
            if at == messages.len() {
                return match assistant(t) {
                    Some(m) => Ok(m.clone()),
                    None => Err("the code asks the model where the run handed back subagents' answers".into()),
                };
            }
            let end = at + t.messages.len();
            if end > messages.len() || messages[at..end] != t.messages[..] {
                let k = (at..messages.len().min(end)).find(|&k| messages[k] != t.messages[k - at]).unwrap_or(at);
                return Err(format!(
                    "message {k} of the request differs from the recording: sent {}, recorded {}",
                    brief(messages.get(k)),
                    brief(t.messages.get(k - at))
                ));
            }
            at = end;
        }
        Err(format!("the code asks the model again after the {} recorded turns", self.turns.len()))
    }
}

fn brief(m: Option<&Message>) -> String {
    let Some(m) = m else { return "nothing".into() };
    let text = serde_json::to_string(m).unwrap_or_default();
    if text.len() > 200 { format!("{}…", &text[..text.floor_char_boundary(200)]) } else { text }
}

#[async_trait::async_trait]
impl ModelProvider for ReplayModel {
    async fn chat(&self, req: ChatRequest<'_>) -> Result<ChatResponse, ModelError> {
        let step = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            *calls += 1;
            *calls - 1
        };
        match self.check(req.messages) {
            Ok(message) => Ok(ChatResponse { message, usage: Default::default(), finish_reason: "replayed".into() }),
            Err(reason) => {
                self.divergence.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((step, reason.clone()));
                Err(ModelError {
                    kind: FailureKind::Permanent,
                    message: format!("replay diverged: {reason}"),
                    throttle: None,
                })
            }
        }
    }

    fn provider(&self) -> &str {
        "swarm.replay"
    }
}

/// Tools that answer with the recorded results of `turns`' calls, per tool in call order.
fn replay_tools(allowed: &[String], turns: &[Turn]) -> ToolRegistry {
    let results: HashMap<&str, &str> = turns
        .iter()
        .flat_map(|t| &t.messages)
        .filter_map(|m| Some((m.tool_call_id.as_deref()?, m.content.as_deref().unwrap_or(""))))
        .collect();
    let mut queues: HashMap<String, VecDeque<String>> = HashMap::new();
    let built_in = [CREATE_SUBAGENT, ASSIGN_TASK, MARK_ARTIFACT, REQUEST_APPROVAL];
    for m in turns.iter().filter_map(assistant) {
        for call in m.tool_calls.iter().filter(|c| !built_in.contains(&c.name.as_str())) {
            // Results the loop made itself ("error: …": a refused or malformed call) ran no tool.
            if let Some(text) = results.get(call.id.as_str()).filter(|t| !t.starts_with("error: ")) {
                queues.entry(call.name.clone()).or_default().push_back((*text).to_owned());
            }
        }
    }
    let mut registry = ToolRegistry::new();
    for name in allowed.iter().filter(|n| !built_in.contains(&n.as_str())) {
        let queue = queues.remove(name).unwrap_or_default();
        registry.register(Arc::new(ReplayTool {
            info: ToolInfo {
                name: name.clone(),
                description: String::new(),
                read_only: true,
                idempotent: true,
                timeout: None,
            },
            results: Mutex::new(queue),
        }));
    }
    registry
}

/// One tool of [`replay_tools`].
struct ReplayTool {
    info: ToolInfo,
    results: Mutex<VecDeque<String>>,
}

impl Tool for ReplayTool {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, _args: Value, _ctx: ToolContext) -> ToolFuture {
        let next = self.results.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let name = self.info.name.clone();
        Box::pin(async move {
            let Some(text) = next else {
                return Err(ToolError {
                    kind: FailureKind::Permanent,
                    message: format!("replay: the run made no further call of `{name}`"),
                });
            };
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Ok(v);
            }
            // "error (kind): message", as the loop wrote a failed call's result.
            let failed = text.strip_prefix("error (").and_then(|r| r.split_once("): "));
            match failed {
                Some((kind, message)) => Err(ToolError { kind: kind_named(kind), message: message.to_owned() }),
                None => Ok(Value::String(text)),
            }
        })
    }
}

fn kind_named(name: &str) -> FailureKind {
    [
        FailureKind::Transient,
        FailureKind::Permanent,
        FailureKind::Timeout,
        FailureKind::Cancelled,
        FailureKind::WorkerLost,
        FailureKind::ToolReported,
        FailureKind::Internal,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
    .unwrap_or(FailureKind::ToolReported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_worker::model::ScriptedModel;

    const SCRIPT: &str = "agents:\n  '*':\n    - tool_calls: [{name: echo, arguments: {text: 'a-{turn}'}}, {name: echo, arguments: {text: 'b-{turn}'}}]\n    - tool_calls: [{name: echo, arguments: {text: 'c-{turn}'}}]\n    - content: done\n";

    fn spec(instructions: &str) -> String {
        serde_json::to_string(&AgentSpec {
            instructions: instructions.into(),
            input: "find it".into(),
            model: "scripted".into(),
            tools: vec!["echo".into()],
            max_steps: None,
        })
        .expect("json")
    }

    /// Runs the agent for real (the scripted model, the built-in `echo`) and returns its turns.
    async fn record() -> Vec<Turn> {
        let mut models = ModelRegistry::new();
        models.register("scripted", Arc::new(ScriptedModel::from_yaml(SCRIPT).expect("script")));
        let tools = ToolRegistry::builtin();
        let task = pb::AgentTask {
            orchestrator: false,
            spec_json: spec("be careful"),
            transcript_json: String::new(),
            name: "researcher".into(),
            max_steps: 10,
            steps_taken: 0,
            priority: 0,
            critical_path: 0,
        };
        let gate = Arc::new(swarm_worker::gate::Gate::default());
        let run = AgentRun {
            task: &task,
            run_id: "r",
            subtask_id: "researcher",
            attempt: 1,
            tools: &tools,
            models: &models,
            gate: &gate,
            output: None,
            cancel: tokio_util::sync::CancellationToken::new(),
            hold: None,
        };
        let mut turns = Vec::new();
        let outcome = swarm_worker::agent::run(run, |t| turns.push(t.clone())).await.expect("the agent answers");
        assert!(matches!(outcome, AgentOutcome::Answer(..)), "the agent answers");
        turns
    }

    #[tokio::test]
    async fn a_recorded_agent_replays_as_recorded() {
        let turns = record().await;
        assert_eq!(turns.len(), 3, "{turns:?}");
        let v = replay_agent("researcher", false, &spec("be careful"), &turns).await;
        assert_eq!((v.outcome.as_str(), v.recorded_steps, v.replayed_steps, v.step), ("same", 3, 3, None), "{v:?}");
    }

    #[tokio::test]
    async fn results_handed_back_in_another_order_diverge_at_the_next_step() {
        let mut turns = record().await;
        // The first turn: the assistant's two calls, then their two results. A loop that now
        // orders the results differently sends the model another request at step 1.
        assert_eq!(turns[0].messages.len(), 3, "{:?}", turns[0]);
        turns[0].messages.swap(1, 2);
        let v = replay_agent("researcher", false, &spec("be careful"), &turns).await;
        assert_eq!((v.outcome.as_str(), v.step), ("diverged", Some(1)), "{v:?}");
        assert!(v.reason.as_deref().is_some_and(|r| r.contains("message 3")), "{v:?}");
    }

    #[tokio::test]
    async fn a_loop_that_goes_on_past_the_record_diverges_where_the_record_ends() {
        let turns = record().await;
        // A record that stops before the answer: the loop asks the model once more.
        let v = replay_agent("researcher", false, &spec("be careful"), &turns[..2]).await;
        assert_eq!((v.outcome.as_str(), v.step), ("diverged", Some(2)), "{v:?}");
        // A recorded call whose tool the agent may no longer use: the loop refuses it, and the
        // refusal it hands the model is not the result the run recorded.
        let mut fewer = serde_json::from_str::<AgentSpec>(&spec("be careful")).expect("spec");
        fewer.tools.clear();
        let v = replay_agent("researcher", false, &serde_json::to_string(&fewer).expect("json"), &turns).await;
        assert_eq!((v.outcome.as_str(), v.step), ("diverged", Some(1)), "{v:?}");
        let v = replay_agent("researcher", false, "{not json", &turns).await;
        assert_eq!(v.outcome, "skipped", "{v:?}");
    }
}
