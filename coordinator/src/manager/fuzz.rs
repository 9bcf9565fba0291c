//! Arbitrary worker messages into the manager (property test): forged and stale fences,
//! unknown run and subtask ids, sequence numbers and token counts at the type's edges,
//! timestamps before the epoch and past the year 9999, garbage turn and spawn JSON, workers
//! that join twice, leave, expire and drain. Whatever arrives, the manager neither panics
//! (nor quarantines a run: that would be a panic caught) nor stops answering.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use swarm_core::agent::{AgentSpec, OrchestratorSpec};
use swarm_core::{ConnId, Dag, Limits, RunId, RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_store::repo::RunHeader;
use tokio::sync::mpsc;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Join {
        conn: u8,
        worker: u8,
        slots: u32,
        held: Vec<(u8, u8, u32, u64)>,
    },
    /// Report on the `pick`th assignment seen (or a forged fence when none is left).
    Report {
        conn: u8,
        pick: usize,
        forge: Option<u64>,
        times: (i64, i32, i64, i32),
        outcome: Outcome,
    },
    Step {
        conn: u8,
        pick: usize,
        seq: u32,
        turn: Text,
    },
    Heartbeat {
        conn: u8,
        fences: Vec<u64>,
    },
    Left {
        conn: u8,
    },
    Expired {
        worker: u8,
    },
    Draining {
        conn: u8,
    },
    Advance {
        ms: u32,
    },
}

#[derive(Clone, Debug)]
enum Outcome {
    Output(String),
    Error(i32, String),
    Suspended(Text, Text),
    /// An agent's approval request: turn text, question.
    Asked(Text, Text),
    None,
}

/// JSON that parses (with extreme numbers and odd strings) or text that does not.
#[derive(Clone, Debug)]
enum Text {
    Turn { input: u64, output: u64, calls: u8 },
    Spawns(Vec<(String, String, Vec<String>)>),
    Garbage(String),
}

impl Text {
    fn render(&self) -> String {
        match self {
            Self::Turn { input, output, calls } => {
                let tool_calls: Vec<_> = (0..*calls)
                    .map(|i| json!({"id": format!("c{i}"), "name": "assign_task", "arguments": "{}"}))
                    .collect();
                json!({"messages": [{"role": "assistant", "tool_calls": tool_calls}],
                       "usage": {"input_tokens": input, "output_tokens": output}})
                .to_string()
            }
            Self::Spawns(list) => {
                let v: Vec<_> = list
                    .iter()
                    .map(|(name, model, tools)| {
                        json!({"call_id": name, "name": name, "agent": {"input": name, "model": model, "tools": tools}})
                    })
                    .collect();
                serde_json::Value::Array(v).to_string()
            }
            Self::Garbage(s) => s.clone(),
        }
    }
}

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), 0u8..4).prop_map(|(input, output, calls)| Text::Turn { input, output, calls }),
        prop::collection::vec((".{0,12}", "(scripted|m|)", prop::collection::vec(".{0,6}", 0..3)), 0..4)
            .prop_map(Text::Spawns),
        ".{0,40}".prop_map(Text::Garbage),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        "(\\{\\}|null|[a-z\"{}]{0,20})".prop_map(Outcome::Output),
        (any::<i32>(), ".{0,20}").prop_map(|(k, m)| Outcome::Error(k, m)),
        (text(), text()).prop_map(|(t, s)| Outcome::Suspended(t, s)),
        (text(), text()).prop_map(|(t, q)| Outcome::Asked(t, q)),
        Just(Outcome::None),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0u8..3;
    prop_oneof![
        (
            conn.clone(),
            0u8..3,
            prop_oneof![1u32..8, Just(crate::worker_api::MAX_SLOTS)],
            prop::collection::vec((0u8..4, 0u8..6, any::<u32>(), any::<u64>()), 0..3)
        )
            .prop_map(|(conn, worker, slots, held)| Op::Join { conn, worker, slots, held }),
        (
            conn.clone(),
            any::<usize>(),
            prop::option::of(any::<u64>()),
            (any::<i64>(), any::<i32>(), any::<i64>(), any::<i32>()),
            outcome()
        )
            .prop_map(|(conn, pick, forge, times, outcome)| Op::Report { conn, pick, forge, times, outcome }),
        (conn.clone(), any::<usize>(), any::<u32>(), text()).prop_map(|(conn, pick, seq, turn)| Op::Step {
            conn,
            pick,
            seq,
            turn
        }),
        (conn.clone(), prop::collection::vec(any::<u64>(), 0..3))
            .prop_map(|(conn, fences)| Op::Heartbeat { conn, fences }),
        conn.clone().prop_map(|conn| Op::Left { conn }),
        (0u8..3).prop_map(|worker| Op::Expired { worker }),
        conn.prop_map(|conn| Op::Draining { conn }),
        prop_oneof![0u32..50, 1_000u32..120_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn specs() -> Vec<RunSpec> {
    let tool = |id: &str| SubtaskSpec::tool(id, "echo", json!({}));
    let agent = AgentSpec {
        instructions: String::new(),
        input: "go".into(),
        model: "m".into(),
        tools: vec!["echo".into()],
        max_steps: Some(3),
    };
    let orchestrator = OrchestratorSpec {
        goal: "split".into(),
        model: "m".into(),
        tools: vec![],
        max_steps: Some(3),
        subagent_tools: vec![],
        subagent_models: vec![],
        subagent_artifacts: vec![],
        subagent_placement: None,
    };
    let with = |id: &str, kind| SubtaskSpec { kind, ..tool(id) };
    vec![
        RunSpec::new("tools", vec![tool("a"), tool("b").after(["a"]), tool("c").after(["b"]), tool("d")]),
        RunSpec::new("agent", vec![with("x", SubtaskKind::Agent(agent)), tool("y").after(["x"])]),
        RunSpec::new("orch", vec![with("o", SubtaskKind::Orchestrator(orchestrator))]),
    ]
}

async fn play(ops: Vec<Op>) {
    let rig = super::tests::Rig::start(ManagerConfig { fault: None, ..ManagerConfig::default() });
    let (manager, clock) = (rig.manager.clone(), rig.clock.clone());
    let mut runs = Vec::new();
    for (i, spec) in specs().into_iter().enumerate() {
        let dag = Arc::new(Dag::build(&spec, &Limits::default()).expect("valid"));
        let run_id = RunId::from(format!("r{i}"));
        let header = RunHeader::running(run_id.clone(), spec.name.clone(), clock.now_us());
        let (id, span) = (run_id.clone(), tracing::Span::none());
        manager
            .call(|reply| Command::Submit { run_id: id, dag, header: Box::new(header), span, reply })
            .await
            .expect("submit");
        runs.push(run_id);
    }
    let tools = ["echo", "@agent", "@model:m"];
    let mut inboxes: HashMap<u8, mpsc::Receiver<Result<pb::CoordinatorMessage, tonic::Status>>> = HashMap::new();
    let mut seen: Vec<pb::Assignment> = Vec::new();
    let barrier = || async {
        // Two round trips: the first turn's dispatch and flush are done when the second answers.
        for _ in 0..2 {
            manager.call(|reply| Command::Stats { reply }).await.expect("the manager answers");
        }
    };
    for op in ops {
        match op {
            Op::Join { conn, worker, slots, held } => {
                let (tx, rx) = mpsc::channel(256);
                inboxes.insert(conn, rx);
                let hello = pb::WorkerHello {
                    worker_id: format!("w{worker}"),
                    slots,
                    tools: tools
                        .iter()
                        .map(|t| pb::ToolInfo { name: (*t).into(), idempotent: true, ..Default::default() })
                        .collect(),
                    held: held
                        .into_iter()
                        .map(|(r, s, attempt, fence)| pb::HeldAttempt {
                            run_id: format!("r{r}"),
                            subtask_id: ["a", "b", "x", "o", "o:1:n:0", "?"][s as usize].into(),
                            attempt,
                            fence,
                        })
                        .collect(),
                    ..Default::default()
                };
                let _ = manager
                    .send(Command::WorkerJoined {
                        conn: ConnId(u64::from(conn)),
                        hello,
                        tx,
                        principal: "anonymous".into(),
                    })
                    .await;
            }
            Op::Report { conn, pick, forge, times, outcome } => {
                let base = if seen.is_empty() { pb::Assignment::default() } else { seen.remove(pick % seen.len()) };
                let outcome = match outcome {
                    Outcome::Output(s) => Some(pb::attempt_report::Outcome::OutputJson(s)),
                    Outcome::Error(kind, message) => {
                        Some(pb::attempt_report::Outcome::Error(pb::AttemptError { kind, message }))
                    }
                    Outcome::Suspended(t, s) => Some(pb::attempt_report::Outcome::Suspended(pb::Suspended {
                        turn_json: t.render(),
                        spawns_json: s.render(),
                        ..Default::default()
                    })),
                    Outcome::Asked(t, q) => Some(pb::attempt_report::Outcome::Suspended(pb::Suspended {
                        turn_json: t.render(),
                        spawns_json: String::new(),
                        approval_call_id: "call-1".into(),
                        approval_question: q.render(),
                    })),
                    Outcome::None => None,
                };
                let report = pb::AttemptReport {
                    run_id: base.run_id,
                    subtask_id: base.subtask_id,
                    attempt: base.attempt,
                    fence: forge.unwrap_or(base.fence),
                    started_at: Some(prost_types::Timestamp { seconds: times.0, nanos: times.1 }),
                    finished_at: Some(prost_types::Timestamp { seconds: times.2, nanos: times.3 }),
                    outcome,
                    // Sometimes a manifest naming files no attempt stored (another run's).
                    artifacts: if times.0 % 3 == 0 {
                        vec![pb::Artifact {
                            path: "x".into(),
                            size: 1,
                            sha256: "0".repeat(64),
                            key: "payloads/other/artifacts/a/1/x".into(),
                        }]
                    } else {
                        vec![]
                    },
                };
                let _ =
                    manager.send(Command::WorkerReports { conn: ConnId(u64::from(conn)), reports: vec![report] }).await;
            }
            Op::Step { conn, pick, seq, turn } => {
                let fence = if seen.is_empty() { pick as u64 } else { seen[pick % seen.len()].fence };
                let step = pb::AgentStepReport { fence, seq, turn_json: turn.render() };
                let _ = manager.send(Command::WorkerSteps { conn: ConnId(u64::from(conn)), steps: vec![step] }).await;
            }
            Op::Heartbeat { conn, mut fences } => {
                fences.extend(seen.iter().map(|a| a.fence));
                let _ = manager.send(Command::WorkerHeartbeat { conn: ConnId(u64::from(conn)), fences }).await;
            }
            Op::Left { conn } => {
                inboxes.remove(&conn);
                let _ = manager.send(Command::WorkerLeft { conn: ConnId(u64::from(conn)) }).await;
            }
            Op::Expired { worker } => {
                let _ = manager.send(Command::WorkerExpired { worker_id: format!("w{worker}").into() }).await;
            }
            Op::Draining { conn } => {
                let _ = manager.send(Command::WorkerDraining { conn: ConnId(u64::from(conn)) }).await;
            }
            Op::Advance { ms } => tokio::time::advance(Duration::from_millis(u64::from(ms))).await,
        }
        barrier().await;
        for rx in inboxes.values_mut() {
            while let Ok(Ok(msg)) = rx.try_recv() {
                if let Some(pb::coordinator_message::Msg::Assignments(a)) = msg.msg {
                    seen.extend(a.assignments);
                }
            }
        }
    }
    barrier().await;
    for run_id in runs {
        let id = run_id.clone();
        let run = manager
            .call(|reply| Command::Get { run_id: id, page: Some(Page::all()), reply })
            .await
            .expect("the manager answers")
            .expect("the run is known")
            .run;
        let error = run.summary.as_ref().map_or(0, |s| s.error_kind);
        assert_ne!(error, pb::FailureKind::Internal as i32, "a panic was caught on {run_id}: {run:?}");
    }
    rig.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_worker_messages_never_panic_the_manager(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
        rt.block_on(play(ops));
    }
}
