//! The sandboxed `exec` tool against real bubblewrap (docs/security.md, "The exec sandbox"):
//! what a call sees and can do, each escape attempt failing to do harm, each limit stopping
//! what it bounds with the result saying which, and nothing of a call outliving it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_worker::tools::exec::files::FileTool;
use swarm_worker::tools::exec::{Exec, Limits, Sandbox, Workspaces};
use swarm_worker::tools::{Tool, ToolContext};
use tokio_util::sync::CancellationToken;

struct Kit {
    exec: Exec,
    files: Vec<FileTool>,
    root: std::path::PathBuf,
}

impl Kit {
    async fn file(&self, name: &str, args: Value) -> Result<Value, swarm_worker::tools::ToolError> {
        let tool = self.files.iter().find(|t| t.info().name == name).expect("a file tool");
        tool.call(args, ctx("s")).await
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn kit(limits: Limits) -> Kit {
    let sandbox =
        Sandbox::probe().await.unwrap_or_else(|e| panic!("bubblewrap must work here (scripts/install-deps test): {e}"));
    let root = std::env::temp_dir().join(format!("swarm-sandbox-test-{:x}", fastrand::u64(..)));
    let workspaces = Workspaces::new(&root, Duration::from_secs(3600)).expect("workspaces");
    let sandbox = Arc::new(sandbox);
    Kit { files: FileTool::all(&sandbox, &workspaces), exec: Exec::new(sandbox, workspaces, limits), root }
}

fn ctx(subtask: &str) -> ToolContext {
    ToolContext {
        run_id: "r1".into(),
        subtask_id: subtask.into(),
        attempt: 1,
        cancel: CancellationToken::new(),
        hold: None,
    }
}

async fn sh(k: &Kit, script: &str) -> Value {
    k.exec.call(json!({"script": script}), ctx("s")).await.expect("the sandbox ran")
}

fn out(v: &Value) -> &str {
    v["stdout"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_call_runs_python_and_sh_in_its_workspace_and_answers_what_happened() {
    let k = kit(Limits::default()).await;
    let v = k.exec.call(json!({"cmd": ["python3", "-c", "print(6*7)"]}), ctx("s")).await.expect("ran");
    assert_eq!((v["exit_code"].as_i64(), out(&v)), (Some(0), "42\n"), "{v}");
    let v = sh(&k, "echo kept > notes.txt; pwd; id -u; hostname; echo oops >&2; exit 3").await;
    assert_eq!(v["exit_code"], 3, "{v}");
    assert_eq!(out(&v), "/workspace\n65534\nsandbox\n");
    assert_eq!(v["stderr"], "oops\n");
    // The workspace is kept between calls of the subtask, and is the subtask's own.
    assert_eq!(out(&sh(&k, "cat notes.txt").await), "kept\n");
    let v = sh(&k, "mkdir -p data && echo 1 > data/a.csv && echo 2 > b.txt").await;
    assert_eq!(v["files_written"], json!(["b.txt", "data/a.csv"]), "{v}");
    let other = k.exec.call(json!({"script": "ls"}), ctx("other")).await.expect("ran");
    assert_eq!(out(&other), "", "{other}");
    let v = k.exec.call(json!({"script": "import sys; print(sys.stdin.read().upper())", "lang": "python", "stdin": "abc", "env": {"X_1": "y"}}), ctx("s")).await.expect("ran");
    assert_eq!(out(&v), "ABC\n", "{v}");
    // Bad arguments are the call's error, with the field.
    for (args, field) in [
        (json!({}), "args.cmd or args.script"),
        (json!({"cmd": []}), "args.cmd"),
        (json!({"script": "x", "lang": "ruby"}), "args.lang"),
        (json!({"script": "x", "env": {"A=B": "1"}}), "args.env.A=B"),
        (json!({"script": "x", "timeout_ms": -1}), "args.timeout_ms"),
        (json!({"script": "x", "limits": {"gpu": 1}}), "args.limits.gpu"),
    ] {
        let e = k.exec.call(args.clone(), ctx("s")).await.expect_err("refused");
        assert!(e.message.contains(field), "{args}: {e}");
    }
}

#[tokio::test]
async fn nothing_of_the_worker_is_visible_or_reachable_from_inside() {
    let k = kit(Limits::default()).await;
    // SAFETY of the check: the variable is this test process's, which bwrap would pass on.
    let secret = std::env::var("PATH").unwrap_or_default();
    let v = sh(&k, "env; cat /proc/1/environ | tr '\\0' '\\n'; cat /proc/self/environ | tr '\\0' '\\n'").await;
    assert!(!out(&v).contains("CARGO"), "the worker's environment leaked: {v}");
    assert!(!out(&v).contains(&secret) || secret == "/usr/local/bin:/usr/bin:/bin", "{v}");
    // Files outside the workspace: the host's /etc, /root, this test's files, through `..`,
    // a symlink, /proc/self/root, a hard link.
    let host_file = k.root.join("host-secret.txt");
    std::fs::write(&host_file, "top secret").expect("host file");
    let probes = format!(
        "cat /etc/shadow; cat /etc/hostname; ls /root; cat {0}; cat ../../host-secret.txt; \
         ln -s {0} link && cat link; cat /proc/self/root{0}; ln {0} hard 2>&1; cat hard; \
         cat /proc/1/root{0}; echo done",
        host_file.display()
    );
    let v = sh(&k, &probes).await;
    assert!(!out(&v).contains("top secret") && !v["stderr"].as_str().unwrap_or("").contains("top secret"), "{v}");
    assert!(out(&v).ends_with("done\n"), "{v}");
    // Writes outside the workspace fail; /tmp is private.
    let v =
        sh(&k, &format!("echo x > {0}/escaped; echo x > /usr/escaped; echo x > /tmp/mine; ls /tmp", k.root.display()))
            .await;
    assert!(!k.root.join("escaped").exists() && !std::path::Path::new("/usr/escaped").exists(), "{v}");
    assert!(!std::path::Path::new("/tmp/mine").exists() || std::fs::read_to_string("/tmp/mine").is_err(), "{v}");
    // No nested user namespace (and so no mounts or capabilities of its own).
    let v = sh(&k, "unshare -U true && echo nested || echo refused").await;
    assert_eq!(out(&v), "refused\n", "{v}");
    // No network: not the worker's loopback services, not an outside name.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "import socket\nfor host in [('127.0.0.1', {port}), ('example.com', 80)]:\n  try:\n    socket.create_connection(host, timeout=2); print('connected', host)\n  except Exception as e:\n    print('refused', type(e).__name__)\n"
    );
    let v = k.exec.call(json!({"script": script, "lang": "python"}), ctx("s")).await.expect("ran");
    assert!(!out(&v).contains("connected"), "{v}");
    assert_eq!(out(&v).matches("refused").count(), 2, "{v}");
}

#[tokio::test]
async fn each_limit_stops_what_it_bounds_and_the_result_names_it() {
    let limits = Limits {
        wall: Duration::from_secs(20),
        cpu_seconds: 2,
        memory_bytes: 64 << 20,
        processes: 32,
        output_bytes: 1 << 20,
        file_bytes: 10 << 20,
        workspace_bytes: 50 << 20,
    };
    let k = kit(limits).await;
    // 100 MB of stdout: cut at 1 MiB, with a marker.
    let v = sh(&k, "head -c 100000000 /dev/zero | tr '\\0' a").await;
    assert_eq!(v["truncated"], true);
    assert!(
        out(&v).len() < (1 << 20) + 100 && out(&v).ends_with("[output truncated at 1048576 bytes]"),
        "{}",
        out(&v).len()
    );
    // A 10 GB write: stopped at the file-size limit.
    let v = sh(&k, "head -c 10000000000 /dev/zero > big; ls -l big").await;
    assert_eq!(v["limit"], "file_size", "{v}");
    assert!(std::fs::metadata(k.root.join("r1/s/big")).map_or(0, |m| m.len()) <= 10 << 20);
    // CPU: a busy loop ends at 2 CPU seconds.
    let v = k.exec.call(json!({"script": "while True: pass", "lang": "python"}), ctx("s")).await.expect("ran");
    assert_eq!(v["limit"], "cpu", "{v}");
    // Memory: a memory bomb is stopped.
    let v = k
        .exec
        .call(json!({"script": "x = bytearray(512 << 20); print('allocated')", "lang": "python"}), ctx("s"))
        .await
        .expect("ran");
    assert!(!out(&v).contains("allocated"), "{v}");
    assert_ne!(v["exit_code"], 0, "{v}");
    // A fork bomb: capped (processes), and gone when the call ends.
    let v =
        k.exec.call(json!({"script": "b() { b | b & }; b; sleep 2", "timeout_ms": 5000}), ctx("s")).await.expect("ran");
    assert!(v["limit"].is_string(), "{v}");
    // Wall time: a process that ignores SIGTERM is killed at the timeout.
    let started = std::time::Instant::now();
    let v = k.exec.call(json!({"script": "trap '' TERM; sleep 60", "timeout_ms": 500}), ctx("s")).await.expect("ran");
    assert_eq!(v["limit"], "wall", "{v}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The workspace limit is reported once passed.
    let v = sh(&k, "for i in 1 2 3 4 5 6; do head -c 9000000 /dev/zero > f$i; done").await;
    assert_eq!(v["limit"], "workspace", "{v}");
    // The worker's side still serves.
    assert_eq!(sh(&k, "echo alive").await["stdout"], "alive\n");
}

/// Processes named by a marker in their command line, anywhere on the host.
fn running(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker)))
        .count()
}

#[tokio::test]
async fn nothing_of_a_call_outlives_it_cancelled_timed_out_or_double_forked() {
    let k = kit(Limits::default()).await;
    // A daemon that double-forks and outlives its parent's exit. The marker is put together
    // inside, so only the daemon's command line holds it (not the call's own arguments); it is
    // seen running while the call lasts, and gone once it returned.
    let tail = format!("{:x}", fastrand::u64(..));
    let marker = format!("daemon{tail}");
    let script = format!("m=daemon; (setsid sh -c \"sleep 300; echo ${{m}}{tail}\" &); sleep 3; echo started");
    let call = tokio::spawn({
        let exec = Exec::new(
            Arc::new(Sandbox::probe().await.expect("bwrap")),
            Workspaces::new(&k.root, Duration::from_secs(60)).expect("ws"),
            Limits::default(),
        );
        async move { exec.call(json!({"script": script}), ctx("s")).await }
    });
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while running(&marker) == 0 {
        assert!(std::time::Instant::now() < until, "the daemon never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = call.await.expect("joined").expect("ran");
    assert_eq!(out(&v), "started\n", "{v}");
    assert_eq!(running(&marker), 0, "a daemon outlived its call");
    // A cancelled call: the whole tree goes.
    let marker = format!("marker{:x}", fastrand::u64(..));
    let c = ctx("s");
    let cancel = c.cancel.clone();
    let call = k.exec.call(json!({"script": format!("sleep 300; echo {marker}")}), c);
    let handle = tokio::spawn(call);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while running(&marker) == 0 {
        assert!(std::time::Instant::now() < until, "the call never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let e = handle.await.expect("joined").expect_err("cancelled");
    assert_eq!(e.kind, swarm_core::FailureKind::Cancelled);
    assert_eq!(running(&marker), 0, "the cancelled call's process lives on");
    // Dropped mid-call, as the worker drops a cancelled or timed-out call's future: the tree
    // and its cgroups go all the same.
    let sandbox = Arc::new(Sandbox::probe().await.expect("bwrap"));
    let prefix = sandbox.group_prefix().to_owned();
    let exec = Exec::new(sandbox, Workspaces::new(&k.root, Duration::from_secs(60)).expect("ws"), Limits::default());
    let marker = format!("marker{:x}", fastrand::u64(..));
    let handle = tokio::spawn(exec.call(json!({"script": format!("sleep 300; echo {marker}")}), ctx("s")));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while running(&marker) == 0 {
        assert!(std::time::Instant::now() < until, "the call never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.abort();
    let _ = handle.await;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while (running(&marker) > 0 || !cgroups_of(&prefix).is_empty()) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running(&marker), 0, "a dropped call's process lives on");
    assert_eq!(cgroups_of(&prefix), Vec::<std::path::PathBuf>::new(), "a dropped call's cgroups are left");
}

/// The cgroups whose names start with `prefix` (a sandbox's: `Sandbox::group_prefix`).
fn cgroups_of(prefix: &str) -> Vec<std::path::PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_at_once_all_succeed_and_leave_nothing_behind() {
    let k = kit(Limits::default()).await;
    // Its own sandbox, so that its cgroups are told apart from other tests'.
    let sandbox = Arc::new(Sandbox::probe().await.expect("bwrap"));
    let prefix = sandbox.group_prefix().to_owned();
    let exec =
        Arc::new(Exec::new(sandbox, Workspaces::new(&k.root, Duration::from_secs(60)).expect("ws"), Limits::default()));
    let marker = format!("many{:x}", fastrand::u64(..));
    let calls = (0..200).map(|i| {
        let (exec, script) = (exec.clone(), format!("print(1)  # {marker}"));
        tokio::spawn(async move { exec.call(json!({"cmd": ["python3", "-c", script]}), ctx(&format!("c{i}"))).await })
    });
    for call in futures_util::future::join_all(calls).await {
        let v = call.expect("joined").expect("ran");
        assert_eq!((v["exit_code"].as_i64(), out(&v)), (Some(0), "1\n"), "{v}");
    }
    assert_eq!(running(&marker), 0, "processes of the calls left");
    let ours = || cgroups_of(&prefix);
    // Removed off the async threads once their last process is reaped: shortly after.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !ours().is_empty() && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ours(), Vec::<std::path::PathBuf>::new(), "cgroups left");
}

#[tokio::test]
async fn file_tools_work_in_the_workspace_and_nowhere_else() {
    let k = kit(Limits::default()).await;
    let wrote = k.file("write_file", json!({"path": "src/lib.py", "content": "x = 1\n"})).await.expect("written");
    assert_eq!(wrote["bytes"], 6);
    k.file("write_file", json!({"path": "src/lib.py", "content": "y = 2\n", "append": true})).await.expect("appended");
    let read = k.file("read_file", json!({"path": "src/lib.py"})).await.expect("read");
    assert_eq!(read["content"], "x = 1\ny = 2\n");
    // exec sees what the file tools wrote, and the other way round.
    assert_eq!(
        out(&sh(&k, "python3 -c 'import sys; sys.path.insert(0, \"src\"); import lib; print(lib.x + lib.y)'").await),
        "3\n"
    );
    let listed = k.file("list_files", json!({})).await.expect("listed");
    let names: Vec<&str> =
        listed["entries"].as_array().expect("entries").iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(names.contains(&"src") && names.contains(&"src/lib.py"), "{listed}");
    k.file("delete_file", json!({"path": "src"})).await.expect("deleted");
    assert!(k.file("read_file", json!({"path": "src/lib.py"})).await.is_err());
    // Outside: refused early, or led nowhere by a planted link.
    for path in ["/etc/passwd", "../x", "a/../../x", ""] {
        let e = k.file("read_file", json!({"path": path})).await.expect_err("refused");
        assert!(e.message.contains("args.path"), "{path}: {e}");
    }
    let host_file = k.root.join("host-secret.txt");
    std::fs::write(&host_file, "top secret").expect("host file");
    sh(&k, &format!("ln -s {} planted; ln -s /proc/self/root/etc/hostname host", host_file.display())).await;
    for path in ["planted", "host"] {
        let r = k.file("read_file", json!({"path": path})).await;
        assert!(
            r.as_ref().map_or(true, |v| !v["content"].as_str().unwrap_or("").contains("top secret")),
            "{path}: {r:?}"
        );
    }
    let r = k.file("write_file", json!({"path": "planted", "content": "overwritten"})).await;
    assert_eq!(std::fs::read_to_string(&host_file).expect("host file"), "top secret", "{r:?}");
    assert!(k.file("delete_file", json!({"path": "."})).await.is_err(), "the workspace itself is not deleted");
}

/// `tool: exec` as a plain subtask of a run: its structured result is the output; with
/// `check: true` a failing command fails the subtask (permanently, not retried) with what
/// happened; `CancelRun` ends a running sandbox's whole tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_subtasks_run_fail_and_cancel_through_the_cluster() {
    use swarm_cli::embedded::{Embedded, EmbeddedOptions};
    use swarm_core::{RunSpec, SubtaskSpec};
    use swarm_proto::pb;
    let k = kit(Limits::default()).await;
    let marker = format!("marker{:x}", fastrand::u64(..));
    let mut tools = swarm_worker::tools::ToolRegistry::builtin();
    let exec = Exec::new(
        Arc::new(Sandbox::probe().await.expect("bwrap")),
        Workspaces::new(&k.root, Duration::from_secs(3600)).expect("ws"),
        Limits::default(),
    );
    tools.register(Arc::new(exec));
    let cluster =
        Embedded::start(EmbeddedOptions { workers: 1, slots: 8, tools: Some(Arc::new(tools)), ..Default::default() })
            .await
            .expect("cluster");
    let mut c = swarm_cli::client::connect(&cluster.url()).await.expect("client");
    let spec = RunSpec::new(
        "exec-run",
        vec![
            SubtaskSpec::tool("ok", "exec", json!({"script": "print('hi')", "lang": "python"})),
            SubtaskSpec::tool("bad", "exec", json!({"script": "echo broken >&2; exit 4", "check": true})),
        ],
    );
    let run_id = swarm_tests::harness::submit(&mut c, &spec).await.expect("submit");
    let run = swarm_tests::harness::wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    let by_id = |id: &str| run.subtasks.iter().find(|s| s.id == id).expect("subtask").clone();
    let ok: Value = serde_json::from_str(&by_id("ok").output_json).expect("json");
    assert_eq!((ok["exit_code"].as_i64(), ok["stdout"].as_str()), (Some(0), Some("hi\n")), "{ok}");
    let bad = by_id("bad");
    assert_eq!(bad.state, pb::SubtaskState::Failed as i32);
    assert_eq!(bad.attempt, 1, "a permanent failure is not retried");
    assert!(bad.error_message.contains("\"exit_code\":4") && bad.error_message.contains("broken"), "{bad:?}");
    // Cancelled while it runs: nothing of it is left.
    let spec = RunSpec::new(
        "exec-cancel",
        vec![SubtaskSpec::tool("long", "exec", json!({"script": format!("sleep 300; echo {marker}")}))],
    );
    let run_id = swarm_tests::harness::submit(&mut c, &spec).await.expect("submit");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while running(&marker) == 0 {
        assert!(std::time::Instant::now() < until, "the sandbox never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.cancel_run(pb::CancelRunRequest { run_id: run_id.clone(), reason: "test".into() }).await.expect("cancel");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while running(&marker) > 0 {
        assert!(std::time::Instant::now() < until, "the cancelled sandbox lives on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop().await;
}

/// Where bubblewrap is missing, a worker says exactly that at start and serves on without
/// `exec` (a run that needs it is told no worker offers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_the_worker_says_what_is_missing_and_serves_on() {
    let dir = std::env::temp_dir().join(format!("swarm-nobwrap-{:x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    let spec = dir.join("echo.yaml");
    std::fs::write(&spec, "name: no-bwrap\nsubtasks:\n  - {id: a, tool: echo, args: {text: hi}}\n").expect("spec");
    let out = tokio::process::Command::new(swarm_tests::process::swarm_bin().expect("swarm"))
        .args(["run", &spec.display().to_string(), "--json"])
        .env("PATH", "/nonexistent")
        .kill_on_drop(true)
        .output()
        .await
        .expect("swarm run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the sandboxed `exec` tool is off: bubblewrap (`bwrap`) is not installed"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP server on loopback answering every request with `hello`; its port.
async fn hello_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello").await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_opened_by_the_spec_and_reaches_only_what_the_egress_policy_permits() {
    use swarm_worker::tools::egress::{Cidr, EgressPolicy};
    let k = kit(Limits::default()).await;
    let port = hello_server().await;
    let sandbox = Arc::new(Sandbox::probe().await.expect("bwrap"));
    let ws = || Workspaces::new(&k.root, Duration::from_secs(60)).expect("ws");
    let loopback: Cidr = "127.0.0.1/32".parse().expect("cidr");
    let open = Exec::new(sandbox.clone(), ws(), Limits::default())
        .with_egress(Arc::new(EgressPolicy { allow: vec![loopback] }));
    let public_only =
        Exec::new(sandbox.clone(), ws(), Limits::default()).with_egress(Arc::new(EgressPolicy::public_only()));
    let fetch = format!(
        "import urllib.request\ntry:\n    print(urllib.request.urlopen('http://127.0.0.1:{port}/x', timeout=5).read().decode())\nexcept Exception as e:\n    print('ERR', e)"
    );
    // HTTPS goes by CONNECT: the tunnel opens, and bytes pass both ways.
    let tunnel = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', 3128), timeout=5)\ns.sendall(b'CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n')\nprint(s.recv(100).split(b'\\r\\n')[0].decode())\ns.sendall(b'GET / HTTP/1.1\\r\\n\\r\\n')\nprint(s.recv(1000).decode().split('\\r\\n')[-1])"
    );
    let run = |exec: &Exec, script: &str, network: bool| {
        exec.call(json!({"script": script, "lang": "python", "network": network}), ctx("net"))
    };
    let v = run(&open, &fetch, true).await.expect("ran");
    assert_eq!(out(&v), "hello\n", "{v}");
    let v = run(&open, &tunnel, true).await.expect("ran");
    assert_eq!(out(&v), "HTTP/1.1 200 Connection established\nhello\n", "{v}");
    // Not asked for: no network at all (no proxy, the sandbox's own loopback only).
    let v = run(&open, &fetch, false).await.expect("ran");
    assert!(out(&v).starts_with("ERR"), "{v}");
    // Under the default policy, loopback (the coordinator, etcd) is refused by the proxy.
    let v = run(&public_only, &fetch, true).await.expect("ran");
    assert!(out(&v).starts_with("ERR") && out(&v).contains("403"), "{v}");
    // A worker that offers no network says so.
    let e = k.exec.call(json!({"cmd": ["true"], "network": true}), ctx("net")).await.expect_err("no network here");
    assert!(e.message.contains("no network"), "{}", e.message);
    let e = k.exec.call(json!({"cmd": ["true"], "network": "yes"}), ctx("net")).await.expect_err("a bool");
    assert!(e.message.contains("args.network"), "{}", e.message);
    // Nothing of the proxies is left.
    let dir = std::env::temp_dir().join(format!("swarm-exec-proxy-{}", std::process::id()));
    let left: Vec<_> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "{left:?}");
}
