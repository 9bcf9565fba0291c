//! Fork and replay: a new run from a recorded one reuses every result that does not depend on
//! the fork point (no call made again) and runs the rest with a patch; an agent forks at a
//! step; `swarm replay` re-runs the recorded agents without calling a model or a tool. On a
//! real etcd, and across a coordinator SIGKILL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_cli::client::{self, Client};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_proto::status::field_violations;
use swarm_tests::etcd::EtcdCluster;
use swarm_tests::harness::{TestCluster, submit, wait_done};
use swarm_tests::proc_cluster::{ProcCluster, lead};
use swarm_tests::process::swarm_bin;

use crate::failover::SERIAL;

const DEADLINE: Duration = Duration::from_secs(60);

fn record(id: &str, ms: u64) -> SubtaskSpec {
    SubtaskSpec::tool(id, "record", json!({ "ms": ms }))
}

async fn fork(
    c: &mut Client,
    run: &str,
    from: &str,
    patch: &str,
    step: Option<u32>,
) -> Result<pb::ForkRunResponse, tonic::Status> {
    let req = pb::ForkRunRequest {
        run_id: run.into(),
        from_subtask: from.into(),
        patch: patch.into(),
        from_step: step,
        idempotency_key: String::new(),
    };
    c.fork_run(req).await.map(tonic::Response::into_inner)
}

fn subtask<'a>(run: &'a pb::Run, id: &str) -> &'a pb::SubtaskStatus {
    run.subtasks.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no subtask {id} in {run:?}"))
}

/// The subtasks whose `record` call ran in `run_id`.
fn ran(tc: &TestCluster, run_id: &str) -> BTreeSet<String> {
    tc.log.of_run(run_id).into_iter().map(|e| e.subtask_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_reuses_every_result_upstream_and_aside_and_runs_only_what_follows_the_patch() {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let tc = TestCluster::start_on(etcd.store().await.expect("store"), 2, 8).await.expect("cluster");
    let mut c = tc.client().await.expect("client");
    // a → b → c, a → d.
    let mut spec = RunSpec::new(
        "forkable",
        vec![record("a", 20), record("b", 20).after(["a"]), record("c", 20).after(["b"]), record("d", 20).after(["a"])],
    );
    spec.version = Some("v1".into());
    let original = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &original, DEADLINE).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!((run.spec_version.as_str(), run.spec_hash.len()), ("v1", 16), "{run:?}");

    // From b, with b's args changed: a and d are copied, b and c run again.
    let resp =
        fork(&mut c, &original, "b", "subtasks: [{id: b, args: {ms: 7}}]\nversion: v2\n", None).await.expect("fork");
    assert_eq!((resp.reused, resp.rerun, resp.created), (2, 2, true), "{resp:?}");
    let forked = wait_done(&mut c, &resp.run_id, DEADLINE).await.expect("done");
    assert_eq!(forked.state, pb::RunState::Succeeded as i32, "{forked:?}");
    assert_eq!(ran(&tc, &resp.run_id), BTreeSet::from(["b".to_owned(), "c".to_owned()]), "only b and c were called");
    assert_eq!(ran(&tc, &original).len(), 4);
    let s = forked.summary.clone().expect("summary");
    assert_eq!((s.calls_reused, s.calls_made), (2, 2), "{s:?}");
    assert_eq!(subtask(&forked, "b").output_json, json!({"ms": 7}).to_string(), "the patch reached b");
    for reused in ["a", "d"] {
        let t = subtask(&forked, reused);
        assert_eq!((t.reused_from.as_str(), t.state), (original.as_str(), pb::SubtaskState::Succeeded as i32), "{t:?}");
        assert_eq!(t.output_json, subtask(&run, reused).output_json);
    }
    assert!(subtask(&forked, "b").reused_from.is_empty());
    assert_eq!((forked.forked_from_run.as_str(), forked.forked_from_subtask.as_str()), (original.as_str(), "b"));
    assert_eq!(forked.spec_version, "v2");
    assert_ne!(forked.spec_hash, run.spec_hash, "the patched spec hashes differently");
    // Replay has no agent to re-run in a run of tool calls, and says so without calling any.
    let report = swarm_cli::replay::replay_run(&mut c, &resp.run_id, &[]).await.expect("replay");
    assert!(report.agents.is_empty() && !report.diverged(), "{report:?}");
    assert_eq!(ran(&tc, &resp.run_id).len(), 2, "replay called nothing");
    // The version label filters the list.
    let listed = c
        .list_runs(pb::ListRunsRequest { page_size: 10, page_token: String::new(), spec_version: "v2".into() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec![resp.run_id.as_str()]);

    // A patch that touches a subtask aside from the fork point runs it again too.
    let resp = fork(&mut c, &original, "c", "subtasks: [{id: d, args: {ms: 3}}]", None).await.expect("fork");
    assert_eq!((resp.reused, resp.rerun), (2, 2), "{resp:?}");
    wait_done(&mut c, &resp.run_id, DEADLINE).await.expect("done");
    assert_eq!(ran(&tc, &resp.run_id), BTreeSet::from(["c".to_owned(), "d".to_owned()]));

    // Bad forks: each refused by field, and no run is left behind.
    let runs = || async { tc.store.range(b"/swarm/v1/runs/", None, 0).await.expect("range").kvs.len() };
    let before = runs().await;
    let err = fork(&mut c, &original, "b", "subtasks: [{id: a, depends_on: [c]}]", None).await.expect_err("cycle");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let violations = field_violations(&err);
    assert!(violations.iter().any(|(f, d)| f.ends_with("depends_on") && d.starts_with("cycle: ")), "{violations:?}");
    let err =
        fork(&mut c, &original, "b", "subtasks: [{id: b, retry: {max_attempts: -3}}]", None).await.expect_err("bad");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = fork(&mut c, &original, "bb", "", None).await.expect_err("unknown subtask");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("did you mean `b`?"), "{}", err.message());
    let err = fork(&mut c, &original, "b", "", Some(1)).await.expect_err("a step of a tool call");
    assert_eq!((err.code(), field_violations(&err)[0].0.as_str()), (tonic::Code::InvalidArgument, "from_step"));
    let err = fork(&mut c, &original, "b", "subtasks: [{id: zz, args: {}}]", None).await.expect_err("unknown id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(field_violations(&err).iter().any(|(f, _)| f.contains("subtasks")), "{err:?}");
    let err = fork(&mut c, "r-00000000-nosuchrun", "b", "", None).await.expect_err("no such run");
    assert!(matches!(err.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument), "{err:?}");
    assert_eq!(before, runs().await, "a refused fork writes nothing");

    // Forking again with the same key returns the same run.
    let req = pb::ForkRunRequest {
        run_id: original.clone(),
        from_subtask: "c".into(),
        idempotency_key: "again".into(),
        ..Default::default()
    };
    let first = c.fork_run(req.clone()).await.expect("fork").into_inner();
    let second = c.fork_run(req).await.expect("fork").into_inner();
    assert_eq!((first.run_id.as_str(), first.created, second.created), (second.run_id.as_str(), true, false));

    // A run whose records were deleted cannot be forked (its spec alone is not enough), nor one
    // that is gone.
    let delete =
        |prefix: String| swarm_store::Txn::new().then(swarm_store::Op::DeletePrefix { prefix: prefix.into_bytes() });
    tc.store.commit(delete(format!("/swarm/v1/subtasks/{original}/"))).await.expect("delete records");
    let err = fork(&mut c, &original, "b", "", None).await.expect_err("no records");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no subtask records left"), "{}", err.message());
    tc.store.commit(delete(format!("/swarm/v1/specs/{original}"))).await.expect("delete spec");
    let err = fork(&mut c, &original, "b", "", None).await.expect_err("gone");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // ...while its forks keep what they reused.
    let kept = client::get(&mut c, &first.run_id, true).await.expect("fork kept");
    assert_eq!(subtask(&kept, "a").output_json, subtask(&run, "a").output_json);
    tc.stop().await;
}

/// The worker's script: `writer` makes eight `append` calls then answers (see
/// `swarm_tests::proc_cluster::write_script`); `lead` starts six helpers.
fn agent_spec() -> RunSpec {
    let writer = SubtaskSpec {
        retry: None,
        outputs: Default::default(),
        id: "writer".into(),
        kind: swarm_core::SubtaskKind::Agent(swarm_core::agent::AgentSpec {
            instructions: "Write.".into(),
            input: "write eight lines".into(),
            model: "scripted".into(),
            tools: vec!["append".into()],
            max_steps: None,
        }),
        depends_on: vec![],
        timeout: None,
        placement: None,
    };
    RunSpec::new(
        "agents",
        vec![lead(), writer, SubtaskSpec::tool("after", "echo", json!({"text": "after"})).after(["writer"])],
    )
}

fn swarm(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(swarm_bin().expect("swarm binary")).args(args).output().expect("swarm");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_forks_at_a_step_and_replays_as_recorded_after_a_leader_sigkill() {
    let _serial = SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 2, 1, Duration::from_secs(2)).await.expect("cluster");
    let (a_url, _) = pc.leader().await.expect("leader").expect("elected");
    let mut c = pc.client(&a_url).await.expect("client");
    let original = submit(&mut c, &agent_spec()).await.expect("submit");
    let run = wait_done(&mut c, &original, DEADLINE).await.expect("done");
    pc.assert_succeeded(&run).await;
    assert_eq!((pc.appended("agent.log").len(), pc.appended("helpers.log").len()), (8, 24));

    // The leader dies; its standby serves the fork from what etcd holds.
    let a = pc.coordinators.iter().position(|(_, url)| *url == a_url).expect("ours");
    pc.coordinators[a].0.kill();
    let (b_url, _) = pc.wait_leader(Some(&a_url), Duration::from_secs(15)).await.expect("standby takes over");
    let addr = b_url.as_str();

    // The writer again from its step 5: its first five turns are reused, three calls are made;
    // the orchestrator and its six helpers are reused whole.
    let started = Instant::now();
    let (code, stdout, stderr) =
        swarm(&["fork", &original, "--from", "writer", "--step", "5", "--wait", "--json", "--addr", addr]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", pc.logs());
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(j["state"], "SUCCEEDED", "{j}");
    assert_eq!(j["forked_from"], original.as_str(), "{j}");
    assert_eq!((j["forked_from_subtask"].as_str(), j["forked_from_step"].as_u64()), (Some("writer"), Some(5)), "{j}");
    let appended = pc.appended("agent.log");
    assert_eq!(&appended[8..], ["call-5", "call-6", "call-7"], "only the steps after the fork point ran: {appended:?}");
    assert_eq!(pc.appended("helpers.log").len(), 24, "no helper ran again");
    // Reused: 24 helper calls and 5 writer steps; made: 3 writer steps and `after`.
    assert_eq!((j["calls_reused"].as_u64(), j["calls_made"].as_u64()), (Some(24 + 5), Some(3 + 1)), "{j}");
    eprintln!("fork --wait after a failover took {:?}", started.elapsed());

    // Replay both runs through this build's loop: everything decides as recorded.
    for run_id in [original.as_str(), j["run_id"].as_str().expect("run_id")] {
        let (code, stdout, stderr) = swarm(&["replay", run_id, "--json", "--addr", addr]);
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!((r["same"].as_u64(), r["diverged"].as_u64()), (Some(1 + 1 + 6), Some(0)), "{r}");
    }
    assert_eq!(pc.appended("agent.log").len(), 11, "replay called no tool");
    // A step past the record, and a subagent, are refused by name.
    let (code, _, stderr) = swarm(&["fork", &original, "--from", "writer", "--step", "99", "--addr", addr]);
    assert!(code != Some(0) && stderr.contains("from_step"), "{stderr}");
    let child = run.subtasks.iter().find(|s| s.id.starts_with("lead:")).map(|s| s.id.clone()).expect("a helper");
    let (code, _, stderr) = swarm(&["fork", &original, "--from", &child, "--addr", addr]);
    assert!(code != Some(0) && stderr.contains("fork from its orchestrator `lead`"), "{stderr}");
}
