//! `swarm bench --scenario exec`: the sandbox's cost and its behaviour under load.
//!
//! - Overhead: sequential `exec {cmd: [/bin/true]}` calls as the tool sees them (workspace,
//!   cgroups, bwrap, the prelude, reaping), against bare `bwrap --unshare-all … /bin/true` in the
//!   same session; p50 and p99 of each.
//! - Load: one run of 200 `exec` subtasks (`python3 -c "print(1)"`) on an embedded cluster of 4
//!   workers × 64 slots; all must succeed, and no bwrap process or cgroup may be left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use swarm_core::{RunSpec, SubtaskSpec};
use swarm_worker::tools::exec::{Exec, Limits, Sandbox, Workspaces};
use swarm_worker::tools::{Tool, ToolContext, ToolRegistry};

use crate::embedded::{Embedded, EmbeddedOptions};

/// The figures.
#[derive(Debug, Serialize)]
pub struct ExecBench {
    pub calls: usize,
    /// Which limits were in force (cgroup v1, v2, or rlimits only).
    pub limits: &'static str,
    pub tool_p50_ms: f64,
    pub tool_p99_ms: f64,
    pub bare_p50_ms: f64,
    pub bare_p99_ms: f64,
    pub concurrent_calls: usize,
    pub concurrent_succeeded: u32,
    pub concurrent_wall_ms: f64,
    pub leaked_processes: usize,
    pub leaked_cgroups: usize,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
}

/// bwrap processes on the host.
fn bwraps() -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "bwrap"))
        .count()
}

/// This process's exec cgroups still present.
fn cgroups_left() -> usize {
    let prefix = format!("swarm-exec-{}", std::process::id());
    ["/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// The whole benchmark: `calls` sequential calls of each kind, then the loaded run.
pub fn run(calls: usize) -> anyhow::Result<ExecBench> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let sandbox = Arc::new(Sandbox::probe().await.map_err(|e| anyhow::anyhow!(e))?);
        let root = std::env::temp_dir().join(format!("swarm-bench-exec-{}", std::process::id()));
        let workspaces = Workspaces::new(&root, Duration::from_secs(3600))?;
        let exec = Arc::new(Exec::new(sandbox.clone(), workspaces.clone(), Limits::default()));
        let ctx = || ToolContext {
            run_id: "bench".into(),
            subtask_id: "s".into(),
            attempt: 1,
            cancel: tokio_util::sync::CancellationToken::new(),
            hold: None,
        };
        // Alternating pairs: one tool call, one bare bwrap.
        let bare_args = [
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "/bin/true",
        ];
        let (mut tool, mut bare) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for _ in 0..calls {
            let t = Instant::now();
            let v = exec.call(json!({"cmd": ["/bin/true"]}), ctx()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(v["exit_code"] == 0, "exec /bin/true: {v}");
            tool.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let status = tokio::process::Command::new("bwrap").args(bare_args).status().await?;
            anyhow::ensure!(status.success(), "bare bwrap failed");
            bare.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // Under load, through a cluster.
        let mut tools = ToolRegistry::builtin();
        tools.register(exec.clone());
        let opts = EmbeddedOptions { workers: 4, slots: 64, tools: Some(Arc::new(tools)), ..Default::default() };
        let cluster = Embedded::start(opts).await?;
        let before = bwraps();
        let concurrent = 200;
        let subtasks = (0..concurrent)
            .map(|i| {
                SubtaskSpec::tool(format!("p{i}"), "exec", json!({"cmd": ["python3", "-c", "print(1)"], "check": true}))
            })
            .collect();
        let mut c = crate::client::connect(&cluster.url()).await?;
        let t = Instant::now();
        let request = swarm_proto::pb::SubmitRunRequest {
            spec: Some((&RunSpec::new("exec-load", subtasks)).into()),
            ..Default::default()
        };
        let run_id = c.submit_run(request).await?.into_inner().run_id;
        crate::client::follow(&mut c, &run_id, 0, |_| {}).await?;
        let concurrent_wall_ms = t.elapsed().as_secs_f64() * 1000.0;
        let run = crate::client::get(&mut c, &run_id, false).await.map_err(|s| crate::client::status_error(&s))?;
        let succeeded = run.summary.as_ref().map_or(0, |s| s.tool_calls_completed);
        cluster.stop().await;
        // Give the last groups a moment to be removed (off the async threads).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bench = ExecBench {
            calls,
            limits: sandbox.describe(),
            tool_p50_ms: percentile(tool.clone(), 0.5),
            tool_p99_ms: percentile(tool, 0.99),
            bare_p50_ms: percentile(bare.clone(), 0.5),
            bare_p99_ms: percentile(bare, 0.99),
            concurrent_calls: concurrent,
            concurrent_succeeded: succeeded,
            concurrent_wall_ms,
            leaked_processes: bwraps().saturating_sub(before),
            leaked_cgroups: cgroups_left(),
        };
        let _ = std::fs::remove_dir_all(&root);
        anyhow::Ok(bench)
    })
}
