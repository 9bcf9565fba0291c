//! A coordinator whose system clock steps (an NTP correction, an operator's `date -s`, a VM
//! restored from a snapshot): real etcd and processes, the leader's wall clock moved an hour
//! ahead and then back while it runs calls, under libfaketime reading a file the test writes.
//! Its timers keep to the monotonic clock (`swarm_core::time::unix_now_us`): before, the step
//! back held a retry backoff for an hour (this test failed at its second half); the step ahead
//! must time nothing out (attempts' limits are kept by the workers, on their monotonic clocks).

use std::time::Duration;

use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{submit, wait_done, wait_for_events};
use swarm_tests::proc_cluster::ProcCluster;
use swarm_tests::process::stepped_wall_clock;

use crate::faults::{appends_of, started};

/// Steps the clock of the process reading `file` to `offset` (libfaketime's syntax, `+1h`), and
/// waits until `audit` (its audit log) shows a time past `past` (`ahead`) or before it: each
/// probe is a submit, which the coordinator audits with its wall clock as it reads then.
async fn step(
    c: &mut swarm_cli::client::Client,
    file: &std::path::Path,
    offset: &str,
    audit: &std::path::Path,
    bound: String,
    ahead: bool,
) {
    std::fs::write(file, format!("{offset}\n")).expect("clock file");
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    for k in 0.. {
        let probe =
            RunSpec::new(format!("probe-{offset}-{k}"), vec![SubtaskSpec::tool("e", "echo", serde_json::json!({}))]);
        submit(c, &probe).await.expect("probe");
        let text = std::fs::read_to_string(audit).unwrap_or_default();
        let last = text.lines().rev().find(|l| l.contains("\"submit\""));
        let time = last
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["time"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if (ahead && time > bound) || (!ahead && !time.is_empty() && time < bound) {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "the coordinator's clock never read {offset}: {time}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `offset_ms` from now by the test's clock, as the audit log writes times.
fn rfc3339_from_now(offset_ms: i64) -> String {
    swarm_core::time::rfc3339_ms((swarm_core::time::wall_clock_us() / 1000) as i64 + offset_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_wall_clock_steps_an_hour_either_way_times_nothing_out_and_holds_nothing_back() {
    let _serial = crate::failover::SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 0, 0, Duration::from_secs(2)).await.expect("cluster");
    let (clock, audit) = (pc.dir.0.join("clock"), pc.dir.0.join("audit.log"));
    pc.env = stepped_wall_clock(&clock);
    pc.add_coordinator_args(&["--audit-log".into(), audit.display().to_string()]).expect("coordinator");
    pc.env.clear();
    let (leader, _) = pc.wait_leader(None, Duration::from_secs(15)).await.expect("leader");
    pc.wait_serving(&leader, Duration::from_secs(15)).await.expect("serving");
    pc.add_worker("w0").expect("worker");
    pc.wait_workers(1, Duration::from_secs(15)).await.expect("worker registered");
    let mut c = pc.client(&leader).await.expect("client");

    // Ahead: 20 appends of 3 s with a 20 s limit each are running when the clock jumps an hour.
    const CALLS: usize = 20;
    let mut run = appends_of(CALLS, "stepped-ahead", "ahead.log", 3000);
    run.subtasks.iter_mut().for_each(|s| s.timeout = Some(Duration::from_secs(20)));
    let run_id = submit(&mut c, &run).await.expect("submit");
    wait_for_events(&mut c, &run_id, Duration::from_secs(20), |e| started(e) == CALLS).await.expect("all started");
    step(&mut c, &clock, "+1h", &audit, rfc3339_from_now(3_500_000), true).await;
    let ended = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    let logs = pc.logs();
    assert_eq!(ended.state, pb::RunState::Succeeded as i32, "{logs}");
    let summary = ended.summary.expect("summary");
    assert_eq!(summary.attempts as usize, CALLS, "no attempt timed out on the stepped clock: {summary:?}\n{logs}");
    let mut lines = pc.appended("ahead.log");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), CALLS, "{logs}");

    // Back: a call fails once and waits a 3 s backoff when the clock steps two hours back.
    let mut flaky = SubtaskSpec::tool("flaky", "flaky", serde_json::json!({"fail_times": 1}));
    flaky.retry = Some(swarm_core::retry::RetrySpec {
        maximum_attempts: Some(3),
        initial_interval_ms: Some(3000),
        ..Default::default()
    });
    let run_id = submit(&mut c, &RunSpec::new("stepped-back", vec![flaky])).await.expect("submit");
    let failed = |e: &[pb::RunEvent]| e.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::SubtaskFailed(_))));
    wait_for_events(&mut c, &run_id, Duration::from_secs(20), failed).await.expect("first attempt failed");
    step(&mut c, &clock, "-1h", &audit, rfc3339_from_now(-3_500_000), false).await;
    let ended = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("the backoff ended on time");
    assert_eq!(ended.state, pb::RunState::Succeeded as i32, "{}", pc.logs());
    assert_eq!(ended.summary.expect("summary").attempts, 2);
}
