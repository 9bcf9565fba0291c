//! The agent loop: call the model with the history and the tool definitions, run every tool
//! call it asks for (the calls of one turn in parallel), append the results, repeat until it
//! answers without tool calls or hits its step cap.
//!
//! Every finished turn is handed to `on_turn` (the worker sends it to the coordinator, which
//! records it), so a new attempt resumes from the transcript without re-running recorded tool
//! calls. Malformed tool-call arguments become a tool error the model sees. An orchestrator also
//! has `create_subagent` and `assign_task`: a turn that assigns tasks ends the attempt with
//! [`AgentOutcome::Suspend`]; the subagents' answers arrive as the tool results of the next
//! attempt.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use serde_json::{Value, json};
use swarm_core::FailureKind;
use swarm_core::agent::{
    ASSIGN_TASK, AgentSpec, CREATE_SUBAGENT, MARK_ARTIFACT, Message, OrchestratorSpec, REQUEST_APPROVAL, Role,
    SpawnRequest, Turn,
};
use swarm_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::gate::{Gate, PermitAsk};
use crate::model::{ChatRequest, ChatResponse, ModelError, ModelProvider, ModelRegistry, OnDelta, ToolDef};
use crate::tools::{ToolContext, ToolError, ToolRegistry};

/// How an agent attempt ended.
#[derive(Debug)]
pub enum AgentOutcome {
    /// The final answer, and the files its `mark_artifact` calls marked.
    Answer(String, Vec<String>),
    /// An orchestrator assigned tasks: wait for the subagents.
    Suspend { turn: Turn, spawns: Vec<SpawnRequest> },
    /// The agent asked a person (`request_approval`): wait for the decision, which becomes the
    /// result of call `call_id` (the turn has no result for it).
    AskApproval { turn: Turn, call_id: String, question: String },
}

/// What one agent attempt runs with.
pub struct AgentRun<'a> {
    pub task: &'a pb::AgentTask,
    pub run_id: &'a str,
    pub subtask_id: &'a str,
    pub attempt: u32,
    pub tools: &'a ToolRegistry,
    pub models: &'a ModelRegistry,
    /// The model gateway's permits.
    pub gate: &'a Arc<Gate>,
    /// Where partial output goes (model text as it comes, tool calls starting and ending).
    pub output: Option<Arc<crate::output::OutputSink>>,
    pub cancel: CancellationToken,
    /// With a store: the worker's lease hold, handed to tools ([`ToolContext::may_act`]).
    pub hold: Option<Arc<crate::hold::LeaseHold>>,
}

/// A subagent template from `create_subagent`.
#[derive(Clone, Debug)]
struct Template {
    system_prompt: String,
    tools: Vec<String>,
    model: Option<String>,
}

fn err(kind: FailureKind, message: impl Into<String>) -> ToolError {
    ToolError { kind, message: message.into() }
}

/// Runs the loop; `on_turn` receives each finished turn that did not end the attempt.
pub async fn run(a: AgentRun<'_>, mut on_turn: impl FnMut(&Turn)) -> Result<AgentOutcome, ToolError> {
    let (system, first, model_name, allowed) = if a.task.orchestrator {
        let o: OrchestratorSpec = serde_json::from_str(&a.task.spec_json)
            .map_err(|e| err(FailureKind::Permanent, format!("bad orchestrator spec: {e}")))?;
        let system = "You are an orchestrator. Split the goal into parallel subtasks: define subagents with \
                      create_subagent, then start them with assign_task (several in one turn run in parallel). \
                      Their answers come back as the results of your assign_task calls. Answer when done."
            .to_owned();
        (system, o.goal, o.model, o.tools)
    } else {
        let s: AgentSpec = serde_json::from_str(&a.task.spec_json)
            .map_err(|e| err(FailureKind::Permanent, format!("bad agent spec: {e}")))?;
        (s.instructions, s.input, s.model, s.tools)
    };
    let model = a
        .models
        .get(&model_name)
        .ok_or_else(|| err(FailureKind::Permanent, format!("model `{model_name}` is not configured on this worker")))?
        .clone();
    let turns: Vec<Turn> =
        serde_json::from_str(if a.task.transcript_json.is_empty() { "[]" } else { &a.task.transcript_json })
            .map_err(|e| err(FailureKind::Permanent, format!("bad transcript: {e}")))?;
    let mut history = Vec::new();
    if !system.is_empty() {
        history.push(Message::text(Role::System, system));
    }
    history.push(Message::text(Role::User, first));
    history.extend(turns.into_iter().flat_map(|t| t.messages));

    let mut defs: Vec<ToolDef> = Vec::new();
    for name in &allowed {
        if name == MARK_ARTIFACT {
            defs.push(ToolDef {
                name: MARK_ARTIFACT.into(),
                description: "Hand a file of your workspace on to the subtasks that depend on you: a path or \
                              pattern relative to the workspace (report.md, out/*.csv). It is kept once you answer."
                    .into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            });
            continue;
        }
        if name == REQUEST_APPROVAL {
            defs.push(ToolDef {
                name: REQUEST_APPROVAL.into(),
                description: "Ask a person to decide before you go on (you wait, holding nothing). The result \
                              is {\"approved\": true, \"data\": …} or {\"approved\": false, \"reason\": …}. \
                              With a timeout, `on_timeout` (reject unless approve) applies when nobody decides \
                              in time, and the result says \"timed_out\"."
                    .into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "question": {"type": "string"},
                        "timeout": {"type": "string", "description": "how long to wait, e.g. \"30s\" or \"10m\""},
                        "on_timeout": {"type": "string", "enum": ["reject", "approve"]}
                    },
                    "required": ["question"]
                }),
            });
            continue;
        }
        let tool = a
            .tools
            .get(name)
            .ok_or_else(|| err(FailureKind::Permanent, format!("tool `{name}` is not offered by this worker")))?;
        let info = tool.info();
        defs.push(ToolDef {
            name: info.name.clone(),
            description: info.description.clone(),
            parameters: json!({"type": "object", "additionalProperties": true}),
        });
    }
    let mut templates: HashMap<String, Template> = HashMap::new();
    if a.task.orchestrator {
        defs.push(ToolDef {
            name: CREATE_SUBAGENT.into(),
            description: "Define a subagent: a name, its system prompt and the tools it may use.".into(),
            parameters: json!({"type": "object", "properties": {
                "name": {"type": "string"}, "system_prompt": {"type": "string"},
                "tools": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "system_prompt"]}),
        });
        defs.push(ToolDef {
            name: ASSIGN_TASK.into(),
            description: "Start a subagent on a task; its final answer is this call's result.".into(),
            parameters: json!({"type": "object", "properties": {
                "subagent": {"type": "string"}, "task": {"type": "string"}}, "required": ["subagent", "task"]}),
        });
        // Templates defined in earlier attempts live in the transcript.
        for m in &history {
            for c in m.tool_calls.iter().filter(|c| c.name == CREATE_SUBAGENT) {
                if let Ok(t) = parse_template(&c.arguments) {
                    templates.insert(t.0, t.1);
                }
            }
        }
    }

    let mut steps = a.task.steps_taken;
    loop {
        if steps >= a.task.max_steps {
            return Err(err(
                FailureKind::Permanent,
                format!("step cap of {} reached without an answer", a.task.max_steps),
            ));
        }
        if let Some(o) = &a.output {
            o.turn(steps);
        }
        let response = chat(&a, model.as_ref(), a.models.endpoint(&model_name), &model_name, &history, &defs).await?;
        let assistant = response.message;
        if assistant.tool_calls.is_empty() {
            // The answer is recorded too (its tokens count; it is not a step).
            let answer = assistant.content.clone().unwrap_or_default();
            on_turn(&Turn { messages: vec![assistant], usage: response.usage, fence: 0, seq: 0 });
            return Ok(AgentOutcome::Answer(answer, swarm_core::agent::marked_artifacts(&history)));
        }
        let mut results: Vec<Option<Message>> = vec![None; assistant.tool_calls.len()];
        let mut spawns = Vec::new();
        let mut calls = Vec::new();
        let mut asked: Option<(usize, String)> = None;
        for (k, call) in assistant.tool_calls.iter().enumerate() {
            let reply = |text: String| Some(Message::tool_result(&call.id, text));
            // The orchestration tools run here, each an `execute_tool` span of the agent's.
            let orchestration = a.task.orchestrator && (call.name == CREATE_SUBAGENT || call.name == ASSIGN_TASK);
            let span = orchestration
                .then(|| crate::telemetry::tool_span(&call.name, &call.id, a.run_id, a.subtask_id, a.attempt, false));
            let refused = |span: &Option<tracing::Span>| {
                if let Some(s) = span {
                    crate::telemetry::tool_done(s, &call.name, Default::default(), Some(FailureKind::Permanent));
                }
            };
            if a.task.orchestrator && call.name == CREATE_SUBAGENT {
                results[k] = match parse_template(&call.arguments) {
                    Ok((name, t)) => {
                        templates.insert(name.clone(), t);
                        reply(format!("created subagent `{name}`"))
                    }
                    Err(e) => {
                        refused(&span);
                        reply(format!("error: {e}"))
                    }
                };
            } else if a.task.orchestrator && call.name == ASSIGN_TASK {
                match parse_assignment(&call.arguments) {
                    Ok((name, task)) => match templates.get(&name) {
                        Some(t) => spawns.push(SpawnRequest {
                            call_id: call.id.clone(),
                            name: name.clone(),
                            agent: AgentSpec {
                                instructions: t.system_prompt.clone(),
                                input: task,
                                model: t.model.clone().unwrap_or_else(|| model_name.clone()),
                                tools: t.tools.clone(),
                                max_steps: None,
                            },
                            // The subagent's spans nest under this call's.
                            trace_context: span
                                .as_ref()
                                .map(|s| swarm_telemetry::inject(s).into_iter().collect())
                                .unwrap_or_default(),
                        }),
                        None => {
                            refused(&span);
                            results[k] = reply(format!("error: no subagent named `{name}`; create it first"))
                        }
                    },
                    Err(e) => {
                        refused(&span);
                        results[k] = reply(format!("error: {e}"))
                    }
                }
            } else if call.name == MARK_ARTIFACT && allowed.contains(&call.name) {
                results[k] = reply(match swarm_core::agent::mark_artifact_path(&call.arguments) {
                    Ok(path) => format!("marked `{path}`: it is handed on once you answer"),
                    Err(e) => format!("error: {e}"),
                });
            } else if call.name == REQUEST_APPROVAL && allowed.contains(&call.name) {
                match parse_question(&call.arguments) {
                    Ok(q) if asked.is_none() => asked = Some((k, q)),
                    Ok(_) => results[k] = reply("error: one request_approval at a time; ask again later".into()),
                    Err(e) => results[k] = reply(format!("error: {e}")),
                }
            } else if !allowed.contains(&call.name) {
                results[k] = reply(format!("error: tool `{}` is not available to this agent", call.name));
            } else {
                match serde_json::from_str::<Value>(if call.arguments.trim().is_empty() {
                    "{}"
                } else {
                    &call.arguments
                }) {
                    Err(e) => {
                        results[k] = reply(format!("error: the arguments are not valid JSON ({e}); send a JSON object"))
                    }
                    // Network for `exec` is the run spec's to open (a tool subtask's args), never
                    // a model's.
                    Ok(args) if call.name == "exec" && args.get("network").is_some_and(|n| n != &Value::Bool(false)) => {
                        results[k] = reply(
                            "error: exec's `network` is opened by the run spec (a tool subtask's args), not by an agent"
                                .into(),
                        )
                    }
                    Ok(args) => calls.push((k, call.name.clone(), args)),
                }
            }
        }
        // The turn's tool calls run in parallel.
        let runs = calls.into_iter().map(|(k, name, args)| {
            let tool = a.tools.get(&name).cloned();
            let ctx = ToolContext {
                run_id: a.run_id.to_owned(),
                subtask_id: a.subtask_id.to_owned(),
                attempt: a.attempt,
                cancel: a.cancel.child_token(),
                hold: a.hold.clone(),
            };
            let span = crate::telemetry::tool_span(
                &name,
                &assistant.tool_calls[k].id,
                a.run_id,
                a.subtask_id,
                a.attempt,
                false,
            );
            if swarm_telemetry::capture_content() {
                span.record("gen_ai.tool.call.arguments", args.to_string());
            }
            let started = std::time::Instant::now();
            let name_for_metrics = name.clone();
            let progress = a.output.clone();
            async move {
                if let Some(p) = &progress {
                    p.tool_started(&name_for_metrics);
                }
                let cancel = ctx.cancel.clone();
                let call = async {
                    match tool {
                        Some(t) => match t.info().timeout {
                            Some(limit) => tokio::time::timeout(limit, t.call(args, ctx))
                                .await
                                .unwrap_or_else(|_| Err(err(FailureKind::Timeout, "the tool timed out"))),
                            None => t.call(args, ctx).await,
                        },
                        None => Err(err(FailureKind::Permanent, "unknown tool")),
                    }
                };
                // A cancelled attempt stops its calls where they are (a tool need not look at
                // its token): a worker that fences itself must not finish a side effect.
                let out = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(err(FailureKind::Cancelled, "cancelled")),
                    r = call => r,
                };
                if let Some(p) = &progress {
                    p.tool_finished(&name_for_metrics, out.is_err());
                }
                crate::telemetry::tool_done(
                    &tracing::Span::current(),
                    &name_for_metrics,
                    started.elapsed(),
                    out.as_ref().err().map(|e| e.kind),
                );
                (k, out)
            }
            .instrument(span)
        });
        for (k, out) in futures_util::future::join_all(runs).await {
            let call = &assistant.tool_calls[k];
            let text = match out {
                Ok(v) => v.to_string(),
                Err(e) if e.kind == FailureKind::Cancelled => return Err(e),
                Err(e) => format!("error ({}): {}", e.kind.as_str(), e.message),
            };
            results[k] = Some(Message::tool_result(&call.id, text));
        }
        if let Some((k, _)) = &asked
            && !spawns.is_empty()
        {
            let text = "error: ask for approval in a turn without assign_task".to_owned();
            results[*k] = Some(Message::tool_result(&assistant.tool_calls[*k].id, text));
            asked = None;
        }
        let mut messages = vec![assistant.clone()];
        messages.extend(results.into_iter().flatten());
        let turn = Turn { messages, usage: response.usage, fence: 0, seq: 0 };
        if !spawns.is_empty() {
            return Ok(AgentOutcome::Suspend { turn, spawns });
        }
        if let Some((k, question)) = asked {
            let call_id = assistant.tool_calls[k].id.clone();
            return Ok(AgentOutcome::AskApproval { turn, call_id, question });
        }
        on_turn(&turn);
        history.extend(turn.messages);
        steps += 1;
    }
}

/// One model call under the gateway: wait for a permit, call, give it back with the usage; a
/// rate-limit refusal gives it back with the pause the endpoint asked for, and asks again (a
/// call never fails for the limit; the attempt's timeout and cancellation still apply).
async fn chat(
    a: &AgentRun<'_>,
    model: &dyn ModelProvider,
    endpoint: &str,
    model_name: &str,
    history: &[Message],
    defs: &[ToolDef],
) -> Result<ChatResponse, ToolError> {
    let requested = if model.model().is_empty() { model_name } else { model.model() };
    let prompt_chars = history.iter().map(Message::chars).sum::<usize>()
        + defs.iter().map(|d| d.name.len() + d.description.len() + d.parameters.to_string().len()).sum::<usize>();
    loop {
        let ask = PermitAsk {
            endpoint: endpoint.to_owned(),
            prompt_chars: prompt_chars as u64,
            max_tokens: model.max_tokens(),
            priority: a.task.priority,
            orchestrator: a.task.orchestrator,
            critical_path: a.task.critical_path,
        };
        let permit = tokio::select! {
            _ = a.cancel.cancelled() => return Err(err(FailureKind::Cancelled, "cancelled")),
            p = a.gate.acquire(ask) => p,
        };
        let gated = permit.gated();
        let chat_span = crate::telemetry::chat_span(model.provider(), requested);
        if swarm_telemetry::capture_content() {
            chat_span.record("gen_ai.input.messages", serde_json::to_string(history).unwrap_or_default());
        }
        let started = std::time::Instant::now();
        let streamed = std::sync::atomic::AtomicBool::new(false);
        let on_delta = |text: &str, reasoning: &str| {
            if let Some(o) = &a.output {
                streamed.store(true, std::sync::atomic::Ordering::Relaxed);
                o.text(text, reasoning);
            }
        };
        let req = ChatRequest {
            agent: &a.task.name,
            messages: history,
            tools: defs,
            gated,
            on_delta: a.output.is_some().then_some(OnDelta(&on_delta)),
        };
        let response = tokio::select! {
            _ = a.cancel.cancelled() => return Err(err(FailureKind::Cancelled, "cancelled")),
            r = model.chat(req).instrument(chat_span.clone()) => r,
        };
        crate::telemetry::chat_done(&chat_span, model.provider(), requested, started.elapsed(), &response);
        match response {
            Ok(r) => {
                permit.settle(r.usage, None);
                // A model that does not stream shows its output when it has answered.
                if let Some(o) = &a.output
                    && !streamed.load(std::sync::atomic::Ordering::Relaxed)
                {
                    let m = &r.message;
                    o.text(m.content.as_deref().unwrap_or(""), m.reasoning_content.as_deref().unwrap_or(""));
                }
                return Ok(r);
            }
            Err(ModelError { throttle: Some(pause), .. }) if gated => {
                permit.settle(Default::default(), Some(pause));
            }
            Err(e) => {
                permit.settle(Default::default(), None);
                return Err(err(e.kind, e.message));
            }
        }
    }
}

fn parse_template(arguments: &str) -> Result<(String, Template), String> {
    let v: Value = serde_json::from_str(arguments).map_err(|e| format!("the arguments are not valid JSON ({e})"))?;
    let name = v.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or("`name` is required")?;
    let system_prompt = v.get("system_prompt").and_then(Value::as_str).unwrap_or_default().to_owned();
    let tools = v
        .get("tools")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let model = v.get("model").and_then(Value::as_str).map(str::to_owned);
    Ok((name.to_owned(), Template { system_prompt, tools, model }))
}

/// The question of a `request_approval` call; a bad timeout or decision is told to the model.
fn parse_question(arguments: &str) -> Result<String, String> {
    swarm_core::spec::Question::parse(arguments).map(|q| q.text)
}

fn parse_assignment(arguments: &str) -> Result<(String, String), String> {
    let v: Value = serde_json::from_str(arguments).map_err(|e| format!("the arguments are not valid JSON ({e})"))?;
    let name = v.get("subagent").and_then(Value::as_str).ok_or("`subagent` is required")?;
    let task = v.get("task").and_then(Value::as_str).ok_or("`task` is required")?;
    Ok((name.to_owned(), task.to_owned()))
}

/// Shared handles the worker keeps for agents.
pub type Models = Arc<ModelRegistry>;
