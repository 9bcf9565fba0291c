//! The cluster a test owns, and tools that record what actually ran.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Value, json};
use swarm_cli::client::{self, Client};
use swarm_cli::embedded::{Embedded, EmbeddedOptions};
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_proto::pb;
use swarm_store::payload::PayloadStore;
use swarm_store::{MemoryStore, StateStore};
use swarm_worker::ToolRegistry;
use swarm_worker::tools::{Tool, ToolContext, ToolFuture, ToolInfo};
use tokio::time::Instant;

/// One execution of the `record` tool, as the tool itself saw it.
#[derive(Clone, Debug)]
pub struct Exec {
    pub run_id: String,
    pub subtask_id: String,
    pub attempt: u32,
    pub worker: String,
    pub start: Instant,
    pub end: Instant,
    /// False when the call was dropped or cancelled before it finished.
    pub completed: bool,
}

/// Every execution of the `record` tool across the cluster.
#[derive(Clone, Default)]
pub struct ExecLog(Arc<Mutex<Vec<Exec>>>);

impl ExecLog {
    /// A copy of the log.
    pub fn all(&self) -> Vec<Exec> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Executions of one run.
    pub fn of_run(&self, run_id: &str) -> Vec<Exec> {
        self.all().into_iter().filter(|e| e.run_id == run_id).collect()
    }
}

/// `record {ms}`: sleeps `ms`, honouring cancellation, and logs the execution.
pub struct Record {
    info: ToolInfo,
    worker: String,
    log: ExecLog,
    /// Every sleep on this worker takes this many times longer (a slow machine).
    slow: u64,
}

struct Guard {
    exec: Option<Exec>,
    log: ExecLog,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut e) = self.exec.take() {
            e.end = Instant::now();
            self.log.0.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        }
    }
}

impl Tool for Record {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        let log = self.log.clone();
        let worker = self.worker.clone();
        let slow = self.slow;
        Box::pin(async move {
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0) * slow;
            let now = Instant::now();
            let mut guard = Guard {
                exec: Some(Exec {
                    run_id: ctx.run_id.clone(),
                    subtask_id: ctx.subtask_id.clone(),
                    attempt: ctx.attempt,
                    worker,
                    start: now,
                    end: now,
                    completed: false,
                }),
                log,
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = ctx.cancel.cancelled() => return Err(swarm_worker::ToolError { kind: swarm_core::FailureKind::Cancelled, message: "cancelled".into() }),
            }
            if let Some(e) = guard.exec.as_mut() {
                e.completed = true;
            }
            Ok(json!({ "ms": ms }))
        })
    }
}

/// A cluster owned by one test: a coordinator on 127.0.0.1:0 and workers connected to it over
/// gRPC, each offering the built-ins plus `record`.
pub struct TestCluster {
    pub cluster: Embedded,
    pub store: Arc<dyn StateStore>,
    pub payloads: PayloadStore,
    pub log: ExecLog,
    /// The workers' workspaces (`{dir}/{worker}`), removed with the cluster.
    pub workspaces: crate::etcd::TempDir,
}

/// `write_files {files: {path: text}}`: writes files into the calling subtask's workspace
/// (no sandbox: tests of artifacts that need no bubblewrap); answers with the paths.
pub struct WriteFiles(ToolInfo, swarm_worker::tools::exec::Workspaces);

impl Tool for WriteFiles {
    fn info(&self) -> &ToolInfo {
        &self.0
    }
    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        let dir = self.1.dir(&ctx.run_id, &ctx.subtask_id);
        Box::pin(async move {
            let dir = dir.map_err(|e| swarm_worker::tools::ToolError::transient(e.to_string()))?;
            let files = args.get("files").and_then(Value::as_object).cloned().unwrap_or_default();
            for (path, text) in &files {
                swarm_core::artifact::check_path(path).map_err(swarm_worker::tools::ToolError::permanent)?;
                let file = dir.join(path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| swarm_worker::tools::ToolError::transient(e.to_string()))?;
                }
                std::fs::write(&file, text.as_str().unwrap_or_default())
                    .map_err(|e| swarm_worker::tools::ToolError::transient(e.to_string()))?;
            }
            Ok(json!(files.keys().collect::<Vec<_>>()))
        })
    }
}

/// `big {bytes}`: returns a string of `bytes` bytes (to test large outputs).
pub struct Big(ToolInfo);

impl Tool for Big {
    fn info(&self) -> &ToolInfo {
        &self.0
    }
    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let n = args.get("bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
            Ok(Value::String("x".repeat(n)))
        })
    }
}

/// `panics {when: "call" | "poll"}`: panics while starting the call or while it runs (a bug
/// in a tool), to show the worker reports it and goes on.
struct Panics(ToolInfo);

impl Tool for Panics {
    fn info(&self) -> &ToolInfo {
        &self.0
    }
    #[allow(clippy::panic)]
    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        if args.get("when").and_then(Value::as_str) == Some("call") {
            panic!("a tool bug while starting");
        }
        Box::pin(async move { panic!("a tool bug while running") })
    }
}

impl TestCluster {
    /// Starts `workers` workers with `slots` slots each and waits until all are connected.
    pub async fn start(workers: usize, slots: u32) -> anyhow::Result<Self> {
        Self::start_on(Arc::new(MemoryStore::new()), workers, slots).await
    }

    /// The same, on a given store.
    pub async fn start_on(store: Arc<dyn StateStore>, workers: usize, slots: u32) -> anyhow::Result<Self> {
        Self::start_with(store, Arc::new(swarm_worker::model::ModelRegistry::new()), workers, slots).await
    }

    /// The same, with models for agents on every worker.
    pub async fn start_with(
        store: Arc<dyn StateStore>,
        models: Arc<swarm_worker::model::ModelRegistry>,
        workers: usize,
        slots: u32,
    ) -> anyhow::Result<Self> {
        Self::start_custom(store, models, workers, slots, |_| {}).await
    }

    /// The same, with the coordinator's options adjusted by `tweak` first.
    pub async fn start_custom(
        store: Arc<dyn StateStore>,
        models: Arc<swarm_worker::model::ModelRegistry>,
        workers: usize,
        slots: u32,
        tweak: impl FnOnce(&mut EmbeddedOptions),
    ) -> anyhow::Result<Self> {
        let http_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut opts = EmbeddedOptions { workers: 0, slots, models, http_listen, ..EmbeddedOptions::default() };
        tweak(&mut opts);
        let payloads = PayloadStore::memory(swarm_store::payload::DEFAULT_THRESHOLD);
        opts.coordinator.payloads = payloads.clone();
        let cluster = Embedded::start_on(opts, store.clone(), None).await?;
        let workspaces = crate::etcd::TempDir::new("workspaces")?;
        let mut me = Self { cluster, store, payloads, log: ExecLog::default(), workspaces };
        for i in 0..workers {
            me.add_worker(&format!("w{i}"), slots);
        }
        me.cluster.wait_for_workers(workers as u32, Duration::from_secs(10)).await?;
        Ok(me)
    }

    /// Adds a worker with the built-ins, `record` (idempotent) and `record_once` (not); returns
    /// its index.
    pub fn add_worker(&mut self, id: &str, slots: u32) -> usize {
        self.add_slow_worker(id, slots, 1)
    }

    /// Adds a worker whose `record` sleeps are `slow` times longer.
    pub fn add_slow_worker(&mut self, id: &str, slots: u32, slow: u64) -> usize {
        let mut tools = ToolRegistry::builtin();
        let workspaces =
            swarm_worker::tools::exec::Workspaces::new(self.workspaces.0.join(id), Duration::from_secs(3600))
                .expect("workspaces");
        tools.set_workspaces(workspaces.clone());
        tools.register(Arc::new(WriteFiles(
            ToolInfo {
                name: "write_files".into(),
                description: "writes files into the workspace".into(),
                read_only: false,
                idempotent: true,
                timeout: None,
            },
            workspaces,
        )));
        for (name, repeatable) in [("record", true), ("record_once", false)] {
            tools.register(Arc::new(Record {
                info: ToolInfo {
                    name: name.into(),
                    description: "sleeps and records".into(),
                    read_only: repeatable,
                    idempotent: repeatable,
                    timeout: None,
                },
                worker: id.to_owned(),
                log: self.log.clone(),
                slow,
            }));
        }
        tools.register(Arc::new(Panics(ToolInfo {
            name: "panics".into(),
            description: "panics".into(),
            read_only: true,
            idempotent: true,
            timeout: None,
        })));
        tools.register(Arc::new(Big(ToolInfo {
            name: "big".into(),
            description: "returns a large string".into(),
            read_only: true,
            idempotent: true,
            timeout: None,
        })));
        self.cluster.add_worker(id, slots, Arc::new(tools))
    }

    /// A client of the coordinator.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client::connect(&self.cluster.url()).await
    }

    /// Stops everything.
    /// Waits (up to 30 s) until the leader has told the workers that the output of `runs` live
    /// runs is followed: a watcher with `follow_output` is registered, and output made from now
    /// on is sent.
    pub async fn until_followed(&self, runs: u32) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.cluster.stats().await?.followed_runs >= runs {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < until, "no follower of {runs} runs within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}

/// Submits a spec and returns the run id.
pub async fn submit(c: &mut Client, spec: &RunSpec) -> anyhow::Result<String> {
    let resp = c
        .submit_run(pb::SubmitRunRequest {
            spec: Some(spec.into()),
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await
        .map_err(|s| client::status_error(&s))?;
    Ok(resp.into_inner().run_id)
}

/// Waits (at most `deadline`) for the run to end and returns it with its subtasks.
pub async fn wait_done(c: &mut Client, run_id: &str, deadline: Duration) -> anyhow::Result<pb::Run> {
    tokio::time::timeout(deadline, client::follow(c, run_id, 0, |_| {}))
        .await
        .with_context(|| format!("run {run_id} did not end within {deadline:?}"))??;
    client::get(c, run_id, true).await.map_err(|s| client::status_error(&s))
}

/// Reads events of a run until `pred` holds for the events so far (at most `deadline`).
pub async fn wait_for_events(
    c: &mut Client,
    run_id: &str,
    deadline: Duration,
    pred: impl Fn(&[pb::RunEvent]) -> bool,
) -> anyhow::Result<Vec<pb::RunEvent>> {
    let mut stream = c
        .watch_run(pb::WatchRunRequest { run_id: run_id.into(), after_seq: 0, ..Default::default() })
        .await?
        .into_inner();
    let mut events = Vec::new();
    tokio::time::timeout(deadline, async {
        while let Some(ev) = stream.next().await {
            events.push(ev?);
            if pred(&events) {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("stream ended before the condition held")
    })
    .await
    .context("condition not reached in time")??;
    Ok(events)
}

/// Counts `SubtaskSucceeded` events.
pub fn succeeded(events: &[pb::RunEvent]) -> usize {
    events.iter().filter(|e| matches!(e.event, Some(pb::run_event::Event::SubtaskSucceeded(_)))).count()
}

/// `chains` independent chains of `length` `record` calls of `ms` each (no planner).
pub fn chains(name: &str, chains: usize, length: usize, ms: u64) -> RunSpec {
    let mut subtasks = Vec::new();
    for c in 0..chains {
        for s in 0..length {
            let t = SubtaskSpec::tool(format!("c{c}-s{s}"), "record", json!({ "ms": ms }));
            subtasks.push(if s == 0 { t } else { t.after([format!("c{c}-s{}", s - 1)]) });
        }
    }
    RunSpec::new(name, subtasks)
}

/// Runs the browser script `tests/web/{script}` with `args` under Node (at most `deadline`),
/// asserts that it succeeded and returns the one JSON line it printed.
pub async fn browser_script(script: &str, args: &[&std::ffi::OsStr], deadline: Duration) -> Value {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let out = tokio::process::Command::new("node")
        .arg(web.join(script))
        .args(args)
        .current_dir(&web)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(deadline, out).await.expect("the browser finished").expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script}: not a JSON report ({e}): {stdout}"))
}
