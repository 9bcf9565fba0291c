//! Artifacts between subtasks, against a real etcd, worker processes with real bubblewrap and
//! the coordinators' payload store: what a subtask declares reaches its dependents on whatever
//! worker they run, read-only, listed with size and SHA-256 and downloadable as stored; what
//! would leak or overflow (a climbing pattern, a symlink to a host file, 1 GB against a 100 MB
//! quota) fails with a precise error and the workers serve on.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_tests::harness::{submit, wait_done};
use swarm_tests::proc_cluster::ProcCluster;
use swarm_tests::process::swarm_bin;

fn exec(id: &str, script: &str, artifacts: &[&str]) -> SubtaskSpec {
    let mut s = SubtaskSpec::tool(id, "exec", json!({"script": script, "check": true}));
    s.outputs.artifacts = artifacts.iter().map(|a| a.to_string()).collect();
    s
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn download(
    c: &mut swarm_cli::client::Client,
    run: &str,
    subtask: &str,
    path: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let req = pb::GetArtifactRequest { run_id: run.into(), subtask_id: subtask.into(), path: path.into() };
    let mut stream = c.get_artifact(req).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_reach_dependents_read_only_and_what_would_leak_or_overflow_fails_alone() {
    let _serial = crate::failover::SERIAL.lock().await;
    let mut pc = ProcCluster::start(1, 0, 0, Duration::from_secs(2)).await.expect("etcd");
    pc.add_coordinator_args(&["--max-artifact-bytes".into(), "100MB".into()]).expect("coordinator");
    let (url, _) = pc.wait_leader(None, Duration::from_secs(15)).await.expect("leader");
    pc.wait_serving(&url, Duration::from_secs(15)).await.expect("serving");
    let root = std::env::temp_dir().join(format!("swarm-artifacts-test-{:x}", fastrand::u64(..)));
    for w in ["w0", "w1"] {
        let dir = root.join(w).display().to_string();
        // Files of 1 GB allowed in the sandbox: the artifact quota is what stops them here.
        let args = ["--workspace-dir", &dir, "--exec-file-size", "2GiB", "--exec-workspace-size", "4GiB"];
        pc.add_worker_args(w, &args.map(String::from)).expect("worker");
    }
    pc.wait_workers(2, Duration::from_secs(15)).await.expect("workers");
    let mut c = pc.client(&url).await.expect("client");

    // Refused at submission, by field, nothing stored.
    let climbing = RunSpec::new("climb", vec![exec("x", "true", &["ok.md", "../../x"])]);
    let e = submit(&mut c, &climbing).await.expect_err("a climbing pattern");
    assert!(e.to_string().contains("subtasks[0].outputs.artifacts[1]"), "{e}");

    let consumer = "cat inputs/a/report.md; echo; cat inputs/a/data/*.csv; sha256sum inputs/b/blob.bin; ls inputs/a; \
                    (echo tampered > inputs/a/report.md) 2>/dev/null && echo WRITABLE || echo READ-ONLY; \
                    echo done > summary.txt";
    let spec = RunSpec::new(
        "artifacts",
        vec![
            exec(
                "a",
                "mkdir -p data; printf alpha > report.md; printf '1,2\\n' > data/x.csv; printf '3,4\\n' > data/y.csv; \
                 printf kept-here > notes.txt",
                &["report.md", "data/*.csv"],
            ),
            // More than one chunk (256 KiB) of bytes that do not compress.
            exec("b", "head -c 300000 /dev/urandom > blob.bin", &["blob.bin"]),
            exec("c", consumer, &["summary.txt"]).after(["a", "b"]),
            exec("leak", "ln -s /etc/passwd leak.txt", &["leak.txt"]),
            exec("huge", "truncate -s 1G huge.bin", &["huge.bin"]),
            exec("missing", "true", &["never-written.md"]),
            exec("still", "echo serving", &[]).after(["c"]),
        ],
    );
    let run_id = submit(&mut c, &spec).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(60)).await.expect("done");
    let by_id = |id: &str| run.subtasks.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("{id}")).clone();
    let state = |id: &str| pb::SubtaskState::try_from(by_id(id).state).expect("state");
    for id in ["a", "b", "c", "still"] {
        assert_eq!(state(id), pb::SubtaskState::Succeeded, "{id}: {:?}\n{}", by_id(id), pc.logs());
    }

    // Listed with sizes and hashes, only what was declared (not notes.txt).
    let a = by_id("a");
    let listed: Vec<(&str, u64)> = a.artifacts.iter().map(|x| (x.path.as_str(), x.size)).collect();
    assert_eq!(listed, [("data/x.csv", 4), ("data/y.csv", 4), ("report.md", 5)]);
    for (artifact, contents) in a.artifacts.iter().zip([&b"1,2\n"[..], b"3,4\n", b"alpha"]) {
        assert_eq!(artifact.sha256, hex(contents), "{}", artifact.path);
        assert_eq!(download(&mut c, &run_id, "a", &artifact.path).await.expect("download"), contents);
    }
    let blob = &by_id("b").artifacts[0];
    let bytes = download(&mut c, &run_id, "b", "blob.bin").await.expect("download");
    assert_eq!((bytes.len() as u64, hex(&bytes)), (300_000, blob.sha256.clone()));

    // The dependent saw them all, under inputs/<subtask>/, and could not change them.
    let out: serde_json::Value = serde_json::from_str(&by_id("c").output_json).expect("exec result");
    let stdout = out["stdout"].as_str().expect("stdout");
    assert!(stdout.starts_with("alpha\n1,2\n3,4\n"), "{stdout}");
    assert!(stdout.contains(&format!("{}  inputs/b/blob.bin", blob.sha256)), "{stdout}");
    assert!(stdout.contains("READ-ONLY") && !stdout.contains("WRITABLE"), "{stdout}");
    assert!(!stdout.contains("notes.txt"), "an undeclared file was handed on: {stdout}");

    // What would leak or overflow failed by itself, saying why.
    let fails = |id: &str, needle: &str| {
        let s = by_id(id);
        assert_eq!(state(id), pb::SubtaskState::Failed, "{id}: {s:?}");
        assert!(s.error_message.contains(needle), "{id}: {}", s.error_message);
        assert!(s.artifacts.is_empty(), "{id} handed something on");
    };
    fails("leak", "not a regular file");
    fails("huge", "max_artifact_bytes");
    fails("missing", "`never-written.md` was not written");
    for (sub, path) in [("a", "notes.txt"), ("a", "../../x"), ("leak", "leak.txt"), ("nope", "report.md")] {
        let e = download(&mut c, &run_id, sub, path).await.expect_err("not an artifact");
        assert_eq!(e.code(), tonic::Code::NotFound, "{sub}/{path}: {e:?}");
    }
    // Nothing of the 1 GB file went anywhere: the worker refused it before reading.
    let stored = walk_size(&pc.dir.0.join("swarm-payloads"));
    assert!(stored < 10 << 20, "{stored} bytes in the payload store");
    let workers = c.list_workers(pb::ListWorkersRequest::default()).await.expect("workers").into_inner().workers;
    assert_eq!(workers.len(), 2, "both workers serve on");

    // The CLI lists and downloads them.
    let bin = swarm_bin().expect("swarm");
    let out = std::process::Command::new(&bin)
        .args(["get", &run_id, "--artifacts", "--json", "--addr", &url])
        .output()
        .expect("swarm get");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let paths: Vec<String> = j["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .map(|a| format!("{}/{}", a["subtask_id"], a["path"]))
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    let file = root.join("report.md");
    let status = std::process::Command::new(&bin)
        .args(["artifact", &run_id, "a", "report.md", "-o"])
        .arg(&file)
        .args(["--addr", &url])
        .status()
        .expect("swarm artifact");
    assert!(status.success());
    assert_eq!(std::fs::read(&file).expect("downloaded"), b"alpha");
    let _ = std::fs::remove_dir_all(&root);
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
