//! The scripted model: replies from a YAML script, per agent and turn (tests, demos, benchmarks).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};
use swarm_core::agent::{Message, Role, ToolCallRequest, Usage};

use super::*;

/// One scripted reply.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    /// Repeat this reply so many times (default 1).
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ScriptCall>,
}

/// A scripted tool call; `raw_arguments` sends text as is (to test malformed JSON).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
    #[serde(default)]
    pub raw_arguments: Option<String>,
}

/// A script file: replies per agent name (`*` for any other agent).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub agents: HashMap<String, Vec<ScriptTurn>>,
}

/// Deterministic replies from a [`Script`]: the n-th assistant turn of an agent gets the n-th
/// reply of its script; past the end it answers "done". `{turn}` in a string argument becomes
/// the turn number (from 0), `{task}` the agent's task (its first user message).
pub struct ScriptedModel {
    replies: HashMap<String, Vec<ScriptTurn>>,
}

impl ScriptedModel {
    /// A model following `script`.
    pub fn new(script: Script) -> Self {
        let replies = script
            .agents
            .into_iter()
            .map(|(name, turns)| {
                let expanded = turns
                    .into_iter()
                    .flat_map(|t| std::iter::repeat_n(t.clone(), t.repeat.unwrap_or(1) as usize))
                    .collect();
                (name, expanded)
            })
            .collect();
        Self { replies }
    }

    /// Reads a YAML script.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str::<Script>(text).map(Self::new).map_err(|e| e.to_string())
    }

    /// The demo swarm: an orchestrator `lead` that creates a `researcher` subagent and assigns it
    /// `subagents` tasks at once; each researcher makes `calls` sequential `sleep` calls of `ms`.
    pub fn demo(subagents: usize, calls: u32, ms: u64) -> Self {
        let create = ScriptCall {
            name: swarm_core::agent::CREATE_SUBAGENT.into(),
            arguments: json!({"name": "researcher", "system_prompt": "You research one part of the question.", "tools": ["sleep"]}),
            raw_arguments: None,
        };
        let mut first = vec![create];
        first.extend((0..subagents).map(|i| ScriptCall {
            name: swarm_core::agent::ASSIGN_TASK.into(),
            arguments: json!({"subagent": "researcher", "task": format!("research part {i}")}),
            raw_arguments: None,
        }));
        let lead = vec![
            ScriptTurn { repeat: None, content: None, reasoning: None, tool_calls: first },
            ScriptTurn {
                repeat: None,
                content: Some("merged the findings".into()),
                reasoning: None,
                tool_calls: vec![],
            },
        ];
        let researcher = vec![
            ScriptTurn {
                repeat: Some(calls),
                content: None,
                reasoning: None,
                tool_calls: vec![ScriptCall {
                    name: "sleep".into(),
                    arguments: json!({"ms": ms}),
                    raw_arguments: None,
                }],
            },
            ScriptTurn { repeat: None, content: Some("found it".into()), reasoning: None, tool_calls: vec![] },
        ];
        Self::new(Script { agents: HashMap::from([("lead".into(), lead), ("researcher".into(), researcher)]) })
    }
}

#[async_trait::async_trait]
impl ModelProvider for ScriptedModel {
    async fn chat(&self, req: ChatRequest<'_>) -> Result<ChatResponse, ModelError> {
        let script = self
            .replies
            .get(req.agent)
            .or_else(|| self.replies.get("*"))
            .ok_or_else(|| ModelError::permanent(format!("no script for agent `{}`", req.agent)))?;
        let turn_no = req.messages.iter().filter(|m| m.role == Role::Assistant).count();
        // `{task}`: the agent's task (its first user message), escaped for the JSON text.
        let task = req.messages.iter().find(|m| m.role == Role::User).and_then(|m| m.content.as_deref()).unwrap_or("");
        let task = serde_json::Value::from(task).to_string();
        let task = &task[1..task.len() - 1];
        let chars: usize = req.messages.iter().map(|m| m.content.as_deref().map_or(0, str::len)).sum();
        let (message, finish) = match script.get(turn_no) {
            Some(t) if !t.tool_calls.is_empty() => {
                let tool_calls = t
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(k, c)| ToolCallRequest {
                        id: format!("call-{turn_no}-{k}"),
                        name: c.name.clone(),
                        arguments: c.raw_arguments.clone().unwrap_or_else(|| {
                            c.arguments.to_string().replace("{turn}", &turn_no.to_string()).replace("{task}", task)
                        }),
                    })
                    .collect();
                let m = Message {
                    role: Role::Assistant,
                    content: t.content.clone(),
                    reasoning_content: t.reasoning.clone(),
                    tool_calls,
                    tool_call_id: None,
                };
                (m, "tool_calls")
            }
            Some(t) => (
                Message {
                    role: Role::Assistant,
                    content: Some(t.content.clone().unwrap_or_default()),
                    reasoning_content: t.reasoning.clone(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
                "stop",
            ),
            None => (Message::text(Role::Assistant, "done"), "stop"),
        };
        let usage = Usage {
            input_tokens: (chars / 4) as u64 + 1,
            output_tokens: 1 + message.content.as_deref().map_or(0, str::len) as u64 / 4,
        };
        Ok(ChatResponse { message, usage, finish_reason: finish.into() })
    }
}
