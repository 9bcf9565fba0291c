//! A web view that acts, by role: the operator cancels a running run and would decide its
//! approval; the reader sees neither button and is refused when it sends one anyway; runs are
//! filtered by tenant, spec version and state. In headless Chromium (tests/web/acts.mjs); the
//! screenshots are kept in docs/img/.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use swarm_cli::client;
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::auth::Authenticator;
use swarm_core::spec::{ApprovalSpec, OnTimeout};
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{submit, wait_done, wait_for_events};

const PRINCIPALS: &[(&str, &str, &str, &str)] = &[
    ("acme-viewer", "acme", "[read]", "tok-reader"),
    ("acme-operator", "acme", "[read, submit, cancel, approve]", "tok-operator"),
    ("beta-bot", "beta", "[read, submit]", "tok-beta"),
    ("ops", "", "[admin]", "tok-ops"),
];

fn versioned(name: &str, version: &str, subtasks: Vec<SubtaskSpec>) -> RunSpec {
    RunSpec { version: Some(version.into()), ..RunSpec::new(name, subtasks) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancels_in_the_web_view_a_reader_sees_no_buttons_and_runs_filter_by_tenant_version_state() {
    let mut opts = EmbeddedOptions {
        workers: 1,
        slots: 4,
        http_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Default::default()
    };
    opts.coordinator.auth = Authenticator::parse(&crate::security::auth_file_of(PRINCIPALS)).expect("auth file");
    let cluster = Embedded::start(opts).await.expect("cluster");
    let http = cluster.http_addr.expect("the web view is served");
    let connect = |token: &'static str| {
        let url = cluster.url();
        async move { client::connect_with(&url, Some(token), &Default::default()).await.expect("client") }
    };
    let mut operator = connect("tok-operator").await;
    let mut beta = connect("tok-beta").await;

    // acme: a run that goes on (a long call, an approval waiting) and a finished one of v2;
    // beta: a finished one.
    let gate = ApprovalSpec { prompt: "Go on?".into(), timeout: None, on_timeout: OnTimeout::Reject };
    let long = versioned(
        "acme-long",
        "v1",
        vec![
            SubtaskSpec::tool("slow", "sleep", json!({"ms": 60_000})),
            SubtaskSpec { kind: SubtaskKind::Approval(gate), ..SubtaskSpec::tool("gate", "echo", json!({})) },
            SubtaskSpec::tool("after", "echo", json!({"text": "done"})).after(["slow", "gate"]),
        ],
    );
    let run_id = submit(&mut operator, &long).await.expect("submit");
    let quick = |name: &str, v: &str| versioned(name, v, vec![SubtaskSpec::tool("a", "echo", json!({"text": "x"}))]);
    let acme_v2 = submit(&mut operator, &quick("acme-quick", "v2")).await.expect("submit");
    let beta_v1 = submit(&mut beta, &quick("beta-quick", "v1")).await.expect("submit");
    for (c, id) in [(&mut operator, &acme_v2), (&mut beta, &beta_v1)] {
        assert_eq!(
            wait_done(c, id, Duration::from_secs(30)).await.expect("done").state,
            pb::RunState::Succeeded as i32
        );
    }
    wait_for_events(&mut operator, &run_id, Duration::from_secs(30), |evs| {
        evs.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::ApprovalRequested(_))))
    })
    .await
    .expect("the approval waits");

    // What another site's page could send as the operator's browser is refused, and cancels
    // nothing (the operator's own token, but no x-swarm-request header, or another origin).
    let path = format!("/api/runs/{run_id}/cancel");
    let auth = ("authorization", "Bearer tok-operator");
    let json_type = ("content-type", "application/json");
    assert_eq!(crate::web::post(http, &path, &[auth, json_type], "{}").await, 403, "a plain cross-site post");
    let evil = [auth, json_type, ("x-swarm-request", "1"), ("origin", "http://evil.example")];
    assert_eq!(crate::web::post(http, &path, &evil, "{}").await, 403, "another origin");
    let run = client::get(&mut operator, &run_id, false).await.expect("get");
    assert_eq!(run.state, pb::RunState::Running as i32, "still running");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("../target/web-acts");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let args = [format!("http://{http}"), run_id.clone(), "tok-reader".into(), "tok-operator".into(), "tok-ops".into()];
    let mut os: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    os.push(shots.as_os_str());
    let report = swarm_tests::harness::browser_script("acts.mjs", &os, Duration::from_secs(120)).await;

    let reader = &report["reader"];
    assert_eq!(reader["me"]["roles"], json!(["read"]), "{report}");
    assert_eq!(
        (&reader["cancel_buttons"], &reader["decision_buttons"], &reader["fork_forms"]),
        (&json!(0), &json!(0), &json!(0)),
        "a reader is offered nothing that changes the run: {report}"
    );
    assert_eq!(reader["cancel_status"], 403, "and is refused when it sends a cancel anyway: {report}");
    let op = &report["operator"];
    assert_eq!((&op["cancel_buttons"], &op["decision_buttons"], &op["fork_forms"]), (&json!(1), &json!(2), &json!(1)));
    assert_eq!((op["state"].as_str(), op["slow"].as_str()), (Some("CANCELLED"), Some("CANCELLED")), "{report}");
    let filters = &report["filters"];
    assert_eq!(filters["beta"], json!([beta_v1]), "{report}");
    assert_eq!(filters["acme_v2"], json!([acme_v2]), "{report}");
    assert_eq!(filters["acme_cancelled"], json!([run_id]), "{report}");

    // The run as the API tells it: cancelled, by the operator.
    let run = wait_done(&mut operator, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Cancelled as i32);
    for shot in ["web-reader.png", "web-operator.png", "web-filters.png"] {
        let from = shots.join(shot);
        assert!(std::fs::metadata(&from).is_ok_and(|m| m.len() > 1000), "{shot} was taken");
        std::fs::copy(&from, root.join("../docs/img").join(shot)).expect("kept in docs/img");
    }
    cluster.stop().await;
}
