//! Network faults between real processes, injected by a loopback TCP proxy
//! (`swarm_tests::fault_proxy`): a worker whose connection to the coordinator drops keeps its
//! attempts, and no non-idempotent call runs twice.

use std::time::Duration;

use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::fault_proxy::FaultProxy;
use swarm_tests::harness::{submit, wait_done, wait_for_events};
use swarm_tests::proc_cluster::ProcCluster;
use swarm_tests::process::SwarmProcess;

/// 40 independent `append` calls of `ms` each, one line per call in `file`.
fn appends(file: &str, ms: u64) -> RunSpec {
    appends_of(40, "appends", file, ms)
}

/// `n` independent `append` calls of `ms` each (`a0`, `a1`, …), one line per call in `file`.
pub(crate) fn appends_of(n: usize, name: &str, file: &str, ms: u64) -> RunSpec {
    let subtasks = (0..n)
        .map(|i| {
            SubtaskSpec::tool(
                format!("a{i}"),
                "append",
                serde_json::json!({"file": file, "text": format!("a{i}"), "ms": ms}),
            )
        })
        .collect();
    RunSpec::new(name, subtasks)
}

/// `text` without ANSI colour codes.
pub(crate) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Assignments the worker logged as received.
pub(crate) fn received(log: &str) -> usize {
    plain(log)
        .lines()
        .filter(|l| l.contains("assignments received"))
        .filter_map(|l| l.split("count=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

pub(crate) fn started(events: &[pb::RunEvent]) -> usize {
    events.iter().filter(|e| matches!(e.event, Some(pb::run_event::Event::SubtaskStarted(_)))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_worker_connection_runs_no_call_twice() {
    let _serial = crate::failover::SERIAL.lock().await;
    let pc = ProcCluster::start(1, 1, 0, Duration::from_secs(2)).await.expect("cluster");
    let (leader, _) = pc.leader().await.expect("leader").expect("elected");
    let upstream = leader.trim_start_matches("http://").parse().expect("address");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    // A worker that reaches the coordinator only through the proxy (no etcd: no lease to expire).
    let append_dir = pc.dir.0.join("append");
    let args: Vec<String> = [
        "worker",
        "--id",
        "flaky-link",
        "--slots",
        "64",
        "--coordinator",
        &proxy.url(),
        "--append-dir",
        &append_dir.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let env = [("SWARM_LOG", "info,swarm_worker=debug")];
    let mut worker = SwarmProcess::spawn_env("worker-flaky-link", &args, &env, &pc.dir.0).expect("worker");
    let mut c = pc.client(&leader).await.expect("client");
    let run_id = submit(&mut c, &appends("drop.log", 1500)).await.expect("submit");
    wait_for_events(&mut c, &run_id, Duration::from_secs(30), |e| started(e) == 40).await.expect("all 40 started");
    // ... and the worker has them (dispatched is not yet received: the proxy may hold them).
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while received(&worker.log_text()) < 40 {
        assert!(tokio::time::Instant::now() < until, "the worker never got its 40 calls: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Every call is running on the worker when its connection drops.
    assert!(proxy.drop_connections() >= 1, "the worker was connected through the proxy");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{}\n{}", pc.logs(), worker.log_text());
    let summary = run.summary.expect("summary");
    assert_eq!(summary.attempts, 40, "one attempt per call: {summary:?}\n{}\n{}", pc.logs(), worker.log_text());
    let mut lines = pc.appended("drop.log");
    lines.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    expected.sort();
    assert_eq!(lines, expected, "each call ran exactly once");
    let coordinator = plain(&pc.coordinators[0].0.log_text());
    assert!(coordinator.contains("reattached=40"), "the worker took its attempts back: {coordinator}");
    worker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_an_ended_run_are_served_whole_after_a_leader_failover() {
    let _serial = crate::failover::SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 2, 1, Duration::from_secs(2)).await.expect("cluster");
    let (a_url, _) = pc.leader().await.expect("leader").expect("elected");
    let a = pc.coordinators.iter().position(|(_, url)| *url == a_url).expect("ours");
    let mut c = pc.client(&a_url).await.expect("client");
    let subtasks = (0..5)
        .map(|i| SubtaskSpec::tool(format!("s{i}"), "echo", serde_json::json!({"text": format!("result {i}")})))
        .collect();
    let run_id = submit(&mut c, &RunSpec::new("results", subtasks)).await.expect("submit");
    wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    let before = swarm_cli::client::get(&mut c, &run_id, true).await.expect("get");
    assert_eq!(before.subtasks.len(), 5);
    // Its end is durable before the leader dies.
    let store = pc.store().await.expect("store");
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let header = store.get(format!("/swarm/v1/runs/{run_id}").as_bytes()).await.expect("get");
        let state = header.and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok());
        if state.as_ref().and_then(|h| h["state"].as_str()) == Some("SUCCEEDED") {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "never stored as ended: {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pc.coordinators[a].0.kill();
    let after = pc.get_from_next_leader(&a_url, &run_id).await.expect("served by the next leader");
    assert_eq!(after.state, pb::RunState::Succeeded as i32);
    let outputs = |r: &pb::Run| r.subtasks.iter().map(|s| (s.id.clone(), s.output_json.clone())).collect::<Vec<_>>();
    assert_eq!(outputs(&after), outputs(&before), "every subtask and its result, as before the failover");
    assert!(after.subtasks.iter().all(|s| s.state == pb::SubtaskState::Succeeded as i32 && s.attempt == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_does_not_share_the_payload_store_refuses_to_stand_by() {
    let _serial = crate::failover::SERIAL.lock().await;
    let pc = ProcCluster::start(1, 1, 0, Duration::from_secs(2)).await.expect("cluster");
    pc.leader().await.expect("leader").expect("elected");
    let own = pc.dir.0.join("elsewhere");
    let port = swarm_tests::etcd::free_port().expect("port");
    let args: Vec<String> = [
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--etcd",
        &pc.etcd.endpoints().join(","),
        "--payloads",
        &own.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut stray = SwarmProcess::spawn("stray", &args, &pc.dir.0).expect("spawn");
    let code = stray.wait_exit(Duration::from_secs(20)).await.expect("it exits");
    assert_eq!(code, Some(70), "{}", stray.log_text());
    let log = plain(&stray.log_text());
    assert!(log.contains("must share their payload store") && log.contains("Refusing to stand by"), "{log}");
    // The leader is untouched.
    let (leader, _) = pc.leader().await.expect("leader").expect("still elected");
    assert_eq!(leader, pc.coordinators[0].1);
}

fn ms(d: &Option<prost_types::Duration>) -> i64 {
    d.as_ref().map_or(0, |d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_whose_clocks_are_minutes_off_still_give_a_truthful_timeline() {
    let _serial = crate::failover::SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 1, 0, Duration::from_secs(2)).await.expect("cluster");
    for (id, offset) in [("ahead", "+300s"), ("behind", "-300s")] {
        pc.env = swarm_tests::process::faketime(&[("FAKETIME", offset), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")]);
        pc.add_worker(id).expect("worker");
    }
    pc.env.clear();
    pc.wait_workers(2, Duration::from_secs(15)).await.expect("both workers registered (leases are etcd's clock)");
    let (leader, _) = pc.leader().await.expect("leader").expect("elected");
    let mut c = pc.client(&leader).await.expect("client");
    // Two chains of ten 100 ms calls: the critical path is ~1 s whoever runs what.
    let mut subtasks = Vec::new();
    for chain in 0..2 {
        for i in 0..10 {
            let s = SubtaskSpec::tool(format!("c{chain}-{i}"), "sleep", serde_json::json!({"ms": 100}));
            subtasks.push(if i == 0 { s } else { s.after([format!("c{chain}-{}", i - 1)]) });
        }
    }
    let before = std::time::SystemTime::now();
    let run_id = submit(&mut c, &RunSpec::new("skewed", subtasks)).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    let elapsed_ms = before.elapsed().expect("clock").as_millis() as i64;
    pc.assert_succeeded(&run).await;
    // The workers' clocks really are off: their own log lines are stamped five minutes away.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    for (w, offset) in pc.workers.iter().zip([300, -300]) {
        let stamps: Vec<i64> = plain(&w.log_text()).lines().filter_map(log_unix_secs).collect();
        let last = *stamps.last().unwrap_or_else(|| panic!("{} logged nothing", w.name));
        assert!((last - now - offset).abs() < 60, "{}: stamped {last}, now {now}, offset {offset}", w.name);
    }
    let s = run.summary.expect("summary");
    let (wall, critical) = (ms(&s.wall_time), ms(&s.critical_path_time));
    assert!((1000..=elapsed_ms).contains(&wall), "wall {wall} ms, elapsed {elapsed_ms} ms");
    assert!((900..=wall).contains(&critical), "critical path {critical} ms of wall {wall} ms");
    let run = swarm_cli::client::get(&mut c, &run_id, true).await.expect("get");
    let (start, end) = (run.submitted_at.expect("submitted"), run.finished_at.expect("finished"));
    let secs = |t: &prost_types::Timestamp| t.seconds as f64 + f64::from(t.nanos) / 1e9;
    for t in &run.subtasks {
        let (a, b) = (secs(t.started_at.as_ref().expect("started")), secs(t.finished_at.as_ref().expect("finished")));
        assert!(secs(&start) <= a && a <= b && b <= secs(&end), "{} ran {a}..{b}, the run {start:?}..{end:?}", t.id);
        assert!((0.09..=1.0).contains(&(b - a)), "{} took {} s", t.id, b - a);
    }
}

/// The Unix time (s) a log line is stamped with (`2026-12-01T16:23:02.351691Z …`).
fn log_unix_secs(line: &str) -> Option<i64> {
    let t = line.split_whitespace().next()?;
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d, hh, mm, ss) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_etcd_loses_nothing_and_the_run_finishes_once_an_operator_makes_room() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let _serial = crate::failover::SERIAL.lock().await;
    // etcd with an 8 MiB quota; 400 results of 50 KB each (inline: under 64 KiB) need ~20 MB.
    let etcd =
        swarm_tests::etcd::EtcdCluster::start_with(1, &["--quota-backend-bytes", "8388608"]).await.expect("etcd");
    let mut pc = ProcCluster::start_on(etcd, 1, 1, Duration::from_secs(2), Vec::new()).await.expect("cluster");
    let (leader, _) = pc.leader().await.expect("leader").expect("elected");
    let mut c = pc.client(&leader).await.expect("client");
    let text = "0123456789".repeat(10);
    let subtasks = (0..400)
        .map(|i| SubtaskSpec::tool(format!("e{i}"), "echo", serde_json::json!({"text": text, "repeat": 500})))
        .collect();
    let run_id = submit(&mut c, &RunSpec::new("fills-etcd", subtasks)).await.expect("submit");
    // The store fills up: the coordinator says so and keeps the writes.
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pc.coordinators[0].0.log_text().contains("the store is full (etcd NOSPACE)") {
        assert!(tokio::time::Instant::now() < until, "etcd never filled up\n{}", pc.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = swarm_cli::client::get(&mut c, &run_id, false).await.expect("get");
    assert_eq!(run.state, pb::RunState::Running as i32, "not ended while its results cannot be written");
    // The operator makes room: a larger quota (a restart), and the alarm disarmed.
    pc.etcd.extra_args = vec!["--quota-backend-bytes".into(), "1073741824".into()];
    pc.etcd.restart(0).expect("restart etcd");
    pc.etcd.wait_ready_or_full().await;
    let mut admin = etcd_client::Client::connect(pc.etcd.endpoints(), None).await.expect("etcd client");
    let alarms = admin.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("alarms");
    for a in alarms.alarms() {
        let mut options = AlarmOptions::new();
        options.with_member(a.member_id());
        admin.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options)).await.expect("disarm");
    }
    let run = wait_done_any_leader(&pc, &run_id, Duration::from_secs(120)).await;
    pc.assert_succeeded(&run).await;
    let store = pc.store().await.expect("store");
    // The final header is written after every record (writes are ordered): once it is stored,
    // all of them are.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let header = store.get(format!("/swarm/v1/runs/{run_id}").as_bytes()).await.expect("get");
        let stored = header.and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok());
        if stored.as_ref().and_then(|h| h["state"].as_str()) == Some("SUCCEEDED") {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "the final header was never stored\n{}", pc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = store.range(format!("/swarm/v1/subtasks/{run_id}/").as_bytes(), None, 0).await.expect("range");
    assert_eq!(records.kvs.len(), 400, "every result is in the store");
    // A commit whose answer was lost (etcd restarted under it) is sent again: the same record
    // written twice is that, and harmless. A record written over with another value is a bug.
    for kv in records.kvs.iter().filter(|kv| kv.version != 1) {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        let at = etcd_client::GetOptions::new().with_revision(kv.mod_revision - 1);
        let before = admin.get(kv.key.clone(), Some(at)).await.expect("the key's history");
        let prior = before.kvs().first().map(|p| p.value().to_vec());
        assert_eq!(
            prior.as_deref(),
            Some(kv.value.as_slice()),
            "{key} was written over with another value\n{}",
            pc.logs()
        );
    }
}

/// Polls whichever coordinator leads until the run has ended.
async fn wait_done_any_leader(pc: &ProcCluster, run_id: &str, deadline: Duration) -> pb::Run {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Ok(Some((leader, _))) = pc.leader().await
            && let Ok(mut c) = pc.client(&leader).await
            && let Ok(run) = swarm_cli::client::get(&mut c, run_id, false).await
            && run.state != pb::RunState::Running as i32
        {
            return run;
        }
        assert!(tokio::time::Instant::now() < until, "run {run_id} did not end\n{}", pc.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
