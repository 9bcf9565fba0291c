//! The gRPC surface: validation errors with field violations, nothing stored on bad input,
//! health and reflection.

use std::time::Duration;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_proto::status::field_violations;
use swarm_store::StateStore;
use swarm_tests::harness::{TestCluster, submit, wait_done};

fn t(id: &str) -> SubtaskSpec {
    SubtaskSpec::tool(id, "echo", json!({"text": "x"}))
}

async fn rejected(c: &mut swarm_cli::client::Client, spec: pb::RunSpec) -> (tonic::Code, Vec<(String, String)>) {
    let err = c
        .submit_run(pb::SubmitRunRequest { spec: Some(spec), idempotency_key: String::new(), ..Default::default() })
        .await
        .expect_err("the spec is invalid");
    (err.code(), field_violations(&err))
}

#[tokio::test]
async fn bad_specs_get_field_violations_and_store_nothing() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let spec = |subtasks: Vec<SubtaskSpec>| pb::RunSpec::from(&RunSpec::new("bad", subtasks));

    let cases: Vec<(pb::RunSpec, Vec<(&str, &str)>)> = vec![
        (spec(vec![t("a"), t("a")]), vec![("subtasks[1].id", "duplicate id `a` (first used by subtasks[0])")]),
        (spec(vec![t("a").after(["ghost"])]), vec![("subtasks[0].depends_on[0]", "unknown subtask `ghost`")]),
        (spec(vec![t("a").after(["a"])]), vec![("subtasks[0].depends_on[0]", "subtask `a` depends on itself")]),
        (
            spec(vec![t("a").after(["c"]), t("b").after(["a"]), t("c").after(["b"])]),
            vec![("subtasks[0].depends_on", "cycle: a → b → c → a")],
        ),
        (spec(vec![]), vec![("subtasks", "a run needs at least one subtask")]),
        (
            spec(vec![SubtaskSpec::tool("big", "echo", json!({"text": "x".repeat(70 * 1024)}))]),
            vec![("subtasks[0].args", "71691 bytes exceed the limit of 65536")],
        ),
        (
            pb::RunSpec {
                speculation: None,
                limits: None,
                retry: None,
                tool_retry: Default::default(),
                max_concurrency: 0,
                schedule_to_start_ms: 0,
                priority: 0,
                version: String::new(),
                name: "wire".into(),
                subtasks: vec![pb::SubtaskSpec {
                    id: "j".into(),
                    kind: Some(pb::subtask_spec::Kind::ToolCall(pb::ToolCall {
                        tool: "echo".into(),
                        args_json: "{not json".into(),
                    })),
                    ..Default::default()
                }],
            },
            vec![("subtasks[0].tool_call.args_json", "invalid JSON: key must be a string at line 1 column 2")],
        ),
        (
            // Wire-level and structural problems are reported together, and a refused value's
            // stand-in draws no complaint of its own.
            {
                let mut w = spec(vec![t("a").after(["b"]), t("b").after(["a"]), t("c"), t("c")]);
                w.subtasks[0].kind = None;
                w.subtasks[2].kind =
                    Some(pb::subtask_spec::Kind::ToolCall(pb::ToolCall { tool: "echo".into(), args_json: "[".into() }));
                w
            },
            vec![
                ("subtasks[0].kind", "required: set tool_call, agent, orchestrator or approval"),
                ("subtasks[2].tool_call.args_json", "invalid JSON: EOF while parsing a list at line 1 column 1"),
                ("subtasks[3].id", "duplicate id `c` (first used by subtasks[2])"),
                ("subtasks[0].depends_on", "cycle: a → b → a"),
            ],
        ),
    ];
    for (spec, want) in cases {
        let (code, got) = rejected(&mut c, spec).await;
        assert_eq!(code, tonic::Code::InvalidArgument);
        let want: Vec<(String, String)> = want.into_iter().map(|(f, d)| (f.to_owned(), d.to_owned())).collect();
        assert_eq!(got, want);
    }
    let over = RunSpec::new("over", (0..100_001).map(|i| t(&format!("s{i}"))).collect());
    let (code, got) = rejected(&mut c, (&over).into()).await;
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert_eq!(got, vec![("subtasks".to_owned(), "100001 subtasks exceed the limit of 100000".to_owned())]);

    let missing = c.submit_run(pb::SubmitRunRequest::default()).await.expect_err("no spec");
    assert_eq!(field_violations(&missing), vec![("spec".to_owned(), "required (or spec_text)".to_owned())]);

    let stored = tc.store.range(b"/swarm/", None, 0).await.expect("range");
    let keys: Vec<String> = stored
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        // The cluster's own keys: the election, the term counter, the payload store's marker.
        .filter(|k| !k.starts_with("/swarm/v1/leader/") && k != "/swarm/v1/term" && k != "/swarm/v1/payload-marker")
        .collect();
    assert!(keys.is_empty(), "nothing may be stored for rejected specs: {keys:?}");
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert!(runs.is_empty());
    tc.stop().await;
}

#[tokio::test]
async fn get_cancel_and_list_answer_with_precise_statuses() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let err = c
        .get_run(pb::GetRunRequest { run_id: "r-nope".into(), include_subtasks: false, ..Default::default() })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c.get_run(pb::GetRunRequest::default()).await.expect_err("empty id");
    assert_eq!(field_violations(&err), vec![("run_id".to_owned(), "required".to_owned())]);

    let mut ids = Vec::new();
    for i in 0..3 {
        let spec = RunSpec::new(format!("n{i}"), vec![t("only")]);
        let id = submit(&mut c, &spec).await.expect("submit");
        wait_done(&mut c, &id, Duration::from_secs(10)).await.expect("done");
        ids.push(id);
    }
    let err =
        c.cancel_run(pb::CancelRunRequest { run_id: ids[0].clone(), reason: "late".into() }).await.expect_err("ended");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let page1 = c
        .list_runs(pb::ListRunsRequest { page_size: 2, page_token: String::new(), spec_version: String::new() })
        .await
        .expect("list")
        .into_inner();
    let page2 = c
        .list_runs(pb::ListRunsRequest {
            page_size: 2,
            page_token: page1.next_page_token.clone(),
            spec_version: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    let listed: Vec<String> = page1.runs.iter().chain(&page2.runs).map(|r| r.run_id.clone()).collect();
    ids.reverse();
    assert_eq!(listed, ids, "newest first, paged without gaps");
    assert!(page2.next_page_token.is_empty());
    // A token this API never gave is refused, not answered with an empty last page.
    for garbage in ["garbage", "r-zz", "s1"] {
        let err = c
            .list_runs(pb::ListRunsRequest { page_size: 2, page_token: garbage.into(), spec_version: String::new() })
            .await
            .expect_err("a garbage page token");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{garbage}: {err:?}");
        assert!(err.message().contains("page_token"), "{err:?}");
    }
    tc.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_run() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    let spec = pb::RunSpec::from(&RunSpec::new("idem", vec![t("a")]));
    let req =
        || pb::SubmitRunRequest { spec: Some(spec.clone()), idempotency_key: "order-42".into(), ..Default::default() };
    let first = c.submit_run(req()).await.expect("submit").into_inner();
    let second = c.submit_run(req()).await.expect("submit").into_inner();
    assert!(first.created && !second.created);
    assert_eq!(first.run_id, second.run_id);
    // The same key with another spec is a mistake, said as such; nothing new is stored.
    let other = pb::RunSpec::from(&RunSpec::new("idem", vec![t("a"), t("b")]));
    let s = c
        .submit_run(pb::SubmitRunRequest {
            spec: Some(other),
            idempotency_key: "order-42".into(),
            ..Default::default()
        })
        .await
        .expect_err("a reused key with a different spec");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains(&first.run_id) && s.message().contains("different spec"), "{s:?}");
    let listed = c
        .list_runs(pb::ListRunsRequest { page_size: 10, page_token: String::new(), spec_version: String::new() })
        .await
        .expect("list");
    assert_eq!(listed.into_inner().runs.len(), 1, "no second run");
    // The same spec again, after all that: still the first run.
    assert_eq!(c.submit_run(req()).await.expect("submit").into_inner().run_id, first.run_id);
    tc.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let tc = TestCluster::start(0, 1).await.expect("cluster");
    let channel =
        tonic::transport::Endpoint::from_shared(tc.cluster.url()).expect("url").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "swarm.v1.SwarmService", "swarm.v1.WorkerService"] {
        let resp = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.expect("check");
        assert_eq!(
            resp.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    tc.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let tc = TestCluster::start(0, 1).await.expect("cluster");
    let channel =
        tonic::transport::Endpoint::from_shared(tc.cluster.url()).expect("url").connect().await.expect("connect");

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(futures_util::stream::iter([req])).await.expect("v1").into_inner();
    let resp = stream.message().await.expect("answer").expect("one message");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = resp.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["swarm.v1.SwarmService", "swarm.v1.WorkerService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "swarm.v1.SwarmService".into(),
        )),
    };
    let mut stream =
        client.server_reflection_info(futures_util::stream::iter([req])).await.expect("v1alpha").into_inner();
    let resp = stream.message().await.expect("answer").expect("one message");
    assert!(
        matches!(resp.message_response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "v1alpha returns the file of swarm.v1.SwarmService"
    );
    tc.stop().await;
}

#[tokio::test]
async fn ended_runs_expire_after_the_run_ttl() {
    let store: std::sync::Arc<dyn StateStore> = std::sync::Arc::new(swarm_store::MemoryStore::new());
    let mut opts = swarm_cli::embedded::EmbeddedOptions { workers: 1, slots: 2, ..Default::default() };
    opts.coordinator.run_ttl = Some(Duration::from_millis(300));
    let cluster = swarm_cli::embedded::Embedded::start_on(opts, store.clone(), None).await.expect("cluster");
    let mut c = swarm_cli::client::connect(&cluster.url()).await.expect("client");
    let spec = RunSpec::new("short-lived", vec![t("a")]);
    let request =
        || pb::SubmitRunRequest { spec: Some((&spec).into()), idempotency_key: "job-7".into(), ..Default::default() };
    let id = c.submit_run(request()).await.expect("submit").into_inner().run_id;
    wait_done(&mut c, &id, Duration::from_secs(10)).await.expect("done");
    let key = format!("/swarm/v1/runs/{id}");
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get(key.as_bytes()).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < until, "the run was not deleted after its TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for gone in ["subtasks", "events"] {
        let left = store.range(format!("/swarm/v1/{gone}/{id}/").as_bytes(), None, 0).await.expect("range");
        assert!(left.kvs.is_empty(), "{gone} of the expired run are left: {}", left.kvs.len());
    }
    assert!(store.get(b"/swarm/v1/idempotency/job-7").await.expect("get").is_none(), "its idempotency key is left");
    let err = c
        .get_run(pb::GetRunRequest { run_id: id.clone(), include_subtasks: false, ..Default::default() })
        .await
        .expect_err("forgotten");
    assert_eq!(err.code(), tonic::Code::NotFound);
    // The key is free again: a resubmit starts a new run, one that can be found.
    let again = c.submit_run(request()).await.expect("resubmit").into_inner().run_id;
    assert_ne!(again, id, "the key named a run that no longer exists");
    wait_done(&mut c, &again, Duration::from_secs(10)).await.expect("the new run runs");
    cluster.stop().await;
}

#[tokio::test]
async fn yaml_specs_read_y_n_on_and_off_as_the_strings_they_are() {
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    // YAML 1.2: only true and false are booleans (with 1.1's rules, `text: y` arrived as `true`
    // and the call failed as `args.text: required string`).
    let text = "name: yaml12\nspeculation: {enabled: true}\nsubtasks:\n  - {id: y, tool: echo, args: {text: y}}\n  - {id: off, tool: echo, args: {text: off}}\n";
    let request = pb::SubmitRunRequest { spec_text: text.into(), ..Default::default() };
    let run_id = c.submit_run(request).await.expect("submit").into_inner().run_id;
    let run = wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let output = |id: &str| run.subtasks.iter().find(|s| s.id == id).map(|s| s.output_json.clone());
    assert_eq!(output("y"), Some(json!({"text": "y"}).to_string()));
    assert_eq!(output("off"), Some(json!({"text": "off"}).to_string()));
    // A field that is a boolean takes `true`/`false`; `yes` is named as the string it is.
    let request = pb::SubmitRunRequest {
        spec_text: "name: x\nspeculation: {enabled: yes}\nsubtasks: [{id: a, tool: echo}]\n".into(),
        ..Default::default()
    };
    let err = c.submit_run(request).await.expect_err("yes is not a boolean");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    tc.stop().await;
}
