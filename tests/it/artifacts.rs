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

/// A worker stream opened by hand as `token`, offering `tools`.
struct RawWorker {
    tx: tokio::sync::mpsc::Sender<pb::WorkerMessage>,
    inbound: tonic::Streaming<pb::CoordinatorMessage>,
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

async fn worker_client(url: &str) -> pb::worker_service_client::WorkerServiceClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_owned()).expect("url").connect().await.expect("connect");
    pb::worker_service_client::WorkerServiceClient::new(channel)
}

impl RawWorker {
    async fn connect(url: &str, token: &str, worker_id: &str, tools: &[&str]) -> Self {
        let hello = pb::WorkerHello {
            worker_id: worker_id.into(),
            slots: 4,
            tools: tools.iter().map(|t| pb::ToolInfo { name: t.to_string(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Hello(hello)) }).await.expect("queued");
        let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), token);
        let inbound = worker_client(url).await.connect(request).await.expect("joined").into_inner();
        Self { tx, inbound }
    }

    /// The next assignments the coordinator sends.
    async fn assignments(&mut self, n: usize) -> Vec<pb::Assignment> {
        let mut got = Vec::new();
        while got.len() < n {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await
                .expect("an assignment in time")
                .expect("the stream")
                .expect("open");
            if let Some(pb::coordinator_message::Msg::Assignments(a)) = msg.msg {
                got.extend(a.assignments);
            }
        }
        got
    }

    async fn succeed(&self, a: &pb::Assignment, artifacts: Vec<pb::Artifact>) {
        let now = prost_types::Timestamp::from(std::time::SystemTime::now());
        let report = pb::AttemptReport {
            run_id: a.run_id.clone(),
            subtask_id: a.subtask_id.clone(),
            attempt: a.attempt,
            fence: a.fence,
            started_at: Some(now),
            finished_at: Some(now),
            outcome: Some(pb::attempt_report::Outcome::OutputJson("{}".into())),
            artifacts,
        };
        let msg = pb::worker_message::Msg::Reports(pb::AttemptReports { reports: vec![report] });
        self.tx.send(pb::WorkerMessage { msg: Some(msg) }).await.expect("reported");
    }
}

/// `PutArtifacts` of `files` (declared) followed by `chunks` (sent), as `token`.
async fn put(
    url: &str,
    token: &str,
    worker_id: &str,
    fence: u64,
    files: &[(&str, u64)],
    chunks: &[&[u8]],
) -> Result<Vec<pb::Artifact>, tonic::Status> {
    let header = pb::ArtifactUploadHeader {
        worker_id: worker_id.into(),
        fence,
        files: files.iter().map(|(p, s)| pb::ArtifactFile { path: p.to_string(), size: *s }).collect(),
    };
    let mut msgs = vec![pb::ArtifactUpload { msg: Some(pb::artifact_upload::Msg::Header(header)) }];
    for c in chunks {
        let chunk = pb::ArtifactChunk { data: bytes::Bytes::copy_from_slice(c) };
        msgs.push(pb::ArtifactUpload { msg: Some(pb::artifact_upload::Msg::Chunk(chunk)) });
    }
    let request = with_token(futures_util::stream::iter(msgs), token);
    worker_client(url).await.put_artifacts(request).await.map(|r| r.into_inner().artifacts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_protocol_refuses_forged_attempts_principals_paths_sizes_and_manifests() {
    use swarm_cli::embedded::{Embedded, EmbeddedOptions};
    let mut opts = EmbeddedOptions { workers: 0, slots: 4, ..Default::default() };
    let auth = crate::security::auth_file_of(crate::security::PRINCIPALS);
    opts.coordinator.auth = swarm_coordinator::auth::Authenticator::parse(&auth).expect("auth file");
    let cluster = Embedded::start(opts).await.expect("cluster");
    let url = cluster.url();
    let mut worker = RawWorker::connect(&url, "tok-pool-a", "pool-a-1", &["fake"]).await;
    let mut acme = swarm_cli::client::connect_with(&url, Some("tok-acme"), &Default::default()).await.expect("client");
    let with = |id: &str| {
        let mut s = SubtaskSpec::tool(id, "fake", json!({}));
        s.outputs.artifacts = vec!["r.md".into()];
        s
    };
    let run_id = submit(&mut acme, &RunSpec::new("forged", vec![with("good"), with("forged")])).await.expect("submit");
    let mut got = worker.assignments(2).await;
    got.sort_by(|a, b| a.subtask_id.cmp(&b.subtask_id));
    let (forged, good) = (got[0].clone(), got[1].clone());
    assert_eq!((good.subtask_id.as_str(), good.artifacts.clone()), ("good", vec!["r.md".to_string()]));
    assert_eq!(good.artifact_bytes_left, 1 << 30, "the default quota");
    let code = |r: Result<Vec<pb::Artifact>, tonic::Status>| r.map(|_| ()).map_err(|s| s.code());
    let f = good.fence;
    use tonic::Code;
    // Not this principal's attempt, not a live attempt, not a worker at all.
    assert_eq!(
        code(put(&url, "tok-pool-b", "pool-a-1", f, &[("r.md", 5)], &[b"hello"]).await),
        Err(Code::FailedPrecondition)
    );
    assert_eq!(
        code(put(&url, "tok-pool-a", "pool-a-1", f + 1000, &[("r.md", 5)], &[b"hello"]).await),
        Err(Code::FailedPrecondition)
    );
    assert_eq!(
        code(put(&url, "tok-pool-a", "pool-a-9", f, &[("r.md", 5)], &[b"hello"]).await),
        Err(Code::FailedPrecondition)
    );
    assert_eq!(
        code(put(&url, "tok-acme", "pool-a-1", f, &[("r.md", 5)], &[b"hello"]).await),
        Err(Code::PermissionDenied)
    );
    // Paths that climb, sizes that lie, more than the quota.
    for path in ["../r.md", "/etc/passwd", "a//b", "inputs/../../x"] {
        assert_eq!(
            code(put(&url, "tok-pool-a", "pool-a-1", f, &[(path, 1)], &[b"x"]).await),
            Err(Code::InvalidArgument),
            "{path}"
        );
    }
    assert_eq!(
        code(put(&url, "tok-pool-a", "pool-a-1", f, &[("r.md", 3)], &[b"hello"]).await),
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        code(put(&url, "tok-pool-a", "pool-a-1", f, &[("r.md", 5)], &[b"hel"]).await),
        Err(Code::InvalidArgument)
    );
    let too_big = [("r.md", 2u64 << 30)];
    assert_eq!(code(put(&url, "tok-pool-a", "pool-a-1", f, &too_big, &[]).await), Err(Code::ResourceExhausted));
    let stored = put(&url, "tok-pool-a", "pool-a-1", f, &[("r.md", 5)], &[b"he", b"llo"]).await.expect("stored");
    assert_eq!((stored.len(), stored[0].sha256.clone()), (1, hex(b"hello")));
    // Reading: only keys of the attempt's own run.
    let mut wc = worker_client(&url).await;
    let other = pb::InputArtifactRequest {
        worker_id: "pool-a-1".into(),
        fence: f,
        key: stored[0].key.replace(run_id.as_str(), "r-someone-else"),
    };
    assert_eq!(
        wc.get_input_artifact(with_token(other, "tok-pool-a")).await.err().map(|s| s.code()),
        Some(Code::InvalidArgument)
    );

    // A report naming what another attempt stored fails its subtask; its own succeeds.
    worker.succeed(&good, stored.clone()).await;
    worker.succeed(&forged, stored.clone()).await;
    let run = wait_done(&mut acme, &run_id, Duration::from_secs(10)).await.expect("done");
    let find = |id: &str| run.subtasks.iter().find(|s| s.id == id).expect("subtask").clone();
    assert_eq!(find("good").artifacts, stored);
    assert_eq!(find("forged").state, pb::SubtaskState::Failed as i32);
    assert!(find("forged").error_message.contains("not stored for this attempt"), "{}", find("forged").error_message);
    // The tenant reads it; another tenant cannot see it.
    assert_eq!(download(&mut acme, &run_id, "good", "r.md").await.expect("download"), b"hello");
    let mut beta = swarm_cli::client::connect_with(&url, Some("tok-beta"), &Default::default()).await.expect("client");
    assert_eq!(download(&mut beta, &run_id, "good", "r.md").await.err().map(|s| s.code()), Some(Code::NotFound));
    drop(worker);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_marks_files_to_hand_on_and_its_dependent_finds_them() {
    use swarm_core::SubtaskKind;
    use swarm_core::agent::AgentSpec;
    let script = "agents:\n  writer:\n    - tool_calls:\n        - {name: write_files, arguments: {files: {notes/a.md: alpha, notes/b.md: beta, scratch.txt: no}}}\n        - {name: mark_artifact, arguments: {path: 'notes/*.md'}}\n        - {name: mark_artifact, arguments: {path: '../../etc/passwd'}}\n    - content: written\n";
    let mut m = swarm_worker::model::ModelRegistry::new();
    m.register("scripted", std::sync::Arc::new(swarm_worker::model::ScriptedModel::from_yaml(script).expect("script")));
    let tc = swarm_tests::harness::TestCluster::start_with(
        std::sync::Arc::new(swarm_store::MemoryStore::new()),
        std::sync::Arc::new(m),
        1,
        8,
    )
    .await
    .expect("cluster");
    let mut c = tc.client().await.expect("client");
    let writer = SubtaskSpec {
        kind: SubtaskKind::Agent(AgentSpec {
            instructions: "Write notes.".into(),
            input: "notes".into(),
            model: "scripted".into(),
            tools: vec!["write_files".into(), "mark_artifact".into()],
            max_steps: None,
        }),
        ..SubtaskSpec::tool("writer", "echo", json!({}))
    };
    let reader = SubtaskSpec::tool("reader", "write_files", json!({"files": {}})).after(["writer"]);
    let run_id = submit(&mut c, &RunSpec::new("marked", vec![writer, reader])).await.expect("submit");
    let run = wait_done(&mut c, &run_id, Duration::from_secs(30)).await.expect("done");
    assert_eq!(run.state, pb::RunState::Succeeded as i32, "{run:?}");
    let w = run.subtasks.iter().find(|s| s.id == "writer").expect("writer");
    let listed: Vec<&str> = w.artifacts.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(listed, ["notes/a.md", "notes/b.md"], "only what was marked, and nothing that climbs");
    assert_eq!(download(&mut c, &run_id, "writer", "notes/b.md").await.expect("download"), b"beta");
    // The dependent's workspace holds them under inputs/writer/.
    let placed = tc.workspaces.0.join("w0").join(&run_id).join("reader/inputs/writer/notes/a.md");
    assert_eq!(std::fs::read(&placed).expect("placed"), b"alpha");
    tc.stop().await;
}
