//! Property tests of what a worker reads from outside: arbitrary chat-completion answers
//! (JSON and server-sent events) from a model server and arbitrary MCP `tools/call` results,
//! through the agent loop (as an agent and as an orchestrator). Whatever they say, the loop
//! ends (an answer, a suspension or a classified error) within its step cap, without a panic.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{Value, json};
use swarm_core::agent::{AgentSpec, OrchestratorSpec};
use swarm_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentRun};
use crate::model::{
    ChatRequest, ChatResponse, ModelError, ModelProvider, ModelRegistry, parse_completion, parse_stream,
};
use crate::tools::{Tool, ToolContext, ToolFuture, ToolInfo, ToolRegistry, mcp};

/// Answers from a script of raw response texts, parsed as the HTTP client parses them.
struct Replay {
    answers: Mutex<VecDeque<String>>,
    stream: bool,
}

#[async_trait::async_trait]
impl ModelProvider for Replay {
    async fn chat(&self, _req: ChatRequest<'_>) -> Result<ChatResponse, ModelError> {
        let next = self.answers.lock().expect("lock").pop_front();
        let text = next.unwrap_or_else(|| r#"{"choices": [{"message": {"content": "done"}}]}"#.into());
        if self.stream { parse_stream(&text) } else { parse_completion(&text) }
    }
}

/// An MCP-backed tool whose server answers with the scripted `tools/call` results.
struct McpReplay {
    info: ToolInfo,
    results: Mutex<VecDeque<Value>>,
}

impl Tool for McpReplay {
    fn info(&self) -> &ToolInfo {
        &self.info
    }
    fn call(&self, _args: Value, _ctx: ToolContext) -> ToolFuture {
        let result = self.results.lock().expect("lock").pop_front().unwrap_or(Value::Null);
        Box::pin(async move { mcp::tool_result(result) })
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(u64::MAX)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn call_name() -> impl Strategy<Value = String> {
    prop_oneof![Just("t"), Just("echo"), Just("create_subagent"), Just("assign_task"), Just(""), Just("nope")]
        .prop_map(String::from)
}

fn call_args() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{}".to_owned()),
        Just(r#"{"text": "hi"}"#.to_owned()),
        Just(r#"{"name": "a", "system_prompt": "x", "tools": ["t", "nope"]}"#.to_owned()),
        Just(r#"{"subagent": "a", "task": "x"}"#.to_owned()),
        Just(r#"{"subagent": "ghost", "task": ""}"#.to_owned()),
        ".{0,16}",
        json_value().prop_map(|v| v.to_string()),
    ]
}

fn usage() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (any::<u64>(), any::<u64>()).prop_map(|(p, c)| json!({"prompt_tokens": p, "completion_tokens": c})),
        json_value(),
    ]
}

/// A chat-completion answer: mostly the API's shape with odd contents, sometimes anything.
fn completion() -> impl Strategy<Value = String> {
    let call = (".{0,6}", call_name(), call_args(), any::<bool>()).prop_map(|(id, name, args, as_object)| {
        let arguments =
            if as_object { serde_json::from_str(&args).unwrap_or(Value::String(args)) } else { json!(args) };
        json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
    });
    prop_oneof![
        6 => (prop::option::of(".{0,20}"), prop::collection::vec(call, 0..4), usage(), prop::option::of(".{0,6}"))
            .prop_map(|(content, calls, usage, finish)| {
                let message = json!({"role": "assistant", "content": content,
                                     "tool_calls": if calls.is_empty() { Value::Null } else { Value::Array(calls) }});
                json!({"choices": [{"message": message, "finish_reason": finish}], "usage": usage}).to_string()
            }),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => ".{0,40}",
    ]
}

/// A streamed answer: `data:` lines of chunks with deltas (tool-call indexes at their edges).
fn stream() -> impl Strategy<Value = String> {
    let part = (
        prop_oneof![0u64..3, Just(255), Just(256), Just(u64::MAX)],
        prop::option::of(".{0,4}"),
        call_name(),
        call_args(),
    )
        .prop_map(
            |(index, id, name, args)| json!({"index": index, "id": id, "function": {"name": name, "arguments": args}}),
        );
    let chunk = prop_oneof![
        4 => (prop::option::of(".{0,8}"), prop::collection::vec(part, 0..3), usage(), prop::option::of(".{0,6}"))
            .prop_map(|(content, parts, usage, finish)| {
                json!({"choices": [{"delta": {"content": content, "tool_calls": parts}, "finish_reason": finish}],
                       "usage": usage})
                .to_string()
            }),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => ".{0,20}",
    ];
    (prop::collection::vec(chunk, 0..6), any::<bool>()).prop_map(|(chunks, done)| {
        let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        if done {
            text.push_str("data: [DONE]\n\n");
        }
        text
    })
}

/// A `tools/call` result: mostly MCP's shape with odd contents, sometimes anything.
fn mcp_result() -> impl Strategy<Value = Value> {
    let item = prop_oneof![
        ".{0,12}".prop_map(|t| json!({"type": "text", "text": t})),
        json_value().prop_map(|v| json!({"type": "text", "text": v.to_string()})),
        json_value(),
    ];
    prop_oneof![
        4 => (prop::collection::vec(item, 0..3), prop::option::of(json_value()), json_value())
            .prop_map(|(content, structured, is_error)| {
                json!({"content": content, "structuredContent": structured, "isError": is_error})
            }),
        1 => json_value(),
    ]
}

fn play(orchestrator: bool, stream: bool, answers: Vec<String>, results: Vec<Value>) {
    let mut models = ModelRegistry::new();
    models.register("f", Arc::new(Replay { answers: Mutex::new(answers.into()), stream }));
    let mut tools = ToolRegistry::builtin();
    let info = ToolInfo {
        name: "t".into(),
        description: "scripted MCP tool".into(),
        read_only: true,
        idempotent: true,
        timeout: None,
    };
    tools.register(Arc::new(McpReplay { info, results: Mutex::new(results.into()) }));
    let spec_json = if orchestrator {
        serde_json::to_string(&OrchestratorSpec {
            goal: "g".into(),
            model: "f".into(),
            tools: vec!["t".into()],
            max_steps: None,
            subagent_tools: vec![],
            subagent_models: vec![],
            subagent_artifacts: vec![],
            subagent_placement: None,
        })
    } else {
        serde_json::to_string(&AgentSpec {
            instructions: String::new(),
            input: "i".into(),
            model: "f".into(),
            tools: vec!["t".into(), "echo".into()],
            max_steps: None,
        })
    }
    .expect("spec");
    let task = pb::AgentTask {
        orchestrator,
        spec_json,
        transcript_json: String::new(),
        name: "a".into(),
        max_steps: 6,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let run = AgentRun {
            task: &task,
            run_id: "r",
            subtask_id: "s",
            attempt: 1,
            tools: &tools,
            models: &models,
            gate: &Arc::new(crate::gate::Gate::default()),
            output: None,
            cancel: CancellationToken::new(),
            hold: None,
        };
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), agent::run(run, |_| {})).await;
        assert!(ended.is_ok(), "the agent loop did not end");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_completions_and_mcp_results_never_panic_the_agent_loop(
        orchestrator in any::<bool>(),
        answers in prop::collection::vec(completion(), 0..7),
        results in prop::collection::vec(mcp_result(), 0..7),
    ) {
        play(orchestrator, false, answers, results);
    }

    #[test]
    fn arbitrary_streams_never_panic_the_agent_loop(
        orchestrator in any::<bool>(),
        answers in prop::collection::vec(stream(), 0..7),
        results in prop::collection::vec(mcp_result(), 0..3),
    ) {
        play(orchestrator, true, answers, results);
    }

    #[test]
    fn arbitrary_mcp_results_become_outputs_or_classified_errors(result in mcp_result()) {
        match mcp::tool_result(result) {
            Ok(_) => {}
            Err(e) => prop_assert_eq!(e.kind, swarm_core::FailureKind::ToolReported),
        }
    }
}
