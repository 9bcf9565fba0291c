//! Approvals: a subtask a person decides (`SignalRun`, `swarm signal`). It parks without a slot
//! while the rest of the run goes on, decides once (a repeated signal gets the first decision,
//! also after the run ended), and survives a leader failover.

use std::time::Duration;

use swarm_cli::client::Client;
use swarm_core::spec::{ApprovalSpec, OnTimeout};
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_proto::pb::run_event::Event;
use swarm_tests::harness::{TestCluster, submit, wait_done, wait_for_events};

const DEADLINE: Duration = Duration::from_secs(60);

fn approval(id: &str, prompt: &str) -> SubtaskSpec {
    let spec = ApprovalSpec { prompt: prompt.into(), timeout: None, on_timeout: OnTimeout::Reject };
    SubtaskSpec { kind: SubtaskKind::Approval(spec), ..SubtaskSpec::tool(id, "echo", serde_json::json!({})) }
}

fn sleep(id: &str, ms: u64) -> SubtaskSpec {
    SubtaskSpec::tool(id, "sleep", serde_json::json!({ "ms": ms }))
}

/// `gate` (an approval) beside a chain a1 → a2 → a3; `publish` after the gate.
fn gated() -> RunSpec {
    RunSpec::new(
        "gated",
        vec![
            approval("gate", "Publish the report?"),
            sleep("a1", 20),
            sleep("a2", 20).after(["a1"]),
            sleep("a3", 20).after(["a2"]),
            SubtaskSpec::tool("publish", "echo", serde_json::json!({ "text": "published" })).after(["gate"]),
        ],
    )
}

fn signal(run_id: &str, subtask: &str, decision: pb::Decision, payload: &str, reason: &str) -> pb::SignalRunRequest {
    pb::SignalRunRequest {
        run_id: run_id.into(),
        subtask_id: subtask.into(),
        decision: decision.into(),
        payload_json: payload.into(),
        reason: reason.into(),
    }
}

fn state_of(run: &pb::Run, id: &str) -> pb::SubtaskState {
    let s = run.subtasks.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("{id} in {run:?}"));
    pb::SubtaskState::try_from(s.state).expect("state")
}

async fn requested(c: &mut Client, run_id: &str) -> pb::ApprovalRequested {
    let events = wait_for_events(c, run_id, DEADLINE, |evs| {
        evs.iter().any(|e| matches!(e.event, Some(Event::ApprovalRequested(_))))
    })
    .await
    .expect("the approval is announced");
    events
        .into_iter()
        .find_map(|e| match e.event {
            Some(Event::ApprovalRequested(a)) => Some(a),
            _ => None,
        })
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_waits_without_a_slot_while_the_run_goes_on_and_decides_once() {
    // One slot in the whole cluster: a parked approval holding it would stall the chain.
    let tc = TestCluster::start(1, 1).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &gated()).await.expect("submit");
    let asked = requested(&mut c, &run_id).await;
    assert_eq!((asked.subtask_id.as_str(), asked.prompt.as_str()), ("gate", "Publish the report?"));
    assert!(asked.deadline.is_none());
    // The chain runs to its end on the one slot while the gate waits.
    wait_for_events(&mut c, &run_id, DEADLINE, |evs| {
        evs.iter().any(|e| matches!(&e.event, Some(Event::SubtaskSucceeded(s)) if s.subtask_id == "a3"))
    })
    .await
    .expect("the chain finishes meanwhile");
    let run = swarm_cli::client::get(&mut c, &run_id, true).await.expect("get");
    assert_eq!(state_of(&run, "gate"), pb::SubtaskState::Waiting);
    assert_eq!(state_of(&run, "publish"), pb::SubtaskState::Blocked);
    assert_eq!(run.subtasks.iter().find(|s| s.id == "gate").map(|s| s.kind.as_str()), Some("approval"));

    let answer = c
        .signal_run(signal(&run_id, "gate", pb::Decision::Approve, r#"{"ok": true, "by": "editor"}"#, ""))
        .await
        .expect("signal")
        .into_inner();
    assert_eq!((answer.decision, answer.already_decided), (pb::Decision::Approve as i32, false));
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let gate = run.subtasks.iter().find(|s| s.id == "gate").expect("gate");
    assert_eq!(gate.output_json, r#"{"by":"editor","ok":true}"#, "the payload is the approval's output");
    assert_eq!(state_of(&run, "publish"), pb::SubtaskState::Succeeded);

    // Once more, the other way, after the run ended: the first decision stands and is told.
    let again = c
        .signal_run(signal(&run_id, "gate", pb::Decision::Reject, "", "changed my mind"))
        .await
        .expect("a repeated signal is answered")
        .into_inner();
    assert_eq!((again.decision, again.already_decided), (pb::Decision::Approve as i32, true));
    assert_eq!(again.payload_json, r#"{"by":"editor","ok":true}"#);
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_fails_the_approval_and_skips_what_needs_it_and_bad_signals_are_refused() {
    let tc = TestCluster::start(1, 2).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut spec = gated();
    // A second approval that is not waiting yet: it needs the chain's end.
    spec.subtasks.push(approval("late-gate", "And the appendix?").after(["a3"]));
    spec.subtasks[1] = sleep("a1", 500);
    let run_id = submit(&mut c, &spec).await.expect("submit");
    requested(&mut c, &run_id).await;
    let refused = |r: Result<tonic::Response<pb::SignalRunResponse>, tonic::Status>| r.expect_err("refused");
    let code = |d: pb::Decision, sub: &str, payload: &str| signal(&run_id, sub, d, payload, "");
    let s = refused(c.signal_run(code(pb::Decision::Approve, "a2", "")).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "a tool call is not an approval: {s:?}");
    let s = refused(c.signal_run(code(pb::Decision::Approve, "nope", "")).await);
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    let s = refused(c.signal_run(code(pb::Decision::Approve, "gate", "{not json")).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("payload_json"), "{s:?}");
    let s = refused(c.signal_run(code(pb::Decision::Unspecified, "gate", "")).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s = refused(c.signal_run(code(pb::Decision::Approve, "late-gate", "")).await);
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "not waiting yet: {s:?}");
    let big = format!("\"{}\"", "x".repeat(swarm_coordinator::manager::MAX_SIGNAL_PAYLOAD_BYTES));
    let s = refused(c.signal_run(code(pb::Decision::Approve, "gate", &big)).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s = refused(c.signal_run(signal("r-nope", "gate", pb::Decision::Approve, "", "")).await);
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    // Nothing of that decided anything.
    let run = swarm_cli::client::get(&mut c, &run_id, true).await.expect("get");
    assert_eq!(state_of(&run, "gate"), pb::SubtaskState::Waiting);

    let answer =
        c.signal_run(signal(&run_id, "gate", pb::Decision::Reject, "", "not before Monday")).await.expect("reject");
    assert_eq!(answer.into_inner().decision, pb::Decision::Reject as i32);
    let approve = c.signal_run(code(pb::Decision::Approve, "gate", "")).await.expect("answered").into_inner();
    assert_eq!((approve.decision, approve.already_decided), (pb::Decision::Reject as i32, true));
    assert_eq!(approve.reason, "rejected: not before Monday");
    // The second approval is asked for once the chain has ended; approving it ends the run.
    wait_for_events(&mut c, &run_id, DEADLINE, |evs| {
        evs.iter().any(|e| matches!(&e.event, Some(Event::ApprovalRequested(a)) if a.subtask_id == "late-gate"))
    })
    .await
    .expect("late-gate asked");
    c.signal_run(code(pb::Decision::Approve, "late-gate", "")).await.expect("late-gate approved");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    let gate = run.subtasks.iter().find(|s| s.id == "gate").expect("gate");
    assert_eq!(gate.error_kind, pb::FailureKind::Permanent as i32);
    assert_eq!(state_of(&run, "publish"), pb::SubtaskState::Skipped);
    assert_eq!(state_of(&run, "a3"), pb::SubtaskState::Succeeded, "the rest of the run went on");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_times_out_decides_as_its_spec_says() {
    let tc = TestCluster::start(1, 2).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let timed = |on_timeout| {
        let spec = ApprovalSpec { prompt: "ok?".into(), timeout: Some(Duration::from_millis(200)), on_timeout };
        SubtaskSpec { kind: SubtaskKind::Approval(spec), ..SubtaskSpec::tool("gate", "echo", serde_json::json!({})) }
    };
    for (on_timeout, want) in [(OnTimeout::Approve, pb::RunState::Succeeded), (OnTimeout::Reject, pb::RunState::Failed)]
    {
        let spec = RunSpec::new("timed", vec![timed(on_timeout), sleep("after", 1).after(["gate"])]);
        let run_id = submit(&mut c, &spec).await.expect("submit");
        let asked = requested(&mut c, &run_id).await;
        assert!(asked.deadline.is_some());
        let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
        assert_eq!(run.state, want as i32, "{on_timeout:?}: {run:?}");
    }
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_approval_and_a_told_decision_survive_a_leader_sigkill() {
    use swarm_tests::proc_cluster::ProcCluster;
    let _serial = crate::failover::SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 2, 1, Duration::from_secs(2)).await.expect("cluster");
    let (a_url, _) = pc.leader().await.expect("leader").expect("elected");
    let a = pc.coordinators.iter().position(|(_, url)| *url == a_url).expect("leader is ours");
    let mut c = pc.client(&a_url).await.expect("client");
    let spec = RunSpec::new(
        "failover-gates",
        vec![
            approval("first", "Step one?"),
            approval("second", "Step two?"),
            SubtaskSpec::tool("publish", "echo", serde_json::json!({ "text": "done" })).after(["first", "second"]),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_for_events(&mut c, &run_id, DEADLINE, |evs| {
        evs.iter().filter(|e| matches!(e.event, Some(Event::ApprovalRequested(_)))).count() == 2
    })
    .await
    .expect("both asked");
    // The answer comes once the decision is durable: the leader dies right after it.
    let told = c.signal_run(signal(&run_id, "first", pb::Decision::Approve, r#"{"n": 1}"#, "")).await.expect("signal");
    assert!(!told.into_inner().already_decided);
    pc.coordinators[a].0.kill();
    let (b_url, _) = pc.wait_leader(Some(&a_url), Duration::from_secs(15)).await.expect("standby takes over");
    let mut b = pc.client(&b_url).await.expect("client");
    // The new leader kept the decision told before the failover, and parked the other again.
    let until = tokio::time::Instant::now() + DEADLINE;
    let again = loop {
        match b.signal_run(signal(&run_id, "first", pb::Decision::Reject, "", "")).await {
            Ok(r) => break r.into_inner(),
            Err(s) => {
                assert!(tokio::time::Instant::now() < until, "the new leader does not answer: {s:?}\n{}", pc.logs());
                // Recovering (UNAVAILABLE) until it has loaded the run.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!((again.decision, again.already_decided), (pb::Decision::Approve as i32, true), "{}", pc.logs());
    assert_eq!(again.payload_json, r#"{"n":1}"#);
    let second = b.signal_run(signal(&run_id, "second", pb::Decision::Approve, "", "")).await.expect("second");
    assert!(!second.into_inner().already_decided, "the waiting approval was still waiting");
    let run = wait_done(&mut b, &run_id, DEADLINE).await.expect("done");
    pc.assert_succeeded(&run).await;
    assert_eq!(state_of(&run, "publish"), pb::SubtaskState::Succeeded);
}

/// A one-slot cluster whose model (the OpenAI-compatible fixture, as `fixture`) first calls
/// `request_approval` with `asks`, then answers "published".
async fn asking_writer(asks: &str) -> (swarm_tests::fixture::ModelFixture, TestCluster) {
    use std::sync::Arc;
    use swarm_tests::fixture::{Canned, ModelFixture, completion};
    use swarm_worker::model::{EndpointConfig, ModelRegistry, OpenAiModel};
    let fixture = ModelFixture::start(vec![
        Canned::Ok(completion(None, vec![("c1", "request_approval", asks)])),
        Canned::Ok(completion(Some("published"), vec![])),
    ])
    .await
    .expect("fixture");
    let config = EndpointConfig {
        base_url: fixture.base_url(),
        model: "m".into(),
        timeout_secs: Some(10),
        max_retries: Some(0),
        ..EndpointConfig::default()
    };
    let mut m = ModelRegistry::new();
    m.register("fixture", Arc::new(OpenAiModel::new(&config).expect("client")));
    let tc =
        TestCluster::start_with(Arc::new(swarm_store::MemoryStore::new()), Arc::new(m), 1, 1).await.expect("cluster");
    (fixture, tc)
}

/// The agent of [`asking_writer`]'s model, granted `request_approval`.
fn writer() -> swarm_core::agent::AgentSpec {
    swarm_core::agent::AgentSpec {
        instructions: "Ask before you publish.".into(),
        input: "publish the draft".into(),
        model: "fixture".into(),
        tools: vec!["request_approval".into()],
        max_steps: None,
    }
}

/// An agent asks a person mid-loop (`request_approval`): it parks holding no slot (the run's
/// other work goes on in the one slot there is), the decision is its tool call's result, and it
/// goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_asks_parks_without_its_slot_and_goes_on_with_the_decision() {
    // One slot in the whole cluster.
    let (fixture, tc) = asking_writer(r#"{"question": "Publish the draft?"}"#).await;
    let mut c = tc.client().await.expect("client");
    let writer = writer();
    let spec = RunSpec::new(
        "agent-asks",
        vec![
            SubtaskSpec {
                kind: SubtaskKind::Agent(writer),
                ..SubtaskSpec::tool("writer", "echo", serde_json::json!({}))
            },
            sleep("b1", 20),
            sleep("b2", 20).after(["b1"]),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let asked = requested(&mut c, &run_id).await;
    assert_eq!((asked.subtask_id.as_str(), asked.prompt.as_str()), ("writer", "Publish the draft?"));
    wait_for_events(&mut c, &run_id, DEADLINE, |evs| {
        evs.iter().any(|e| matches!(&e.event, Some(Event::SubtaskSucceeded(s)) if s.subtask_id == "b2"))
    })
    .await
    .expect("the chain ran in the one slot while the agent waited");
    let run = swarm_cli::client::get(&mut c, &run_id, true).await.expect("get");
    assert_eq!(state_of(&run, "writer"), pb::SubtaskState::Waiting);
    let writer = run.subtasks.iter().find(|s| s.id == "writer").expect("writer");
    assert_eq!(writer.approval_prompt, "Publish the draft?", "listed as waiting for a decision");
    let refused = c.signal_run(signal(&run_id, "b1", pb::Decision::Approve, "", "")).await.expect_err("a tool call");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let told = c
        .signal_run(signal(&run_id, "writer", pb::Decision::Approve, r#"{"by": "ann"}"#, ""))
        .await
        .expect("signal")
        .into_inner();
    assert_eq!((told.decision, told.already_decided), (pb::Decision::Approve as i32, false));
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!(
        run.subtasks.iter().find(|s| s.id == "writer").map(|s| s.output_json.as_str()),
        Some(r#"{"answer":"published"}"#)
    );
    // The model saw the decision as the result of its call.
    let seen = fixture.seen();
    let result = seen[1].body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "tool" && m["tool_call_id"] == "c1").cloned())
        .expect("the call's result");
    assert_eq!(result["content"], r#"{"approved":true,"data":{"by":"ann"}}"#);
    // Asked again, the first decision stands.
    let again =
        c.signal_run(signal(&run_id, "writer", pb::Decision::Reject, "", "no")).await.expect("signal").into_inner();
    assert_eq!((again.decision, again.already_decided), (pb::Decision::Approve as i32, true));
    tc.stop().await;
}

/// An agent's question with a timeout and `on_timeout`: nobody decides, the decision it asked
/// for applies, the model reads `timed_out`, and the run says which decision applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_question_nobody_answers_is_decided_by_its_on_timeout() {
    let asks = r#"{"question": "Publish the draft?", "timeout": "300ms", "on_timeout": "approve"}"#;
    let (fixture, tc) = asking_writer(asks).await;
    let mut c = tc.client().await.expect("client");
    let writer = writer();
    let spec = RunSpec::new(
        "agent-asks-with-timeout",
        vec![SubtaskSpec {
            kind: SubtaskKind::Agent(writer),
            ..SubtaskSpec::tool("writer", "echo", serde_json::json!({}))
        }],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let asked = requested(&mut c, &run_id).await;
    assert!(asked.deadline.is_some(), "the question's deadline is announced: {asked:?}");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done without a decision");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let seen = fixture.seen();
    let result = seen[1].body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "tool" && m["tool_call_id"] == "c1").cloned())
        .expect("the call's result");
    let content: serde_json::Value = serde_json::from_str(result["content"].as_str().expect("text")).expect("json");
    assert_eq!((content["approved"].as_bool(), content["data"]["timed_out"].as_bool()), (Some(true), Some(true)));
    let events = wait_for_events(&mut c, &run_id, DEADLINE, |evs| {
        evs.iter().any(|e| matches!(e.event, Some(Event::RunFinished(_))))
    })
    .await
    .expect("events");
    let said = events.iter().any(|e| {
        matches!(&e.event, Some(Event::Warning(w)) if w.subtask_id == "writer" && w.message.contains("approved (on_timeout)"))
    });
    assert!(said, "the run says which decision applied: {events:?}");
    tc.stop().await;
}
