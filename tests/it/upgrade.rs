//! A mixed-version cluster through a rolling upgrade: the previous release's `swarm` (built by
//! the test from git: `SWARM_PREV_REV`, default `HEAD~1`) as one coordinator (the leader) and
//! one worker beside this build's, runs of non-idempotent calls in flight, then each old process
//! stopped with SIGTERM and started again as this build, one at a time. Every run must end
//! succeeded with every call appended exactly once. Long (it builds the previous release):
//! run by `scripts/nemesis`, or `cargo test -p swarm-tests --test it -- --ignored upgrade`.

use std::time::Duration;

use swarm_proto::pb;
use swarm_tests::etcd::{EtcdCluster, TempDir};
use swarm_tests::harness::submit;
use swarm_tests::proc_cluster::{PREFIX, append_swarm, appended_in, free_addr, write_script};
use swarm_tests::process::{SwarmProcess, build_revision};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: builds the previous release; run by scripts/nemesis"]
async fn a_rolling_upgrade_from_the_previous_release_loses_nothing_and_runs_nothing_twice() {
    let _serial = crate::failover::SERIAL.lock().await;
    let rev = std::env::var("SWARM_PREV_REV").unwrap_or_else(|_| "HEAD~1".into());
    let prev = build_revision(&rev).expect("the previous release builds");
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let dir = TempDir::new("upgrade").expect("dir");
    write_script(&dir.0).expect("script");
    let common = ["--etcd".to_owned(), etcd.endpoints().join(","), "--lease-ttl".into(), "2000ms".into()];
    let coordinator = |i: usize| -> (Vec<String>, String) {
        let addr = free_addr().expect("port");
        let url = format!("http://{addr}");
        let mut args = vec!["coordinator".into(), "--listen".into(), addr, "--advertise".into(), url.clone()];
        args.extend(common.iter().cloned());
        let _ = i;
        (args, url)
    };
    let worker = |id: &str| -> Vec<String> {
        let mut args: Vec<String> = ["worker", "--id", id, "--slots", "16", "--append-dir"].map(String::from).to_vec();
        args.push(dir.0.join("append").display().to_string());
        args.extend(common.iter().cloned());
        args
    };
    // The old leader first, then the new standby; an old and a new worker.
    let (old_args, old_url) = coordinator(0);
    let mut old_c = SwarmProcess::spawn_bin(&prev, "coordinator-old", &old_args, &[], &dir.0).expect("old coordinator");
    let store = etcd.store().await.expect("store");
    let leader = || async {
        let election = swarm_store::election::Election::new(store.clone(), &format!("{PREFIX}leader"));
        election.leader().await.ok().and_then(|(l, _)| l).map(|l| l.value)
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while leader().await.as_deref() != Some(old_url.as_str()) {
        assert!(tokio::time::Instant::now() < until, "the old coordinator never led: {}", old_c.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (new_args, new_url) = coordinator(1);
    let mut new_c = SwarmProcess::spawn_env("coordinator-new", &new_args, &[], &dir.0).expect("new coordinator");
    let mut old_w = SwarmProcess::spawn_bin(&prev, "worker-old", &worker("old"), &[], &dir.0).expect("old worker");
    let mut new_w = SwarmProcess::spawn_env("worker-new", &worker("new"), &[], &dir.0).expect("new worker");
    let client = |url: String| async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = swarm_cli::client::connect(&url).await
                && c.list_runs(pb::ListRunsRequest::default()).await.is_ok()
            {
                return c;
            }
            assert!(tokio::time::Instant::now() < until, "{url} never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let logs = |procs: &[&SwarmProcess]| {
        procs.iter().map(|p| format!("--- {} ---\n{}\n", p.name, p.log_text())).collect::<String>()
    };

    // Runs in flight on both versions while each old process is replaced.
    let mut c = client(old_url.clone()).await;
    let mut runs = Vec::new();
    for k in 0..3 {
        let spec = append_swarm(6, 5, 150, &format!("upgrade-{k}.log"));
        runs.push((k, submit(&mut c, &spec).await.expect("submit")));
    }
    tokio::time::sleep(Duration::from_millis(800)).await; // calls in flight on both workers
    old_w.signal("TERM").expect("TERM");
    let _ = old_w.wait_exit(Duration::from_secs(30)).await;
    old_w.upgrade();
    old_w.restart().expect("the worker as this build");
    old_c.signal("TERM").expect("TERM");
    let _ = old_c.wait_exit(Duration::from_secs(30)).await;
    old_c.upgrade();
    old_c.restart().expect("the coordinator as this build");
    // A run submitted after the upgrade, through whichever coordinator leads.
    let now_leader = loop {
        if let Some(l) = leader().await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut c = client(now_leader).await;
    let spec = append_swarm(4, 4, 50, "upgrade-3.log");
    runs.push((3, submit(&mut c, &spec).await.expect("submit after the upgrade")));

    for (k, run_id) in &runs {
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        let run = loop {
            let url = leader().await.unwrap_or_else(|| new_url.clone());
            if let Ok(mut c) = swarm_cli::client::connect(&url).await
                && let Ok(run) = swarm_cli::client::get(&mut c, run_id, true).await
                && run.state != pb::RunState::Running as i32
            {
                break run;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "run {k} never ended\n{}",
                logs(&[&old_c, &new_c, &old_w, &new_w])
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(run.state, pb::RunState::Succeeded as i32, "run {k}\n{}", logs(&[&old_c, &new_c, &old_w, &new_w]));
        let mut lines = appended_in(&dir.0, &format!("upgrade-{k}.log"));
        let expected: Vec<String> = run.subtasks.iter().filter(|s| s.tool == "append").map(|s| s.id.clone()).collect();
        lines.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(lines, expected, "run {k}: each call appended exactly once");
    }
    for p in [&mut old_c, &mut new_c, &mut old_w, &mut new_w] {
        p.kill();
    }
}
