//! Agents in the domain: what an agent or orchestrator subtask asks for, the messages of its
//! transcript (OpenAI chat shape, so any compatible model can continue it), and the record of
//! one turn.
//!
//! A **step** is one model turn that calls tools. An agent's final answer (a turn without tool
//! calls) ends it and is not a step. An orchestrator turn that calls `assign_task` opens a
//! **stage**: its subagents run, and the orchestrator continues when all of them have answered.

use serde::{Deserialize, Serialize};

/// The name of the tool an orchestrator uses to define a subagent.
pub const CREATE_SUBAGENT: &str = "create_subagent";
/// The name of the tool an orchestrator uses to start a subagent on a task.
pub const ASSIGN_TASK: &str = "assign_task";
/// The name of the tool an agent uses to ask a person before it goes on (granted like any
/// tool, in the agent's `tools`): the agent parks until `SignalRun` decides.
pub const REQUEST_APPROVAL: &str = "request_approval";
/// The tool an agent granted it calls to hand a file of its workspace on (`{path}`: a path
/// or pattern, as `outputs.artifacts`); the files are kept once it answers.
pub const MARK_ARTIFACT: &str = "mark_artifact";
/// The capability a worker advertises when it can run agent loops.
pub const AGENT_CAPABILITY: &str = "@agent";
/// The prefix of the capability a worker advertises for each model endpoint it serves
/// (`@model:NAME`); an agent needs the one for its `model` (or for the part before a `:`).
pub const MODEL_CAPABILITY_PREFIX: &str = "@model:";

/// An agent subtask: a model working on `input` with `tools` until it answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// The system prompt.
    #[serde(default)]
    pub instructions: String,
    /// The task, as the first user message.
    pub input: String,
    /// The model, by endpoint name (`scripted`, `scripted:NAME`, or a configured endpoint).
    pub model: String,
    /// Tools the agent may call (names in the worker's registry).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Step cap (default: the run's subagent cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
}

/// An orchestrator subtask: a model that splits `goal` among subagents it creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSpec {
    /// What to achieve.
    pub goal: String,
    /// The model, as for [`AgentSpec::model`].
    pub model: String,
    /// Tools the orchestrator may call itself, besides `create_subagent` and `assign_task`.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Step cap (default: the run's orchestrator cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Tools it may hand on to its subagents, besides its own `tools`. A subagent asked for
    /// with any other tool is refused (the orchestrator's transcript says why): a model's
    /// output grants nothing the spec did not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subagent_tools: Vec<String>,
    /// Models its subagents may use, besides its own `model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subagent_models: Vec<String>,
    /// Files each subagent hands on from its workspace (patterns, as `outputs.artifacts`).
    /// The orchestrator hands on all of them, merged at their paths (a later subagent's file
    /// replaces an earlier one's), to the subtasks that depend on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subagent_artifacts: Vec<String>,
    /// Where its subagents run (labels, resources, preferences: as a subtask's `placement`).
    /// Its own `placement` places the orchestrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_placement: Option<crate::placement::Placement>,
}

impl OrchestratorSpec {
    /// Why a subagent asking for `agent` may not be started (`None`: it may): a tool or model
    /// the spec did not grant.
    pub fn refuses(&self, agent: &AgentSpec) -> Option<String> {
        let granted = |t: &String| self.tools.contains(t) || self.subagent_tools.contains(t);
        if let Some(tool) = agent.tools.iter().find(|t| !granted(t)) {
            return Some(format!(
                "tool `{tool}` was not granted to this orchestrator's subagents (the spec grants {:?})",
                self.tools.iter().chain(&self.subagent_tools).collect::<Vec<_>>()
            ));
        }
        if agent.model != self.model && !self.subagent_models.contains(&agent.model) {
            return Some(format!(
                "model `{}` was not granted to this orchestrator's subagents (the spec grants {:?})",
                agent.model,
                std::iter::once(&self.model).chain(&self.subagent_models).collect::<Vec<_>>()
            ));
        }
        None
    }
}

/// Who speaks in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call requested by the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRequest {
    /// The model's id for the call.
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments as the model wrote them (JSON text, possibly malformed).
    pub arguments: String,
}

/// One message of a transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Thinking models (Kimi) return reasoning that must be replayed in later requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// Characters it carries (content, reasoning, tool calls' names and arguments): what the
    /// model gateway estimates input tokens from.
    pub fn chars(&self) -> usize {
        self.content.as_ref().map_or(0, String::len)
            + self.reasoning_content.as_ref().map_or(0, String::len)
            + self.tool_calls.iter().map(|c| c.name.len() + c.arguments.len() + c.id.len()).sum::<usize>()
    }

    /// A plain message.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(content.into()),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    /// A tool result.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: Some(content.into()),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
}

/// Token usage of model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What one turn added to a transcript: the assistant message and the results of the tool calls
/// it made (all of them, run in parallel), plus its token usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub usage: Usage,
    /// The attempt that produced it and its sequence number there (0 for turns the coordinator
    /// added, such as delivered subagent answers): what makes re-sent turns recognisable.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fence: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub seq: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

impl Turn {
    /// Tool calls the assistant made in this turn.
    pub fn tool_calls(&self) -> usize {
        self.messages.iter().filter(|m| m.role == Role::Assistant).map(|m| m.tool_calls.len()).sum()
    }

    /// Tool calls that do work: all but `create_subagent` and `assign_task`, which are
    /// orchestration (bounded by the subagent budget instead), `request_approval` and
    /// `mark_artifact`.
    pub fn work_calls(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .flat_map(|m| &m.tool_calls)
            .filter(|c| {
                c.name != CREATE_SUBAGENT
                    && c.name != ASSIGN_TASK
                    && c.name != REQUEST_APPROVAL
                    && c.name != MARK_ARTIFACT
            })
            .count()
    }
}

/// A subagent an orchestrator's turn asks for (`assign_task`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The `assign_task` call it answers.
    pub call_id: String,
    /// The subagent's name (from `create_subagent`).
    pub name: String,
    /// What it runs.
    pub agent: AgentSpec,
    /// The W3C trace context of the call that asked for it (`traceparent`, `tracestate`):
    /// the subagent's spans nest under it. Empty when unknown (records of earlier builds).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub trace_context: std::collections::BTreeMap<String, String>,
}

/// Per-run limits for agent work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunLimits {
    /// Subagents an orchestrator may start in the run (default 100, at most 10,000).
    pub max_subagents: u32,
    /// Tool calls in the whole run (default 1,500, at most 100,000).
    pub max_tool_calls: u32,
    /// Step cap of orchestrators (default 15).
    pub orchestrator_max_steps: u32,
    /// Step cap of subagents (default 100).
    pub subagent_max_steps: u32,
    /// Model tokens (input + output) in the whole run; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_subagents: 100,
            max_tool_calls: 1500,
            orchestrator_max_steps: 15,
            subagent_max_steps: 100,
            max_tokens: None,
        }
    }
}

impl RunLimits {
    /// Hard ceilings of the limits a spec may ask for.
    pub const MAX_SUBAGENTS: u32 = 10_000;
    /// See [`RunLimits::MAX_SUBAGENTS`].
    pub const MAX_TOOL_CALLS: u32 = 100_000;
}

/// The patterns `mark_artifact` calls in `messages` marked (well-formed ones, in order, once).
pub fn marked_artifacts<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in messages.into_iter().flat_map(|m| &m.tool_calls).filter(|c| c.name == MARK_ARTIFACT) {
        if let Ok(path) = mark_artifact_path(&c.arguments)
            && !out.contains(&path)
        {
            out.push(path);
        }
    }
    out
}

/// The path of a `mark_artifact` call's arguments, checked (what the model is told when not).
pub fn mark_artifact_path(arguments: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(arguments).map_err(|e| format!("the arguments are not JSON: {e}"))?;
    let path = v.get("path").and_then(serde_json::Value::as_str).ok_or("`path` (a string) is required")?;
    crate::artifact::check_pattern(path)?;
    Ok(path.to_owned())
}
