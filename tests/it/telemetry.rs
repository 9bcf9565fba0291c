//! Telemetry across real processes: a `swarm coordinator` and a `swarm worker` export spans and
//! metrics over OTLP to an in-test collector, serve `/metrics`, and pass the W3C trace context
//! on every hop (coordinator → worker in the assignment, worker → model in HTTP headers).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use swarm_core::agent::AgentSpec;
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::etcd::free_port;
use swarm_tests::fixture::{Canned, ModelFixture, completion};
use swarm_tests::harness::{submit, wait_done};
use swarm_tests::otlp::{Collector, ReceivedSpan};
use swarm_tests::process::SwarmProcess;

const SENTINEL: &str = "sk-sentinel-7c1f0d2e9b";

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("swarm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Prometheus text → (series with labels, value), checking every sample line parses.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value in `{line}`: {e}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "not a Prometheus metric name: {name}"
        );
        out.insert(series.to_owned(), value);
    }
    out
}

/// The sum of every series of `name` whose labels include all of `labels`.
fn sample(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(series, _)| series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// `GET path` from 127.0.0.1:port over HTTP/1.0 (the body, after checking for 200).
async fn get_text(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

async fn wait_spans(
    collector: &Collector,
    deadline: Duration,
    pred: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let spans = collector.spans();
        if pred(&spans) {
            return spans;
        }
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert!(tokio::time::Instant::now() < until, "spans never arrived; got {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of the process serving on `port`, once it accepts connections.
async fn connect(port: u16, p: &SwarmProcess) -> swarm_cli::client::Client {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match swarm_cli::client::connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) => assert!(tokio::time::Instant::now() < until, "{e}: {}", p.log_text()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_cross_processes_follow_genai_conventions_and_metrics_hold_the_named_series() {
    let collector = Collector::start().await.expect("collector");
    let fixture = ModelFixture::start(vec![
        Canned::Ok(completion(None, vec![("call-7", "echo", r#"{"text": "from the model"}"#)])),
        Canned::Ok(completion(Some("all done"), vec![])),
        // The orchestrator (after the helper): one subagent, whose answer it then sums up.
        Canned::Ok(completion(
            None,
            vec![
                ("call-c", "create_subagent", r#"{"name": "scout", "system_prompt": "look"}"#),
                ("call-a", "assign_task", r#"{"subagent": "scout", "task": "look around"}"#),
            ],
        )),
        Canned::Ok(completion(Some("looked"), vec![])),
        Canned::Ok(completion(Some("orchestrated"), vec![])),
    ])
    .await
    .expect("fixture");
    let dir = temp_dir("telemetry");
    let models = dir.join("models.yaml");
    std::fs::write(
        &models,
        format!(
            "fixture:\n  base_url: {}\n  model: fixture-model\n  api_key_env: SWARM_TEST_MODEL_KEY\n  rpm: 6000\n",
            fixture.base_url()
        ),
    )
    .expect("models file");
    // The reference MCP server over stdio (npm, pinned in tests/web/package-lock.json).
    let mcp = dir.join("mcp.yaml");
    let everything = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    // Over stdio, through `tee` (what the worker sends the server is kept: the witness of the
    // trace context in `_meta`); and the same server over streamable HTTP (a session id).
    let requests = dir.join("mcp-requests.jsonl");
    let http_port = free_port().expect("port");
    let _web = crate::mcp::Everything::start(http_port).await;
    std::fs::write(
        &mcp,
        format!(
            "servers:\n  everything:\n    command: sh\n    args: [-c, {:?}]\n  web:\n    url: http://127.0.0.1:{http_port}/mcp\n    internal: true\n",
            format!("tee -a '{}' | node '{}' stdio", requests.display(), everything.display())
        ),
    )
    .expect("mcp file");
    let (grpc, coord_http, worker_http) =
        (free_port().expect("port"), free_port().expect("port"), free_port().expect("port"));
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("SWARM_TEST_MODEL_KEY", SENTINEL),
    ];
    let mut coordinator = SwarmProcess::spawn_env(
        "coordinator",
        &[
            "coordinator".into(),
            "--listen".into(),
            format!("127.0.0.1:{grpc}"),
            "--http-listen".into(),
            format!("127.0.0.1:{coord_http}"),
            // The model gateway on (its limits from the models file): its series are exported.
            "--models".into(),
            models.display().to_string(),
        ],
        &env,
        &dir,
    )
    .expect("coordinator");
    let mut worker = SwarmProcess::spawn_env(
        "worker",
        &[
            "worker".into(),
            "--coordinator".into(),
            format!("http://127.0.0.1:{grpc}"),
            "--id".into(),
            "traced-worker".into(),
            "--models".into(),
            models.display().to_string(),
            "--mcp".into(),
            mcp.display().to_string(),
            "--http-listen".into(),
            format!("127.0.0.1:{worker_http}"),
        ],
        &env,
        &dir,
    )
    .expect("worker");

    let mut c = connect(grpc, &coordinator).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.list_workers(pb::ListWorkersRequest {}).await.map(|r| r.into_inner().workers.len()).unwrap_or(0) < 1 {
        assert!(tokio::time::Instant::now() < until, "the worker never joined: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let helper = SubtaskSpec {
        id: "helper".into(),
        kind: SubtaskKind::Agent(AgentSpec {
            instructions: "Use the tools.".into(),
            input: "say something".into(),
            model: "fixture".into(),
            tools: vec!["echo".into()],
            max_steps: None,
        }),
        depends_on: vec!["lookup".into()],
        timeout: None,
        retry: None,
        outputs: Default::default(),
        placement: None,
    };
    let lookup = SubtaskSpec::tool("lookup", "echo", json!({"text": "first"}));
    let lead = SubtaskSpec {
        id: "lead".into(),
        kind: SubtaskKind::Orchestrator(swarm_core::agent::OrchestratorSpec {
            goal: "look around".into(),
            model: "fixture".into(),
            tools: vec![],
            max_steps: None,
            subagent_tools: vec![],
            subagent_models: vec![],
            subagent_artifacts: vec![],
            subagent_placement: None,
        }),
        depends_on: vec!["helper".into()],
        timeout: None,
        retry: None,
        outputs: Default::default(),
        placement: None,
    };
    let over_mcp = SubtaskSpec::tool("over-mcp", "everything__echo", json!({"message": "hi"}));
    let over_http = SubtaskSpec::tool("over-http", "web__echo", json!({"message": "hi"}));
    let nap = SubtaskSpec::tool("nap", "sleep", json!({"ms": 1200}));
    let subtasks = vec![lookup, helper, lead, over_mcp, over_http, nap];
    let run_id = submit(&mut c, &RunSpec::new("traced", subtasks)).await.expect("submit");
    // A watcher for the whole run: its server span lasts as long as its stream.
    let mut watch = c
        .watch_run(pb::WatchRunRequest { run_id: run_id.clone(), ..Default::default() })
        .await
        .expect("watch")
        .into_inner();
    let watch_started = tokio::time::Instant::now();
    while let Some(event) = futures_util::StreamExt::next(&mut watch).await {
        event.expect("event");
    }
    let watched = watch_started.elapsed();
    let missing = c
        .get_run(pb::GetRunRequest {
            run_id: "r-000000000000-000000".into(),
            include_subtasks: false,
            ..Default::default()
        })
        .await;
    assert_eq!(missing.expect_err("no such run").code(), tonic::Code::NotFound);
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}\n{}", worker.log_text());

    let spans = wait_spans(&collector, Duration::from_secs(30), |spans| {
        let has = |n: &str| spans.iter().any(|s| s.name.starts_with(n));
        has("invoke_workflow traced")
            && has("invoke_agent")
            && has("chat fixture-model")
            && spans.iter().filter(|s| s.name == "execute_tool echo").count() >= 2
            && has("invoke_agent scout")
            && spans.iter().filter(|s| s.name == "tools/call echo").count() >= 2
            && has("swarm.v1.SwarmService/WatchRun")
    })
    .await;
    let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no `{name}` span"));
    let workflow = find("invoke_workflow traced");
    let agent = find("invoke_agent helper");
    let chat = find("chat fixture-model");
    let dag_tool = spans
        .iter()
        .find(|s| {
            s.name == "execute_tool echo"
                && s.attr("swarm.subtask.id") == Some("lookup")
                && s.attr("gen_ai.tool.call.id") == Some("lookup")
        })
        .expect("the DAG tool call's span");
    let agent_tool =
        spans.iter().find(|s| s.attr("gen_ai.tool.call.id") == Some("call-7")).expect("the agent's tool call's span");

    // One trace per run, across the process boundary.
    assert_eq!(workflow.service, "swarm-coordinator");
    for s in [agent, chat, dag_tool, agent_tool] {
        assert_eq!(s.service, "swarm-worker", "{s:?}");
        assert_eq!(s.trace_id, workflow.trace_id, "{} is in the run's trace", s.name);
    }
    assert_eq!(dag_tool.parent_span_id, workflow.span_id, "a DAG tool call is a child of the run");
    assert_eq!(agent.parent_span_id, workflow.span_id, "an agent is a child of the run");
    assert_eq!(agent_tool.parent_span_id, agent.span_id, "an agent's tool call is a child of the agent");
    assert_eq!(chat.parent_span_id, agent.span_id, "a model call is a child of the agent");

    // Nested as the work is: the subagent under the orchestrator's `assign_task` call, under
    // the orchestrator; the MCP call under the tool call that made it.
    let lead = find("invoke_agent lead");
    let scout = find("invoke_agent scout");
    let assign = find("execute_tool assign_task");
    let create = find("execute_tool create_subagent");
    assert_eq!(create.parent_span_id, lead.span_id, "{create:?}");
    assert_eq!(assign.parent_span_id, lead.span_id, "{assign:?}");
    assert_eq!(scout.parent_span_id, assign.span_id, "the subagent nests under its assign_task call");
    assert_eq!(scout.trace_id, workflow.trace_id);
    let mcp_calls: Vec<_> = spans.iter().filter(|s| s.name == "tools/call echo").collect();
    let over = |transport: &str| {
        *mcp_calls.iter().find(|s| s.attr("network.transport") == Some(transport)).expect("an MCP call")
    };
    let mcp_call = over("pipe");
    let mcp_tool = find("execute_tool everything__echo");
    assert_eq!(mcp_call.parent_span_id, mcp_tool.span_id, "the MCP call is a child of its tool call");
    assert_eq!(mcp_call.kind, 3, "an MCP call is a CLIENT span");
    assert_eq!(mcp_call.attr("mcp.method.name"), Some("tools/call"));
    assert_eq!(mcp_call.attr("gen_ai.tool.name"), Some("echo"));
    assert!(mcp_call.attr("mcp.protocol.version").is_some_and(|v| !v.is_empty()), "{mcp_call:?}");
    assert_eq!(mcp_call.attr("mcp.session.id"), None, "stdio has no session");
    // The server was told the MCP call's span as the parent (`params._meta.traceparent`).
    let sent = std::fs::read_to_string(&requests).expect("what the worker sent");
    let call = sent
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| m["method"] == "tools/call")
        .expect("a tools/call request");
    let want = format!("00-{}-{}-01", hex(&mcp_call.trace_id), hex(&mcp_call.span_id));
    assert_eq!(call["params"]["_meta"]["traceparent"].as_str(), Some(want.as_str()), "{call}");
    // Over streamable HTTP: the session the server gave, and where it is.
    let http_call = over("tcp");
    assert!(http_call.attr("mcp.session.id").is_some_and(|v| !v.is_empty()), "{http_call:?}");
    assert_eq!(http_call.attr("network.protocol.name"), Some("http"));
    assert_eq!(http_call.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(http_call.attr_type("server.port"), Some("int"));
    assert_eq!(http_call.parent_span_id, find("execute_tool web__echo").span_id);

    // Typed attributes: integers as integers, arrays as arrays; no tracing bookkeeping; the
    // scope names its version and schema.
    assert_eq!(chat.attr_type("gen_ai.usage.input_tokens"), Some("int"), "{chat:?}");
    assert_eq!(chat.attr_type("gen_ai.usage.output_tokens"), Some("int"), "{chat:?}");
    assert_eq!(chat.attr_type("gen_ai.response.finish_reasons"), Some("array"), "{chat:?}");
    assert_eq!(find("chat fixture-model").attr("gen_ai.response.finish_reasons"), Some("[tool_calls]"));
    assert_eq!(dag_tool.attr_type("swarm.attempt"), Some("int"));
    assert_eq!(agent.attr_type("swarm.attempt"), Some("int"));
    assert_eq!(workflow.attr_type("swarm.critical_steps"), Some("int"), "{workflow:?}");
    assert_eq!(workflow.attr_type("swarm.tool_calls"), Some("int"), "{workflow:?}");
    for s in &spans {
        for (k, _) in &s.attributes {
            let bookkeeping = k.starts_with("code.")
                || k.starts_with("thread.")
                || ["target", "busy_ns", "idle_ns", "level"].contains(&k.as_str());
            assert!(!bookkeeping, "`{k}` on {}", s.name);
        }
        assert_eq!(s.scope.0, "swarm", "{s:?}");
        assert_eq!(s.scope.1, env!("CARGO_PKG_VERSION"), "{s:?}");
        assert_eq!(s.scope.2, "https://opentelemetry.io/schemas/1.44.0", "{s:?}");
    }
    let watch_span = find("swarm.v1.SwarmService/WatchRun");
    assert!(
        watch_span.duration() >= watched.saturating_sub(Duration::from_millis(200)),
        "the stream's span covers it: {:?} of {watched:?}",
        watch_span.duration()
    );
    // The nap keeps the run (and the watch) going for over a second: a span that ended with the
    // response's headers would be a millisecond long.
    assert!(watched >= Duration::from_millis(600), "the watch followed the run ({watched:?})");
    assert_eq!(watch_span.attr("rpc.grpc.status_code"), Some("0"), "{watch_span:?}");

    // Semantic-convention names and required attributes.
    assert_eq!(workflow.attr("gen_ai.operation.name"), Some("invoke_workflow"));
    assert_eq!(workflow.attr("gen_ai.workflow.name"), Some("traced"));
    assert_eq!(workflow.attr("swarm.run.id"), Some(run_id.as_str()));
    assert_eq!(agent.attr("gen_ai.operation.name"), Some("invoke_agent"));
    assert_eq!(agent.attr("gen_ai.agent.name"), Some("helper"));
    assert_eq!(chat.attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(chat.attr("gen_ai.provider.name"), Some("openai"));
    assert_eq!(chat.attr("gen_ai.request.model"), Some("fixture-model"));
    assert!(chat.attr("gen_ai.usage.input_tokens").is_some_and(|t| t.parse::<u64>().is_ok_and(|n| n > 0)), "{chat:?}");
    assert_eq!(chat.kind, 3, "chat is a CLIENT span");
    for t in [dag_tool, agent_tool] {
        assert_eq!(t.attr("gen_ai.operation.name"), Some("execute_tool"));
        assert_eq!(t.attr("gen_ai.tool.name"), Some("echo"));
        assert!(t.attr("gen_ai.tool.call.arguments").is_none(), "content is off by default: {t:?}");
    }
    assert_eq!(dag_tool.attr("swarm.attempt"), Some("1"));
    assert_eq!(dag_tool.attr("swarm.speculative"), Some("false"));
    let rpc = spans.iter().find(|s| s.name == "swarm.v1.SwarmService/SubmitRun").expect("a gRPC server span");
    assert_eq!((rpc.kind, rpc.attr("rpc.system")), (2, Some("grpc")), "SERVER span per the RPC conventions");
    assert_eq!(rpc.attr("rpc.grpc.status_code"), Some("0"));
    let not_found = wait_spans(&collector, Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "swarm.v1.SwarmService/GetRun" && s.attr("rpc.grpc.status_code") == Some("5"))
    })
    .await;
    assert!(!not_found.is_empty());

    // The context reached the model server in HTTP headers.
    let seen = fixture.seen();
    assert_eq!(seen.len(), 5);
    for s in &seen {
        let tp = s.traceparent.as_deref().expect("traceparent header on the model call");
        assert!(tp.contains(&hex(&workflow.trace_id)), "{tp} is in the run's trace");
    }

    // Prometheus endpoints: parse, and hold the named series with plausible values.
    let cm = parse_metrics(&get_text(coord_http, "/metrics").await);
    assert!(sample(&cm, "swarm_runs_finished_total", &["state=\"SUCCEEDED\""]) >= 1.0, "{cm:?}");
    assert!(sample(&cm, "swarm_attempts_total", &["kind=\"first\""]) >= 2.0, "{cm:?}");
    assert_eq!(sample(&cm, "swarm_workers", &[]), 1.0, "{cm:?}");
    assert!(sample(&cm, "swarm_slots", &["state=\"free\""]) > 0.0, "{cm:?}");
    assert!(sample(&cm, "swarm_store_commit_duration_seconds_count", &[]) >= 1.0, "{cm:?}");
    assert!(sample(&cm, "swarm_run_critical_steps_count", &[]) >= 1.0, "{cm:?}");
    assert!(sample(&cm, "swarm_dispatch_latency_seconds_count", &[]) >= 1.0, "{cm:?}");
    let wm = parse_metrics(&get_text(worker_http, "/metrics").await);
    let echo_ok = ["gen_ai_tool_name=\"echo\"", "outcome=\"ok\""];
    assert_eq!(sample(&wm, "swarm_tool_call_duration_seconds_count", &echo_ok), 2.0, "{wm:?}");
    let echo_secs = sample(&wm, "swarm_tool_call_duration_seconds_sum", &echo_ok);
    assert!(echo_secs > 0.0 && echo_secs < 10.0, "plausible durations: {echo_secs}");
    // The fixture reports 12 prompt and 3 completion tokens per call.
    assert_eq!(sample(&wm, "gen_ai_client_token_usage_sum", &["gen_ai_token_type=\"input\""]), 60.0, "{wm:?}");
    assert_eq!(sample(&wm, "gen_ai_client_token_usage_sum", &["gen_ai_token_type=\"output\""]), 15.0, "{wm:?}");
    assert_eq!(sample(&wm, "gen_ai_client_operation_duration_seconds_count", &[]), 5.0, "{wm:?}");
    // Every metric docs/observability.md names is exported by the process that records it.
    let coordinator_text = get_text(coord_http, "/metrics").await;
    let worker_text = get_text(worker_http, "/metrics").await;
    for name in documented_metrics() {
        let family = name.strip_suffix("_total").unwrap_or(&name);
        let typed = |text: &str| text.lines().any(|l| l.starts_with(&format!("# TYPE {family} ")));
        assert!(typed(&coordinator_text) || typed(&worker_text), "`{name}` is documented but not exported");
    }
    // Series without labels are there from the start, at zero if nothing happened.
    assert_eq!(sample(&cm, "swarm_speculation_wins_total", &[]), 0.0, "{cm:?}");

    // Metrics also went out over OTLP, from the worker and from the coordinator (each exports on
    // its own schedule).
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let exported = |name: &str| collector.metric_names().iter().any(|n| n == name);
    while !(exported("gen_ai.client.token.usage") && exported("swarm.runs.finished")) {
        assert!(tokio::time::Instant::now() < until, "no OTLP metrics: {:?}", collector.metric_names());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Clean shutdown, then: the API key is nowhere.
    for p in [&mut worker, &mut coordinator] {
        p.signal("TERM").expect("SIGTERM");
        assert_eq!(p.wait_exit(Duration::from_secs(20)).await.expect("exit"), Some(0), "{}", p.log_text());
    }
    let everything = [collector.raw(), format!("{cm:?}{wm:?}"), coordinator.log_text(), worker.log_text()];
    for (i, text) in everything.iter().enumerate() {
        assert!(!text.contains(SENTINEL), "the API key leaked (source {i})");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With export on, each audit line is also an OpenTelemetry log record (event `swarm.audit`),
/// in the trace of the call it records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_are_exported_as_log_records_in_the_trace_of_their_call() {
    let collector = Collector::start().await.expect("collector");
    let dir = temp_dir("audit-otlp");
    let audit = dir.join("audit.jsonl");
    let grpc = free_port().expect("port");
    let endpoint = collector.endpoint();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BLRP_SCHEDULE_DELAY", "50")];
    let args: Vec<String> = ["up", "--listen", &format!("127.0.0.1:{grpc}"), "--workers", "1", "--audit-log"]
        .map(String::from)
        .into_iter()
        .chain([audit.display().to_string()])
        .collect();
    let mut up = SwarmProcess::spawn_env("up", &args, &env, &dir).expect("up");
    let mut c = connect(grpc, &up).await;
    let spec = RunSpec::new("audited", vec![SubtaskSpec::tool("s", "sleep", json!({"ms": 60_000}))]);
    let run_id = submit(&mut c, &spec).await.expect("submit");
    c.cancel_run(pb::CancelRunRequest { run_id: run_id.clone(), reason: "audit".into() }).await.expect("cancel");
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let records = loop {
        let mine: Vec<_> = collector
            .logs()
            .into_iter()
            .filter(|l| l.event_name == "swarm.audit" && l.attr("swarm.audit.run_id") == Some(run_id.as_str()))
            .collect();
        if mine.len() >= 2 {
            break mine;
        }
        assert!(tokio::time::Instant::now() < until, "no audit records: {:?}\n{}", collector.logs(), up.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines = std::fs::read_to_string(&audit).expect("audit log");
    for (record, action) in records.iter().zip(["submit", "cancel"]) {
        assert_eq!(record.attr("swarm.audit.action"), Some(action), "{record:?}");
        assert_eq!(record.attr("swarm.audit.result"), Some("ok"));
        assert_eq!(record.severity_text, "INFO");
        assert!(lines.lines().any(|l| l == record.body), "the body is the line written: {record:?}\n{lines}");
        assert_eq!(record.trace_id.len(), 16, "in a trace: {record:?}");
    }
    // The trace is the call's: its server span arrives with the same trace id.
    let trace = records[0].trace_id.clone();
    wait_spans(&collector, Duration::from_secs(20), |spans| spans.iter().any(|s| s.trace_id == trace)).await;
    up.signal("TERM").expect("SIGTERM");
    let _ = up.wait_exit(Duration::from_secs(15)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_collector_listening_nothing_blocks_and_shutdown_is_bounded() {
    let dir = temp_dir("no-collector");
    let (grpc, dead) = (free_port().expect("port"), free_port().expect("port"));
    let endpoint = format!("http://127.0.0.1:{dead}");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "50")];
    let mut up = SwarmProcess::spawn_env(
        "up",
        &["up".into(), "--listen".into(), format!("127.0.0.1:{grpc}"), "--workers".into(), "2".into()],
        &env,
        &dir,
    )
    .expect("up");
    let mut c = connect(grpc, &up).await;
    let spec = RunSpec::new(
        "untraced",
        (0..50).map(|i| SubtaskSpec::tool(format!("t{i}"), "sleep", json!({"ms": 5}))).collect(),
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    up.signal("TERM").expect("SIGTERM");
    let started = tokio::time::Instant::now();
    assert_eq!(up.wait_exit(Duration::from_secs(15)).await.expect("exit"), Some(0), "{}", up.log_text());
    assert!(started.elapsed() < Duration::from_secs(15));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_capture_records_tool_arguments_and_results_only_when_switched_on() {
    let collector = Collector::start().await.expect("collector");
    let dir = temp_dir("capture");
    let grpc = free_port().expect("port");
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
    ];
    let mut up = SwarmProcess::spawn_env(
        "up",
        &["up".into(), "--listen".into(), format!("127.0.0.1:{grpc}"), "--workers".into(), "1".into()],
        &env,
        &dir,
    )
    .expect("up");
    let mut c = connect(grpc, &up).await;
    let spec = RunSpec::new("captured", vec![SubtaskSpec::tool("say", "echo", json!({"text": "visible words"}))]);
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    let spans =
        wait_spans(&collector, Duration::from_secs(20), |spans| spans.iter().any(|s| s.name == "execute_tool echo"))
            .await;
    let tool = spans.iter().find(|s| s.name == "execute_tool echo").expect("tool span");
    assert!(tool.attr("gen_ai.tool.call.arguments").is_some_and(|a| a.contains("visible words")), "{tool:?}");
    assert!(tool.attr("gen_ai.tool.call.result").is_some_and(|a| a.contains("visible words")), "{tool:?}");
    up.signal("TERM").expect("TERM");
    assert_eq!(up.wait_exit(Duration::from_secs(15)).await.expect("exit"), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Prometheus names in docs/observability.md's metrics table.
fn documented_metrics() -> Vec<String> {
    let docs = include_str!("../../docs/observability.md");
    let mut names = Vec::new();
    for line in docs.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | OTel name | Prometheus | type | labels | recorded by |
        if cells.len() < 6 || !matches!(cells[3], "counter" | "gauge" | "histogram") {
            continue;
        }
        names.extend(cells[2].split(',').map(|n| n.trim().trim_matches('`').to_owned()));
    }
    assert!(names.len() >= 20, "the table was read: {names:?}");
    names
}
