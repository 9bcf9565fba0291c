//! The `swarm` client commands at process level, as a newcomer meets them: `get --subtasks`
//! (JSON and the human listing), output into a closed pipe, and a run that names a tool no
//! worker offers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use swarm_tests::etcd::free_port;
use swarm_tests::process::{SwarmProcess, swarm_bin};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `swarm up` on a free port, with `extra` flags; returns it and its URL once it serves.
pub(crate) async fn up(dir: &Path, extra: &[&str]) -> (SwarmProcess, String) {
    let port = free_port().expect("port");
    let mut args =
        vec!["up".to_owned(), "--listen".into(), format!("127.0.0.1:{port}"), "--workers".into(), "2".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let up = SwarmProcess::spawn("up", &args, dir).expect("spawn");
    let url = format!("http://127.0.0.1:{port}");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while swarm_cli::client::connect(&url).await.is_err() {
        assert!(tokio::time::Instant::now() < until, "swarm up does not serve: {}", up.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (up, url)
}

/// Stops `swarm up` gracefully (it must exit 0) and removes the test's directory.
pub(crate) async fn stop(mut up: SwarmProcess, dir: &Path) {
    up.signal("TERM").expect("TERM");
    assert_eq!(up.wait_exit(Duration::from_secs(20)).await.expect("exit"), Some(0), "{}", up.log_text());
    let _ = std::fs::remove_dir_all(dir);
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swarm-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).display().to_string()
}

/// Runs `swarm ARGS` to the end; returns (exit code, stdout, stderr).
pub(crate) async fn swarm(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(swarm_bin().expect("swarm"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("swarm runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_subtasks_lists_every_subtask_with_its_times_as_json_and_as_a_table() {
    let dir = temp_dir("get");
    let (up, url) = up(&dir, &[]).await;
    let (code, out, err) = swarm(&["submit", &example("small.yaml"), "--wait", "--json", "--addr", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    let submitted: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert!(submitted.get("subtasks").is_none(), "no subtasks without --subtasks");
    let run_id = submitted["run_id"].as_str().expect("run_id").to_owned();

    let (code, out, err) = swarm(&["get", &run_id, "--subtasks", "--json", "--addr", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    let run: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let subtasks = run["subtasks"].as_array().expect("a subtasks array");
    let ids: Vec<&str> = subtasks.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    for id in ["plan", "search-papers", "search-code", "flaky-source", "summarize"] {
        assert!(ids.contains(&id), "{id} listed");
    }
    let submitted_ms = run["wall_ms"].as_f64().expect("wall_ms");
    for s in subtasks {
        let id = s["id"].as_str().unwrap_or("?");
        assert_eq!(s["state"], "SUCCEEDED", "{s}");
        assert!(s["worker"].as_str().is_some_and(|w| !w.is_empty()), "{s}");
        let [ready, started, finished, waited, duration] =
            ["ready_ms", "started_ms", "finished_ms", "waited_ms", "duration_ms"]
                .map(|k| s[k].as_u64().unwrap_or_else(|| panic!("{id}: {k} is a number: {s}")));
        assert!(ready > 1_700_000_000_000, "{id}: Unix ms, not µs or s: {ready}");
        assert!(ready <= started && started <= finished, "{id}: ready ≤ started ≤ finished: {s}");
        assert_eq!(waited, started - ready, "{id}: waited is ready → started");
        assert!(duration <= finished - started, "{id}: the last attempt lies within the subtask's span");
        assert!((finished - ready) as f64 <= submitted_ms + 1_000.0, "{id}: within the run's wall time");
    }
    let by_id = |id: &str| subtasks.iter().find(|s| s["id"] == id).expect(id);
    // `flaky-source` fails once by construction, then succeeds on its second attempt.
    let flaky = by_id("flaky-source");
    assert_eq!(flaky["attempt"], 2, "{flaky}");
    assert_eq!(flaky["error_kind"], "transient", "the first attempt's failure is kept: {flaky}");
    // `search-papers` sleeps 120 ms.
    assert!(by_id("search-papers")["duration_ms"].as_u64().is_some_and(|d| d >= 120));
    assert_eq!(by_id("summarize")["depends_on"].as_array().map(Vec::len), Some(3));

    let (code, out, err) = swarm(&["get", &run_id, "--subtasks", "--addr", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    let header = out.lines().find(|l| l.trim_start().starts_with("ID")).expect("a table header");
    for column in ["STATE", "ATTEMPT", "WORKER", "WAIT", "DURATION", "ERROR"] {
        assert!(header.contains(column), "{header}");
    }
    let row = out.lines().find(|l| l.trim_start().starts_with("search-papers ")).expect("a row per subtask");
    assert!(row.contains("SUCCEEDED") && row.contains(" ms"), "{row}");

    stop(up, &dir).await;
}

/// Runs `swarm ARGS` with its stdout a pipe whose reader is already gone.
fn into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(swarm_bin().expect("swarm"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swarm runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_end_quietly_when_their_output_pipe_closes() {
    let dir = temp_dir("pipe");
    let (up, url) = up(&dir, &[]).await;
    let (code, out, err) = swarm(&["submit", &example("small.yaml"), "--wait", "--addr", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    let run_id = out.lines().find_map(|l| l.strip_prefix("run ")).and_then(|l| l.split_whitespace().next());
    let run_id = run_id.expect("the summary names the run").to_owned();

    for args in [
        vec!["get", run_id.as_str(), "--subtasks", "--addr", &url],
        vec!["get", run_id.as_str(), "--subtasks", "--json", "--addr", &url],
        vec!["runs", "--addr", &url],
        vec!["watch", run_id.as_str(), "--addr", &url],
        vec!["example", "swarm"],
    ] {
        let (code, stderr) = into_closed_pipe(&args);
        assert!(!stderr.contains("panicked"), "swarm {args:?} panicked: {stderr}");
        assert!(matches!(code, Some(0 | 141)), "swarm {args:?}: exit {code:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "swarm {args:?} is quiet: {stderr}");
    }
    stop(up, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_no_worker_offers_is_said_at_once_and_fails_after_the_no_worker_timeout() {
    let dir = temp_dir("typo");
    let (up, url) = up(&dir, &["--no-worker-timeout", "3s"]).await;
    let spec = dir.join("typo.yaml");
    std::fs::write(
        &spec,
        "name: typo\nsubtasks:\n  - {id: a, tool: nosuchtool, args: {}}\n  - {id: b, tool: echo, args: {text: after}, depends_on: [a]}\n  - {id: c, tool: echo, args: {text: fine}}\n",
    )
    .expect("write");
    let mut submit = tokio::process::Command::new(swarm_bin().expect("swarm"))
        .args(["submit", &spec.display().to_string(), "--wait", "--json", "--addr", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("submit");
    let stderr = submit.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // The warning arrives well before the 3 s limit ends the run: it is read while the
    // process still runs (no exit status yet).
    let warning = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("warning") {
                return line;
            }
        }
        panic!("submit ended without a warning");
    })
    .await
    .expect("a warning line in time");
    assert!(warning.contains("no connected worker offers tool `nosuchtool`"), "{warning}");
    assert!(submit.try_wait().expect("status").is_none(), "said before the run ended");

    let out = tokio::time::timeout(Duration::from_secs(30), submit.wait_with_output())
        .await
        .expect("submit --wait returns")
        .expect("output");
    assert_eq!(out.status.code(), Some(2), "the run ended without succeeding");
    let run: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(run["state"], "FAILED");
    let run_id = run["run_id"].as_str().expect("run_id");
    let (_, out, _) = swarm(&["get", run_id, "--subtasks", "--json", "--addr", &url]).await;
    let run: Value = serde_json::from_str(out.trim()).expect("json");
    let by_id = |id: &str| run["subtasks"].as_array().and_then(|s| s.iter().find(|s| s["id"] == id)).expect(id).clone();
    let a = by_id("a");
    assert_eq!(a["state"], "FAILED");
    assert_eq!(a["error_kind"], "permanent");
    assert!(a["error"].as_str().is_some_and(|e| e.starts_with("no connected worker offers tool `nosuchtool`")), "{a}");
    assert_eq!(a["attempt"], 0, "never dispatched");
    assert_eq!(by_id("b")["state"], "SKIPPED");
    assert_eq!(by_id("c")["state"], "SUCCEEDED");

    stop(up, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_policy_that_would_break_arithmetic_is_refused_and_the_cluster_goes_on() {
    let dir = temp_dir("jitter");
    let (up, url) = up(&dir, &[]).await;
    let spec = dir.join("c1.yaml");
    // Once this stopped the cluster for good: the first retry panicked in the run manager.
    std::fs::write(
        &spec,
        "name: c1\nretry: {jitter: 1e300}\nsubtasks:\n  - {id: f, tool: flaky, args: {fail_times: 2, ms: 10}}\n",
    )
    .expect("write");
    let (code, _, err) = swarm(&["submit", &spec.display().to_string(), "--wait", "--addr", &url]).await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("InvalidArgument") && err.contains("retry.jitter"), "{err}");
    // Values no YAML or JSON file carries come straight over gRPC.
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    let mut bad = swarm_core::RunSpec::new("c2", vec![swarm_tests::proc_cluster::echo("f")]);
    bad.subtasks[0].retry = Some(swarm_core::retry::RetrySpec {
        backoff_coefficient: Some(f64::NAN),
        maximum_attempts: Some(1000),
        ..Default::default()
    });
    let status = c
        .submit_run(swarm_proto::pb::SubmitRunRequest {
            spec: Some((&bad).into()),
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = swarm_proto::status::field_violations(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["subtasks[0].retry.backoff_coefficient", "subtasks[0].retry.maximum_attempts"]);
    // The same cluster still runs work, retries included.
    let (code, _, err) = swarm(&["submit", &example("small.yaml"), "--wait", "--addr", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    stop(up, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_up_runs_agents_with_the_script_it_was_given() {
    let dir = temp_dir("up-script");
    let script = example("agents/research-swarm.script.yaml");
    // Without a script no worker offers the `scripted` model: the flag is what makes it work.
    let (up, url) = up(&dir, &["--script", &script, "--no-worker-timeout", "5s"]).await;
    let (code, out, err) =
        swarm(&["submit", &example("agents/research-swarm.yaml"), "--wait", "--json", "--addr", &url]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let run: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
    assert_eq!(run["subagents"], 3, "{run}");
    stop(up, &dir).await;
}
