//! The approval engine's tests: parking, decisions, timeouts, failover, the wall-time part.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Action, Decided, EngineEvent, RunEngine, RunState, SignalError, SubtaskState, Update};
use crate::ids::{Fence, RunId, WorkerId};
use crate::spec::{ApprovalSpec, OnTimeout, RunSpec, SubtaskKind, SubtaskSpec};
use crate::{Dag, Limits, RetryPolicy};

fn gate(timeout: Option<Duration>, on_timeout: OnTimeout) -> SubtaskSpec {
    let approval = ApprovalSpec { prompt: "Publish?".into(), timeout, on_timeout };
    SubtaskSpec { kind: SubtaskKind::Approval(approval), ..SubtaskSpec::tool("gate", "echo", serde_json::json!({})) }
}

/// gate (an approval), a (a tool call beside it), b (after gate); started and settled at 0.
fn engine(g: SubtaskSpec) -> (RunEngine, Vec<Action>) {
    let spec = RunSpec::new(
        "approve",
        vec![
            g,
            SubtaskSpec::tool("a", "echo", serde_json::json!({})),
            SubtaskSpec::tool("b", "echo", serde_json::json!({})).after(["gate"]),
        ],
    );
    let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid"));
    let mut e = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 1);
    let mut out = Vec::new();
    e.settle(0, &mut out);
    (e, out)
}

fn ix(e: &RunEngine, id: &str) -> crate::SubtaskIx {
    e.dag().index_of(id).expect(id)
}

fn run_a(e: &mut RunEngine, out: &mut Vec<Action>) {
    let a = e.pop_ready().expect("a is ready");
    assert_eq!(a, ix(e, "a"), "only the tool call is dispatched");
    e.apply(EngineEvent::Dispatched { subtask: a, worker: WorkerId::from("w"), fence: Fence(1) }, 1, out);
    let done = EngineEvent::Succeeded {
        subtask: a,
        fence: Fence(1),
        started_us: 1,
        finished_us: 2,
        output: "1".into(),
        artifacts: None,
    };
    e.apply(done, 2, out);
}

#[test]
fn an_approval_parks_without_a_slot_and_an_approval_releases_its_dependents_with_the_payload() {
    let (mut e, out) = engine(gate(None, OnTimeout::Reject));
    let g = ix(&e, "gate");
    let requested = Update::ApprovalRequested {
        subtask: g,
        prompt: "Publish?".into(),
        deadline_us: None,
        on_timeout: OnTimeout::Reject,
    };
    assert!(out.contains(&Action::Publish(requested)), "{out:?}");
    assert_eq!(e.slot(g).state, SubtaskState::Waiting);
    let mut out = Vec::new();
    run_a(&mut e, &mut out);
    assert!(e.pop_ready().is_none(), "b waits for the decision; the approval is never dispatched");
    assert_eq!(e.signal_outcome(ix(&e, "b")), Err(SignalError::NotAnApproval));
    assert_eq!(e.signal_outcome(g), Ok(None));
    let signal =
        EngineEvent::Signal { subtask: g, approve: true, payload: r#"{"ok":true}"#.into(), reason: String::new() };
    e.apply(signal, 10, &mut out);
    assert_eq!(e.slot(g).state, SubtaskState::Succeeded);
    assert_eq!(e.slot(g).output.as_deref(), Some(r#"{"ok":true}"#));
    assert!(out.iter().any(|a| matches!(a, Action::Persist { subtask, .. } if *subtask == g)), "recorded: {out:?}");
    assert_eq!(e.pop_ready(), Some(ix(&e, "b")));
    // A second decision changes nothing; the first is what a repeated signal is told.
    let again = EngineEvent::Signal { subtask: g, approve: false, payload: "null".into(), reason: "no".into() };
    e.apply(again, 11, &mut out);
    assert_eq!(e.slot(g).state, SubtaskState::Succeeded);
    assert_eq!(e.signal_outcome(g), Ok(Some(Decided::Approved { output: r#"{"ok":true}"#.into(), earlier: true })));
}

#[test]
fn time_waiting_for_a_decision_is_its_own_part_of_the_wall_time() {
    let (mut e, _) = engine(gate(None, OnTimeout::Reject));
    let g = ix(&e, "gate");
    let mut out = Vec::new();
    run_a(&mut e, &mut out);
    let signal = EngineEvent::Signal { subtask: g, approve: true, payload: "1".into(), reason: String::new() };
    e.apply(signal, 30_000_000, &mut out);
    let b = e.pop_ready().expect("b");
    e.apply(EngineEvent::Dispatched { subtask: b, worker: WorkerId::from("w"), fence: Fence(2) }, 30_000_000, &mut out);
    let done = EngineEvent::Succeeded {
        subtask: b,
        fence: Fence(2),
        started_us: 30_000_000,
        finished_us: 31_000_000,
        output: "2".into(),
        artifacts: None,
    };
    e.apply(done, 31_000_000, &mut out);
    assert_eq!(e.state(), RunState::Succeeded);
    let w = e.summary(31_000_000).wall_breakdown;
    assert_eq!(w.waiting_for_approval_us, 30_000_000, "{w:?}");
    assert_eq!(w.work_us, 1_000_000, "the approval's wait is not work: {w:?}");
    assert_eq!(w.biggest_loss, Some(("waiting_for_approval".into(), "gate".into(), 30_000_000)));
    assert!(w.headline(31_000_000).contains("waiting for a person to decide gate"), "{}", w.headline(31_000_000));
    assert_eq!(w.parts().iter().map(|(_, v)| v).sum::<u64>(), 31_000_000, "the parts add up");
}

#[test]
fn a_rejection_fails_the_approval_permanently_and_skips_its_dependents() {
    let (mut e, _) = engine(gate(None, OnTimeout::Reject));
    let g = ix(&e, "gate");
    let mut out = Vec::new();
    run_a(&mut e, &mut out);
    let signal =
        EngineEvent::Signal { subtask: g, approve: false, payload: "null".into(), reason: "rejected: not yet".into() };
    e.apply(signal, 10, &mut out);
    assert_eq!(e.slot(g).state, SubtaskState::Failed);
    assert_eq!(e.slot(g).error.as_ref().map(|f| f.kind), Some(crate::FailureKind::Permanent));
    assert_eq!(e.slot(ix(&e, "b")).state, SubtaskState::Skipped);
    assert_eq!(e.state(), RunState::Failed);
    assert!(matches!(e.signal_outcome(g), Ok(Some(Decided::Rejected { earlier: true, .. }))));
}

#[test]
fn a_timeout_decides_as_on_timeout_says_and_not_before() {
    for (on_timeout, approved) in [(OnTimeout::Approve, true), (OnTimeout::Reject, false)] {
        let (mut e, out) = engine(gate(Some(Duration::from_secs(60)), on_timeout));
        let g = ix(&e, "gate");
        assert!(out.contains(&Action::ArmTimer { subtask: g, at_us: 60_000_000 }), "{out:?}");
        let mut out = Vec::new();
        e.apply(EngineEvent::RetryDue { subtask: g }, 59_000_000, &mut out);
        assert_eq!(e.slot(g).state, SubtaskState::Waiting, "an early timer changes nothing");
        e.apply(EngineEvent::RetryDue { subtask: g }, 60_000_000, &mut out);
        let want = if approved { SubtaskState::Succeeded } else { SubtaskState::Failed };
        assert_eq!(e.slot(g).state, want);
        if approved {
            assert_eq!(e.slot(g).output.as_deref(), Some(r#"{"after":"1m","timed_out":true}"#));
        } else {
            let message = e.slot(g).error.as_ref().map(|f| f.message.clone()).unwrap_or_default();
            assert!(message.contains("no decision within 1m"), "{message}");
        }
    }
}

#[test]
fn after_a_failover_a_parked_approvals_timeout_counts_from_when_it_was_first_parked() {
    let (e, out) = engine(gate(Some(Duration::from_secs(60)), OnTimeout::Reject));
    let g = ix(&e, "gate");
    // Parking stores a record (as the coordinator writes it), which the next leader reads.
    let Some(Action::Persist { record, .. }) =
        out.iter().find(|a| matches!(a, Action::Persist { subtask, .. } if *subtask == g))
    else {
        panic!("parking stores a record: {out:?}")
    };
    assert_eq!((record.state, record.first_started_us), (SubtaskState::Waiting, Some(0)));
    let restored = (**record).clone();
    // A new leader 50 s later: the timer is due at 60 s, not at 110 s.
    let mut fresh =
        RunEngine::restore(RunId::from("r"), e.dag().clone(), RetryPolicy::default(), 0, 1, [(g, restored)]);
    let mut out = Vec::new();
    fresh.settle(50_000_000, &mut out);
    assert_eq!(fresh.slot(g).state, SubtaskState::Waiting);
    assert!(out.contains(&Action::ArmTimer { subtask: g, at_us: 60_000_000 }), "{out:?}");
    fresh.apply(EngineEvent::RetryDue { subtask: g }, 60_000_000, &mut out);
    assert_eq!(fresh.slot(g).state, SubtaskState::Failed, "rejected on time");

    // Cancelled while parked: its record says so.
    let (mut e, _) = engine(gate(None, OnTimeout::Reject));
    let mut out = Vec::new();
    e.apply(EngineEvent::CancelRequested, 5, &mut out);
    assert!(
        out.iter().any(|a| matches!(a, Action::Persist { subtask, record } if *subtask == g && record.state == SubtaskState::Cancelled)),
        "{out:?}"
    );
}

#[test]
fn a_spec_gets_approvals_from_yaml_and_refuses_bad_ones() {
    let spec: RunSpec = serde_json::from_str(
        r#"{"name": "x", "subtasks": [{"id": "ok", "approval": {"prompt": "Publish?", "timeout": "1h", "on_timeout": "approve"}}]}"#,
    )
    .expect("parses");
    let SubtaskKind::Approval(a) = &spec.subtasks[0].kind else { panic!("an approval") };
    assert_eq!((a.timeout, a.on_timeout), (Some(Duration::from_secs(3600)), OnTimeout::Approve));
    let bad = RunSpec::new("x", vec![gate(Some(Duration::from_secs(8 * 24 * 3600)), OnTimeout::Reject)]);
    let err = Dag::build(&bad, &Limits::default()).expect_err("too long");
    assert!(format!("{err:?}").contains("approval.timeout"), "{err:?}");
}

fn asking_agent() -> (RunEngine, crate::SubtaskIx) {
    let agent = crate::agent::AgentSpec {
        instructions: String::new(),
        input: "write".into(),
        model: "m".into(),
        tools: vec!["request_approval".into()],
        max_steps: None,
    };
    let spec = RunSpec::new(
        "asks",
        vec![SubtaskSpec { kind: SubtaskKind::Agent(agent), ..SubtaskSpec::tool("w", "echo", serde_json::json!({})) }],
    );
    let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid"));
    let mut e = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 1);
    e.settle(0, &mut Vec::new());
    let w = e.pop_ready().expect("ready");
    e.apply(EngineEvent::Dispatched { subtask: w, worker: WorkerId::from("x"), fence: Fence(1) }, 1, &mut Vec::new());
    (e, w)
}

fn asking_turn() -> Arc<crate::agent::Turn> {
    let call = crate::agent::ToolCallRequest {
        id: "c1".into(),
        name: "request_approval".into(),
        arguments: r#"{"question": "Send the mail?"}"#.into(),
    };
    let mut m = crate::agent::Message::text(crate::agent::Role::Assistant, "");
    m.tool_calls = vec![call];
    Arc::new(crate::agent::Turn { messages: vec![m], usage: Default::default(), fence: 0, seq: 0 })
}

#[test]
fn an_agent_that_asks_waits_without_a_slot_and_the_decision_becomes_its_tool_result() {
    let (mut e, w) = asking_agent();
    let mut out = Vec::new();
    let asked = EngineEvent::AskedApproval {
        subtask: w,
        fence: Fence(1),
        turn: asking_turn(),
        call_id: "c1".into(),
        question: "Send the mail?".into(),
        started_us: 1,
        finished_us: 5,
    };
    assert_eq!(e.signal_outcome(w), Err(SignalError::NotAsking), "not before it asks");
    e.apply(asked, 5, &mut out);
    assert_eq!((e.slot(w).state, e.counts().running), (SubtaskState::Waiting, 0), "parked, slot freed");
    assert!(
        out.iter().any(
            |a| matches!(a, Action::Publish(Update::ApprovalRequested { prompt, .. }) if prompt == "Send the mail?")
        )
    );
    assert_eq!((e.awaits_decision(w), e.question(w)), (true, Some("Send the mail?")));
    assert!(e.pop_ready().is_none());
    let mut out = Vec::new();
    let signal =
        EngineEvent::Signal { subtask: w, approve: true, payload: r#"{"by":"ann"}"#.into(), reason: String::new() };
    e.apply(signal, 9, &mut out);
    let turns = &e.slot(w).agent.as_ref().expect("agent").turns;
    let result = turns.last().expect("result turn").messages[0].clone();
    assert_eq!(result.tool_call_id.as_deref(), Some("c1"));
    assert_eq!(result.content.as_deref(), Some(r#"{"approved":true,"data":{"by":"ann"}}"#));
    assert!(out.contains(&Action::PersistTurn { subtask: w, index: 1 }), "stored before it is told: {out:?}");
    assert_eq!(e.pop_ready(), Some(w), "ready again, to go on with the answer");
    // Asked again later, the first decision stands.
    let again = EngineEvent::Signal { subtask: w, approve: false, payload: "null".into(), reason: "no".into() };
    e.apply(again, 10, &mut Vec::new());
    assert_eq!(e.signal_outcome(w), Ok(Some(Decided::Approved { output: r#"{"by":"ann"}"#.into(), earlier: true })));
}

#[test]
fn after_a_failover_an_agent_whose_transcript_ends_asking_waits_again_and_says_so() {
    let (e, w) = asking_agent();
    let dag = e.dag().clone();
    let mut fresh = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 1);
    fresh.restore_agents(std::collections::HashMap::from([(w, vec![asking_turn()])]), Default::default());
    let mut out = Vec::new();
    fresh.settle(20, &mut out);
    assert_eq!(fresh.slot(w).state, SubtaskState::Waiting);
    assert!(fresh.pop_ready().is_none(), "not dispatched while it waits");
    assert!(
        out.iter().any(
            |a| matches!(a, Action::Publish(Update::ApprovalRequested { prompt, .. }) if prompt == "Send the mail?")
        ),
        "{out:?}"
    );
    let reject =
        EngineEvent::Signal { subtask: w, approve: false, payload: "null".into(), reason: "rejected: later".into() };
    fresh.apply(reject, 21, &mut Vec::new());
    assert_eq!(
        fresh.signal_outcome(w),
        Ok(Some(Decided::Rejected { reason: "rejected: later".into(), earlier: true }))
    );
    assert_eq!(fresh.pop_ready(), Some(w), "a rejection is an answer too: the agent goes on");
}

fn asking_turn_with(arguments: &str) -> Arc<crate::agent::Turn> {
    let call =
        crate::agent::ToolCallRequest { id: "c1".into(), name: "request_approval".into(), arguments: arguments.into() };
    let mut m = crate::agent::Message::text(crate::agent::Role::Assistant, "");
    m.tool_calls = vec![call];
    Arc::new(crate::agent::Turn { messages: vec![m], usage: Default::default(), fence: 0, seq: 0 })
}

fn ask(e: &mut RunEngine, w: crate::SubtaskIx, arguments: &str, at_us: u64) -> Vec<Action> {
    let mut out = Vec::new();
    let asked = EngineEvent::AskedApproval {
        subtask: w,
        fence: Fence(1),
        turn: asking_turn_with(arguments),
        call_id: "c1".into(),
        question: "Send the mail?".into(),
        started_us: 1,
        finished_us: at_us,
    };
    e.apply(asked, at_us, &mut out);
    out
}

fn last_result(e: &RunEngine, w: crate::SubtaskIx) -> serde_json::Value {
    let turns = &e.slot(w).agent.as_ref().expect("agent").turns;
    let content = turns.last().expect("turn").messages[0].content.clone().expect("a tool result");
    serde_json::from_str(&content).expect("json")
}

#[test]
fn an_agents_question_with_a_timeout_is_decided_by_its_on_timeout_and_the_run_says_so() {
    let (mut e, w) = asking_agent();
    let out = ask(&mut e, w, r#"{"question": "Send the mail?", "timeout": "30s", "on_timeout": "approve"}"#, 1_000);
    let deadline = 1_000 + 30_000_000;
    assert!(
        out.iter().any(|a| matches!(a, Action::Publish(Update::ApprovalRequested { deadline_us: Some(d), on_timeout: OnTimeout::Approve, .. }) if *d == deadline)),
        "{out:?}"
    );
    assert!(out.contains(&Action::ArmTimer { subtask: w, at_us: deadline }), "{out:?}");
    // Early: nothing changes.
    let mut out = Vec::new();
    e.apply(EngineEvent::RetryDue { subtask: w }, deadline - 1, &mut out);
    assert_eq!(e.slot(w).state, SubtaskState::Waiting, "{out:?}");
    // At the deadline: approved, as asked, and said.
    let mut out = Vec::new();
    e.apply(EngineEvent::RetryDue { subtask: w }, deadline, &mut out);
    let result = last_result(&e, w);
    assert_eq!(result["approved"], true, "{result}");
    assert_eq!(result["data"]["timed_out"], true, "{result}");
    assert!(
        out.iter().any(|a| matches!(a, Action::Publish(Update::Warning { message, .. }) if message.contains("approved (on_timeout)"))),
        "{out:?}"
    );
    assert_eq!(e.pop_ready(), Some(w), "the agent goes on with the answer");
    // A person's late signal finds it decided.
    let late = EngineEvent::Signal { subtask: w, approve: false, payload: "null".into(), reason: "no".into() };
    e.apply(late, deadline + 5, &mut Vec::new());
    assert!(matches!(e.signal_outcome(w), Ok(Some(Decided::Approved { .. }))));
}

#[test]
fn without_on_timeout_an_agents_question_is_rejected_and_a_person_who_decides_first_wins() {
    let (mut e, w) = asking_agent();
    ask(&mut e, w, r#"{"question": "Send the mail?", "timeout": 2}"#, 10);
    let mut out = Vec::new();
    e.apply(EngineEvent::RetryDue { subtask: w }, 10 + 2_000_000, &mut out);
    let result = last_result(&e, w);
    assert_eq!(result["approved"], false);
    assert!(result["reason"].as_str().is_some_and(|r| r.contains("no decision within 2s: rejected")), "{result}");

    // Decided by a person first: the timer that fires later changes nothing.
    let (mut e, w) = asking_agent();
    ask(&mut e, w, r#"{"question": "Send the mail?", "timeout": "1s"}"#, 10);
    let yes =
        EngineEvent::Signal { subtask: w, approve: true, payload: r#"{"by":"ann"}"#.into(), reason: String::new() };
    e.apply(yes, 20, &mut Vec::new());
    let mut out = Vec::new();
    e.apply(EngineEvent::RetryDue { subtask: w }, 10 + 1_000_000, &mut out);
    assert_eq!(last_result(&e, w)["data"]["by"], "ann");
    assert!(!out.iter().any(|a| matches!(a, Action::Publish(Update::Warning { .. }))), "{out:?}");
}

#[test]
fn after_a_failover_an_agents_question_times_out_counting_from_the_new_leader() {
    let (e, w) = asking_agent();
    let dag = e.dag().clone();
    let mut fresh = RunEngine::new(RunId::from("r"), dag, RetryPolicy::default(), 0, 1);
    let turn = asking_turn_with(r#"{"question": "Send the mail?", "timeout": "1m"}"#);
    fresh.restore_agents(std::collections::HashMap::from([(w, vec![turn])]), Default::default());
    let mut out = Vec::new();
    fresh.settle(5_000_000, &mut out);
    let deadline = 5_000_000 + 60_000_000;
    assert!(out.contains(&Action::ArmTimer { subtask: w, at_us: deadline }), "{out:?}");
    fresh.apply(EngineEvent::RetryDue { subtask: w }, deadline, &mut Vec::new());
    assert_eq!(last_result(&fresh, w)["approved"], false);
}

#[test]
fn a_questions_timeout_and_decision_are_checked_and_the_model_is_told_why() {
    use crate::spec::Question;
    let q = Question::parse(r#"{"question": " ok? ", "timeout": "10m", "on_timeout": "approve"}"#).expect("valid");
    assert_eq!((q.text.as_str(), q.timeout, q.on_timeout), ("ok?", Some(Duration::from_secs(600)), OnTimeout::Approve));
    assert_eq!(Question::parse(r#"{"question": "ok?"}"#).expect("valid").timeout, None);
    for (bad, says) in [
        (r#"{"question": "ok?", "timeout": 0}"#, "timeout"),
        (r#"{"question": "ok?", "timeout": -5}"#, "timeout"),
        (r#"{"question": "ok?", "timeout": 1e300}"#, "timeout"),
        (r#"{"question": "ok?", "timeout": "99d"}"#, "timeout"),
        (r#"{"question": "ok?", "timeout": "soon"}"#, "timeout"),
        (r#"{"question": "ok?", "timeout": [1]}"#, "timeout"),
        (r#"{"question": "ok?", "on_timeout": "maybe"}"#, "on_timeout"),
        (r#"{"question": ""}"#, "question"),
        (r#"not json"#, "JSON"),
    ] {
        let err = Question::parse(bad).expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
}
