//! Tenants' quotas and shares (the auth file's `tenants:`): weighted fair sharing of the slots,
//! a concurrency cap that queues, an active-run quota that refuses with a retry delay.

use std::time::Duration;

use swarm_cli::client::{self, Client};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_coordinator::auth::{Authenticator, token_sha256};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb::{self, run_event::Event};
use swarm_tests::harness::wait_done;

fn auth_file() -> String {
    let mut out = String::from("principals:\n");
    for t in ["a", "b", "c", "d"] {
        out += &format!(
            "  - {{name: {t}-bot, tenant: {t}, roles: [submit, read], token_sha256: \"{}\"}}\n",
            token_sha256(&format!("tok-{t}"))
        );
    }
    out += "tenants:\n  a: {weight: 1}\n  b: {weight: 3}\n  c: {max_concurrent_calls: 1, max_active_runs: 1, max_run_subtasks: 6, max_run_subagents: 10, max_run_tool_calls: 100}\n  d: {tool_calls_per_minute: 600}\n";
    out
}

fn sleeps(name: &str, n: usize, ms: u64) -> RunSpec {
    let subtasks = (0..n).map(|i| SubtaskSpec::tool(format!("s{i}"), "sleep", serde_json::json!({"ms": ms}))).collect();
    RunSpec::new(name, subtasks)
}

async fn as_tenant(cluster: &Embedded, t: &str) -> Client {
    client::connect_with(&cluster.url(), Some(&format!("tok-{t}")), &Default::default()).await.expect("client")
}

async fn events(c: &mut Client, run_id: &str) -> Vec<pb::RunEvent> {
    let req = pb::WatchRunRequest { run_id: run_id.into(), after_seq: 0, ..Default::default() };
    let mut stream = c.watch_run(req).await.expect("watch").into_inner();
    let mut out = Vec::new();
    while let Some(Ok(e)) = futures_util::StreamExt::next(&mut stream).await {
        out.push(e);
    }
    out
}

fn secs(e: &pb::RunEvent) -> f64 {
    e.time.as_ref().map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

fn starts(events: &[pb::RunEvent]) -> Vec<f64> {
    events.iter().filter(|e| matches!(e.event, Some(Event::SubtaskStarted(_)))).map(secs).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_share_the_slots_by_weight_and_quotas_queue_or_refuse() {
    let _serial = crate::failover::SERIAL.lock().await;
    let mut opts = EmbeddedOptions { workers: 1, slots: 8, ..Default::default() };
    opts.coordinator.auth = Authenticator::parse(&auth_file()).expect("auth file");
    let cluster = Embedded::start(opts).await.expect("cluster");
    let (mut a, mut b, mut c) =
        (as_tenant(&cluster, "a").await, as_tenant(&cluster, "b").await, as_tenant(&cluster, "c").await);

    // Both saturate the 8 slots: a (weight 1) and b (weight 3) should get them 1 : 3.
    let submit = |spec: RunSpec| pb::SubmitRunRequest {
        spec: Some((&spec).into()),
        idempotency_key: String::new(),
        ..Default::default()
    };
    let run_a = a.submit_run(submit(sleeps("a-work", 240, 50))).await.expect("a").into_inner().run_id;
    let run_b = b.submit_run(submit(sleeps("b-work", 240, 50))).await.expect("b").into_inner().run_id;
    for (cl, id) in [(&mut a, &run_a), (&mut b, &run_b)] {
        assert_eq!(
            wait_done(cl, id, Duration::from_secs(60)).await.expect("done").state,
            pb::RunState::Succeeded as i32
        );
    }
    let (ea, eb) = (events(&mut a, &run_a).await, events(&mut b, &run_b).await);
    let (sa, sb) = (starts(&ea), starts(&eb));
    // The window in which both had work waiting: from both runs' first start (plus the first
    // round of 50 ms calls, which went to whoever came first) until b's last start.
    let from = sa[0].max(sb[0]) + 0.1;
    let until = sb.iter().copied().fold(0.0, f64::max);
    let count = |s: &[f64]| s.iter().filter(|&&t| t >= from && t <= until).count() as f64;
    let (na, nb) = (count(&sa), count(&sb));
    let ratio = na / nb;
    eprintln!("fair share: a : b = {na} : {nb} = {ratio:.3} (1 : 3 is 0.333)");
    assert!(nb > 100.0, "a long enough window: {na} and {nb} starts");
    assert!((ratio - 1.0 / 3.0).abs() <= 0.1 / 3.0, "a : b = {na} : {nb} = {ratio:.3}, not 1 : 3 within 10 %");

    // c's runs may hold 6 subtasks and ask for 10 subagents and 100 agent calls: beyond, the
    // field is named with the quota, and nothing is stored (no run appears).
    let too_big = c.submit_run(submit(sleeps("c-big", 7, 1))).await.expect_err("over max_run_subtasks");
    assert_eq!(too_big.code(), tonic::Code::InvalidArgument, "{too_big:?}");
    let v = swarm_proto::status::field_violations(&too_big);
    assert!(v.iter().any(|(f, d)| f == "subtasks" && d.contains("max_run_subtasks")), "{v:?}");
    let mut agents = swarm_cli::specs::orchestrator("scripted", 10, 500);
    let too_many = c.submit_run(submit(agents.clone())).await.expect_err("over max_run_tool_calls");
    let v = swarm_proto::status::field_violations(&too_many);
    assert!(v.iter().any(|(f, d)| f == "limits.max_tool_calls" && d.contains("500 is over")), "{v:?}");
    agents.limits.max_tool_calls = 100;
    agents.limits.max_subagents = 11;
    let v = swarm_proto::status::field_violations(&c.submit_run(submit(agents)).await.expect_err("subagents"));
    assert!(v.iter().any(|(f, _)| f == "limits.max_subagents"), "{v:?}");
    let listed = c.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner();
    assert!(listed.runs.is_empty(), "nothing was stored: {:?}", listed.runs);

    // c may run one call at a time (its calls queue) and have one active run (another is refused).
    let run_c = c.submit_run(submit(sleeps("c-work", 6, 50))).await.expect("c").into_inner().run_id;
    let refused = c.submit_run(submit(sleeps("c-more", 1, 1))).await.expect_err("over max_active_runs");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(swarm_proto::status::retry_after(&refused).is_some(), "with a retry delay");
    wait_done(&mut c, &run_c, Duration::from_secs(30)).await.expect("c done");
    let ec = events(&mut c, &run_c).await;
    let mut open = 0;
    let mut most = 0;
    for e in &ec {
        match e.event {
            Some(Event::SubtaskStarted(_)) => open += 1,
            Some(Event::SubtaskSucceeded(_)) => open -= 1,
            _ => {}
        }
        most = most.max(open);
    }
    assert_eq!(most, 1, "c never ran two calls at once");

    // d may start 600 calls a minute (10 a second, bursts of 10): 30 instant calls take ~2 s.
    let mut d = as_tenant(&cluster, "d").await;
    let run_d = d.submit_run(submit(sleeps("d-work", 30, 0))).await.expect("d").into_inner().run_id;
    wait_done(&mut d, &run_d, Duration::from_secs(30)).await.expect("d done");
    let sd = starts(&events(&mut d, &run_d).await);
    let spread = sd.iter().copied().fold(0.0, f64::max) - sd.iter().copied().fold(f64::MAX, f64::min);
    assert!((1.8..4.0).contains(&spread), "30 calls at 10/s after a burst of 10 started over {spread:.2} s");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_run_is_served_first() {
    let cluster =
        Embedded::start(EmbeddedOptions { workers: 1, slots: 4, ..Default::default() }).await.expect("cluster");
    let mut c = client::connect(&cluster.url()).await.expect("client");
    let submit = |spec: RunSpec| pb::SubmitRunRequest {
        spec: Some((&spec).into()),
        idempotency_key: String::new(),
        ..Default::default()
    };
    let low = c.submit_run(submit(sleeps("low", 60, 40))).await.expect("low").into_inner().run_id;
    let mut urgent = sleeps("urgent", 40, 40);
    urgent.priority = 9;
    let high = c.submit_run(submit(urgent)).await.expect("high").into_inner().run_id;
    for id in [&low, &high] {
        wait_done(&mut c, id, Duration::from_secs(60)).await.expect("done");
    }
    let (sl, sh) = (starts(&events(&mut c, &low).await), starts(&events(&mut c, &high).await));
    let (first_h, last_h) = (sh.iter().copied().fold(f64::MAX, f64::min), sh.iter().copied().fold(0.0, f64::max));
    let low_meanwhile = sl.iter().filter(|&&t| t > first_h && t < last_h).count();
    assert_eq!(low_meanwhile, 0, "no low-priority call started while urgent ones waited");
    assert!(sl.iter().any(|&t| t > last_h), "the low run went on afterwards");
    let bad = c.submit_run(submit(RunSpec { priority: 10, ..sleeps("bad", 1, 1) })).await.expect_err("priority 10");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    cluster.stop().await;
}

/// Each subtask's (start, end) in seconds, from its run's events.
fn intervals(events: &[pb::RunEvent]) -> Vec<(f64, f64)> {
    let mut started = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        match &e.event {
            Some(Event::SubtaskStarted(s)) => {
                started.insert(s.subtask_id.clone(), secs(e));
            }
            Some(Event::SubtaskSucceeded(s)) => {
                if let Some(t) = started.remove(&s.subtask_id) {
                    out.push((t, secs(e)));
                }
            }
            _ => {}
        }
    }
    out
}

/// Slot-seconds of `intervals` inside [from, until].
fn slot_seconds(intervals: &[(f64, f64)], from: f64, until: f64) -> f64 {
    intervals.iter().map(|&(s, e)| (e.min(until) - s.max(from)).max(0.0)).sum()
}

/// Shares are slot-seconds, not started calls: a tenant whose calls are 10× longer gets the
/// slot time its weight says, not 10× that (nor a tenth of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_calls_ten_times_longer_gets_its_weight_in_slot_seconds() {
    let _serial = crate::failover::SERIAL.lock().await;
    let mut opts = EmbeddedOptions { workers: 1, slots: 8, ..Default::default() };
    opts.coordinator.auth = Authenticator::parse(&auth_file()).expect("auth file");
    let cluster = Embedded::start(opts).await.expect("cluster");
    let (mut a, mut b) = (as_tenant(&cluster, "a").await, as_tenant(&cluster, "b").await);
    let submit = |spec: RunSpec| pb::SubmitRunRequest { spec: Some((&spec).into()), ..Default::default() };
    // a (weight 1): 400 ms calls; b (weight 3): 40 ms calls. Both saturate the 8 slots.
    let run_a = a.submit_run(submit(sleeps("a-long", 40, 400))).await.expect("a").into_inner().run_id;
    let run_b = b.submit_run(submit(sleeps("b-short", 600, 40))).await.expect("b").into_inner().run_id;
    for (cl, id) in [(&mut a, &run_a), (&mut b, &run_b)] {
        let run = wait_done(cl, id, Duration::from_secs(60)).await.expect("done");
        assert_eq!(run.state, pb::RunState::Succeeded as i32);
    }
    let (ia, ib) = (intervals(&events(&mut a, &run_a).await), intervals(&events(&mut b, &run_b).await));
    // While both had work waiting: after the first round, until either's last start.
    let first = |i: &[(f64, f64)]| i.iter().map(|x| x.0).fold(f64::MAX, f64::min);
    let last = |i: &[(f64, f64)]| i.iter().map(|x| x.0).fold(0.0, f64::max);
    let from = first(&ia).max(first(&ib)) + 0.5;
    let until = last(&ia).min(last(&ib));
    assert!(until - from > 1.5, "a long enough window: {from:.2}..{until:.2}");
    let (sa, sb) = (slot_seconds(&ia, from, until), slot_seconds(&ib, from, until));
    let ratio = sa / sb;
    let (na, nb) = (
        ia.iter().filter(|x| x.0 >= from && x.0 <= until).count(),
        ib.iter().filter(|x| x.0 >= from && x.0 <= until).count(),
    );
    eprintln!("slot-seconds a : b = {sa:.2} : {sb:.2} = {ratio:.3} (1 : 3 is 0.333); starts {na} : {nb}");
    assert!(
        (ratio - 1.0 / 3.0).abs() <= 0.15 / 3.0,
        "slot-seconds a : b = {sa:.2} : {sb:.2} = {ratio:.3}, not 1 : 3 within 15 %"
    );
    cluster.stop().await;
}
