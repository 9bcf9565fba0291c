//! The runnable examples in `examples/agents/`: each spec starts with `# run: swarm run …`, the
//! command that runs it from the repository root; every scripted one is run exactly that way
//! (with `--json` added), and every spec is checked against the limits the coordinator applies.

use std::path::{Path, PathBuf};

use serde_json::Value;
use swarm_tests::process::{pytool, swarm_bin};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

/// (spec file, the arguments after `swarm`) for every spec in examples/agents.
fn runnable() -> Vec<(PathBuf, Vec<String>)> {
    let dir = root().join("examples/agents");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/agents") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let first = text.lines().next().unwrap_or_default();
        if let Some(command) = first.strip_prefix("# run: swarm ") {
            found.push((path, command.split_whitespace().map(str::to_owned).collect()));
        }
    }
    found.sort();
    found
}

fn has_approval(spec: &Path) -> bool {
    let spec = swarm_cli::specs::load(spec).expect("spec");
    spec.subtasks.iter().any(|s| matches!(s.kind, swarm_core::SubtaskKind::Approval(_)))
}

#[test]
fn every_agent_example_names_a_command_whose_files_exist_and_whose_spec_is_valid() {
    let examples = runnable();
    let names: Vec<String> =
        examples.iter().map(|(p, _)| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    for expected in ["research-swarm.yaml", "openai-swarm.yaml", "mcp-time.yaml", "coding-swarm.yaml"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    for (path, args) in &examples {
        assert_eq!(args[0], "run", "{}: the command is `swarm run …`", path.display());
        // The spec and every file a flag names, relative to the repository root.
        assert_eq!(root().join(&args[1]), *path, "{}: the command runs another file", path.display());
        for pair in args[2..].windows(2) {
            if ["--script", "--models", "--mcp"].contains(&pair[0].as_str()) {
                assert!(root().join(&pair[1]).is_file(), "{}: {} {} does not exist", path.display(), pair[0], pair[1]);
            }
        }
        let spec = swarm_cli::specs::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        swarm_core::Dag::build(&spec, &swarm_core::spec::Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_agent_examples_run_with_the_command_they_give() {
    // `python3` of the MCP example is the one scripts/install-pytools set up (mcp-server-time).
    let pytools = pytool("python3").parent().expect("bin").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(pytools).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let mut ran = Vec::new();
    // Workspaces of the `exec` examples, inspected below.
    let workspaces = std::env::temp_dir().join(format!("swarm-examples-ws-{:x}", fastrand::u64(..)));
    for (spec, args) in runnable() {
        if !args.iter().any(|a| a == "--script") {
            continue; // needs a real model endpoint
        }
        if has_approval(&spec) {
            continue; // waits for a person: see the next test
        }
        let out = tokio::process::Command::new(swarm_bin().expect("swarm"))
            .args(&args)
            .arg("--json")
            .current_dir(root())
            .env("PATH", &path)
            .env("SWARM_WORKSPACE_DIR", &workspaces)
            .kill_on_drop(true)
            .output()
            .await
            .expect("swarm run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stdout}\n{stderr}", spec.display());
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(summary["state"], "SUCCEEDED", "{}: {summary}", spec.display());
        ran.push((spec.file_name().unwrap_or_default().to_string_lossy().into_owned(), summary));
    }
    let find = |name: &str| ran.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).expect(name);
    let research = find("research-swarm.yaml");
    assert_eq!(research["subagents"], 3, "{research}");
    assert_eq!(research["agent_tool_calls"], 12, "three subagents × four tool calls: {research}");
    // Token use by model, and the budget left (the spec sets max_tokens: 100000).
    let scripted = &research["tokens_by_model"]["scripted"];
    let used = research["tokens"].as_u64().expect("tokens");
    assert!(used > 0, "{research}");
    assert_eq!(
        scripted["input_tokens"].as_u64().zip(scripted["output_tokens"].as_u64()).map(|(i, o)| i + o),
        Some(used)
    );
    assert_eq!(research["token_budget"], 100_000);
    assert_eq!(research["tokens_left"].as_u64(), Some(100_000 - used));
    let time = find("mcp-time.yaml");
    assert_eq!(time["agent_tool_calls"], 2, "{time}");
    // The coding swarm: three coders, two writes and one sandboxed test run each, in their own
    // workspaces, where Python's byte code shows the tests ran (and they pass run again here).
    let coding = find("coding-swarm.yaml");
    assert_eq!((coding["subagents"].as_u64(), coding["agent_tool_calls"].as_u64()), (Some(3), Some(9)), "{coding}");
    let run_dir = workspaces.join(coding["run_id"].as_str().expect("run id"));
    for module in ["alpha", "beta", "gamma"] {
        let dir = std::fs::read_dir(&run_dir)
            .expect("the run's workspaces")
            .flatten()
            .map(|e| e.path())
            .find(|d| d.join(format!("{module}.py")).is_file())
            .unwrap_or_else(|| panic!("no workspace holds {module}.py"));
        let compiled = std::fs::read_dir(dir.join("__pycache__")).into_iter().flatten().flatten().count();
        assert!(compiled > 0, "{module}'s tests never ran in {}", dir.display());
        let again = std::process::Command::new("python3").arg(format!("test_{module}.py")).current_dir(&dir).output();
        assert!(again.is_ok_and(|o| o.status.success()), "{module}'s tests fail");
    }
    // The final step got every coder's files as artifacts (through the payload store, under
    // inputs/lead/) and ran the whole suite there.
    let report = std::fs::read_to_string(run_dir.join("test-all/test-report.txt")).expect("test-all's report");
    let files = std::fs::read_to_string(run_dir.join("test-all/files.txt")).expect("test-all's listing");
    for module in ["alpha", "beta", "gamma"] {
        assert!(report.contains(&format!("{module}: tests pass")), "{report}");
        assert!(files.contains(&format!("{module}.py")) && files.contains(&format!("test_{module}.py")), "{files}");
    }
    let _ = std::fs::remove_dir_all(&workspaces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_example_waits_for_swarm_signal_from_another_process() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (spec, mut args) = runnable().into_iter().find(|(p, _)| p.ends_with("approval.yaml")).expect("approval.yaml");
    assert!(has_approval(&spec));
    // Its own port, free here.
    let port = swarm_tests::etcd::free_port().expect("port");
    let at = args.iter().position(|a| a == "--listen").expect("the command names --listen");
    args[at + 1] = format!("127.0.0.1:{port}");
    let mut run = tokio::process::Command::new(swarm_bin().expect("swarm"))
        .args(&args)
        .arg("--json")
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("swarm run");
    // "swarm run: run ID on URL (until it ends)"
    let mut lines = BufReader::new(run.stderr.take().expect("stderr")).lines();
    let (run_id, url) = loop {
        let line = lines.next_line().await.expect("stderr").expect("swarm run says where its run is");
        if let Some(rest) = line.strip_prefix("swarm run: run ") {
            let mut words = rest.split_whitespace();
            let id = words.next().expect("id").to_owned();
            assert_eq!(words.next(), Some("on"));
            break (id, words.next().expect("url").to_owned());
        }
    };
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    // The approval is asked for once the swarm has answered; `swarm signal` decides it.
    let mut c = swarm_cli::client::connect(&url).await.expect("client");
    swarm_tests::harness::wait_for_events(&mut c, &run_id, std::time::Duration::from_secs(60), |evs| {
        evs.iter().any(|e| matches!(e.event, Some(swarm_proto::pb::run_event::Event::ApprovalRequested(_))))
    })
    .await
    .expect("asked");
    let out = tokio::process::Command::new(swarm_bin().expect("swarm"))
        .args([
            "signal",
            &run_id,
            "ok-to-publish",
            "--approve",
            "--data",
            r#"{"by": "test"}"#,
            "--addr",
            &url,
            "--json",
        ])
        .output()
        .await
        .expect("swarm signal");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let told: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(told["decision"], "approved", "{told}");
    assert_eq!(told["output"]["by"], "test", "{told}");
    let out = run.wait_with_output().await.expect("swarm run ends");
    assert_eq!(out.status.code(), Some(0));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["state"], "SUCCEEDED", "{summary}");
    assert_eq!(summary["tool_calls_completed"], 6, "lead, 3 subagents, the approval, publish: {summary}");
}
