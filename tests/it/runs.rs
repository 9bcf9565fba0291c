//! Runs end to end: exactly-once execution in dependency order, watch resume, fairness,
//! cancellation and worker loss.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb::{self, run_event::Event};
use swarm_tests::harness::{TestCluster, chains, submit, succeeded, wait_done, wait_for_events};

const DEADLINE: Duration = Duration::from_secs(60);

fn state(run: &pb::Run) -> pb::RunState {
    pb::RunState::try_from(run.state).expect("known state")
}

/// 1 planner → 100 chains × 15 `record` calls → 1 reducer.
fn swarm_spec(ms: u64) -> RunSpec {
    let mut spec = swarm_cli::specs::swarm(100, 15, None);
    for s in &mut spec.subtasks {
        if s.id.as_str().starts_with("agent-") {
            s.kind = swarm_core::SubtaskKind::Tool { tool: "record".into(), args: json!({ "ms": ms }) };
        }
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_dag_runs_every_call_once_after_its_dependencies() {
    let tc = TestCluster::start(4, 64).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut spec = swarm_spec(2);
    // `record` is read-only, so under load a slow attempt could get a speculative backup (and
    // run twice, by design); this test is about order and retries, not speculation.
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(state(&run), pb::RunState::Succeeded);

    // From the tools' own log: each of the 1,500 record calls ran exactly once, to completion.
    let execs = tc.log.of_run(&run_id);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in &execs {
        assert!(e.completed, "{} did not complete", e.subtask_id);
        *count.entry(e.subtask_id.as_str()).or_default() += 1;
    }
    assert_eq!(count.len(), 1500);
    assert!(count.values().all(|&n| n == 1), "some call ran twice");

    // From the coordinator's records: no subtask started before all its dependencies finished.
    let by_id: HashMap<&str, &pb::SubtaskStatus> = run.subtasks.iter().map(|s| (s.id.as_str(), s)).collect();
    let ts = |t: &Option<prost_types::Timestamp>| swarm_proto::convert::unix_us(t.as_ref().expect("timestamp"));
    for s in &spec.subtasks {
        let me = by_id[s.id.as_str()];
        assert_eq!(me.state, pb::SubtaskState::Succeeded as i32);
        assert_eq!(me.attempt, 1);
        for dep in &s.depends_on {
            let d = by_id[dep.as_str()];
            assert!(ts(&me.started_at) >= ts(&d.finished_at), "{} started before {dep} finished", s.id);
        }
    }
    // ... and the same from the tools' clocks.
    let exec_of: HashMap<&str, _> = execs.iter().map(|e| (e.subtask_id.as_str(), e)).collect();
    for c in 0..100 {
        for s in 1..15 {
            let (prev, next) = (
                exec_of[format!("agent-{c}-step-{}", s - 1).as_str()],
                exec_of[format!("agent-{c}-step-{s}").as_str()],
            );
            assert!(next.start >= prev.end);
        }
    }
    let summary = run.summary.expect("summary");
    assert_eq!((summary.tool_calls_completed, summary.critical_steps, summary.total_steps), (1502, 17, 1502));
    assert!(summary.parallelism > 80.0, "parallelism {}", summary.parallelism);
    assert_eq!(summary.critical_path.len(), 17);
    tc.stop().await;
}

#[tokio::test]
async fn watch_resumes_after_seq_without_gap_or_duplicate() {
    let tc = TestCluster::start(2, 8).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &chains("watch", 8, 10, 3)).await.expect("submit");
    let first = wait_for_events(&mut c, &run_id, DEADLINE, |evs| evs.len() >= 25).await.expect("first part");
    let last_seen = first.last().expect("events").seq;
    // Reconnect from the last seen seq and read to the end.
    let mut rest = Vec::new();
    let mut stream = c
        .watch_run(pb::WatchRunRequest { run_id: run_id.clone(), after_seq: last_seen, ..Default::default() })
        .await
        .expect("watch")
        .into_inner();
    while let Some(ev) = futures_util::StreamExt::next(&mut stream).await {
        rest.push(ev.expect("event"));
    }
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every seq exactly once, in order");
    assert!(matches!(rest.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_))));
    assert!(matches!(first[0].event, Some(Event::RunStarted(_))));
    assert_eq!(succeeded(&first) + succeeded(&rest), 80);
    // A watch from the start of a finished run replays everything.
    let replay = wait_for_events(&mut c, &run_id, DEADLINE, |evs| {
        matches!(evs.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)))
    })
    .await
    .expect("replay");
    assert_eq!(replay.len(), seqs.len());
    tc.stop().await;
}

#[tokio::test]
async fn concurrent_runs_share_workers_fairly() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let wide = |name: &str| {
        RunSpec::new(name, (0..40).map(|i| SubtaskSpec::tool(format!("t{i}"), "record", json!({"ms": 10}))).collect())
    };
    let a = submit(&mut c, &wide("a")).await.expect("submit a");
    let b = submit(&mut c, &wide("b")).await.expect("submit b");
    wait_done(&mut c, &a, DEADLINE).await.expect("a done");
    wait_done(&mut c, &b, DEADLINE).await.expect("b done");
    let mut execs = tc.log.all();
    execs.sort_by_key(|e| e.start);
    // Of the first 40 executions (half the work), neither run may have fewer than a quarter.
    let a_share = execs[..40].iter().filter(|e| e.run_id == a).count();
    assert!((10..=30).contains(&a_share), "run a got {a_share} of the first 40 slots");
    // And B must not wait for A to finish: B's first start precedes A's last end.
    let b_first = execs.iter().find(|e| e.run_id == b).expect("b ran").start;
    let a_last = execs.iter().filter(|e| e.run_id == a).map(|e| e.end).max().expect("a ran");
    assert!(b_first < a_last);
    tc.stop().await;
}

#[tokio::test]
async fn cancel_stops_dispatch_and_cancels_in_flight_calls() {
    let tc = TestCluster::start(2, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &chains("cancel", 8, 20, 30)).await.expect("submit");
    wait_for_events(&mut c, &run_id, DEADLINE, |evs| succeeded(evs) >= 10).await.expect("progress");
    let resp =
        c.cancel_run(pb::CancelRunRequest { run_id: run_id.clone(), reason: "test".into() }).await.expect("cancel");
    let cancelled_at = tokio::time::Instant::now();
    assert_eq!(resp.into_inner().run.expect("run").state, pb::RunState::Cancelled as i32);

    // A later run passing through the same manager and workers orders everything after the cancel.
    let probe = submit(&mut c, &chains("probe", 1, 1, 1)).await.expect("probe");
    wait_done(&mut c, &probe, DEADLINE).await.expect("probe done");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("final view");
    assert_eq!(state(&run), pb::RunState::Cancelled);
    let execs = tc.log.of_run(&run_id);
    assert!(execs.iter().all(|e| e.start <= cancelled_at), "nothing of the run may start after the cancel");
    let interrupted: Vec<_> = execs.iter().filter(|e| !e.completed).collect();
    assert!(!interrupted.is_empty(), "the in-flight calls were cancelled, not left to finish");
    for e in &interrupted {
        let latency = e.end.saturating_duration_since(cancelled_at);
        assert!(latency < Duration::from_secs(1), "{} stopped {latency:?} after the cancel", e.subtask_id);
    }
    let done = run.subtasks.iter().filter(|s| s.state == pb::SubtaskState::Succeeded as i32).count();
    assert!((10..160).contains(&done), "finished results are kept ({done})");
    tc.stop().await;
}

#[tokio::test]
async fn lost_worker_attempts_are_requeued_and_the_run_completes() {
    let mut tc = TestCluster::start(2, 8).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    // Re-queueing alone: with speculation on, the silent attempts would look late and their
    // backups on the surviving worker would win first (tests/it/speculation.rs covers that).
    let mut spec = chains("loss", 16, 10, 20);
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_for_events(&mut c, &run_id, DEADLINE, |evs| succeeded(evs) >= 20).await.expect("progress");
    tc.cluster.stop_worker(0).await;
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(state(&run), pb::RunState::Succeeded);
    let requeued: BTreeSet<&str> = run.subtasks.iter().filter(|s| s.attempt >= 2).map(|s| s.id.as_str()).collect();
    assert!(!requeued.is_empty(), "the stopped worker had attempts in flight");
    for id in &requeued {
        let s = run.subtasks.iter().find(|s| s.id == *id).expect("subtask");
        assert_eq!(s.worker_id, "w1", "{id} finished on the surviving worker");
    }
    // Every subtask completed at least once; only re-queued ones ran more than once.
    let execs = tc.log.of_run(&run_id);
    for s in &run.subtasks {
        let runs: Vec<_> = execs.iter().filter(|e| e.subtask_id == s.id).collect();
        assert_eq!(runs.iter().filter(|e| e.completed).count(), 1, "{} completed exactly once", s.id);
        if runs.len() > 1 {
            assert!(requeued.contains(s.id.as_str()));
        }
    }
    tc.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_skip_dependents() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let spec = RunSpec::new(
        "failures",
        vec![
            SubtaskSpec::tool("flaky", "flaky", json!({"fail_times": 2})),
            SubtaskSpec::tool("bad", "echo", json!({})),
            SubtaskSpec::tool("after-bad", "echo", json!({"text": "never"})).after(["bad"]),
            SubtaskSpec::tool("independent", "echo", json!({"text": "still runs"})),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(state(&run), pb::RunState::Failed);
    let get = |id: &str| run.subtasks.iter().find(|s| s.id == id).expect("subtask").clone();
    assert_eq!((get("flaky").state, get("flaky").attempt), (pb::SubtaskState::Succeeded as i32, 3));
    assert_eq!(get("bad").state, pb::SubtaskState::Failed as i32);
    assert_eq!(get("bad").error_kind, pb::FailureKind::Permanent as i32);
    assert_eq!(get("bad").attempt, 1, "permanent failures are not retried");
    assert_eq!(get("after-bad").state, pb::SubtaskState::Skipped as i32);
    assert_eq!(get("independent").state, pb::SubtaskState::Succeeded as i32);
    let s = run.summary.expect("summary");
    assert_eq!((s.tool_calls_completed, s.tool_calls_failed, s.tool_calls_skipped), (2, 1, 1));
    tc.stop().await;
}
