//! MCP tools against a real third-party server: the reference `mcp-server-time` (PyPI),
//! installed by `scripts/install-pytools` into target/pytools.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{TestCluster, submit, wait_done};
use swarm_worker::Tool;
use swarm_worker::tools::mcp::{McpConfig, McpServerConfig};

fn python() -> PathBuf {
    std::env::var_os("SWARM_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| swarm_tests::process::pytool("python"))
}

fn time_server(marker: &str) -> McpConfig {
    let server = McpServerConfig {
        command: Some(python().display().to_string()),
        args: vec!["-m".into(), "mcp_server_time".into(), "--local-timezone".into(), "UTC".into()],
        env: [("SWARM_MCP_MARKER".to_owned(), marker.to_owned())].into(),
        url: None,
        read_only: true,
        idempotent: true,
        timeout_secs: Some(30),
        internal: false,
    };
    McpConfig { servers: [("time".to_owned(), server)].into() }
}

/// A cluster with one worker offering the built-ins and the MCP `tools` (as a worker does).
async fn cluster_with(tools: Vec<Arc<swarm_worker::tools::mcp::McpTool>>) -> TestCluster {
    let mut tc = TestCluster::start(0, 4).await.expect("cluster");
    let mut registry = swarm_worker::ToolRegistry::builtin();
    swarm_worker::tools::mcp::register(&mut registry, &tools);
    tc.cluster.add_worker("mcp-worker", 4, Arc::new(registry));
    tc.cluster.wait_for_workers(1, Duration::from_secs(10)).await.expect("worker");
    tc
}

/// PIDs of processes whose environment holds `SWARM_MCP_MARKER=marker`.
fn marked_pids(marker: &str) -> Vec<u32> {
    let needle = format!("SWARM_MCP_MARKER={marker}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_mcp_server_serves_tool_calls_and_is_restarted_after_a_crash() {
    let marker = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let tools = swarm_worker::tools::mcp::load(&time_server(&marker)).await.expect("the time server starts");
    let names: Vec<String> = tools.iter().map(|t| t.info().name.clone()).collect();
    assert!(names.contains(&"time__get_current_time".to_owned()), "{names:?}");

    let tc = cluster_with(tools).await;
    let mut c = tc.client().await.expect("client");

    let call = |id: &str| SubtaskSpec::tool(id, "get_current_time", json!({"timezone": "Europe/Paris"}));
    let run_id = submit(&mut c, &RunSpec::new("mcp", vec![call("now")])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let out: serde_json::Value = serde_json::from_str(&run.subtasks[0].output_json).expect("json");
    assert_eq!(out["timezone"], "Europe/Paris", "{out}");
    assert!(out["datetime"].as_str().is_some_and(|d| d.len() >= 19), "{out}");

    // A call the server itself rejects is a tool-reported failure, not retried.
    let bad = SubtaskSpec::tool("bad-zone", "get_current_time", json!({"timezone": "Not/AZone"}));
    let run_id = submit(&mut c, &RunSpec::new("mcp-error", vec![bad])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.subtasks[0].error_kind, pb::FailureKind::ToolReported as i32, "{:?}", run.subtasks[0]);
    assert_eq!(run.subtasks[0].attempt, 1);

    // Kill the server: the next call fails transiently, the server is started again, and the
    // retry succeeds.
    let pids = marked_pids(&marker);
    assert_eq!(pids.len(), 1, "one server process: {pids:?}");
    std::process::Command::new("kill").arg("-KILL").arg(pids[0].to_string()).status().expect("kill");
    let run_id = submit(&mut c, &RunSpec::new("mcp-again", vec![call("again")])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    assert_eq!(run.subtasks[0].attempt, 2, "the first attempt met the dead server");
    let after = marked_pids(&marker);
    assert_eq!(after.len(), 1);
    assert_ne!(after[0], pids[0], "a new server process");
    tc.stop().await;
}

/// Waits (polling an external process's log file, up to `deadline`) until `pred` holds.
async fn wait_for_log(path: &std::path::Path, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(tokio::time::Instant::now() < until, "log {} never matched: {text:?}", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_sends_mcp_cancellation_to_the_server() {
    let marker = format!("slow-{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let dir = std::env::temp_dir().join(format!("swarm-mcp-cancel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = dir.join("calls.log");
    let _ = std::fs::remove_file(&log);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/slow_mcp.py");
    let server = McpServerConfig {
        command: Some(python().display().to_string()),
        args: vec![script.display().to_string()],
        env: [
            ("SWARM_MCP_MARKER".to_owned(), marker.clone()),
            ("SWARM_SLOW_MCP_LOG".to_owned(), log.display().to_string()),
        ]
        .into(),
        url: None,
        read_only: true,
        idempotent: true,
        timeout_secs: Some(120),
        internal: false,
    };
    let config = McpConfig { servers: [("slow".to_owned(), server)].into() };
    let tools = swarm_worker::tools::mcp::load(&config).await.expect("the slow server starts");

    let tc = cluster_with(tools).await;
    let mut c = tc.client().await.expect("client");

    let quick = SubtaskSpec::tool("quick", "echo", json!({"text": "done"}));
    let slow = SubtaskSpec::tool("slow", "slow_wait", json!({"tag": "slow", "seconds": 120}));
    let run_id = submit(&mut c, &RunSpec::new("mcp-cancel", vec![quick, slow])).await.expect("submit");
    wait_for_log(&log, Duration::from_secs(30), |t| t.contains("start slow")).await;
    let server_pids = marked_pids(&marker);
    assert_eq!(server_pids.len(), 1, "{server_pids:?}");

    c.cancel_run(pb::CancelRunRequest { run_id: run_id.clone(), reason: "test".into() }).await.expect("cancel");
    let cancelled_at = tokio::time::Instant::now();
    let text = wait_for_log(&log, Duration::from_secs(5), |t| t.contains("cancelled slow")).await;
    let latency = cancelled_at.elapsed();
    assert!(latency < Duration::from_secs(1), "the server heard of the cancel after {latency:?}");
    assert!(!text.contains("done slow"), "{text}");
    assert_eq!(marked_pids(&marker), server_pids, "cancelled by notification: the server process lives on");

    let run = wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Cancelled as i32, "{run:?}");
    let quick = run.subtasks.iter().find(|s| s.id == "quick").expect("quick");
    assert_eq!(quick.state, pb::SubtaskState::Succeeded as i32, "finished results are kept: {quick:?}");
    tc.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An MCP server over streamable HTTP (the reference SDK) on a free port; killed on drop.
struct HttpMcp {
    child: std::process::Child,
    port: u16,
}

impl Drop for HttpMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_mcp() -> HttpMcp {
    let port = swarm_tests::etcd::free_port().expect("port");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/http_mcp.py");
    let child = std::process::Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python");
    wait_listening(port, "the HTTP MCP server").await;
    HttpMcp { child, port }
}

/// Waits (up to 30 s) until something listens on loopback `port`.
async fn wait_listening(port: u16, what: &str) {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < until, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_config(url: String) -> McpConfig {
    let server = McpServerConfig {
        command: None,
        args: vec![],
        env: Default::default(),
        url: Some(url),
        read_only: true,
        idempotent: true,
        timeout_secs: Some(10),
        internal: true,
    };
    McpConfig { servers: [("web".to_owned(), server)].into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_mcp_server_is_reached_at_its_own_address_and_nowhere_else_internal() {
    let server = http_mcp().await;
    let policy = swarm_worker::tools::egress::EgressPolicy::public_only();
    // At an internal address (loopback) the egress policy forbids: refused at load, unless the
    // operator says so in its entry.
    let mut undeclared = http_config(format!("http://127.0.0.1:{}/mcp", server.port));
    undeclared.servers.values_mut().for_each(|s| s.internal = false);
    match swarm_worker::tools::mcp::load_with(&undeclared, &policy).await {
        Ok(_) => panic!("an internal MCP server was reached without `internal: true`"),
        Err(e) => assert!(e.contains("internal: true") && e.contains("127.0.0.1"), "{e}"),
    }
    // Declared `internal: true`: its own address is allowed, for it alone.
    let tools =
        swarm_worker::tools::mcp::load_with(&http_config(format!("http://127.0.0.1:{}/mcp", server.port)), &policy)
            .await
            .expect("the HTTP server's tools load");
    let tool = tools.iter().find(|t| t.info().name == "web__whereami").expect("web__whereami");
    let ctx = swarm_worker::tools::ToolContext {
        run_id: "r".into(),
        subtask_id: "s".into(),
        attempt: 1,
        cancel: Default::default(),
        hold: None,
    };
    let out = tool.call(json!({}), ctx).await.expect("called");
    assert_eq!(out, json!({"result": format!("reached {}", server.port)}));

    // A front that redirects to another internal address (127.0.0.2): refused, naming the policy.
    let target = format!("http://127.0.0.2:{}/mcp", server.port);
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (axum::http::StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, target)]) }
    });
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front_port = front.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(front, app).await });
    let refused =
        swarm_worker::tools::mcp::load_with(&http_config(format!("http://127.0.0.1:{front_port}/mcp")), &policy)
            .await
            .err()
            .expect("the redirect must be refused");
    assert!(refused.contains("egress policy") && refused.contains("127.0.0.2"), "{refused}");
    // The same server called as a tool fails permanent (no retry would help).
    let server_cfg = http_config(format!("http://127.0.0.1:{front_port}/mcp")).servers["web"].clone();
    let mut allowed = policy.clone();
    allowed.allow.push("127.0.0.1".parse().expect("cidr"));
    let direct = swarm_worker::tools::mcp::McpServer::with_egress("web", server_cfg, Arc::new(allowed));
    let e = direct.call("whereami", json!({})).await.expect_err("refused");
    assert_eq!(e.kind, swarm_core::FailureKind::Permanent, "{e:?}");
    assert!(e.message.contains("egress policy"), "{}", e.message);
    // A server given by an internal IP the worker's policy refuses, not through load: refused.
    let stray = swarm_worker::tools::mcp::McpServer::with_egress(
        "stray",
        http_config(format!("http://127.0.0.1:{}/mcp", server.port)).servers["web"].clone(),
        Arc::new(policy.clone()),
    );
    let e = stray.call("whereami", json!({})).await.expect_err("refused");
    assert_eq!(e.kind, swarm_core::FailureKind::Permanent, "{e:?}");
}

/// The reference MCP server (`@modelcontextprotocol/server-everything`, npm, pinned in
/// tests/web/package-lock.json) over streamable HTTP on `port`; killed on drop.
pub(crate) struct Everything {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Everything {
    /// POST requests the server has received (it logs each).
    fn posts(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches("Received MCP POST request").count()
    }

    pub(crate) async fn start(port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("swarm-everything-{port}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("log");
        let index = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("web/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        assert!(index.exists(), "{} is missing: run ./scripts/install-deps test", index.display());
        let preload = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/webcrypto.cjs");
        let child = std::process::Command::new("node")
            .arg("--require")
            .arg(preload)
            .arg(index)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node");
        wait_listening(port, "the reference MCP server").await;
        Self { child, log }
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_mcp_server_that_restarts_is_reached_again_at_once() {
    let port = swarm_tests::etcd::free_port().expect("port");
    let mut server = Everything::start(port).await;
    let mut config = http_config(format!("http://127.0.0.1:{port}/mcp")).servers["web"].clone();
    config.timeout_secs = Some(30);
    let mut policy = swarm_worker::tools::egress::EgressPolicy::public_only();
    policy.allow.push("127.0.0.1".parse().expect("cidr"));
    let mcp = Arc::new(swarm_worker::tools::mcp::McpServer::with_egress("everything", config, Arc::new(policy)));
    let out = mcp.call("echo", json!({"message": "one"})).await.expect("echo");
    assert_eq!(out, json!("Echo: one"));

    // Under load: long calls in flight when the server dies, and a burst of calls once it is
    // back (on the same port, knowing nothing of the old session).
    let before = server.posts();
    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let mcp = mcp.clone();
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                let r = mcp.call("trigger-long-running-operation", json!({"duration": 20, "steps": 20})).await;
                (r, t.elapsed())
            })
        })
        .collect();
    // Every call has reached the server before it dies.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.posts() < before + 8 {
        assert!(tokio::time::Instant::now() < until, "the calls did not reach the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(in_flight.iter().all(|t| !t.is_finished()), "the calls take 20 s");
    drop(server);
    server = Everything::start(port).await;
    let after: Vec<_> = (0..20)
        .map(|i| {
            let mcp = mcp.clone();
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                (mcp.call("echo", json!({"message": format!("m{i}")})).await, t.elapsed())
            })
        })
        .collect();
    for (i, task) in after.into_iter().enumerate() {
        let (r, took) = task.await.expect("join");
        assert_eq!(r.expect("answered by the restarted server"), json!(format!("Echo: m{i}")));
        assert!(took < Duration::from_secs(3), "the stale session was replaced at once, not after a timeout: {took:?}");
    }
    // The calls in flight were lost with the server: they fail transient (the attempt's retry
    // policy decides, as the server may have run them) in seconds, not at their 30 s timeout.
    for task in in_flight {
        let (r, took) = task.await.expect("join");
        let e = r.expect_err("the server that ran it is gone");
        assert_eq!(e.kind, swarm_core::FailureKind::Transient, "{e:?}");
        assert!(took < Duration::from_secs(10), "{took:?}: {e:?}");
    }
    drop(server);
}

/// The reference server over stdio has an `echo` of its own: it is reachable as
/// `everything__echo`, and the bare `echo` stays the built-in, whatever the server offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_servers_echo_never_shadows_the_built_in() {
    let index = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let server = McpServerConfig {
        command: Some("node".into()),
        args: vec![index.display().to_string(), "stdio".into()],
        env: Default::default(),
        url: None,
        read_only: true,
        idempotent: true,
        timeout_secs: Some(30),
        internal: false,
    };
    let config = McpConfig { servers: [("everything".to_owned(), server)].into() };
    let tools = swarm_worker::tools::mcp::load(&config).await.expect("the reference server starts");
    let names: Vec<String> = tools.iter().map(|t| t.info().name.clone()).collect();
    assert!(names.contains(&"everything__echo".to_owned()), "{names:?}");
    let tc = cluster_with(tools).await;
    let mut c = tc.client().await.expect("client");
    let spec = RunSpec::new(
        "echoes",
        vec![
            SubtaskSpec::tool("builtin", "echo", json!({"text": "plain"})),
            SubtaskSpec::tool("mcp", "everything__echo", json!({"message": "over MCP"})),
            SubtaskSpec::tool("sum", "get-sum", json!({"a": 2, "b": 3})),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let output = |id: &str| -> serde_json::Value {
        let s = run.subtasks.iter().find(|s| s.id == id).expect("subtask");
        serde_json::from_str(&s.output_json).expect("json")
    };
    assert_eq!(output("builtin"), json!({"text": "plain"}), "the built-in echo");
    assert_eq!(output("mcp"), json!("Echo: over MCP"));
    assert!(output("sum").to_string().contains('5'), "a bare name no built-in has: {}", output("sum"));
    tc.stop().await;
}
