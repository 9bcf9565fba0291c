//! Retries by policy (run, tool and subtask level), poison quarantine and per-run concurrency.

use std::time::Duration;

use serde_json::json;
use swarm_core::retry::RetrySpec;
use swarm_core::{FailureKind, RunSpec, SubtaskSpec};
use swarm_proto::convert::{duration_to_us, unix_us};
use swarm_proto::pb::{self, run_event::Event};
use swarm_tests::harness::{TestCluster, submit, wait_done, wait_for_events};

const DEADLINE: Duration = Duration::from_secs(60);

fn finished(e: &[pb::RunEvent]) -> bool {
    matches!(e.last().and_then(|e| e.event.as_ref()), Some(Event::RunFinished(_)))
}

#[tokio::test]
async fn flaky_is_retried_with_the_policys_backoff() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut flaky = SubtaskSpec::tool("flaky", "flaky", json!({"fail_times": 2}));
    flaky.retry = Some(RetrySpec {
        initial_interval_ms: Some(200),
        backoff_coefficient: Some(2.0),
        jitter: Some(0.0),
        ..Default::default()
    });
    let run_id = submit(&mut c, &RunSpec::new("retry", vec![flaky])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.subtasks[0].attempt, 3);
    let events = wait_for_events(&mut c, &run_id, DEADLINE, finished).await.expect("events");
    let failures: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::SubtaskFailed(f)) => {
                assert_eq!(f.kind, pb::FailureKind::Transient as i32, "the failure is classified");
                Some((unix_us(e.time.as_ref().expect("time")), f.retry_in.as_ref().map_or(0, duration_to_us)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures.iter().map(|f| f.1).collect::<Vec<_>>(), vec![200_000, 400_000], "200 ms, then ×2");
    let starts: Vec<u64> = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::SubtaskStarted(_))))
        .map(|e| unix_us(e.time.as_ref().expect("time")))
        .collect();
    assert_eq!(starts.len(), 3);
    for (k, (failed_at, wait)) in failures.iter().enumerate() {
        assert!(starts[k + 1] >= failed_at + wait, "attempt {} started before its backoff ended", k + 2);
    }
    tc.stop().await;
}

#[tokio::test]
async fn tool_and_run_policies_apply_and_the_most_specific_wins() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut spec = RunSpec::new(
        "policies",
        vec![
            SubtaskSpec::tool("by-tool", "flaky", json!({"fail_times": 1})),
            SubtaskSpec::tool("by-subtask", "flaky", json!({"fail_times": 1})),
        ],
    );
    // Flaky failures are transient; the tool's policy says not to retry them...
    spec.tool_retry
        .insert("flaky".into(), RetrySpec { non_retryable: vec![FailureKind::Transient], ..Default::default() });
    // ...but one subtask's own policy retries them (its own `non_retryable`, empty; and its
    // own attempts: the run's one attempt would reach it otherwise).
    spec.subtasks[1].retry =
        Some(RetrySpec { initial_interval_ms: Some(10), maximum_attempts: Some(2), ..Default::default() });
    spec.retry = Some(RetrySpec { maximum_attempts: Some(1), ..Default::default() });
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    let get = |id: &str| run.subtasks.iter().find(|s| s.id == id).expect("subtask").clone();
    assert_eq!((get("by-tool").state, get("by-tool").attempt), (pb::SubtaskState::Failed as i32, 1));
    assert_eq!((get("by-subtask").state, get("by-subtask").attempt), (pb::SubtaskState::Succeeded as i32, 2));
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_is_quarantined_after_failing_on_three_workers() {
    let tc = TestCluster::start(3, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut poison = SubtaskSpec::tool("poison", "flaky", json!({"fail_times": 100}));
    poison.retry = Some(RetrySpec { initial_interval_ms: Some(10), maximum_attempts: Some(10), ..Default::default() });
    let fine = SubtaskSpec::tool("fine", "echo", json!({"text": "still runs"}));
    let run_id = submit(&mut c, &RunSpec::new("poison", vec![poison, fine])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    let p = run.subtasks.iter().find(|s| s.id == "poison").expect("poison");
    assert_eq!(p.attempt, 3, "quarantined after three distinct workers, not after ten attempts");
    assert!(p.error_message.contains("quarantined after failing on 3 distinct workers"), "{}", p.error_message);
    let f = run.subtasks.iter().find(|s| s.id == "fine").expect("fine");
    assert_eq!(f.state, pb::SubtaskState::Succeeded as i32, "everything else finishes");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_never_exceeds_its_concurrency_cap() {
    let tc = TestCluster::start(2, 8).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut spec = RunSpec::new(
        "capped",
        (0..16).map(|i| SubtaskSpec::tool(format!("t{i}"), "record", json!({"ms": 30}))).collect(),
    );
    spec.max_concurrency = 3;
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    let execs = tc.log.of_run(&run_id);
    assert_eq!(execs.len(), 16);
    let mut edges: Vec<(tokio::time::Instant, i32)> = execs.iter().flat_map(|e| [(e.start, 1), (e.end, -1)]).collect();
    edges.sort_by_key(|&(t, d)| (t, d));
    let mut running = 0;
    let mut peak = 0;
    for (_, d) in edges {
        running += d;
        peak = peak.max(running);
    }
    assert!(peak <= 3, "{peak} attempts ran at once");
    assert!(peak >= 2, "the cap still allows parallel work ({peak})");
    tc.stop().await;
}

#[tokio::test]
async fn the_longest_remaining_path_starts_first() {
    let tc = TestCluster::start(1, 1).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    // Six short independent calls listed first, then a chain of four: with one slot, FIFO would
    // run the six first; critical-path-first starts the chain.
    let mut subtasks: Vec<SubtaskSpec> =
        (0..6).map(|i| SubtaskSpec::tool(format!("s{i}"), "record", json!({"ms": 10}))).collect();
    for k in 0..4 {
        let t = SubtaskSpec::tool(format!("c{k}"), "record", json!({"ms": 10}));
        subtasks.push(if k == 0 { t } else { t.after([format!("c{}", k - 1)]) });
    }
    let mut spec = RunSpec::new("cp-first", subtasks);
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    let mut execs = tc.log.of_run(&run_id);
    execs.sort_by_key(|e| e.start);
    assert_eq!(
        execs[0].subtask_id,
        "c0",
        "the chain's head starts first: {:?}",
        execs.iter().map(|e| &e.subtask_id).collect::<Vec<_>>()
    );
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_rate_limit_holds_under_load() {
    let mut opts = swarm_cli::embedded::EmbeddedOptions { workers: 2, slots: 16, ..Default::default() };
    opts.coordinator.manager.rate_limits.insert("echo".into(), "20/2".parse().expect("limit"));
    let cluster = swarm_cli::embedded::Embedded::start(opts).await.expect("cluster");
    cluster.wait_for_workers(2, Duration::from_secs(10)).await.expect("workers");
    let mut c = swarm_cli::client::connect(&cluster.url()).await.expect("client");
    let subtasks = (0..30).map(|i| SubtaskSpec::tool(format!("e{i}"), "echo", json!({"text": "x"}))).collect();
    let run_id = submit(&mut c, &RunSpec::new("limited", subtasks)).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let mut starts: Vec<u64> = run.subtasks.iter().map(|s| unix_us(s.started_at.as_ref().expect("started"))).collect();
    starts.sort_unstable();
    // At 20/s with bursts of 2, no 500 ms window holds more than 2 + 10 starts (+1 for rounding).
    for (k, &t) in starts.iter().enumerate() {
        let in_window = starts[k..].iter().take_while(|&&u| u < t + 500_000).count();
        assert!(in_window <= 13, "{in_window} calls started within 500 ms");
    }
    let span = starts.last().expect("starts") - starts[0];
    assert!(span >= 1_300_000, "30 calls at 20/s after a burst of 2 take ≥ 1.4 s, took {span} µs");
    cluster.stop().await;
}

#[tokio::test]
async fn an_attempt_past_its_start_to_close_timeout_fails_as_a_timeout_and_is_retried() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut slow = SubtaskSpec::tool("slow", "record", json!({"ms": 5_000}));
    slow.timeout = Some(Duration::from_millis(150));
    slow.retry = Some(RetrySpec { initial_interval_ms: Some(10), maximum_attempts: Some(2), ..Default::default() });
    let mut spec = RunSpec::new("timeout", vec![slow]);
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    let s = &run.subtasks[0];
    assert_eq!((s.state, s.attempt), (pb::SubtaskState::Failed as i32, 2), "timed out twice, per the policy");
    assert_eq!(s.error_kind, pb::FailureKind::Timeout as i32);
    let execs = tc.log.of_run(&run_id);
    assert_eq!(execs.len(), 2);
    assert!(
        execs.iter().all(|e| !e.completed && e.end - e.start < Duration::from_secs(2)),
        "each attempt was stopped at its timeout"
    );
    tc.stop().await;
}

#[tokio::test]
async fn a_subtask_no_worker_can_start_fails_its_schedule_to_start_timeout() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let mut spec = RunSpec::new(
        "unschedulable",
        vec![
            SubtaskSpec::tool("nobody", "tool_no_worker_offers", json!({})),
            SubtaskSpec::tool("after", "echo", json!({"text": "x"})).after(["nobody"]),
            SubtaskSpec::tool("fine", "echo", json!({"text": "x"})),
        ],
    );
    spec.schedule_to_start_ms = 300;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    let get = |id: &str| run.subtasks.iter().find(|s| s.id == id).expect("subtask").clone();
    assert_eq!(get("nobody").error_kind, pb::FailureKind::Timeout as i32);
    assert!(get("nobody").error_message.contains("schedule-to-start"), "{}", get("nobody").error_message);
    assert_eq!(get("after").state, pb::SubtaskState::Skipped as i32);
    assert_eq!(get("fine").state, pb::SubtaskState::Succeeded as i32);
    let wall = run.summary.expect("summary").wall_time.map_or(0, |d| duration_to_us(&d));
    assert!(wall >= 300_000, "it waited its 300 ms first ({wall} µs)");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_attempt_is_declared_lost_and_retried_elsewhere() {
    let mut opts = swarm_cli::embedded::EmbeddedOptions { workers: 0, slots: 4, ..Default::default() };
    opts.coordinator.manager.heartbeat_interval = Duration::from_millis(100);
    let mut cluster = swarm_cli::embedded::Embedded::start(opts).await.expect("cluster");
    // The first worker keeps its stream open but never sends heartbeats.
    let mut silent = swarm_worker::WorkerConfig::new(cluster.url());
    silent.worker_id = "silent".into();
    silent.heartbeats = false;
    cluster.add_worker_with(silent, std::sync::Arc::new(swarm_worker::ToolRegistry::builtin()));
    cluster.wait_for_workers(1, Duration::from_secs(10)).await.expect("silent worker");
    let mut c = swarm_cli::client::connect(&cluster.url()).await.expect("client");
    let mut spec = RunSpec::new("silent", vec![SubtaskSpec::tool("long", "sleep", json!({"ms": 1500}))]);
    spec.speculation.enabled = false;
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_for_events(&mut c, &run_id, DEADLINE, |e| e.iter().any(|e| matches!(e.event, Some(Event::SubtaskStarted(_)))))
        .await
        .expect("started on the silent worker");
    cluster.add_worker("beating", 4, std::sync::Arc::new(swarm_worker::ToolRegistry::builtin()));
    let run = wait_done(&mut c, &run_id, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let s = &run.subtasks[0];
    assert!(s.attempt >= 2, "the silent attempt was not the one that finished");
    assert_eq!(s.worker_id, "beating", "re-run on the worker that beats");
    let events = wait_for_events(&mut c, &run_id, DEADLINE, finished).await.expect("events");
    let lost = events.iter().find_map(|e| match &e.event {
        Some(Event::SubtaskFailed(f)) => Some(f.clone()),
        _ => None,
    });
    let lost = lost.expect("the first attempt was declared lost");
    assert_eq!(lost.kind, pb::FailureKind::WorkerLost as i32);
    assert!(lost.message.contains("no heartbeat"), "{}", lost.message);
    cluster.stop().await;
}
