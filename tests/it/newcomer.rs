//! What a newcomer meets with the README and the release binary, each tried as they would:
//! a run that fails says which subtask and why; a mistyped tool is refused at once; a cancelled
//! run's subtasks say so; `swarm run` shows what the run produced; usage errors exit 64; and the
//! small things (a plain `HOST:PORT` address, a port in use, no colour codes in files, wording).
//! Every test runs the `swarm` binary and reads its output and exit code.

use std::time::Duration;

use serde_json::Value;
use swarm_proto::pb;

use crate::cli::{stop, swarm, temp_dir, up};

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[tokio::test]
async fn usage_errors_exit_64_help_exits_0_and_flags_say_what_they_are() {
    for args in [&["get"][..], &["--nope"], &["nope"], &["get", "r-1", "--nope"], &["up", "--workers", "many"]] {
        let (code, _, err) = swarm(args).await;
        assert_eq!(code, Some(64), "swarm {args:?}: {err}");
        assert!(err.contains("error"), "swarm {args:?} says what is wrong: {err}");
    }
    let (code, help, _) = swarm(&["up", "--help"]).await;
    assert_eq!(code, Some(0));
    for flag in ["--listen", "--workers", "--slots"] {
        let line = help.lines().skip_while(|l| !l.trim_start().starts_with(flag)).nth(1).unwrap_or_default();
        assert!(!line.trim().is_empty() && !line.trim_start().starts_with("--"), "{flag} has a description:\n{help}");
    }
    for cmd in ["get", "runs"] {
        let (_, help, _) = swarm(&[cmd, "--help"]).await;
        let line = help.lines().skip_while(|l| !l.trim_start().starts_with("--json")).nth(1).unwrap_or_default();
        assert!(!line.trim().is_empty() && !line.trim_start().starts_with("--"), "{cmd} --json is described:\n{help}");
    }
}

#[tokio::test]
async fn a_spec_file_that_is_no_spec_exits_64_as_bad_usage_does() {
    let dir = temp_dir("nospec");
    let broken = write(&dir, "broken.yaml", "name: broken\nsubtasks:\n  - id: a\n    tool: [echo\n");
    let missing = dir.join("missing.yaml").display().to_string();
    for (file, said) in [(&broken, "parsing"), (&missing, "reading")] {
        let (code, _, err) = swarm(&["run", file]).await;
        assert_eq!(code, Some(64), "swarm run {file}: {err}");
        assert!(err.starts_with(&format!("error: {said} {file}")) && err.matches("error:").count() == 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_tool_is_refused_at_once_with_the_nearest_name() {
    let dir = temp_dir("typo");
    let spec = write(&dir, "typo.yaml", "name: typo\nsubtasks:\n  - id: a\n    tool: ech0\n    args: {text: hi}\n");
    let started = std::time::Instant::now();
    let (code, out, err) = swarm(&["run", &spec]).await;
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "refused at once, not after the wait for a worker");
    assert!(err.contains("subtasks[0].tool: `ech0`") && err.contains("did you mean `echo`?"), "{err}");
    assert_eq!(err.matches("ech0").count(), 1, "said once: {err}");
    assert!(!err.contains('\u{1b}'), "no colour codes into a pipe: {err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_says_which_subtasks_failed_and_why_and_a_run_shows_its_outputs() {
    let dir = temp_dir("failed");
    let spec = write(
        &dir,
        "bad.yaml",
        "name: bad\nretry: {maximum_attempts: 1}\nsubtasks:\n  - id: ok\n    tool: echo\n    args: {text: fine}\n  - id: b1\n    tool: flaky\n    args: {fail_times: 9}\n  - id: b2\n    tool: sleep\n    args: {}\n  - id: after\n    tool: echo\n    args: {text: never}\n    depends_on: [b1]\n",
    );
    let (code, out, err) = swarm(&["run", &spec]).await;
    assert_eq!(code, Some(2), "ended without succeeding: {out}{err}");
    assert!(out.contains("failed: b1 (transient, attempt 1): "), "{out}");
    assert!(out.contains("failed: b2 (permanent, attempt 1): ") && out.contains("ms"), "which argument: {out}");
    assert!(!out.contains("where the wall time went: \n"), "{out}");
    let (code, json, _) = swarm(&["run", &spec, "--json"]).await;
    assert_eq!(code, Some(2));
    let j: Value = serde_json::from_str(json.trim()).expect("one JSON object");
    let failed: Vec<&str> =
        j["failures"].as_array().expect("failures").iter().filter_map(|f| f["id"].as_str()).collect();
    assert_eq!(failed, ["b1", "b2"], "{j}");
    assert!(j["failures"][1]["error"].as_str().is_some_and(|e| e.contains("ms")), "{j}");
    assert_eq!(j["outputs"]["ok"], serde_json::json!({"text": "fine"}), "{j}");

    // A run that succeeds shows what its last subtasks produced (and --json all of it).
    let good = write(
        &dir,
        "good.yaml",
        "name: good\nsubtasks:\n  - id: first\n    tool: echo\n    args: {text: one}\n  - id: last\n    tool: echo\n    args: {text: the answer}\n    depends_on: [first]\n",
    );
    let (code, out, _) = swarm(&["run", &good]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(r#"output of last: {"text":"the answer"}"#), "{out}");
    assert!(!out.contains("output of first"), "only the final subtasks: {out}");
    let (_, json, _) = swarm(&["run", &good, "--json"]).await;
    let j: Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(
        (j["outputs"]["first"]["text"].as_str(), j["outputs"]["last"]["text"].as_str()),
        (Some("one"), Some("the answer"))
    );
    assert_eq!(j["failures"], serde_json::json!([]), "{j}");

    // An orchestrator's merged answer is what research-swarm.yaml is for: shown.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents");
    let (spec, script) = (examples.join("research-swarm.yaml"), examples.join("research-swarm.script.yaml"));
    let (code, out, _) = swarm(&["run", &spec.display().to_string(), "--script", &script.display().to_string()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("output of lead: Compared"), "{out}");

    // A file that does not parse: said once, with where.
    let broken = write(&dir, "broken.yaml", "name: x\nsubtasks:\n  - id: a\n    tool: echo\n    args: {text: [\n");
    let (code, _, err) = swarm(&["run", &broken]).await;
    assert_ne!(code, Some(0));
    assert_eq!(err.matches("error").count(), 1, "one `error:`: {err}");
    assert!(err.contains("broken.yaml") && err.contains("line"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_reads_cancelled_with_attempts_and_its_dependents_skipped_with_why() {
    let dir = temp_dir("cancel");
    let (up_process, url) = up(&dir, &[]).await;
    // The address as --listen takes it: plain HOST:PORT.
    let addr = url.trim_start_matches("http://").to_owned();
    let spec = write(
        &dir,
        "wait.yaml",
        "name: waits\nsubtasks:\n  - id: wait30\n    tool: sleep\n    args: {ms: 30000}\n  - id: next\n    tool: echo\n    args: {text: later}\n    depends_on: [wait30]\n",
    );
    let (code, out, err) = swarm(&["submit", &spec, "--addr", &addr, "--json"]).await;
    assert_eq!(code, Some(0), "a plain HOST:PORT address works: {out}{err}");
    let run_id = serde_json::from_str::<Value>(out.trim()).expect("JSON")["run_id"].as_str().expect("id").to_owned();
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    swarm_tests::harness::wait_for_events(&mut c, &run_id, Duration::from_secs(30), |evs| {
        evs.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::SubtaskStarted(_))))
    })
    .await
    .expect("wait30 runs");
    let (_, text, _) = swarm(&["get", &run_id, "--addr", &addr]).await;
    assert!(text.contains("running for") && !text.contains("outside the subtasks"), "a running run: {text}");
    let (code, out, _) = swarm(&["cancel", &run_id, "--addr", &addr]).await;
    assert_eq!(code, Some(0), "{out}");
    swarm_tests::harness::wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("ended");

    let (code, json, _) = swarm(&["get", &run_id, "--subtasks", "--json", "--addr", &addr]).await;
    assert_eq!(code, Some(2), "cancelled: not a success");
    let j: Value = serde_json::from_str(json.trim()).expect("JSON");
    let sub = |id: &str| j["subtasks"].as_array().and_then(|a| a.iter().find(|s| s["id"] == id)).cloned().expect(id);
    let (wait, next) = (sub("wait30"), sub("next"));
    assert_eq!((wait["state"].as_str(), wait["attempt"].as_u64()), (Some("CANCELLED"), Some(1)), "{wait}");
    assert!(wait["error"].as_str().is_some_and(|e| e.contains("cancelled while attempt 1 ran")), "{wait}");
    assert_eq!(next["state"], "SKIPPED", "{next}");
    assert_eq!(next["error"], "not started: the run was cancelled", "{next}");
    let (_, text, _) = swarm(&["get", &run_id, "--addr", &addr]).await;
    assert!(text.contains("cancelled: wait30 (cancelled, attempt 1)"), "{text}");
    let (_, events, _) = swarm(&["watch", &run_id, "--addr", &addr]).await;
    assert!(events.contains("wait30 cancelled (attempt 1)"), "the watch says it: {events}");

    // A retried subtask that succeeded shows no earlier error in the table; a skipped one says
    // why; a run of milliseconds says milliseconds.
    let mixed = write(
        &dir,
        "mixed.yaml",
        "name: mixed
subtasks:
  - id: retried
    tool: flaky
    args: {fail_times: 1}
    retry: {initial_interval_ms: 1}
  - id: broken
    tool: sleep
    args: {}
  - id: downstream
    tool: echo
    args: {text: x}
    depends_on: [broken]
",
    );
    let (_, out, _) = swarm(&["submit", &mixed, "--wait", "--json", "--addr", &addr]).await;
    let id = serde_json::from_str::<Value>(out.trim()).expect("JSON")["run_id"].as_str().expect("id").to_owned();
    let (_, table, _) = swarm(&["get", &id, "--subtasks", "--addr", &addr]).await;
    let row = |sid: &str| {
        table.lines().find(|l| l.trim_start().starts_with(&format!("{sid} "))).unwrap_or_default().to_owned()
    };
    assert!(row("retried").contains("SUCCEEDED") && !row("retried").contains("flaky"), "{table}");
    assert!(row("downstream").contains("not started: `broken`, which it depends on, failed"), "{table}");
    let wall = table.lines().find(|l| l.trim_start().starts_with("wall ")).unwrap_or_default();
    assert!(wall.contains(" ms") && !wall.contains("0.0 s"), "{table}");

    // Wording: one call is "1 call ok".
    let one = write(&dir, "one.yaml", "name: one\nsubtasks:\n  - id: a\n    tool: echo\n    args: {text: x}\n");
    let (_, out, _) = swarm(&["submit", &one, "--wait", "--addr", &addr]).await;
    assert!(!out.contains("1 calls"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let (_, events, _) = swarm(&["watch", &id, "--addr", &addr]).await;
    assert!(events.contains("1 call ok"), "{events}");

    // The port is taken: said with the address and the flag.
    let (code, _, err) = swarm(&["up", "--listen", &addr]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
    // Logs written to a file carry no colour codes.
    let log = up_process.log_text();
    assert!(log.contains("coordinator serving") && !log.contains('\u{1b}'), "{log}");
    assert!(!log.contains("addr=Some("), "{log}");
    stop(up_process, &dir).await;
}
