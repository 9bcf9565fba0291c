//! Live partial output: agents' model text and tool calls reach the watchers that ask for them
//! (`WatchRun.follow_output`, `swarm watch --follow-output`), and only those; a watcher that
//! resumes from its last `(output_epoch, output_seq)` is told nothing twice. Workers send a
//! run's output only while someone follows it: the tests that read it whole hold their agents
//! behind an approval (`go`) until the follower is registered.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use swarm_core::agent::AgentSpec;
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb::{self, run_event::Event};
use swarm_store::MemoryStore;
use swarm_tests::fixture::{Canned, ModelFixture, streamed};
use swarm_tests::harness::{TestCluster, submit, wait_done};
use swarm_worker::model::{EndpointConfig, ModelRegistry, OpenAiModel};

const DEADLINE: Duration = Duration::from_secs(60);

async fn watch(c: &mut swarm_cli::client::Client, req: pb::WatchRunRequest) -> Vec<pb::RunEvent> {
    collect(c.watch_run(req).await.expect("watch").into_inner()).await
}

/// Reads a watch stream to the run's end.
async fn collect(mut stream: tonic::Streaming<pb::RunEvent>) -> Vec<pb::RunEvent> {
    let mut events = Vec::new();
    while let Some(ev) = tokio::time::timeout(DEADLINE, stream.next()).await.expect("in time") {
        let ev = ev.expect("event");
        let last = matches!(ev.event, Some(Event::RunFinished(_)));
        events.push(ev);
        if last {
            break;
        }
    }
    events
}

/// The approval `go` that holds a test's agents back.
fn go() -> SubtaskSpec {
    use swarm_core::spec::{ApprovalSpec, OnTimeout};
    let gate = ApprovalSpec { prompt: "start?".into(), timeout: None, on_timeout: OnTimeout::Reject };
    SubtaskSpec { kind: SubtaskKind::Approval(gate), ..SubtaskSpec::tool("go", "echo", serde_json::json!({})) }
}

/// Waits until a follower of one run is registered, then lets the agents go.
async fn follow_then_go(tc: &TestCluster, c: &mut swarm_cli::client::Client, run_id: &str) {
    tc.until_followed(1).await.expect("a follower");
    let approve = pb::SignalRunRequest {
        run_id: run_id.into(),
        subtask_id: "go".into(),
        decision: pb::Decision::Approve.into(),
        ..Default::default()
    };
    c.signal_run(approve).await.expect("approve go");
}

fn outputs(events: &[pb::RunEvent]) -> Vec<pb::AgentOutput> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::AgentOutput(o)) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_who_ask_see_an_agents_output_grow_and_a_resumed_watcher_sees_nothing_twice() {
    let fixture = ModelFixture::start(vec![
        Canned::Stream(streamed("let me echo", Some(("s1", "echo", r#"{"text": "streamed"}"#)))),
        Canned::Stream(streamed("echoed: streamed", None)),
    ])
    .await
    .expect("fixture");
    let config = EndpointConfig {
        base_url: fixture.base_url(),
        model: "m".into(),
        timeout_secs: Some(10),
        max_retries: Some(1),
        stream: true,
        ..EndpointConfig::default()
    };
    let mut m = ModelRegistry::new();
    m.register("fixture", Arc::new(OpenAiModel::new(&config).expect("client")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let agent = SubtaskKind::Agent(AgentSpec {
        instructions: "Be brief.".into(),
        input: "go".into(),
        model: "fixture".into(),
        tools: vec!["echo".into()],
        max_steps: None,
    });
    let spec = RunSpec::new(
        "output",
        vec![go(), SubtaskSpec { kind: agent, ..SubtaskSpec::tool("a", "echo", serde_json::json!({})) }.after(["go"])],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let (mut c1, mut c2) = (tc.client().await.expect("client"), tc.client().await.expect("client"));
    let follow = pb::WatchRunRequest { run_id: run_id.clone(), follow_output: true, ..Default::default() };
    let plain = pb::WatchRunRequest { run_id: run_id.clone(), ..Default::default() };
    let live = c1.watch_run(follow.clone()).await.expect("watch").into_inner();
    let ordinary = c2.watch_run(plain).await.expect("watch").into_inner();
    follow_then_go(&tc, &mut c, &run_id).await;
    let (live, ordinary) = tokio::join!(collect(live), collect(ordinary));
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");

    assert!(outputs(&ordinary).is_empty(), "ordinary watchers do not pay for output");
    let seen = outputs(&live);
    assert!(!seen.is_empty(), "{live:?}");
    let text: String = seen.iter().map(|o| o.text.as_str()).collect();
    assert_eq!(text, "let me echoechoed: streamed", "the model's text as it streamed, in order");
    let mut offset = 0;
    for o in &seen {
        assert_eq!((o.subtask_id.as_str(), o.attempt, o.offset), ("a", 1, offset), "contiguous: {seen:?}");
        offset += o.text.len() as u64;
    }
    let started: Vec<&str> = seen.iter().flat_map(|o| o.tools_started.iter().map(String::as_str)).collect();
    let finished: Vec<(&str, bool)> =
        seen.iter().flat_map(|o| o.tools_finished.iter().map(|t| (t.tool.as_str(), t.failed))).collect();
    assert_eq!((started, finished), (vec!["echo"], vec![("echo", false)]));
    assert!(live.iter().all(|e| matches!(e.event, Some(Event::AgentOutput(_))) == (e.seq == 0)));
    let durable: Vec<u64> = live.iter().map(|e| e.seq).filter(|&s| s > 0).collect();
    assert_eq!(durable, (1..=durable.len() as u64).collect::<Vec<_>>(), "durable events unchanged, in order");
    let numbers: Vec<u64> = seen.iter().map(|o| o.output_seq).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    // Resumed after the first chunk (as a client does after a dropped stream): the rest only.
    let first = &seen[0];
    let resume =
        pb::WatchRunRequest { after_output_seq: first.output_seq, output_epoch: first.output_epoch, ..follow.clone() };
    let rest: Vec<u64> = outputs(&watch(&mut c1, resume).await).iter().map(|o| o.output_seq).collect();
    assert_eq!(rest, numbers[1..], "nothing twice, nothing missing");
    // A cursor from another epoch (an earlier leader) gets what this leader holds.
    let other = pb::WatchRunRequest { after_output_seq: 999, output_epoch: 1, ..follow };
    assert_eq!(outputs(&watch(&mut c1, other).await).len(), seen.len());
    tc.stop().await;
}

/// The web view shows the selected agent's output growing while it runs (headless Chromium).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_the_selected_agents_output_growing() {
    use swarm_worker::model::ScriptedModel;
    // Three calls, then the agent parks on a question the page answers once it has looked
    // (so what it saw early cannot be the whole), then five more.
    let script = r#"agents:
  a:
    - repeat: 3
      content: "checking the next part"
      tool_calls: [{name: sleep, arguments: {ms: 300}}]
    - content: "asking"
      tool_calls: [{name: request_approval, arguments: {question: "go on?"}}]
    - repeat: 5
      content: "checking the next part"
      tool_calls: [{name: sleep, arguments: {ms: 300}}]
    - content: "all parts checked"
"#;
    let mut m = ModelRegistry::new();
    m.register("scripted", Arc::new(ScriptedModel::from_yaml(script).expect("script")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let http = tc.cluster.http_addr.expect("the web view is served");
    let mut c = tc.client().await.expect("client");
    let agent = SubtaskKind::Agent(AgentSpec {
        instructions: String::new(),
        input: "check every part".into(),
        model: "scripted".into(),
        tools: vec!["sleep".into(), "request_approval".into()],
        max_steps: None,
    });
    let spec = RunSpec::new(
        "web-output",
        vec![go(), SubtaskSpec { kind: agent, ..SubtaskSpec::tool("a", "echo", serde_json::json!({})) }.after(["go"])],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let screenshot = root.join("../target/web-output.png");
    let base = format!("http://{http}");
    // The page follows the output (its event stream asks for it); the agent goes once it does.
    let args = [
        std::ffi::OsStr::new(&base),
        std::ffi::OsStr::new(&run_id),
        std::ffi::OsStr::new(&"a"),
        std::ffi::OsStr::new(&screenshot),
    ];
    let (report, ()) = tokio::join!(
        swarm_tests::harness::browser_script("output.mjs", &args, Duration::from_secs(90)),
        follow_then_go(&tc, &mut c, &run_id),
    );
    let (early, last) = (report["early"].as_str().unwrap_or(""), report["final"].as_str().unwrap_or(""));
    let done = |t: &str| t.matches("← sleep ok").count();
    assert!((2..=3).contains(&done(early)), "seen while it ran: {early}");
    assert!(early.contains("checking the next part") && early.contains("→ sleep"), "{early}");
    assert_eq!(done(last), 8, "every call once, none twice: {last}");
    assert!(last.trim_end().ends_with("all parts checked"), "{last}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot was taken");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    tc.stop().await;
}

/// `swarm watch --follow-output` prints each agent's output under its name; plain `swarm
/// watch` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_watch_follow_output_prints_it_per_agent() {
    use swarm_worker::model::ScriptedModel;
    let script = "agents:\n  '*':\n    - content: \"looking\"\n      tool_calls: [{name: echo, arguments: {text: hi}}]\n    - content: \"found it\"\n";
    let mut m = ModelRegistry::new();
    m.register("scripted", Arc::new(ScriptedModel::from_yaml(script).expect("script")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let agent = |id: &str| SubtaskSpec {
        retry: None,
        outputs: Default::default(),
        id: id.into(),
        kind: SubtaskKind::Agent(AgentSpec {
            instructions: String::new(),
            input: "look".into(),
            model: "scripted".into(),
            tools: vec!["echo".into()],
            max_steps: None,
        }),
        depends_on: vec![],
        timeout: None,
        placement: None,
    };
    let spec = RunSpec::new("cli-output", vec![go(), agent("x").after(["go"]), agent("y").after(["go"])]);
    let run_id = submit(&mut c, &spec).await.expect("submit");
    // Followed while it runs (what the leader holds of it is then replayed to a later watcher).
    let mut c1 = tc.client().await.expect("client");
    let follow = pb::WatchRunRequest { run_id: run_id.clone(), follow_output: true, ..Default::default() };
    let live = c1.watch_run(follow).await.expect("watch").into_inner();
    follow_then_go(&tc, &mut c, &run_id).await;
    collect(live).await;
    wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    let url = tc.cluster.url();
    let watch = |extra: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(swarm_tests::process::swarm_bin().expect("swarm"));
        cmd.args(["watch", &run_id, "--addr", &url]).args(extra).kill_on_drop(true);
        async move {
            let out = cmd.output().await.expect("swarm watch");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let text = watch(&["--follow-output"]).await;
    for agent in ["x", "y"] {
        let mut at = 0;
        for line in ["looking", "→ echo", "← echo ok", "found it"] {
            let line = format!("[{agent}] {line}\n");
            assert_eq!(text.matches(&line).count(), 1, "{line}{text}");
            let pos = text.find(&line).unwrap_or(0);
            assert!(pos >= at, "in the order it happened: {line}{text}");
            at = pos;
        }
    }
    assert!(text.contains("run finished"), "{text}");
    assert!(!watch(&[]).await.contains("[x]"), "only when asked");
    let json = watch(&["--follow-output", "--json"]).await;
    let outputs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["event"] == "agent_output")
        .collect();
    assert!(outputs.iter().any(|v| v["subtask_id"] == "x" && v["text"].as_str().unwrap_or("").contains("found it")));
    tc.stop().await;
}

/// A streamed answer that breaks off is asked for again: what it showed stays, then a note that
/// the answer starts over, then the new answer (a watcher never reads two answers run together).
#[tokio::test]
async fn a_stream_that_breaks_off_is_retried_and_says_so_in_the_live_output() {
    let first = streamed("half an ans", None);
    let fixture = ModelFixture::start(vec![
        Canned::StreamBroken(first[..1].to_vec()),
        Canned::Stream(streamed("the whole answer", None)),
    ])
    .await
    .expect("fixture");
    let config = EndpointConfig {
        base_url: fixture.base_url(),
        model: "m".into(),
        timeout_secs: Some(10),
        max_retries: Some(2),
        stream: true,
        ..EndpointConfig::default()
    };
    let model = OpenAiModel::new(&config).expect("client");
    let shown = std::sync::Mutex::new(String::new());
    let collect = |text: &str, _: &str| shown.lock().expect("lock").push_str(text);
    let req = swarm_worker::model::ChatRequest {
        agent: "a",
        messages: &[swarm_core::agent::Message::text(swarm_core::agent::Role::User, "go")],
        tools: &[],
        gated: false,
        on_delta: Some(swarm_worker::model::OnDelta(&collect)),
    };
    let answer = swarm_worker::model::ModelProvider::chat(&model, req).await.expect("answered on the retry");
    assert_eq!(answer.message.content.as_deref(), Some("the whole answer"));
    let note = swarm_worker::model::RETRY_NOTE;
    assert_eq!(*shown.lock().expect("lock"), format!("half {note}the whole answer"));
    assert_eq!(fixture.seen().len(), 2);
}

/// Workers send a run's output only while someone follows it: nothing while nobody does, from
/// the moment a follower comes, and nothing again once it leaves (the coordinator's count of
/// what it received is the witness; the plain watch that paces the test asks for no output).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_sent_only_while_someone_follows_the_run() {
    use swarm_worker::model::ScriptedModel;
    let script = r#"agents:
  a:
    - repeat: 40
      content: "checking the next part"
      tool_calls: [{name: sleep, arguments: {ms: 100}}]
    - content: "done"
"#;
    let mut m = ModelRegistry::new();
    m.register("scripted", Arc::new(ScriptedModel::from_yaml(script).expect("script")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let agent = SubtaskKind::Agent(AgentSpec {
        instructions: String::new(),
        input: "check".into(),
        model: "scripted".into(),
        tools: vec!["sleep".into()],
        max_steps: None,
    });
    let spec = RunSpec::new(
        "followed",
        vec![SubtaskSpec { kind: agent, ..SubtaskSpec::tool("a", "echo", serde_json::json!({})) }],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let plain = pb::WatchRunRequest { run_id: run_id.clone(), ..Default::default() };
    let mut pace = c.watch_run(plain).await.expect("watch").into_inner();
    // Reads the plain watch until `n` more of the agent's steps were recorded.
    let steps = async |n: usize, pace: &mut tonic::Streaming<pb::RunEvent>| {
        let mut steps = 0;
        while steps < n {
            let ev = tokio::time::timeout(DEADLINE, pace.next()).await.expect("in time").expect("open").expect("event");
            assert!(!matches!(ev.event, Some(Event::AgentOutput(_))), "a plain watch gets no output");
            steps += usize::from(matches!(ev.event, Some(Event::AgentStep(_))));
        }
    };
    let received = async || tc.cluster.stats().await.expect("stats").output_chunks;

    steps(4, &mut pace).await;
    assert_eq!(received().await, 0, "nobody follows: the worker sent nothing");

    let mut c1 = tc.client().await.expect("client");
    let follow = pb::WatchRunRequest { run_id: run_id.clone(), follow_output: true, ..Default::default() };
    let mut live = c1.watch_run(follow).await.expect("watch").into_inner();
    tc.until_followed(1).await.expect("followed");
    let mut seen = 0;
    while seen < 3 {
        let ev = tokio::time::timeout(DEADLINE, live.next()).await.expect("in time").expect("open").expect("event");
        seen += usize::from(matches!(ev.event, Some(Event::AgentOutput(_))));
    }
    assert!(received().await >= 3, "a follower came: the output goes");

    drop(live);
    let until = tokio::time::Instant::now() + DEADLINE;
    while tc.cluster.stats().await.expect("stats").followed_runs > 0 {
        assert!(tokio::time::Instant::now() < until, "the follower's leaving was never told");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What was on its way when it left may still arrive; two turns later nothing more does.
    steps(2, &mut pace).await;
    let after = received().await;
    steps(3, &mut pace).await;
    assert_eq!(received().await, after, "the follower left: the worker stopped sending");
    tc.stop().await;
}
