//! Any coordinator serves the API: two coordinator processes on etcd behind a loopback TCP
//! balancer (as a Kubernetes Service over every ready pod), calls answered whichever one a
//! connection lands on, and a watcher that keeps its place when the leader is SIGKILLed.

use std::time::Duration;

use swarm_cli::client;
use swarm_proto::pb;
use swarm_tests::balancer::Balancer;
use swarm_tests::harness::{submit, succeeded, wait_done};
use swarm_tests::proc_cluster::{ProcCluster, append_swarm, echo, free_addr};

use crate::failover::SERIAL;

/// `GET path` over HTTP/1.1: the status and the body.
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_coordinator_serves_the_api_and_a_watch_survives_the_leader_sigkill() {
    let _serial = SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 1, 3, Duration::from_secs(2)).await.expect("cluster");
    // The second coordinator, a standby, also serves the web view.
    let web = free_addr().expect("addr");
    let b = pc.add_coordinator_args(&["--http-listen".into(), web.clone()]).expect("standby");
    let standby_url = pc.coordinators[b].1.clone();
    pc.wait_serving(&standby_url, Duration::from_secs(15)).await.expect("standby serving");
    let (leader_url, _) = pc.leader().await.expect("leader").expect("elected");
    assert_ne!(leader_url, standby_url, "the first coordinator leads");

    // Straight to the standby: every call is served (sent on to the leader).
    let mut standby = pc.client(&standby_url).await.expect("client");
    let probe = swarm_core::RunSpec::new("probe", vec![echo("a"), echo("b").after(["a"])]);
    let probe_id = submit(&mut standby, &probe).await.expect("submit through the standby");
    let mut events = Vec::new();
    client::follow(&mut standby, &probe_id, 0, |e| events.push(e.clone())).await.expect("watch through the standby");
    let Some(pb::run_event::Event::RunFinished(end)) = events.last().and_then(|e| e.event.as_ref()) else {
        panic!("the watch ends with the run: {events:?}")
    };
    assert_eq!(end.state, pb::RunState::Succeeded as i32);
    let run = client::get(&mut standby, &probe_id, true).await.expect("get through the standby");
    assert_eq!(run.subtasks.len(), 2);
    let runs = standby.list_runs(pb::ListRunsRequest::default()).await.expect("list").into_inner().runs;
    assert!(runs.iter().any(|r| r.run_id == probe_id));
    let workers = standby.list_workers(pb::ListWorkersRequest::default()).await.expect("workers").into_inner();
    assert_eq!(workers.workers.len(), 3);
    // Errors come back as the leader gave them, with their details.
    let err = standby
        .get_run(pb::GetRunRequest { run_id: "r-nope".into(), ..Default::default() })
        .await
        .expect_err("no such run");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let bad = pb::RunSpec::from(&swarm_core::RunSpec::new("bad", vec![echo("x"), echo("x")]));
    let err = standby
        .submit_run(pb::SubmitRunRequest { spec: Some(bad), ..Default::default() })
        .await
        .expect_err("duplicate ids");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(swarm_proto::status::field_violations(&err)[0].0, "subtasks[1].id");
    // SubmitRunChunked through the standby: gathered there, sent on in chunks, run by the leader;
    // a bad spec's details come back as the leader gave them.
    let chunked = |spec: &swarm_core::RunSpec| {
        let req = pb::SubmitRunRequest { spec: Some(spec.into()), ..Default::default() };
        let bytes = prost::Message::encode_to_vec(&req);
        let total = bytes.len() as u64;
        let parts: Vec<_> = bytes
            .chunks(bytes.len() / 3 + 1)
            .enumerate()
            .map(|(i, d)| pb::SubmitRunChunk { data: d.to_vec(), total_bytes: if i == 0 { total } else { 0 } })
            .collect();
        assert_eq!(parts.len(), 3);
        tonic::Request::new(tokio_stream::iter(parts))
    };
    let in_chunks = standby.submit_run_chunked(chunked(&probe)).await.expect("chunked, forwarded").into_inner();
    let run = wait_done(&mut standby, &in_chunks.run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32);
    let bad = swarm_core::RunSpec::new("bad", vec![echo("x"), echo("x")]);
    let err = standby.submit_run_chunked(chunked(&bad)).await.expect_err("duplicate ids");
    assert_eq!(swarm_proto::status::field_violations(&err)[0].0, "subtasks[1].id", "{err:?}");

    // The standby's web view: runs, a run's timeline (its events, caught up) and a subtask.
    let (status, body) = http_get(&web, "/api/runs").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&probe_id), "{body}");
    let (status, body) = http_get(&web, &format!("/api/runs/{probe_id}/timeline")).await;
    assert_eq!(status, 200, "{body}");
    let timeline: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(timeline["bars"].as_array().map(Vec::len), Some(2), "{body}");
    let (status, body) = http_get(&web, &format!("/api/runs/{probe_id}/subtasks/b")).await;
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(detail["spec"]["args"]["text"], "b", "{body}");

    // Through the balancer: connections alternate between the two; every call is answered.
    let backends = pc.coordinators.iter().map(|(_, url)| url.trim_start_matches("http://").parse().expect("addr"));
    let lb = Balancer::start(backends.collect()).await.expect("balancer");
    for _ in 0..6 {
        let mut c = pc.client(&lb.url()).await.expect("client");
        c.list_runs(pb::ListRunsRequest::default()).await.expect("every coordinator answers");
    }
    assert!(lb.counts().iter().all(|&n| n >= 3), "both coordinators took connections: {:?}", lb.counts());

    // A watch through the balancer; the leader dies in the middle of it.
    let mut c = pc.client(&lb.url()).await.expect("client");
    let spec = append_swarm(20, 10, 150, "exec.log");
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn({
        let (url, run_id) = (lb.url(), run_id.clone());
        async move {
            let mut c = client::connect(&url).await.expect("client");
            client::follow(&mut c, &run_id, 0, |e| {
                let _ = tx.send(e.clone());
            })
            .await
        }
    });
    let mut seen = Vec::new();
    while succeeded(&seen) < 60 {
        seen.push(rx.recv().await.expect("events before the kill"));
    }
    let a = pc.coordinators.iter().position(|(_, url)| *url == leader_url).expect("leader is ours");
    pc.coordinators[a].0.kill();
    let last = tokio::time::timeout(Duration::from_secs(120), watcher)
        .await
        .unwrap_or_else(|_| panic!("the watch did not end\n{}", pc.logs()))
        .expect("watcher")
        .unwrap_or_else(|e| panic!("the watch failed: {e}\n{}", pc.logs()));
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "no event missing or repeated\n{}", pc.logs());
    assert_eq!(last, *seqs.last().expect("events"));
    let Some(pb::run_event::Event::RunFinished(end)) = seen.last().and_then(|e| e.event.as_ref()) else {
        panic!("the watch ends with the run")
    };
    assert_eq!(end.state, pb::RunState::Succeeded as i32, "{}", pc.logs());
    assert_eq!(pc.appended("exec.log").len(), 200, "every call ran once");
}

/// What a standby's hop costs: unary calls (GetRun of an ended run, ListRuns) and a watch of an
/// ended run replayed, straight to the leader and through the standby, one at a time. Prints
/// `forwarding: …` lines; asserts nothing about speed (docs/benchmarks.md has the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --release -p swarm-tests --test it -- --ignored forwarding::measure"]
async fn measure_forwarding_overhead() {
    let _serial = SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 1, 1, Duration::from_secs(2)).await.expect("cluster");
    let b = pc.add_coordinator().expect("standby");
    let standby_url = pc.coordinators[b].1.clone();
    pc.wait_serving(&standby_url, Duration::from_secs(15)).await.expect("standby serving");
    let (leader_url, _) = pc.leader().await.expect("leader").expect("elected");
    let mut leader = pc.client(&leader_url).await.expect("client");
    let spec = swarm_core::RunSpec::new("probe", (0..200).map(|i| echo(&format!("e{i}"))).collect());
    let run_id = submit(&mut leader, &spec).await.expect("submit");
    client::follow(&mut leader, &run_id, 0, |_| {}).await.expect("run ends");
    let mut standby = pc.client(&standby_url).await.expect("client");
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    for (what, c) in [("leader", &mut leader), ("standby", &mut standby)] {
        let mut get = Vec::new();
        let mut list = Vec::new();
        let mut watch = Vec::new();
        let mut events = 0;
        for i in 0..1200 {
            let t = std::time::Instant::now();
            c.get_run(pb::GetRunRequest { run_id: run_id.clone(), ..Default::default() }).await.expect("get");
            let g = t.elapsed();
            let t = std::time::Instant::now();
            c.list_runs(pb::ListRunsRequest::default()).await.expect("list");
            let l = t.elapsed();
            let t = std::time::Instant::now();
            let mut s = c
                .watch_run(pb::WatchRunRequest { run_id: run_id.clone(), ..Default::default() })
                .await
                .expect("watch")
                .into_inner();
            events = 0;
            while futures_util::StreamExt::next(&mut s).await.is_some() {
                events += 1;
            }
            let w = t.elapsed();
            if i >= 200 {
                // The first 200 warm the connections and caches.
                get.push(g);
                list.push(l);
                watch.push(w);
            }
        }
        println!(
            "forwarding: {what}: GetRun p50 {:?} p99 {:?}; ListRuns p50 {:?} p99 {:?}; WatchRun of {events} events p50 {:?} p99 {:?}",
            pct(&mut get, 0.5),
            pct(&mut get, 0.99),
            pct(&mut list, 0.5),
            pct(&mut list, 0.99),
            pct(&mut watch, 0.5),
            pct(&mut watch, 0.99),
        );
    }
}

/// A leader deposed while a client watches it (frozen past its lease, then thawed) ends the
/// watch with UNAVAILABLE, so the client resumes on the new leader; before, the stream stayed
/// open and silent for good (the nemesis's history found runs no watch saw end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_ends_its_watches_and_the_watcher_resumes_on_the_next() {
    use futures_util::StreamExt;
    let _serial = SERIAL.lock().await;
    let pc = ProcCluster::start(1, 2, 1, Duration::from_secs(2)).await.expect("cluster");
    let (a_url, _) = pc.leader().await.expect("leader").expect("elected");
    let a = pc.coordinators.iter().position(|(_, url)| *url == a_url).expect("ours");
    let mut c = pc.client(&a_url).await.expect("client");
    let spec = swarm_core::RunSpec::new(
        "watched",
        vec![swarm_core::SubtaskSpec::tool("wait", "sleep", serde_json::json!({"ms": 8000}))],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let request = pb::WatchRunRequest { run_id: run_id.clone(), after_seq: 0, ..Default::default() };
    let mut stream = c.watch_run(request).await.expect("watch").into_inner();
    let mut last = 0;
    while let Some(Ok(ev)) = stream.next().await {
        last = ev.seq;
        if matches!(ev.event, Some(pb::run_event::Event::SubtaskStarted(_))) {
            break;
        }
    }
    // Frozen for longer than its lease (shorter than HTTP/2 keepalive would notice), thawed.
    pc.coordinators[a].0.signal("STOP").expect("SIGSTOP");
    let (b_url, _) = pc.wait_leader(Some(&a_url), Duration::from_secs(15)).await.expect("standby takes over");
    pc.coordinators[a].0.signal("CONT").expect("SIGCONT");
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(ev)) => last = ev.seq,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the deposed leader's watch ended");
    if let Some(status) = ended {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    // Resumed on whichever coordinator leads now, from the last event seen: the end arrives.
    let _ = b_url;
    let resumed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (url, _) = pc.wait_leader(None, Duration::from_secs(15)).await.expect("a leader");
            let mut leader = pc.client(&url).await.expect("client");
            let request = pb::WatchRunRequest { run_id: run_id.clone(), after_seq: last, ..Default::default() };
            // A leader still starting its term answers UNAVAILABLE: ask again.
            let Ok(stream) = leader.watch_run(request).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            while let Some(Ok(ev)) = stream.next().await {
                last = ev.seq;
                if matches!(ev.event, Some(pb::run_event::Event::RunFinished(_))) {
                    return true;
                }
            }
        }
    })
    .await;
    assert_eq!(resumed.ok(), Some(true), "{}", pc.logs());
}
