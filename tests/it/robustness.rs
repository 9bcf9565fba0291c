//! No request can crash or wedge the cluster, at process level: a panic on one run (provoked
//! by the test-only fault hook) quarantines that run, stored as `FAILED` (internal) so the next
//! leader does not replay it, while the coordinator keeps serving; a panic of the run manager
//! itself makes the coordinator resign and exit non-zero.

use std::path::Path;
use std::time::Duration;

use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::etcd::{EtcdCluster, TempDir, free_port};
use swarm_tests::harness::{submit, wait_done};
use swarm_tests::process::SwarmProcess;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;
use tonic_health::pb::health_check_response::ServingStatus;

/// `swarm up` on a free port with `extra` flags and the fault hook `fault`; returns it and its
/// URL once it serves.
async fn up(dir: &Path, name: &str, extra: &[String], fault: Option<&str>) -> (SwarmProcess, String) {
    let port = free_port().expect("port");
    let mut args =
        vec!["up".to_owned(), "--listen".into(), format!("127.0.0.1:{port}"), "--workers".into(), "2".into()];
    args.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = fault.map(|f| ("SWARM_FAULT_INJECTION", f)).into_iter().collect();
    let up = SwarmProcess::spawn_env(name, &args, &env, dir).expect("spawn");
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = swarm_cli::client::connect(&url).await
            && c.list_runs(pb::ListRunsRequest::default()).await.is_ok()
        {
            break;
        }
        assert!(Instant::now() < until, "swarm up does not serve: {}", up.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (up, url)
}

async fn health(url: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).ok()?.connect().await.ok()?;
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    Some(h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?.into_inner().status)
}

fn chain_with(boom: &str) -> RunSpec {
    RunSpec::new(
        "quarantine",
        vec![
            SubtaskSpec::tool("a", "echo", serde_json::json!({"text": "a"})),
            SubtaskSpec::tool(boom, "echo", serde_json::json!({"text": "b"})).after(["a"]),
            SubtaskSpec::tool("c", "echo", serde_json::json!({"text": "c"})).after([boom]),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_panic_quarantines_its_run_for_good_and_the_cluster_goes_on() {
    let mut etcd = EtcdCluster::start(1).await.expect("etcd");
    etcd.wait_ready(Duration::from_secs(20)).await.expect("etcd ready");
    let dir = TempDir::new("quarantine").expect("dir");
    let store = vec!["--etcd".to_owned(), etcd.endpoints().join(","), "--lease-ttl".into(), "2s".into()];
    let (mut first, url) = up(&dir.0, "first", &store, Some("engine-panic:boom")).await;
    let mut c = swarm_cli::client::connect(&url).await.expect("client");

    let bad = submit(&mut c, &chain_with("boom")).await.expect("submit");
    let run = wait_done(&mut c, &bad, Duration::from_secs(30)).await.expect("the quarantined run ends");
    assert_eq!(run.state, pb::RunState::Failed as i32, "{run:?}");
    let summary = run.summary.clone().expect("summary");
    assert_eq!(summary.error_kind, pb::FailureKind::Internal as i32, "{summary:?}");
    assert!(summary.error_message.contains("fault injection: engine panic on subtask `boom`"), "{summary:?}");

    // The coordinator goes on: SERVING, and the next run (same shape, no hooked subtask) succeeds.
    assert_eq!(health(&url).await, Some(ServingStatus::Serving as i32));
    let good = submit(&mut c, &chain_with("b")).await.expect("submit");
    let run = wait_done(&mut c, &good, Duration::from_secs(30)).await.expect("the next run ends");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}\n{}", first.log_text());

    // A watcher of the quarantined run sees it end, with the reason.
    let mut stream = c
        .watch_run(pb::WatchRunRequest { run_id: bad.clone(), after_seq: 0, ..Default::default() })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(ev) =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("no hang").expect("ok")
    {
        last = ev.event;
    }
    let Some(pb::run_event::Event::RunFinished(fin)) = last else { panic!("the stream ends with RunFinished") };
    assert_eq!(fin.summary.expect("summary").error_kind, pb::FailureKind::Internal as i32);

    // The next leader (no hook armed) reads it as ended: it is not resumed, and cannot fail again.
    first.signal("TERM").expect("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(20)).await.expect("exit"), Some(0), "{}", first.log_text());
    let (mut second, url) = up(&dir.0, "second", &store, None).await;
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    let run = c
        .get_run(pb::GetRunRequest { run_id: bad, include_subtasks: false, ..Default::default() })
        .await
        .expect("get")
        .into_inner();
    let run = run.run.expect("run");
    assert_eq!(run.state, pb::RunState::Failed as i32);
    assert_eq!(run.summary.expect("summary").error_kind, pb::FailureKind::Internal as i32);
    assert!(!second.log_text().contains("resuming run"), "nothing resumed: {}", second.log_text());
    second.signal("TERM").expect("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(20)).await.expect("exit"), Some(0), "{}", second.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_manager_panic_makes_the_coordinator_stop_serving_and_exit_non_zero() {
    let dir = TempDir::new("manager-panic").expect("dir");
    let (mut up, url) = up(&dir.0, "up", &[], Some("manager-panic:doom")).await;
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    let mut spec = chain_with("b");
    spec.name = "doom".into();
    // The submit itself may fail (the manager is gone before it answers) or succeed; either way
    // the process must not stay up, wedged, answering "not the leader".
    let _ = submit(&mut c, &spec).await;
    let code = up.wait_exit(Duration::from_secs(20)).await.expect("the coordinator exits");
    assert_eq!(code, Some(70), "{}", up.log_text());
    let log = up.log_text();
    assert!(log.contains("run manager panicked") && log.contains("fault injection: manager panic"), "{log}");
    assert!(log.contains("cannot go on; resigning leadership"), "{log}");
}

/// The coordinator's resident set now and at its peak, in bytes (Linux).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("field")
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_spec_of_a_million_unknown_dependencies_is_refused_quickly_in_bounded_memory() {
    let dir = TempDir::new("decoding").expect("dir");
    let (up, url) = up(&dir.0, "up", &[], None).await;
    let pid = up.pid().expect("pid");
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    // Warm up (first submit allocates pools and caches), then measure.
    let warm = submit(&mut c, &chain_with("b")).await.expect("submit");
    wait_done(&mut c, &warm, Duration::from_secs(30)).await.expect("done");
    let (before, _) = rss(pid);

    let deps: Vec<String> = (0..1_000_000).map(|i| format!("m{i:013}")).collect();
    let mut wire =
        pb::RunSpec::from(&RunSpec::new("huge", vec![SubtaskSpec::tool("a", "echo", serde_json::json!({}))]));
    wire.subtasks[0].depends_on = deps;
    let request = pb::SubmitRunRequest { spec: Some(wire), idempotency_key: String::new(), ..Default::default() };
    let size = prost::Message::encoded_len(&request);
    assert!(size > 15 << 20 && size <= 16 << 20, "{size} bytes");
    let started = Instant::now();
    let err = c.submit_run(request).await.expect_err("refused");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let violations = swarm_proto::status::field_violations(&err);
    assert!((10..=101).contains(&violations.len()), "at most 100 listed, and one counting the rest");
    assert_eq!(violations[0], ("subtasks[0].depends_on[0]".to_owned(), "unknown subtask `m0000000000000`".to_owned()));
    let listed = violations.len() - 1;
    let (field, last) = &violations[listed];
    assert_eq!(field, "spec");
    assert!(last.starts_with(&format!("{} more problems not listed", 1_000_000 - listed)), "{last}");
    assert!(err.message().ends_with(&format!("and {} more", 1_000_000 - 3)), "{}", err.message());
    let (_, peak) = rss(pid);
    let grew = peak.saturating_sub(before);
    eprintln!("16 MiB spec refused in {took:?}; peak RSS grew by {} MiB", grew >> 20);
    assert!(grew < 200 << 20, "peak RSS grew by {} MiB", grew >> 20);
    // Timing is measured in docs/benchmarks.md (release build); here only a generous ceiling
    // for a debug build on a loaded 2-core machine catches a quadratic validation.
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Over the limit: refused while decoding, RESOURCE_EXHAUSTED naming the limit.
    let mut wire =
        pb::RunSpec::from(&RunSpec::new("huge", vec![SubtaskSpec::tool("a", "echo", serde_json::json!({}))]));
    wire.subtasks[0].depends_on = (0..1_200_000).map(|i| format!("m{i:013}")).collect();
    let err = c
        .submit_run(pb::SubmitRunRequest { spec: Some(wire), idempotency_key: String::new(), ..Default::default() })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("the limit is 16777216 bytes"), "{}", err.message());

    // Nothing stored, and the coordinator serves on.
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert_eq!(runs.len(), 1, "only the warm-up run");
    let next = submit(&mut c, &chain_with("b")).await.expect("submit");
    let run = wait_done(&mut c, &next, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
}

fn sleeps(name: &str, n: usize, ms: u64) -> RunSpec {
    let subtasks = (0..n).map(|i| SubtaskSpec::tool(format!("s{i}"), "sleep", serde_json::json!({"ms": ms}))).collect();
    RunSpec::new(name, subtasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_an_admission_cap_submit_is_refused_with_retry_info_and_nothing_is_stored() {
    let dir = TempDir::new("admission").expect("dir");
    let caps = ["--max-active-runs", "2", "--max-queued-subtasks", "10"].map(String::from);
    let (up, url) = up(&dir.0, "up", &caps, None).await;
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    // Three and two subtasks that sleep a minute: active until cancelled.
    let a = submit(&mut c, &sleeps("a", 3, 60_000)).await.expect("a admitted");
    let refused = |err: &tonic::Status| {
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert_eq!(swarm_proto::status::retry_after(err), Some(Duration::from_secs(1)), "{err:?}");
        err.message().to_owned()
    };
    let wire = |spec: &RunSpec| pb::SubmitRunRequest {
        spec: Some(spec.into()),
        idempotency_key: String::new(),
        ..Default::default()
    };
    let err = c.submit_run(wire(&sleeps("b", 8, 10))).await.expect_err("3 + 8 queued is over 10");
    let message = refused(&err);
    assert!(message.contains("cap of 10 queued subtasks (--max-queued-subtasks)"), "{message}");
    let c_run = submit(&mut c, &sleeps("c", 2, 60_000)).await.expect("c admitted: 5 queued, 2 active");
    let err = c.submit_run(wire(&sleeps("d", 1, 10))).await.expect_err("a third active run");
    let message = refused(&err);
    assert!(message.contains("cap of 2 active runs (--max-active-runs)"), "{message}");
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    let mut names: Vec<String> = runs.into_iter().map(|r| r.name).collect();
    names.sort();
    assert_eq!(names, ["a", "c"], "refused runs are not stored");

    // `swarm submit --retry-busy` waits for room: it gets in once a run ends.
    let spec = dir.0.join("d.json");
    std::fs::write(&spec, serde_json::to_string(&sleeps("d", 1, 10)).expect("json")).expect("write");
    let mut submit_d = tokio::process::Command::new(swarm_tests::process::swarm_bin().expect("swarm"))
        .args(["submit", &spec.display().to_string(), "--retry-busy=60s", "--wait", "--json", "--addr", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("swarm submit");
    // Its first attempt is refused while the cluster is full; it says so and waits.
    let mut stderr = tokio::io::BufReader::new(submit_d.stderr.take().expect("stderr")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), stderr.next_line()).await.expect("in time");
    let first = first.expect("read").expect("a line");
    assert!(first.contains("active runs") && first.contains("retrying in"), "{first}");
    c.cancel_run(pb::CancelRunRequest { run_id: a, reason: "room".into() }).await.expect("cancel");
    while let Ok(Some(_)) = stderr.next_line().await {}
    let out = tokio::time::timeout(Duration::from_secs(30), submit_d.wait_with_output())
        .await
        .expect("in time")
        .expect("ran");
    assert_eq!(out.status.code(), Some(0));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
    c.cancel_run(pb::CancelRunRequest { run_id: c_run, reason: "done".into() }).await.expect("cancel");
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_50_runs_with_50_kib_outputs_end_the_coordinator_holds_only_their_summaries() {
    let _serial = crate::failover::SERIAL.lock().await;
    let pc = swarm_tests::proc_cluster::ProcCluster::start(1, 1, 2, Duration::from_secs(2)).await.expect("cluster");
    let (leader, _) = pc.leader().await.expect("leader").expect("elected");
    let pid = pc.coordinators[0].0.pid().expect("pid");
    let mut c = pc.client(&leader).await.expect("client");
    let warm = submit(&mut c, &chain_with("b")).await.expect("submit");
    wait_done(&mut c, &warm, Duration::from_secs(30)).await.expect("done");
    let (before, _) = rss(pid);

    // 50 runs × 100 calls, each returning 50 KiB: 250 MB of outputs through the coordinator,
    // 2.5 times the growth allowed below, so keeping even half of them fails the test. (200 runs
    // took two minutes of both cores in a debug build, the suite's longest test by far.)
    let kib = "x".repeat(1024);
    let spec = |r: usize| {
        let subtasks = (0..100)
            .map(|i| SubtaskSpec::tool(format!("s{i}"), "echo", serde_json::json!({"text": kib, "repeat": 50})))
            .collect();
        RunSpec::new(format!("mem-{r}"), subtasks)
    };
    let started = Instant::now();
    let mut ids = Vec::new();
    for r in 0..50 {
        ids.push(submit(&mut c, &spec(r)).await.expect("submit"));
    }
    for id in &ids {
        let run = wait_done(&mut c, id, Duration::from_secs(600)).await.expect("done");
        assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    }
    let (after, peak) = rss(pid);
    eprintln!(
        "50 × 100 × 50 KiB in {:?}: coordinator RSS {} MiB before, {} MiB after, peak {} MiB",
        started.elapsed(),
        before >> 20,
        after >> 20,
        peak >> 20
    );
    assert!(after < before + (100 << 20), "RSS grew from {} to {} MiB", before >> 20, after >> 20);

    // Ended runs are still served whole, from the store: a page of subtasks with outputs.
    let page = c
        .get_run(pb::GetRunRequest {
            run_id: ids[0].clone(),
            include_subtasks: true,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("get")
        .into_inner();
    let run = page.run.expect("run");
    assert_eq!(run.subtasks.len(), 10);
    assert_eq!(page.next_page_token, "s10");
    assert!(run.subtasks.iter().all(|s| s.output_json.len() > 50 * 1024), "outputs served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_panics_fails_its_attempt_and_the_worker_goes_on() {
    let tc = swarm_tests::harness::TestCluster::start(1, 4).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    for when in ["call", "poll"] {
        let spec = RunSpec::new("panics", vec![SubtaskSpec::tool("p", "panics", serde_json::json!({"when": when}))]);
        let id = submit(&mut c, &spec).await.expect("submit");
        let run = wait_done(&mut c, &id, Duration::from_secs(20)).await.expect("the attempt was reported, not hung");
        assert_eq!(run.state, pb::RunState::Failed as i32);
        let p = &run.subtasks[0];
        assert_eq!(p.error_kind, pb::FailureKind::Permanent as i32, "{p:?}");
        assert!(p.error_message.contains("the worker panicked running the attempt: a tool bug"), "{p:?}");
    }
    let id = submit(&mut c, &chain_with("b")).await.expect("submit");
    let run = wait_done(&mut c, &id, Duration::from_secs(20)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "the worker still serves");
    tc.stop().await;
}
