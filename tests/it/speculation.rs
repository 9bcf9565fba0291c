//! Stragglers: a backup attempt on another worker, first finisher wins, the loser is cancelled,
//! and tools that must not run twice are never speculated.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb::{self, run_event::Event};
use swarm_tests::harness::{TestCluster, submit, wait_done, wait_for_events};

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster_with_one_slow_worker() -> TestCluster {
    let mut tc = TestCluster::start(0, 4).await.expect("cluster");
    tc.add_slow_worker("slow", 4, 100);
    tc.add_worker("fast-1", 4);
    tc.add_worker("fast-2", 4);
    tc.cluster.wait_for_workers(3, Duration::from_secs(10)).await.expect("workers");
    tc
}

fn wide(tool: &str, n: usize) -> RunSpec {
    let mut spec = RunSpec::new(
        "stragglers",
        (0..n).map(|i| SubtaskSpec::tool(format!("t{i}"), tool, json!({"ms": 30}))).collect(),
    );
    spec.speculation.quantile = 0.5;
    spec.speculation.min_runtime_ms = 50;
    spec.speculation.max_fraction = 0.5;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_gets_a_backup_elsewhere_and_the_loser_is_cancelled() {
    let tc = cluster_with_one_slow_worker().await;
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &wide("record", 12)).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let s = run.summary.clone().expect("summary");
    assert!(s.speculative_attempts >= 1, "{s:?}");
    assert!(s.speculative_wins >= 1, "{s:?}");
    let execs = tc.log.of_run(&run_id);
    let mut by_subtask: HashMap<&str, Vec<_>> = HashMap::new();
    for e in &execs {
        by_subtask.entry(e.subtask_id.as_str()).or_default().push(e);
    }
    let raced: Vec<_> = by_subtask.iter().filter(|(_, v)| v.len() == 2).collect();
    assert!(!raced.is_empty(), "some subtask ran twice (original and backup)");
    for (id, runs) in raced {
        assert_eq!(runs.iter().filter(|e| e.completed).count(), 1, "{id}: exactly one attempt finished");
        let lost = runs.iter().find(|e| !e.completed).expect("a cancelled attempt");
        assert_eq!(lost.worker, "slow", "{id}: the slow worker's attempt lost and was cancelled");
        let won = run.subtasks.iter().find(|t| t.id == *id).expect("subtask");
        assert_ne!(won.worker_id, "slow", "{id}: the backup on a fast worker won");
    }
    let events = wait_for_events(&mut c, &run_id, DEADLINE, |e| {
        matches!(e.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)))
    })
    .await
    .expect("events");
    assert!(events.iter().any(|e| matches!(e.event, Some(Event::Speculated(_)))), "speculation is visible in events");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_effecting_tool_is_never_speculated() {
    let tc = cluster_with_one_slow_worker().await;
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &wide("record_once", 12)).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.summary.expect("summary").speculative_attempts, 0);
    let execs = tc.log.of_run(&run_id);
    assert_eq!(execs.len(), 12, "each call executed exactly once");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_can_turn_speculation_off() {
    let tc = cluster_with_one_slow_worker().await;
    let mut c = tc.client().await.expect("client");
    let mut spec = wide("record", 12);
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.summary.expect("summary").speculative_attempts, 0);
    assert_eq!(tc.log.of_run(&run_id).len(), 12);
    tc.stop().await;
}
