//! Placement by labels and resources (issue 31) on real worker processes and a real etcd: a
//! GPU pool whose one `gpu` runs a burst of calls one at a time, a CPU pool that labels reach,
//! and placements that are wrong or that no worker matches.

use std::time::Duration;

use swarm_core::placement::Placement;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{submit, wait_done, wait_for_events};
use swarm_tests::proc_cluster::ProcCluster;

fn placed(mut s: SubtaskSpec, p: serde_json::Value) -> SubtaskSpec {
    s.placement = Some(serde_json::from_value::<Placement>(p).expect("placement"));
    s
}

fn ms(t: Option<&prost_types::Timestamp>) -> i128 {
    let t = t.expect("time");
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_pool_runs_its_burst_one_at_a_time_and_labels_decide_where_the_rest_go() {
    let mut pc = ProcCluster::start(1, 1, 0, Duration::from_secs(2)).await.expect("cluster");
    let label = |kv: &str| ["--label".to_owned(), kv.to_owned()];
    pc.add_worker_args("cpu0", &label("pool=cpu")).expect("cpu worker");
    let gpu = [label("pool=gpu"), label("zone=a"), ["--resource".into(), "gpu=1".into()]].concat();
    pc.add_worker_args("gpu0", &gpu).expect("gpu worker");
    pc.wait_connected(2, Duration::from_secs(15)).await.expect("workers");
    let (leader, _) = pc.leader().await.expect("leader").expect("elected");
    let mut c = pc.client(&leader).await.expect("client");

    // 50 calls that each hold the pool's one gpu, 20 for the CPU pool, 5 that avoid it.
    let mut subtasks: Vec<SubtaskSpec> = (0..50)
        .map(|i| {
            let s = SubtaskSpec::tool(format!("g{i}"), "sleep", serde_json::json!({"ms": 20}));
            placed(s, serde_json::json!({"resources": {"gpu": 1}}))
        })
        .collect();
    subtasks.extend((0..20).map(|i| {
        let s = SubtaskSpec::tool(format!("c{i}"), "sleep", serde_json::json!({"ms": 5}));
        placed(s, serde_json::json!({"labels": {"pool": "cpu"}}))
    }));
    subtasks.extend((0..5).map(|i| {
        let s = SubtaskSpec::tool(format!("a{i}"), "echo", serde_json::json!({"text": "x"}));
        placed(s, serde_json::json!({"avoid": {"pool": "cpu"}, "prefer": [{"labels": {"zone": "a"}, "weight": 3}]}))
    }));
    let run_id = submit(&mut c, &RunSpec::new("placed", subtasks)).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    pc.assert_succeeded(&run).await;
    let on = |prefix: &str| -> Vec<&pb::SubtaskStatus> {
        run.subtasks.iter().filter(|s| s.id.starts_with(prefix)).collect()
    };
    assert!(on("g").iter().all(|s| s.worker_id == "gpu0"), "every gpu call on the gpu worker");
    assert!(on("c").iter().all(|s| s.worker_id == "cpu0"), "every cpu-pool call on the cpu worker");
    assert!(on("a").iter().all(|s| s.worker_id == "gpu0"), "those avoiding the cpu pool elsewhere");
    // Never two at once on the one gpu: each call started after the one before it ended (both
    // times from the gpu worker's clock).
    let mut spans: Vec<(i128, i128)> =
        on("g").iter().map(|s| (ms(s.started_at.as_ref()), ms(s.finished_at.as_ref()))).collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two gpu calls overlapped: {pair:?}");
    }
    assert_eq!(spans.len(), 50);
    // The run waited for its one gpu, and its wall breakdown says so (not "waiting for a slot":
    // the gpu worker had 31 free slots all along).
    let j = swarm_cli::client::RunJson::from(&run);
    let parts = j.wall_breakdown_ms.clone().expect("breakdown");
    assert!(parts["waiting_for_placement"] >= 0.5 * j.wall_ms, "{parts:?} of {} ms", j.wall_ms);
    assert!(parts["waiting_for_slot"] <= 0.1 * j.wall_ms, "{parts:?} of {} ms", j.wall_ms);
    let headline = j.wall_headline.clone().unwrap_or_default();
    assert!(headline.contains("waiting for a worker its placement allows, or for its resources"), "{headline}");

    // An orchestrator in the CPU pool whose subagents run in the GPU pool.
    let mut lead = placed(swarm_tests::proc_cluster::lead(), serde_json::json!({"labels": {"pool": "cpu"}}));
    if let swarm_core::SubtaskKind::Orchestrator(o) = &mut lead.kind {
        o.subagent_placement = Some(serde_json::from_value(serde_json::json!({"labels": {"pool": "gpu"}})).expect("p"));
    }
    let run_id = submit(&mut c, &RunSpec::new("placed-agents", vec![lead.clone()])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    pc.assert_succeeded(&run).await;
    let helpers: Vec<&str> = run.subtasks.iter().filter(|s| s.parent == "lead").map(|s| s.worker_id.as_str()).collect();
    assert_eq!(helpers, ["gpu0"; 6], "every subagent in the gpu pool");
    let lead_on = run.subtasks.iter().find(|s| s.id == "lead").map(|s| s.worker_id.as_str());
    assert_eq!(lead_on, Some("cpu0"), "the orchestrator in its own pool");
    // ... and one whose subagents could run nowhere is refused by that field.
    if let swarm_core::SubtaskKind::Orchestrator(o) = &mut lead.kind {
        o.subagent_placement = Some(serde_json::from_value(serde_json::json!({"labels": {"pool": "tpu"}})).expect("p"));
    }
    let spec = RunSpec::new("nowhere-agents", vec![lead]);
    let err = c.submit_run(pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() }).await;
    let err = err.expect_err("refused");
    let fields = swarm_proto::status::field_violations(&err);
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(fields[0].0, "subtasks[0].orchestrator.subagent_placement", "{fields:?}");

    // Placements that are wrong, each refused with its field, nothing stored.
    let wire = |p: pb::Placement| {
        let mut spec =
            pb::RunSpec::from(&RunSpec::new("bad", vec![SubtaskSpec::tool("x", "echo", serde_json::json!({}))]));
        spec.subtasks[0].placement = Some(p);
        pb::SubmitRunRequest { spec: Some(spec), ..Default::default() }
    };
    let cases = [
        (
            pb::Placement { resources: [("gpu".into(), "-1".into())].into(), ..Default::default() },
            "placement.resources.gpu",
        ),
        (
            pb::Placement { resources: [("gpu".into(), "NaN".into())].into(), ..Default::default() },
            "placement.resources.gpu",
        ),
        (
            pb::Placement { resources: [("memory".into(), "4Gb".into())].into(), ..Default::default() },
            "placement.resources.memory",
        ),
        (
            pb::Placement { resources: [("GPU!".into(), "1".into())].into(), ..Default::default() },
            "placement.resources.GPU!",
        ),
        (
            pb::Placement { labels: [("pool".into(), "a b".into())].into(), ..Default::default() },
            "placement.labels.pool",
        ),
    ];
    for (p, field) in cases {
        let err = c.submit_run(wire(p)).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        let fields = swarm_proto::status::field_violations(&err);
        assert_eq!(fields[0].0, format!("subtasks[0].{field}"), "{fields:?}");
    }
    // The same checks on an orchestrator's subagent placement, by its own field.
    let mut spec = pb::RunSpec::from(&RunSpec::new("bad-agents", vec![swarm_tests::proc_cluster::lead()]));
    if let Some(pb::subtask_spec::Kind::Orchestrator(o)) = &mut spec.subtasks[0].kind {
        o.subagent_placement =
            Some(pb::Placement { resources: [("gpu".into(), "NaN".into())].into(), ..Default::default() });
    }
    let err = c.submit_run(pb::SubmitRunRequest { spec: Some(spec), ..Default::default() }).await.expect_err("NaN");
    let fields = swarm_proto::status::field_violations(&err);
    assert_eq!(fields[0].0, "subtasks[0].orchestrator.subagent_placement.resources.gpu", "{fields:?}");
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert_eq!(runs.len(), 2, "nothing of the refused specs stored");

    // A placement no connected worker could ever satisfy: refused at submission, naming it.
    let two = placed(
        SubtaskSpec::tool("two", "sleep", serde_json::json!({"ms": 1})),
        serde_json::json!({"resources": {"gpu": 2}}),
    );
    let tpu = placed(
        SubtaskSpec::tool("tpu", "sleep", serde_json::json!({"ms": 1})),
        serde_json::json!({"labels": {"pool": "tpu"}}),
    );
    let fine = placed(
        SubtaskSpec::tool("fine", "sleep", serde_json::json!({"ms": 1})),
        serde_json::json!({"labels": {"pool": "gpu"}}),
    );
    let spec = RunSpec::new("unmatched", vec![fine, two, tpu]);
    let request = pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() };
    let err = c.submit_run(request).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let fields = swarm_proto::status::field_violations(&err);
    let named: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(named, ["subtasks[1].placement", "subtasks[2].placement"], "{fields:?}");
    assert!(
        fields[0].1.contains("resources gpu=2") && fields[0].1.contains("gpu0 {pool=gpu,zone=a} gpu=1"),
        "{fields:?}"
    );
    let runs = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert_eq!(runs.len(), 2, "nothing of the refused run stored");

    // The last worker that matches leaves: its call goes back to the queue and the run says,
    // at once, that no connected worker matches.
    let long = placed(
        SubtaskSpec::tool("long", "sleep", serde_json::json!({"ms": 60_000})),
        serde_json::json!({"labels": {"pool": "gpu"}}),
    );
    let run_id = submit(&mut c, &RunSpec::new("orphaned", vec![long])).await.expect("submit");
    let started =
        |evs: &[pb::RunEvent]| evs.iter().any(|e| matches!(&e.event, Some(pb::run_event::Event::SubtaskStarted(_))));
    wait_for_events(&mut c, &run_id, Duration::from_secs(15), started).await.expect("started");
    let gpu0 = pc.workers.iter_mut().find(|w| w.name.contains("gpu0")).expect("gpu0");
    gpu0.kill();
    let warned = |evs: &[pb::RunEvent]| evs.iter().any(|e| matches!(&e.event, Some(pb::run_event::Event::Warning(_))));
    let events = wait_for_events(&mut c, &run_id, Duration::from_secs(30), warned).await.expect("a warning");
    let warning = events
        .iter()
        .find_map(|e| match &e.event {
            Some(pb::run_event::Event::Warning(w)) => Some(w.message.clone()),
            _ => None,
        })
        .expect("warning");
    assert!(warning.contains("matches its placement (labels pool=gpu)"), "{warning}");
    c.cancel_run(pb::CancelRunRequest { run_id, reason: "done".into() }).await.expect("cancel");
}
