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
