//! The web view as operators use it (headless Chromium): the runs table filtered by state and
//! name, the workers with their labels and heartbeat, a run's timeline (a retried call, the
//! critical path; 10,000 calls drawn on a canvas), and a subtask's spec, output and transcript.
//! Screenshots of each page go to docs/img (docs/observability.md shows them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_core::agent::AgentSpec;
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_store::MemoryStore;
use swarm_tests::harness::{TestCluster, submit, wait_done};
use swarm_worker::model::{ModelRegistry, ScriptedModel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_filter_runs_read_workers_and_follow_a_run_on_its_timeline() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = "agents:\n  writer:\n    - content: \"checking\"\n      tool_calls: [{name: echo, arguments: {text: draft}}]\n    - content: \"the report\"\n";
    let mut m = ModelRegistry::new();
    m.register("scripted", Arc::new(ScriptedModel::from_yaml(script).expect("script")));
    let tc = TestCluster::start_with(Arc::new(MemoryStore::new()), Arc::new(m), 2, 64).await.expect("cluster");
    let http = tc.cluster.http_addr.expect("the web view is served");
    let mut c = tc.client().await.expect("client");

    let retry = RunSpec::new(
        "ops-retry",
        vec![
            SubtaskSpec::tool("plan", "echo", json!({"text": "plan"})),
            SubtaskSpec::tool("flaky", "flaky", json!({"fail_times": 1, "ms": 30})).after(["plan"]),
            SubtaskSpec::tool("side", "sleep", json!({"ms": 5})).after(["plan"]),
            // It hands a file on: the subtask panel lists it with a download link.
            SubtaskSpec {
                outputs: swarm_core::artifact::Outputs { artifacts: vec!["out/report.md".into()] },
                ..SubtaskSpec::tool("join", "write_files", json!({"files": {"out/report.md": "# done\n"}}))
                    .after(["flaky", "side"])
            },
        ],
    );
    let writer = AgentSpec {
        instructions: "Write it.".into(),
        input: "the report".into(),
        model: "scripted".into(),
        tools: vec!["echo".into()],
        max_steps: None,
    };
    let agent = RunSpec::new(
        "ops-agent",
        vec![SubtaskSpec { kind: SubtaskKind::Agent(writer), ..SubtaskSpec::tool("writer", "echo", json!({})) }],
    );
    let mut big = RunSpec::new(
        "ops-big",
        (0..10_000)
            .map(|i| SubtaskSpec::tool(format!("c{i}").as_str(), "echo", json!({"text": format!("call {i}")})))
            .collect(),
    );
    // One attempt per call, so the timeline has exactly 10,000 bars: no backups of calls that
    // straggle on a loaded machine.
    big.speculation.enabled = false;
    let other = RunSpec::new("unrelated", vec![SubtaskSpec::tool("x", "echo", json!({"text": "x"}))]);
    let mut ids = serde_json::Map::new();
    for (key, spec) in [("retry", &retry), ("agent", &agent), ("big", &big), ("other", &other)] {
        let id = submit(&mut c, spec).await.expect("submit");
        let run = wait_done(&mut c, &id, Duration::from_secs(120)).await.expect("done");
        assert_eq!(run.state, pb::RunState::Succeeded as i32, "{key}");
        ids.insert(key.into(), json!(id));
    }

    let shots = root.join("../docs/img");
    std::fs::create_dir_all(&shots).expect("docs/img");
    let r = swarm_tests::harness::browser_script(
        "operator.mjs",
        &[
            std::ffi::OsStr::new(&format!("http://{http}")),
            std::ffi::OsStr::new(&serde_json::Value::Object(ids).to_string()),
            std::ffi::OsStr::new(&shots),
        ],
        Duration::from_secs(180),
    )
    .await;

    // The table filtered by name, then by state; each run with its age.
    let names: Vec<&str> = r["named"].as_array().expect("named").iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("ops-")), "{names:?}");
    assert!(
        r["succeeded"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|x| x["state"] == "SUCCEEDED" && x["age"].as_str().is_some_and(|a| a.ends_with("ago")))
    );
    // Workers: labels, how long since they were heard of, serving.
    let workers = r["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w["labels"] == "process=embedded" && w["state"] == "serving"), "{workers:?}");
    assert!(workers.iter().all(|w| w["heard"].as_str().is_some_and(|h| h.ends_with("s ago"))), "{workers:?}");

    // The retried run: five bars (flaky twice: a failed attempt and its retry), the critical
    // path marked on the successful ones (plan → flaky → join).
    let t = &r["retryTimeline"];
    assert_eq!(t["bars"], "5", "{t}");
    assert_eq!(t["critical"], "3", "{t}");
    let flaky = &r["flaky"];
    assert!(flaky["text"].as_str().is_some_and(|s| s.contains("attempts2") && s.contains("SUCCEEDED")), "{flaky}");
    assert!(flaky["spec"].as_str().is_some_and(|s| s.contains("fail_times")), "{flaky}");
    assert!(flaky["output"].as_str().is_some_and(|s| !s.is_empty()), "{flaky}");
    // The artifact, listed and downloaded through the page's link (as the signed-in user).
    let join = &r["join"];
    assert!(join["artifacts"].as_str().is_some_and(|s| s.contains("out/report.md") && s.contains("sha256")), "{join}");
    assert_eq!(join["download"], "# done\n", "{join}");
    assert!(join["disposition"].as_str().is_some_and(|d| d.contains("report.md")), "{join}");
    // The agent's transcript: its tool call, the result, its answer.
    let transcript = r["transcript"].as_str().expect("transcript");
    assert!(
        transcript.contains("→ echo") && transcript.contains("draft") && transcript.contains("the report"),
        "{transcript}"
    );
    // 10,000 calls on one canvas; zoomed in, only what is in view is drawn.
    let b = &r["bigTimeline"];
    assert_eq!(b["bars"], "10000", "{b}");
    let zoomed: u64 = r["bigZoomed"]["drawn"].as_str().and_then(|d| d.parse().ok()).expect("drawn");
    assert!(zoomed < 10_000, "{}", r["bigZoomed"]);
    eprintln!("10,000-bar timeline drawn in {} ms ({} ms zoomed)", b["drawMs"], r["bigZoomed"]["drawMs"]);
    for shot in ["web-runs.png", "web-timeline.png", "web-subtask.png", "web-timeline-10k.png"] {
        assert!(std::fs::metadata(shots.join(shot)).is_ok_and(|m| m.len() > 1000), "{shot}");
    }
    tc.stop().await;
}
