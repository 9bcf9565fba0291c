//! The live web view in headless Chromium (Debian's `chromium`, driven by playwright-core from
//! npm; both installed by ./scripts/install-deps test). The screenshot is kept in
//! target/web-view.png.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{TestCluster, submit, wait_done};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_a_run_live_with_its_critical_path() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("web/view.mjs");
    assert!(
        root.join("web/node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run ./scripts/install-deps test (./scripts/test does)"
    );
    let tc = TestCluster::start(2, 8).await.expect("cluster");
    let http = tc.cluster.http_addr.expect("the web view is served");
    let screenshot = root.join("../target/web-view.png");
    let mut browser = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{http}"))
        .arg("slow-3")
        .arg(&screenshot)
        .current_dir(root.join("web"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(browser.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.expect("browser started");
    assert_eq!(ready.expect("read").as_deref(), Some("READY"));

    // A slow chain (the critical path), a quick one, and a join.
    let mut subtasks: Vec<SubtaskSpec> = (0..4)
        .map(|i| {
            let s = SubtaskSpec::tool(format!("slow-{i}"), "sleep", json!({"ms": 700}));
            if i == 0 { s } else { s.after([format!("slow-{}", i - 1)]) }
        })
        .collect();
    subtasks.push(SubtaskSpec::tool("quick-0", "sleep", json!({"ms": 50})));
    subtasks.push(SubtaskSpec::tool("quick-1", "sleep", json!({"ms": 50})).after(["quick-0"]));
    subtasks.push(SubtaskSpec::tool("join", "echo", json!({"text": "done"})).after(["slow-3", "quick-1"]));
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &RunSpec::new("web", subtasks)).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);

    let report = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the browser finished")
        .expect("read")
        .expect("a report line");
    let status = tokio::time::timeout(Duration::from_secs(30), browser.wait()).await.expect("exit").expect("status");
    assert!(status.success(), "the browser script failed: {report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["run_id"], run_id.as_str(), "the running run appeared in the list");
    assert_eq!(report["workers"], 2, "the workers are listed");
    let critical: Vec<&str> =
        report["critical"].as_array().expect("critical").iter().filter_map(|v| v.as_str()).collect();
    let expected = run.summary.expect("summary").critical_path;
    assert_eq!(critical, expected, "the page marks the run's critical path");
    assert!(critical.contains(&"slow-3") && !critical.contains(&"quick-1"), "{critical:?}");
    assert_eq!(report["states"]["join"], "SUCCEEDED");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot was taken");
    tc.stop().await;
}

/// `POST path` with `headers` and `body` to the web view; the HTTP status.
pub(crate) async fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req =
        format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_decided_in_the_web_view_and_other_sites_cannot_decide_it() {
    use swarm_core::SubtaskKind;
    use swarm_core::spec::{ApprovalSpec, OnTimeout};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tc = TestCluster::start(1, 2).await.expect("cluster");
    let http = tc.cluster.http_addr.expect("the web view is served");
    let gate = ApprovalSpec { prompt: "Ship it?".into(), timeout: None, on_timeout: OnTimeout::Reject };
    let spec = RunSpec::new(
        "web-approval",
        vec![
            SubtaskSpec { kind: SubtaskKind::Approval(gate), ..SubtaskSpec::tool("gate", "echo", json!({})) },
            SubtaskSpec::tool("ship", "echo", json!({"text": "shipped"})).after(["gate"]),
        ],
    );
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &spec).await.expect("submit");
    swarm_tests::harness::wait_for_events(&mut c, &run_id, Duration::from_secs(30), |evs| {
        evs.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::ApprovalRequested(_))))
    })
    .await
    .expect("asked");

    // What another site's page could send is refused, and decides nothing.
    let path = format!("/api/runs/{run_id}/signal");
    let body = r#"{"subtask_id": "gate", "decision": "reject"}"#;
    let json_type = ("content-type", "application/json");
    assert_eq!(post(http, &path, &[json_type], body).await, 403, "no x-swarm-request header: a plain form post");
    let evil = [json_type, ("x-swarm-request", "1"), ("origin", "http://evil.example")];
    assert_eq!(post(http, &path, &evil, body).await, 403, "another origin");
    let form = [("content-type", "application/x-www-form-urlencoded"), ("x-swarm-request", "1")];
    assert_eq!(post(http, &path, &form, "decision=reject").await, 400, "not JSON");
    let bad = [json_type, ("x-swarm-request", "1")];
    assert_eq!(post(http, &path, &bad, r#"{"subtask_id": "gate", "decision": "maybe"}"#).await, 400);
    assert_eq!(
        post(http, &path, &bad, r#"{"subtask_id": "ship", "decision": "approve"}"#).await,
        400,
        "not an approval"
    );
    let run = swarm_cli::client::get(&mut c, &run_id, true).await.expect("get");
    assert_eq!(run.subtasks.iter().find(|s| s.id == "gate").map(|s| s.state), Some(pb::SubtaskState::Waiting as i32));

    // The page lists it with its prompt; its button decides it.
    let screenshot = root.join("../target/web-approval.png");
    let report = swarm_tests::harness::browser_script(
        "approve.mjs",
        &[
            std::ffi::OsStr::new(&format!("http://{http}")),
            std::ffi::OsStr::new(&run_id),
            std::ffi::OsStr::new(&"gate"),
            std::ffi::OsStr::new(&screenshot),
        ],
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(report["prompt"], "Ship it?");
    assert_eq!((report["status"].as_u64(), report["answer"]["decision"].as_str()), (Some(200), Some("approve")));
    let run = wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let gate = run.subtasks.iter().find(|s| s.id == "gate").expect("gate");
    assert_eq!(gate.output_json, r#"{"via":"web view"}"#);
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot was taken");
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_forked_from_a_subtask_in_the_web_view_and_other_sites_cannot_fork_it() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tc = TestCluster::start(1, 4).await.expect("cluster");
    let http = tc.cluster.http_addr.expect("the web view is served");
    let spec = RunSpec::new(
        "web-fork",
        vec![
            SubtaskSpec::tool("a", "echo", json!({"text": "a"})),
            SubtaskSpec::tool("b", "echo", json!({"text": "b"})).after(["a"]),
            SubtaskSpec::tool("c", "echo", json!({"text": "c"})).after(["b"]),
        ],
    );
    let mut c = tc.client().await.expect("client");
    let run_id = submit(&mut c, &spec).await.expect("submit");
    wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");

    let path = format!("/api/runs/{run_id}/fork");
    let body = r#"{"from_subtask": "b"}"#;
    let json_type = ("content-type", "application/json");
    assert_eq!(post(http, &path, &[json_type], body).await, 403, "no x-swarm-request header: a plain form post");
    let evil = [json_type, ("x-swarm-request", "1"), ("origin", "http://evil.example")];
    assert_eq!(post(http, &path, &evil, body).await, 403, "another origin");
    let ok = [json_type, ("x-swarm-request", "1")];
    assert_eq!(post(http, &path, &ok, r#"{"from_subtask": "b", "from_step": -1}"#).await, 400);
    assert_eq!(post(http, &path, &ok, r#"{"from_subtask": "zz"}"#).await, 404);
    let listed = c.list_runs(pb::ListRunsRequest { page_size: 10, ..Default::default() }).await.expect("list");
    assert_eq!(listed.into_inner().runs.len(), 1, "nothing was forked");

    let screenshot = root.join("../target/web-fork.png");
    let report = swarm_tests::harness::browser_script(
        "fork.mjs",
        &[
            std::ffi::OsStr::new(&format!("http://{http}")),
            std::ffi::OsStr::new(&run_id),
            std::ffi::OsStr::new(&"b"),
            std::ffi::OsStr::new(&r#"subtasks: [{id: b, args: {text: "b again"}}]"#),
            std::ffi::OsStr::new(&screenshot),
        ],
        Duration::from_secs(90),
    )
    .await;
    let refused = report["refused"].as_str().expect("refused");
    assert!(refused.contains("patch.subtasks[0].id") && refused.contains("nowhere"), "{refused}");
    let forked = report["run_id"].as_str().expect("new run");
    let run = swarm_cli::client::get(&mut c, forked, true).await.expect("the fork");
    assert_eq!((run.forked_from_run.as_str(), run.forked_from_subtask.as_str()), (run_id.as_str(), "b"));
    let b = run.subtasks.iter().find(|s| s.id == "b").expect("b");
    assert_eq!(b.output_json, json!({"text": "b again"}).to_string(), "the patch reached b");
    let a = run.subtasks.iter().find(|s| s.id == "a").expect("a");
    assert_eq!(a.reused_from, run_id, "a was reused");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "a screenshot was taken");
    tc.stop().await;
}
