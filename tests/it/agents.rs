//! Agents end to end: the orchestrator and its subagents across workers, the agent loop against
//! an OpenAI-compatible server (retries, malformed tool-call JSON), resuming from the transcript
//! after a worker is lost, step caps and budgets.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_core::agent::{AgentSpec, OrchestratorSpec};
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb::{self, run_event::Event};
use swarm_store::MemoryStore;
use swarm_tests::fixture::{Canned, ModelFixture, completion, streamed};
use swarm_tests::harness::{TestCluster, submit, wait_done, wait_for_events};
use swarm_worker::model::{EndpointConfig, ModelRegistry, OpenAiModel, ScriptedModel};

const DEADLINE: Duration = Duration::from_secs(60);

fn models(scripted: ScriptedModel) -> Arc<ModelRegistry> {
    let mut m = ModelRegistry::new();
    m.register("scripted", Arc::new(scripted));
    Arc::new(m)
}

fn subtask(id: &str, kind: SubtaskKind) -> SubtaskSpec {
    SubtaskSpec {
        retry: None,
        outputs: Default::default(),
        id: id.into(),
        kind,
        depends_on: vec![],
        timeout: None,
        placement: None,
    }
}

fn agent(input: &str, model: &str, tools: &[&str]) -> SubtaskKind {
    SubtaskKind::Agent(AgentSpec {
        instructions: "You are a careful assistant.".into(),
        input: input.into(),
        model: model.into(),
        tools: tools.iter().map(|t| t.to_string()).collect(),
        max_steps: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_runs_100_subagents_across_3_workers() {
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), models(ScriptedModel::demo(100, 15, 2)), 3, 64)
        .await
        .expect("cluster");
    let mut c = tc.client().await.expect("client");
    let spec = RunSpec::new(
        "swarm",
        vec![subtask(
            "lead",
            SubtaskKind::Orchestrator(OrchestratorSpec {
                goal: "research".into(),
                model: "scripted".into(),
                tools: vec![],
                max_steps: None,
                subagent_tools: vec!["sleep".into()],
                subagent_models: vec![],
                subagent_artifacts: vec![],
                subagent_placement: None,
            }),
        )],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let s = run.summary.clone().expect("summary");
    assert_eq!(s.subagents, 100);
    assert_eq!(s.critical_steps, 1 + 15, "one orchestrator stage plus the slowest subagent's 15 steps");
    assert_eq!(s.total_steps, 1 + 100 * 15);
    assert_eq!(s.agent_tool_calls, 100 * 15, "orchestration calls do not count as work");
    // The orchestrator's one resume (after its stage) went back to the worker it was on.
    assert_eq!((s.agent_resumes, s.agent_resumes_sticky), (1, 1), "{s:?}");
    // The orchestrator works while its subagents run: that is work in the breakdown, not
    // time the cluster cannot account for.
    let j = swarm_cli::client::RunJson::from(&run);
    let parts = j.wall_breakdown_ms.clone().expect("breakdown");
    assert!(parts["work"] >= 0.9 * j.wall_ms && parts["other"] <= 0.05 * j.wall_ms, "{parts:?} of {} ms", j.wall_ms);
    let lead = run.subtasks.iter().find(|t| t.id == "lead").expect("lead");
    assert_eq!(lead.output_json, json!({"answer": "merged the findings"}).to_string());
    let workers: std::collections::BTreeSet<&str> =
        run.subtasks.iter().filter(|t| t.id.starts_with("lead:")).map(|t| t.worker_id.as_str()).collect();
    assert_eq!(workers.len(), 3, "subagents ran on every worker: {workers:?}");
    // The stage and the steps were visible live.
    let events = wait_for_events(&mut c, &run_id, DEADLINE, |e| {
        matches!(e.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)))
    })
    .await
    .expect("events");
    let stage = events.iter().find_map(|e| match &e.event {
        Some(Event::StageStarted(s)) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(stage.map(|s| s.subagent_ids.len()), Some(100));
    assert_eq!(events.iter().filter(|e| matches!(e.event, Some(Event::AgentStep(_)))).count(), 1 + 1500);
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_loop_speaks_openai_and_survives_429_500_and_bad_json() {
    let fixture = ModelFixture::start(vec![
        Canned::Status(429, Some(1)),
        Canned::Status(500, None),
        Canned::Ok(completion(None, vec![("c1", "echo", r#"{"text": "hello"}"#), ("c2", "echo", "{not json")])),
        Canned::Ok(completion(Some("the answer is hello"), vec![])),
    ])
    .await
    .expect("fixture");
    // The key comes from a file, never from the request.
    let config = EndpointConfig {
        api_key_file: Some(write_key_file("sk-test-sentinel")),
        ..endpoint(&fixture, "fixture-model", 5, 4, false)
    };
    let mut m = ModelRegistry::new();
    m.register("fixture", Arc::new(OpenAiModel::new(&config).expect("client")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let spec = RunSpec::new("loop", vec![subtask("solo", agent("say hello", "fixture", &["echo"]))]);
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!(run.subtasks[0].output_json, json!({"answer": "the answer is hello"}).to_string());

    let seen = fixture.seen();
    assert_eq!(seen.len(), 4, "429 and 500 were retried");
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(950), "Retry-After: 1 was honoured");
    assert!(seen.iter().all(|s| s.authorization.as_deref() == Some("Bearer sk-test-sentinel")));
    let first = &seen[0].body;
    assert_eq!(first["model"], "fixture-model");
    assert_eq!(first["tools"][0]["function"]["name"], "echo");
    // The last request carries both tool results: the echo output, and the JSON error the
    // model must see for its malformed call.
    let messages = seen[3].body["messages"].as_array().expect("messages").clone();
    let tool_msgs: Vec<&serde_json::Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_msgs.len(), 2);
    assert_eq!(tool_msgs[0]["tool_call_id"], "c1");
    assert!(tool_msgs[0]["content"].as_str().unwrap_or("").contains("hello"));
    assert!(tool_msgs[1]["content"].as_str().unwrap_or("").contains("not valid JSON"), "{:?}", tool_msgs[1]);
    let s = run.summary.expect("summary");
    assert_eq!((s.critical_steps, s.agent_tool_calls), (1, 2));
    assert_eq!(s.tokens, 2 * 15, "token usage is recorded");
    let by_model: Vec<(String, u64, u64)> =
        s.tokens_by_model.iter().map(|m| (m.model.clone(), m.input_tokens, m.output_tokens)).collect();
    assert_eq!(by_model, vec![("fixture".to_owned(), 2 * 12, 2 * 3)], "by the spec's model name, in and out");
    assert_eq!(s.token_budget, 0, "no budget unless the spec sets one");
    tc.stop().await;
}

fn endpoint(fixture: &ModelFixture, model: &str, timeout_secs: u64, max_retries: u32, stream: bool) -> EndpointConfig {
    EndpointConfig {
        base_url: fixture.base_url(),
        model: model.into(),
        timeout_secs: Some(timeout_secs),
        max_retries: Some(max_retries),
        stream,
        ..EndpointConfig::default()
    }
}

fn write_key_file(key: &str) -> String {
    let path = std::env::temp_dir().join(format!("swarm-key-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, key).expect("key file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_model_call_times_out_and_is_retried() {
    let fixture = ModelFixture::start(vec![Canned::Hang, Canned::Ok(completion(Some("late but fine"), vec![]))])
        .await
        .expect("fixture");
    let config = endpoint(&fixture, "m", 1, 2, false);
    let mut m = ModelRegistry::new();
    m.register("fixture", Arc::new(OpenAiModel::new(&config).expect("client")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let run_id =
        submit(&mut c, &RunSpec::new("hang", vec![subtask("a", agent("go", "fixture", &[]))])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(fixture.seen().len(), 2);
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_resumes_from_its_transcript_without_rerunning_recorded_calls() {
    let script = ScriptedModel::from_yaml(
        "agents:\n  '*':\n    - repeat: 6\n      tool_calls: [{name: record, arguments: {ms: 150}}]\n    - content: finished\n",
    )
    .expect("script");
    let mut tc = TestCluster::start_with(Arc::new(MemoryStore::new()), models(script), 2, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &RunSpec::new("resume", vec![subtask("a", agent("work", "scripted", &["record"]))]))
        .await
        .expect("submit");
    let events = wait_for_events(&mut c, &run_id, DEADLINE, |e| {
        e.iter().filter(|e| matches!(e.event, Some(Event::AgentStep(_)))).count() >= 3
    })
    .await
    .expect("three steps");
    let first_worker = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::SubtaskStarted(s)) => Some(s.worker_id.clone()),
            _ => None,
        })
        .expect("started");
    let index = if first_worker == "w0" { 0 } else { 1 };
    tc.cluster.stop_worker(index).await;
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!(run.subtasks[0].attempt, 2);
    assert_ne!(run.subtasks[0].worker_id, first_worker);
    let execs = tc.log.of_run(&run_id);
    let done: Vec<_> = execs.iter().filter(|e| e.completed).collect();
    assert_eq!(done.len(), 6, "six recorded calls in all, none run twice: {execs:?}");
    let before = done.iter().filter(|e| e.attempt == 1).count();
    assert!(before >= 3, "at least three calls finished before the loss");
    assert_eq!(done.iter().filter(|e| e.attempt == 2).count(), 6 - before);
    assert_eq!(run.summary.expect("summary").critical_steps, 6);
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_caps_and_run_budgets_end_runs_clearly() {
    let script = ScriptedModel::from_yaml(
        "agents:\n  '*':\n    - repeat: 10\n      tool_calls: [{name: echo, arguments: {text: x}}]\n    - content: never\n",
    )
    .expect("script");
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), models(script), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");

    // A step cap of 3: the agent fails with a clear error.
    let mut capped = subtask("capped", agent("loop", "scripted", &["echo"]));
    if let SubtaskKind::Agent(a) = &mut capped.kind {
        a.max_steps = Some(3);
    }
    let run_id = submit(&mut c, &RunSpec::new("cap", vec![capped])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    assert!(run.subtasks[0].error_message.contains("step cap of 3"), "{}", run.subtasks[0].error_message);

    // A run budget of 4 tool calls: BUDGET_EXCEEDED, with the event, and what finished is kept.
    let mut spec = RunSpec::new(
        "budget",
        vec![
            subtask("quick", SubtaskKind::Tool { tool: "echo".into(), args: json!({"text": "kept"}) }),
            subtask("spender", agent("loop", "scripted", &["echo"])).after(["quick"]),
        ],
    );
    spec.limits.max_tool_calls = 4;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::BudgetExceeded as i32);
    let quick = run.subtasks.iter().find(|s| s.id == "quick").expect("quick");
    assert_eq!(quick.state, pb::SubtaskState::Succeeded as i32, "finished results are kept");
    let events = wait_for_events(&mut c, &run_id, DEADLINE, |e| {
        matches!(e.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)))
    })
    .await
    .expect("events");
    let what = events.iter().find_map(|e| match &e.event {
        Some(Event::BudgetExceeded(b)) => Some(b.what.clone()),
        _ => None,
    });
    assert!(what.is_some_and(|w| w.starts_with("tool calls: 5 used of 4")), "the budget event names the budget");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_loop_reads_streamed_answers() {
    let fixture = ModelFixture::start(vec![
        Canned::Stream(streamed("let me echo", Some(("s1", "echo", r#"{"text": "streamed"}"#)))),
        Canned::Stream(streamed("echoed: streamed", None)),
    ])
    .await
    .expect("fixture");
    let config = endpoint(&fixture, "m", 5, 1, true);
    let mut m = ModelRegistry::new();
    m.register("fixture", Arc::new(OpenAiModel::new(&config).expect("client")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &RunSpec::new("stream", vec![subtask("a", agent("go", "fixture", &["echo"]))]))
        .await
        .expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!(run.subtasks[0].output_json, json!({"answer": "echoed: streamed"}).to_string());
    let seen = fixture.seen();
    assert_eq!(seen[0].body["stream"], true);
    let tool_msg = seen[1].body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "tool").cloned())
        .expect("tool result");
    assert_eq!(tool_msg["tool_call_id"], "s1");
    assert!(tool_msg["content"].as_str().unwrap_or("").contains("streamed"), "the joined arguments were valid JSON");
    assert_eq!(run.summary.expect("summary").tokens, 2 * 24);
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_model_no_worker_serves_is_warned_about_at_once_then_fails_saying_why() {
    let script = ScriptedModel::from_yaml("agents:\n  '*':\n    - content: done\n").expect("script");
    let tc = TestCluster::start_custom(Arc::new(MemoryStore::new()), models(script), 2, 4, |o| {
        o.coordinator.manager.no_worker_timeout = Duration::from_millis(1500);
    })
    .await
    .expect("cluster");
    let mut c = tc.client().await.expect("client");
    // `fx` is a typo: the workers serve `scripted` only. `scripted:x` resolves to `scripted`.
    let spec = RunSpec::new(
        "typo",
        vec![
            subtask("typo", agent("go", "fx", &[])),
            subtask("after", SubtaskKind::Tool { tool: "echo".into(), args: json!({"text": "x"}) }).after(["typo"]),
            subtask("fine", SubtaskKind::Tool { tool: "echo".into(), args: json!({"text": "y"}) }),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    // The warning comes before the subtask fails: it is said when it is first parked.
    let events = wait_for_events(&mut c, &run_id, DEADLINE, |e| {
        e.iter().any(|e| matches!(&e.event, Some(Event::Warning(_)) | Some(Event::SubtaskFailed(_))))
    })
    .await
    .expect("events");
    let warning = events.iter().find_map(|e| match &e.event {
        Some(Event::Warning(w)) => Some(w.clone()),
        _ => None,
    });
    let warning = warning.expect("a Warning event before any failure");
    assert_eq!(warning.subtask_id, "typo");
    assert!(warning.message.contains("no connected worker offers model `fx`"), "{}", warning.message);

    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    let by_id = |id: &str| run.subtasks.iter().find(|s| s.id == id).expect("subtask").clone();
    let typo = by_id("typo");
    assert_eq!(typo.state, pb::SubtaskState::Failed as i32);
    assert_eq!(typo.error_kind, pb::FailureKind::Permanent as i32);
    assert!(typo.error_message.starts_with("no connected worker offers model `fx`"), "{}", typo.error_message);
    assert_eq!(by_id("after").state, pb::SubtaskState::Skipped as i32);
    assert_eq!(by_id("fine").state, pb::SubtaskState::Succeeded as i32, "the rest of the run goes on");
    let warnings = wait_for_events(&mut c, &run_id, DEADLINE, |e| {
        matches!(e.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)))
    })
    .await
    .expect("events")
    .iter()
    .filter(|e| matches!(e.event, Some(Event::Warning(_))))
    .count();
    assert_eq!(warnings, 1, "said once");

    // A model name with a `:` suffix resolves to its base endpoint, as on the worker.
    let ok = RunSpec::new("suffix", vec![subtask("a", agent("go", "scripted:variant", &[]))]);
    let run_id = submit(&mut c, &ok).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_cannot_hand_its_subagents_a_tool_the_spec_did_not_grant() {
    // The orchestrator's model asks for a helper with the side-effecting `record` tool.
    let script = ScriptedModel::from_yaml(
        "agents:\n  lead:\n    - tool_calls: [{name: create_subagent, arguments: {name: helper, system_prompt: help, tools: [record]}}, {name: assign_task, arguments: {subagent: helper, task: go}}]\n    - content: all done\n  helper:\n    - tool_calls: [{name: record, arguments: {ms: 1}}]\n    - content: helped\n",
    )
    .expect("script");
    let store = Arc::new(MemoryStore::new());
    let tc = TestCluster::start_with(store.clone(), models(script), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let lead = |grant: &[&str]| {
        subtask(
            "lead",
            SubtaskKind::Orchestrator(OrchestratorSpec {
                goal: "delegate".into(),
                model: "scripted".into(),
                tools: vec![],
                max_steps: None,
                subagent_tools: grant.iter().map(|t| t.to_string()).collect(),
                subagent_models: vec![],
                subagent_artifacts: vec![],
                subagent_placement: None,
            }),
        )
    };
    let run_id = submit(&mut c, &RunSpec::new("no-grant", vec![lead(&[])])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!(run.summary.expect("summary").subagents, 0, "no helper was started");
    assert!(tc.log.of_run(&run_id).is_empty(), "`record` never ran");
    let turns = swarm_store::StateStore::range(&*store, format!("/swarm/v1/turns/{run_id}/lead/").as_bytes(), None, 0)
        .await
        .expect("turns");
    let transcript: String = turns.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect();
    assert!(transcript.contains("tool `record` was not granted"), "the orchestrator is told why: {transcript}");

    // Granted in the spec, the same request starts the helper.
    let run_id = submit(&mut c, &RunSpec::new("granted", vec![lead(&["record"])])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.summary.expect("summary").subagents, 1);
    assert_eq!(tc.log.of_run(&run_id).iter().filter(|e| e.completed).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_cannot_open_execs_network_only_the_spec_can() {
    let script = ScriptedModel::from_yaml(
        "agents:\n  a:\n    - tool_calls: [{name: exec, arguments: {cmd: [curl, 'http://10.0.0.1'], network: true}}]\n    - content: tried\n",
    )
    .expect("script");
    let store = Arc::new(MemoryStore::new());
    let mut tc = TestCluster::start_with(store.clone(), models(script), 0, 4).await.expect("cluster");
    // A worker whose `exec` counts its calls (none must come).
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tools = swarm_worker::ToolRegistry::builtin();
    tools.register(Arc::new(CountingExec(calls.clone())));
    tc.cluster.add_worker("w0", 4, Arc::new(tools));
    tc.cluster.wait_for_workers(1, DEADLINE).await.expect("worker");
    let mut c = tc.client().await.expect("client");
    let spec = RunSpec::new("net", vec![subtask("a", agent("fetch it", "scripted", &["exec"]))]);
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let turns = swarm_store::StateStore::range(&*store, format!("/swarm/v1/turns/{run_id}/a/").as_bytes(), None, 0)
        .await
        .expect("turns");
    let transcript: String = turns.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect();
    assert!(transcript.contains("`network` is opened by the run spec"), "the model is told why: {transcript}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0, "exec was called");
    tc.stop().await;
}

/// An `exec` that only counts its calls.
struct CountingExec(Arc<std::sync::atomic::AtomicUsize>);

impl swarm_worker::tools::Tool for CountingExec {
    fn info(&self) -> &swarm_worker::tools::ToolInfo {
        static INFO: std::sync::OnceLock<swarm_worker::tools::ToolInfo> = std::sync::OnceLock::new();
        INFO.get_or_init(|| swarm_worker::tools::ToolInfo {
            name: "exec".into(),
            description: "counts".into(),
            read_only: false,
            idempotent: false,
            timeout: None,
        })
    }
    fn call(
        &self,
        _args: serde_json::Value,
        _ctx: swarm_worker::tools::ToolContext,
    ) -> swarm_worker::tools::ToolFuture {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(serde_json::json!({})) })
    }
}
