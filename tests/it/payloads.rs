//! Large payloads: outputs offloaded to the payload store (claim check), oversized requests
//! refused with RESOURCE_EXHAUSTED, and a 10,000-subtask run whose spec exceeds etcd's request
//! limit.

use std::time::Duration;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::etcd::EtcdCluster;
use swarm_tests::harness::{TestCluster, submit, wait_done};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mib_output_is_offloaded_and_the_run_completes() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client").max_decoding_message_size(64 * 1024 * 1024);
    let spec = RunSpec::new(
        "big",
        vec![
            SubtaskSpec::tool("big", "big", json!({"bytes": 10 * 1024 * 1024})),
            SubtaskSpec::tool("small", "echo", json!({"text": "after"})).after(["big"]),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let big = run.subtasks.iter().find(|s| s.id == "big").expect("big");
    assert_eq!(big.output_json.len(), 10 * 1024 * 1024 + 2, "the output (a JSON string) is served");
    assert!(!big.output_ref.is_empty(), "and it was offloaded");

    // The store holds a reference only; the payload store holds the bytes. Wait for the sink.
    let key = format!("/swarm/v1/subtasks/{run_id}/big");
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        if let Some(kv) = tc.store.get(key.as_bytes()).await.expect("get") {
            break kv;
        }
        assert!(tokio::time::Instant::now() < until, "the record was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(record.value.len() < 4096, "the stored record is small ({} bytes)", record.value.len());
    let stored: serde_json::Value = serde_json::from_slice(&record.value).expect("json");
    assert!(stored.get("output").is_none());
    let reference = stored["output_ref"].as_str().expect("a reference");
    assert_eq!(tc.payloads.get(reference).await.expect("payload").len(), 10 * 1024 * 1024 + 2);
    tc.stop().await;
}

#[tokio::test]
async fn an_oversized_submit_is_resource_exhausted_with_the_limit() {
    let tc = TestCluster::start(0, 1).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let text = "x".repeat(60 * 1024);
    let spec = RunSpec::new(
        "huge",
        (0..300).map(|i| SubtaskSpec::tool(format!("s{i}"), "echo", json!({"text": text}))).collect(),
    );
    let err = c
        .submit_run(pb::SubmitRunRequest {
            spec: Some((&spec).into()),
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("too big");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("the limit is 16777216 bytes"), "{}", err.message());
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_subtask_run_is_stored_whole_in_etcd() {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let tc = TestCluster::start_on(etcd.store().await.expect("store"), 2, 256).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    // ~2.5 MB of spec: more than etcd takes in one request, so it is offloaded.
    let pad = "p".repeat(200);
    let spec = RunSpec::new(
        "wide",
        (0..10_000).map(|i| SubtaskSpec::tool(format!("s{i}"), "echo", json!({"text": pad}))).collect(),
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(120)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.summary.expect("summary").tool_calls_completed, 10_000);
    let stored = tc.store.get(format!("/swarm/v1/specs/{run_id}").as_bytes()).await.expect("get").expect("spec key");
    assert!(stored.value.starts_with(b"{\"$ref\""), "the spec key holds a reference");
    let repo = swarm_store::RunRepo::new(tc.store.clone(), "/swarm/v1/").with_payloads(tc.payloads.clone());
    let back = repo.spec(&swarm_core::RunId::from(run_id.as_str())).await.expect("read").expect("spec");
    assert_eq!(back.subtasks.len(), 10_000);
    tc.stop().await;
}
