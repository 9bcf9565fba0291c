//! Payloads in S3 (`--payloads s3://bucket/prefix`) against a real S3 server (SeaweedFS, see
//! `swarm_tests::s3`): values round-trip and go with their prefix, wrong keys are refused, and
//! a leader failover loses none of a run's big outputs kept there.

use std::time::Duration;

use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{submit, wait_done};
use swarm_tests::proc_cluster::ProcCluster;
use swarm_tests::s3::SeaweedFs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_round_trip_through_a_real_s3_server_and_wrong_keys_are_refused() {
    let _serial = crate::failover::SERIAL.lock().await;
    let s3 = SeaweedFs::start().await.expect("SeaweedFS");
    let store = s3.payloads("payloads").expect("store");
    let big = bytes::Bytes::from(vec![b'x'; 5 << 20]);
    let reference = store.put("runs/r1/a/1", big.clone()).await.expect("put");
    store.put("runs/r1/b/1", bytes::Bytes::from_static(b"small")).await.expect("put");
    store.put("runs/r2/a/1", bytes::Bytes::from_static(b"other run")).await.expect("put");
    assert_eq!(store.get(&reference).await.expect("get"), big);
    store.delete_prefix("runs/r1").await.expect("delete the run's payloads");
    assert!(store.get(&reference).await.is_err(), "deleted with its run");
    assert_eq!(store.get("runs/r2/a/1").await.expect("kept").as_ref(), b"other run");
    // The server checks keys: a forged secret neither writes nor reads.
    let forged = s3.payloads_with("payloads", &s3.access_key, "not-the-secret").expect("store");
    assert!(forged.put("runs/x", bytes::Bytes::from_static(b"x")).await.is_err(), "written with a wrong secret");
    assert!(forged.get("runs/r2/a/1").await.is_err(), "read with a wrong secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_loses_none_of_the_outputs_kept_in_s3() {
    let _serial = crate::failover::SERIAL.lock().await;
    let s3 = SeaweedFs::start().await.expect("SeaweedFS");
    let mut pc = ProcCluster::start_with_env(1, 0, 0, Duration::from_secs(2), s3.env()).await.expect("cluster");
    let payloads = ["--payloads".to_owned(), format!("s3://{}/swarm-payloads", s3.bucket)];
    for _ in 0..2 {
        pc.add_coordinator_args(&payloads).expect("coordinator");
        if pc.coordinators.len() == 1 {
            let (leader, _) = pc.wait_leader(None, Duration::from_secs(15)).await.expect("leader");
            pc.wait_serving(&leader, Duration::from_secs(15)).await.expect("serving");
        }
    }
    pc.add_worker("w0").expect("worker");
    pc.wait_workers(1, Duration::from_secs(15)).await.expect("worker");
    let (a_url, _) = pc.leader().await.expect("leader").expect("elected");
    let a = pc.coordinators.iter().position(|(_, url)| *url == a_url).expect("ours");
    let mut c = pc.client(&a_url).await.expect("client");
    // Outputs of 200 KB (printed in the exec sandbox): above the 64 KiB threshold, so in S3.
    let mut subtasks: Vec<SubtaskSpec> = (0..4)
        .map(|i| {
            let print = format!("print('{i}' * 200000)");
            SubtaskSpec::tool(format!("big{i}"), "exec", serde_json::json!({"cmd": ["python3", "-c", print]}))
        })
        .collect();
    // An artifact of 300 KB in S3, handed to a dependent.
    let mut art = SubtaskSpec::tool(
        "art",
        "exec",
        serde_json::json!({"script": "head -c 300000 /dev/urandom > r.bin", "check": true}),
    );
    art.outputs.artifacts = vec!["r.bin".into()];
    subtasks.push(art);
    subtasks.push(
        SubtaskSpec::tool("use", "exec", serde_json::json!({"script": "sha256sum inputs/art/r.bin", "check": true}))
            .after(["art"]),
    );
    let run_id = submit(&mut c, &RunSpec::new("s3-outputs", subtasks)).await.expect("submit");
    let before = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(before.state, pb::RunState::Succeeded as i32, "{}", pc.logs());
    // Kept in S3, not in etcd.
    let store = pc.store().await.expect("store");
    let records = store.range(format!("/swarm/v1/subtasks/{run_id}/").as_bytes(), None, 0).await.expect("records");
    assert_eq!(records.kvs.len(), 6);
    for kv in records.kvs.iter().filter(|kv| String::from_utf8_lossy(&kv.key).contains("/big")) {
        let record: serde_json::Value = serde_json::from_slice(&kv.value).expect("record");
        let reference = record["output_ref"].as_str().unwrap_or_else(|| panic!("offloaded: {record}"));
        let kept = s3.payloads("swarm-payloads").expect("store").get(reference).await.expect("in S3");
        assert!(kept.len() > 200_000);
    }
    pc.coordinators[a].0.kill();
    let after = pc.get_from_next_leader(&a_url, &run_id).await.expect("served by the next leader");
    let outputs = |r: &pb::Run| r.subtasks.iter().map(|s| (s.id.clone(), s.output_json.clone())).collect::<Vec<_>>();
    assert_eq!(outputs(&after), outputs(&before), "every big output, read back from S3 by the new leader");
    assert!(after.subtasks.iter().filter(|s| s.id.starts_with("big")).all(|s| s.output_json.len() > 200_000));
    // The artifact: listed by the new leader as before, and read back from S3 as stored.
    let art = |r: &pb::Run| r.subtasks.iter().find(|s| s.id == "art").expect("art").artifacts.clone();
    assert_eq!(art(&after), art(&before));
    let listed = art(&after).pop().expect("r.bin");
    let used = before.subtasks.iter().find(|s| s.id == "use").expect("use");
    assert!(used.output_json.contains(&format!("{}  inputs/art/r.bin", listed.sha256)), "{}", used.output_json);
    let (b_url, _) = pc.wait_leader(Some(&a_url), Duration::from_secs(15)).await.expect("next leader");
    let mut c = pc.client(&b_url).await.expect("client");
    let req = pb::GetArtifactRequest { run_id: run_id.clone(), subtask_id: "art".into(), path: "r.bin".into() };
    let mut stream = c.get_artifact(req).await.expect("download").into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        bytes.extend_from_slice(&chunk.data);
    }
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!((bytes.len() as u64, sha), (listed.size, listed.sha256.clone()));
}
