//! The wall-time breakdown over real gRPC, on runs whose losses are known by construction: a
//! retry backoff of a set length, and a cluster of one slot where a subtask must wait for it.

use std::time::Duration;

use serde_json::json;
use swarm_cli::client::RunJson;
use swarm_core::retry::RetrySpec;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_tests::harness::{TestCluster, submit, wait_done};

async fn run(slots: u32, spec: RunSpec) -> RunJson {
    let tc = TestCluster::start(1, slots).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &id, Duration::from_secs(30)).await.expect("ends");
    RunJson::from(&run)
}

fn parts(j: &RunJson) -> std::collections::BTreeMap<String, f64> {
    j.wall_breakdown_ms.clone().expect("a breakdown")
}

fn adds_up(j: &RunJson) {
    let sum: f64 = parts(j).values().sum();
    assert!((sum - j.wall_ms).abs() <= 0.02 * j.wall_ms + 1.0, "parts {sum} ms, wall {} ms: {:?}", j.wall_ms, parts(j));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_backoff_of_known_length_is_the_biggest_loss() {
    // a (50 ms) → b: fails at once, retried after exactly 800 ms, then 50 ms → c (50 ms).
    let mut b = SubtaskSpec::tool("b", "flaky", json!({"fail_times": 1, "ms": 50, "fail_ms": 0})).after(["a"]);
    b.retry = Some(RetrySpec { initial_interval_ms: Some(800), jitter: Some(0.0), ..Default::default() });
    let spec = RunSpec::new(
        "backoff",
        vec![
            SubtaskSpec::tool("a", "sleep", json!({"ms": 50})),
            b,
            SubtaskSpec::tool("c", "sleep", json!({"ms": 50})).after(["b"]),
        ],
    );
    let j = run(4, spec).await;
    assert_eq!(j.state, "SUCCEEDED", "{j:?}");
    let p = parts(&j);
    assert!((795.0..900.0).contains(&p["retry_backoff"]), "{p:?}");
    assert!((148.0..260.0).contains(&p["work"]), "{p:?}");
    adds_up(&j);
    let line = j.wall_headline.as_deref().expect("a headline");
    assert!(line.contains("waiting on a retry backoff of b"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_full_cluster_the_wait_for_a_slot_is_reported() {
    // One slot: x and y (300 ms each) cannot run together; z needs both.
    let spec = RunSpec::new(
        "full",
        vec![
            SubtaskSpec::tool("x", "sleep", json!({"ms": 300})),
            SubtaskSpec::tool("y", "sleep", json!({"ms": 300})),
            SubtaskSpec::tool("z", "echo", json!({"text": "joined"})).after(["x", "y"]),
        ],
    );
    let j = run(1, spec).await;
    assert_eq!(j.state, "SUCCEEDED", "{j:?}");
    let p = parts(&j);
    assert!((295.0..420.0).contains(&p["waiting_for_slot"]), "{p:?}");
    assert!((295.0..400.0).contains(&p["work"]), "{p:?}");
    adds_up(&j);
    assert!(j.wall_headline.as_deref().is_some_and(|l| l.contains("waiting for a free slot")), "{:?}", j.wall_headline);
}
