//! Large payloads: outputs offloaded to the payload store (claim check), requests over the
//! message limit refused with RESOURCE_EXHAUSTED or sent in chunks, and a 10,000-subtask run
//! whose spec exceeds etcd's request limit.

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

/// A chunked submission, each chunk as given (`total_bytes` only where the caller puts it).
fn chunked(parts: Vec<(Vec<u8>, u64)>) -> tonic::Request<impl tokio_stream::Stream<Item = pb::SubmitRunChunk>> {
    tonic::Request::new(tokio_stream::iter(
        parts.into_iter().map(|(data, total_bytes)| pb::SubmitRunChunk { data, total_bytes }),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_over_the_message_limit_goes_in_chunks_runs_whole_and_a_broken_stream_stores_nothing() {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let tc = TestCluster::start_on(etcd.store().await.expect("store"), 2, 64).await.expect("cluster");
    let mut c = tc.client().await.expect("client").max_decoding_message_size(64 * 1024 * 1024);
    // 300 subtasks with 60 KiB of args each: an 18 MB request.
    let text = "x".repeat(60 * 1024);
    let spec = RunSpec::new(
        "huge",
        (0..300).map(|i| SubtaskSpec::tool(format!("s{i}"), "echo", json!({"text": text}))).collect(),
    );
    let request = pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() };
    let size = prost::Message::encoded_len(&request) as u64;
    assert!(size > 16 << 20, "{size}");

    // In one message: refused while decoding, naming the limit and the way round it.
    let err = c.submit_run(request.clone()).await.expect_err("too big");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("the limit is 16777216 bytes"), "{}", err.message());
    assert!(err.message().contains("SubmitRunChunked"), "{}", err.message());

    // Each way a chunked stream can be wrong: a precise error, and nothing stored.
    let bytes = prost::Message::encode_to_vec(&request);
    let refused = |e: tonic::Status| (e.code(), swarm_proto::status::field_violations(&e), e.message().to_owned());
    let (code, _, message) =
        refused(c.submit_run_chunked(chunked(vec![(vec![1], 300 << 20)])).await.expect_err("over 256 MiB"));
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(message.contains("the limit is 268435456 bytes"), "{message}");
    let (code, fields, _) = refused(c.submit_run_chunked(chunked(vec![])).await.expect_err("no chunk"));
    assert_eq!((code, fields[0].0.as_str()), (tonic::Code::InvalidArgument, "total_bytes"));
    let (code, fields, _) =
        refused(c.submit_run_chunked(chunked(vec![(bytes[..10].to_vec(), 0)])).await.expect_err("no total"));
    assert_eq!((code, fields[0].0.as_str()), (tonic::Code::InvalidArgument, "total_bytes"));
    let half = bytes.len() / 2;
    let short = vec![(bytes[..half].to_vec(), size)];
    let (code, fields, message) = refused(c.submit_run_chunked(chunked(short)).await.expect_err("ends early"));
    assert_eq!((code, fields[0].0.as_str()), (tonic::Code::InvalidArgument, "data"), "{message}");
    assert!(fields[0].1.contains(&format!("after {half} of the {size} bytes")), "{fields:?}");
    let long = vec![(bytes[..half].to_vec(), size), (bytes[half..].to_vec(), 0), (vec![0; 10], 0)];
    let (code, fields, _) = refused(c.submit_run_chunked(chunked(long)).await.expect_err("goes past"));
    assert_eq!((code, fields[0].0.as_str()), (tonic::Code::InvalidArgument, "data"));
    assert!(fields[0].1.contains("chunk 2 goes past"), "{fields:?}");
    let (code, fields, _) =
        refused(c.submit_run_chunked(chunked(vec![(vec![0xff; 64], 64)])).await.expect_err("not a request"));
    assert_eq!((code, fields[0].0.as_str()), (tonic::Code::InvalidArgument, "data"));
    // A cycle inside an 18 MB spec: the same validation as SubmitRun, naming the subtasks.
    let mut cyclic = request.clone();
    let wire = cyclic.spec.as_mut().expect("spec");
    wire.subtasks[0].depends_on = vec!["s1".into()];
    wire.subtasks[1].depends_on = vec!["s0".into()];
    let err = swarm_cli::client::submit(&mut c, cyclic).await.expect_err("cyclic");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let fields = swarm_proto::status::field_violations(&err);
    assert!(fields.iter().any(|(f, m)| f.starts_with("subtasks[") && m.contains("cycle")), "{fields:?}");
    // The connection drops after the first chunk: the deadline cancels the stream mid-way.
    let first = pb::SubmitRunChunk { data: bytes[..4 << 20].to_vec(), total_bytes: size };
    let stalled = tokio_stream::StreamExt::chain(tokio_stream::iter([first]), tokio_stream::pending());
    let mut req = tonic::Request::new(stalled);
    req.set_timeout(Duration::from_millis(500));
    let err = c.submit_run_chunked(req).await.expect_err("cut off");
    assert!(matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{err:?}");
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert!(runs.is_empty(), "nothing stored: {runs:?}");

    // Whole, in 4 MiB chunks (as `swarm submit` sends it): stored and run.
    let created = swarm_cli::client::submit(&mut c, request).await.expect("submitted in chunks");
    let run = wait_done(&mut c, &created.run_id, Duration::from_secs(120)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    assert_eq!(run.subtasks.len(), 300);
    assert!(run.subtasks.iter().all(|s| s.output_json.contains(&text)), "every echo whole");
    let repo = swarm_store::RunRepo::new(tc.store.clone(), "/swarm/v1/").with_payloads(tc.payloads.clone());
    let back = repo.spec(&swarm_core::RunId::from(created.run_id.as_str())).await.expect("read").expect("spec");
    assert_eq!(back, spec, "the stored spec is the one sent");
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert_eq!(runs.len(), 1);
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
