//! The audit log (`--audit-log`): each mutating call, allowed or refused, is one JSON line
//! naming who, which tenant, what, on which run, and how it ended.

use std::time::Duration;

use serde_json::Value;
use swarm_cli::client::{self, Client};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::audit::AuditLog;
use swarm_coordinator::auth::Authenticator;
use swarm_core::spec::{ApprovalSpec, OnTimeout};
use swarm_core::{RunSpec, SubtaskKind, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::wait_for_events;
use tonic::Code;

use crate::security::{auth_file_of, worker_hello};

/// (name, tenant, roles, token)
const PRINCIPALS: &[(&str, &str, &str, &str)] = &[
    ("acme-bot", "acme", "[submit, read, cancel]", "tok-acme"),
    ("acme-viewer", "acme", "[read]", "tok-viewer"),
    ("acme-approver", "acme", "[read, approve]", "tok-approver"),
    ("pool-a", "", "[worker]", "tok-pool-a"),
];

async fn as_(cluster: &Embedded, token: &str) -> Client {
    client::connect_with(&cluster.url(), Some(token), &Default::default()).await.expect("client")
}

fn gated() -> RunSpec {
    let gate = ApprovalSpec { prompt: "ship it?".into(), timeout: None, on_timeout: OnTimeout::Reject };
    RunSpec::new(
        "audited",
        vec![
            SubtaskSpec {
                kind: SubtaskKind::Approval(gate),
                ..SubtaskSpec::tool("gate", "echo", serde_json::json!({}))
            },
            SubtaskSpec::tool("wait", "sleep", serde_json::json!({"ms": 60_000})),
        ],
    )
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn every_mutating_call_is_one_line_of_the_audit_log() {
    let dir = std::env::temp_dir().join(format!("swarm-audit-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("audit.jsonl");
    let mut opts = EmbeddedOptions { workers: 1, slots: 4, ..Default::default() };
    opts.coordinator.auth = Authenticator::parse(&auth_file_of(PRINCIPALS)).expect("auth file");
    opts.coordinator.audit = std::sync::Arc::new(AuditLog::open(&path.display().to_string()).expect("audit log"));
    let cluster = Embedded::start(opts).await.expect("cluster");

    let mut bot = as_(&cluster, "tok-acme").await;
    let mut viewer = as_(&cluster, "tok-viewer").await;
    let mut approver = as_(&cluster, "tok-approver").await;
    let submit = |spec: &RunSpec| pb::SubmitRunRequest { spec: Some(spec.into()), ..Default::default() };
    let run_id = bot.submit_run(submit(&gated())).await.expect("submit").into_inner().run_id;
    let refused = viewer.submit_run(submit(&gated())).await.expect_err("a reader cannot submit");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The gate is waiting before anyone decides it.
    wait_for_events(&mut bot, &run_id, Duration::from_secs(20), |events| {
        events.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::ApprovalRequested(_))))
    })
    .await
    .expect("the approval waits");
    let signal = pb::SignalRunRequest {
        run_id: run_id.clone(),
        subtask_id: "gate".into(),
        decision: pb::Decision::Approve as i32,
        ..Default::default()
    };
    approver.signal_run(signal).await.expect("approved");
    let cancel = |reason: &str| pb::CancelRunRequest { run_id: run_id.clone(), reason: reason.into() };
    assert_eq!(
        viewer.cancel_run(cancel("no")).await.expect_err("a reader cannot cancel").code(),
        Code::PermissionDenied
    );
    bot.cancel_run(cancel("enough")).await.expect("cancelled");
    assert_eq!(worker_hello(&cluster, Some("tok-pool-a"), "pool-a-1").await, Ok(()));
    assert_eq!(worker_hello(&cluster, Some("tok-acme"), "pool-a-2").await, Err(Code::PermissionDenied));

    let got = lines(&path);
    let find = |action: &str, principal: &str| {
        got.iter()
            .find(|l| l["action"] == action && l["principal"] == principal)
            .unwrap_or_else(|| panic!("no {action} by {principal} in {got:#?}"))
    };
    let submitted = find("submit", "acme-bot");
    assert_eq!((submitted["result"].as_str(), submitted["tenant"].as_str()), (Some("ok"), Some("acme")));
    assert_eq!(submitted["run_id"], run_id.as_str());
    assert_eq!(find("submit", "acme-viewer")["result"], "permission_denied");
    let signalled = find("signal", "acme-approver");
    assert_eq!((signalled["result"].as_str(), signalled["run_id"].as_str()), (Some("ok"), Some(run_id.as_str())));
    assert_eq!((signalled["subtask_id"].as_str(), signalled["decision"].as_str()), (Some("gate"), Some("APPROVE")));
    assert_eq!(find("cancel", "acme-viewer")["result"], "permission_denied");
    assert_eq!(find("cancel", "acme-bot")["result"], "ok");
    let joined = find("worker_join", "pool-a");
    assert_eq!((joined["result"].as_str(), joined["worker_id"].as_str()), (Some("ok"), Some("pool-a-1")));
    assert_eq!(find("worker_join", "acme-bot")["result"], "permission_denied");
    for line in &got {
        let time = line["time"].as_str().unwrap_or_default();
        assert!(time.len() == 24 && time.ends_with('Z'), "RFC 3339 time: {line}");
    }
    // Reads are not mutating calls: none is recorded.
    assert!(
        got.iter().all(|l| ["submit", "cancel", "signal", "worker_join"].contains(&l["action"].as_str().unwrap_or("")))
    );
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
